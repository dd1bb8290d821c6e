//! A smooth rate limiter: each caller gets the next free slot, `1/rate` after the last.
//!
//! Used to keep writes under AWS quotas (KMS allows PutKeyPolicy at 15/s and CreateGrant
//! at 50/s per account and region) however many bindings a pass touches.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `per_second` acquisitions per second.
    pub fn per_second(per_second: u32) -> Self {
        Self { interval: Duration::from_secs(1) / per_second.max(1), next: Mutex::new(None) }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let now = Instant::now();
            let mut next = self.next.lock().expect("rate limiter lock");
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn thirty_calls_at_ten_per_second_take_three_seconds() {
        let rl = std::sync::Arc::new(RateLimiter::per_second(10));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let rl = rl.clone();
            set.spawn(async move {
                rl.acquire().await;
                Instant::now()
            });
        }
        let mut times = Vec::new();
        while let Some(t) = set.join_next().await {
            times.push(t.unwrap() - start);
        }
        times.sort();
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[29], Duration::from_millis(2900));
        // No one-second window holds more than ten calls.
        for w in times.windows(11) {
            assert!(w[10] - w[0] >= Duration::from_secs(1), "{w:?}");
        }
    }
}
