//! Test harness for shoal: in-process clusters on loopback, a fake HTTP origin with fault
//! injection, and `wait_until`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use shoal_testkit::{origin::FakeOrigin, TestCluster};
//! let origin = FakeOrigin::start().await?;
//! let url = origin.add("blob", vec![7u8; 1024]);
//! let cluster = TestCluster::builder().seed(true).daemons(3).start().await?;
//! let fetched = cluster.get(0, &url).await?;
//! assert_eq!(fetched.summary.content_length, 1024);
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod interop;
pub mod origin;
pub mod relay;
pub mod tls_origin;

use std::future::Future;
use std::time::Duration;

pub use cluster::{Fetched, TestCluster};

/// Multiplier for every timeout, from `SHOAL_TEST_PATIENCE` (default 1).
pub fn patience() -> u32 {
    std::env::var("SHOAL_TEST_PATIENCE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Polls `condition` until it holds or `timeout` (stretched by [`patience`]) passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout * patience();
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `len` bytes from a seeded RNG, so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}
