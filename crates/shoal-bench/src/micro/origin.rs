//! The origin of the micro-benchmarks: a small HTTP/1.1 file server in this process.
//!
//! It serves registered files under chosen URL paths with `GET`, `HEAD` and single byte ranges
//! (what the daemon's back-to-source sends), streaming from disk, and counts the body bytes it
//! sent so a benchmark can tell how much traffic reached the origin. Dropping the [`Origin`]
//! stops the server and every open connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{SeekFrom, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rand::{RngCore as _, SeedableRng as _};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::task::JoinSet;

type Body = BoxBody<Bytes, std::io::Error>;

/// Bytes read from disk per body frame.
const READ_CHUNK: usize = 256 * 1024;

/// A running origin; dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct OriginState {
    files: Mutex<HashMap<String, PathBuf>>,
    body_bytes: AtomicU64,
}

/// A byte range asked for by `Range`, half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No (usable) `Range`: the whole body with 200.
    Whole,
    /// `start..end` with 206.
    Partial { start: u64, end: u64 },
    /// Starts at or beyond the end: 416.
    Unsatisfiable,
}

impl Origin {
    /// Binds `ip:0` and serves until dropped.
    pub(crate) async fn start(ip: IpAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .with_context(|| format!("bind origin on {ip}"))?;
        let addr = listener.local_addr().context("origin address")?;
        let state = Arc::new(OriginState::default());
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// Serves `file` at URL path `path` (starting with `/`).
    pub(crate) fn add(&self, path: &str, file: &Path) {
        self.state
            .files
            .lock()
            .expect("origin file table is never poisoned")
            .insert(path.to_string(), file.to_path_buf());
    }

    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ip:port`, e.g. for `X-Dragonfly-Registry`.
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Body bytes sent so far, over all requests.
    pub(crate) fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.server.abort();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<OriginState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(respond(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn respond(state: &Arc<OriginState>, request: Request<Incoming>) -> Response<Body> {
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return status(StatusCode::METHOD_NOT_ALLOWED),
    };
    let file = state
        .files
        .lock()
        .expect("origin file table is never poisoned")
        .get(request.uri().path())
        .cloned();
    let Some(file) = file else {
        return status(StatusCode::NOT_FOUND);
    };
    match serve_file(state, &file, request.headers().get(header::RANGE), head).await {
        Ok(response) => response,
        Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn serve_file(
    state: &Arc<OriginState>,
    path: &Path,
    range: Option<&http::HeaderValue>,
    head: bool,
) -> std::io::Result<Response<Body>> {
    let mut file = tokio::fs::File::open(path).await?;
    let length = file.metadata().await?.len();
    let range = range
        .and_then(|value| value.to_str().ok())
        .map_or(RangeRequest::Whole, |value| parse_range(value, length));
    let (code, start, end) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, length),
        RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(value) = format!("bytes */{length}").parse() {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let mut builder = Response::builder()
        .status(code)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if code == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{length}", end - 1),
        );
    }
    let body = if head || start == end {
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        file.seek(SeekFrom::Start(start)).await?;
        let counter = Arc::clone(state);
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(end - start), READ_CHUNK).map_ok(
                move |chunk| {
                    counter
                        .body_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Frame::data(chunk)
                },
            );
        StreamBody::new(stream).boxed()
    };
    builder
        .body(body)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

/// Interprets one `Range` header value against a body of `length` bytes. Multiple ranges and
/// anything malformed get the whole body, as many servers do.
pub(crate) fn parse_range(value: &str, length: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if suffix == 0 || length == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: length.saturating_sub(suffix),
            end: length,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Whole;
    };
    if start >= length {
        return RangeRequest::Unsatisfiable;
    }
    let end = if last.is_empty() {
        length
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(length),
            _ => return RangeRequest::Whole,
        }
    };
    RangeRequest::Partial { start, end }
}

/// Writes `size` pseudo-random bytes (seeded, so reruns are comparable) to `path` and returns
/// their sha256 as hex. Runs on the blocking pool.
pub(crate) async fn write_random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut hasher = sha2::Sha256::new();
        let file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let take = left.min(buffer.len() as u64) as usize;
            rng.fill_bytes(&mut buffer[..take]);
            hasher.update(&buffer[..take]);
            writer.write_all(&buffer[..take])?;
            left -= take as u64;
        }
        writer.flush()?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .context("join file writer")?
}

/// The sha256 of a file as hex. Runs on the blocking pool.
pub(crate) async fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .context("join hasher")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_half_open_and_clamped() {
        assert_eq!(
            parse_range("bytes=0-0", 10),
            RangeRequest::Partial { start: 0, end: 1 }
        );
        assert_eq!(
            parse_range("bytes=4-", 10),
            RangeRequest::Partial { start: 4, end: 10 }
        );
        assert_eq!(
            parse_range("bytes=4-100", 10),
            RangeRequest::Partial { start: 4, end: 10 }
        );
        assert_eq!(
            parse_range("bytes=-3", 10),
            RangeRequest::Partial { start: 7, end: 10 }
        );
        assert_eq!(parse_range("bytes=10-", 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), RangeRequest::Whole);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), RangeRequest::Whole);
        assert_eq!(parse_range("items=0-1", 10), RangeRequest::Whole);
    }
}
