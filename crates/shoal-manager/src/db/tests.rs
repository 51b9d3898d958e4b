//! Storage conformance suite: every test runs against SQLite and PostgreSQL through
//! [`conformance!`]. PostgreSQL tests read `SHOAL_TEST_POSTGRES_URL` and fail (never skip) when
//! it is unset; each gets a fresh database that is dropped afterwards.

use std::collections::HashSet;

use super::*;

/// A database for one test, removed when the test ends.
pub(crate) struct TestDb {
    pub(crate) db: Db,
    /// (admin url, database name) for PostgreSQL; the tempdir for SQLite.
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    pub(crate) url: String,
}

impl TestDb {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("manager.db").display());
        let db = Db::open(&url).await.expect("open sqlite");
        Self {
            db,
            postgres: None,
            _dir: Some(dir),
            url,
        }
    }

    pub(crate) async fn postgres() -> Self {
        let admin = std::env::var("SHOAL_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "SHOAL_TEST_POSTGRES_URL is unset: run scripts/postgres.sh and export the URL it \
                 prints (e.g. postgres://shoal:shoal@127.0.0.1:5432/postgres)"
            )
        });
        let name = format!("shoal_test_{:016x}", rand::random::<u64>());
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin)
            .await
            .expect("connect to postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let mut url = url::Url::parse(&admin).expect("postgres url");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let db = Db::open(&url).await.expect("open postgres");
        Self {
            db,
            postgres: Some((admin, name)),
            _dir: None,
            url,
        }
    }

    /// Drops the PostgreSQL database (SQLite's tempdir goes with `self`).
    pub(crate) async fn finish(self) {
        self.db.close().await;
        if let Some((admin, name)) = &self.postgres {
            let pool = sqlx::AnyPool::connect(admin)
                .await
                .expect("connect to postgres");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await
                .expect("drop test database");
            pool.close().await;
        }
    }
}

/// Runs `$test(db: TestDb)` as `sqlite_conformance_$test` and `postgres_conformance_$test`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite_conformance {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::TestDb::sqlite().await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres_conformance {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::TestDb::postgres().await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

conformance!(
    clusters_crud,
    instances_upsert_and_liveness,
    tokens_by_hash,
    jobs_lifecycle_and_items,
    claim_is_exclusive_across_managers,
    expired_lease_is_reclaimable,
);

async fn clusters_crud(t: &TestDb) {
    let db = &t.db;
    let clusters = db.list_clusters().await.unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].id, DEFAULT_CLUSTER_ID);
    assert!(clusters[0].is_default);
    let new = NewCluster {
        name: "east".into(),
        scopes: Scopes {
            cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let east = db.create_cluster(&new, 5).await.unwrap();
    assert_eq!(east.id, 2, "ids continue after the default cluster");
    assert_eq!(east.client_config, serde_json::json!({}));
    assert!(matches!(
        db.create_cluster(&new, 6).await,
        Err(DbError::Conflict { .. })
    ));
    let patch = ClusterPatch {
        bio: Some("eu".into()),
        is_default: Some(true),
        ..Default::default()
    };
    let east = db.update_cluster(east.id, &patch, 7).await.unwrap();
    assert_eq!(east.bio, "eu");
    assert_eq!(east.scopes.cidrs, vec!["10.0.0.0/8".to_string()]);
    assert!(!db.get_cluster(1).await.unwrap().is_default, "one default");
    db.delete_cluster(east.id).await.unwrap();
    assert!(matches!(
        db.get_cluster(east.id).await,
        Err(DbError::NotFound { .. })
    ));
}

fn update(hostname: &str, ip: &str, cluster_id: i64) -> InstanceUpdate {
    InstanceUpdate {
        hostname: hostname.into(),
        ip: ip.into(),
        port: 8002,
        cluster_id,
        features: "[]".into(),
        peer_type: "super".into(),
        download_port: 4001,
        ..Default::default()
    }
}

async fn instances_upsert_and_liveness(t: &TestDb) {
    let db = &t.db;
    for kind in [InstanceKind::Scheduler, InstanceKind::SeedPeer] {
        let first = db
            .upsert_instance(kind, &update("a", "10.0.0.1", 1), 1_000)
            .await
            .unwrap();
        let mut changed = update("a", "10.0.0.1", 1);
        changed.port = 9000;
        let again = db.upsert_instance(kind, &changed, 2_000).await.unwrap();
        assert_eq!(first.id, again.id, "upsert keys on (hostname, ip, cluster)");
        assert_eq!(again.port, 9000);
        db.upsert_instance(kind, &update("a", "10.0.0.2", 1), 2_000)
            .await
            .unwrap();
        assert_eq!(db.list_instances(kind, Some(1)).await.unwrap().len(), 2);
        // ttl 30 s: active at 31 s, inactive at 33 s.
        assert_eq!(
            db.list_active(kind, 1, 31_000, 30_000).await.unwrap().len(),
            2
        );
        assert!(db
            .list_active(kind, 1, 33_000, 30_000)
            .await
            .unwrap()
            .is_empty());
        assert!(db
            .mark_seen(kind, "a", "10.0.0.1", 1, 33_000)
            .await
            .unwrap());
        let active = db.list_active(kind, 1, 34_000, 30_000).await.unwrap();
        assert_eq!(active.len(), 1);
        assert!(active[0].is_active(34_000, 30_000));
        assert!(db.mark_inactive(kind, "a", "10.0.0.1", 1).await.unwrap());
        assert!(db
            .list_active(kind, 1, 34_000, 30_000)
            .await
            .unwrap()
            .is_empty());
        let found = db.find_instance(kind, "a", "10.0.0.2", 1).await.unwrap();
        assert_eq!(found.map(|i| i.ip), Some("10.0.0.2".to_string()));
        assert!(db.delete_instance(kind, "a", "10.0.0.2", 1).await.unwrap());
        assert!(!db.mark_seen(kind, "missing", "", 1, 1).await.unwrap());
    }
}

async fn tokens_by_hash(t: &TestDb) {
    let db = &t.db;
    assert_eq!(db.count_tokens().await.unwrap(), 0);
    let token = db
        .create_token("root", "abc", &["admin".into()], Some(10_000), 1)
        .await
        .unwrap();
    assert_eq!(db.count_tokens().await.unwrap(), 1);
    let found = db.find_token("abc").await.unwrap().unwrap();
    assert_eq!(found, token);
    assert!(found.is_valid(9_999));
    assert!(!found.is_valid(10_000), "expired");
    assert!(db.find_token("other").await.unwrap().is_none());
    db.revoke_token(token.id).await.unwrap();
    assert!(!db.find_token("abc").await.unwrap().unwrap().is_valid(1));
    assert_eq!(db.list_tokens().await.unwrap().len(), 1);
    assert!(db.list_applications().await.unwrap().is_empty());
}

fn new_job(n: i64) -> NewJob {
    NewJob {
        job_type: "preheat".into(),
        args: serde_json::json!({"url": format!("https://r/{n}")}),
        sealed_credentials: Some(vec![1, 2, 3]),
        cluster_ids: vec![1],
    }
}

async fn jobs_lifecycle_and_items(t: &TestDb) {
    let db = &t.db;
    let job = db.enqueue_job(&new_job(1), 10).await.unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.sealed_credentials, Some(vec![1, 2, 3]));
    let claimed = db.claim_job("m1", 1_000, 100).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    assert_eq!(claimed.state, JobState::Running);
    assert_eq!(claimed.attempts, 1);
    assert!(db.claim_job("m2", 1_000, 100).await.unwrap().is_none());
    assert!(db.renew_lease(job.id, "m1", 2_000).await.unwrap());
    assert!(!db.renew_lease(job.id, "m2", 2_000).await.unwrap());
    let items = [
        NewItem {
            url: "u0".into(),
            digest: "d0".into(),
            kind: "config".into(),
        },
        NewItem {
            url: "u1".into(),
            digest: "d1".into(),
            kind: "layer".into(),
        },
    ];
    db.ensure_items(job.id, &items).await.unwrap();
    db.ensure_items(job.id, &items[..1]).await.unwrap();
    db.set_item_state(job.id, 1, ItemState::Success, None)
        .await
        .unwrap();
    let stored = db.list_items(job.id).await.unwrap();
    assert_eq!(stored.len(), 2, "existing items are kept");
    assert_eq!(stored[0].state, ItemState::Pending);
    assert_eq!(stored[1].state, ItemState::Success);
    assert!(db
        .finish_job(job.id, "m1", JobState::Success, None, 500)
        .await
        .unwrap());
    let done = db.get_job(job.id).await.unwrap();
    assert_eq!(done.state, JobState::Success);
    assert_eq!(done.owner, None);
    assert!(db.claim_job("m2", 1_000, 10_000).await.unwrap().is_none());
    assert_eq!(db.list_jobs(10).await.unwrap().len(), 1);
}

async fn claim_is_exclusive_across_managers(t: &TestDb) {
    const JOBS: i64 = 40;
    for n in 0..JOBS {
        t.db.enqueue_job(&new_job(n), 1).await.unwrap();
    }
    // A second manager: its own pool on the same database.
    let other = Db::open(&t.url).await.unwrap();
    let claim_all = |db: Db, owner: &'static str| async move {
        let mut ids = Vec::new();
        let mut empty = 0;
        while empty < 3 {
            match db.claim_job(owner, 1_000_000, 10).await.unwrap() {
                Some(job) => ids.push(job.id),
                None => empty += 1,
            }
        }
        ids
    };
    let (a, b, c) = tokio::join!(
        tokio::spawn(claim_all(t.db.clone(), "m1")),
        tokio::spawn(claim_all(other.clone(), "m2")),
        tokio::spawn(claim_all(other.clone(), "m3")),
    );
    let all: Vec<i64> = [a.unwrap(), b.unwrap(), c.unwrap()].concat();
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a job was claimed twice: {all:?}");
    assert_eq!(unique.len() as i64, JOBS, "every job was claimed");
    other.close().await;
}

async fn expired_lease_is_reclaimable(t: &TestDb) {
    let db = &t.db;
    let job = db.enqueue_job(&new_job(1), 1).await.unwrap();
    db.claim_job("m1", 1_000, 10).await.unwrap().unwrap();
    assert!(db.claim_job("m2", 5_000, 999).await.unwrap().is_none());
    let again = db.claim_job("m2", 5_000, 1_001).await.unwrap().unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.owner.as_deref(), Some("m2"));
    assert_eq!(again.attempts, 2);
    assert!(
        !db.renew_lease(job.id, "m1", 9_000).await.unwrap(),
        "m1 lost it"
    );
    assert!(!db
        .finish_job(job.id, "m1", JobState::Success, None, 2)
        .await
        .unwrap());
}
