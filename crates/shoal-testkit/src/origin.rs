//! A fake HTTP origin: serves in-memory blobs, counts the body bytes it sends, and injects
//! faults a real server cannot (ignored `Range`, no `Content-Length`, error statuses, a body cut
//! off mid-way).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tokio_util::sync::CancellationToken;

/// How the origin answers for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Honours `Range`, sends `Content-Length`.
    Normal,
    /// Answers every GET with 200 and the whole body.
    IgnoreRange,
    /// Answers with 200, chunked, no `Content-Length`, ignoring `Range`.
    Chunked,
    /// Answers with this status and a short body.
    Status(u16),
    /// Sends headers for the whole length, then cuts the connection after half the body.
    Reset,
}

#[derive(Debug)]
struct Blob {
    bytes: Bytes,
    behaviour: Behaviour,
    served: AtomicU64,
    requests: AtomicU64,
    /// Bytes per second for bodies; 0 is unlimited.
    rate: AtomicU64,
    /// Answer every request with `307` to this location instead.
    redirect: Option<String>,
    /// `Authorization` values received, in order.
    authorizations: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: Mutex<HashMap<String, Arc<Blob>>>,
}

/// A running fake origin; stops when dropped.
#[derive(Debug)]
pub struct FakeOrigin {
    addr: SocketAddr,
    inner: Arc<Inner>,
    cancel: CancellationToken,
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl FakeOrigin {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        let cancel = CancellationToken::new();
        let app = axum::Router::new()
            .route("/{*name}", axum::routing::any(serve))
            .with_state(inner.clone());
        let token = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            inner,
            cancel,
        })
    }

    /// Serves `bytes` at `/name` normally; returns the URL.
    pub fn add(&self, name: &str, bytes: Vec<u8>) -> String {
        self.add_with(name, bytes, Behaviour::Normal)
    }

    /// Serves `bytes` at `/name` with `behaviour`; returns the URL.
    pub fn add_with(&self, name: &str, bytes: Vec<u8>, behaviour: Behaviour) -> String {
        self.insert(name, Bytes::from(bytes), behaviour, None)
    }

    /// Answers `/name` with `307 Temporary Redirect` to `location` (absolute or relative).
    pub fn add_redirect(&self, name: &str, location: &str) -> String {
        self.insert(
            name,
            Bytes::new(),
            Behaviour::Normal,
            Some(location.to_string()),
        )
    }

    /// The `Authorization` headers `/name` received.
    pub fn authorizations(&self, name: &str) -> Vec<String> {
        self.blob(name)
            .map(|blob| blob.authorizations.lock().expect("origin lock").clone())
            .unwrap_or_default()
    }

    fn insert(
        &self,
        name: &str,
        bytes: Bytes,
        behaviour: Behaviour,
        redirect: Option<String>,
    ) -> String {
        let blob = Blob {
            bytes,
            behaviour,
            served: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            redirect,
            authorizations: Mutex::new(Vec::new()),
        };
        self.inner
            .blobs
            .lock()
            .expect("origin lock")
            .insert(name.to_string(), Arc::new(blob));
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name)
    }

    /// Limits how fast bodies of `/name` are sent, in bytes per second (0: unlimited).
    pub fn throttle(&self, name: &str, bytes_per_second: u64) {
        if let Some(blob) = self.blob(name) {
            blob.rate.store(bytes_per_second, Ordering::SeqCst);
        }
    }

    /// Body bytes sent for `/name` so far.
    pub fn served(&self, name: &str) -> u64 {
        self.blob(name)
            .map_or(0, |blob| blob.served.load(Ordering::SeqCst))
    }

    /// Requests answered for `/name` so far (any method).
    pub fn requests(&self, name: &str) -> u64 {
        self.blob(name)
            .map_or(0, |blob| blob.requests.load(Ordering::SeqCst))
    }

    fn blob(&self, name: &str) -> Option<Arc<Blob>> {
        self.inner
            .blobs
            .lock()
            .expect("origin lock")
            .get(name)
            .cloned()
    }
}

async fn serve(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let blob = inner.blobs.lock().expect("origin lock").get(&name).cloned();
    let Some(blob) = blob else {
        return status_response(StatusCode::NOT_FOUND);
    };
    blob.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        blob.authorizations
            .lock()
            .expect("origin lock")
            .push(value.to_string());
    }
    if let Some(location) = &blob.redirect {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(http::header::LOCATION, location)
            .body(Body::empty())
            .expect("valid response");
    }
    let total = blob.bytes.len() as u64;
    match blob.behaviour {
        Behaviour::Status(code) => {
            return status_response(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
        Behaviour::Chunked => {
            if method == Method::HEAD {
                // A streamed body keeps the server from adding a Content-Length.
                let empty = futures::stream::empty::<Result<Bytes, std::io::Error>>();
                return Response::builder()
                    .status(200)
                    .body(Body::from_stream(empty))
                    .expect("valid response");
            }
            return stream_response(&blob, 0, total, None, false, StatusCode::OK);
        }
        _ => {}
    }
    let range = match blob.behaviour {
        Behaviour::Normal | Behaviour::Reset => headers
            .get(http::header::RANGE)
            .and_then(|value| parse_range(value.to_str().ok()?, total)),
        _ => None,
    };
    let (start, end, status) = match range {
        Some((start, end)) => (start, end, StatusCode::PARTIAL_CONTENT),
        None => (0, total, StatusCode::OK),
    };
    if method == Method::HEAD {
        return Response::builder()
            .status(200)
            .header(http::header::CONTENT_LENGTH, total)
            .header(http::header::ACCEPT_RANGES, "bytes")
            .body(Body::empty())
            .expect("valid response");
    }
    let cut = blob.behaviour == Behaviour::Reset;
    stream_response(&blob, start, end, Some(total), cut, status)
}

fn status_response(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(format!("{status}\n")))
        .expect("valid response")
}

fn stream_response(
    blob: &Arc<Blob>,
    start: u64,
    end: u64,
    total: Option<u64>,
    cut: bool,
    status: StatusCode,
) -> Response {
    let chunk = 64 * 1024u64;
    let stop = if cut { start + (end - start) / 2 } else { end };
    let blob_for_stream = blob.clone();
    let chunks = futures::stream::unfold(start, move |position| {
        let blob = blob_for_stream.clone();
        async move {
            if position >= stop {
                if cut {
                    return Some((
                        Err(std::io::Error::other("connection reset by fake origin")),
                        end,
                    ));
                }
                return None;
            }
            let rate = blob.rate.load(Ordering::SeqCst);
            if rate > 0 {
                tokio::time::sleep(std::time::Duration::from_secs_f64(
                    chunk as f64 / rate as f64,
                ))
                .await;
            }
            let next = (position + chunk).min(stop);
            let bytes = blob.bytes.slice(position as usize..next as usize);
            blob.served.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            Some((Ok::<Bytes, std::io::Error>(bytes), next))
        }
    });
    let mut builder = Response::builder()
        .status(status)
        .header(http::header::ACCEPT_RANGES, "bytes");
    if let Some(total) = total {
        builder = builder.header(http::header::CONTENT_LENGTH, end - start);
        if status == StatusCode::PARTIAL_CONTENT {
            builder = builder.header(
                http::header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", start, end.saturating_sub(1), total),
            );
        }
    }
    builder
        .body(Body::from_stream(chunks))
        .expect("valid response")
}

/// `bytes=A-B` (inclusive) as a half-open range within `total`.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = if end.trim().is_empty() {
        total.checked_sub(1)?
    } else {
        end.trim().parse().ok()?
    };
    if start > end || start >= total {
        return None;
    }
    Some((start, end.min(total - 1) + 1))
}
