//! The conformance suite every store backend runs. A backend implements [`Backend`] (open a
//! fresh [`Store`]) and expands `store_conformance_suite!(backend)` in a test module, which
//! generates one `#[tokio::test]` per suite function below plus the write-order proptest.
//! Pieces are 16 bytes so the boundary sizes (0, 1, piece-1, piece, piece+1, several pieces)
//! stay tiny. Backend-specific behaviour (restart, files on disk) is tested in `tests.rs`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use shoal_types::{PieceDigest, PieceLayout, PieceNumber, TaskId};
use tempfile::TempDir;

use crate::{GcReport, Store, StoreConfig, StoreError};

/// The piece length of every suite layout.
pub(crate) const PIECE: u64 = 16;
/// A TTL no test outlives.
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A store implementation under test.
pub(crate) trait Backend {
    /// Opens a fresh store; `dir` is an empty directory that outlives the store.
    async fn open(&self, dir: &Path, capacity: Option<u64>, ttl: Duration) -> Store;
}

/// The disk backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Disk;

/// One proptest case: source bytes, piece length, a write order of every piece and pieces
/// written a second time.
pub(crate) type WriteOrder = (Vec<u8>, u64, Vec<u32>, Vec<u32>);

macro_rules! store_conformance_suite {
    ($backend:expr) => {
        store_conformance_suite!(@tests $backend;
            boundary_sizes_round_trip,
            prepare_returns_the_existing_state,
            prepare_rejects_another_layout,
            write_rejects_wrong_length,
            write_rejects_pieces_out_of_range,
            unknown_tasks_and_pieces_are_not_found,
            writing_a_piece_twice_is_idempotent,
            finish_requires_every_piece,
            task_refreshes_the_access_time_and_list_does_not,
            delete_removes_the_task_even_when_pinned,
            gc_removes_expired_tasks,
            gc_removes_least_recently_used_tasks_over_capacity,
            gc_keeps_pinned_tasks,
            concurrent_writes_of_one_task
        );

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
            #[test]
            fn random_write_orders_reproduce_the_source(
                case in crate::conformance::write_orders()
            ) {
                crate::conformance::random_write_order_reproduces_the_source(&$backend, case);
            }
        }
    };
    (@tests $backend:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                crate::conformance::$test(&$backend).await;
            }
        )*
    };
}

impl Backend for Disk {
    async fn open(&self, dir: &Path, capacity: Option<u64>, ttl: Duration) -> Store {
        let config = StoreConfig {
            dir: dir.to_path_buf(),
            capacity,
            ttl,
        };
        Store::open(config).await.expect("open disk store")
    }
}

pub(crate) fn task(name: &str) -> TaskId {
    name.parse().expect("test task ids are alphanumeric")
}

pub(crate) fn layout(length: u64) -> PieceLayout {
    PieceLayout::with_piece_length(length, PIECE)
}

/// Deterministic content whose pieces all differ.
pub(crate) fn source(length: u64) -> Vec<u8> {
    (0..length).map(|index| (index * 31 % 251) as u8).collect()
}

pub(crate) fn piece_of(source: &[u8], layout: PieceLayout, piece: PieceNumber) -> Bytes {
    let range = layout.piece_range(piece).expect("piece within layout");
    Bytes::copy_from_slice(&source[range.start as usize..range.end as usize])
}

/// Writes the pieces of `source` in `order`.
pub(crate) async fn write_pieces(
    store: &Store,
    task_id: &TaskId,
    source: &[u8],
    layout: PieceLayout,
    order: impl IntoIterator<Item = u32>,
) {
    for number in order.into_iter().map(PieceNumber::new) {
        let record = store
            .write_piece(task_id, number, piece_of(source, layout, number))
            .await;
        record.expect("write piece");
    }
}

/// Reads every piece of the layout back, in order, and concatenates them.
pub(crate) async fn read_content(store: &Store, task_id: &TaskId, layout: PieceLayout) -> Vec<u8> {
    let mut content = Vec::new();
    for number in layout.pieces() {
        let (record, bytes) = store.read_piece(task_id, number).await.expect("read piece");
        assert_eq!(record.length, bytes.len() as u64);
        content.extend_from_slice(&bytes);
    }
    content
}

async fn fresh(backend: &impl Backend, capacity: Option<u64>, ttl: Duration) -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let store = backend.open(dir.path(), capacity, ttl).await;
    (dir, store)
}

pub(crate) async fn boundary_sizes_round_trip(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    for length in [0, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 3] {
        let task_id = task(&format!("size{length}"));
        let (layout, source) = (layout(length), source(length));
        let state = store.prepare_task(&task_id, layout).await.unwrap();
        assert_eq!(
            (state.layout, state.finished, state.pieces.len()),
            (layout, false, 0)
        );
        write_pieces(
            &store,
            &task_id,
            &source,
            layout,
            (0..layout.piece_count()).rev(),
        )
        .await;
        assert_eq!(
            read_content(&store, &task_id, layout).await,
            source,
            "length {length}"
        );
        let state = store.finish_task(&task_id).await.unwrap();
        assert!(state.finished);
        assert_eq!(state.pieces.len(), layout.piece_count() as usize);
        for (number, record) in &state.pieces {
            let range = layout.piece_range(*number).unwrap();
            assert_eq!(
                (record.number, record.offset, record.length),
                (*number, range.start, range.len())
            );
            assert_eq!(
                record.digest,
                PieceDigest::compute(&piece_of(&source, layout, *number))
            );
        }
        assert_eq!(
            store.task(&task_id).await.unwrap().unwrap().pieces,
            state.pieces
        );
    }
}

pub(crate) async fn prepare_returns_the_existing_state(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(40), source(40));
    let first = store.prepare_task(&task_id, layout).await.unwrap();
    write_pieces(&store, &task_id, &source, layout, [1]).await;
    let again = store.prepare_task(&task_id, layout).await.unwrap();
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(
        again.pieces.keys().copied().collect::<Vec<_>>(),
        [PieceNumber::new(1)]
    );
}

pub(crate) async fn prepare_rejects_another_layout(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let task_id = task("a");
    store.prepare_task(&task_id, layout(32)).await.unwrap();
    for other in [layout(33), PieceLayout::with_piece_length(32, 8)] {
        let err = store.prepare_task(&task_id, other).await.unwrap_err();
        assert!(matches!(err, StoreError::LayoutMismatch { .. }), "{err:?}");
    }
}

pub(crate) async fn write_rejects_wrong_length(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let task_id = task("a");
    store
        .prepare_task(&task_id, layout(PIECE + 5))
        .await
        .unwrap();
    for (piece, length, expected) in [
        (0, PIECE - 1, PIECE),
        (0, PIECE + 1, PIECE),
        (1, PIECE, 5),
        (1, 0, 5),
    ] {
        let data = Bytes::from(vec![7; length as usize]);
        let err = store
            .write_piece(&task_id, PieceNumber::new(piece), data)
            .await
            .unwrap_err();
        match err {
            StoreError::PieceLength {
                piece: number,
                expected: e,
                actual,
            } => {
                assert_eq!((number.get(), e, actual), (piece, expected, length));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(store
        .task(&task_id)
        .await
        .unwrap()
        .unwrap()
        .pieces
        .is_empty());
}

pub(crate) async fn write_rejects_pieces_out_of_range(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    for (name, length, piece) in [
        ("a", 2 * PIECE, 2),
        ("b", 0, 0),
        ("c", 1, 1),
        ("d", 1, u32::MAX),
    ] {
        let task_id = task(name);
        store.prepare_task(&task_id, layout(length)).await.unwrap();
        let err = store
            .write_piece(&task_id, PieceNumber::new(piece), Bytes::new())
            .await;
        assert!(
            matches!(err, Err(StoreError::PieceOutOfRange { .. })),
            "{err:?}"
        );
    }
}

pub(crate) async fn unknown_tasks_and_pieces_are_not_found(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, piece) = (task("missing"), PieceNumber::new(0));
    assert!(store.task(&task_id).await.unwrap().is_none());
    let write = store
        .write_piece(&task_id, piece, Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(write, Err(StoreError::TaskNotFound(_))),
        "{write:?}"
    );
    let read = store.read_piece(&task_id, piece).await;
    assert!(matches!(read, Err(StoreError::TaskNotFound(_))), "{read:?}");
    let finish = store.finish_task(&task_id).await;
    assert!(
        matches!(finish, Err(StoreError::TaskNotFound(_))),
        "{finish:?}"
    );
    store.prepare_task(&task_id, layout(40)).await.unwrap();
    let read = store.read_piece(&task_id, PieceNumber::new(1)).await;
    assert!(
        matches!(read, Err(StoreError::PieceNotFound { piece, .. }) if piece.get() == 1),
        "{read:?}"
    );
}

pub(crate) async fn writing_a_piece_twice_is_idempotent(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(40), source(40));
    store.prepare_task(&task_id, layout).await.unwrap();
    let data = piece_of(&source, layout, PieceNumber::new(2));
    let first = store
        .write_piece(&task_id, PieceNumber::new(2), data.clone())
        .await
        .unwrap();
    let second = store
        .write_piece(&task_id, PieceNumber::new(2), data.clone())
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(
        store
            .read_piece(&task_id, PieceNumber::new(2))
            .await
            .unwrap(),
        (first, data)
    );
    assert_eq!(store.task(&task_id).await.unwrap().unwrap().pieces.len(), 1);
}

pub(crate) async fn finish_requires_every_piece(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(3 * PIECE), source(3 * PIECE));
    store.prepare_task(&task_id, layout).await.unwrap();
    write_pieces(&store, &task_id, &source, layout, [1]).await;
    let err = store.finish_task(&task_id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Incomplete { missing: 2, .. }),
        "{err:?}"
    );
    assert!(!store.task(&task_id).await.unwrap().unwrap().finished);
    write_pieces(&store, &task_id, &source, layout, [0, 2]).await;
    assert!(store.finish_task(&task_id).await.unwrap().finished);
    assert!(store.finish_task(&task_id).await.unwrap().finished);

    let empty = task("empty");
    store.prepare_task(&empty, self::layout(0)).await.unwrap();
    let state = store.finish_task(&empty).await.unwrap();
    assert!(state.finished && state.pieces.is_empty());
}

pub(crate) async fn task_refreshes_the_access_time_and_list_does_not(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (a, b) = (task("a"), task("b"));
    let prepared = store.prepare_task(&a, layout(1)).await.unwrap();
    store.prepare_task(&b, layout(0)).await.unwrap();
    let touched = store.task(&a).await.unwrap().unwrap();
    assert!(touched.accessed_at > prepared.accessed_at);
    assert_eq!(touched.created_at, prepared.created_at);
    let listed = store.list_tasks().await.unwrap();
    let ids: HashSet<_> = listed.iter().map(|state| state.task_id.clone()).collect();
    assert_eq!(ids, HashSet::from([a.clone(), b]));
    let listed_a = listed.into_iter().find(|state| state.task_id == a).unwrap();
    assert_eq!(listed_a, touched);
}

pub(crate) async fn delete_removes_the_task_even_when_pinned(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, layout, source) = (task("a"), layout(40), source(40));
    let _pin = store.pin(&task_id);
    store.prepare_task(&task_id, layout).await.unwrap();
    write_pieces(&store, &task_id, &source, layout, [0, 1, 2]).await;
    store.delete_task(&task_id).await.unwrap();
    assert!(store.task(&task_id).await.unwrap().is_none());
    let read = store.read_piece(&task_id, PieceNumber::new(0)).await;
    assert!(matches!(read, Err(StoreError::TaskNotFound(_))), "{read:?}");
    store.delete_task(&task_id).await.unwrap();
    let again = store.prepare_task(&task_id, layout).await.unwrap();
    assert!(again.pieces.is_empty() && !again.finished);
}

pub(crate) async fn gc_removes_expired_tasks(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, std::time::Duration::ZERO).await;
    for (name, length) in [("a", 10), ("b", 20)] {
        store
            .prepare_task(&task(name), layout(length))
            .await
            .unwrap();
    }
    let mut report = store.gc().await.unwrap();
    report.removed.sort();
    assert_eq!(
        (report.removed, report.freed_bytes),
        (vec![task("a"), task("b")], 30)
    );
    assert!(store.list_tasks().await.unwrap().is_empty());

    let (_dir, store) = fresh(backend, None, HOUR).await;
    store.prepare_task(&task("a"), layout(10)).await.unwrap();
    assert_eq!(store.gc().await.unwrap(), GcReport::default());
}

pub(crate) async fn gc_removes_least_recently_used_tasks_over_capacity(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, Some(2 * 32), HOUR).await;
    for name in ["a", "b", "c"] {
        store.prepare_task(&task(name), layout(32)).await.unwrap();
    }
    store.task(&task("a")).await.unwrap();
    let report = store.gc().await.unwrap();
    assert_eq!((report.removed, report.freed_bytes), (vec![task("b")], 32));
    assert_eq!(store.gc().await.unwrap(), GcReport::default());

    store.prepare_task(&task("d"), layout(1)).await.unwrap();
    store.task(&task("a")).await.unwrap();
    let report = store.gc().await.unwrap();
    assert_eq!(report.removed, vec![task("c")]);
}

pub(crate) async fn gc_keeps_pinned_tasks(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, Some(0), std::time::Duration::ZERO).await;
    for name in ["a", "b"] {
        store.prepare_task(&task(name), layout(8)).await.unwrap();
    }
    let pin = store.pin(&task("a"));
    let also = store.pin(&task("a"));
    assert_eq!(store.gc().await.unwrap().removed, vec![task("b")]);
    drop(pin);
    assert!(store.gc().await.unwrap().removed.is_empty());
    assert!(store.task(&task("a")).await.unwrap().is_some());
    drop(also);
    assert_eq!(store.gc().await.unwrap().removed, vec![task("a")]);
}

pub(crate) async fn concurrent_writes_of_one_task(backend: &impl Backend) {
    let (_dir, store) = fresh(backend, None, HOUR).await;
    let (task_id, layout) = (task("a"), layout(64 * PIECE - 3));
    let source = source(layout.content_length());
    store.prepare_task(&task_id, layout).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for number in layout.pieces() {
        let (store, task_id) = (store.clone(), task_id.clone());
        let data = piece_of(&source, layout, number);
        writers.spawn(async move { store.write_piece(&task_id, number, data).await });
    }
    while let Some(result) = writers.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(store.finish_task(&task_id).await.unwrap().pieces.len(), 64);
    assert_eq!(read_content(&store, &task_id, layout).await, source);
}

/// Content lengths up to 200 bytes, piece lengths 1 to 32, every write order.
pub(crate) fn write_orders() -> impl Strategy<Value = WriteOrder> {
    (0u64..200, 1u64..=32).prop_flat_map(|(length, piece_length)| {
        let count = length.div_ceil(piece_length) as u32;
        (
            proptest::collection::vec(any::<u8>(), length as usize),
            Just(piece_length),
            Just((0..count).collect::<Vec<u32>>()).prop_shuffle(),
            proptest::collection::vec(0..count.max(1), 0..4),
        )
    })
}

pub(crate) fn random_write_order_reproduces_the_source(backend: &impl Backend, case: WriteOrder) {
    let (source, piece_length, order, rewrites) = case;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build test runtime");
    runtime.block_on(async {
        let (_dir, store) = fresh(backend, None, HOUR).await;
        let layout = PieceLayout::with_piece_length(source.len() as u64, piece_length);
        let task_id = task("p");
        store.prepare_task(&task_id, layout).await.unwrap();
        let rewrites = rewrites.into_iter().filter(|_| layout.piece_count() > 0);
        write_pieces(
            &store,
            &task_id,
            &source,
            layout,
            order.into_iter().chain(rewrites),
        )
        .await;
        store.finish_task(&task_id).await.unwrap();
        assert_eq!(read_content(&store, &task_id, layout).await, source);
    });
}

mod disk {
    store_conformance_suite!(crate::conformance::Disk);
}
