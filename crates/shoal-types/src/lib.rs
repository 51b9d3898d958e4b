//! Identifiers, units and piece math shared by every shoal role.
//!
//! Everything here is pure: no I/O, no async. The rules that must match Dragonfly v2 bit for bit
//! (task ids, piece length, piece digests, host and peer ids) live here and are pinned by the
//! test vectors of the wire reference.
//!
//! ```
//! use shoal_types::{PieceLayout, PieceDigest};
//! let layout = PieceLayout::for_content_length(10);
//! assert_eq!(layout.piece_count(), 1);
//! assert_eq!(PieceDigest::compute(b"hello world").to_string(), "crc32:222957957");
//! ```

mod digest;
mod ids;
mod piece;
mod range;
pub mod task_id;

pub use digest::{ContentDigest, DigestParseError, PieceDigest};
pub use ids::{HostId, PeerId, TaskId, TaskIdParseError};
pub use piece::{PieceLayout, PieceNumber, MAX_PIECE_LENGTH, MIN_PIECE_LENGTH};
pub use range::ByteRange;
