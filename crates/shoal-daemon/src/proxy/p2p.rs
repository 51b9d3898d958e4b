//! Serving a GET through the download engine: response headers as soon as the content length
//! is known, the body streamed as pieces land in the store, ranges answered from the pieces that
//! cover them. A failure after the headers went out aborts the connection (an error in the body
//! stream), so a client never mistakes a short body for a complete one.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use shoal_protocol::common::Download;
use shoal_storage::Store;
use shoal_types::{ByteRange, PieceLayout, TaskId};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::range::{self, RangeAnswer};
use super::{error_response, headers, ProxyBody, ProxyState, Target};
use crate::download::{DownloadError, DownloadEvent, DownloadRequest};
use crate::tasks::{TaskEntry, TaskStatus};

/// Bytes read from the store per body frame.
const CHUNK: u64 = 1024 * 1024;

pub(crate) async fn serve(
    state: &Arc<ProxyState>,
    request: Request<Incoming>,
    target: Target,
) -> Response<ProxyBody> {
    let download = match download_for(&request, &target) {
        Ok(download) => download,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "proxy", &message),
    };
    let range_header = headers::text(request.headers(), "range").map(str::to_string);
    let (events, mut event_receiver) = mpsc::channel(256);
    let (result_sender, mut result) = tokio::sync::oneshot::channel();
    let engine = state.engine.clone();
    let cancel = state.cancel.clone();
    state.tracker.spawn(async move {
        let download = engine.download(DownloadRequest { download }, events);
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(DownloadError::Cancelled),
            outcome = download => outcome,
        };
        let _ = result_sender.send(outcome.map(|_| ()));
    });
    // Wait for the layout (or an early failure) before answering.
    let started = loop {
        tokio::select! {
            // Events first: a download served from the cache finishes at once, and its
            // Started event must win over its result.
            biased;
            event = event_receiver.recv() => match event {
                Some(DownloadEvent::Started { task_id, content_length, local_pieces }) => {
                    let complete = local_pieces.iter().map(|piece| piece.length).sum::<u64>() == content_length;
                    break (task_id, content_length, complete);
                }
                Some(DownloadEvent::Piece { .. }) => continue,
                None => {
                    let outcome = (&mut result).await.unwrap_or(Err(DownloadError::Cancelled));
                    return failure_response(outcome.err());
                }
            },
            outcome = &mut result => {
                let outcome = outcome.unwrap_or(Err(DownloadError::Cancelled));
                // Events sent just before the result are still queued.
                if let Ok(DownloadEvent::Started { task_id, content_length, local_pieces }) = event_receiver.try_recv() {
                    let complete = local_pieces.iter().map(|piece| piece.length).sum::<u64>() == content_length;
                    break (task_id, content_length, complete);
                }
                return failure_response(outcome.err());
            }
        }
    };
    // Keep draining events so the engine never blocks on us.
    state
        .tracker
        .spawn(async move { while event_receiver.recv().await.is_some() {} });
    let (task_id, length, complete) = started;
    let entry = match state.engine.inner.tasks.get(&task_id).await {
        Ok(Some(entry)) => entry,
        Ok(None) | Err(_) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "dfdaemon",
                "task vanished from the store",
            )
        }
    };
    respond(
        state,
        task_id,
        entry,
        length,
        complete,
        range_header.as_deref(),
    )
}

fn respond(
    state: &Arc<ProxyState>,
    task_id: TaskId,
    entry: Arc<TaskEntry>,
    length: u64,
    complete: bool,
    range_header: Option<&str>,
) -> Response<ProxyBody> {
    let (status, range) = match range::answer(range_header, length) {
        RangeAnswer::Whole => (StatusCode::OK, ByteRange::new(0, length)),
        RangeAnswer::Partial(range) => (StatusCode::PARTIAL_CONTENT, range),
        RangeAnswer::Unsatisfiable => {
            let mut response = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "proxy",
                "range not satisfiable",
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let store = state.engine.store().clone();
    let body = body_stream(store, task_id.clone(), entry, range);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(range.len()));
    headers.insert(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) = HeaderValue::from_str(&range::content_range(range, length)) {
            headers.insert(http::header::CONTENT_RANGE, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(task_id.as_str()) {
        headers.insert(headers::TASK_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&state.server_ip.to_string()) {
        headers.insert(headers::SERVER_IP, value);
    }
    headers.insert(
        headers::TASK_DOWNLOAD_FINISHED,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    response
}

/// Streams `range` of the task, waiting for each piece as it lands.
fn body_stream(
    store: Store,
    task_id: TaskId,
    entry: Arc<TaskEntry>,
    range: ByteRange,
) -> ProxyBody {
    let stream = async_stream(store, task_id, entry, range);
    StreamBody::new(stream.map(|chunk| chunk.map(Frame::data))).boxed_unsync()
}

fn async_stream(
    store: Store,
    task_id: TaskId,
    entry: Arc<TaskEntry>,
    range: ByteRange,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let layout: PieceLayout = entry.layout;
    // Garbage collection never removes a task while a client is reading it.
    let pin = Arc::new(store.pin(&task_id));
    let state = (store, task_id, entry, range.start, None::<tokio::fs::File>);
    futures::stream::unfold(state, move |(store, task_id, entry, position, file)| {
        let _pin = pin.clone();
        async move {
            if position >= range.end {
                return None;
            }
            let result =
                next_chunk(&store, &task_id, &entry, layout, position, range.end, file).await;
            match result {
                Ok((bytes, file)) => {
                    let next = position + bytes.len() as u64;
                    Some((Ok(bytes), (store, task_id, entry, next, Some(file))))
                }
                Err(err) => Some((Err(err), (store, task_id, entry, range.end, None))),
            }
        }
    })
}

async fn next_chunk(
    store: &Store,
    task_id: &TaskId,
    entry: &TaskEntry,
    layout: PieceLayout,
    position: u64,
    end: u64,
    file: Option<tokio::fs::File>,
) -> std::io::Result<(Bytes, tokio::fs::File)> {
    let piece = shoal_types::PieceNumber::new(
        u32::try_from(position / layout.piece_length()).map_err(std::io::Error::other)?,
    );
    let piece_range = layout
        .piece_range(piece)
        .ok_or_else(|| std::io::Error::other("position beyond the content"))?;
    // Bytes are served as soon as they are written, even while their piece is still arriving.
    let offset = position - piece_range.start;
    let available = wait_for_bytes(entry, piece, offset).await?;
    let mut file = match file {
        Some(file) => file,
        None => tokio::fs::File::open(store.content_path(task_id)).await?,
    };
    let until = end.min(piece_range.start + available).min(position + CHUNK);
    let mut buffer = BytesMut::zeroed((until - position) as usize);
    file.seek(SeekFrom::Start(position)).await?;
    file.read_exact(&mut buffer).await?;
    Ok((buffer.freeze(), file))
}

/// Waits until more than `offset` bytes of `piece` are readable; returns how many are.
async fn wait_for_bytes(
    entry: &TaskEntry,
    piece: shoal_types::PieceNumber,
    offset: u64,
) -> std::io::Result<u64> {
    let mut changes = entry.subscribe();
    loop {
        let status = changes.borrow_and_update().0.clone();
        let available = entry.available(piece);
        if available > offset {
            return Ok(available);
        }
        if let TaskStatus::Failed(reason) = status {
            return Err(std::io::Error::other(format!("download failed: {reason}")));
        }
        if status == TaskStatus::Finished {
            return Err(std::io::Error::other("task finished without the piece"));
        }
        changes
            .changed()
            .await
            .map_err(|_| std::io::Error::other("task was removed"))?;
    }
}

/// `HEAD` for a blob this daemon holds completely; `None` when it must go to the registry.
pub(crate) async fn head_from_store(
    state: &Arc<ProxyState>,
    request: &Request<Incoming>,
    target: &Target,
) -> Option<Response<ProxyBody>> {
    let download = download_for(request, target).ok()?;
    let task_id = crate::download::Engine::task_id(&download).ok()?;
    let entry = state.engine.inner.tasks.get(&task_id).await.ok()??;
    if entry.status() != TaskStatus::Finished {
        return None;
    }
    let mut response = Response::new(super::empty());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(entry.layout.content_length()),
    );
    headers.insert(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(task_id.as_str()) {
        headers.insert(headers::TASK_ID, value);
    }
    headers.insert(
        headers::TASK_DOWNLOAD_FINISHED,
        HeaderValue::from_static("true"),
    );
    Some(response)
}

/// The response for a download that failed before any byte was promised.
fn failure_response(error: Option<DownloadError>) -> Response<ProxyBody> {
    let Some(error) = error else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "dfdaemon",
            "download ended without content",
        );
    };
    if let Some((status, origin_headers)) = error.origin_response() {
        // Relay the origin's answer (404 stays 404, 401 keeps its challenge).
        let mut response = error_response(status, "backend", &error.chain());
        let mut origin_headers = origin_headers.clone();
        headers::strip_hop_by_hop(&mut origin_headers);
        for (name, value) in &origin_headers {
            if name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::CONTENT_TYPE
            {
                continue;
            }
            response.headers_mut().append(name.clone(), value.clone());
        }
        return response;
    }
    let status = StatusCode::from_u16(error.code().to_http()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = if matches!(error, DownloadError::Origin(_)) {
        "backend"
    } else {
        "dfdaemon"
    };
    error_response(status, kind, &error.chain())
}

/// The `common.v2.Download` for a proxied request.
fn download_for(request: &Request<Incoming>, target: &Target) -> Result<Download, String> {
    let request_headers = request.headers();
    let mut origin_headers = request_headers.clone();
    super::headers::strip_hop_by_hop(&mut origin_headers);
    super::headers::strip_dragonfly(&mut origin_headers);
    origin_headers.remove(http::header::HOST);
    origin_headers.remove(http::header::RANGE);
    let mut request_header = HashMap::new();
    for (name, value) in &origin_headers {
        if let Ok(value) = value.to_str() {
            request_header.insert(name.as_str().to_string(), value.to_string());
        }
    }
    let filtered_query_params =
        headers::filtered_query_params(request_headers).unwrap_or_else(|| {
            shoal_types::task_id::DEFAULT_FILTERED_QUERY_PARAMS
                .iter()
                .map(|name| name.to_string())
                .collect()
        });
    Ok(Download {
        url: target.url.to_string(),
        tag: headers::text(request_headers, headers::TAG).map(String::from),
        application: headers::text(request_headers, headers::APPLICATION).map(String::from),
        priority: headers::priority(request_headers),
        filtered_query_params,
        request_header,
        piece_length: headers::piece_length(request_headers)?,
        enable_task_id_based_blob_digest: headers::flag(
            request_headers,
            headers::BLOB_DIGEST_TASK_ID,
        )
        .unwrap_or(target.mirror),
        ..Default::default()
    })
}
