//! `run`: the long-running operator.
//!
//! One loop owns all state. It reacts to config edits, resync ticks, a finished
//! connection attempt or pass, and shutdown, and polls the config file once a second in
//! case an edit's event was missed. Work is scheduled by key, and done by unit
//! ([`Units`]): a pass over a key covers every group that uses it and every other key
//! those groups use, so a key policy is never read-modified-written by two passes at
//! once, and a group is never switched by a pass that did not read all of its keys.
//! Every unit that is due when a pass starts, or falls due within [`Settings::coalesce`]
//! of it, is taken into it, so reads are shared (one describe per 100 ASGs, one GetRole
//! per role).
//!
//! Passes run concurrently, up to [`PASS_CONCURRENCY`], each over units no other pass
//! holds ([`Runner`]): a unit asked for while its pass runs waits for that pass to end, and
//! a slow unit (a role IAM has not propagated, a throttled account) holds up no other.
//!
//! A pass's results belong to the config it was started from: they are applied only to
//! bindings that are still in the config and whose keys have not changed since.
//!
//! The connection is a small state machine ([`Connection`]) that says when it needs
//! waking. As in kube-runtime's scheduler, the loop wakes only for work it can start now:
//! a key that falls due while every pass slot is taken, or while AWS is unreachable, waits
//! for that to end rather than waking the loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

use crate::core::config;

use crate::core::model::desired::{Binding, Desired, Operator};
use crate::core::model::{AsgRef, BindingId, ErrorClass, Failure, KeyArn};
use crate::core::plan::Depth;
use crate::core::status::board::{StatusBoard, Tally};
use crate::core::units::Units;
use crate::shell::aws::{Aws, CallStats, ExecSettings};
use crate::shell::health::Health;
use crate::shell::metrics::{self, ActionLabel, ClassLabel, Metrics};
use crate::shell::reconcile::{self, Outcome};
use crate::shell::runner::{PassId, Runner};
use crate::shell::scheduler::{Backoff, Jitter, Scheduler};
use crate::shell::{config_file, config_watch};

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
    pub max_passes: u32,
    /// A pass also takes the keys that fall due this soon after it starts.
    pub coalesce: Duration,
    /// How soon a hand-off key whose owner has not acted yet is checked again.
    pub handoff_recheck: Duration,
    /// How soon work AWS is doing for a binding (an image copy) is looked at again.
    pub progress_recheck: Duration,
}

impl Settings {
    pub fn new(config: PathBuf, listen: SocketAddr, resync: Duration) -> Self {
        // A pass never sleeps. After a round with transient failures it reads the units it
        // wrote to or failed on once more, to report where they stand, and ends; a role IAM has not propagated yet fails
        // its unit for now. The unit's backoff (1 s, 2 s, 4 s, ... with jitter) makes it
        // due again, and the pass slot is free meanwhile.
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
            max_passes: 3,
            coalesce: Duration::from_millis(250),
            handoff_recheck: DEFAULT_HANDOFF_RECHECK,
            progress_recheck: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to watch the config file: {0}")]
    Watch(#[from] notify::Error),
}

/// What the loop needs from the outside world: a connection, and a pass over some
/// bindings. [`AwsReconciler`] is the real one; tests put in their own to drive the loop
/// on a paused clock.
pub trait Reconciler: Send + Sync + 'static {
    type Client: Send + Sync + 'static;
    /// Connects; `region` is the fallback for global calls.
    fn connect(&self, region: String) -> impl Future<Output = Result<Self::Client, String>> + Send + 'static;
    /// Reconciles `desired` (the bindings of the keys due) once; a full pass also reads
    /// what changes rarely (the groups' recent launches).
    fn reconcile(
        &self,
        client: Arc<Self::Client>,
        desired: Desired,
        depth: Depth,
    ) -> impl Future<Output = Outcome> + Send + 'static;
}

/// Passes against AWS: [`reconcile::apply`] with the daemon's settings.
pub struct AwsReconciler {
    pub stats: Arc<CallStats>,
    pub exec: ExecSettings,
    pub max_passes: u32,
}

impl Reconciler for AwsReconciler {
    type Client = Aws;

    fn connect(&self, region: String) -> impl Future<Output = Result<Aws, String>> + Send + 'static {
        let stats = self.stats.clone();
        async move {
            let aws = Aws::connect(&region, stats).await.map_err(|e| e.to_string())?;
            tracing::info!(account = %aws.caller(), "connected to AWS");
            Ok(aws)
        }
    }

    fn reconcile(
        &self,
        aws: Arc<Aws>,
        desired: Desired,
        depth: Depth,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let (exec, max_passes) = (self.exec.clone(), self.max_passes);
        async move { reconcile::apply(&aws, &desired, max_passes, &exec, depth).await }
    }
}

/// How the daemon stands with AWS.
enum Connection<C> {
    /// Not connected: the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
        failures: u32,
    },
    /// An attempt is under way; its end wakes the loop.
    Connecting {
        handle: JoinHandle<Result<C, String>>,
        failures: u32,
    },
    Up(Arc<C>),
}

impl<C> Connection<C> {
    /// When the loop must wake for the connection: only to retry it.
    fn wake_at(&self) -> Option<Instant> {
        match self {
            Connection::Down { retry_at, .. } => Some(*retry_at),
            Connection::Connecting { .. } | Connection::Up(_) => None,
        }
    }
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
    depth: Depth,
    /// The config generation the pass was planned from.
    generation: u64,
}

/// When the next full resync (every key) is due, the keys still owed a full pass in the
/// current one, and whether the first one has finished.
struct Resync {
    every: Duration,
    next_at: Instant,
    owed: BTreeSet<KeyArn>,
    /// Whether a resync is under way: started, and not every key has had its full pass.
    active: bool,
    /// Full passes of the current resync still in flight.
    in_flight: usize,
    /// Whether a full pass of the current resync had a transient failure.
    troubled: bool,
    first_done: bool,
}

/// The desired state and what the daemon knows of each binding.
struct Config {
    desired: Arc<Desired>,
    units: Units,
    /// The file's text as last read, to tell a real edit from a touch.
    last_text: String,
    /// Every binding of `desired`. Where each stands is its status on the board, the one
    /// answer `/status` and the `bindings` gauge both give.
    bound: BTreeSet<BindingId>,
    /// Counts the configs applied; a pass records the one it started from.
    generation: u64,
    /// The generation in which each key's bindings last changed.
    changed_in: BTreeMap<KeyArn, u64>,
    /// Whether the last look found the file unreadable (deleted, say).
    unreadable: bool,
    /// The last config whose edit the mass-prune guard let prune: an edit is weighed
    /// against it, so a cut made in several quick edits counts as one.
    prune_baseline: Arc<Desired>,
    /// Keys no binding names any more, seen to leave while pruning: each is read and
    /// pruned in a pass of its own until nothing this instance wrote is left on it.
    departed: BTreeSet<KeyArn>,
}

impl Config {
    /// Whether a pass started from `generation` still speaks for `key`: the key is in the
    /// config and its bindings have not changed since.
    fn current(&self, key: &KeyArn, generation: u64) -> bool {
        !self.units.unit_of(key).is_empty() && self.changed_in.get(key).is_none_or(|g| *g <= generation)
    }

    /// The units of work for `desired`, with each departed key in a unit of its own.
    fn set_units(&mut self, desired: &Desired) {
        self.units = Units::of(desired).with_lone(&self.departed);
    }
}

/// What the daemon reports: metrics, health, and each binding's status (/status).
struct Telemetry {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    board: Arc<StatusBoard>,
}

struct Daemon<R: Reconciler> {
    settings: Settings,
    reconciler: Arc<R>,
    config: Config,
    telemetry: Telemetry,
    connection: Connection<R::Client>,
    passes: Passes,
    scheduler: Scheduler<KeyArn>,
    resync: Resync,
    /// Keys owed a full pass because a quick one left their groups' launches unread.
    launches_owed: BTreeSet<KeyArn>,
    /// Groups whose most recent launch, as last read, failed.
    launch_failing: BTreeSet<AsgRef>,
    /// The failure each failing binding was last warned about: the same failure on the
    /// next backoff step is logged at debug, so a binding that cannot succeed warns once
    /// per change of its failure, not on every retry.
    warned: BTreeMap<BindingId, (ErrorClass, String)>,
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
        max_passes: settings.max_passes,
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
    // One read: the text compared with later reads is the text that was parsed.
    let (desired, last_text) = config_file::load_with_text(&settings.config)?;
    let health = Arc::new(metrics.health());
    health.beat();
    metrics.resync_interval.set(settings.resync.as_secs_f64());
    let board = Arc::new(StatusBoard::default());
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: settings.listen, source })?;
    let addr = listener.local_addr().unwrap_or(settings.listen);
    let server = tokio::spawn(crate::shell::server::serve(listener, metrics.clone(), health.clone(), board.clone()));
    let mut watch = config_watch::watch(&settings.config, settings.debounce)?;
    tracing::info!(%addr, config = %settings.config.display(), bindings = desired.bindings.len(), resync = ?settings.resync, "listening");
    warn_default_roles(&desired, None);
    warn_unknown_regions(&desired, None);
    warn_empty_prune(&desired, &metrics);

    let telemetry = Telemetry { metrics, health, board };
    let mut d = Daemon::new(settings, reconciler, desired, last_text, telemetry);
    Metrics::count(&d.telemetry.metrics.reloads, "success");
    d.update_gauge();

    let mut report = RunReport::default();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        report.turns += 1;
        d.telemetry.health.beat();
        d.start_work();
        let wake = d.next_wake();
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = join_connection(&mut d.connection) => d.connected(r),
            Some(r) = d.passes.set.join_next_with_id(), if !d.passes.set.is_empty() => d.finished(r),
            Some(()) = watch.changes.recv() => d.reload(),
            _ = tick.tick() => d.poll_file(),
            _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }

    d.shut_down().await;
    server.abort();
    tracing::info!("stopped");
    Ok(report)
}

/// Resolves when a connection attempt ends; never while there is none.
async fn join_connection<C>(c: &mut Connection<C>) -> Result<Result<C, String>, tokio::task::JoinError> {
    match c {
        Connection::Connecting { handle, .. } => handle.await,
        _ => std::future::pending().await,
    }
}

impl<R: Reconciler> Daemon<R> {
    /// A daemon about to start: not yet connected, and a full pass due at once.
    fn new(settings: Settings, reconciler: R, desired: Desired, last_text: String, telemetry: Telemetry) -> Self {
        let now = Instant::now();
        Daemon {
            scheduler: Scheduler::new(settings.backoff, Jitter::from_clock()),
            config: Config {
                bound: desired.bindings.iter().map(|b| b.id()).collect(),
                units: Units::of(&desired),
                prune_baseline: Arc::new(desired.clone()),
                departed: BTreeSet::new(),
                desired: Arc::new(desired),
                last_text,
                generation: 0,
                changed_in: BTreeMap::new(),
                unreadable: false,
            },
            telemetry,
            connection: Connection::Down { retry_at: now, failures: 0 },
            passes: Passes { set: JoinSet::new(), running: HashMap::new(), runner: Runner::new(PASS_CONCURRENCY) },
            resync: Resync {
                every: settings.resync,
                next_at: now,
                owed: BTreeSet::new(),
                active: false,
                in_flight: 0,
                troubled: false,
                first_done: false,
            },
            launches_owed: BTreeSet::new(),
            launch_failing: BTreeSet::new(),
            warned: BTreeMap::new(),
            reconciler: Arc::new(reconciler),
            settings,
            jitter: Jitter::from_clock(),
        }
    }

    /// On shutdown: no longer ready, and the passes in flight given their grace.
    async fn shut_down(&mut self) {
        tracing::info!("shutting down: no new work; waiting for in-flight AWS calls");
        self.telemetry.health.set_ready(false);
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

    fn keys(&self) -> BTreeSet<KeyArn> {
        self.config.desired.bindings.iter().map(|b| b.key.clone()).collect()
    }

    /// When the loop must wake by itself: for a connection retry, or, when connected and
    /// idle, for the next key due or the next resync. Never while a pass is in flight or
    /// an attempt to connect is under way: their ends wake the loop.
    fn next_wake(&self) -> Option<Instant> {
        match &self.connection {
            Connection::Up(_) if self.passes.runner.has_room() => {
                let due = self.scheduler.next_due().map_or(self.resync.next_at, |t| t.min(self.resync.next_at));
                Some(due)
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
                let region =
                    self.config.desired.bindings.first().map_or("us-east-1".to_owned(), |b| b.asg.region.clone());
                let handle = tokio::spawn(self.reconciler.connect(region));
                self.connection = Connection::Connecting { handle, failures: *failures };
            }
            Connection::Up(client) if self.passes.runner.has_room() => {
                let client = client.clone();
                if self.resync.next_at <= now {
                    self.resync.next_at = now + self.resync.every;
                    self.resync.owed = self.keys();
                    self.resync.troubled = false;
                    self.resync.active = true;
                    for k in &self.resync.owed {
                        self.scheduler.schedule(k.clone(), now);
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
        if !self.resync.active || !self.resync.owed.is_empty() || self.resync.in_flight > 0 {
            return;
        }
        self.resync.active = false;
        let metrics = &self.telemetry.metrics;
        // A resync succeeded when it reached everything it needed: a binding that fails
        // for a reason only its config or its key's owner can fix (a Deny, a missing
        // group) does not make the operator's resync stale.
        if !self.resync.troubled {
            metrics.last_resync.set(metrics::unix_now());
        }
        if !self.resync.first_done {
            self.resync.first_done = true;
            self.telemetry.health.set_ready(true);
            tracing::info!("first full pass finished; ready");
        }
    }

    fn spawn_pass(&mut self, client: Arc<R::Client>, keys: Vec<KeyArn>, full: bool) {
        let wanted: BTreeSet<&KeyArn> = keys.iter().collect();
        let desired = &self.config.desired;
        let mut operator = desired.operator.clone();
        operator.departed = self.config.departed.iter().filter(|k| wanted.contains(k)).cloned().collect();
        let subset = Desired {
            accounts: desired.accounts.clone(),
            bindings: desired.bindings.iter().filter(|b| wanted.contains(&b.key)).cloned().collect(),
            // With the whole config's count of bindings, which the prune guard weighs
            // against: a unit alone would make every offboarding look like a mass one.
            operator,
        };
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
            for k in &keys {
                self.resync.owed.remove(k);
            }
            self.resync.in_flight += 1;
        }
        let id = self.passes.runner.start(keys, Pass { full, depth, generation: self.config.generation });
        let task = self.passes.set.spawn(self.reconciler.reconcile(client, subset, depth).instrument(span));
        self.passes.running.insert(task.id(), id);
    }

    fn connected(&mut self, r: Result<Result<R::Client, String>, tokio::task::JoinError>) {
        let failures = match &self.connection {
            Connection::Connecting { failures, .. } => *failures,
            _ => 0,
        };
        let error = match r {
            Ok(Ok(client)) => {
                self.connection = Connection::Up(Arc::new(client));
                self.telemetry.health.set_cause(None);
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => format!("connect task failed: {e}"),
        };
        let failures = failures + 1;
        let capped = Backoff { max: Duration::from_secs(60), ..self.settings.backoff };
        let delay = capped.delay(failures, self.jitter.sample());
        self.connection = Connection::Down { retry_at: Instant::now() + delay, failures };
        self.telemetry.metrics.errors.get_or_create(&ClassLabel { class: "connect".into() }).inc();
        tracing::error!(error = %error, retry_in = ?delay, "cannot reach AWS; not ready");
        self.telemetry.health.set_cause(Some(format!("cannot reach AWS (retrying in {delay:?}): {error}")));
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
        if ended.pass.full {
            self.resync.in_flight -= 1;
        }
        self.settle(&ended.keys, ended.pass, r.map(|(_, outcome)| outcome), now);
        self.resync_done_if_paid();
    }

    /// Takes in what a pass found.
    fn settle(&mut self, keys: &[KeyArn], pass: Pass, r: Result<Outcome, tokio::task::JoinError>, now: Instant) {
        // Only the keys the config still has, unchanged since the pass began: a removed
        // key is not queued again, and an edited one is already queued for a new pass.
        let current: Vec<KeyArn> = keys.iter().filter(|k| self.config.current(k, pass.generation)).cloned().collect();
        let mut outcome = match r {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "pass task failed");
                Metrics::count(&self.telemetry.metrics.passes, "error");
                self.resync.troubled |= pass.full;
                for unit in self.split_by_unit(&current) {
                    self.scheduler.failed_together(&unit, now);
                }
                return;
            }
        };
        self.count_outcome(&outcome);
        let transient = outcome.failed.values().any(|f| f.class.is_transient());
        let failures = outcome.failed.values().filter(|f| !waiting(f)).count() as u64;
        // What the pass found for bindings that have left or changed since is not theirs.
        let keep = |b: &BindingId| self.config.current(&b.key, pass.generation) && self.config.bound.contains(b);
        outcome.converged.retain(&keep);
        outcome.failed.retain(|b, _| keep(b));
        outcome.status.retain(|s| keep(&s.binding));

        // A binding that stops failing (or waits for its key's owner) is warned about again
        // when it next fails.
        let in_pass: BTreeSet<&KeyArn> = current.iter().collect();
        self.warned.retain(|b, _| !in_pass.contains(&b.key) || outcome.failed.get(b).is_some_and(|f| !waiting(f)));
        self.settle_departed(&current, &outcome.prune_pending);
        self.schedule_units(&current, &outcome, now);
        self.report_launches(&outcome);
        self.report_handoffs(&outcome);
        for (b, f) in outcome.failed.iter().filter(|(_, f)| f.class == ErrorClass::InProgress) {
            let recheck_in = self.settings.progress_recheck;
            tracing::info!(binding = %b, key = %b.key, detail = %f.message, ?recheck_in, "AWS is still at work for this binding; looking again soon");
        }
        let reported: Vec<BindingId> = outcome.status.iter().map(|s| s.binding.clone()).collect();
        let (applied, converged) = (outcome.applied.total(), outcome.converged.len());
        self.telemetry.board.update(outcome.status);
        let tally = self.update_gauge();
        if pass.depth == Depth::Quick {
            self.owe_launches(&reported, now);
        }
        Metrics::count(&self.telemetry.metrics.passes, if failures > 0 { "error" } else { "success" });
        if pass.full {
            self.resync.troubled |= transient;
        }
        let (ready_total, keys, full, failed) = (tally.ready, keys.len(), pass.full, failures);
        if applied > 0 || failed > 0 {
            tracing::info!(keys, applied, failed, pass_converged = converged, ready_total, full, "pass finished");
        } else {
            tracing::debug!(keys, pass_converged = converged, ready_total, full, "pass finished; converged");
        }
    }

    /// A pass's errors by class, its changes by action, and a held prune, counted.
    fn count_outcome(&self, outcome: &Outcome) {
        let metrics = &self.telemetry.metrics;
        for f in outcome.failed.values().filter(|f| !waiting(f)) {
            metrics.errors.get_or_create(&ClassLabel { class: f.class.as_str().into() }).inc();
        }
        for (action, n) in outcome.applied.by_action() {
            metrics.changes.get_or_create(&ActionLabel { action: action.into() }).inc_by(n);
        }
        if outcome.prune_held.is_some() {
            metrics.prunes_held.inc();
        }
    }

    /// Queues each unit of the pass again: on its backoff when a binding of it failed or a
    /// prune on it is not done (each said once, until it changes), else on the shorter
    /// intervals of a key awaiting its owner or AWS's work in progress.
    fn schedule_units(&mut self, current: &[KeyArn], outcome: &Outcome, now: Instant) {
        let mut failed_keys: BTreeMap<&KeyArn, Vec<(&BindingId, &Failure)>> = BTreeMap::new();
        for (b, f) in outcome.failed.iter().filter(|(_, f)| !waiting(f)) {
            failed_keys.entry(&b.key).or_default().push((b, f));
        }
        for unit in self.split_by_unit(current) {
            let failing = |u: &KeyArn| failed_keys.contains_key(u) || outcome.prune_pending.contains_key(u);
            if !unit.iter().any(failing) {
                unit.iter().for_each(|u| self.scheduler.succeeded(u));
                // Keys awaiting their owner are checked again on the shorter interval.
                for u in unit.iter().filter(|u| outcome.awaiting_owner.contains(*u)) {
                    self.scheduler.schedule(u.clone(), now + self.settings.handoff_recheck);
                }
                // An image copy in progress is looked at again soon, with no backoff.
                for u in unit.iter().filter(|u| outcome.in_progress.contains(*u)) {
                    self.scheduler.schedule(u.clone(), now + self.settings.progress_recheck);
                }
                continue;
            }
            let delay = self.scheduler.failed_together(&unit, now);
            for (key, f) in unit.iter().filter_map(|u| outcome.prune_pending.get_key_value(u)) {
                tracing::warn!(%key, error = %f, class = f.class.as_str(), retry_in = ?delay, "prune not done");
            }
            for (b, f) in unit.iter().filter_map(|u| failed_keys.get(u)).flatten() {
                let failure = (f.class, f.message.clone());
                if self.warned.get(*b) == Some(&failure) {
                    tracing::debug!(binding = %b, key = %b.key, error = %f, class = f.class.as_str(), retry_in = ?delay, "binding still failing");
                } else {
                    tracing::warn!(binding = %b, key = %b.key, error = %f, class = f.class.as_str(), retry_in = ?delay, "binding failed");
                    self.warned.insert((*b).clone(), failure);
                }
            }
        }
    }

    /// A quick pass over an onboarded group switched it without reading its launches:
    /// the next pass over its unit, at once, reads them, so `/status` is whole soon after
    /// the switch and the switch did not wait for those reads.
    fn owe_launches(&mut self, reported: &[BindingId], now: Instant) {
        if !self.telemetry.board.launches_unread(reported) {
            return;
        }
        let owed: BTreeSet<&KeyArn> = reported.iter().map(|b| &b.key).collect();
        for k in owed {
            self.launches_owed.insert(k.clone());
            self.scheduler.schedule(k.clone(), now);
        }
    }

    /// Keys that left the config and that a pass over them left with nothing to prune are
    /// done: no longer read. One whose prune failed terminally is given up, said at warn
    /// level; the rest are tried again.
    fn settle_departed(&mut self, keys: &[KeyArn], pending: &BTreeMap<KeyArn, Failure>) {
        let mut done = false;
        let departed: Vec<&KeyArn> = keys.iter().filter(|k| self.config.departed.contains(*k)).collect();
        for key in departed {
            match pending.get(key) {
                Some(f) if f.class.is_transient() => continue,
                Some(f) => {
                    tracing::warn!(%key, error = %f, "prune of a key no binding names given up; what is left on it stays")
                }
                None => {
                    tracing::info!(%key, "nothing this instance wrote is left on a key no binding names; it is no longer read")
                }
            }
            self.config.departed.remove(key);
            self.scheduler.unschedule(key);
            done = true;
        }
        if done {
            let desired = self.config.desired.clone();
            self.config.set_units(&desired);
        }
    }

    /// One line when a binding starts waiting for its key's owner (with what to add), and
    /// one when the owner's change is seen; nothing on the passes between, which the
    /// previous status on the board tells apart.
    fn report_handoffs(&self, outcome: &Outcome) {
        let board = &self.telemetry.board;
        for s in &outcome.status {
            let (before, now) = (board.awaiting_owner(&s.binding), s.awaiting_owner());
            if now && !before {
                let why = outcome.failed.get(&s.binding).map_or("", |f| f.message.as_str());
                tracing::info!(binding = %s.binding, key = %s.binding.key, owner = %s.binding.key.account(), recheck_in = ?self.settings.handoff_recheck, detail = why, "waiting for the key's owner to change its key policy");
            } else if before && !now {
                tracing::info!(binding = %s.binding, key = %s.binding.key, ready = s.ready(), "the key owner's change is seen; going on with the grant and the group");
            }
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

    /// The groups' most recent launches (full passes only): the metric, by class, and a
    /// warning for each group whose most recent launch failed, quoting AWS's reason.
    fn report_launches(&mut self, outcome: &Outcome) {
        let mut keys: BTreeMap<&AsgRef, Vec<&KeyArn>> = BTreeMap::new();
        for b in &self.config.desired.bindings {
            keys.entry(&b.asg).or_default().push(&b.key);
        }
        for (asg, launch) in &outcome.launches {
            // A group the config dropped while this pass ran keeps no series.
            let (Ok(launch), Some(bound)) = (launch, keys.get(asg)) else { continue };
            let class = launch.as_ref().and_then(|a| a.failure_class(bound));
            if let (Some(a), Some(class)) = (launch, class) {
                let message = a.status_message.as_deref().unwrap_or("no status message");
                tracing::warn!(asg = %asg, started = a.start_time.as_deref().unwrap_or("unknown"), status = %a.status_code, class = class.as_str(), status_message = message, "the group's most recent launch failed");
                self.launch_failing.insert((*asg).clone());
            } else if self.launch_failing.remove(asg) {
                let status = launch.as_ref().map_or("none recent", |a| a.status_code.as_str());
                tracing::info!(asg = %asg, status, "the group's most recent launch no longer fails");
            }
            self.telemetry.metrics.set_launch_failure(asg, class);
        }
    }

    /// The `bindings` gauge, from the board: a binding is converged when its group can
    /// launch with its key (every condition True), failed when a pass found it cannot, and
    /// pending until a pass has reported on it as it is now configured.
    fn update_gauge(&self) -> Tally {
        self.telemetry.metrics.report_bindings(&self.telemetry.board, &self.config.bound)
    }

    /// Fallback for missed events: compare the file's content once a second. This is also
    /// where a file that stays unreadable (deleted) is reported.
    fn poll_file(&mut self) {
        match config_file::read_text(&self.settings.config) {
            Ok(text) => {
                self.file_readable();
                if text != self.config.last_text {
                    self.apply_text(text);
                }
            }
            Err(e) => self.file_unreadable(&e),
        }
    }

    fn reload(&mut self) {
        match config_file::read_text(&self.settings.config) {
            Ok(text) => {
                self.file_readable();
                if text != self.config.last_text {
                    self.apply_text(text);
                }
            }
            Err(e) => {
                // Mid-swap the file can be briefly missing; the next event or poll retries,
                // and the poll reports a file that stays unreadable.
                tracing::debug!(error = %e, "config file unreadable right now");
            }
        }
    }

    /// Warns once when the file becomes unreadable, and sets the gauge and `/status`.
    fn file_unreadable(&mut self, e: &std::io::Error) {
        if std::mem::replace(&mut self.config.unreadable, true) {
            return;
        }
        let config = self.settings.config.display().to_string();
        tracing::warn!(%config, error = %e, "config file cannot be read; keeping the last good config");
        self.telemetry.metrics.config_unreadable.set(1);
        self.telemetry.board.set_config_unreadable(Some(format!("{config}: {e}")));
    }

    /// Warns once when an unreadable file can be read again, and clears the gauge and
    /// `/status`.
    fn file_readable(&mut self) {
        if !std::mem::replace(&mut self.config.unreadable, false) {
            return;
        }
        let config = self.settings.config.display().to_string();
        tracing::warn!(%config, "config file can be read again");
        self.telemetry.metrics.config_unreadable.set(0);
        self.telemetry.board.set_config_unreadable(None);
    }

    /// The guard against pruning by accident, over the whole edit: a pass plans one unit
    /// and sees only its key's prunes, so a cut spread over many keys is weighed here,
    /// against the last config the guard let prune. Said when the hold starts and lifts;
    /// each pass that then holds a prune says so and counts it.
    fn hold_mass_prune(&self, new: &mut Desired) {
        new.operator.prune_held = crate::core::plan::edit_prune_hold(&self.config.prune_baseline, new);
        let was = self.config.desired.operator.prune_held.is_some();
        match &new.operator.prune_held {
            Some(why) if !was && !new.bindings.is_empty() => tracing::warn!(reason = %why, "prune held"),
            None if was => tracing::info!("prune no longer held: the config's removals are confirmed or undone"),
            _ => {}
        }
    }

    /// With pruning on and not held, the keys the edit leaves no binding on (against the
    /// last config the guard let prune) are owed a pass that prunes them; a key named
    /// again is not. With pruning off, none is.
    fn note_departed(&mut self, new: &Desired, named: &BTreeSet<KeyArn>, now: Instant) {
        if !new.operator.prune {
            self.config.departed.clear();
            return;
        }
        self.config.departed.retain(|k| !named.contains(k));
        if new.operator.prune_held.is_some() {
            return;
        }
        for b in self.config.prune_baseline.bindings.iter().filter(|b| !named.contains(&b.key)) {
            if self.config.departed.insert(b.key.clone()) {
                tracing::info!(key = %b.key, "no binding names this key any more: pruning what this instance wrote on it");
                self.scheduler.schedule(b.key.clone(), now);
            }
        }
    }

    fn apply_text(&mut self, text: String) {
        let name = self.settings.config.display().to_string();
        let parsed = config::parse(&text, &name);
        self.config.last_text = text;
        let metrics = &self.telemetry.metrics;
        let mut new = match parsed {
            Ok(new) => new,
            Err(e) => {
                Metrics::count(&metrics.reloads, "error");
                for err in &e.errors {
                    tracing::error!(location = %err.location, error = %err.message, "invalid config; keeping the last good one");
                }
                return;
            }
        };
        Metrics::count(&metrics.reloads, "success");
        self.hold_mass_prune(&mut new);
        let changed = changed_keys(&self.config.desired, &new);
        let now = Instant::now();
        self.config.generation += 1;
        for k in &changed {
            self.scheduler.schedule(k.clone(), now);
            self.config.changed_in.insert(k.clone(), self.config.generation);
        }
        let named: BTreeSet<KeyArn> = new.bindings.iter().map(|b| b.key.clone()).collect();
        self.note_departed(&new, &named, now);
        self.config.set_units(&new);
        self.config.changed_in.retain(|k, _| !self.config.units.unit_of(k).is_empty());
        let keys: BTreeSet<KeyArn> = named.union(&self.config.departed).cloned().collect();
        self.scheduler.retain(|k| keys.contains(k));
        self.passes.runner.retain(|k| keys.contains(k));
        // A key that left the config is owed no full pass.
        self.resync.owed.retain(|k| keys.contains(k));
        self.launches_owed.retain(|k| keys.contains(k));
        let bound: BTreeSet<BindingId> = new.bindings.iter().map(|b| b.id()).collect();
        // A new or changed binding's status (a role suffix edited) was about what it was:
        // it is pending until a pass reports on it as it is now.
        let before: BTreeSet<&Binding> = self.config.desired.bindings.iter().collect();
        let fresh: BTreeSet<BindingId> = new.bindings.iter().filter(|b| !before.contains(b)).map(|b| b.id()).collect();
        self.telemetry.board.retain(|b| bound.contains(b) && !fresh.contains(b));
        self.warned.retain(|b, _| bound.contains(b));
        self.config.bound = bound;
        let groups: BTreeSet<&AsgRef> = new.bindings.iter().map(|b| &b.asg).collect();
        for gone in self.config.desired.bindings.iter().map(|b| &b.asg).filter(|a| !groups.contains(a)) {
            self.telemetry.metrics.forget_launches(gone);
        }
        tracing::info!(bindings = new.bindings.len(), changed_keys = changed.len(), "config reloaded");
        warn_default_roles(&new, Some(&self.config.desired));
        warn_unknown_regions(&new, Some(&self.config.desired));
        warn_empty_prune(&new, &self.telemetry.metrics);
        self.config.desired = Arc::new(new);
        if self.config.desired.operator.prune_held.is_none() {
            self.config.prune_baseline = self.config.desired.clone();
        }
        self.update_gauge();
        self.resync_done_if_paid();
    }
}

/// Warns once for each group that uses the default service-linked role: every such group
/// at start, and on a reload only those that did not before.
fn warn_default_roles(new: &Desired, old: Option<&Desired>) {
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
fn warn_empty_prune(desired: &Desired, metrics: &Metrics) {
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
fn warn_unknown_regions(new: &Desired, old: Option<&Desired>) {
    let before = old.map(config::unknown_region_warnings).unwrap_or_default();
    for w in config::unknown_region_warnings(new).into_iter().filter(|w| !before.contains(w)) {
        tracing::warn!("{w}");
    }
}

/// A key awaiting its owner, or AWS's work in progress, is not an error of the
/// operator's.
fn waiting(f: &Failure) -> bool {
    matches!(f.class, ErrorClass::AwaitingOwner | ErrorClass::InProgress)
}

/// Keys whose bindings were added or changed, or whose accounts' roles changed; with
/// pruning on, also those that lost a binding, and every key when how it prunes changed
/// (turned on, confirmed, another instance, or a hold started or lifted).
pub fn changed_keys(old: &Desired, new: &Desired) -> BTreeSet<KeyArn> {
    let (was, is) = (&old.operator, &new.operator);
    let pruning = |o: &Operator| (o.prune, o.allow_mass_prune, o.instance.clone(), o.prune_held.is_some());
    if is.prune && pruning(was) != pruning(is) {
        return new.bindings.iter().map(|b| b.key.clone()).collect();
    }
    let before: BTreeSet<&Binding> = old.bindings.iter().collect();
    let mut changed: BTreeSet<KeyArn> = new
        .bindings
        .iter()
        .filter(|b| {
            !before.contains(b)
                || [&b.asg.account, b.key.account()].iter().any(|a| old.accounts.get(*a) != new.accounts.get(*a))
        })
        .map(|b| b.key.clone())
        .collect();
    if is.prune {
        // A removed binding's key has something to prune (the caller drops a key that
        // left the config).
        let after: BTreeSet<&Binding> = new.bindings.iter().collect();
        changed.extend(old.bindings.iter().filter(|b| !after.contains(b)).map(|b| b.key.clone()));
    }
    changed
}

#[cfg(test)]
mod tests;
