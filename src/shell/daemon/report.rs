//! What the daemon says: logs (each failure once, until it changes), metrics, and the
//! status board that `/status` and the `bindings` gauge read. It decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::core::config;
use crate::core::judge::{Judged, Kind, Reason, Retry, Verdict};
use crate::core::model::desired::Desired;
use crate::core::model::{AsgRef, BindingId, ErrorClass, Failure, KeyArn, Wait};
use crate::core::status::board::{StatusBoard, Tally};
use crate::shell::health::Health;
use crate::shell::metrics::{ActionLabel, ClassLabel, Metrics};
use crate::shell::reconcile::Outcome;

/// What the daemon reports through, and what it remembers to say things once.
pub(super) struct Reporter {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub board: Arc<StatusBoard>,
    /// Groups whose most recent launch, as last read, failed.
    launch_failing: BTreeSet<AsgRef>,
    /// Groups whose most recent launch failed before their permissions were in place.
    launch_fixed: BTreeSet<AsgRef>,
    /// The failure each failing binding was last warned about: the same failure on the
    /// next backoff step is logged at debug, so a binding that cannot succeed warns once
    /// per change of its failure, not on every retry.
    warned: BTreeMap<BindingId, (ErrorClass, String)>,
    /// The keys whose policy size is in the `key_policy_size_ratio` gauge.
    sized: BTreeSet<KeyArn>,
}

impl Reporter {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>, board: Arc<StatusBoard>) -> Self {
        Reporter {
            metrics,
            health,
            board,
            launch_failing: BTreeSet::new(),
            launch_fixed: BTreeSet::new(),
            warned: BTreeMap::new(),
            sized: BTreeSet::new(),
        }
    }

    /// The size of each key policy the pass read, against KMS's limit.
    pub fn policy_sizes(&mut self, outcome: &Outcome) {
        self.metrics.report_policy_sizes(&outcome.policy_bytes);
        self.sized.extend(outcome.policy_bytes.keys().cloned());
    }

    /// Forgets the policy sizes of keys the config no longer names.
    pub fn forget_keys(&mut self, keys: &BTreeSet<KeyArn>) {
        for gone in self.sized.iter().filter(|k| !keys.contains(*k)) {
            self.metrics.forget_key(gone);
        }
        self.sized.retain(|k| keys.contains(k));
    }

    /// A pass's failures by class, its changes by action, and a held prune, counted.
    pub fn count(&self, outcome: &Outcome) {
        let metrics = &self.metrics;
        for f in outcome.judged.iter().filter_map(|j| counted_failure(&j.verdict)) {
            metrics.errors.get_or_create(&ClassLabel { class: f.class.as_str().into() }).inc();
        }
        for (action, n) in outcome.applied.by_action() {
            metrics.changes.get_or_create(&ActionLabel { action: action.into() }).inc_by(n);
        }
        if outcome.prune_held.is_some() {
            metrics.prunes_held.inc();
        }
        let failed = outcome.judged.iter().any(|j| counted_failure(&j.verdict).is_some());
        Metrics::count(&metrics.passes, if failed { "error" } else { "success" });
    }

    /// Each binding of `judged` that changed how it waits or fails, said once: a binding
    /// that starts waiting for its key's owner (with what to add) and when the owner's
    /// change is seen; an image copy still under way; a failure, with when it is tried
    /// again, at warn level the first time and at debug while it stays the same.
    pub fn verdicts(&mut self, judged: &[Judged], retry_in: Option<Duration>, recheck: Duration) {
        for j in judged {
            let (b, v) = (&j.binding, &j.verdict);
            let before = self.board.get_judged(b).map(|p| p.verdict);
            let owner = |v: &Verdict| matches!(v, Verdict::Waiting { wait: Wait::KeyOwner, .. });
            if owner(v) && !before.as_ref().is_some_and(owner) {
                tracing::info!(binding = %b, key = %b.key, owner = %b.key.account(), recheck_in = ?recheck, detail = v.message(), "waiting for the key's owner to change its key policy");
            } else if !owner(v) && before.as_ref().is_some_and(owner) {
                tracing::info!(binding = %b, key = %b.key, ready = v.is_ready(), "the key owner's change is seen; going on with the grant and the group");
            }
            if let Verdict::Waiting { wait: Wait::ImageOwner, message } = v {
                if before.as_ref().is_none_or(|p| p.message() != message.as_ref()) {
                    tracing::info!(binding = %b, detail = %message, recheck_in = ?recheck, "waiting for the image's owner to share its snapshots");
                }
            }
            if let Verdict::Waiting { wait: Wait::Copy, message } = v {
                tracing::info!(binding = %b, key = %b.key, detail = %message, "AWS is still at work for this binding; looking again soon");
            }
            if let (Some(f), Verdict::Failed { retry: Retry::Sweep, .. }) = (v.failure(), v) {
                self.warn_refused(b, &f);
                continue;
            }
            match (v.failure(), retry_in) {
                (Some(f), Some(delay))
                    if v.is_failed()
                        && !matches!(v, Verdict::Failed { retry: crate::core::judge::Retry::Resync, .. }) =>
                {
                    self.warn_failure(b, &f, delay)
                }
                _ => {
                    self.warned.remove(b);
                }
            }
        }
    }

    fn warn_failure(&mut self, b: &BindingId, f: &Failure, delay: Duration) {
        let failure = (f.class, f.message.clone());
        if self.warned.get(b) == Some(&failure) {
            tracing::debug!(binding = %b, key = %b.key, error = %f, class = f.class.as_str(), retry_in = ?delay, "binding still failing");
        } else {
            tracing::warn!(binding = %b, key = %b.key, error = %f, class = f.class.as_str(), retry_in = ?delay, "binding failed");
            self.warned.insert(b.clone(), failure);
        }
    }

    /// A binding nothing is done for until the selectors' next sweep or an edit: said once
    /// at warn level, while it stays the same.
    fn warn_refused(&mut self, b: &BindingId, f: &Failure) {
        let failure = (f.class, f.message.clone());
        if self.warned.get(b) != Some(&failure) {
            tracing::warn!(binding = %b, key = %b.key, error = %f, "nothing is done for this binding until the selectors' next sweep or a config edit");
            self.warned.insert(b.clone(), failure);
        }
    }

    /// Prunes left undone on the unit's keys, with when they are tried again.
    pub fn prunes_pending(&self, keys: &[KeyArn], pending: &BTreeMap<KeyArn, Failure>, delay: Duration) {
        for (key, f) in keys.iter().filter_map(|k| pending.get_key_value(k)) {
            tracing::warn!(%key, error = %f, class = f.class.as_str(), retry_in = ?delay, "prune not done");
        }
    }

    /// The groups' most recent launches (full passes only): the metric, by class, and a
    /// warning for each group whose most recent launch failed, quoting AWS's reason.
    pub fn launches(&mut self, outcome: &Outcome, desired: &Desired) {
        let mut keys: BTreeMap<&AsgRef, Vec<&KeyArn>> = BTreeMap::new();
        for b in &desired.bindings {
            keys.entry(&b.asg).or_default().push(&b.key);
        }
        for (asg, launch) in &outcome.launches {
            // A group the config dropped while this pass ran keeps no series.
            let (Ok(launch), Some(bound)) = (launch, keys.get(asg)) else { continue };
            let mut class = launch.as_ref().and_then(|a| a.failure_class(bound));
            // Failed before the group's permissions were in place: the next launch tells,
            // and the gauge (and its alert) wait for it.
            let fixed = class.is_some()
                && outcome
                    .judged
                    .iter()
                    .any(|j| j.binding.asg == *asg && j.has(Kind::LaunchesHealthy, Reason::FixedSinceLastLaunch));
            match (launch, class) {
                (Some(a), Some(_)) if fixed => {
                    self.launch_failing.remove(asg);
                    if self.launch_fixed.insert((*asg).clone()) {
                        tracing::info!(asg = %asg, started = a.start_time.as_deref().unwrap_or("unknown"), status = %a.status_code, "the group's most recent launch failed before its permissions were in place; they are now, and the next launch will tell");
                    }
                    class = None;
                }
                (Some(a), Some(class)) => {
                    let message = a.status_message.as_deref().unwrap_or("no status message");
                    tracing::warn!(asg = %asg, started = a.start_time.as_deref().unwrap_or("unknown"), status = %a.status_code, class = class.as_str(), status_message = message, "the group's most recent launch failed");
                    self.launch_failing.insert((*asg).clone());
                    self.launch_fixed.remove(asg);
                }
                _ => {
                    if self.launch_failing.remove(asg) | self.launch_fixed.remove(asg) {
                        let status = launch.as_ref().map_or("none recent", |a| a.status_code.as_str());
                        tracing::info!(asg = %asg, status, "the group's most recent launch no longer fails");
                    }
                }
            }
            self.metrics.set_launch_failure(asg, class);
        }
    }

    /// The `bindings` gauge, from the board: one answer with `/status`.
    /// And the `selector_bindings` gauge, from `desired`'s selectors and their bindings.
    pub fn gauge(&self, bound: &BTreeSet<BindingId>, desired: &Desired) -> Tally {
        let mut by_selector: BTreeMap<String, Vec<BindingId>> =
            desired.selectors.iter().map(|s| (s.name.to_string(), Vec::new())).collect();
        for b in &desired.bindings {
            if let Some(s) = b.origin.selector() {
                by_selector.entry(s.to_string()).or_default().push(b.id());
            }
        }
        self.metrics.report_selectors(&self.board, &by_selector);
        self.metrics.report_bindings(&self.board, bound)
    }

    /// Forgets what it said of bindings and groups that left the config.
    pub fn forget(&mut self, bound: &BTreeSet<BindingId>, gone_groups: &[AsgRef]) {
        self.warned.retain(|b, _| bound.contains(b));
        for g in gone_groups {
            self.metrics.forget_launches(g);
            self.launch_failing.remove(g);
            self.launch_fixed.remove(g);
        }
    }
}

/// The failure a pass counts for a binding: its own, or that of the key that holds its
/// group; not a wait, and not launches that fail although every permission is in place
/// (no write of the operator's failed).
pub(super) fn counted_failure(v: &Verdict) -> Option<Failure> {
    match v {
        Verdict::Failed { retry: Retry::Resync, .. } => None,
        v => v.failure(),
    }
}

/// Warns once for each group that uses the default service-linked role: every such group
/// at start, and on a reload only those that did not before.
pub(super) fn warn_default_roles(new: &Desired, old: Option<&Desired>) {
    let on_default = |d: &Desired| -> BTreeSet<AsgRef> {
        d.bindings.iter().filter(|b| b.slr_suffix.is_none()).map(|b| b.asg.clone()).collect()
    };
    let before = old.map(on_default).unwrap_or_default();
    for asg in on_default(new).difference(&before) {
        tracing::warn!(asg = %asg, "{}", config::default_role_warning(asg));
    }
}

/// A config with no bindings and pruning on prunes nothing (the guard holds it, and no
/// key is read): said at warn level and counted, since it is most likely an accident.
pub(super) fn warn_empty_prune(desired: &Desired, metrics: &Metrics) {
    if desired.operator.prune && desired.bindings.is_empty() {
        tracing::warn!(
            reason = "the config has no bindings",
            "prune held: nothing is pruned (the operator reads no key, and prunes only on keys some binding names)"
        );
        metrics.prunes_held.inc();
    }
}

/// Warns once for each region the SDK does not know: at start, and on a reload only for
/// those (or their groups) that are new.
pub(super) fn warn_unknown_regions(new: &Desired, old: Option<&Desired>) {
    let before = old.map(config::unknown_region_warnings).unwrap_or_default();
    for w in config::unknown_region_warnings(new).into_iter().filter(|w| !before.contains(w)) {
        tracing::warn!("{w}");
    }
}
