//! Half-open byte ranges. HTTP's inclusive ends are converted only where a `Range` is parsed.

/// Bytes `[start, end)` of some content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// A range from `start` (inclusive) to `end` (exclusive). `end` must not precede `start`.
    pub fn new(start: u64, end: u64) -> Self {
        debug_assert!(start <= end, "range end precedes start");
        Self { start, end }
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether the two ranges share at least one byte.
    pub fn overlaps(&self, other: &ByteRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}
