//! Fetching pieces from the parents the scheduler named (wire reference §9, §10).
//!
//! One SyncPieces stream per parent tells us which pieces it holds (finished first, then each
//! in-flight piece as it completes). A piece is dispatched as soon as one parent has it, to the
//! least loaded parent holding it; up to `concurrent_pieces` are in flight, at most half of them
//! on one normal parent and one on a seed when there are several ([`parent_caps`](super::picker::parent_caps)). After the
//! lowest missing piece (for in-order readers), pieces go rarest first in a random order per
//! download, so children that start together fetch different pieces and trade them
//! ([`super::picker`]). A parent that sends
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
use super::picker::{parent_caps, pick_pieces};
use super::{DownloadError, PieceSource, TaskContext};

/// How one round of P2P fetching ended.
#[derive(Debug)]
pub(crate) enum P2pOutcome {
    Complete,
    Incomplete {
        remaining: BTreeSet<PieceNumber>,
        /// Parents that failed us or have nothing more to offer (their piece stream ended).
        /// A parent still streaming and never failed is kept: it may only be busy (a seed
        /// serving many children queues their requests), and blocking it would send the child
        /// to the origin beside the seed.
        unusable: Vec<Peer>,
    },
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
    /// The parent as the scheduler named it, to name it back in a reschedule.
    wire: Peer,
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
            wire: parent.clone(),
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
            return Ok(incomplete(pending, &states));
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
                return Ok(incomplete(pending, &states));
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

fn incomplete(remaining: BTreeSet<PieceNumber>, states: &[ParentState]) -> P2pOutcome {
    let unusable = states
        .iter()
        .filter(|state| !state.alive || !state.syncing)
        .map(|state| state.wire.clone())
        .collect();
    P2pOutcome::Incomplete {
        remaining,
        unusable,
    }
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
