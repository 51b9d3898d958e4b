use super::*;

/// Owned test data from which the borrowed views are built.
struct Fixture {
    child_id: PeerId,
    child_host: HostId,
    child_idc: Option<String>,
    child_location: Option<String>,
    child_layout: Layout,
    blocklist: HashSet<PeerId>,
    peers: Vec<OwnedPeer>,
}

struct OwnedPeer {
    id: PeerId,
    host: Option<OwnedHost>,
    serving: bool,
    active: bool,
    banned: bool,
    held_fraction: f64,
    layout: Layout,
    parents: HashSet<PeerId>,
}

struct OwnedHost {
    id: HostId,
    disable_shared: bool,
    is_seed: bool,
    idc: Option<String>,
    location: Option<String>,
}

fn peer_id(name: &str) -> PeerId {
    PeerId::from_wire(name)
}

impl Fixture {
    fn new() -> Self {
        Self {
            child_id: peer_id("child"),
            child_host: HostId::from_wire("host-child"),
            child_idc: None,
            child_location: None,
            child_layout: Layout::default(),
            blocklist: HashSet::new(),
            peers: vec![OwnedPeer::new("child", "host-child")],
        }
    }

    fn add(&mut self, peer: OwnedPeer) -> &mut Self {
        self.peers.push(peer);
        self
    }

    fn peer_mut(&mut self, name: &str) -> &mut OwnedPeer {
        self.peers
            .iter_mut()
            .find(|peer| peer.id.as_str() == name)
            .expect("fixture peer exists")
    }

    fn select(&self, limit: usize) -> Vec<String> {
        let child = ChildView {
            id: &self.child_id,
            host_id: &self.child_host,
            idc: self.child_idc.as_deref(),
            location: self.child_location.as_deref(),
            layout: self.child_layout,
            blocklist: &self.blocklist,
        };
        let views: Vec<PeerView<'_>> = self.peers.iter().map(OwnedPeer::view).collect();
        select_parents(&child, &views, limit)
            .into_iter()
            .map(|id| id.as_str().to_string())
            .collect()
    }
}

impl OwnedPeer {
    fn new(id: &str, host: &str) -> Self {
        Self {
            id: peer_id(id),
            host: Some(OwnedHost {
                id: HostId::from_wire(host),
                disable_shared: false,
                is_seed: false,
                idc: None,
                location: None,
            }),
            serving: true,
            active: true,
            banned: false,
            held_fraction: 0.0,
            layout: Layout::default(),
            parents: HashSet::new(),
        }
    }

    fn with_parent(mut self, parent: &str) -> Self {
        self.parents.insert(peer_id(parent));
        self
    }

    fn view(&self) -> PeerView<'_> {
        PeerView {
            id: &self.id,
            host: self.host.as_ref().map(|host| HostView {
                id: &host.id,
                disable_shared: host.disable_shared,
                is_seed: host.is_seed,
                idc: host.idc.as_deref(),
                location: host.location.as_deref(),
            }),
            serving: self.serving,
            active: self.active,
            banned: self.banned,
            held_fraction: self.held_fraction,
            layout: self.layout,
            parents: &self.parents,
        }
    }

    fn host_mut(&mut self) -> &mut OwnedHost {
        self.host.as_mut().expect("fixture host announced")
    }
}

#[test]
fn running_peer_is_a_parent_before_it_holds_pieces() {
    let mut fixture = Fixture::new();
    fixture.add(OwnedPeer::new("a", "host-a"));
    assert_eq!(fixture.select(4), ["a"]);
}

#[test]
fn child_itself_and_its_own_host_are_excluded() {
    let mut fixture = Fixture::new();
    fixture.add(OwnedPeer::new("same-host", "host-child"));
    assert!(fixture.select(4).is_empty());
}

#[test]
fn unannounced_disabled_failed_and_banned_peers_are_excluded() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("unannounced", "host-u"))
        .add(OwnedPeer::new("unshared", "host-s"))
        .add(OwnedPeer::new("failed", "host-f"))
        .add(OwnedPeer::new("banned", "host-b"))
        .add(OwnedPeer::new("ok", "host-ok"));
    fixture.peer_mut("unannounced").host = None;
    fixture.peer_mut("unshared").host_mut().disable_shared = true;
    fixture.peer_mut("failed").serving = false;
    fixture.peer_mut("banned").banned = true;
    assert_eq!(fixture.select(4), ["ok"]);
}

#[test]
fn blocklisted_parents_are_excluded() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("a", "host-a"))
        .add(OwnedPeer::new("b", "host-b"));
    fixture.blocklist.insert(peer_id("a"));
    assert_eq!(fixture.select(4), ["b"]);
}

#[test]
fn descendants_are_excluded_to_avoid_cycles() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("direct", "host-a").with_parent("child"))
        .add(OwnedPeer::new("indirect", "host-b").with_parent("direct"))
        .add(OwnedPeer::new("unrelated", "host-c"));
    assert_eq!(fixture.select(4), ["unrelated"]);
}

#[test]
fn mismatched_layouts_are_not_paired() {
    let mut fixture = Fixture::new();
    fixture.child_layout = Layout {
        content_length: Some(100),
        piece_length: Some(10),
    };
    fixture
        .add(OwnedPeer::new("other-length", "host-a"))
        .add(OwnedPeer::new("other-piece", "host-b"))
        .add(OwnedPeer::new("unknown", "host-c"))
        .add(OwnedPeer::new("same", "host-d"));
    fixture.peer_mut("other-length").layout.content_length = Some(101);
    fixture.peer_mut("other-piece").layout = Layout {
        content_length: Some(100),
        piece_length: Some(20),
    };
    fixture.peer_mut("same").layout = Layout {
        content_length: Some(100),
        piece_length: Some(10),
    };
    let mut selected = fixture.select(4);
    selected.sort();
    assert_eq!(selected, ["same", "unknown"]);
}

#[test]
fn ranking_prefers_held_pieces_then_free_capacity() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("empty", "host-a"))
        .add(OwnedPeer::new("full", "host-b"))
        .add(OwnedPeer::new("half", "host-c"));
    fixture.peer_mut("full").held_fraction = 1.0;
    fixture.peer_mut("half").held_fraction = 0.5;
    assert_eq!(fixture.select(4), ["full", "half", "empty"]);
    assert_eq!(fixture.select(2), ["full", "half"]);
}

#[test]
fn busy_parents_rank_below_idle_ones() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("busy", "host-a"))
        .add(OwnedPeer::new("idle", "host-b"))
        .add(OwnedPeer::new("kid-1", "host-c").with_parent("busy"))
        .add(OwnedPeer::new("kid-2", "host-d").with_parent("busy"));
    // The kids are valid parents too; only the order of busy and idle matters here.
    let selected = fixture.select(4);
    let position = |name: &str| selected.iter().position(|id| id == name).expect("selected");
    assert!(position("idle") < position("busy"));
}

#[test]
fn finished_children_do_not_count_as_load() {
    let mut fixture = Fixture::new();
    fixture
        .add(OwnedPeer::new("a", "host-a"))
        .add(OwnedPeer::new("b", "host-b"))
        .add(OwnedPeer::new("done", "host-c").with_parent("a"));
    fixture.peer_mut("done").active = false;
    fixture.peer_mut("done").serving = false;
    assert_eq!(fixture.select(4), ["a", "b"], "ties break by id");
}

#[test]
fn seeds_and_same_idc_rank_higher() {
    let mut fixture = Fixture::new();
    fixture.child_idc = Some("idc-1".into());
    fixture.child_location = Some("cn|hz".into());
    fixture
        .add(OwnedPeer::new("plain", "host-a"))
        .add(OwnedPeer::new("near", "host-b"))
        .add(OwnedPeer::new("seed", "host-c"));
    fixture.peer_mut("near").host_mut().idc = Some("idc-1".into());
    fixture.peer_mut("near").host_mut().location = Some("cn|hz".into());
    fixture.peer_mut("seed").host_mut().is_seed = true;
    let selected = fixture.select(4);
    assert_eq!(selected.last().map(String::as_str), Some("plain"));
    assert_eq!(selected.len(), 3);
}

#[test]
fn limit_zero_selects_nothing() {
    let mut fixture = Fixture::new();
    fixture.add(OwnedPeer::new("a", "host-a"));
    assert!(fixture.select(0).is_empty());
}

#[test]
fn layout_compatibility_ignores_unknown_values() {
    let known = Layout {
        content_length: Some(1),
        piece_length: Some(2),
    };
    assert!(known.compatible(&Layout::default()));
    assert!(Layout::default().compatible(&known));
    assert!(!known.compatible(&Layout {
        content_length: Some(2),
        piece_length: None
    }));
}
