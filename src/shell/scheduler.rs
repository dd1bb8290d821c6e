//! When each work item is due, with per-item exponential backoff and jitter.
//!
//! Items are deduplicated: scheduling an item that is already queued keeps the earlier of
//! the two times. The daemon takes every due item at once, with the rest of each one's
//! unit of work, and runs them in one pass, so an item is never in two passes at the same
//! time.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff with jitter: `base · 2^(n-1)`, capped, then scaled by a random
/// factor in [0.5, 1.0] so many failing items do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(2), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 or more); `jitter` in [0, 1].
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A small xorshift generator for jitter; no need for cryptographic randomness.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn from_clock() -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Self::new(nanos ^ u64::from(std::process::id()))
    }

    /// A number in [0, 1).
    pub fn sample(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Due times and failure counts per item.
#[derive(Debug)]
pub struct Scheduler<K> {
    due: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    backoff: Backoff,
    jitter: Jitter,
}

impl<K: Clone + Eq + Hash + Ord> Scheduler<K> {
    pub fn new(backoff: Backoff, jitter: Jitter) -> Self {
        Self { due: HashMap::new(), failures: HashMap::new(), backoff, jitter }
    }

    /// Queues `item` at `at`, or keeps its earlier due time if it is queued already.
    pub fn schedule(&mut self, item: K, at: Instant) {
        self.due.entry(item).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }

    /// Removes and returns every item due at `now`, in order.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut ready: Vec<K> = self.due.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        ready.sort();
        for k in &ready {
            self.due.remove(k);
        }
        ready
    }

    /// Once the earliest item is due at `now`, removes and returns every item due by then
    /// or within `window` of that earliest one, in order: items whose due times fall
    /// close together are taken as one batch, whatever woke the caller.
    pub fn take_due_within(&mut self, now: Instant, window: std::time::Duration) -> Vec<K> {
        match self.next_due() {
            Some(first) if first <= now => self.take_due((first + window).max(now)),
            _ => Vec::new(),
        }
    }

    /// The earliest due time, if anything is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Records a success: the item's backoff starts over.
    pub fn succeeded(&mut self, item: &K) {
        self.failures.remove(item);
    }

    /// Records a failure and requeues the item after its backoff; returns the delay. A
    /// unit of one.
    pub fn failed(&mut self, item: K, now: Instant) -> Duration {
        self.failed_together(&[item], now)
    }

    /// Records a failure of items that are worked on together (a unit's keys): they
    /// share one failure count, the highest of theirs plus one, and are requeued together
    /// after one backoff; returns the delay.
    pub fn failed_together(&mut self, items: &[K], now: Instant) -> Duration {
        let n = items.iter().map(|k| self.failures(k)).max().unwrap_or(0) + 1;
        let delay = self.backoff.delay(n, self.jitter.sample());
        for k in items {
            self.failures.insert(k.clone(), n);
            self.schedule(k.clone(), now + delay);
        }
        delay
    }

    /// Takes `item` off the queue, if it is queued (it is being worked on now).
    pub fn unschedule(&mut self, item: &K) {
        self.due.remove(item);
    }

    pub fn failures(&self, item: &K) -> u32 {
        self.failures.get(item).copied().unwrap_or(0)
    }

    /// Forgets items that are no longer wanted.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.due.retain(|k, _| keep(k));
        self.failures.retain(|k, _| keep(k));
    }

    pub fn queued(&self) -> BTreeMap<K, Instant> {
        self.due.iter().map(|(k, t)| (k.clone(), *t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Scheduler<&'static str> {
        Scheduler::new(Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) }, Jitter::new(7))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_half() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) };
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        let mut j = Jitter::new(42);
        for _ in 0..1000 {
            let x = j.sample();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_are_dropped_and_the_earlier_time_wins() {
        let mut s = sched();
        let now = Instant::now();
        s.schedule("k1", now + Duration::from_secs(10));
        s.schedule("k1", now + Duration::from_secs(3));
        s.schedule("k1", now + Duration::from_secs(20));
        assert_eq!(s.queued().len(), 1);
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(3)));
        assert!(s.take_due(now).is_empty());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(s.take_due(Instant::now()), ["k1"]);
        assert!(s.take_due(Instant::now()).is_empty(), "taken items leave the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_item_and_reset_after_success() {
        let mut s = sched();
        let start = Instant::now();
        let d1 = s.failed("a", start);
        let d2 = s.failed("a", start);
        let d3 = s.failed("a", start);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1), "{d1:?}");
        assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2), "{d2:?}");
        assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4), "{d3:?}");
        assert_eq!(s.failures(&"a"), 3);
        assert_eq!(s.failures(&"b"), 0, "backoff is per item");
        // The first failure's requeue is the earliest, so that is when "a" is due.
        assert_eq!(s.next_due(), Some(start + d1));
        tokio::time::advance(d1).await;
        assert_eq!(s.take_due(Instant::now()), ["a"]);
        s.succeeded(&"a");
        assert_eq!(s.failures(&"a"), 0);
        let again = s.failed("a", Instant::now());
        assert!(again <= Duration::from_secs(1), "reset after success: {again:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn items_failed_together_share_one_count_and_one_due_time() {
        let mut s = sched();
        let now = Instant::now();
        s.failed("a", now);
        s.failed("a", now);
        s.unschedule(&"a");
        assert!(s.queued().is_empty());
        let d = s.failed_together(&["a", "b"], now);
        // The higher count (a's two, plus one) for both: 2 s to 4 s.
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4), "{d:?}");
        assert_eq!((s.failures(&"a"), s.failures(&"b")), (3, 3));
        assert_eq!(s.queued(), [("a", now + d), ("b", now + d)].into_iter().collect());
    }

    #[tokio::test(start_paused = true)]
    async fn retain_forgets_removed_items() {
        let mut s = sched();
        s.schedule("keep", Instant::now());
        s.schedule("drop", Instant::now());
        s.failed("drop", Instant::now());
        s.retain(|k| *k == "keep");
        assert_eq!(s.take_due(Instant::now() + Duration::from_secs(100)), ["keep"]);
        assert_eq!(s.failures(&"drop"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn items_due_close_together_are_taken_together() {
        let mut s = Scheduler::new(Backoff::default(), Jitter::new(1));
        let t0 = Instant::now();
        let w = Duration::from_millis(250);
        s.schedule("a", t0 + Duration::from_millis(100));
        s.schedule("b", t0 + Duration::from_millis(300));
        s.schedule("c", t0 + Duration::from_millis(400));
        assert!(s.take_due_within(t0, w).is_empty(), "nothing due yet, however close");
        // Woken at 150 ms (by anything): a is due, b within the window of a, c not.
        assert_eq!(s.take_due_within(t0 + Duration::from_millis(150), w), ["a", "b"]);
        // Long overdue: everything due by now comes along.
        s.schedule("d", t0 + Duration::from_secs(3));
        assert_eq!(s.take_due_within(t0 + Duration::from_secs(2), w), ["c"]);
        assert_eq!(s.take_due_within(t0 + Duration::from_secs(9), w), ["d"]);
    }
}
