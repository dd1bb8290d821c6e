//! A rate limiter that bounds calls per one-second window as the server counts them.
//!
//! The server sees a call when it arrives, which is some time after the client starts it
//! and before the client has its answer. So a call may start only when fewer than `limit`
//! calls are still in flight or ended less than a second ago. Any `limit + 1` calls
//! then arrive more than a second apart, whatever the network and server delays, so no
//! one-second window at the server holds more than `limit` of them.
//!
//! Used to keep writes under AWS quotas (KMS allows PutKeyPolicy at 15/s, CreateGrant
//! at 50/s and RetireGrant at 30/s, each per account and region) however many bindings a
//! pass touches. A small burst (six keys, say) still goes out at once.
//!
//! Those quotas are shared with every other caller in the account, AWS's own services
//! included, so the limit also learns: each throttling answer cuts it to 0.7 of what it
//! was (at most once a second, never below 1), and it grows back by one a call every two
//! seconds without one, up to its ceiling.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);

/// A cut on throttling keeps this share of the limit.
const CUT: f64 = 0.7;
/// Without throttling, the limit grows by one this often.
const GROWTH: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// End times of finished calls, oldest first, trimmed to the last second.
    ended: VecDeque<Instant>,
    /// Calls per second now: at most `ceiling`, lower after throttling.
    limit: usize,
    ceiling: usize,
    /// When throttling last cut the limit.
    cut: Option<Instant>,
    /// When the limit last changed (cut, or grew).
    changed: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

/// Held for the duration of one call; dropping it records the call's end.
#[must_use = "the call counts as in flight until the permit is dropped"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().expect("rate limiter lock");
        s.in_flight -= 1;
        s.ended.push_back(Instant::now());
    }
}

impl RateLimiter {
    /// At most `per_second` calls in any one-second window, as the server sees them.
    pub fn per_second(per_second: u32) -> Self {
        let ceiling = per_second.max(1) as usize;
        let state = State { in_flight: 0, ended: VecDeque::new(), limit: ceiling, ceiling, cut: None, changed: None };
        Self { state: Mutex::new(state) }
    }

    /// A new ceiling (a config edit): the limit moves to it, unless throttling holds it
    /// lower.
    pub fn set_ceiling(&self, per_second: u32) {
        let mut s = self.state.lock().expect("rate limiter lock");
        let ceiling = per_second.max(1) as usize;
        s.limit = if s.limit == s.ceiling { ceiling } else { s.limit.min(ceiling) };
        s.ceiling = ceiling;
    }

    /// AWS throttled a call: the limit is cut (at most once a second).
    pub fn throttled(&self) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("rate limiter lock");
        if s.cut.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return;
        }
        s.limit = ((s.limit as f64 * CUT) as usize).max(1);
        s.cut = Some(now);
        s.changed = Some(now);
    }

    /// Calls per second allowed now.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("rate limiter lock").limit
    }

    /// Waits until a call may start; hold the permit until the call has returned.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let wait = {
                let now = Instant::now();
                let mut s = self.state.lock().expect("rate limiter lock");
                while s.ended.front().is_some_and(|t| *t + WINDOW <= now) {
                    s.ended.pop_front();
                }
                if s.limit < s.ceiling && s.changed.is_some_and(|t| now.duration_since(t) >= GROWTH) {
                    s.limit += 1;
                    s.changed = Some(now);
                }
                if s.in_flight + s.ended.len() < s.limit {
                    s.in_flight += 1;
                    return Permit { limiter: self };
                }
                // Wake when the oldest end leaves the window, or soon if all are in flight.
                s.ended.front().map_or(POLL, |t| (*t + WINDOW).saturating_duration_since(now).min(POLL * 10))
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `calls` calls of `latency` each; returns (start, end) per call, sorted by start.
    async fn run(limit: u32, calls: usize, latency: Duration) -> Vec<(Duration, Duration)> {
        let rl = std::sync::Arc::new(RateLimiter::per_second(limit));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..calls {
            let rl = rl.clone();
            set.spawn(async move {
                let _p = rl.acquire().await;
                let s = Instant::now();
                tokio::time::sleep(latency).await;
                (s - start, Instant::now() - start)
            });
        }
        let mut out = Vec::new();
        while let Some(t) = set.join_next().await {
            out.push(t.unwrap());
        }
        out.sort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_cuts_the_limit_once_a_second_and_it_grows_back_to_its_ceiling() {
        let rl = RateLimiter::per_second(10);
        rl.throttled();
        assert_eq!(rl.limit(), 7);
        rl.throttled();
        assert_eq!(rl.limit(), 7, "a second cut within a second is the same episode");
        tokio::time::sleep(WINDOW).await;
        rl.throttled();
        assert_eq!(rl.limit(), 4);
        for _ in 0..20 {
            tokio::time::sleep(GROWTH).await;
            drop(rl.acquire().await);
        }
        assert_eq!(rl.limit(), 10, "back to the ceiling, and no further");
        rl.set_ceiling(5);
        assert_eq!(rl.limit(), 5);
        rl.set_ceiling(20);
        assert_eq!(rl.limit(), 20, "at its ceiling, the limit follows a new one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_within_the_limit_goes_at_once() {
        let t = run(12, 6, Duration::from_millis(50)).await;
        assert!(t.iter().all(|(s, _)| *s == Duration::ZERO), "{t:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_limit_places_apart_are_more_than_a_second_apart_end_to_start() {
        let latency = Duration::from_millis(300);
        let t = run(10, 45, latency).await;
        // Whenever the server sees each call (between its start and end), no one-second
        // window can hold more than ten: call i+10 starts a second after call i ended.
        for i in 0..t.len() - 10 {
            assert!(
                t[i + 10].0 >= t[i].1 + WINDOW,
                "call {} starts {:?}, call {i} ended {:?}",
                i + 10,
                t[i + 10].0,
                t[i].1
            );
        }
        // And it keeps moving: ten calls per (latency + one second), give or take a poll.
        assert!(t[44].0 <= Duration::from_millis(4 * 1300 + 100), "{:?}", t[44]);
    }
}
