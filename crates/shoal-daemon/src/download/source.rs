//! Back-to-source transfers: missing pieces from the origin with ranged GETs in parallel.
//!
//! The first piece is fetched alone to learn whether the origin honours `Range`: on 206 the rest
//! follow in parallel; on 200 the origin is streaming the whole body, which is then cut into
//! pieces in order. Origins that send no length are spooled to disk first and then imported.

use std::collections::BTreeSet;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use shoal_protocol::common::{Download, Piece, TrafficType};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::DownloadPieceBackToSourceFinishedRequest;
use shoal_storage::PieceRecord;
use shoal_types::{ByteRange, PieceDigest, PieceLayout, PieceNumber, TaskId};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::announce::Reporter;
use super::origin::{OriginError, PieceBody};
use super::{DownloadError, DownloadEvent, EngineInner, PieceSource, TaskContext};
use crate::metrics::Source;

/// Fetches `missing` pieces from the origin and stores them.
pub(crate) async fn fetch(
    context: &TaskContext,
    missing: &BTreeSet<PieceNumber>,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let mut pieces = missing.iter().copied();
    let Some(first) = pieces.next() else {
        return Ok(());
    };
    // The first piece alone tells whether the origin honours Range.
    match fetch_streaming(piece_job(context, first)?).await? {
        Fetched::Recorded(record) => report(context, record, reporter).await,
        Fetched::Whole(response) => {
            return stream_whole(context, response, missing, reporter).await
        }
    }
    let mut in_flight = JoinSet::new();
    let limit = context.engine.config.concurrent_pieces;
    for piece in pieces {
        while in_flight.len() >= limit {
            join_one(context, &mut in_flight, reporter).await?;
        }
        let job = piece_job(context, piece)?;
        in_flight.spawn(async move {
            let range = job.range;
            let url = job.origin.url().to_string();
            match fetch_streaming(job).await? {
                Fetched::Recorded(record) => Ok(Err(record)),
                // The origin stopped honouring Range: take our slice from the full body.
                Fetched::Whole(response) => slice_of_whole(response, range, &url)
                    .await
                    .map(|bytes| Ok((piece, bytes)))
                    .map_err(DownloadError::Origin),
            }
        });
    }
    while !in_flight.is_empty() {
        join_one(context, &mut in_flight, reporter).await?;
    }
    Ok(())
}

/// A piece recorded while streaming, or bytes still to store (`Ok`).
type Joined = Result<Result<(PieceNumber, Bytes), PieceRecord>, DownloadError>;

async fn join_one(
    context: &TaskContext,
    in_flight: &mut JoinSet<Joined>,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let Some(joined) = in_flight.join_next().await else {
        return Ok(());
    };
    match joined.map_err(|_| DownloadError::Cancelled)?? {
        Err(record) => {
            report(context, record, reporter).await;
            Ok(())
        }
        Ok((piece, bytes)) => store(context, piece, bytes, reporter).await,
    }
}

/// Everything one origin piece fetch needs, detached from the context so it can be spawned.
struct PieceJob {
    engine: std::sync::Arc<super::EngineInner>,
    task_id: TaskId,
    entry: std::sync::Arc<crate::tasks::TaskEntry>,
    origin: super::origin::Origin,
    piece: PieceNumber,
    range: ByteRange,
}

fn piece_job(context: &TaskContext, piece: PieceNumber) -> Result<PieceJob, DownloadError> {
    Ok(PieceJob {
        engine: context.engine.clone(),
        task_id: context.task_id.clone(),
        entry: context.progress.entry().clone(),
        origin: context.origin.clone(),
        piece,
        range: piece_range(context, piece)?,
    })
}

enum Fetched {
    Recorded(PieceRecord),
    /// The origin ignored Range and is sending the whole content.
    Whole(reqwest::Response),
}

/// Fetches one piece with a ranged GET, writing its bytes into the store as they arrive (so the
/// proxy can serve them before the piece completes) and recording it at the end. Failures of
/// the body are retried with backoff like failures of the request.
async fn fetch_streaming(job: PieceJob) -> Result<Fetched, DownloadError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let response = match job
            .origin
            .open_range(job.range)
            .await
            .map_err(DownloadError::Origin)?
        {
            PieceBody::Whole(response) => return Ok(Fetched::Whole(response)),
            PieceBody::Range(response) => response,
        };
        match stream_into_store(&job, response).await {
            Ok(record) => return Ok(Fetched::Recorded(record)),
            Err(DownloadError::Origin(err))
                if err.is_transient() && attempt < job.origin.retries() =>
            {
                tracing::debug!(task_id = %job.task_id, piece = job.piece.get(), error = %err, "origin piece failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn stream_into_store(
    job: &PieceJob,
    response: reqwest::Response,
) -> Result<PieceRecord, DownloadError> {
    let store = job.engine.tasks.store();
    let url = job.origin.url();
    let expected = job.range.len();
    let mut hasher = crc32fast::Hasher::new();
    let mut written = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| {
            DownloadError::Origin(OriginError::Request {
                url: url.to_string(),
                source,
            })
        })?;
        if written + chunk.len() as u64 > expected {
            return Err(DownloadError::Origin(OriginError::ShortBody {
                url: url.to_string(),
                expected,
                actual: written + chunk.len() as u64,
            }));
        }
        hasher.update(&chunk);
        let length = chunk.len() as u64;
        store
            .write_partial(&job.task_id, job.piece, written, chunk)
            .await
            .map_err(DownloadError::Store)?;
        written += length;
        job.entry.advance(job.piece, written);
    }
    if written != expected {
        return Err(DownloadError::Origin(OriginError::ShortBody {
            url: url.to_string(),
            expected,
            actual: written,
        }));
    }
    store
        .commit_piece(
            &job.task_id,
            job.piece,
            PieceDigest::from_crc(hasher.finalize()),
        )
        .await
        .map_err(DownloadError::Store)
}

async fn slice_of_whole(
    response: reqwest::Response,
    range: ByteRange,
    url: &str,
) -> Result<Bytes, OriginError> {
    let mut stream = response.bytes_stream();
    let mut position = 0u64;
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| OriginError::Request {
            url: url.to_string(),
            source,
        })?;
        let chunk_range = ByteRange::new(position, position + chunk.len() as u64);
        if chunk_range.overlaps(&range) {
            let start = range.start.max(position) - position;
            let end = range.end.min(chunk_range.end) - position;
            buffer.extend_from_slice(&chunk[start as usize..end as usize]);
        }
        position = chunk_range.end;
        if position >= range.end {
            return Ok(buffer.freeze());
        }
    }
    Err(OriginError::ShortBody {
        url: url.to_string(),
        expected: range.end,
        actual: position,
    })
}

/// Cuts a full-body response into pieces, storing the missing ones.
async fn stream_whole(
    context: &TaskContext,
    response: reqwest::Response,
    missing: &BTreeSet<PieceNumber>,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let layout = context.layout;
    let url = context.origin.url().to_string();
    let mut stream = response.bytes_stream();
    let mut piece = PieceNumber::new(0);
    let mut buffer = BytesMut::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|source| {
            DownloadError::Origin(OriginError::Request {
                url: url.clone(),
                source,
            })
        })?;
        received += chunk.len() as u64;
        if received > layout.content_length() {
            return Err(DownloadError::Origin(OriginError::ShortBody {
                url,
                expected: layout.content_length(),
                actual: received,
            }));
        }
        while !chunk.is_empty() {
            let Some(range) = layout.piece_range(piece) else {
                break;
            };
            let want = (range.len() - buffer.len() as u64) as usize;
            let take = want.min(chunk.len());
            buffer.extend_from_slice(&chunk.split_to(take));
            if buffer.len() as u64 == range.len() {
                let bytes = std::mem::take(&mut buffer).freeze();
                if missing.contains(&piece) {
                    store(context, piece, bytes, reporter).await?;
                }
                piece = PieceNumber::new(piece.get() + 1);
            }
        }
    }
    if received != layout.content_length() {
        return Err(DownloadError::Origin(OriginError::ShortBody {
            url,
            expected: layout.content_length(),
            actual: received,
        }));
    }
    Ok(())
}

async fn store(
    context: &TaskContext,
    piece: PieceNumber,
    bytes: Bytes,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let record = context
        .engine
        .tasks
        .store()
        .write_piece(&context.task_id, piece, bytes)
        .await
        .map_err(DownloadError::Store)?;
    report(context, record, reporter).await;
    Ok(())
}

/// Tells the scheduler and the requester about a piece stored from the origin.
async fn report(context: &TaskContext, record: PieceRecord, reporter: &Reporter) {
    let wire = Piece {
        number: record.number.get(),
        parent_id: None,
        offset: record.offset,
        length: record.length,
        digest: record.digest.to_string(),
        content: None,
        traffic_type: Some(TrafficType::BackToSource as i32),
        cost: Some(shoal_protocol::convert::duration(Duration::ZERO)),
        created_at: Some(shoal_protocol::convert::timestamp(SystemTime::now())),
    };
    reporter
        .send(Request::DownloadPieceBackToSourceFinishedRequest(
            DownloadPieceBackToSourceFinishedRequest { piece: Some(wire) },
        ))
        .await;
    context
        .progress
        .piece_done(record, PieceSource::Origin)
        .await;
}

fn piece_range(context: &TaskContext, piece: PieceNumber) -> Result<ByteRange, DownloadError> {
    context.layout.piece_range(piece).ok_or_else(|| {
        DownloadError::InvalidRequest(format!("piece {piece} is beyond the end of the task"))
    })
}

/// Downloads content of unknown length: spool the body to disk, then import it as pieces.
pub(crate) async fn import_unknown_length(
    engine: &Arc<EngineInner>,
    task_id: &TaskId,
    download: &Download,
    response: reqwest::Response,
    events: &mpsc::Sender<DownloadEvent>,
) -> Result<PieceLayout, DownloadError> {
    let store = engine.tasks.store();
    let spool_path = store.content_path(task_id).with_extension("spool");
    let spool_error = |source| DownloadError::Output {
        path: spool_path.clone(),
        source,
    };
    let mut spool = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&spool_path)
        .await
        .map_err(spool_error)?;
    let result = async {
        let mut stream = response.bytes_stream();
        let mut length = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| {
                DownloadError::Origin(OriginError::Request {
                    url: download.url.clone(),
                    source,
                })
            })?;
            spool.write_all(&chunk).await.map_err(spool_error)?;
            length += chunk.len() as u64;
        }
        engine.metrics.downloaded(Source::Origin, length);
        let layout = match download.piece_length {
            Some(piece_length) if piece_length > 0 => {
                PieceLayout::with_piece_length(length, piece_length)
            }
            _ => PieceLayout::for_content_length(length),
        };
        let state = store
            .prepare_task(task_id, layout)
            .await
            .map_err(DownloadError::Store)?;
        let entry = engine.tasks.begin(task_id, layout, state.pieces.clone());
        let _ = events
            .send(DownloadEvent::Started {
                task_id: task_id.clone(),
                content_length: length,
                local_pieces: Vec::new(),
            })
            .await;
        for piece in layout.pieces() {
            if state.pieces.contains_key(&piece) {
                continue;
            }
            let range = layout
                .piece_range(piece)
                .expect("pieces() yields pieces inside the layout");
            let mut buffer = vec![0u8; range.len() as usize];
            spool
                .seek(SeekFrom::Start(range.start))
                .await
                .map_err(spool_error)?;
            spool.read_exact(&mut buffer).await.map_err(spool_error)?;
            let record = store
                .write_piece(task_id, piece, Bytes::from(buffer))
                .await
                .map_err(DownloadError::Store)?;
            entry.record(record);
            let _ = events
                .send(DownloadEvent::Piece {
                    record,
                    source: PieceSource::Origin,
                })
                .await;
        }
        Ok(layout)
    }
    .await;
    let _ = tokio::fs::remove_file(&spool_path).await;
    result
}
