//! The Vortex piece client: fetches one piece from a parent and verifies it.
//!
//! Connections are pooled per parent address and reused: one request is outstanding per
//! connection, the whole answer is read before the connection returns to the pool, and a
//! connection that saw an error is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_protocol::vortex::{self, Packet, PieceInfo, VortexError};
use shoal_types::{PieceDigest, TaskId};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept per parent.
const MAX_IDLE_PER_PARENT: usize = 16;
/// Pooled connections idle longer than this are dropped: parents close theirs after 30-60 s.
const MAX_IDLE: Duration = Duration::from_secs(20);

/// Idle connections per parent, each with the time it went idle.
type IdlePool = HashMap<SocketAddr, Vec<(TcpStream, Instant)>>;

/// Pool of Vortex connections to parents; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PieceClient {
    idle: Arc<Mutex<IdlePool>>,
}

/// A verified piece received from a parent.
#[derive(Debug, Clone)]
pub struct ReceivedPiece {
    pub info: PieceInfo,
    pub digest: PieceDigest,
    pub content: Bytes,
}

/// Why a piece could not be fetched; says whether the parent or the network is at fault.
#[derive(Debug, thiserror::Error)]
pub enum FetchPieceError {
    #[error("connect to parent {addr}")]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("exchange piece with parent {addr}")]
    Transfer {
        addr: SocketAddr,
        #[source]
        source: VortexError,
    },
    #[error("parent {addr} timed out")]
    Timeout { addr: SocketAddr },
    #[error("parent {addr} does not have piece {piece}: {message}")]
    NotFound {
        addr: SocketAddr,
        piece: u32,
        message: String,
    },
    #[error("parent {addr} refused piece {piece}: {message}")]
    Refused {
        addr: SocketAddr,
        piece: u32,
        message: String,
    },
    #[error("parent {addr} sent piece {got} with {length} bytes, expected piece {piece} with {expected}")]
    WrongPiece {
        addr: SocketAddr,
        piece: u32,
        got: u32,
        length: u64,
        expected: u64,
    },
    #[error("parent {addr} sent piece {piece} without a usable digest ({digest:?})")]
    MissingDigest {
        addr: SocketAddr,
        piece: u32,
        digest: String,
    },
    #[error("piece {piece} from parent {addr} does not match its digest {expected}")]
    DigestMismatch {
        addr: SocketAddr,
        piece: u32,
        expected: String,
    },
    #[error("parent {addr} answered with an unexpected packet")]
    Protocol { addr: SocketAddr },
}

impl FetchPieceError {
    /// Whether the parent sent data that cannot be trusted (as opposed to being unreachable).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. } | Self::MissingDigest { .. } | Self::WrongPiece { .. }
        )
    }

    /// Whether only this piece is missing at the parent (the parent itself is fine).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

impl PieceClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fetches piece `piece` of `task_id` from the parent at `addr`, expecting `expected_length`
    /// bytes, and verifies its crc32 digest.
    ///
    /// `timeout` bounds each wait, not the whole exchange: for the parent's answer (a busy parent
    /// queues requests) and for every read of the body. A parent that keeps sending, however
    /// slowly over a shaped link, is not cut off; one that goes silent is.
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        task_id: &TaskId,
        piece: u32,
        expected_length: u64,
        timeout: Duration,
    ) -> Result<ReceivedPiece, FetchPieceError> {
        // A pooled connection may have been closed by the parent since its last use: a failure
        // on one is retried once on a fresh connection before it counts against the parent.
        if let Some(mut stream) = self.take_idle(addr) {
            let exchange = exchange(&mut stream, addr, task_id, piece, expected_length, timeout);
            match exchange.await {
                Ok(received) => {
                    self.put_idle(addr, stream);
                    return verify(addr, received);
                }
                Err(FetchPieceError::Transfer { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let mut stream = connect(addr, timeout).await?;
        let received =
            exchange(&mut stream, addr, task_id, piece, expected_length, timeout).await?;
        self.put_idle(addr, stream);
        verify(addr, received)
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self
            .idle
            .lock()
            .expect("pool lock is never poisoned: no panics inside");
        let pool = idle.get_mut(&addr)?;
        while let Some((stream, since)) = pool.pop() {
            if since.elapsed() < MAX_IDLE {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self
            .idle
            .lock()
            .expect("pool lock is never poisoned: no panics inside");
        let entry = idle.entry(addr).or_default();
        if entry.len() < MAX_IDLE_PER_PARENT {
            entry.push((stream, Instant::now()));
        }
    }

    /// Drops every pooled connection to `addr` (after the parent failed).
    pub fn forget(&self, addr: SocketAddr) {
        let mut idle = self
            .idle
            .lock()
            .expect("pool lock is never poisoned: no panics inside");
        idle.remove(&addr);
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, FetchPieceError> {
    let connect = TcpStream::connect(addr);
    let stream = match tokio::time::timeout(timeout.min(Duration::from_secs(3)), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(FetchPieceError::Unreachable { addr, source }),
        Err(_) => return Err(FetchPieceError::Timeout { addr }),
    };
    stream
        .set_nodelay(true)
        .map_err(|source| FetchPieceError::Unreachable { addr, source })?;
    Ok(stream)
}

struct Unverified {
    info: PieceInfo,
    content: Bytes,
    piece: u32,
}

async fn exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    task_id: &TaskId,
    piece: u32,
    expected_length: u64,
    timeout: Duration,
) -> Result<Unverified, FetchPieceError> {
    let transfer = |source| FetchPieceError::Transfer { addr, source };
    let timed_out = |_| FetchPieceError::Timeout { addr };
    tokio::time::timeout(
        timeout,
        vortex::write_download_piece(stream, task_id.as_str(), piece),
    )
    .await
    .map_err(timed_out)?
    .map_err(transfer)?;
    let answer = tokio::time::timeout(timeout, vortex::read_packet(stream))
        .await
        .map_err(timed_out)?
        .map_err(transfer)?;
    let info = match answer {
        Packet::PieceContent(info) => info,
        Packet::Error {
            code: vortex::ErrorCode::NotFound,
            message,
        } => {
            return Err(FetchPieceError::NotFound {
                addr,
                piece,
                message,
            });
        }
        Packet::Error { message, .. } => {
            return Err(FetchPieceError::Refused {
                addr,
                piece,
                message,
            });
        }
        _ => return Err(FetchPieceError::Protocol { addr }),
    };
    if info.number != piece || info.length != expected_length {
        return Err(FetchPieceError::WrongPiece {
            addr,
            piece,
            got: info.number,
            length: info.length,
            expected: expected_length,
        });
    }
    let length = usize::try_from(info.length).map_err(|_| FetchPieceError::Protocol { addr })?;
    let mut content = BytesMut::zeroed(length);
    let mut filled = 0;
    while filled < length {
        let read = tokio::time::timeout(timeout, stream.read(&mut content[filled..]))
            .await
            .map_err(timed_out)?
            .map_err(|source| transfer(VortexError::Io(source)))?;
        if read == 0 {
            let eof = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "parent closed the connection mid-piece",
            );
            return Err(transfer(VortexError::Io(eof)));
        }
        filled += read;
    }
    Ok(Unverified {
        info,
        content: content.freeze(),
        piece,
    })
}

fn verify(addr: SocketAddr, received: Unverified) -> Result<ReceivedPiece, FetchPieceError> {
    let Unverified {
        info,
        content,
        piece,
    } = received;
    let expected: PieceDigest =
        info.digest
            .parse()
            .map_err(|_| FetchPieceError::MissingDigest {
                addr,
                piece,
                digest: info.digest.clone(),
            })?;
    let actual = PieceDigest::from_crc(crc32fast::hash(&content));
    if actual != expected {
        return Err(FetchPieceError::DigestMismatch {
            addr,
            piece,
            expected: info.digest,
        });
    }
    Ok(ReceivedPiece {
        info,
        digest: actual,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::vortex::{encode_piece_content, PieceInfo};
    use tokio::io::AsyncWriteExt;

    /// Metadata of an 11-byte `hello world` piece.
    fn hello_world_info(number: u32) -> PieceInfo {
        PieceInfo {
            number,
            offset: 0,
            length: 11,
            digest: PieceDigest::compute(b"hello world").to_string(),
            parent_id: String::new(),
            traffic_type: 1,
            cost: Duration::ZERO,
            created_at: 0,
        }
    }

    const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

    /// A parent that serves one piece per connection and then closes it, as a parent does
    /// after its idle timeout: the pooled connection is stale on the next fetch.
    async fn one_shot_parent() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let Ok(Packet::DownloadPiece { piece_number, .. }) =
                    vortex::read_packet(&mut stream).await
                else {
                    continue;
                };
                let content = b"hello world";
                let info = hello_world_info(piece_number);
                stream
                    .write_all(&encode_piece_content(&info))
                    .await
                    .unwrap();
                stream.write_all(content).await.unwrap();
                // Dropping the stream closes the connection.
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_stale_pooled_connection_is_retried_on_a_fresh_one() {
        let addr = one_shot_parent().await;
        let client = PieceClient::new();
        let task: TaskId = TASK.parse().unwrap();
        for piece in 0..3 {
            let received = client
                .fetch(addr, &task, piece, 11, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(&received.content[..], b"hello world");
        }
    }

    #[tokio::test]
    async fn a_corrupt_piece_is_reported_as_corrupt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = vortex::read_packet(&mut stream).await.unwrap();
            let info = hello_world_info(0);
            stream
                .write_all(&encode_piece_content(&info))
                .await
                .unwrap();
            stream.write_all(b"hello WORLD").await.unwrap();
        });
        let err = PieceClient::new()
            .fetch(addr, &TASK.parse().unwrap(), 0, 11, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }
}
