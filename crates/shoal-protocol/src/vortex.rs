//! Vortex packets on async byte streams (wire reference §10).
//!
//! A packet is a 6-byte header (random id, tag, u32 BE value length) and a value. A
//! `PieceContent` packet is followed by exactly `length` raw content bytes, unframed, which the
//! caller reads or writes itself (so the server can `sendfile` them).

use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vortex_protocol::tlv::download_piece::DownloadPiece;
use vortex_protocol::tlv::error::{Code, Error as ErrorValue};
use vortex_protocol::tlv::piece_content::PieceContent;
use vortex_protocol::tlv::piece_metadata::PieceMetadata;
use vortex_protocol::tlv::Tag;
use vortex_protocol::{Header, Message, HEADER_SIZE};

/// Largest value we accept for a non-content packet; requests are 68 bytes and piece metadata a
/// few hundred, so anything bigger is a broken or hostile peer.
pub const MAX_VALUE_BYTES: u32 = 64 * 1024;

/// Traffic type a parent reports for pieces it serves (`common.v2.TrafficType::REMOTE_PEER`).
pub const TRAFFIC_REMOTE_PEER: u8 = 1;

/// A decoded packet as seen by our server or client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Child asks for a piece.
    DownloadPiece { task_id: String, piece_number: u32 },
    /// Parent announces piece bytes; `length` raw bytes follow on the stream.
    PieceContent(PieceInfo),
    /// Parent refuses a request.
    Error { code: ErrorCode, message: String },
    /// Orderly shutdown.
    Close,
    /// A tag we neither serve nor understand; its value was skipped by length.
    Unsupported { tag: u8 },
}

/// Vortex error codes (§10.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unknown,
    InvalidArgument,
    NotFound,
    Internal,
    Reserved(u8),
}

/// The metadata of a piece on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceInfo {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    pub digest: String,
    pub parent_id: String,
    pub traffic_type: u8,
    pub cost: Duration,
    /// Unix seconds.
    pub created_at: i64,
}

/// Why a packet could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VortexError {
    #[error("read or write vortex stream")]
    Io(#[from] std::io::Error),
    #[error("packet value of {length} bytes exceeds the {MAX_VALUE_BYTES} byte limit")]
    TooLarge { length: u32 },
    #[error("decode vortex packet")]
    Decode(#[source] vortex_protocol::error::Error),
    #[error("task id {0:?} is not 64 bytes long and cannot travel over vortex")]
    TaskIdLength(String),
}

impl VortexError {
    /// Whether the peer closed the connection cleanly before a new packet began.
    pub fn is_eof(&self) -> bool {
        matches!(self, Self::Io(err) if err.kind() == std::io::ErrorKind::UnexpectedEof)
    }
}

/// Reads one packet. Reserved and unsupported tags are skipped by length and reported as
/// [`Packet::Unsupported`] so the caller can answer with an error and keep the connection.
pub async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Packet, VortexError> {
    let mut header_bytes = [0u8; HEADER_SIZE];
    reader.read_exact(&mut header_bytes).await?;
    let header = Header::decode(&header_bytes).map_err(VortexError::Decode)?;
    let length = header.length();
    if length > MAX_VALUE_BYTES {
        return Err(VortexError::TooLarge { length });
    }
    let mut value = vec![0u8; length as usize];
    reader.read_exact(&mut value).await?;
    decode_value(header.tag(), &value)
}

fn decode_value(tag: Tag, value: &[u8]) -> Result<Packet, VortexError> {
    Ok(match tag {
        Tag::DownloadPiece => {
            let request = DownloadPiece::decode(value).map_err(VortexError::Decode)?;
            Packet::DownloadPiece {
                task_id: request.task_id,
                piece_number: request.piece_number,
            }
        }
        Tag::PieceContent => {
            let content = PieceContent::decode(value).map_err(VortexError::Decode)?;
            Packet::PieceContent(PieceInfo::from_metadata(content.metadata))
        }
        Tag::Error => {
            let error = ErrorValue::decode(value).map_err(VortexError::Decode)?;
            Packet::Error {
                code: error.code.into(),
                message: error.message,
            }
        }
        Tag::Close => Packet::Close,
        other => Packet::Unsupported { tag: other.into() },
    })
}

/// Writes a `DownloadPiece` request.
pub async fn write_download_piece<W: AsyncWrite + Unpin>(
    writer: &mut W,
    task_id: &str,
    piece_number: u32,
) -> Result<(), VortexError> {
    if task_id.len() != vortex_protocol::tlv::TASK_ID_SIZE {
        return Err(VortexError::TaskIdLength(task_id.to_string()));
    }
    let request = DownloadPiece::new(task_id.to_string(), piece_number);
    let mut buffer = BytesMut::with_capacity(HEADER_SIZE + request.encoded_len());
    request.encode_packet(&mut buffer);
    writer.write_all(&buffer).await?;
    writer.flush().await?;
    Ok(())
}

/// Encodes the `PieceContent` packet that precedes `info.length` raw content bytes.
pub fn encode_piece_content(info: &PieceInfo) -> BytesMut {
    let content = PieceContent {
        metadata: info.to_metadata(),
    };
    let mut buffer = BytesMut::with_capacity(HEADER_SIZE + content.encoded_len());
    content.encode_packet(&mut buffer);
    buffer
}

/// Encodes an `Error` packet.
pub fn encode_error(code: ErrorCode, message: &str) -> BytesMut {
    let error = ErrorValue::new(code.into(), message.to_string());
    let mut buffer = BytesMut::with_capacity(HEADER_SIZE + error.encoded_len());
    error.encode_packet(&mut buffer);
    buffer
}

/// Writes an `Error` packet.
pub async fn write_error<W: AsyncWrite + Unpin>(
    writer: &mut W,
    code: ErrorCode,
    message: &str,
) -> Result<(), VortexError> {
    writer.write_all(&encode_error(code, message)).await?;
    writer.flush().await?;
    Ok(())
}

impl PieceInfo {
    fn from_metadata(metadata: PieceMetadata) -> Self {
        Self {
            number: metadata.number,
            offset: metadata.offset,
            length: metadata.length,
            digest: metadata.digest,
            parent_id: metadata.parent_id,
            traffic_type: metadata.traffic_type,
            cost: metadata.cost,
            created_at: metadata.created_at.and_utc().timestamp(),
        }
    }

    fn to_metadata(&self) -> PieceMetadata {
        let created_at = chrono::DateTime::from_timestamp(self.created_at, 0)
            .unwrap_or_default()
            .naive_utc();
        PieceMetadata {
            number: self.number,
            offset: self.offset,
            length: self.length,
            digest: self.digest.clone(),
            parent_id: self.parent_id.clone(),
            traffic_type: self.traffic_type,
            cost: self.cost,
            created_at,
        }
    }

    /// Seconds since the Unix epoch for `time`, as carried in `created_at`.
    pub fn unix_seconds(time: SystemTime) -> i64 {
        let seconds = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        i64::try_from(seconds).unwrap_or(i64::MAX)
    }
}

impl From<Code> for ErrorCode {
    fn from(code: Code) -> Self {
        match code {
            Code::Unknown => Self::Unknown,
            Code::InvalidArgument => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::Internal => Self::Internal,
            Code::Reserved(value) => Self::Reserved(value),
        }
    }
}

impl From<ErrorCode> for Code {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Unknown => Self::Unknown,
            ErrorCode::InvalidArgument => Self::InvalidArgument,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::Internal => Self::Internal,
            ErrorCode::Reserved(value) => Self::Reserved(value),
        }
    }
}

/// Appends raw bytes to a buffer; used by tests that assemble a packet with its content.
pub fn put_content(buffer: &mut BytesMut, content: &[u8]) {
    buffer.put_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

    #[tokio::test]
    async fn download_piece_vector() {
        let mut buffer = Vec::new();
        write_download_piece(&mut buffer, TASK, 1).await.unwrap();
        assert_eq!(buffer.len(), 74);
        assert_eq!(&buffer[1..6], &[0, 0, 0, 0, 0x44]);
        assert_eq!(&buffer[6..70], TASK.as_bytes());
        assert_eq!(&buffer[70..], &[0, 0, 0, 1]);
        let packet = read_packet(&mut buffer.as_slice()).await.unwrap();
        assert_eq!(
            packet,
            Packet::DownloadPiece {
                task_id: TASK.to_string(),
                piece_number: 1
            }
        );
    }

    #[tokio::test]
    async fn piece_content_vector() {
        let info = PieceInfo {
            number: 1,
            offset: 4_194_304,
            length: 11,
            digest: "crc32:222957957".into(),
            parent_id: String::new(),
            traffic_type: 1,
            cost: Duration::from_secs(2),
            created_at: 1_700_000_000,
        };
        let buffer = encode_piece_content(&info);
        let expected = hex::decode(concat!(
            "000100000040",         // header: id 00 (ignored), tag 1, length 64
            "0000003c",             // metadata length 60
            "00000001",             // number
            "0000000000400000",     // offset 4194304
            "000000000000000b",     // length 11
            "0000000f",             // digest length 15
            "6372633332",           // "crc32"
            "3a323232393537393537", // ":222957957"
            "00000000",             // parent id length 0
            "01",                   // traffic type
            "0000000000000002",     // cost 2 s
            "000000006553f100"      // created at 1700000000
        ))
        .unwrap();
        assert_eq!(buffer.len(), 70);
        assert_eq!(&buffer[1..], &expected[1..]);
        let packet = read_packet(&mut &buffer[..]).await.unwrap();
        assert_eq!(packet, Packet::PieceContent(info));
    }

    #[tokio::test]
    async fn error_vector_and_reserved_tags() {
        let buffer = encode_error(ErrorCode::NotFound, "piece x not found");
        assert_eq!(&buffer[1..7], &[0xff, 0, 0, 0, 0x12, 2]);
        assert_eq!(&buffer[7..], b"piece x not found");
        let mut stream = buffer.to_vec();
        stream.extend_from_slice(&[9, 42, 0, 0, 0, 2, 0xaa, 0xbb]);
        let mut reader = stream.as_slice();
        assert!(matches!(
            read_packet(&mut reader).await.unwrap(),
            Packet::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ));
        assert_eq!(
            read_packet(&mut reader).await.unwrap(),
            Packet::Unsupported { tag: 42 }
        );
        assert!(read_packet(&mut reader).await.unwrap_err().is_eof());
    }

    #[tokio::test]
    async fn oversized_values_are_refused() {
        let stream = [0u8, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_packet(&mut stream.as_slice()).await,
            Err(VortexError::TooLarge { .. })
        ));
    }
}
