//! Fetching pieces from the parents the scheduler named (wire reference §9, §10).
//!
//! One SyncPieces stream per parent tells us which pieces it holds (finished first, then each
//! in-flight piece as it completes). A piece is dispatched as soon as one parent has it, to the
//! least loaded parent holding it; up to `concurrent_pieces` are in flight, at most half of them
//! on one normal parent and one on a seed when there are several ([`parent_caps`]). After the
//! lowest missing piece (for in-order readers), pieces go rarest first in a random order per
//! download, so children that start together fetch different pieces and trade them
//! ([`pick_pieces`]). A parent that sends
//! corrupt bytes or cannot be reached is dropped for the rest of this round and reported to the
//! scheduler (corrupt: `temporary = false`). The round ends when every piece is stored, or when
//! nothing more can come (every parent gone or finished) or nothing arrived for `stall_timeout`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use shoal_client::vortex::FetchPieceError;
use shoal_protocol::common::{Peer, Piece, TrafficType};
use shoal_protocol::dfdaemon::dfdaemon_upload_client::DfdaemonUploadClient;
use shoal_protocol::dfdaemon::SyncPiecesRequest;
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::{DownloadPieceFailedRequest, DownloadPieceFinishedRequest};
use shoal_storage::PieceRecord;
use shoal_types::{PeerId, PieceNumber};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::announce::Reporter;
use super::{DownloadError, PieceSource, TaskContext};

/// How one round of P2P fetching ended.
#[derive(Debug)]
pub(crate) enum P2pOutcome {
    Complete,
    Incomplete { remaining: BTreeSet<PieceNumber> },
}

enum SyncEvent {
    Has {
        parent: usize,
        piece: PieceNumber,
        endpoint: SocketAddr,
    },
    Ended {
        parent: usize,
        failed: bool,
    },
}

struct ParentState {
    peer_id: PeerId,
    /// The scheduler says the parent's host is a seed peer.
    is_seed: bool,
    syncing: bool,
    alive: bool,
    load: usize,
    endpoint: Option<SocketAddr>,
}

type PieceResult = (usize, PieceNumber, Result<PieceRecord, PieceFailure>);

enum PieceFailure {
    Fetch(FetchPieceError),
    Store(shoal_storage::StoreError),
}

/// Fetches `missing` from `parents`.
pub(crate) async fn fetch(
    context: &TaskContext,
    parents: &[Peer],
    missing: &BTreeSet<PieceNumber>,
    reporter: &Reporter,
) -> Result<P2pOutcome, DownloadError> {
    let (sync_sender, mut sync_events) = mpsc::channel(1024);
    let mut syncs = JoinSet::new();
    let mut states = Vec::new();
    for (index, parent) in parents.iter().enumerate() {
        let Some(url) = parent_url(parent) else {
            continue;
        };
        states.push(ParentState {
            peer_id: PeerId::from_wire(parent.id.clone()),
            is_seed: parent.host.as_ref().is_some_and(|host| host.r#type >= 1),
            syncing: true,
            alive: true,
            load: 0,
            endpoint: None,
        });
        let request = SyncPiecesRequest {
            host_id: context.engine.host.host_id.to_string(),
            task_id: context.task_id.to_string(),
            interested_piece_numbers: missing.iter().map(|piece| piece.get()).collect(),
        };
        syncs.spawn(sync_parent(
            states.len() - 1,
            url,
            request,
            sync_sender.clone(),
        ));
        let _ = index;
    }
    drop(sync_sender);

    let config = &context.engine.config;
    let mut pending = missing.clone();
    let mut available: HashMap<PieceNumber, Vec<usize>> = HashMap::new();
    let mut in_flight: JoinSet<PieceResult> = JoinSet::new();
    let mut dispatched: HashSet<PieceNumber> = HashSet::new();
    let mut deadline = Instant::now() + config.stall_timeout;
    let salt: u64 = rand::random();

    loop {
        dispatch(
            context,
            &mut states,
            &pending,
            &mut available,
            &mut dispatched,
            &mut in_flight,
            salt,
        );
        if pending.is_empty() {
            return Ok(P2pOutcome::Complete);
        }
        let anyone_left = states.iter().any(|state| state.alive && state.syncing);
        if in_flight.is_empty() && !anyone_left {
            return Ok(P2pOutcome::Incomplete { remaining: pending });
        }
        tokio::select! {
            event = sync_events.recv() => match event {
                Some(SyncEvent::Has { parent, piece, endpoint }) => {
                    if let Some(state) = states.get_mut(parent) {
                        state.endpoint = Some(endpoint);
                        if pending.contains(&piece) {
                            available.entry(piece).or_default().push(parent);
                        }
                    }
                }
                Some(SyncEvent::Ended { parent, failed }) => {
                    if let Some(state) = states.get_mut(parent) {
                        state.syncing = false;
                        if failed {
                            state.alive = false;
                        }
                    }
                }
                None => {
                    for state in &mut states {
                        state.syncing = false;
                    }
                }
            },
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((parent, piece, result)) = joined else { continue };
                dispatched.remove(&piece);
                if let Some(state) = states.get_mut(parent) {
                    state.load = state.load.saturating_sub(1);
                }
                match result {
                    Ok(record) => {
                        pending.remove(&piece);
                        deadline = Instant::now() + config.stall_timeout;
                        let peer_id = states[parent].peer_id.clone();
                        report_finished(reporter, &record, &peer_id).await;
                        context.progress.piece_done(record, PieceSource::Parent(peer_id)).await;
                    }
                    Err(PieceFailure::Store(err)) => return Err(DownloadError::Store(err)),
                    Err(PieceFailure::Fetch(err)) => {
                        handle_failure(context, &mut states, &mut available, parent, piece, err, reporter).await;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(task_id = %context.task_id, remaining = pending.len(), "p2p download stalled");
                return Ok(P2pOutcome::Incomplete { remaining: pending });
            }
        }
    }
}

fn dispatch(
    context: &TaskContext,
    states: &mut [ParentState],
    pending: &BTreeSet<PieceNumber>,
    available: &mut HashMap<PieceNumber, Vec<usize>>,
    dispatched: &mut HashSet<PieceNumber>,
    in_flight: &mut JoinSet<PieceResult>,
    salt: u64,
) {
    let limit = context.engine.config.concurrent_pieces;
    if in_flight.len() >= limit {
        return;
    }
    for holders in available.values_mut() {
        holders.retain(|index| states.get(*index).is_some_and(|state| state.alive));
    }
    let live: Vec<bool> = states.iter().map(|state| state.alive).collect();
    let seeds: Vec<bool> = states.iter().map(|state| state.is_seed).collect();
    let caps = parent_caps(limit, &live, &seeds);
    let mut loads: Vec<usize> = states.iter().map(|state| state.load).collect();
    let picks = pick_pieces(
        pending,
        available,
        dispatched,
        &mut loads,
        &caps,
        limit - in_flight.len(),
        salt,
    );
    for (piece, parent) in picks {
        let Some(endpoint) = states[parent].endpoint else {
            continue;
        };
        let Some(range) = context.layout.piece_range(piece) else {
            continue;
        };
        states[parent].load += 1;
        dispatched.insert(piece);
        let engine = context.engine.clone();
        let task_id = context.task_id.clone();
        in_flight.spawn(async move {
            let started = SystemTime::now();
            let received = engine
                .pieces
                .fetch(endpoint, &task_id, piece.get(), range.len(), engine.config.piece_timeout)
                .await;
            let result = match received {
                Ok(received) => engine
                    .tasks
                    .store()
                    .write_piece(&task_id, piece, received.content)
                    .await
                    .map_err(PieceFailure::Store),
                Err(err) => Err(PieceFailure::Fetch(err)),
            };
            tracing::trace!(%task_id, piece = piece.get(), elapsed = ?started.elapsed().unwrap_or_default(), "piece fetch finished");
            (parent, piece, result)
        });
    }
}

/// How many pieces each parent may carry for us at once. A lone parent gets every slot. With
/// several, a normal parent gets half of them and a seed one: the seed's uplink is the swarm's
/// scarcest resource, so children fetch from each other what they can and take from the seed
/// only the few pieces nobody else has yet, and those pieces finish sooner to be passed on.
fn parent_caps(limit: usize, live: &[bool], seeds: &[bool]) -> Vec<usize> {
    let live_parents = live.iter().filter(|alive| **alive).count();
    live.iter()
        .zip(seeds)
        .map(|(alive, seed)| match (*alive, *seed) {
            (false, _) => 0,
            _ if live_parents <= 1 => limit,
            (true, true) => limit.min(SEED_PIECES_PER_CHILD),
            (true, false) => limit.div_ceil(2).max(1),
        })
        .collect()
}

/// Pieces one child fetches at once from a seed when it has other parents too.
const SEED_PIECES_PER_CHILD: usize = 1;

/// Chooses up to `slots` pieces to fetch next, each with the parent to fetch it from.
///
/// The lowest pending piece goes first, so a reader streaming the task in order (the proxy)
/// always progresses. Then each parent with free capacity (below `caps`, counting `loads`),
/// least loaded first and normal peers before seeds (see [`parent_caps`]), is given the pieces
/// it holds, rarest first (fewest holders among our parents), ties broken by an order `salt`
/// makes random per download: children that start together ask for different pieces, and so
/// have pieces to trade with each other. `loads` is updated with the picks.
fn pick_pieces(
    pending: &BTreeSet<PieceNumber>,
    available: &HashMap<PieceNumber, Vec<usize>>,
    dispatched: &HashSet<PieceNumber>,
    loads: &mut [usize],
    caps: &[usize],
    slots: usize,
    salt: u64,
) -> Vec<(PieceNumber, usize)> {
    let mut candidates: Vec<(PieceNumber, &[usize])> = pending
        .iter()
        .filter(|piece| !dispatched.contains(piece))
        .filter_map(|piece| {
            let holders = available.get(piece)?;
            (!holders.is_empty()).then_some((*piece, holders.as_slice()))
        })
        .collect();
    let lowest = pending.iter().find(|piece| !dispatched.contains(piece));
    candidates.sort_by_key(|(piece, holders)| {
        (
            Some(piece) != lowest,
            holders.len(),
            mix(salt ^ u64::from(piece.get())),
        )
    });
    let free = |loads: &[usize], parent: usize| {
        loads
            .get(parent)
            .zip(caps.get(parent))
            .is_some_and(|(load, cap)| load < cap)
    };
    let mut picks = Vec::new();
    let mut taken = vec![false; candidates.len()];
    // The lowest piece first, from its least loaded free holder.
    if let Some((piece, holders)) = candidates.first() {
        if Some(piece) == lowest && slots > 0 {
            let parent = holders
                .iter()
                .copied()
                .filter(|index| free(loads, *index))
                .min_by_key(|index| {
                    (
                        caps[*index] < caps.iter().copied().max().unwrap_or(0),
                        loads[*index],
                    )
                });
            if let Some(parent) = parent {
                loads[parent] += 1;
                picks.push((*piece, parent));
                taken[0] = true;
            }
        }
    }
    // Then fill parents: normal ones (larger caps) before seeds, least loaded first.
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by_key(|index| (std::cmp::Reverse(caps[*index]), loads[*index]));
    for parent in order {
        for (slot, (piece, holders)) in candidates.iter().enumerate() {
            if picks.len() >= slots || !free(loads, parent) {
                break;
            }
            if taken[slot] || !holders.contains(&parent) {
                continue;
            }
            loads[parent] += 1;
            picks.push((*piece, parent));
            taken[slot] = true;
        }
    }
    picks
}

/// splitmix64's finaliser: a cheap bijection that scatters piece numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

async fn handle_failure(
    context: &TaskContext,
    states: &mut [ParentState],
    available: &mut HashMap<PieceNumber, Vec<usize>>,
    parent: usize,
    piece: PieceNumber,
    err: FetchPieceError,
    reporter: &Reporter,
) {
    let Some(state) = states.get_mut(parent) else {
        return;
    };
    if err.is_not_found() {
        if let Some(holders) = available.get_mut(&piece) {
            holders.retain(|index| *index != parent);
        }
        return;
    }
    tracing::warn!(task_id = %context.task_id, parent = %state.peer_id, piece = piece.get(), error = %err, "piece download from parent failed");
    state.alive = false;
    if let Some(endpoint) = state.endpoint {
        context.engine.pieces.forget(endpoint);
    }
    reporter
        .send(Request::DownloadPieceFailedRequest(
            DownloadPieceFailedRequest {
                piece_number: Some(piece.get()),
                parent_id: state.peer_id.to_string(),
                // A corrupt parent is banned for the whole task; a lost one only for us.
                temporary: !err.is_corrupt(),
            },
        ))
        .await;
}

async fn report_finished(reporter: &Reporter, record: &PieceRecord, parent: &PeerId) {
    let piece = Piece {
        number: record.number.get(),
        parent_id: Some(parent.to_string()),
        offset: record.offset,
        length: record.length,
        digest: record.digest.to_string(),
        content: None,
        traffic_type: Some(TrafficType::RemotePeer as i32),
        cost: Some(shoal_protocol::convert::duration(Duration::ZERO)),
        created_at: Some(shoal_protocol::convert::timestamp(SystemTime::now())),
    };
    reporter
        .send(Request::DownloadPieceFinishedRequest(
            DownloadPieceFinishedRequest { piece: Some(piece) },
        ))
        .await;
}

/// `http://ip:port` of a parent's upload gRPC server, when the scheduler gave a usable address.
fn parent_url(parent: &Peer) -> Option<String> {
    let host = parent.host.as_ref()?;
    let ip: IpAddr = host.ip.parse().ok()?;
    let port = u16::try_from(host.port).ok().filter(|port| *port != 0)?;
    Some(format!("http://{}", SocketAddr::new(ip, port)))
}

async fn sync_parent(
    parent: usize,
    url: String,
    request: SyncPiecesRequest,
    events: mpsc::Sender<SyncEvent>,
) {
    let failed = match sync_stream(parent, &url, request, &events).await {
        Ok(()) => false,
        Err(status) => {
            tracing::debug!(%url, code = ?status.code(), message = status.message(), "sync pieces with parent ended");
            true
        }
    };
    let _ = events.send(SyncEvent::Ended { parent, failed }).await;
}

async fn sync_stream(
    parent: usize,
    url: &str,
    request: SyncPiecesRequest,
    events: &mpsc::Sender<SyncEvent>,
) -> Result<(), tonic::Status> {
    let channel = shoal_client::channel::connect(url)
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let mut client = DfdaemonUploadClient::new(channel)
        .max_decoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES);
    let mut stream = client.sync_pieces(request).await?.into_inner();
    while let Some(response) = stream.message().await? {
        let Ok(ip) = response.ip.parse::<IpAddr>() else {
            continue;
        };
        let Some(port) = response.tcp_port.and_then(|port| u16::try_from(port).ok()) else {
            continue;
        };
        let event = SyncEvent::Has {
            parent,
            piece: PieceNumber::new(response.number),
            endpoint: SocketAddr::new(ip, port),
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(numbers: impl IntoIterator<Item = u32>) -> BTreeSet<PieceNumber> {
        numbers.into_iter().map(PieceNumber::new).collect()
    }

    fn held(entries: &[(u32, &[usize])]) -> HashMap<PieceNumber, Vec<usize>> {
        entries
            .iter()
            .map(|(piece, holders)| (PieceNumber::new(*piece), holders.to_vec()))
            .collect()
    }

    #[test]
    fn lowest_first_then_peers_before_the_seed() {
        // Parent 0 is a seed holding everything; parent 1 a peer holding pieces 0, 1 and 2.
        let available = held(&[
            (0, &[0, 1]),
            (1, &[0, 1]),
            (2, &[0, 1]),
            (3, &[0]),
            (4, &[0]),
        ]);
        let caps = parent_caps(8, &[true, true], &[true, false]);
        assert_eq!(caps, vec![1, 4]);
        let mut loads = vec![0, 0];
        let picks = pick_pieces(
            &pieces(0..5),
            &available,
            &HashSet::new(),
            &mut loads,
            &caps,
            8,
            7,
        );
        assert_eq!(
            picks[0],
            (PieceNumber::new(0), 1),
            "the lowest piece, from the peer"
        );
        let from_peer: BTreeSet<u32> = picks
            .iter()
            .filter(|(_, p)| *p == 1)
            .map(|(n, _)| n.get())
            .collect();
        let from_seed: BTreeSet<u32> = picks
            .iter()
            .filter(|(_, p)| *p == 0)
            .map(|(n, _)| n.get())
            .collect();
        assert_eq!(from_peer, [0, 1, 2].into_iter().collect());
        assert_eq!(from_seed.len(), 1, "the seed carries one piece");
        assert!(
            from_seed.is_subset(&[3, 4].into_iter().collect()),
            "the seed gets what only it has: {from_seed:?}"
        );
        assert_eq!(loads, vec![1, 3]);
    }

    #[test]
    fn caps_bound_each_parent() {
        let available: HashMap<PieceNumber, Vec<usize>> = (0..16)
            .map(|n| (PieceNumber::new(n), vec![0, 1, 2]))
            .collect();
        let caps = parent_caps(8, &[true, true, false], &[true, false, false]);
        assert_eq!(caps, vec![1, 4, 0]);
        let mut loads = vec![0, 0, 0];
        let picks = pick_pieces(
            &pieces(0..16),
            &available,
            &HashSet::new(),
            &mut loads,
            &caps,
            8,
            1,
        );
        assert_eq!(picks.len(), 5);
        assert_eq!(loads, vec![1, 4, 0], "a dead parent gets nothing");
        assert_eq!(
            parent_caps(8, &[true], &[true]),
            vec![8],
            "a lone seed gets every slot"
        );
    }

    #[test]
    fn salts_diversify_the_order() {
        let available: HashMap<PieceNumber, Vec<usize>> =
            (0..64).map(|n| (PieceNumber::new(n), vec![0])).collect();
        let order = |salt| {
            let mut loads = vec![0];
            pick_pieces(
                &pieces(0..64),
                &available,
                &HashSet::new(),
                &mut loads,
                &[8],
                8,
                salt,
            )
            .into_iter()
            .map(|(piece, _)| piece.get())
            .collect::<Vec<_>>()
        };
        let (a, b) = (order(1), order(2));
        assert_eq!(
            (a[0], b[0]),
            (0, 0),
            "the lowest piece leads for in-order readers"
        );
        assert_ne!(a[1..], b[1..], "two children ask for different pieces");
        // Dispatched pieces and pieces nobody holds are never picked.
        let dispatched: HashSet<PieceNumber> = [PieceNumber::new(0)].into_iter().collect();
        let mut loads = vec![0];
        let picks = pick_pieces(
            &pieces(0..2),
            &HashMap::new(),
            &dispatched,
            &mut loads,
            &[8],
            8,
            3,
        );
        assert!(picks.is_empty());
    }
}
