//! A token bucket for upload bandwidth.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Allows `rate` bytes per second on average, with one second of burst.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Waits until `bytes` may be sent.
    pub(crate) async fn acquire(&self, bytes: u64) {
        let wait = {
            let mut state = self
                .state
                .lock()
                .expect("rate limiter lock is never poisoned");
            let now = Instant::now();
            let (tokens, last) = &mut *state;
            let rate = self.rate as f64;
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
            *tokens -= bytes as f64;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_tokens() {
        let limiter = RateLimiter::new(1000);
        let start = Instant::now();
        limiter.acquire(1000).await;
        assert!(start.elapsed() < Duration::from_millis(1));
        limiter.acquire(500).await;
        assert!(start.elapsed() >= Duration::from_millis(500));
    }
}
