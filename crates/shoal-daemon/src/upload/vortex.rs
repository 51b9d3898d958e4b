//! The Vortex TCP piece server (wire reference §10).
//!
//! Each connection handles requests strictly in order: read a DownloadPiece, answer with a
//! PieceContent header followed by the piece bytes sent with `sendfile(2)` from the task's
//! content file, or with an Error packet (the connection stays open). Unknown tags are skipped
//! by length and answered with Error(invalid argument). Idle connections close after 60 s.
//! Concurrency is bounded by a semaphore and bandwidth by an optional token bucket.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_protocol::vortex::{self, ErrorCode, Packet, PieceInfo};
use shoal_types::{PieceNumber, TaskId};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limit::RateLimiter;
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// Connections idle longer than this are closed (upstream clients drop theirs after 30 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared state of the piece server.
#[derive(Debug, Clone)]
pub(crate) struct PieceServer {
    pub(crate) tasks: Tasks,
    pub(crate) metrics: Metrics,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) rate: Option<Arc<RateLimiter>>,
}

#[derive(Debug, thiserror::Error)]
enum ServePieceError {
    #[error("read or write connection")]
    Io(#[from] std::io::Error),
    #[error("vortex framing")]
    Vortex(#[from] vortex::VortexError),
}

impl PieceServer {
    /// Accepts connections until cancelled.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let server = self.clone();
                    let cancel = cancel.clone();
                    tracker.spawn(async move {
                        if let Err(err) = server.connection(stream, cancel).await {
                            tracing::debug!(%peer, error = %err, "vortex connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "failed to accept vortex connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(
        &self,
        mut stream: TcpStream,
        cancel: CancellationToken,
    ) -> Result<(), ServePieceError> {
        stream.set_nodelay(true)?;
        loop {
            let packet = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                packet = tokio::time::timeout(IDLE_TIMEOUT, vortex::read_packet(&mut stream)) => match packet {
                    Err(_) => return Ok(()),
                    Ok(Err(err)) if err.is_eof() => return Ok(()),
                    Ok(other) => other?,
                },
            };
            match packet {
                Packet::DownloadPiece {
                    task_id,
                    piece_number,
                } => {
                    // Shutdown drops the connection even mid-piece; the child tries elsewhere.
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Ok(()),
                        served = self.serve_piece(&mut stream, &task_id, piece_number) => served?,
                    }
                }
                Packet::Close => return Ok(()),
                Packet::Unsupported { tag } => {
                    vortex::write_error(
                        &mut stream,
                        ErrorCode::InvalidArgument,
                        &format!("tag {tag} is not served"),
                    )
                    .await?;
                }
                Packet::PieceContent(_) | Packet::Error { .. } => {
                    vortex::write_error(
                        &mut stream,
                        ErrorCode::InvalidArgument,
                        "unexpected packet from a client",
                    )
                    .await?;
                    return Ok(());
                }
            }
        }
    }

    async fn serve_piece(
        &self,
        stream: &mut TcpStream,
        task_id: &str,
        number: u32,
    ) -> Result<(), ServePieceError> {
        let not_found = format!("piece {task_id}-{number} not found");
        let Ok(task) = task_id.parse::<TaskId>() else {
            vortex::write_error(stream, ErrorCode::InvalidArgument, "invalid task id").await?;
            return Ok(());
        };
        let entry = match self.tasks.get(&task).await {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                vortex::write_error(stream, ErrorCode::NotFound, &not_found).await?;
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(task_id, error = %err, "failed to look up task for a child");
                vortex::write_error(stream, ErrorCode::Internal, "storage error").await?;
                return Ok(());
            }
        };
        let Some(record) = entry.piece(PieceNumber::new(number)) else {
            vortex::write_error(stream, ErrorCode::NotFound, &not_found).await?;
            return Ok(());
        };
        let _pin = self.tasks.store().pin(&task);
        let path = self.tasks.store().content_path(&task);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(task_id, error = %err, "failed to open content file for a child");
                vortex::write_error(stream, ErrorCode::Internal, "storage error").await?;
                return Ok(());
            }
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the upload semaphore is never closed");
        if let Some(rate) = &self.rate {
            rate.acquire(record.length).await;
        }
        let info = PieceInfo {
            number,
            offset: record.offset,
            length: record.length,
            digest: record.digest.to_string(),
            parent_id: String::new(),
            traffic_type: vortex::TRAFFIC_REMOTE_PEER,
            cost: Duration::ZERO,
            created_at: PieceInfo::unix_seconds(SystemTime::now()),
        };
        stream
            .write_all(&vortex::encode_piece_content(&info))
            .await?;
        send_file(stream, &file, record.offset, record.length).await?;
        self.metrics.uploaded(record.length);
        Ok(())
    }
}

/// Sends `length` bytes of `file` from `offset` with `sendfile(2)`, waiting for socket space.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    length: u64,
) -> std::io::Result<()> {
    let mut position =
        i64::try_from(offset).map_err(|_| std::io::Error::other("offset too large"))?;
    let mut remaining =
        usize::try_from(length).map_err(|_| std::io::Error::other("length too large"))?;
    while remaining > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(
                stream.as_fd(),
                file.as_fd(),
                Some(&mut position),
                remaining,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "content file is shorter than the piece",
                ))
            }
            Ok(sent) => remaining -= sent,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
