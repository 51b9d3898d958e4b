//! Content files: `content/<task_id>`, one sparse file per task, written at piece offsets.
//!
//! Owns the `content/` directory below the store root. Every function is synchronous and runs on
//! a blocking thread. Files are opened per operation rather than cached, so deleting a task is a
//! plain unlink and a writer of a deleted task can never reach the file of its successor (the
//! metadata generation check in `db` rejects its record).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal_types::TaskId;

use crate::StoreError;

/// The `content/` directory of a store.
#[derive(Debug)]
pub(crate) struct ContentDir {
    dir: PathBuf,
}

/// Whether a name can be used as a content file name: non-empty ascii letters and digits only,
/// so it can never contain `/`, `..` or a NUL.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

impl ContentDir {
    /// Creates the directory if needed.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::io(&dir, source))?;
        Ok(Self { dir })
    }

    /// The file of a task, after checking that its id is safe as a file name.
    pub(crate) fn path(&self, task_id: &TaskId) -> Result<PathBuf, StoreError> {
        if !is_safe_name(task_id.as_str()) {
            return Err(StoreError::InvalidTaskId(task_id.clone()));
        }
        Ok(self.dir.join(task_id.as_str()))
    }

    /// The file of a task for display and zero-copy reads. An unsafe id (which `TaskId`'s parser
    /// never yields) maps to a hex-encoded name that no task file can have, never outside the
    /// directory.
    pub(crate) fn path_unchecked(&self, task_id: &TaskId) -> PathBuf {
        if is_safe_name(task_id.as_str()) {
            return self.dir.join(task_id.as_str());
        }
        let hex: String = task_id
            .as_str()
            .bytes()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        self.dir.join(format!("invalid-{hex}"))
    }

    /// Creates (or truncates) the file of a task and extends it to `length` without writing,
    /// so unwritten ranges stay sparse.
    pub(crate) fn create(&self, task_id: &TaskId, length: u64) -> Result<(), StoreError> {
        let path = self.path(task_id)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| StoreError::io(&path, source))?;
        file.set_len(length)
            .map_err(|source| StoreError::io(&path, source))
    }

    /// Whether the file of a task exists with the expected length.
    pub(crate) fn is_intact(&self, task_id: &TaskId, length: u64) -> Result<bool, StoreError> {
        let path = self.path(task_id)?;
        match std::fs::metadata(&path) {
            Ok(metadata) => Ok(metadata.is_file() && metadata.len() == length),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::io(path, source)),
        }
    }

    /// Writes `data` at `offset`. A missing file means the task was deleted meanwhile.
    pub(crate) fn write_at(
        &self,
        task_id: &TaskId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let path = self.path(task_id)?;
        let file = self.open_existing(task_id, &path, OpenOptions::new().write(true))?;
        file.write_all_at(data, offset)
            .map_err(|source| StoreError::io(path, source))
    }

    /// Reads `length` bytes at `offset`. `Ok(None)` means the file is shorter than that, which
    /// only happens when it was truncated behind the store's back.
    pub(crate) fn read_at(
        &self,
        task_id: &TaskId,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(task_id)?;
        let file = self.open_existing(task_id, &path, OpenOptions::new().read(true))?;
        let length = usize::try_from(length).expect("a piece fits in memory");
        let mut buffer = vec![0; length];
        match file.read_exact_at(&mut buffer, offset) {
            Ok(()) => Ok(Some(buffer)),
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => Ok(None),
            Err(source) => Err(StoreError::io(path, source)),
        }
    }

    /// Flushes the file's data to stable storage.
    pub(crate) fn sync(&self, task_id: &TaskId) -> Result<(), StoreError> {
        let path = self.path(task_id)?;
        let file = self.open_existing(task_id, &path, OpenOptions::new().read(true))?;
        file.sync_data()
            .map_err(|source| StoreError::io(path, source))
    }

    /// Unlinks the file of a task; a missing file is not an error.
    pub(crate) fn remove(&self, task_id: &TaskId) -> Result<(), StoreError> {
        let path = self.path(task_id)?;
        remove_file_if_present(&path)
    }

    /// Removes every entry that is not the file of a task in `known` (left behind by a crash
    /// between creating a file and recording it, or between unrecording and unlinking it).
    /// Returns the removed paths.
    pub(crate) fn sweep(&self, known: &HashSet<TaskId>) -> Result<Vec<PathBuf>, StoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| StoreError::io(&self.dir, source))?;
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::io(&self.dir, source))?;
            let is_known = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<TaskId>().ok())
                .is_some_and(|task_id| known.contains(&task_id));
            if is_known {
                continue;
            }
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(|source| StoreError::io(&path, source))?
                .is_dir();
            let result = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            result.map_err(|source| StoreError::io(&path, source))?;
            removed.push(path);
        }
        Ok(removed)
    }

    fn open_existing(
        &self,
        task_id: &TaskId,
        path: &Path,
        options: &OpenOptions,
    ) -> Result<File, StoreError> {
        match options.open(path) {
            Ok(file) => Ok(file),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                Err(StoreError::TaskNotFound(task_id.clone()))
            }
            Err(source) => Err(StoreError::io(path, source)),
        }
    }
}

fn remove_file_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::io(path, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_rejected() {
        for name in [
            "", "..", ".", "a/b", "../etc", "a b", "ab\0", "é", "abc-def",
        ] {
            assert!(!is_safe_name(name), "{name:?}");
        }
        assert!(is_safe_name("abcDEF0123"));
    }

    #[test]
    fn unchecked_path_stays_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentDir::open(dir.path().join("content")).unwrap();
        let task_id: TaskId = "abc123".parse().unwrap();
        assert_eq!(
            content.path_unchecked(&task_id),
            dir.path().join("content/abc123")
        );
        assert_eq!(
            content.path(&task_id).unwrap(),
            content.path_unchecked(&task_id)
        );
    }

    #[test]
    fn create_is_sparse_and_read_past_end_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentDir::open(dir.path().to_path_buf()).unwrap();
        let task_id: TaskId = "abc".parse().unwrap();
        content.create(&task_id, 10).unwrap();
        assert!(content.is_intact(&task_id, 10).unwrap());
        assert!(!content.is_intact(&task_id, 11).unwrap());
        content.write_at(&task_id, 8, b"xy").unwrap();
        assert_eq!(content.read_at(&task_id, 6, 4).unwrap().unwrap(), b"\0\0xy");
        assert_eq!(content.read_at(&task_id, 8, 4).unwrap(), None);
        content.remove(&task_id).unwrap();
        content.remove(&task_id).unwrap();
        assert!(matches!(
            content.write_at(&task_id, 0, b"a"),
            Err(StoreError::TaskNotFound(_))
        ));
    }
}
