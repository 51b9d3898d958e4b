//! Access times: nanoseconds since the unix epoch, as stored in the metadata rows.
//!
//! The [`AccessClock`] follows the wall clock but never repeats or goes back within a process,
//! so GC's least-recently-used order is total even when two accesses share a clock tick or the
//! wall clock steps back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Hands out access times: wall-clock nanoseconds, but strictly increasing within a process so
/// that least-recently-used order is total even when two accesses share a clock tick.
#[derive(Debug, Default)]
pub(crate) struct AccessClock {
    last: AtomicU64,
}

impl AccessClock {
    /// Starts after `floor`, the latest time already stored.
    pub(crate) fn starting_after(floor: u64) -> Self {
        Self {
            last: AtomicU64::new(floor),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let previous = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(wall.max(last.saturating_add(1)))
            })
            .expect("the update closure always returns Some");
        wall.max(previous.saturating_add(1))
    }
}

pub(crate) fn to_system_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_clock_is_strictly_increasing() {
        let clock = AccessClock::starting_after(u64::MAX - 10);
        let first = clock.now();
        assert!(first > u64::MAX - 10);
        assert!(clock.now() > first);
        let wall = AccessClock::default().now();
        assert!(to_system_time(wall) > UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    }
}
