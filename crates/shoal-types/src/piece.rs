//! Piece layout: how a task's content is cut into pieces (Dragonfly v2's formula and clamps).

use std::fmt;

use crate::ByteRange;

/// Smallest piece length the formula yields (4 MiB).
pub const MIN_PIECE_LENGTH: u64 = 4 * 1024 * 1024;
/// Largest piece length the formula yields (64 MiB).
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;

/// The index of a piece within a task, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceNumber(u32);

impl PieceNumber {
    pub fn new(number: u32) -> Self {
        Self(number)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PieceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The content length of a task and the length of its pieces; every piece but the last is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PieceLayout {
    content_length: u64,
    piece_length: u64,
}

impl PieceLayout {
    /// The layout Dragonfly v2 computes when the request fixes no piece length:
    /// p = floor(L / 500), rounded up to a power of two, clamped to [4 MiB, 64 MiB].
    pub fn for_content_length(content_length: u64) -> Self {
        Self {
            content_length,
            piece_length: piece_length_for(content_length),
        }
    }

    /// A layout with a fixed piece length (from the request). `piece_length` must be non-zero.
    pub fn with_piece_length(content_length: u64, piece_length: u64) -> Self {
        assert!(piece_length > 0, "piece length must be non-zero");
        Self {
            content_length,
            piece_length,
        }
    }

    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// ceil(L / piece length); 0 for empty content.
    pub fn piece_count(&self) -> u32 {
        let count = self.content_length.div_ceil(self.piece_length);
        u32::try_from(count).expect("piece count fits u32 for any piece length >= 4 MiB")
    }

    /// The bytes piece `number` covers, or `None` past the last piece.
    pub fn piece_range(&self, number: PieceNumber) -> Option<ByteRange> {
        let start = u64::from(number.get()) * self.piece_length;
        if start >= self.content_length {
            return None;
        }
        let end = (start + self.piece_length).min(self.content_length);
        Some(ByteRange::new(start, end))
    }

    /// Every piece number, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceNumber> {
        (0..self.piece_count()).map(PieceNumber::new)
    }

    /// The piece numbers overlapping `range` (clamped to the content).
    pub fn pieces_for(&self, range: ByteRange) -> impl Iterator<Item = PieceNumber> {
        let end = range.end.min(self.content_length);
        let (first, last) = if range.start >= end {
            (0, 0)
        } else {
            (
                range.start / self.piece_length,
                end.div_ceil(self.piece_length),
            )
        };
        (first as u32..last as u32).map(PieceNumber::new)
    }
}

fn piece_length_for(content_length: u64) -> u64 {
    // Upstream computes in f64 and truncates; for u64 lengths integer division is identical.
    let per_piece = content_length / 500;
    let rounded = per_piece.max(1).next_power_of_two();
    rounded.clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn piece_length_vectors_from_wire_reference() {
        let cases = [
            (0, 4 * MIB, 0),
            (GIB, 4 * MIB, 256),
            (2_097_152_499, 4 * MIB, 501),
            (2_097_152_500, 8 * MIB, 251),
            (10 * GIB, 32 * MIB, 320),
            (16_777_216_500, 64 * MIB, 251),
            (100 * GIB, 64 * MIB, 1600),
        ];
        for (length, piece_length, count) in cases {
            let layout = PieceLayout::for_content_length(length);
            assert_eq!(layout.piece_length(), piece_length, "length {length}");
            assert_eq!(layout.piece_count(), count, "length {length}");
        }
    }

    #[test]
    fn boundary_sizes() {
        for (length, count) in [(1, 1), (4 * MIB - 1, 1), (4 * MIB, 1), (4 * MIB + 1, 2)] {
            assert_eq!(PieceLayout::for_content_length(length).piece_count(), count);
        }
        let layout = PieceLayout::for_content_length(4 * MIB + 1);
        assert_eq!(
            layout.piece_range(PieceNumber::new(1)),
            Some(ByteRange::new(4 * MIB, 4 * MIB + 1))
        );
        assert_eq!(layout.piece_range(PieceNumber::new(2)), None);
    }

    proptest! {
        #[test]
        fn pieces_tile_the_content(length in 0u64..(40 * GIB), fixed in proptest::option::of(1u64..(128 * MIB))) {
            let layout = match fixed {
                Some(piece_length) if length / piece_length < 100_000 => PieceLayout::with_piece_length(length, piece_length),
                _ => PieceLayout::for_content_length(length),
            };
            let mut next = 0;
            let count = layout.piece_count();
            for number in [0, count / 2, count.saturating_sub(1)] {
                if let Some(range) = layout.piece_range(PieceNumber::new(number)) {
                    prop_assert_eq!(range.start, u64::from(number) * layout.piece_length());
                    prop_assert!(range.len() <= layout.piece_length());
                    prop_assert!(!range.is_empty());
                    if number + 1 < count { prop_assert_eq!(range.len(), layout.piece_length()); }
                    else { prop_assert_eq!(range.end, length); }
                    next = next.max(range.end);
                }
            }
            prop_assert_eq!(next, length);
            prop_assert!(layout.piece_range(PieceNumber::new(count)).is_none());
        }

        #[test]
        fn pieces_for_covers_the_range(length in 1u64..(64 * MIB), a in 0u64..(64 * MIB), b in 0u64..(64 * MIB)) {
            let layout = PieceLayout::with_piece_length(length, 4 * MIB);
            let (start, end) = (a.min(b).min(length), a.max(b).min(length));
            let pieces: Vec<_> = layout.pieces_for(ByteRange::new(start, end)).collect();
            for number in layout.pieces() {
                let covered = layout.piece_range(number).unwrap().overlaps(&ByteRange::new(start, end));
                prop_assert_eq!(covered, pieces.contains(&number));
            }
        }
    }
}
