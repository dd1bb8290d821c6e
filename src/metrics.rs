//! Prometheus metrics, and the state behind `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;

use crate::model::{AsgRef, BindingId, LaunchFailureClass};
use crate::status::{self, BindingStatus};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// A group, and a class of launch failure (`kms` or `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaunchLabel {
    pub asg: String,
    pub account: String,
    pub region: String,
    pub class: String,
}

/// Every metric the daemon exports (names get the `asg_cmk_operator_` prefix).
pub struct Metrics {
    registry: Registry,
    pub passes: Family<ResultLabel, Counter>,
    pub errors: Family<ClassLabel, Counter>,
    pub aws_calls: Family<CallLabels, Counter>,
    pub changes: Family<ActionLabel, Counter>,
    pub bindings: Family<StateLabel, Gauge>,
    pub reloads: Family<ResultLabel, Counter>,
    pub config_unreadable: Gauge,
    pub last_resync: Gauge<i64, AtomicI64>,
    pub launch_failures: Family<LaunchLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("asg_cmk_operator");
        let m = Self {
            passes: Family::default(),
            errors: Family::default(),
            aws_calls: Family::default(),
            changes: Family::default(),
            bindings: Family::default(),
            reloads: Family::default(),
            config_unreadable: Gauge::default(),
            last_resync: Gauge::default(),
            launch_failures: Family::default(),
            registry: Registry::default(),
        };
        registry.register("reconcile_passes", "Reconcile passes, by result", m.passes.clone());
        registry.register("reconcile_errors", "Bindings that failed in a pass, by error class", m.errors.clone());
        registry.register("aws_calls", "AWS API calls, by service, operation and outcome", m.aws_calls.clone());
        registry.register("changes_applied", "Changes applied, by action", m.changes.clone());
        registry.register(
            "bindings",
            "Bindings by state, as /status says: converged (ready), failed (not ready), awaiting_key_owner (not ready until the owner of a key the operator cannot act in adds what `handoff` prints), pending (not reported on yet)",
            m.bindings.clone(),
        );
        registry.register("config_reloads", "Config file reloads, by result", m.reloads.clone());
        registry.register(
            "config_file_unreadable",
            "1 while the config file cannot be read (deleted, or no permission); the last good config stays in use",
            m.config_unreadable.clone(),
        );
        registry.register(
            "last_successful_resync_timestamp_seconds",
            "Unix time when the last full resync pass finished",
            m.last_resync.clone(),
        );
        registry.register(
            "launch_failures",
            "1 when the group's most recent launch failed or was cancelled for a reason of this class (kms: \
             KMS or a permission; other: capacity, quotas, subnets, ...), else 0 (read on full passes)",
            m.launch_failures.clone(),
        );
        // Known label values start at zero, so dashboards see them before the first event.
        for r in ["success", "error"] {
            m.passes.get_or_create(&ResultLabel { result: r.into() }).inc_by(0);
            m.reloads.get_or_create(&ResultLabel { result: r.into() }).inc_by(0);
        }
        m.set_bindings(Tally::default());
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    pub fn set_bindings(&self, t: Tally) {
        let states = [
            ("converged", t.ready),
            ("pending", t.pending),
            ("failed", t.not_ready),
            ("awaiting_key_owner", t.awaiting_owner),
        ];
        for (state, n) in states {
            self.bindings.get_or_create(&StateLabel { state: state.into() }).set(n as i64);
        }
    }

    pub fn count(family: &Family<ResultLabel, Counter>, result: &str) {
        family.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// Sets a group's `launch_failures` series: 1 for the class its most recent launch
    /// failed with, 0 for the other (both 0 when it did not fail).
    pub fn set_launch_failure(&self, asg: &AsgRef, failed: Option<LaunchFailureClass>) {
        for class in [LaunchFailureClass::Kms, LaunchFailureClass::Other] {
            let value = i64::from(failed == Some(class));
            self.launch_failures.get_or_create(&launch_label(asg, class)).set(value);
        }
    }

    /// Drops a group's `launch_failures` series: it left the config.
    pub fn forget_launches(&self, asg: &AsgRef) {
        for class in [LaunchFailureClass::Kms, LaunchFailureClass::Other] {
            self.launch_failures.remove(&launch_label(asg, class));
        }
    }
}

fn launch_label(asg: &AsgRef, class: LaunchFailureClass) -> LaunchLabel {
    LaunchLabel {
        asg: asg.name.clone(),
        account: asg.account.to_string(),
        region: asg.region.clone(),
        class: class.as_str().into(),
    }
}

/// Bindings counted by where they stand on the [`StatusBoard`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ready: usize,
    /// Not ready, and not only for want of a key owner's change.
    pub not_ready: usize,
    pub pending: usize,
    /// Not ready only because a hand-off key's owner has not acted yet.
    pub awaiting_owner: usize,
}

/// Every binding's latest status, served on `/status`. The document is written when it
/// is asked for, not after every pass.
#[derive(Debug, Default)]
pub struct StatusBoard {
    statuses: std::sync::RwLock<BTreeMap<BindingId, BindingStatus>>,
    /// Whether a pass has reported yet: before that the document says so.
    reported: AtomicBool,
    /// Why the config file cannot be read, while it cannot: the document says so.
    config_unreadable: std::sync::RwLock<Option<String>>,
}

impl StatusBoard {
    /// Takes in a pass's statuses, keeping each condition's transition time while its
    /// status holds and, on a quick pass, the launches last read.
    pub fn update(&self, statuses: Vec<BindingStatus>) {
        let mut all = self.statuses.write().expect("status lock");
        for mut s in statuses {
            if let Some(before) = all.get(&s.binding) {
                s.carry_over(before);
            }
            all.insert(s.binding.clone(), s);
        }
        self.reported.store(true, Ordering::Relaxed);
    }

    /// Forgets the bindings the config no longer has.
    pub fn retain(&self, bound: impl Fn(&BindingId) -> bool) {
        self.statuses.write().expect("status lock").retain(|b, _| bound(b));
    }

    /// Where the `bound` bindings stand: ready, not ready, or not reported on yet.
    pub fn tally<B: std::borrow::Borrow<BindingId>>(&self, bound: impl IntoIterator<Item = B>) -> Tally {
        let all = self.statuses.read().expect("status lock");
        let mut t = Tally::default();
        for b in bound {
            match all.get(b.borrow()) {
                Some(s) if s.ready() => t.ready += 1,
                Some(s) if s.awaiting_owner() => t.awaiting_owner += 1,
                Some(_) => t.not_ready += 1,
                None => t.pending += 1,
            }
        }
        t
    }

    /// Whether any of `bindings` has a status whose group's launches no pass has read.
    pub fn launches_unread<B: std::borrow::Borrow<BindingId>>(&self, bindings: impl IntoIterator<Item = B>) -> bool {
        let all = self.statuses.read().expect("status lock");
        bindings.into_iter().any(|b| all.get(b.borrow()).is_some_and(BindingStatus::launches_unread))
    }

    /// Whether the binding's last status said it awaits its key's owner.
    pub fn awaiting_owner(&self, b: &BindingId) -> bool {
        self.statuses.read().expect("status lock").get(b).is_some_and(BindingStatus::awaiting_owner)
    }

    /// Sets or clears why the config file cannot be read.
    pub fn set_config_unreadable(&self, error: Option<String>) {
        *self.config_unreadable.write().expect("status lock") = error;
    }

    /// The document, or an empty one before the first pass; while the config file cannot
    /// be read, with a `configFile` object saying why.
    pub fn get(&self) -> String {
        let doc = if !self.reported.load(Ordering::Relaxed) {
            r#"{"ready": false, "bindings": []}"#.to_owned()
        } else {
            status::document(self.statuses.read().expect("status lock").values())
        };
        let Some(error) = self.config_unreadable.read().expect("status lock").clone() else { return doc };
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("the status document is JSON");
        v["configFile"] = serde_json::json!({"readable": false, "error": error, "using": "the last good config"});
        serde_json::to_string_pretty(&v).expect("JSON serialises")
    }
}

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix milliseconds of the daemon loop's last turn.
    heartbeat_ms: AtomicU64,
    ready: AtomicBool,
    /// What keeps the daemon from being ready, when it is more than waiting for the first
    /// full pass (AWS unreachable).
    cause: std::sync::Mutex<Option<String>>,
}

/// The loop turns at least once a second; a heartbeat older than this means it is stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

impl Health {
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn alive(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)) < HEARTBEAT_STALE.as_millis() as u64
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
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

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        Metrics::count(&m.passes, "success");
        m.aws_calls
            .get_or_create(&CallLabels {
                service: "kms".into(),
                operation: "GetKeyPolicy".into(),
                outcome: "success".into(),
            })
            .inc();
        m.set_bindings(Tally { ready: 2, pending: 1, not_ready: 0, awaiting_owner: 3 });
        m.changes.get_or_create(&ActionLabel { action: "PutKeyPolicy".into() }).inc();
        m.errors.get_or_create(&ClassLabel { class: "terminal".into() }).inc();
        m.last_resync.set(1_700_000_000);
        let web = AsgRef::new(crate::model::AccountId::parse("111122223333").unwrap(), "us-west-2", "web");
        m.set_launch_failure(&web, Some(LaunchFailureClass::Kms));
        let text = m.encode();
        for needle in [
            "asg_cmk_operator_reconcile_passes_total{result=\"success\"} 1",
            "asg_cmk_operator_aws_calls_total{service=\"kms\",operation=\"GetKeyPolicy\",outcome=\"success\"} 1",
            "asg_cmk_operator_bindings{state=\"converged\"} 2",
            "asg_cmk_operator_bindings{state=\"pending\"} 1",
            "asg_cmk_operator_bindings{state=\"awaiting_key_owner\"} 3",
            "asg_cmk_operator_last_successful_resync_timestamp_seconds 1700000000",
            "asg_cmk_operator_config_reloads_total{result=\"error\"} 0",
            "asg_cmk_operator_changes_applied_total{action=\"PutKeyPolicy\"} 1",
            "asg_cmk_operator_reconcile_errors_total{class=\"terminal\"} 1",
            "asg_cmk_operator_launch_failures{asg=\"web\",account=\"111122223333\",region=\"us-west-2\",class=\"kms\"} 1",
            "asg_cmk_operator_launch_failures{asg=\"web\",account=\"111122223333\",region=\"us-west-2\",class=\"other\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn launch_failures_move_between_classes_and_leave_with_their_group() {
        let m = Metrics::new();
        let acct = crate::model::AccountId::parse("111122223333").unwrap();
        let (web, api) = (AsgRef::new(acct, "us-west-2", "web"), AsgRef::new(acct, "us-west-2", "api"));
        m.set_launch_failure(&web, Some(LaunchFailureClass::Kms));
        m.set_launch_failure(&api, Some(LaunchFailureClass::Other));
        m.set_launch_failure(&web, Some(LaunchFailureClass::Other));
        let text = m.encode();
        assert!(text.contains("asg=\"web\",account=\"111122223333\",region=\"us-west-2\",class=\"kms\"} 0"), "{text}");
        assert!(
            text.contains("asg=\"web\",account=\"111122223333\",region=\"us-west-2\",class=\"other\"} 1"),
            "{text}"
        );
        m.forget_launches(&web);
        let text = m.encode();
        assert!(!text.contains("asg=\"web\""), "{text}");
        assert!(
            text.contains("asg=\"api\",account=\"111122223333\",region=\"us-west-2\",class=\"other\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn health_is_alive_after_a_beat_and_ready_only_when_set() {
        let h = Health::default();
        assert!(!h.alive());
        h.beat();
        assert!(h.alive());
        assert!(!h.ready());
        h.set_ready(true);
        assert!(h.ready());
    }
}
