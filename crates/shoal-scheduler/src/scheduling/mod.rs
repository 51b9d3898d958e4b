//! Pure scheduling logic: which peers may serve a child, in what order, and whether a child
//! without parents should wait, trigger a seed or go back to the origin.
//!
//! Nothing here locks, awaits or reads a clock. The state module builds the views below from
//! its records under its lock and applies the result; this keeps every rule unit-testable.
//!
//! - [`select_parents`]: filter the task's peers down to valid parents for one child and rank
//!   them (held pieces, seed bonus, free upload capacity, IDC and location affinity).
//! - [`decide`]: the back-to-source policy for a child with no parent.

mod decision;
mod score;

use std::collections::{HashMap, HashSet, VecDeque};

use shoal_types::{HostId, PeerId};

pub(crate) use decision::{
    decide, BackToSourceReason, Decision, DecisionInput, ScheduleMode, SeedStatus,
};

/// The knobs of scheduling, from the scheduler config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Parents per Normal answer.
    pub(crate) candidate_parent_limit: usize,
    /// Peers of one task allowed to use the origin at once (seeds included).
    pub(crate) max_back_to_source_peers: usize,
    /// Whether a cold task triggers a seed.
    pub(crate) seed_trigger: bool,
}

/// The content layout a peer saw when it stat'ed the origin; peers that disagree must not be
/// paired, because each computes piece offsets and lengths from its own view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) content_length: Option<u64>,
    pub(crate) piece_length: Option<u64>,
}

/// The announced host of a peer, as far as selection cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostView<'a> {
    pub(crate) id: &'a HostId,
    pub(crate) disable_shared: bool,
    pub(crate) is_seed: bool,
    pub(crate) idc: Option<&'a str>,
    pub(crate) location: Option<&'a str>,
}

/// The child asking for parents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildView<'a> {
    pub(crate) id: &'a PeerId,
    pub(crate) host_id: &'a HostId,
    /// Known only when the child's host has announced.
    pub(crate) idc: Option<&'a str>,
    pub(crate) location: Option<&'a str>,
    pub(crate) layout: Layout,
    /// Parents this child must not be offered again.
    pub(crate) blocklist: &'a HashSet<PeerId>,
}

/// One peer of the task. Every peer of the task is passed, eligible or not, so that the
/// parent edges are complete for cycle detection and load counting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerView<'a> {
    pub(crate) id: &'a PeerId,
    /// `None` while the peer's host has never announced (no address to hand out).
    pub(crate) host: Option<HostView<'a>>,
    /// Registered, answered and not failed: it downloads or holds the task.
    pub(crate) serving: bool,
    /// Not finished or failed yet: counts as load on its parents.
    pub(crate) active: bool,
    /// Sent corrupt data for this task.
    pub(crate) banned: bool,
    /// Fraction of the task's pieces held, 0.0..=1.0 (finished peers hold 1.0).
    pub(crate) held_fraction: f64,
    pub(crate) layout: Layout,
    /// Peers this one downloads from (handed out or seen in piece reports).
    pub(crate) parents: &'a HashSet<PeerId>,
}

impl Layout {
    /// Whether two peers agree on every value both of them know.
    pub(crate) fn compatible(&self, other: &Layout) -> bool {
        fn agree(a: Option<u64>, b: Option<u64>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        agree(self.content_length, other.content_length)
            && agree(self.piece_length, other.piece_length)
    }
}

/// Up to `limit` parents for `child` among `peers`, best first.
pub(crate) fn select_parents<'a>(
    child: &ChildView<'_>,
    peers: &[PeerView<'a>],
    limit: usize,
) -> Vec<&'a PeerId> {
    let descendants = descendants_of(child.id, peers);
    let load = children_per_parent(peers);
    let mut ranked: Vec<(f64, &'a PeerId)> = peers
        .iter()
        .filter(|peer| is_candidate(child, peer, &descendants))
        .filter_map(|peer| {
            let host = peer.host?;
            let children = load.get(peer.id).copied().unwrap_or(0);
            Some((score::score(child, peer, &host, children), peer.id))
        })
        .collect();
    ranked.sort_by(|(score_a, id_a), (score_b, id_b)| {
        score_b.total_cmp(score_a).then_with(|| id_a.cmp(id_b))
    });
    ranked.into_iter().take(limit).map(|(_, id)| id).collect()
}

fn is_candidate(
    child: &ChildView<'_>,
    peer: &PeerView<'_>,
    descendants: &HashSet<&PeerId>,
) -> bool {
    let Some(host) = peer.host else {
        return false;
    };
    peer.serving
        && !peer.banned
        && peer.id != child.id
        && host.id != child.host_id
        && !host.disable_shared
        && !child.blocklist.contains(peer.id)
        && !descendants.contains(peer.id)
        && peer.layout.compatible(&child.layout)
}

/// Every peer that downloads, directly or through others, from `root`.
fn descendants_of<'a>(root: &PeerId, peers: &[PeerView<'a>]) -> HashSet<&'a PeerId> {
    let mut children: HashMap<&PeerId, Vec<&'a PeerId>> = HashMap::new();
    for peer in peers {
        for parent in peer.parents {
            children.entry(parent).or_default().push(peer.id);
        }
    }
    let mut seen = HashSet::new();
    let mut queue: VecDeque<&PeerId> = VecDeque::from([root]);
    while let Some(current) = queue.pop_front() {
        for &child in children.get(current).into_iter().flatten() {
            if seen.insert(child) {
                queue.push_back(child);
            }
        }
    }
    seen
}

/// How many unfinished children each parent serves right now.
fn children_per_parent<'a>(peers: &[PeerView<'a>]) -> HashMap<&'a PeerId, usize> {
    let mut load = HashMap::new();
    for peer in peers.iter().filter(|peer| peer.active) {
        for parent in peer.parents {
            *load.entry(parent).or_insert(0) += 1;
        }
    }
    load
}

#[cfg(test)]
mod tests;
