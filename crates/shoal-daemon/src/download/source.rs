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
use shoal_types::{ByteRange, PieceLayout, PieceNumber, TaskId};
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
    let range = piece_range(context, first)?;
    match context
        .origin
        .fetch_range(range)
        .await
        .map_err(DownloadError::Origin)?
    {
        PieceBody::Range(bytes) => store(context, first, bytes, reporter).await?,
        PieceBody::Whole(response) => {
            return stream_whole(context, response, missing, reporter).await
        }
    }
    let mut in_flight = JoinSet::new();
    let limit = context.engine.config.concurrent_pieces;
    for piece in pieces {
        while in_flight.len() >= limit {
            join_one(context, &mut in_flight, reporter).await?;
        }
        let origin = context.origin.clone();
        let range = piece_range(context, piece)?;
        in_flight.spawn(async move { (piece, fetch_one(origin, range).await) });
    }
    while !in_flight.is_empty() {
        join_one(context, &mut in_flight, reporter).await?;
    }
    Ok(())
}

type Fetched = (PieceNumber, Result<Bytes, OriginError>);

async fn join_one(
    context: &TaskContext,
    in_flight: &mut JoinSet<Fetched>,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let Some(joined) = in_flight.join_next().await else {
        return Ok(());
    };
    let (piece, result) = joined.map_err(|_| DownloadError::Cancelled)?;
    let bytes = result.map_err(DownloadError::Origin)?;
    store(context, piece, bytes, reporter).await
}

async fn fetch_one(origin: super::origin::Origin, range: ByteRange) -> Result<Bytes, OriginError> {
    match origin.fetch_range(range).await? {
        PieceBody::Range(bytes) => Ok(bytes),
        // The origin stopped honouring Range: take our slice from the full body.
        PieceBody::Whole(response) => slice_of_whole(response, range, origin.url()).await,
    }
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
    Ok(())
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
) -> Result<(PieceLayout, Vec<PieceRecord>), DownloadError> {
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
        let mut records = Vec::new();
        for piece in layout.pieces() {
            if let Some(record) = state.pieces.get(&piece) {
                records.push(*record);
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
            records.push(record);
        }
        Ok((layout, records))
    }
    .await;
    let _ = tokio::fs::remove_file(&spool_path).await;
    result
}
