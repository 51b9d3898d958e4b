//! Garbage collection: choosing which tasks to remove ([`plan`], pure) and removing them.
//!
//! A pass runs under the store's lifecycle lock, so no task is created or deleted meanwhile.
//! It first removes every unpinned task not accessed for `ttl`, then, while the content lengths
//! of the remaining tasks (pinned ones included) exceed `capacity`, the least recently accessed
//! unpinned task. Pins are checked again under the pin lock in the removal transaction, so a
//! task pinned after planning is kept.

use std::collections::HashSet;
use std::time::Duration;

use shoal_types::TaskId;

use crate::db::TaskRow;
use crate::disk::DiskStore;
use crate::{GcReport, StoreError};

/// The tasks to remove, oldest access first. `now` and the rows' access times are nanoseconds
/// since the unix epoch.
pub(crate) fn plan(
    mut rows: Vec<(TaskId, TaskRow)>,
    pinned: &HashSet<TaskId>,
    now: u64,
    ttl: Duration,
    capacity: Option<u64>,
) -> Vec<(TaskId, TaskRow)> {
    let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    rows.sort_by(|(a_id, a), (b_id, b)| (a.accessed_at, a_id).cmp(&(b.accessed_at, b_id)));
    let (mut victims, live): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(task_id, row)| {
        !pinned.contains(task_id) && now.saturating_sub(row.accessed_at) >= ttl
    });
    let Some(capacity) = capacity else {
        return victims;
    };
    let mut total = live
        .iter()
        .fold(0u64, |sum, (_, row)| sum.saturating_add(row.content_length));
    for (task_id, row) in live {
        if total <= capacity {
            break;
        }
        if pinned.contains(&task_id) {
            continue;
        }
        total -= row.content_length;
        victims.push((task_id, row));
    }
    victims
}

impl DiskStore {
    /// Runs one GC pass; see the module docs.
    pub(crate) fn gc(&self, ttl: Duration, capacity: Option<u64>) -> Result<GcReport, StoreError> {
        let _lifecycle = self.lifecycle();
        let rows = self.metadata.rows()?;
        let now = self.clock.now();
        let pinned: HashSet<TaskId> = self.pins.lock().keys().cloned().collect();
        let victims = plan(rows, &pinned, now, ttl, capacity);
        if victims.is_empty() {
            return Ok(GcReport::default());
        }
        let removed = self.metadata.remove_unchanged(
            &victims,
            || self.pins.lock(),
            |pins, task_id| pins.contains_key(task_id),
        )?;
        let mut report = GcReport::default();
        for (task_id, row) in removed {
            // The rows are gone, so the task is gone; a file that cannot be unlinked now is
            // swept as an orphan at the next open.
            if let Err(err) = self.content.remove(&task_id) {
                tracing::warn!(%task_id, error = %err, "failed to remove collected content");
            }
            tracing::debug!(%task_id, bytes = row.content_length, "collected task");
            report.freed_bytes += row.content_length;
            report.removed.push(task_id);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn row(accessed_at: u64, content_length: u64) -> TaskRow {
        TaskRow {
            content_length,
            piece_length: 16,
            generation: 0,
            created_at: 0,
            accessed_at,
            finished: true,
        }
    }

    fn ids(victims: &[(TaskId, TaskRow)]) -> Vec<&str> {
        victims
            .iter()
            .map(|(task_id, _)| task_id.as_str())
            .collect()
    }

    fn rows(entries: &[(&str, u64, u64)]) -> Vec<(TaskId, TaskRow)> {
        entries
            .iter()
            .map(|(id, at, len)| (id.parse().unwrap(), row(*at, *len)))
            .collect()
    }

    #[test]
    fn ttl_removes_old_unpinned_tasks() {
        let rows = rows(&[
            ("old", 0, 10),
            ("fresh", 95 * SECOND, 10),
            ("pinned", 0, 10),
        ]);
        let pinned = HashSet::from(["pinned".parse().unwrap()]);
        let victims = plan(rows, &pinned, 100 * SECOND, Duration::from_secs(10), None);
        assert_eq!(ids(&victims), ["old"]);
    }

    #[test]
    fn capacity_removes_least_recently_used_first() {
        let rows = rows(&[("c", 3, 10), ("a", 1, 10), ("b", 2, 10), ("d", 4, 10)]);
        let pinned = HashSet::from(["a".parse().unwrap()]);
        let victims = plan(rows, &pinned, 5, Duration::MAX, Some(20));
        assert_eq!(ids(&victims), ["b", "c"]);
    }

    #[test]
    fn capacity_counts_pinned_tasks_and_stops_when_only_they_remain() {
        let rows = rows(&[("a", 1, 50), ("b", 2, 10)]);
        let pinned = HashSet::from(["a".parse().unwrap()]);
        let victims = plan(rows, &pinned, 5, Duration::MAX, Some(20));
        assert_eq!(ids(&victims), ["b"]);
    }

    #[test]
    fn expired_tasks_do_not_count_against_capacity() {
        let rows = rows(&[("a", 0, 50), ("b", 90 * SECOND, 10)]);
        let victims = plan(
            rows,
            &HashSet::new(),
            100 * SECOND,
            Duration::from_secs(60),
            Some(10),
        );
        assert_eq!(ids(&victims), ["a"]);
    }

    #[test]
    fn zero_ttl_removes_everything_unpinned() {
        let rows = rows(&[("a", 5, 1), ("b", 5, 1)]);
        let victims = plan(rows, &HashSet::new(), 5, Duration::ZERO, None);
        assert_eq!(ids(&victims), ["a", "b"]);
    }
}
