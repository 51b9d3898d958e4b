//! Tests of the disk backend beyond the shared conformance suite: restart and resume, files on
//! disk, repair of hand-made damage, and the generation check.

use std::collections::BTreeMap;

use shoal_types::PieceNumber;

use crate::conformance::{
    layout, read_content, source, task, write_pieces, Backend, Disk, HOUR, PIECE,
};
use crate::{Store, StoreError, TaskState};

async fn states(store: &Store) -> BTreeMap<String, TaskState> {
    let tasks = store.list_tasks().await.unwrap();
    tasks
        .into_iter()
        .map(|state| (state.task_id.to_string(), state))
        .collect()
}

#[tokio::test]
async fn restart_keeps_finished_tasks_and_resumes_partial_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let (done, partial) = (task("done"), task("partial"));
    let (done_layout, partial_layout) = (layout(3 * PIECE), layout(4 * PIECE - 1));
    let (done_source, partial_source) = (source(3 * PIECE), source(4 * PIECE - 1));
    store.prepare_task(&done, done_layout).await.unwrap();
    write_pieces(&store, &done, &done_source, done_layout, [2, 0, 1]).await;
    store.finish_task(&done).await.unwrap();
    store.prepare_task(&partial, partial_layout).await.unwrap();
    write_pieces(&store, &partial, &partial_source, partial_layout, [3, 1]).await;
    let before = states(&store).await;
    drop(store);

    let store = Disk.open(dir.path(), None, HOUR).await;
    assert_eq!(states(&store).await, before);
    assert_eq!(read_content(&store, &done, done_layout).await, done_source);
    let resumed = store.prepare_task(&partial, partial_layout).await.unwrap();
    assert_eq!(resumed.pieces, before["partial"].pieces);
    write_pieces(&store, &partial, &partial_source, partial_layout, [0, 2]).await;
    assert!(store.finish_task(&partial).await.unwrap().finished);
    assert_eq!(
        read_content(&store, &partial, partial_layout).await,
        partial_source
    );
    let later = store.task(&done).await.unwrap().unwrap();
    assert!(later.accessed_at > before["done"].accessed_at);
}

#[tokio::test]
async fn content_files_hold_the_source_at_piece_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    assert!(dir.path().join("metadata.redb").is_file());
    for length in [0, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 3] {
        let (task_id, layout, source) =
            (task(&format!("t{length}")), layout(length), source(length));
        store.prepare_task(&task_id, layout).await.unwrap();
        let path = store.content_path(&task_id);
        assert_eq!(path, dir.path().join("content").join(task_id.as_str()));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
        write_pieces(
            &store,
            &task_id,
            &source,
            layout,
            (0..layout.piece_count()).rev(),
        )
        .await;
        assert_eq!(std::fs::read(&path).unwrap(), source, "length {length}");
    }
}

#[tokio::test]
async fn prepare_starts_over_when_the_content_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(40), source(40));
    store.prepare_task(&task_id, layout).await.unwrap();
    write_pieces(&store, &task_id, &source, layout, [0, 1, 2]).await;
    store.finish_task(&task_id).await.unwrap();
    std::fs::remove_file(store.content_path(&task_id)).unwrap();

    let read = store.read_piece(&task_id, PieceNumber::new(0)).await;
    assert!(matches!(read, Err(StoreError::TaskNotFound(_))), "{read:?}");
    let state = store.prepare_task(&task_id, layout).await.unwrap();
    assert!(state.pieces.is_empty() && !state.finished);
    assert_eq!(
        std::fs::metadata(store.content_path(&task_id))
            .unwrap()
            .len(),
        40
    );
    write_pieces(&store, &task_id, &source, layout, [2, 1, 0]).await;
    assert_eq!(read_content(&store, &task_id, layout).await, source);
}

#[tokio::test]
async fn open_drops_damaged_tasks_and_sweeps_unknown_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    for name in ["gone", "short", "kept"] {
        store.prepare_task(&task(name), layout(40)).await.unwrap();
    }
    std::fs::remove_file(store.content_path(&task("gone"))).unwrap();
    std::fs::File::options()
        .write(true)
        .open(store.content_path(&task("short")))
        .unwrap()
        .set_len(39)
        .unwrap();
    let content = dir.path().join("content");
    std::fs::write(content.join("orphan"), b"left by a crash").unwrap();
    std::fs::write(content.join("not-a-task.tmp"), b"junk").unwrap();
    std::fs::create_dir(content.join("subdir")).unwrap();
    drop(store);

    let store = Disk.open(dir.path(), None, HOUR).await;
    assert_eq!(
        states(&store).await.into_keys().collect::<Vec<_>>(),
        ["kept"]
    );
    let mut left: Vec<_> = std::fs::read_dir(&content)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["kept"]);
}

#[tokio::test]
async fn a_corrupt_piece_is_reported_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(40), source(40));
    store.prepare_task(&task_id, layout).await.unwrap();
    write_pieces(&store, &task_id, &source, layout, [0, 1, 2]).await;
    store.finish_task(&task_id).await.unwrap();
    let mut damaged = source.clone();
    damaged[PIECE as usize + 3] ^= 0xff;
    std::fs::write(store.content_path(&task_id), &damaged).unwrap();

    let read = store.read_piece(&task_id, PieceNumber::new(1)).await;
    assert!(
        matches!(read, Err(StoreError::PieceCorrupt { piece, .. }) if piece.get() == 1),
        "{read:?}"
    );
    let state = store.task(&task_id).await.unwrap().unwrap();
    assert!(!state.finished);
    assert_eq!(
        state
            .pieces
            .keys()
            .map(|number| number.get())
            .collect::<Vec<_>>(),
        [0, 2]
    );
    write_pieces(&store, &task_id, &source, layout, [1]).await;
    assert!(store.finish_task(&task_id).await.unwrap().finished);
    assert_eq!(read_content(&store, &task_id, layout).await, source);
}

#[tokio::test]
async fn a_write_that_raced_with_delete_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let (task_id, layout) = (task("a"), layout(40));
    store.prepare_task(&task_id, layout).await.unwrap();
    let disk = &store.inner.disk;
    let stale = disk
        .metadata
        .task_row(&task_id)
        .unwrap()
        .unwrap()
        .generation;
    store.delete_task(&task_id).await.unwrap();
    store.prepare_task(&task_id, layout).await.unwrap();
    let fresh = disk
        .metadata
        .task_row(&task_id)
        .unwrap()
        .unwrap()
        .generation;
    assert_ne!(stale, fresh);

    let record = crate::PieceRecord {
        number: PieceNumber::new(0),
        offset: 0,
        length: PIECE,
        digest: shoal_types::PieceDigest::compute(&source(PIECE)),
    };
    let result = disk
        .metadata
        .record_piece(&task_id, stale, &record, disk.clock.now());
    assert!(
        matches!(result, Err(StoreError::TaskNotFound(_))),
        "{result:?}"
    );
    assert!(store
        .task(&task_id)
        .await
        .unwrap()
        .unwrap()
        .pieces
        .is_empty());
    disk.metadata
        .record_piece(&task_id, fresh, &record, disk.clock.now())
        .unwrap();
}

#[tokio::test]
async fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let config = crate::StoreConfig {
        dir: dir.path().to_path_buf(),
        capacity: None,
        ttl: HOUR,
    };
    let second = Store::open(config.clone()).await;
    assert!(matches!(second, Err(StoreError::Database(_))), "{second:?}");
    drop(store);
    Store::open(config).await.unwrap();
}

#[tokio::test]
async fn open_refuses_an_unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(Disk.open(dir.path(), None, HOUR).await);
    let db = redb::Database::create(dir.path().join("metadata.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    txn.open_table(meta)
        .unwrap()
        .insert("schema_version", 99)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let config = crate::StoreConfig {
        dir: dir.path().to_path_buf(),
        capacity: None,
        ttl: HOUR,
    };
    let result = Store::open(config).await;
    assert!(
        matches!(result, Err(StoreError::SchemaVersion { found: 99, .. })),
        "{result:?}"
    );
}

/// Copies a live store as a killed process would leave it: the database first, so the content
/// files copied after it are at least as new as what it records.
fn snapshot(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from.join("metadata.redb"), to.join("metadata.redb")).unwrap();
    std::fs::create_dir(to.join("content")).unwrap();
    for entry in std::fs::read_dir(from.join("content")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("content").join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_killed_process_keeps_durable_state_and_no_record_without_bytes() {
    let (live, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Disk.open(live.path(), None, HOUR).await;
    let (done, partial) = (task("done"), task("partial"));
    store.prepare_task(&done, layout(PIECE)).await.unwrap();
    write_pieces(&store, &done, &source(PIECE), layout(PIECE), [0]).await;
    store.finish_task(&done).await.unwrap();
    let (partial_layout, partial_source) = (layout(40 * PIECE), source(40 * PIECE));
    store.prepare_task(&partial, partial_layout).await.unwrap();
    write_pieces(&store, &partial, &partial_source, partial_layout, 0..40).await;
    snapshot(live.path(), killed.path());

    let store = Disk.open(killed.path(), None, HOUR).await;
    assert!(store.task(&done).await.unwrap().unwrap().finished);
    let state = store.prepare_task(&partial, partial_layout).await.unwrap();
    assert!(state.pieces.len() >= crate::db::RELAXED_COMMITS_PER_SYNC as usize - 1);
    for number in state.pieces.keys() {
        let (_, bytes) = store.read_piece(&partial, *number).await.unwrap();
        let expected = crate::conformance::piece_of(&partial_source, partial_layout, *number);
        assert_eq!(bytes, expected);
    }
}

#[tokio::test]
async fn partial_writes_then_commit_record_the_piece() {
    let dir = tempfile::tempdir().unwrap();
    let store = Disk.open(dir.path(), None, HOUR).await;
    let (task_id, layout, source) = (task("partial"), layout(2 * PIECE), source(2 * PIECE));
    store.prepare_task(&task_id, layout).await.unwrap();
    let piece = PieceNumber::new(1);
    let bytes = &source[PIECE as usize..];
    let half = bytes.len() / 2;
    store
        .write_partial(&task_id, piece, 0, bytes[..half].to_vec().into())
        .await
        .unwrap();
    store
        .write_partial(&task_id, piece, half as u64, bytes[half..].to_vec().into())
        .await
        .unwrap();
    assert!(
        store
            .task(&task_id)
            .await
            .unwrap()
            .unwrap()
            .pieces
            .is_empty(),
        "nothing recorded before commit"
    );
    let too_far = store
        .write_partial(&task_id, piece, PIECE, vec![1].into())
        .await;
    assert!(matches!(too_far, Err(StoreError::PieceLength { .. })));
    let record = store
        .commit_piece(&task_id, piece, shoal_types::PieceDigest::compute(bytes))
        .await
        .unwrap();
    assert_eq!(record.offset, PIECE);
    let (_, read) = store.read_piece(&task_id, piece).await.unwrap();
    assert_eq!(&read[..], bytes);
}
