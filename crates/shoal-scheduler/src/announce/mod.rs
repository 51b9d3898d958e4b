//! AnnouncePeer sessions: one spawned task per bidirectional stream.
//!
//! [`start`] returns the response stream at once and spawns the session. The session reads the
//! inbound stream continuously; piece reports and state messages are handled inline (a short
//! critical section each), while the answer to a registration or reschedule is computed by a
//! separate future ([`schedule::schedule`]) that the session polls alongside the inbound
//! stream, so a slow schedule never blocks reading. A terminal message ends the RPC with OK
//! at once; an inbound stream that ends or fails without one marks the peer failed. The
//! session stops when the scheduler's cancellation token fires, answering `CANCELLED`.
//!
//! Answers are capped at [`MAX_RESPONSES`], the most an upstream client processes per stream.
//! A stream that sends nothing for the idle timeout (the host TTL) while no answer is pending is
//! reclaimed: live upstream clients report at least every piece timeout (360 s).

mod schedule;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shoal_protocol::common::{Download, Priority};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::{
    announce_peer_response, AnnouncePeerRequest, AnnouncePeerResponse, EmptyTaskResponse,
    MetadataOnlyResponse, RegisterPeerRequest,
};
use shoal_protocol::ErrorCode;
use shoal_types::{HostId, PeerId, TaskId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, field, warn, Instrument, Span};

use crate::grpc::error_chain;
use crate::scheduling::ScheduleMode;
use crate::service::{self, Scheduler, ServiceError};
use crate::state::{FirstAnswer, PeerOutcome, Registration};

/// The most answers an upstream client takes on one stream (`scheduler.maxScheduleCount`).
pub(crate) const MAX_RESPONSES: usize = 5;
/// Room for every answer plus a final error status, so sending never waits on the client.
const RESPONSE_CAPACITY: usize = MAX_RESPONSES + 2;

/// The response stream of one AnnouncePeer RPC.
pub(crate) type ResponseStream = ReceiverStream<Result<AnnouncePeerResponse, Status>>;

type PendingSchedule =
    Pin<Box<dyn Future<Output = Result<AnnouncePeerResponse, AnnounceError>> + Send>>;

/// Why an AnnouncePeer session ended with an error status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnounceError {
    #[error("validate registration")]
    Invalid(#[source] ServiceError),
    #[error("first message on the stream must be a registration")]
    NotRegistered,
    #[error("registration has no download")]
    MissingDownload,
    #[error("downloads with priority LEVEL1 are forbidden")]
    Forbidden,
    #[error("find a parent for peer {peer_id} within {waited:?} with back-to-source disabled")]
    NoParent {
        peer_id: PeerId,
        waited: std::time::Duration,
    },
    #[error("peer {0} was deleted while waiting for a parent")]
    PeerDeleted(PeerId),
    #[error("peer sent nothing for {0:?}; stream reclaimed")]
    Idle(std::time::Duration),
    #[error("scheduler is shutting down")]
    ShuttingDown,
}

impl AnnounceError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(err) => err.code(),
            Self::NotRegistered | Self::MissingDownload => ErrorCode::InvalidArgument,
            Self::Forbidden => ErrorCode::FailedPrecondition,
            Self::NoParent { .. } | Self::Idle(_) => ErrorCode::Unavailable,
            Self::PeerDeleted(_) => ErrorCode::NotFound,
            Self::ShuttingDown => ErrorCode::Cancelled,
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, Self::ShuttingDown)
    }
}

/// The registered peer of a session.
#[derive(Debug)]
struct SessionPeer {
    peer_id: PeerId,
    task_id: TaskId,
    download: Arc<Download>,
}

/// What the session does after one event.
#[derive(Debug)]
enum Action {
    Continue,
    Respond(AnnouncePeerResponse),
    Schedule(ScheduleMode),
    End(SessionEnd),
}

/// How a session ends.
#[derive(Debug)]
enum SessionEnd {
    /// A terminal message arrived; its outcome is recorded.
    Terminal,
    /// End with this error status.
    Failed(AnnounceError),
    /// The client closed its side without a terminal message.
    StreamClosed,
    /// The inbound stream failed.
    StreamError(Status),
}

#[derive(Debug)]
struct Session {
    scheduler: Scheduler,
    peer: Option<SessionPeer>,
    responses_sent: usize,
    span: Span,
}

/// Spawns the session for `inbound` and returns its response stream.
pub(crate) fn start<S>(scheduler: &Scheduler, inbound: S) -> ResponseStream
where
    S: Stream<Item = Result<AnnouncePeerRequest, Status>> + Unpin + Send + 'static,
{
    let (responses, receiver) = mpsc::channel(RESPONSE_CAPACITY);
    let span = tracing::debug_span!(
        "announce_peer",
        task_id = field::Empty,
        peer_id = field::Empty,
        host_id = field::Empty
    );
    let session = Session {
        scheduler: scheduler.clone(),
        peer: None,
        responses_sent: 0,
        span,
    };
    let span = session.span.clone();
    scheduler
        .tracker
        .spawn(run(session, inbound, responses).instrument(span));
    ReceiverStream::new(receiver)
}

async fn run<S>(
    mut session: Session,
    mut inbound: S,
    responses: mpsc::Sender<Result<AnnouncePeerResponse, Status>>,
) where
    S: Stream<Item = Result<AnnouncePeerRequest, Status>> + Unpin,
{
    let cancel = session.scheduler.cancel.clone();
    let idle_timeout = session.scheduler.idle_timeout;
    let mut pending: Option<PendingSchedule> = None;
    let mut last_message = Instant::now();
    let end = loop {
        let (action, schedule_done) = tokio::select! {
            biased;
            () = cancel.cancelled() => (Action::End(SessionEnd::Failed(AnnounceError::ShuttingDown)), false),
            () = tokio::time::sleep_until(last_message + idle_timeout), if pending.is_none() => {
                (Action::End(SessionEnd::Failed(AnnounceError::Idle(idle_timeout))), false)
            }
            outcome = next_outcome(&mut pending) => match outcome {
                Ok(response) => (Action::Respond(response), true),
                Err(err) => (Action::End(SessionEnd::Failed(err)), true),
            },
            message = inbound.next() => match message {
                Some(Ok(request)) => {
                    last_message = Instant::now();
                    (session.handle(request), false)
                }
                Some(Err(status)) => (Action::End(SessionEnd::StreamError(status)), false),
                None => (Action::End(SessionEnd::StreamClosed), false),
            },
        };
        if schedule_done {
            pending = None;
        }
        match action {
            Action::Continue => {}
            Action::Respond(response) => {
                if let Err(end) = session.send(&responses, response) {
                    break end;
                }
            }
            Action::Schedule(mode) => pending = session.schedule(mode),
            Action::End(end) => break end,
        }
    };
    session.finish(end, &responses);
}

/// The result of the pending schedule; never completes when none is pending.
async fn next_outcome(
    pending: &mut Option<PendingSchedule>,
) -> Result<AnnouncePeerResponse, AnnounceError> {
    match pending {
        Some(schedule) => schedule.await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn handle(&mut self, request: AnnouncePeerRequest) -> Action {
        let Some(message) = request.request else {
            debug!("ignoring announce message without a request");
            return Action::Continue;
        };
        if let Request::RegisterPeerRequest(register) = message {
            return match self.register(
                &request.host_id,
                &request.task_id,
                &request.peer_id,
                register,
            ) {
                Ok(action) => action,
                Err(err) => Action::End(SessionEnd::Failed(err)),
            };
        }
        let Some(peer) = &self.peer else {
            return match terminal_outcome(&message) {
                Some(_) => Action::End(SessionEnd::Terminal),
                None => Action::End(SessionEnd::Failed(AnnounceError::NotRegistered)),
            };
        };
        if let Some(outcome) = terminal_outcome(&message) {
            debug!(?outcome, "peer download ended");
            self.scheduler
                .state
                .lock()
                .peer_finished(&peer.peer_id, outcome, Instant::now());
            return Action::End(SessionEnd::Terminal);
        }
        self.report(message)
    }

    fn register(
        &mut self,
        host_id: &str,
        task_id: &str,
        peer_id: &str,
        register: RegisterPeerRequest,
    ) -> Result<Action, AnnounceError> {
        if self.peer.is_some() {
            debug!("ignoring a second registration on one stream");
            return Ok(Action::Continue);
        }
        let host_id: HostId = service::parse_host_id(host_id).map_err(AnnounceError::Invalid)?;
        let task_id: TaskId = service::parse_task_id(task_id).map_err(AnnounceError::Invalid)?;
        let peer_id: PeerId = service::parse_peer_id(peer_id).map_err(AnnounceError::Invalid)?;
        self.span.record("task_id", field::display(&task_id));
        self.span.record("peer_id", field::display(&peer_id));
        self.span.record("host_id", field::display(&host_id));
        let download = register.download.ok_or(AnnounceError::MissingDownload)?;
        if download.priority == Priority::Level1 as i32 {
            return Err(AnnounceError::Forbidden);
        }
        let registration = Registration::new(peer_id.clone(), task_id.clone(), host_id, &download);
        let answer = self.scheduler.state.lock().register_peer(registration);
        debug!(?answer, "peer registered");
        self.peer = Some(SessionPeer {
            peer_id,
            task_id,
            download: Arc::new(download),
        });
        Ok(match answer {
            FirstAnswer::MetadataOnly => Action::Respond(AnnouncePeerResponse {
                response: Some(announce_peer_response::Response::MetadataOnlyResponse(
                    MetadataOnlyResponse {},
                )),
            }),
            FirstAnswer::Empty => Action::Respond(AnnouncePeerResponse {
                response: Some(announce_peer_response::Response::EmptyTaskResponse(
                    EmptyTaskResponse {},
                )),
            }),
            FirstAnswer::Schedule => Action::Schedule(ScheduleMode::Register),
        })
    }

    /// A non-terminal message of a registered peer.
    fn report(&mut self, message: Request) -> Action {
        let Some(peer) = &self.peer else {
            return Action::Continue;
        };
        let mut state = self.scheduler.state.lock();
        match message {
            Request::DownloadPeerStartedRequest(_) => state.peer_started(&peer.peer_id, false),
            Request::DownloadPeerBackToSourceStartedRequest(_) => {
                state.peer_started(&peer.peer_id, true)
            }
            Request::DownloadPieceFinishedRequest(report) => {
                if let Some(piece) = &report.piece {
                    state.piece_finished(&peer.peer_id, piece, false);
                }
            }
            Request::DownloadPieceBackToSourceFinishedRequest(report) => {
                if let Some(piece) = &report.piece {
                    state.piece_finished(&peer.peer_id, piece, true);
                }
            }
            Request::DownloadPieceFailedRequest(report) => {
                debug!(parent_id = %report.parent_id, temporary = report.temporary, "piece failed");
                if !report.parent_id.is_empty() {
                    let parent = PeerId::from_wire(report.parent_id);
                    state.piece_failed(&peer.peer_id, parent, report.temporary);
                }
            }
            Request::DownloadPieceBackToSourceFailedRequest(report) => {
                debug!(piece = ?report.piece_number, "piece from the origin failed");
            }
            Request::ReschedulePeerRequest(reschedule) => {
                debug!(description = ?reschedule.description, "peer asked for new parents");
                let parents = reschedule
                    .candidate_parents
                    .into_iter()
                    .filter(|parent| !parent.id.is_empty())
                    .map(|parent| PeerId::from_wire(parent.id));
                state.block_parents(&peer.peer_id, parents);
                if self.responses_sent >= MAX_RESPONSES {
                    debug!("ignoring reschedule past the client's answer limit");
                    return Action::Continue;
                }
                return Action::Schedule(ScheduleMode::Reschedule);
            }
            Request::RegisterPeerRequest(_)
            | Request::DownloadPeerFinishedRequest(_)
            | Request::DownloadPeerBackToSourceFinishedRequest(_)
            | Request::DownloadPeerFailedRequest(_)
            | Request::DownloadPeerBackToSourceFailedRequest(_) => {}
        }
        Action::Continue
    }

    fn schedule(&self, mode: ScheduleMode) -> Option<PendingSchedule> {
        let peer = self.peer.as_ref()?;
        Some(Box::pin(schedule::schedule(
            self.scheduler.clone(),
            peer.peer_id.clone(),
            peer.task_id.clone(),
            Arc::clone(&peer.download),
            mode,
        )))
    }

    fn send(
        &mut self,
        responses: &mpsc::Sender<Result<AnnouncePeerResponse, Status>>,
        response: AnnouncePeerResponse,
    ) -> Result<(), SessionEnd> {
        if self.responses_sent >= MAX_RESPONSES {
            debug!("dropping an answer past the client's limit");
            return Ok(());
        }
        debug!(answer = answer_kind(&response), "answering peer");
        responses
            .try_send(Ok(response))
            .map_err(|_| SessionEnd::StreamClosed)?;
        self.responses_sent += 1;
        Ok(())
    }

    fn finish(
        self,
        end: SessionEnd,
        responses: &mpsc::Sender<Result<AnnouncePeerResponse, Status>>,
    ) {
        let status = match end {
            SessionEnd::Terminal => return,
            SessionEnd::Failed(err) => {
                if !err.is_cancelled() {
                    debug!(error = %error_chain(&err), "announce peer failed");
                }
                Some(err.code().status(error_chain(&err)))
            }
            SessionEnd::StreamClosed => {
                debug!("announce stream ended without a terminal message");
                None
            }
            SessionEnd::StreamError(status) => {
                warn!(error = %status, "announce stream failed");
                None
            }
        };
        if let Some(peer) = &self.peer {
            self.scheduler.state.lock().peer_finished(
                &peer.peer_id,
                PeerOutcome::Failed,
                Instant::now(),
            );
        }
        if let Some(status) = status {
            // The client may already be gone; nothing else to tell it.
            let _ = responses.try_send(Err(status));
        }
    }
}

fn terminal_outcome(message: &Request) -> Option<PeerOutcome> {
    match message {
        Request::DownloadPeerFinishedRequest(_) => Some(PeerOutcome::Finished),
        Request::DownloadPeerBackToSourceFinishedRequest(_) => {
            Some(PeerOutcome::BackToSourceFinished)
        }
        Request::DownloadPeerFailedRequest(_) => Some(PeerOutcome::Failed),
        Request::DownloadPeerBackToSourceFailedRequest(_) => Some(PeerOutcome::BackToSourceFailed),
        _ => None,
    }
}

fn answer_kind(response: &AnnouncePeerResponse) -> &'static str {
    match &response.response {
        Some(announce_peer_response::Response::NormalTaskResponse(_)) => "normal",
        Some(announce_peer_response::Response::NeedBackToSourceResponse(_)) => "back_to_source",
        Some(announce_peer_response::Response::EmptyTaskResponse(_)) => "empty",
        Some(announce_peer_response::Response::MetadataOnlyResponse(_)) => "metadata_only",
        None => "none",
    }
}

#[cfg(test)]
mod tests;
