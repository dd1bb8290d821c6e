//! Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};

use crate::core::model::{AsgRef, BindingId, KeyArn, LaunchFailureClass};
use crate::core::status::board::{Standing, StatusBoard, Tally};
use crate::shell::health::Health;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Why an event was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
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

/// A selector, and a state of its bindings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SelectorStateLabel {
    pub selector: String,
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

/// A key, by ARN.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    pub key: String,
}

/// The `binding_failed` family: per binding, 1 while it is failed (not ready, and not only
/// for want of a key owner's change), else 0.
///
/// The series are written when `/metrics` is asked for, from each bound binding's standing
/// after the last pass, not kept as a family of label sets: at 1,000 bindings a family
/// holding four label strings per series, and the set of series to drop, cost about 1 MiB
/// of the daemon's peak RSS. A binding's id shares its parts with the config.
#[derive(Debug, Default)]
struct BindingFailed(Mutex<Vec<(BindingId, bool)>>);

const BINDING_FAILED_HELP: &str = "1 while the binding is failed (not ready, and not only because a key owner has yet to act), else 0; /status says why";

impl Collector for BindingFailed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = self.0.lock().expect("binding series lock");
        let mut family = encoder.encode_descriptor("binding_failed", BINDING_FAILED_HELP, None, MetricType::Gauge)?;
        for (b, failed) in series.iter() {
            let (account, key) = (b.asg.account.to_string(), b.key.to_string());
            let labels = [
                ("asg", b.asg.name.as_str()),
                ("account", account.as_str()),
                ("region", b.asg.region.as_str()),
                ("key", key.as_str()),
            ];
            ConstGauge::new(i64::from(*failed)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `log_writes_dropped_total`: log lines stderr could not take, read when `/metrics` is
/// asked for (see [`crate::shell::telemetry::dropped`]).
#[derive(Debug, Default)]
struct DroppedLogs;

impl Collector for DroppedLogs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Log lines that could not be written to stderr (its reader went away) and were dropped";
        let metric = encoder.encode_descriptor("log_writes_dropped", help, None, MetricType::Counter)?;
        prometheus_client::metrics::counter::ConstCounter::new(crate::shell::telemetry::dropped()).encode(metric)
    }
}

/// Every metric the daemon exports (names get the `asg_cmk_operator_` prefix).
pub struct Metrics {
    registry: Registry,
    pub passes: Family<ResultLabel, Counter>,
    pub errors: Family<ClassLabel, Counter>,
    pub aws_calls: Family<CallLabels, Counter>,
    pub changes: Family<ActionLabel, Counter>,
    pub bindings: Family<StateLabel, Gauge>,
    /// The bindings selectors found, by selector and state (a part of `bindings`).
    pub selector_bindings: Family<SelectorStateLabel, Gauge>,
    /// Change events: received, dropped (by reason), receive errors, whether a queue is
    /// configured, and the Unix times of the last successful receive and the last event
    /// taken in.
    pub events_received: Counter,
    pub events_dropped: Family<ReasonLabel, Counter>,
    pub events_receive_errors: Counter,
    pub events_configured: Gauge,
    pub events_polled: Gauge,
    pub events_last: Gauge,
    /// Per binding: whether it is failed (see [`BindingFailed`]).
    binding_failed: Arc<BindingFailed>,
    pub reloads: Family<ResultLabel, Counter>,
    pub config_unreadable: Gauge,
    /// 1 while the last edit of the config file was taken in, 0 while it was refused.
    pub config_valid: Gauge,
    /// 1 while a prune is held by the guard against pruning by accident.
    pub prune_held: Gauge,
    /// Prunes held by the guard against pruning by accident.
    pub prunes_held: Counter,
    /// Keys found contested: another writer removed the operator's statements again.
    pub key_policy_contests: Counter,
    /// Each key policy's size, as read, as a share of KMS's limit.
    pub key_policy_size: Family<KeyLabel, Gauge<f64, AtomicU64>>,
    pub last_resync: Gauge<i64, AtomicI64>,
    /// `--resync-interval`, in seconds.
    pub resync_interval: Gauge<f64, AtomicU64>,
    /// Unix time the metrics were made: when the daemon started.
    pub start_time: Gauge<i64, AtomicI64>,
    /// 1 when `/readyz` says ready, else 0: held by [`Health`] (see [`Metrics::health`]).
    ready: Gauge<i64, AtomicI64>,
    pub launch_failures: Family<LaunchLabel, Gauge>,
}

/// The two formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0: counter families named without `_total`, ending in `# EOF`.
    OpenMetrics,
    /// Prometheus's classic text format 0.0.4: every family named as its samples are
    /// (counters with `_total`), no `# EOF`.
    Classic,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
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
            selector_bindings: Family::default(),
            events_received: Counter::default(),
            events_dropped: Family::default(),
            events_receive_errors: Counter::default(),
            events_configured: Gauge::default(),
            events_polled: Gauge::default(),
            events_last: Gauge::default(),
            binding_failed: Arc::default(),
            reloads: Family::default(),
            config_unreadable: Gauge::default(),
            config_valid: Gauge::default(),
            prune_held: Gauge::default(),
            key_policy_contests: Counter::default(),
            key_policy_size: Family::default(),
            prunes_held: Counter::default(),
            last_resync: Gauge::default(),
            resync_interval: Gauge::default(),
            start_time: Gauge::default(),
            ready: Gauge::default(),
            launch_failures: Family::default(),
            registry: Registry::default(),
        };
        m.register(&mut registry);
        // Known label values start at zero, so dashboards see them before the first event.
        for r in ["success", "error"] {
            m.passes.get_or_create(&ResultLabel { result: r.into() }).inc_by(0);
            m.reloads.get_or_create(&ResultLabel { result: r.into() }).inc_by(0);
        }
        m.set_bindings(Tally::default());
        m.config_valid.set(1);
        m.start_time.set(unix_now());
        Self { registry, ..m }
    }

    /// Every metric in `registry`, with its help text.
    fn register(&self, registry: &mut Registry) {
        registry.register("reconcile_passes", "Reconcile passes, by result", self.passes.clone());
        registry.register("reconcile_errors", "Bindings that failed in a pass, by error class", self.errors.clone());
        registry.register("aws_calls", "AWS API calls, by service, operation and outcome", self.aws_calls.clone());
        registry.register("changes_applied", "Changes applied, by action", self.changes.clone());
        registry.register(
            "bindings",
            "Bindings by state, as /status says: ready (the group can launch with the key), failed (not ready), waiting (not ready until someone else's work is done: a key's owner, an image copy), pending (not reported on yet)",
            self.bindings.clone(),
        );
        registry.register(
            "selector_bindings",
            "The bindings each selector found, by state as for `bindings` (they are counted there too)",
            self.selector_bindings.clone(),
        );
        registry.register_collector(Box::new(self.binding_failed.clone()));
        registry.register_collector(Box::new(DroppedLogs));
        self.register_config(registry);
        self.register_daemon(registry);
        self.register_events(registry);
    }

    /// The metrics of change events.
    fn register_events(&self, registry: &mut Registry) {
        registry.register("events_received", "Change events received from the queue", self.events_received.clone());
        registry.register(
            "events_dropped",
            "Change events dropped, by reason: not_json, unknown_event, missing_field, not_covered (touches nothing the config covers)",
            self.events_dropped.clone(),
        );
        registry.register(
            "events_receive_errors",
            "Receives from the events queue that failed (each backs off)",
            self.events_receive_errors.clone(),
        );
        registry.register(
            "events_configured",
            "1 while a queue of change events is configured, else 0",
            self.events_configured.clone(),
        );
        registry.register(
            "events_last_receive_timestamp_seconds",
            "Unix time of the last receive from the events queue that succeeded (with or without messages); 0 until one has",
            self.events_polled.clone(),
        );
        registry.register(
            "events_last_event_timestamp_seconds",
            "Unix time of the last change event taken in (one that touched something); 0 until one has",
            self.events_last.clone(),
        );
    }

    /// The metrics of the config file: its reloads, and whether it is read and valid.
    fn register_config(&self, registry: &mut Registry) {
        registry.register("config_reloads", "Config file reloads, by result", self.reloads.clone());
        registry.register(
            "config_file_unreadable",
            "1 while the config file cannot be read (deleted, or no permission); the last good config stays in use",
            self.config_unreadable.clone(),
        );
        registry.register(
            "config_valid",
            "1 while the last edit of the config file was taken in, 0 while it was refused (the last good config stays in use; /status says why)",
            self.config_valid.clone(),
        );
        registry.register(
            "prune_held",
            "1 while a prune is held: the config removes more than half of the bindings, or all of them, and mass pruning is not confirmed; or a group still launches with a key through an access no binding needs",
            self.prune_held.clone(),
        );
        registry.register(
            "prunes_held",
            "Passes in which a prune was held: it would remove more than half of the bindings at once, or the config has none, and mass pruning is not allowed; or a group still launches with a key through an access no binding needs",
            self.prunes_held.clone(),
        );
        registry.register(
            "key_policy_contests",
            "Keys found contested: another writer (Terraform, CloudFormation) replaced the key policy and removed this operator's statements a second time within the hour; its writes back off, and /status names the writer and the statements to add to its code",
            self.key_policy_contests.clone(),
        );
        registry.register(
            "key_policy_size_ratio",
            "Each key policy's size as last read, as a share of KMS's limit of 32,768 bytes (KMS Developer Guide, \"Resource quotas\"), which AWS does not raise: past it, no statement can be added",
            self.key_policy_size.clone(),
        );
    }

    /// Sets each key's `key_policy_size_ratio` from its policy's size in bytes.
    pub fn report_policy_sizes(&self, sizes: &BTreeMap<KeyArn, usize>) {
        for (key, bytes) in sizes {
            let ratio = *bytes as f64 / crate::core::policy::MAX_POLICY_BYTES as f64;
            self.key_policy_size.get_or_create(&KeyLabel { key: key.to_string() }).set(ratio);
        }
    }

    /// Drops the `key_policy_size_ratio` series of a key that left the config.
    pub fn forget_key(&self, key: &KeyArn) {
        self.key_policy_size.remove(&KeyLabel { key: key.to_string() });
    }

    /// The metrics of the daemon's own state: resyncs, readiness, launches.
    fn register_daemon(&self, registry: &mut Registry) {
        registry.register(
            "last_successful_resync_timestamp_seconds",
            "Unix time the last full resync finished with no transient failure (0 until one has)",
            self.last_resync.clone(),
        );
        registry.register(
            "resync_interval_seconds",
            "The --resync-interval the daemon runs with",
            self.resync_interval.clone(),
        );
        registry.register("start_time_seconds", "Unix time the daemon started", self.start_time.clone());
        registry.register(
            "ready",
            "1 when /readyz answers 200 (the first full pass has finished), else 0",
            self.ready.clone(),
        );
        registry.register(
            "launch_failures",
            "1 when the group's most recent launch failed or was cancelled for a reason of this class (kms: \
             KMS or a permission; other: capacity, quotas, subnets, ...), else 0 (read on full passes)",
            self.launch_failures.clone(),
        );
    }

    /// The exposition in OpenMetrics text, as the client library writes it.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Classic => classic(&self.encode()),
        }
    }

    /// A [`Health`] whose readiness is this registry's `ready` gauge, so `/readyz` and
    /// the metric can never disagree.
    pub fn health(&self) -> Health {
        Health::new(self.ready.clone())
    }

    /// Counts `bound` by where each stands on `board` into the `bindings` gauge, and makes
    /// the `binding_failed` series those of `bound`: a binding no longer bound has none.
    pub fn report_bindings<'a>(&self, board: &StatusBoard, bound: impl IntoIterator<Item = &'a BindingId>) -> Tally {
        let standings = board.standings(bound);
        let tally = Tally::of(standings.iter().map(|(_, s)| *s));
        self.set_bindings(tally);
        let series = standings.into_iter().map(|(b, s)| (b.clone(), s == Standing::Failed)).collect();
        *self.binding_failed.0.lock().expect("binding series lock") = series;
        tally
    }

    /// Sets the `selector_bindings` gauge: each selector's bindings (`by_selector`) by
    /// where each stands on `board`. A selector with no binding left keeps zeros until
    /// it leaves the config.
    pub fn report_selectors(&self, board: &StatusBoard, by_selector: &BTreeMap<String, Vec<BindingId>>) {
        self.selector_bindings.clear();
        for (selector, ids) in by_selector {
            let tally = Tally::of(board.standings(ids).into_iter().map(|(_, s)| s));
            for state in Standing::ALL {
                let label = SelectorStateLabel { selector: selector.clone(), state: state.as_str().into() };
                self.selector_bindings.get_or_create(&label).set(tally.get(state) as i64);
            }
        }
    }

    pub fn set_bindings(&self, t: Tally) {
        for state in Standing::ALL {
            self.bindings.get_or_create(&StateLabel { state: state.as_str().into() }).set(t.get(state) as i64);
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

/// Prometheus's classic text format (0.0.4) of an OpenMetrics exposition: a counter
/// family takes its samples' name (`x_total`, not `x`), its `_created` samples and every
/// exemplar are left out (the classic format has neither), `# UNIT` and `# EOF` go, an
/// `info` family becomes a gauge named `x_info` and `unknown` becomes `untyped`. Help text
/// is unescaped from OpenMetrics (`\\`, `\n`, `\"`) and escaped for the classic format
/// (`\\`, `\n`). Label values are escaped the same way in both.
fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family being read: its OpenMetrics name and type, and its help until its type
    // line says what to call it.
    let mut family = String::new();
    let mut kind = String::new();
    let mut help: Option<String> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            family = name.to_owned();
            kind.clear();
            help = Some(escape_help(&unescape_openmetrics(text)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            if name != family {
                help = None;
                family = name.to_owned();
            }
            kind = om_kind.to_owned();
            let (classic_name, classic_kind) = match om_kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), om_kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some(h) = help.take() {
                out.push_str(&format!("# HELP {classic_name} {h}\n"));
            }
            out.push_str(&format!("# TYPE {classic_name} {classic_kind}\n"));
        } else if line.starts_with('#') {
            // `# UNIT`, `# EOF`: not in the classic format.
        } else if !line.is_empty() {
            let sample_name = line.split(['{', ' ']).next().unwrap_or_default();
            if matches!(kind.as_str(), "counter" | "histogram" | "summary")
                && sample_name.strip_prefix(family.as_str()) == Some("_created")
            {
                continue;
            }
            // An exemplar follows the value after ` # `: look for it past the label set,
            // whose values may hold `#`.
            let after_labels = label_set_end(line);
            let end = line[after_labels..].find(" # ").map_or(line.len(), |i| after_labels + i);
            out.push_str(&line[..end]);
            out.push('\n');
        }
    }
    out
}

/// Where a sample line's label set ends (just past its `}`), or where its name ends when
/// it has none.
fn label_set_end(line: &str) -> usize {
    let Some(open) = line.find(['{', ' ']).filter(|&i| line.as_bytes()[i] == b'{') else {
        return line.find(' ').unwrap_or(line.len());
    };
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return open + i + 1,
            _ => {}
        }
    }
    line.len()
}

/// OpenMetrics escapes in help text and label values: `\\`, `\n` and `\"`.
fn unescape_openmetrics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The classic format's escapes in help text: `\\` and `\n` only.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

pub fn unix_now() -> i64 {
    crate::shell::clock::unix_seconds() as i64
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
        m.set_bindings(Tally { ready: 2, pending: 1, failed: 0, waiting: 3 });
        m.changes.get_or_create(&ActionLabel { action: "PutKeyPolicy".into() }).inc();
        m.errors.get_or_create(&ClassLabel { class: "terminal".into() }).inc();
        m.last_resync.set(1_700_000_000);
        let web = AsgRef::new(crate::core::model::AccountId::parse("111122223333").unwrap(), "us-west-2", "web");
        m.set_launch_failure(&web, Some(LaunchFailureClass::Kms));
        let text = m.encode();
        for needle in [
            "asg_cmk_operator_reconcile_passes_total{result=\"success\"} 1",
            "asg_cmk_operator_aws_calls_total{service=\"kms\",operation=\"GetKeyPolicy\",outcome=\"success\"} 1",
            "asg_cmk_operator_bindings{state=\"ready\"} 2",
            "asg_cmk_operator_bindings{state=\"pending\"} 1",
            "asg_cmk_operator_bindings{state=\"waiting\"} 3",
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
        let acct = crate::core::model::AccountId::parse("111122223333").unwrap();
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

    /// A registry with a sample in every family.
    fn busy() -> Metrics {
        let m = Metrics::new();
        Metrics::count(&m.passes, "success");
        m.aws_calls
            .get_or_create(&CallLabels {
                service: "kms".into(),
                operation: "GetKeyPolicy".into(),
                outcome: "success".into(),
            })
            .inc();
        m.changes.get_or_create(&ActionLabel { action: "PutKeyPolicy".into() }).inc();
        m.errors.get_or_create(&ClassLabel { class: "terminal".into() }).inc();
        m.resync_interval.set(300.0);
        let web = AsgRef::new(crate::core::model::AccountId::parse("111122223333").unwrap(), "us-west-2", "web");
        let key = crate::core::model::KeyArn::parse(
            "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        let failed = BindingId { asg: web.clone(), key };
        let board = StatusBoard::default();
        board.update(vec![crate::core::judge::Judged {
            binding: failed.clone(),
            selector: None,
            conditions: vec![],
            verdict: crate::core::judge::Verdict::Failed {
                failure: crate::core::model::Failure::terminal("m"),
                retry: crate::core::judge::Retry::Backoff,
            },
        }]);
        m.report_bindings(&board, [&failed]);
        m.set_launch_failure(&web, Some(LaunchFailureClass::Kms));
        m
    }

    #[test]
    fn classic_format_names_every_family_as_its_samples_with_help_and_type() {
        let text = busy().encode_as(Format::Classic);
        let lines: Vec<&str> = text.lines().collect();
        let mut families = 0;
        let mut family: Option<(&str, &str)> = None;
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let help = lines[i - 1].strip_prefix("# HELP ").unwrap_or_else(|| panic!("no help before {line}"));
                assert!(help.starts_with(&format!("{name} ")) && help.len() > name.len() + 2, "{help}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                family = Some((name, kind));
                families += 1;
            } else if !line.starts_with("# HELP ") {
                let (name, _) = family.unwrap_or_else(|| panic!("a sample before any family: {line}"));
                let sample = line.split(['{', ' ']).next().unwrap();
                assert_eq!(sample, name, "{line}");
            }
        }
        assert_eq!(families, 23, "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE asg_cmk_operator_reconcile_passes_total counter\n"), "{text}");
        assert!(text.contains("\nasg_cmk_operator_reconcile_passes_total{result=\"success\"} 1\n"), "{text}");
        assert!(text.contains("\nasg_cmk_operator_resync_interval_seconds 300.0\n"), "{text}");
    }

    #[test]
    fn openmetrics_format_is_what_the_library_writes() {
        let m = busy();
        let text = m.encode_as(Format::OpenMetrics);
        assert_eq!(text, m.encode());
        assert!(text.contains("# TYPE asg_cmk_operator_reconcile_passes counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn classic_translation_of_each_openmetrics_construct() {
        let openmetrics = concat!(
            "# HELP jobs Jobs \\\"done\\\" \\\\ here\\nand there.\n",
            "# TYPE jobs counter\n",
            "# UNIT jobs seconds\n",
            "jobs_total{kind=\"a # b\",q=\"x\\\"}\"} 3 # {trace_id=\"t}\"} 1.0 1.5\n",
            "jobs_created{kind=\"a # b\"} 1700000000.0\n",
            "# HELP build Build.\n",
            "# TYPE build info\n",
            "build_info{version=\"1\"} 1\n",
            "# TYPE odd unknown\n",
            "odd 2\n",
            "# HELP temp Temperature.\n",
            "# TYPE temp gauge\n",
            "temp -1.5\n",
            "# EOF\n",
        );
        let want = concat!(
            "# HELP jobs_total Jobs \"done\" \\\\ here\\nand there.\n",
            "# TYPE jobs_total counter\n",
            "jobs_total{kind=\"a # b\",q=\"x\\\"}\"} 3\n",
            "# HELP build_info Build.\n",
            "# TYPE build_info gauge\n",
            "build_info{version=\"1\"} 1\n",
            "# TYPE odd untyped\n",
            "odd 2\n",
            "# HELP temp Temperature.\n",
            "# TYPE temp gauge\n",
            "temp -1.5\n",
        );
        assert_eq!(classic(openmetrics), want);
    }

    #[test]
    fn per_binding_series_follow_the_board_and_leave_with_their_binding() {
        use crate::core::judge::{Judged, Retry, Verdict};
        use crate::core::model::Failure;
        use crate::core::model::{AccountId, KeyArn};
        let acct = AccountId::parse("111122223333").unwrap();
        let key = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let id = |asg: &str| BindingId { asg: AsgRef::new(acct, "us-west-2", asg), key: key.clone() };
        let status = |asg: &str, ok: bool| Judged {
            binding: id(asg),
            selector: None,
            conditions: vec![],
            verdict: match ok {
                true => Verdict::Ready,
                false => Verdict::Failed { failure: Failure::terminal("no"), retry: Retry::Backoff },
            },
        };
        let (m, board) = (Metrics::new(), StatusBoard::default());
        board.update(vec![status("web", true), status("api", false)]);
        let bound = [id("web"), id("api"), id("new")];
        let t = m.report_bindings(&board, &bound);
        assert_eq!(t, Tally { ready: 1, failed: 1, pending: 1, waiting: 0 });
        let series = |asg: &str| {
            format!("asg_cmk_operator_binding_failed{{asg=\"{asg}\",account=\"111122223333\",region=\"us-west-2\",key=\"{key}\"}}")
        };
        let text = m.encode();
        assert!(text.contains(&format!("{} 0\n", series("web"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", series("api"))), "{text}");
        assert!(text.contains(&format!("{} 0\n", series("new"))), "{text}");
        assert!(text.contains("asg_cmk_operator_bindings{state=\"failed\"} 1\n"), "{text}");

        board.update(vec![status("api", true)]);
        board.retain(|b| b.asg.name != "web");
        m.report_bindings(&board, &bound[1..]);
        let text = m.encode();
        assert!(!text.contains("asg=\"web\""), "{text}");
        assert!(text.contains(&format!("{} 0\n", series("api"))), "{text}");
    }

    #[test]
    fn readiness_is_the_ready_metric() {
        let m = Metrics::new();
        let h = m.health();
        assert!(m.encode().contains("asg_cmk_operator_ready 0\n"));
        h.set_ready(true);
        assert!(h.ready());
        assert!(m.encode().contains("asg_cmk_operator_ready 1\n"));
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
