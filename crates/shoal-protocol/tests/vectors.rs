//! Golden Vortex vectors (wire reference §17.4–§17.6), checked in both directions: encoding
//! gives exactly the bytes in `tests/vectors/*.hex`, and decoding those bytes gives the values.
//!
//! The first byte of every packet is a random id chosen by the sender, so it is written as `00`
//! in the files and never compared. A failing test here means a wire break, not a flaky test.

use std::path::PathBuf;
use std::time::Duration;

use shoal_protocol::vortex::{
    encode_error, encode_piece_content, read_packet, write_download_piece, ErrorCode, Packet,
    PieceInfo,
};
use shoal_types::PieceDigest;

const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";
const DOWNLOAD_PIECE_LEN: usize = 74;
const PIECE_CONTENT_LEN: usize = 70;

/// Reads `tests/vectors/<name>`: hex byte pairs, with whitespace and `#` comments ignored.
fn vector(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("vector file is readable");
    let digits: String = text
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(data, _)| data))
        .flat_map(|data| data.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).expect("vector file holds hex byte pairs")
}

/// The same bytes with another packet id, to show receivers ignore it.
fn with_packet_id(bytes: &[u8], id: u8) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[0] = id;
    bytes
}

fn piece_info() -> PieceInfo {
    PieceInfo {
        number: 1,
        offset: 4_194_304,
        length: 11,
        digest: "crc32:222957957".into(),
        parent_id: String::new(),
        traffic_type: 1,
        cost: Duration::from_secs(2),
        created_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn download_piece_encodes_to_vector() {
    let expected = vector("download_piece.hex");
    assert_eq!(expected.len(), DOWNLOAD_PIECE_LEN);
    let mut encoded = Vec::new();
    write_download_piece(&mut encoded, TASK, 1).await.unwrap();
    assert_eq!(encoded.len(), expected.len());
    assert_eq!(&encoded[1..], &expected[1..]);
}

#[tokio::test]
async fn download_piece_decodes_from_vector() {
    let expected = Packet::DownloadPiece {
        task_id: TASK.to_string(),
        piece_number: 1,
    };
    for id in [0x00, 0xa5, 0xff] {
        let bytes = with_packet_id(&vector("download_piece.hex"), id);
        let mut reader = bytes.as_slice();
        assert_eq!(read_packet(&mut reader).await.unwrap(), expected);
        assert!(
            reader.is_empty(),
            "the packet is exactly {DOWNLOAD_PIECE_LEN} bytes"
        );
    }
}

#[test]
fn piece_content_encodes_to_vector() {
    let expected = vector("piece_content.hex");
    assert_eq!(expected.len(), PIECE_CONTENT_LEN + 11);
    let encoded = encode_piece_content(&piece_info());
    assert_eq!(encoded.len(), PIECE_CONTENT_LEN);
    assert_eq!(&encoded[1..], &expected[1..PIECE_CONTENT_LEN]);
}

#[tokio::test]
async fn piece_content_decodes_from_vector_and_content_follows() {
    for id in [0x00, 0x5a] {
        let bytes = with_packet_id(&vector("piece_content.hex"), id);
        let mut reader = bytes.as_slice();
        let Packet::PieceContent(info) = read_packet(&mut reader).await.unwrap() else {
            panic!("expected a PieceContent packet");
        };
        assert_eq!(info, piece_info());
        // The raw content is not framed: it is whatever follows the packet, `length` bytes.
        let content = reader;
        assert_eq!(content.len() as u64, info.length);
        assert_eq!(content, b"hello world");
        assert_eq!(PieceDigest::compute(content).to_string(), info.digest);
    }
}

#[test]
fn error_encodes_to_vector() {
    let expected = vector("error.hex");
    assert_eq!(expected.len(), 6 + 1 + "piece x not found".len());
    let encoded = encode_error(ErrorCode::NotFound, "piece x not found");
    assert_eq!(encoded.len(), expected.len());
    assert_eq!(&encoded[1..], &expected[1..]);
}

#[tokio::test]
async fn error_decodes_from_vector() {
    let bytes = with_packet_id(&vector("error.hex"), 0x42);
    let mut reader = bytes.as_slice();
    assert_eq!(
        read_packet(&mut reader).await.unwrap(),
        Packet::Error {
            code: ErrorCode::NotFound,
            message: "piece x not found".to_string()
        }
    );
    assert!(reader.is_empty());
}

#[tokio::test]
async fn vectors_decode_back_to_back_on_one_stream() {
    // One connection carries request, error and content packets in sequence (§10.6).
    let mut stream = vector("download_piece.hex");
    stream.extend(vector("error.hex"));
    stream.extend(&vector("piece_content.hex")[..PIECE_CONTENT_LEN]);
    let mut reader = stream.as_slice();
    assert!(matches!(
        read_packet(&mut reader).await.unwrap(),
        Packet::DownloadPiece { .. }
    ));
    assert!(matches!(
        read_packet(&mut reader).await.unwrap(),
        Packet::Error { .. }
    ));
    assert!(matches!(
        read_packet(&mut reader).await.unwrap(),
        Packet::PieceContent(_)
    ));
    assert!(read_packet(&mut reader).await.unwrap_err().is_eof());
}
