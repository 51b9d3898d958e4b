//! `Range` request headers against a known content length (RFC 9110 §14).
//!
//! One range (`bytes=A-B`, `bytes=A-`, `bytes=-N`) is served as 206. A multi-range request is
//! answered with the smallest single range covering all its parts (still 206 with one
//! `Content-Range`), which RFC 9110 allows and every client we serve accepts; this keeps the
//! response a plain byte stream. Syntax we do not understand means "no range" (200, the whole
//! content), as the RFC asks; a well-formed range that starts past the end is unsatisfiable (416).

use shoal_types::ByteRange;

/// What to send for a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No usable range: 200 with the whole content.
    Whole,
    /// 206 with these bytes.
    Partial(ByteRange),
    /// 416: nothing of the range exists.
    Unsatisfiable,
}

/// Decides the answer for `header` (the raw `Range` value) and content `length`.
pub(crate) fn answer(header: Option<&str>, length: u64) -> RangeAnswer {
    let Some(header) = header else {
        return RangeAnswer::Whole;
    };
    let Some(specs) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    let mut covering: Option<ByteRange> = None;
    let mut any_valid_syntax = false;
    for spec in specs.split(',') {
        let Some(parsed) = parse_spec(spec.trim()) else {
            return RangeAnswer::Whole;
        };
        any_valid_syntax = true;
        let Some(range) = resolve(parsed, length) else {
            continue;
        };
        covering = Some(match covering {
            Some(current) => {
                ByteRange::new(current.start.min(range.start), current.end.max(range.end))
            }
            None => range,
        });
    }
    match covering {
        Some(range) => RangeAnswer::Partial(range),
        None if any_valid_syntax => RangeAnswer::Unsatisfiable,
        None => RangeAnswer::Whole,
    }
}

/// `Content-Range` value for a partial answer.
pub(crate) fn content_range(range: ByteRange, length: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end - 1, length)
}

#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `A-B` or `A-` (end inclusive, `None` = to the end).
    From(u64, Option<u64>),
    /// `-N`: the last N bytes.
    Suffix(u64),
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    if first.is_empty() {
        return Some(Spec::Suffix(number(last)?));
    }
    let start = number(first)?;
    if last.is_empty() {
        return Some(Spec::From(start, None));
    }
    let end = number(last)?;
    if end < start {
        return None;
    }
    Some(Spec::From(start, Some(end)))
}

fn resolve(spec: Spec, length: u64) -> Option<ByteRange> {
    match spec {
        Spec::From(start, _) if start >= length => None,
        Spec::From(start, end) => {
            let end = end.map_or(length, |end| end.saturating_add(1).min(length));
            Some(ByteRange::new(start, end))
        }
        Spec::Suffix(0) => None,
        Spec::Suffix(count) => Some(ByteRange::new(length.saturating_sub(count), length)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn partial(start: u64, end: u64) -> RangeAnswer {
        RangeAnswer::Partial(ByteRange::new(start, end))
    }

    #[test]
    fn matrix() {
        let length = 1000;
        let cases = [
            (None, RangeAnswer::Whole),
            (Some("bytes=0-0"), partial(0, 1)),
            (Some("bytes=500-599"), partial(500, 600)),
            (Some("bytes=999-999"), partial(999, 1000)),
            (Some("bytes=990-"), partial(990, 1000)),
            (Some("bytes=-10"), partial(990, 1000)),
            (Some("bytes=-5000"), partial(0, 1000)),
            (Some("bytes=900-5000"), partial(900, 1000)),
            (Some("bytes=1000-"), RangeAnswer::Unsatisfiable),
            (Some("bytes=1000-1001"), RangeAnswer::Unsatisfiable),
            (Some("bytes=-0"), RangeAnswer::Unsatisfiable),
            (Some("bytes=0-0,10-19"), partial(0, 20)),
            (Some("bytes=5-1"), RangeAnswer::Whole),
            (Some("bytes=abc"), RangeAnswer::Whole),
            (Some("items=0-1"), RangeAnswer::Whole),
            (Some("bytes=--1"), RangeAnswer::Whole),
            (Some("bytes=+1-2"), RangeAnswer::Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(answer(header, length), expected, "{header:?}");
        }
        assert_eq!(answer(Some("bytes=0-"), 0), RangeAnswer::Unsatisfiable);
        assert_eq!(content_range(ByteRange::new(0, 1), 1000), "bytes 0-0/1000");
    }

    proptest! {
        #[test]
        fn partial_answers_stay_inside_the_content(header in "bytes=[0-9,-]{0,20}", length in 0u64..10_000) {
            if let RangeAnswer::Partial(range) = answer(Some(&header), length) {
                prop_assert!(range.start < range.end);
                prop_assert!(range.end <= length);
            }
        }

        #[test]
        fn single_ranges_are_exact(start in 0u64..5000, len in 1u64..5000, length in 1u64..10_000) {
            let end = start + len - 1;
            let got = answer(Some(&format!("bytes={start}-{end}")), length);
            if start >= length {
                prop_assert_eq!(got, RangeAnswer::Unsatisfiable);
            } else {
                prop_assert_eq!(got, RangeAnswer::Partial(ByteRange::new(start, (end + 1).min(length))));
            }
        }
    }
}
