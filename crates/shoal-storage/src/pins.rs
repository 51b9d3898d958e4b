//! Pins: an in-memory count per task of the readers and writers that need it kept.
//!
//! GC checks the table under its lock while removing rows (see `gc`), so a task pinned before
//! GC makes its decision is never removed. Pins are not persisted: after a restart nothing is
//! pinned. The lock is a std mutex held only for map updates, never across `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shoal_types::TaskId;

/// Pin counts by task.
#[derive(Debug, Default)]
pub(crate) struct PinTable {
    counts: Mutex<HashMap<TaskId, usize>>,
}

/// Keeps a task from being garbage collected while alive. Obtained from
/// [`crate::Store::pin`]; dropping it releases the pin. Several guards may pin the same task.
#[derive(Debug)]
pub struct PinGuard {
    table: Arc<PinTable>,
    task_id: TaskId,
}

impl PinTable {
    pub(crate) fn pin(table: &Arc<Self>, task_id: &TaskId) -> PinGuard {
        *table.lock().entry(task_id.clone()).or_insert(0) += 1;
        PinGuard {
            table: Arc::clone(table),
            task_id: task_id.clone(),
        }
    }

    /// The counts; a task is pinned iff it has an entry. The map holds plain counters, so a
    /// panic elsewhere cannot leave it inconsistent and poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unpin(&self, task_id: &TaskId) {
        let mut counts = self.lock();
        if let Some(count) = counts.get_mut(task_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(task_id);
            }
        }
    }
}

impl PinGuard {
    /// The pinned task.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.table.unpin(&self.task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nest_and_drop_to_nothing() {
        let table = Arc::new(PinTable::default());
        let task_id: TaskId = "abc".parse().unwrap();
        let first = PinTable::pin(&table, &task_id);
        let second = PinTable::pin(&table, &task_id);
        assert_eq!(table.lock().get(&task_id), Some(&2));
        drop(first);
        assert_eq!(table.lock().get(&task_id), Some(&1));
        assert_eq!(second.task_id(), &task_id);
        drop(second);
        assert!(table.lock().is_empty());
    }
}
