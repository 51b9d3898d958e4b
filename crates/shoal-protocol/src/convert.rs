//! Conversions between wire messages and domain types.

use std::time::{Duration, SystemTime};

/// A protobuf timestamp for `time`.
pub fn timestamp(time: SystemTime) -> prost_wkt_types::Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_wkt_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration for `duration`.
pub fn duration(duration: Duration) -> prost_wkt_types::Duration {
    prost_wkt_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// A std duration from a protobuf one; negative values become zero.
pub fn from_duration(duration: &prost_wkt_types::Duration) -> Duration {
    let seconds = u64::try_from(duration.seconds).unwrap_or(0);
    let nanos = u32::try_from(duration.nanos).unwrap_or(0);
    Duration::new(seconds, nanos.min(999_999_999))
}
