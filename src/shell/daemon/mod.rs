//! `run`: the long-running operator.
//!
//! One loop owns all state and dispatches: a config edit, a resync tick, a finished
//! connection attempt or pass, and shutdown; it polls the config file once a second in
//! case an edit's event was missed. Work is scheduled by key, and done by unit
//! ([`Units`]): a pass over a key covers every group that uses it and every other key
//! those groups use, so a key policy is never read-modified-written by two passes at
//! once, and a group is never switched by a pass that did not read all of its keys.
//! Every unit that is due when a pass starts, or falls due within [`Settings::coalesce`]
//! of it, is taken into it, so reads are shared (one describe per 100 ASGs, one GetRole
//! per role).
//!
//! Passes run concurrently, up to [`PASS_CONCURRENCY`], each over units no other pass
//! holds ([`Runner`]). A pass's results belong to the config it was started from: they
//! are applied only to bindings that are still in the config and whose keys have not
//! changed since. When a pass ends, each of its units' next step is
//! [`next`](crate::core::next::next) of its bindings' verdicts; the loop applies it and
//! decides nothing else about when to look again.
//!
//! The rest lives beside it: the config generations and the prune guard
//! ([`config`]), the resync bookkeeping ([`resync`]), the connection ([`connection`]),
//! and what is logged and counted ([`report`]).

mod config;
mod connection;
mod contested;
mod edits;
mod inbox;
mod reconciler;
mod report;
mod resync;
mod start;
mod sweeps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

pub use config::changed_keys;
use config::Config;
use connection::Connection;
pub use reconciler::{AwsReconciler, Reconciler};
use report::Reporter;
use resync::Resync;

use crate::core::config as config_text;
use crate::core::contest::Contests;
use crate::core::judge::Judged;
use crate::core::model::desired::Desired;
use crate::core::model::{BindingId, ErrorClass, Failure, KeyArn};
use crate::core::next::{next, Action, Intervals};
use crate::core::plan::Depth;
use crate::shell::aws::{CallStats, ExecSettings};
use crate::shell::metrics::{self, ClassLabel, Metrics};
use crate::shell::reconcile::{Outcome, Prior};
use crate::shell::runner::{PassId, Runner};
use crate::shell::scheduler::{Backoff, Jitter, Scheduler};

/// How soon a key awaiting its owner is checked again, unless `--handoff-recheck-interval`
/// says otherwise.
pub const DEFAULT_HANDOFF_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Settings {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub resync: Duration,
    pub debounce: Duration,
    /// How long in-flight AWS calls may run after SIGTERM.
    pub shutdown_grace: Duration,
    pub backoff: Backoff,
    pub exec: ExecSettings,
    /// Rounds of writes per pass before a key counts as failed.
    pub max_rounds: u32,
    /// A pass also takes the keys that fall due this soon after it starts.
    pub coalesce: Duration,
    /// How soon a hand-off key whose owner has not acted yet is checked again.
    pub handoff_recheck: Duration,
    /// How soon work AWS is doing for a binding (an image copy) is looked at again.
    pub progress_recheck: Duration,
    /// `--events-queue`: the URL of the queue of change events, over the config's
    /// `events` (its Region: the URL's, else the config's `events.region`, else the
    /// first binding's or selector's).
    pub events_queue: Option<String>,
}

impl Settings {
    pub fn new(config: PathBuf, listen: SocketAddr, resync: Duration) -> Self {
        // A pass never sleeps. After a round with transient failures it reads the units it
        // wrote to or failed on once more, to report where they stand, and ends; a role IAM
        // has not propagated yet fails its unit for now. The unit's backoff (1 s, 2 s, 4 s,
        // ... with jitter) makes it due again, and the pass slot is free meanwhile.
        let exec = ExecSettings {
            round_backoff: None,
            propagation_delays: Vec::new(),
            unpropagated: ErrorClass::Retryable,
            ..ExecSettings::default()
        };
        Self {
            config,
            listen,
            resync,
            debounce: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(10),
            backoff: Backoff { base: Duration::from_secs(1), ..Backoff::default() },
            exec,
            max_rounds: 3,
            coalesce: Duration::from_millis(250),
            handoff_recheck: DEFAULT_HANDOFF_RECHECK,
            progress_recheck: Duration::from_secs(15),
            events_queue: None,
        }
    }

    fn intervals(&self) -> Intervals {
        Intervals { key_owner: self.handoff_recheck, copy: self.progress_recheck }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config_text::ConfigErrors),
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to watch the config file: {0}")]
    Watch(#[from] notify::Error),
    #[error("failed to read the config file: {0}")]
    Load(String),
}

/// How many passes may be in flight at once, each over units no other pass holds.
pub const PASS_CONCURRENCY: usize = 4;

/// The passes in flight. Each one's end wakes the loop; nothing else about them does.
struct Passes {
    set: JoinSet<Outcome>,
    /// The runner's id for each pass's task.
    running: HashMap<tokio::task::Id, PassId>,
    /// Each pass's keys (whole units: every key of each unit that was due), with its
    /// [`Pass`].
    runner: Runner<Pass>,
}

struct Pass {
    /// Whether this is a key's full pass of a resync.
    full: bool,
    /// The config generation the pass was planned from.
    generation: u64,
}

struct Daemon<R: Reconciler> {
    settings: Settings,
    reconciler: Arc<R>,
    config: Config,
    report: Reporter,
    connection: Connection<R::Client>,
    passes: Passes,
    scheduler: Scheduler<KeyArn>,
    resync: Resync,
    /// Keys whose next pass is owed at full depth (their groups' launches unread).
    launches_owed: BTreeSet<KeyArn>,
    /// Keys whose last pass held a prune (it would remove more accesses than the config
    /// keeps bindings).
    prunes_held: BTreeSet<KeyArn>,
    /// An edit of the config file being parsed, off the loop's thread.
    parsing: Option<edits::Parsing>,
    sweeps: sweeps::Sweeps,
    /// Change events: the poller, and what the events leave for the passes.
    events: inbox::EventState,
    /// Each key's policy writes and reverts (see [`crate::core::contest`]).
    contests: Contests,
    jitter: Jitter,
}

/// What a run did, for tests: how often the loop turned.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunReport {
    pub turns: u64,
}

/// Runs against AWS until `shutdown` resolves. Fails only at start: invalid config, or
/// the listen address or the config directory cannot be used.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::new());
    let reconciler = AwsReconciler {
        stats: Arc::new(CallStats::with_family(metrics.aws_calls.clone())),
        exec: settings.exec.clone(),
        max_rounds: settings.max_rounds,
    };
    run_with(settings, reconciler, metrics, shutdown).await.map(|_| ())
}

/// Runs with any [`Reconciler`] until `shutdown` resolves.
pub async fn run_with<R: Reconciler>(
    settings: Settings,
    reconciler: R,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, DaemonError> {
    let started = start::start(&settings, &metrics).await?;
    let (server, mut watch) = (started.server, started.watch);
    let report = Reporter::new(metrics, started.health, started.board);
    let mut d = Daemon::new(settings, reconciler, started.desired, started.last_text, report);
    Metrics::count(&d.report.metrics.reloads, "success");
    d.report.gauge(&d.config.bound, &d.config.desired);
    d.prune_gauge();

    let mut turns = RunReport::default();
    tokio::pin!(shutdown);
    // SIGHUP reads the config file again, as daemons do.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP; edits are still seen as they are saved"))
        .ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        turns.turns += 1;
        d.report.health.beat();
        d.start_work();
        let wake = d.next_wake();
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = connection::join(&mut d.connection) => d.connected(r),
            Some(r) = d.passes.set.join_next_with_id(), if !d.passes.set.is_empty() => d.finished(r),
            Some(()) = watch.changes.recv() => d.reload(),
            Some(()) = hangup(&mut hup) => {
                tracing::info!(signal = "SIGHUP", "signal received: reading the config file again");
                d.reload();
            }
            r = edits::join(&mut d.parsing) => d.parsed(r),
            r = sweeps::join(&mut d.sweeps.running) => d.swept(r),
            Some(batch) = inbox::recv(&mut d.events) => d.on_events(batch),
            _ = tick.tick() => d.poll_file(),
            _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }

    d.shut_down().await;
    server.abort();
    tracing::info!("stopped");
    Ok(turns)
}

/// The next SIGHUP; never, where it cannot be handled.
async fn hangup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

impl<R: Reconciler> Daemon<R> {
    /// A daemon about to start: not yet connected, and a full pass due at once.
    fn new(settings: Settings, reconciler: R, desired: Desired, last_text: String, report: Reporter) -> Self {
        let now = Instant::now();
        Daemon {
            scheduler: Scheduler::new(settings.backoff, Jitter::from_clock()),
            config: Config::new(desired, last_text),
            report,
            connection: Connection::Down { retry_at: now, failures: 0 },
            passes: Passes { set: JoinSet::new(), running: HashMap::new(), runner: Runner::new(PASS_CONCURRENCY) },
            resync: Resync::new(settings.resync, now),
            launches_owed: BTreeSet::new(),
            prunes_held: BTreeSet::new(),
            parsing: None,
            sweeps: sweeps::Sweeps::new(now),
            events: inbox::EventState::default(),
            contests: Contests::new(settings.resync.as_secs()),
            reconciler: Arc::new(reconciler),
            settings,
            jitter: Jitter::from_clock(),
        }
    }

    /// On shutdown: no longer ready, and the passes in flight given their grace.
    async fn shut_down(&mut self) {
        tracing::info!("shutting down: no new work; waiting for in-flight AWS calls");
        self.report.health.set_ready(false);
        if !self.passes.set.is_empty() {
            let all = async { while self.passes.set.join_next().await.is_some() {} };
            match tokio::time::timeout(self.settings.shutdown_grace, all).await {
                Ok(()) => tracing::info!("in-flight passes finished"),
                Err(_) => {
                    self.passes.set.abort_all();
                    tracing::warn!(grace = ?self.settings.shutdown_grace, "in-flight passes did not finish in time; abandoned");
                }
            }
        }
    }

    /// When the loop must wake by itself: for a connection retry, or, when connected and
    /// idle, for the next key due or the next resync. Never while a pass is in flight or
    /// an attempt to connect is under way: their ends wake the loop.
    fn next_wake(&self) -> Option<Instant> {
        match &self.connection {
            Connection::Up(_) if self.passes.runner.has_room() => {
                let mut at = self.scheduler.next_due().map_or(self.resync.next_at, |t| t.min(self.resync.next_at));
                if self.selecting() && self.sweeps.running.is_none() {
                    at = at.min(self.sweeps.next_at);
                }
                Some(at)
            }
            Connection::Up(_) => None,
            c => c.wake_at(),
        }
    }

    /// Starts a connection attempt or a pass, when one can start now.
    fn start_work(&mut self) {
        let now = Instant::now();
        match &self.connection {
            Connection::Down { retry_at, failures } if *retry_at <= now => {
                let file = &self.config.file;
                let region = file.bindings.first().map(|b| b.asg.region.clone());
                let region = region.or_else(|| file.selectors.first().map(|s| s.regions[0].clone()));
                let region = region.unwrap_or_else(|| "us-east-1".to_owned());
                let handle = tokio::spawn(self.reconciler.connect(region));
                self.connection = Connection::Connecting { handle, failures: *failures };
            }
            Connection::Up(client) if self.passes.runner.has_room() => {
                let client = client.clone();
                self.start_events(client.clone());
                self.start_sweep_if_due(client.clone(), now);
                // The first resync waits for the first sweep, so that readiness covers
                // the groups the selectors find; every later one sweeps with it.
                let swept = !self.selecting() || self.sweeps.first_done;
                let owed = if swept { self.resync.start_if_due(now, self.config.keys()).cloned() } else { None };
                if let Some(owed) = owed {
                    for k in owed {
                        self.scheduler.schedule(k.clone(), now);
                    }
                    if self.resync.first_done {
                        self.sweeps.next_at = now;
                    }
                    self.resync_done_if_paid();
                }
                // Keys falling due within the coalescing window come along: one pass, one
                // batch of reads, for retries whose jittered backoffs end close together.
                let due = self.scheduler.take_due_within(now, self.settings.coalesce);
                // Whole units: a group's other keys come along, even one waiting out its
                // backoff, so the group's switch is planned with all of them in view. A
                // unit already in flight waits for its pass to end.
                let closed = self.config.units.close(&due);
                for k in &closed {
                    self.scheduler.unschedule(k);
                }
                let keys = self.passes.runner.admit(closed, &self.config.units, now);
                if !keys.is_empty() {
                    let full = keys.iter().any(|k| self.resync.owed.contains(k));
                    self.spawn_pass(client, keys, full);
                }
            }
            _ => {}
        }
    }

    /// Ends the current resync once every key had its full pass: the first makes the
    /// daemon ready, and one with no transient failure moves the resync timestamp.
    fn resync_done_if_paid(&mut self) {
        let Some(ended) = self.resync.end_if_paid() else { return };
        // A resync succeeded when it reached everything it needed: a binding that fails
        // for a reason only its config or its key's owner can fix (a Deny, a missing
        // group) does not make the operator's resync stale.
        if ended.clean {
            self.report.metrics.last_resync.set(metrics::unix_now());
        }
        if ended.first {
            self.report.health.set_ready(true);
            tracing::info!("first full pass finished; ready");
        }
    }

    fn spawn_pass(&mut self, client: Arc<R::Client>, keys: Vec<KeyArn>, full: bool) {
        let subset = self.config.subset(&keys);
        let trigger = match (full, self.resync.first_done) {
            (true, false) => "start",
            (true, true) => "resync",
            (false, _) if keys.iter().any(|k| self.scheduler.failures(k) > 0) => "retry",
            (false, _) => "config",
        };
        let span = tracing::info_span!("reconcile", trigger, keys = keys.len(), pass_bindings = subset.bindings.len());
        tracing::debug!(parent: &span, "pass started");
        // A key whose groups' launches were never read (onboarded by an edit) gets them
        // read in the pass after the one that switched its groups, not at the next resync.
        let launches = keys.iter().any(|k| self.launches_owed.remove(k));
        let depth = if full || launches { Depth::Full } else { Depth::Quick };
        if full {
            self.resync.pass_started(&keys);
        }
        let ids: Vec<BindingId> = subset.bindings.iter().map(|b| b.id()).collect();
        // Launches events reported for the pass's groups go with it.
        let launches =
            subset.bindings.iter().filter_map(|b| Some((b.asg.clone(), self.events.launches.remove(&b.asg)?)));
        let prior = Prior {
            launches: launches.collect(),
            judged: self.report.board.prior(&ids),
            contests: self.contests.only(&keys),
        };
        let id = self.passes.runner.start(keys, Pass { full, generation: self.config.generation });
        let task = self.passes.set.spawn(self.reconciler.reconcile(client, subset, depth, prior).instrument(span));
        self.passes.running.insert(task.id(), id);
    }

    fn connected(&mut self, r: Result<Result<R::Client, String>, tokio::task::JoinError>) {
        let failures = self.connection.failures();
        let error = match r {
            Ok(Ok(client)) => {
                self.connection = Connection::Up(Arc::new(client));
                self.report.health.set_cause(None);
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => format!("connect task failed: {e}"),
        };
        let failures = failures + 1;
        let capped = Backoff { max: Duration::from_secs(60), ..self.settings.backoff };
        let delay = capped.delay(failures, self.jitter.sample());
        self.connection = Connection::Down { retry_at: Instant::now() + delay, failures };
        self.report.metrics.errors.get_or_create(&ClassLabel { class: "connect".into() }).inc();
        tracing::error!(error = %error, retry_in = ?delay, "cannot reach AWS; not ready");
        self.report.health.set_cause(Some(format!("cannot reach AWS (retrying in {delay:?}): {error}")));
    }

    fn finished(&mut self, r: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>) {
        let now = Instant::now();
        let task = match &r {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let ended = self.passes.running.remove(&task).and_then(|id| self.passes.runner.finish(id, &self.config.units));
        let Some(ended) = ended else {
            tracing::error!("a pass ended that the daemon did not start");
            return;
        };
        // Keys asked for while their unit was in this pass are queued again now.
        for (k, at) in ended.freed {
            self.scheduler.schedule(k, at);
        }
        self.settle(&ended.keys, ended.pass, r.map(|(_, outcome)| outcome), now);
        self.resync_done_if_paid();
    }

    /// Takes in what a pass found, and applies each of its units' next step.
    fn settle(&mut self, keys: &[KeyArn], pass: Pass, r: Result<Outcome, tokio::task::JoinError>, now: Instant) {
        // Only the keys the config still has, unchanged since the pass began: a removed
        // key is not queued again, and an edited one is already queued for a new pass.
        let current: Vec<KeyArn> = keys.iter().filter(|k| self.config.current(k, pass.generation)).cloned().collect();
        let mut outcome = match r {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "pass task failed");
                Metrics::count(&self.report.metrics.passes, "error");
                if pass.full {
                    self.resync.pass_ended(true);
                }
                for unit in self.split_by_unit(&current) {
                    self.scheduler.failed_together(&unit, now);
                }
                return;
            }
        };
        self.report.count(&outcome);
        let transient = outcome.judged.iter().any(|j| j.verdict.failure().is_some_and(|f| f.class.is_transient()));
        if pass.full {
            self.resync.pass_ended(transient);
        }
        // What the pass found for bindings that have left or changed since is not theirs.
        let keep = |b: &BindingId| self.config.current(&b.key, pass.generation) && self.config.bound.contains(b);
        outcome.judged.retain(|j| keep(&j.binding));
        self.settle_departed(&current, &outcome.prune_pending);
        self.take_contests(&current, &mut outcome);
        for unit in self.split_by_unit(&current) {
            let judged: Vec<Judged> =
                outcome.judged.iter().filter(|j| unit.contains(&j.binding.key)).cloned().collect();
            let pending = unit.iter().any(|k| outcome.prune_pending.contains_key(k));
            let action = next(judged.iter().map(|j| &j.verdict), pending, self.settings.intervals());
            let retry_in = self.apply(&unit, action, now);
            self.report.verdicts(&judged, retry_in, self.settings.handoff_recheck);
            if let Some(delay) = retry_in {
                self.report.prunes_pending(&unit, &outcome.prune_pending, delay);
            }
        }
        self.report.launches(&outcome, &self.config.desired);
        self.report.policy_sizes(&outcome);
        self.events.learn_sources(&outcome.sources);
        self.held_prunes(&current, &outcome);
        let (applied, ready) = (outcome.applied.total(), outcome.ready());
        let converged = outcome.judged.iter().filter(|j| j.verdict.converged()).count();
        let failed = outcome.judged.iter().filter(|j| report::counted_failure(&j.verdict).is_some()).count();
        self.report.board.update(outcome.judged);
        let tally = self.report.gauge(&self.config.bound, &self.config.desired);
        let (ready_total, keys, full) = (tally.ready, keys.len(), pass.full);
        if applied > 0 || failed > 0 {
            tracing::info!(keys, applied, failed, converged, ready, ready_total, full, "pass finished");
        } else {
            tracing::debug!(keys, converged, ready, ready_total, full, "pass finished; nothing to change");
        }
    }

    /// What a pass over `current` held from prune: its keys count in the gauge, and what
    /// it kept for a group that still launches shows in /status.
    fn held_prunes(&mut self, current: &[KeyArn], outcome: &Outcome) {
        match outcome.prune_held {
            Some(_) => self.prunes_held.extend(current.iter().cloned()),
            None => self.prunes_held.retain(|k| !current.contains(k)),
        }
        for key in current {
            let held = outcome.prune_spared.iter().filter(|(k, _)| k == key).map(|(_, m)| m.clone()).collect();
            self.report.board.set_prunes_held(key.as_str(), held);
        }
        self.prune_gauge();
    }

    /// The `prune_held` gauge: 1 while a prune is held, by the guard over an edit, by an
    /// empty config, or by a pass over some unit.
    pub(super) fn prune_gauge(&mut self) {
        let op = &self.config.desired.operator;
        let keys = self.config.keys();
        self.prunes_held.retain(|k| keys.contains(k));
        let empty = op.prune && self.config.desired.bindings.is_empty() && !op.allow_mass_prune;
        let held = op.prune && (op.prune_held.is_some() || empty || !self.prunes_held.is_empty());
        self.report.metrics.prune_held.set(i64::from(held));
    }

    /// Applies a unit's next step; for a backoff, returns the delay.
    fn apply(&mut self, unit: &[KeyArn], action: Action, now: Instant) -> Option<Duration> {
        match action {
            Action::Done => {
                unit.iter().for_each(|k| self.scheduler.succeeded(k));
                None
            }
            Action::Requeue { after, depth } => {
                for k in unit {
                    self.scheduler.succeeded(k);
                    self.scheduler.schedule(k.clone(), now + after);
                    if depth == Depth::Full {
                        self.launches_owed.insert(k.clone());
                    }
                }
                None
            }
            Action::Backoff => Some(self.scheduler.failed_together(unit, now)),
        }
    }

    /// Keys that left the config and that a pass over them left with nothing to prune are
    /// done: no longer read. One whose prune failed terminally is given up, said at warn
    /// level; the rest are tried again.
    fn settle_departed(&mut self, keys: &[KeyArn], pending: &BTreeMap<KeyArn, Failure>) {
        let mut done = Vec::new();
        for key in keys.iter().filter(|k| self.config.departed.contains(*k)) {
            match pending.get(key) {
                Some(f) if f.class.is_transient() => continue,
                Some(f) => {
                    tracing::warn!(%key, error = %f, "prune of a key no binding names given up; what is left on it stays")
                }
                None => {
                    tracing::info!(%key, "nothing this instance wrote is left on a key no binding names; it is no longer read")
                }
            }
            self.scheduler.unschedule(key);
            done.push(key.clone());
        }
        if !done.is_empty() {
            self.config.forget_departed(&done);
        }
    }

    /// `keys` split by the unit each is in now: a unit's keys succeed or back off together.
    fn split_by_unit(&self, keys: &[KeyArn]) -> Vec<Vec<KeyArn>> {
        let mut units: BTreeMap<&KeyArn, Vec<KeyArn>> = BTreeMap::new();
        for k in keys {
            if let Some(first) = self.config.units.unit_of(k).first() {
                units.entry(first).or_default().push(k.clone());
            }
        }
        units.into_values().collect()
    }
}

#[cfg(test)]
mod tests;
