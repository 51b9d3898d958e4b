//! The AnnouncePeer conversation with the scheduler for one download (wire reference §7).
//!
//! Register, then follow each answer: parents (fetch over P2P, reschedule when incomplete),
//! back-to-source (fetch from the origin), empty task. Piece reports go up the same stream so the
//! scheduler can offer this peer as a parent while it downloads. Every path ends with a terminal
//! message; afterwards we wait a bounded time for the scheduler to close the RPC. When the
//! scheduler is unreachable or errs, the download falls back to the origin unless back-to-source
//! is disabled.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::*;
use shoal_types::PieceNumber;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::p2p::{self, P2pOutcome};
use super::{source, DownloadError, TaskContext};

/// Answers one stream may carry before we stop asking (upstream's maxScheduleCount).
const MAX_SCHEDULE_COUNT: usize = 5;
/// How long to wait for the scheduler to close the RPC after a terminal message.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long to wait for a scheduling answer.
const SCHEDULE_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends requests up the AnnouncePeer stream; a closed stream is ignored (the scheduler is gone
/// and the download continues on its own).
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    sender: Option<mpsc::Sender<AnnouncePeerRequest>>,
    host_id: String,
    task_id: String,
    peer_id: String,
}

impl Reporter {
    pub(crate) fn detached() -> Self {
        Self {
            sender: None,
            host_id: String::new(),
            task_id: String::new(),
            peer_id: String::new(),
        }
    }

    pub(crate) async fn send(&self, request: Request) {
        let Some(sender) = &self.sender else { return };
        let message = AnnouncePeerRequest {
            host_id: self.host_id.clone(),
            task_id: self.task_id.clone(),
            peer_id: self.peer_id.clone(),
            request: Some(request),
        };
        let _ = sender.send(message).await;
    }
}

/// Downloads `missing` pieces as the scheduler directs.
pub(crate) async fn run(
    context: &TaskContext,
    missing: BTreeSet<PieceNumber>,
) -> Result<(), DownloadError> {
    let disable_back_to_source = context.download.disable_back_to_source;
    let (sender, receiver) = mpsc::channel(64);
    let reporter = Reporter {
        sender: Some(sender),
        host_id: context.engine.host.host_id.to_string(),
        task_id: context.task_id.to_string(),
        peer_id: context.peer_id.to_string(),
    };
    let Some(mut client) = context.engine.schedulers.client_for(&context.task_id) else {
        let status = tonic::Status::unavailable("no scheduler known yet");
        return fallback(context, missing, &reporter, status).await;
    };
    reporter
        .send(Request::RegisterPeerRequest(RegisterPeerRequest {
            download: Some(registration(context)),
        }))
        .await;
    let mut responses = match tokio::time::timeout(
        SCHEDULE_TIMEOUT,
        client.announce_peer(ReceiverStream::new(receiver)),
    )
    .await
    {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return fallback(context, missing, &reporter, status).await,
        Err(_) => {
            return fallback(
                context,
                missing,
                &reporter,
                tonic::Status::deadline_exceeded("scheduler did not answer"),
            )
            .await
        }
    };

    let mut missing = missing;
    let mut answers = 0;
    let result = loop {
        let next = tokio::time::timeout(SCHEDULE_TIMEOUT, responses.message()).await;
        let response = match next {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => {
                break fallback(
                    context,
                    missing,
                    &Reporter::detached(),
                    tonic::Status::aborted("scheduler closed the stream"),
                )
                .await
            }
            Ok(Err(status)) => {
                break fallback(context, missing, &Reporter::detached(), status).await
            }
            Err(_) => {
                break fallback(
                    context,
                    missing,
                    &reporter,
                    tonic::Status::deadline_exceeded("scheduler did not answer"),
                )
                .await
            }
        };
        answers += 1;
        match response.response {
            Some(Response::NormalTaskResponse(normal)) => {
                reporter
                    .send(Request::DownloadPeerStartedRequest(
                        DownloadPeerStartedRequest {},
                    ))
                    .await;
                match p2p::fetch(context, &normal.candidate_parents, &missing, &reporter).await? {
                    P2pOutcome::Complete => {
                        reporter
                            .send(Request::DownloadPeerFinishedRequest(
                                DownloadPeerFinishedRequest {},
                            ))
                            .await;
                        break Ok(());
                    }
                    P2pOutcome::Incomplete {
                        remaining,
                        unusable,
                    } => {
                        missing = remaining;
                        if answers >= MAX_SCHEDULE_COUNT {
                            reporter
                                .send(Request::DownloadPeerFailedRequest(
                                    DownloadPeerFailedRequest {
                                        description: Some("max schedule count exceeded".into()),
                                    },
                                ))
                                .await;
                            break fallback(
                                context,
                                missing,
                                &Reporter::detached(),
                                tonic::Status::resource_exhausted("max schedule count exceeded"),
                            )
                            .await;
                        }
                        reporter
                            .send(Request::ReschedulePeerRequest(ReschedulePeerRequest {
                                // The scheduler blocks these for us; busy parents stay eligible.
                                candidate_parents: unusable,
                                description: Some("parents did not deliver every piece".into()),
                            }))
                            .await;
                    }
                }
            }
            Some(Response::NeedBackToSourceResponse(_)) => {
                if disable_back_to_source {
                    // Never expected from a correct scheduler; honour the user's choice.
                    reporter
                        .send(Request::DownloadPeerFailedRequest(
                            DownloadPeerFailedRequest {
                                description: Some("back-to-source is disabled".into()),
                            },
                        ))
                        .await;
                    break Err(DownloadError::NoSource {
                        reason: "the scheduler found no parent".into(),
                    });
                }
                reporter
                    .send(Request::DownloadPeerBackToSourceStartedRequest(
                        DownloadPeerBackToSourceStartedRequest { description: None },
                    ))
                    .await;
                break back_to_source(context, &missing, &reporter).await;
            }
            Some(Response::EmptyTaskResponse(_)) | Some(Response::MetadataOnlyResponse(_)) => {
                reporter
                    .send(Request::DownloadPeerStartedRequest(
                        DownloadPeerStartedRequest {},
                    ))
                    .await;
                if missing.is_empty() || context.layout.content_length() == 0 {
                    reporter
                        .send(Request::DownloadPeerFinishedRequest(
                            DownloadPeerFinishedRequest {},
                        ))
                        .await;
                    break Ok(());
                }
                reporter
                    .send(Request::DownloadPeerFailedRequest(
                        DownloadPeerFailedRequest {
                            description: Some(
                                "scheduler answered empty for a non-empty task".into(),
                            ),
                        },
                    ))
                    .await;
                break fallback(
                    context,
                    missing,
                    &Reporter::detached(),
                    tonic::Status::internal("unexpected empty answer"),
                )
                .await;
            }
            None => continue,
        }
    };
    drop(reporter);
    // The scheduler ends the RPC after a terminal message; never wait on it for long.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Ok(Some(_)) = responses.message().await {}
    })
    .await;
    result
}

async fn back_to_source(
    context: &TaskContext,
    missing: &BTreeSet<PieceNumber>,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    match source::fetch(context, missing, reporter).await {
        Ok(()) => {
            reporter
                .send(Request::DownloadPeerBackToSourceFinishedRequest(
                    DownloadPeerBackToSourceFinishedRequest {},
                ))
                .await;
            Ok(())
        }
        Err(err) => {
            reporter
                .send(Request::DownloadPeerBackToSourceFailedRequest(
                    DownloadPeerBackToSourceFailedRequest {
                        description: Some(err.chain()),
                    },
                ))
                .await;
            Err(err)
        }
    }
}

/// The scheduler is unusable: go to the origin on our own, unless that is forbidden.
async fn fallback(
    context: &TaskContext,
    missing: BTreeSet<PieceNumber>,
    reporter: &Reporter,
    status: tonic::Status,
) -> Result<(), DownloadError> {
    if context.download.disable_back_to_source {
        return Err(DownloadError::Scheduler {
            code: status.code(),
            message: status.message().to_string(),
        });
    }
    tracing::warn!(task_id = %context.task_id, code = ?status.code(), message = status.message(), "scheduler unusable, downloading from origin");
    back_to_source(context, &missing, reporter).await
}

fn registration(context: &TaskContext) -> shoal_protocol::common::Download {
    let mut download = context.download.clone();
    download.actual_content_length = Some(context.layout.content_length());
    download.actual_piece_length = Some(context.layout.piece_length());
    download.actual_piece_count = Some(u64::from(context.layout.piece_count()));
    download.output_path = None;
    download
}

/// Tells the scheduler this daemon holds `task_id` completely (a metadata-only registration,
/// wire reference §7.4), so it can offer us as a parent, e.g. after it restarted. Best effort:
/// failures are logged at debug and never fail the caller's download.
pub(crate) async fn announce_holder(
    engine: &super::EngineInner,
    task_id: &shoal_types::TaskId,
    layout: shoal_types::PieceLayout,
    download: &shoal_protocol::common::Download,
) {
    let exchange = async {
        let (sender, receiver) = mpsc::channel(8);
        let peer_id = shoal_types::PeerId::generate(
            &engine.host.ip.to_string(),
            &engine.host.hostname,
            engine.host.seed,
        );
        let reporter = Reporter {
            sender: Some(sender),
            host_id: engine.host.host_id.to_string(),
            task_id: task_id.to_string(),
            peer_id: peer_id.to_string(),
        };
        let mut registration = download.clone();
        registration.metadata_only = true;
        registration.need_back_to_source = false;
        registration.output_path = None;
        registration.actual_content_length = Some(layout.content_length());
        registration.actual_piece_length = Some(layout.piece_length());
        registration.actual_piece_count = Some(u64::from(layout.piece_count()));
        reporter
            .send(Request::RegisterPeerRequest(RegisterPeerRequest {
                download: Some(registration),
            }))
            .await;
        let mut client = engine
            .schedulers
            .client_for(task_id)
            .ok_or_else(|| tonic::Status::unavailable("no scheduler known yet"))?;
        let mut responses = client
            .announce_peer(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        if let Some(AnnouncePeerResponse {
            response: Some(Response::MetadataOnlyResponse(_)),
        }) = responses.message().await?
        {
            reporter
                .send(Request::DownloadPeerStartedRequest(
                    DownloadPeerStartedRequest {},
                ))
                .await;
            reporter
                .send(Request::DownloadPeerFinishedRequest(
                    DownloadPeerFinishedRequest {},
                ))
                .await;
        }
        drop(reporter);
        while responses.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    };
    match tokio::time::timeout(CLOSE_WAIT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => {
            tracing::debug!(%task_id, code = ?status.code(), message = status.message(), "announcing a held task failed")
        }
        Err(_) => tracing::debug!(%task_id, "announcing a held task timed out"),
    }
}
