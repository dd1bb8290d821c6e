//! Runs tasks with at most a given number in flight, spawning each only as a slot frees.
//!
//! A spawned task reserves room for its whole future up front (an SDK call's state is
//! large), so spawning a thousand reads or writes at once would hold tens of MiB before
//! any of them ran. Reads and writes both go through here.

use std::collections::BTreeMap;
use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// Spawns `start(item)` for each item, at most `limit` at a time, and hands each result to
/// `done` as it finishes (an `Err` when the task panicked).
pub async fn for_each<I, F, T>(
    items: I,
    limit: usize,
    mut start: impl FnMut(I::Item) -> F,
    mut done: impl FnMut(Result<T, JoinError>),
) where
    I: IntoIterator,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut items = items.into_iter();
    let mut set = JoinSet::new();
    for item in items.by_ref().take(limit.max(1)) {
        set.spawn(start(item));
    }
    while let Some(joined) = set.join_next().await {
        if let Some(item) = items.next() {
            set.spawn(start(item));
        }
        done(joined);
    }
}

/// Runs `read(item)` for each item, `limit` at a time, through the one bounded spawner;
/// a read whose task panicked answers `Err`.
pub async fn concurrently<I, T, F, Fut>(
    items: Vec<I>,
    limit: usize,
    read: F,
) -> Vec<(I, Result<T, crate::core::model::Failure>)>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::core::model::Failure>> + Send + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut lost = Vec::new();
    let start = |(i, item): (usize, I)| {
        let read = read(item);
        async move { (i, read.await) }
    };
    let indexed: Vec<(usize, I)> = items.iter().cloned().enumerate().collect();
    for_each(indexed, limit, start, |joined| match joined {
        Ok((i, r)) => out.push((i, r)),
        Err(e) => lost.push(e.to_string()),
    })
    .await;
    let mut by_index: BTreeMap<usize, Result<T, crate::core::model::Failure>> = out.into_iter().collect();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let r = by_index.remove(&i).unwrap_or_else(|| {
                tracing::error!(errors = ?lost, "a launch read task failed");
                Err(crate::core::model::Failure::terminal("the read failed inside the operator"))
            });
            (item, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_flight_and_every_result_arrives() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut results = Vec::new();
        let start = |i: u64| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10 * (i % 7))).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }
        };
        for_each(0..100u64, 8, start, |r| results.push(r.unwrap())).await;
        results.sort();
        assert_eq!(results, (0..100).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn a_panicked_task_is_reported_and_the_rest_go_on() {
        let mut ok = 0;
        let mut panicked = 0;
        let start = |i: u32| async move {
            assert_ne!(i, 3, "task 3 fails");
            i
        };
        for_each(0..6u32, 2, start, |r| match r {
            Ok(_) => ok += 1,
            Err(e) if e.is_panic() => panicked += 1,
            Err(e) => panic!("{e}"),
        })
        .await;
        assert_eq!((ok, panicked), (5, 1));
    }
}
