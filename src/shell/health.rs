//! The daemon's health, behind `/healthz` and `/readyz`: a heartbeat of its loop, and
//! whether (and why not) it is ready.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix milliseconds of the daemon loop's last turn.
    heartbeat_ms: AtomicU64,
    /// 1 when ready: the `ready` metric when made by [`Metrics::health`](crate::shell::metrics::Metrics::health).
    ready: Gauge<i64, AtomicI64>,
    /// What keeps the daemon from being ready, when it is more than waiting for the first
    /// full pass (AWS unreachable).
    cause: std::sync::Mutex<Option<String>>,
}

/// The loop turns at least once a second; a heartbeat older than this means it is stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

impl Health {
    /// A health whose readiness is `ready`: a registry's gauge, so that the metric and
    /// `/readyz` say the same.
    pub(crate) fn new(ready: Gauge<i64, AtomicI64>) -> Health {
        Health { heartbeat_ms: AtomicU64::default(), ready, cause: Default::default() }
    }

    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn alive(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)) < HEARTBEAT_STALE.as_millis() as u64
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// Sets or clears what keeps the daemon from being ready.
    pub fn set_cause(&self, cause: Option<String>) {
        *self.cause.lock().expect("health lock") = cause;
    }

    /// Why the daemon is not ready, for `/readyz`.
    pub fn not_ready_cause(&self) -> String {
        self.cause.lock().expect("health lock").clone().unwrap_or_else(|| "waiting for the first full pass".into())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
