//! `run`: the long-running operator.
//!
//! One loop owns all state and turns at least once a second. It reacts to config edits,
//! resync ticks, finished passes and shutdown. Work items are keys: a key's pass covers
//! every binding that uses it, so a key policy is never read-modified-written by two
//! passes at once. Every item that is due is taken into the same pass, so reads are
//! shared (one describe per 100 ASGs, one GetRole per role) and only one pass is in
//! flight at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

use crate::aws::{Aws, CallStats, ConnectError, ExecSettings};
use crate::config::{self, Desired};
use crate::metrics::{self, ActionLabel, ClassLabel, Health, Metrics};
use crate::model::{AsgRef, KeyArn};
use crate::reconcile::{self, Outcome};
use crate::scheduler::{Backoff, Jitter, Scheduler};

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
}

impl Settings {
    pub fn new(config: PathBuf, listen: SocketAddr, resync: Duration) -> Self {
        Self {
            config,
            listen,
            resync,
            debounce: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(10),
            backoff: Backoff::default(),
            exec: ExecSettings::default(),
            max_passes: 3,
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

/// Where a binding stands, for the `bindings` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Converged,
    Failed,
}

struct Pass {
    keys: Vec<KeyArn>,
    full: bool,
    handle: JoinHandle<Outcome>,
}

struct Daemon {
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stats: Arc<CallStats>,
    desired: Arc<Desired>,
    last_text: String,
    states: BTreeMap<AsgRef, State>,
    scheduler: Scheduler<KeyArn>,
    aws: Option<Arc<Aws>>,
    connecting: Option<JoinHandle<Result<Aws, ConnectError>>>,
    connect_failures: u32,
    next_connect: Instant,
    pass: Option<Pass>,
    /// The next pass must cover every key (start-up and resync).
    full_due: bool,
    first_full_done: bool,
    next_resync: Instant,
    jitter: Jitter,
}

/// Runs until `shutdown` resolves. Fails only at start: invalid config, or the listen
/// address or the config directory cannot be used.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let desired = config::load(&settings.config)?;
    // If the file changes between these two reads, the once-a-second poll sees it.
    let last_text = std::fs::read_to_string(&settings.config).unwrap_or_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health.beat();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: settings.listen, source })?;
    let addr = listener.local_addr().unwrap_or(settings.listen);
    let server = tokio::spawn(crate::server::serve(listener, metrics.clone(), health.clone()));
    let mut watch = config::watch::watch(&settings.config, settings.debounce)?;
    tracing::info!(%addr, config = %settings.config.display(), bindings = desired.bindings.len(), resync = ?settings.resync, "listening");

    let now = Instant::now();
    let stats = Arc::new(CallStats::with_family(metrics.aws_calls.clone()));
    let mut d = Daemon {
        scheduler: Scheduler::new(settings.backoff, Jitter::from_clock()),
        states: desired.bindings.iter().map(|b| (b.asg.clone(), State::Pending)).collect(),
        desired: Arc::new(desired),
        settings,
        metrics,
        health,
        stats,
        last_text,
        aws: None,
        connecting: None,
        connect_failures: 0,
        next_connect: now,
        pass: None,
        full_due: true,
        first_full_done: false,
        next_resync: now,
        jitter: Jitter::from_clock(),
    };
    d.metrics.reloads.get_or_create(&metrics::ResultLabel { result: "success".into() }).inc();
    d.update_gauge();

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        d.health.beat();
        d.start_work();
        let wake = d.next_wake();
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = watch.changes.recv() => d.reload(),
            _ = tick.tick() => d.poll_file(),
            r = join_opt(&mut d.connecting) => d.connected(r),
            r = join_pass(&mut d.pass) => d.finished(r),
            _ = sleep_until(wake) => {}
        }
    }

    tracing::info!("shutting down: no new work; waiting for in-flight AWS calls");
    d.health.set_ready(false);
    if let Some(mut pass) = d.pass.take() {
        match tokio::time::timeout(d.settings.shutdown_grace, &mut pass.handle).await {
            Ok(_) => tracing::info!("in-flight pass finished"),
            Err(_) => {
                pass.handle.abort();
                tracing::warn!(grace = ?d.settings.shutdown_grace, "in-flight pass did not finish in time; abandoned");
            }
        }
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn join_opt<T>(h: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(handle) => {
            let r = handle.await;
            *h = None;
            r
        }
        None => std::future::pending().await,
    }
}

async fn join_pass(p: &mut Option<Pass>) -> (Pass, Result<Outcome, tokio::task::JoinError>) {
    match p {
        Some(pass) => {
            let r = (&mut pass.handle).await;
            (p.take().expect("pass present"), r)
        }
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn keys(&self) -> BTreeSet<KeyArn> {
        self.desired.bindings.iter().map(|b| b.key.clone()).collect()
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut wake = self.next_resync.min(far);
        if let Some(t) = self.scheduler.next_due() {
            wake = wake.min(t);
        }
        if self.aws.is_none() && self.connecting.is_none() {
            wake = wake.min(self.next_connect);
        }
        wake
    }

    /// Starts a connection attempt or a pass when one is due.
    fn start_work(&mut self) {
        let now = Instant::now();
        if now >= self.next_resync {
            self.full_due = true;
            self.next_resync = now + self.settings.resync;
        }
        if self.aws.is_none() {
            if self.connecting.is_none() && now >= self.next_connect {
                let region = self.desired.bindings.first().map_or("us-east-1".to_owned(), |b| b.asg.region.clone());
                let stats = self.stats.clone();
                self.connecting = Some(tokio::spawn(async move { Aws::connect(&region, stats).await }));
            }
            return;
        }
        if self.pass.is_some() {
            return;
        }
        if self.full_due {
            self.full_due = false;
            for k in self.keys() {
                self.scheduler.schedule(k, now);
            }
            let keys = self.scheduler.take_due(now);
            self.spawn_pass(keys, true);
            return;
        }
        let keys = self.scheduler.take_due(now);
        if !keys.is_empty() {
            self.spawn_pass(keys, false);
        }
    }

    fn spawn_pass(&mut self, keys: Vec<KeyArn>, full: bool) {
        let aws = self.aws.clone().expect("connected");
        let wanted: BTreeSet<&KeyArn> = keys.iter().collect();
        let subset = Desired {
            accounts: self.desired.accounts.clone(),
            bindings: self.desired.bindings.iter().filter(|b| wanted.contains(&b.key)).cloned().collect(),
        };
        let (exec, max_passes) = (self.settings.exec.clone(), self.settings.max_passes);
        let trigger = match (full, self.first_full_done) {
            (true, false) => "start",
            (true, true) => "resync",
            (false, _) if keys.iter().any(|k| self.scheduler.failures(k) > 0) => "retry",
            (false, _) => "config",
        };
        let span = tracing::info_span!("reconcile", trigger, keys = keys.len(), bindings = subset.bindings.len());
        tracing::debug!(parent: &span, "pass started");
        let handle =
            tokio::spawn(async move { reconcile::apply(&aws, &subset, max_passes, &exec).await }.instrument(span));
        self.pass = Some(Pass { keys, full, handle });
    }

    fn connected(&mut self, r: Result<Result<Aws, ConnectError>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(aws)) => {
                tracing::info!(account = %aws.caller(), "connected to AWS");
                self.aws = Some(Arc::new(aws));
                self.connect_failures = 0;
            }
            Ok(Err(e)) => self.connect_failed(e.to_string()),
            Err(e) => self.connect_failed(format!("connect task failed: {e}")),
        }
    }

    fn connect_failed(&mut self, error: String) {
        self.connect_failures += 1;
        let capped = Backoff { max: Duration::from_secs(60), ..self.settings.backoff };
        let delay = capped.delay(self.connect_failures, self.jitter.sample());
        self.next_connect = Instant::now() + delay;
        self.metrics.errors.get_or_create(&ClassLabel { class: "connect".into() }).inc();
        tracing::error!(error = %error, retry_in = ?delay, "cannot reach AWS; not ready");
    }

    fn finished(&mut self, (pass, r): (Pass, Result<Outcome, tokio::task::JoinError>)) {
        let now = Instant::now();
        let outcome = match r {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "pass task failed");
                Metrics::count(&self.metrics.passes, "error");
                for k in pass.keys {
                    self.scheduler.failed(k, now);
                }
                return;
            }
        };
        let mut failed_keys: BTreeMap<&KeyArn, Vec<(&AsgRef, &crate::model::Failure)>> = BTreeMap::new();
        let key_of: BTreeMap<&AsgRef, &KeyArn> = self.desired.bindings.iter().map(|b| (&b.asg, &b.key)).collect();
        for (b, f) in &outcome.failed {
            if let Some(k) = key_of.get(b) {
                failed_keys.entry(k).or_default().push((b, f));
            }
            self.metrics.errors.get_or_create(&ClassLabel { class: f.class.as_str().into() }).inc();
        }
        for (action, n) in outcome.applied.by_action() {
            self.metrics.changes.get_or_create(&ActionLabel { action: action.into() }).inc_by(n);
        }
        for k in &pass.keys {
            match failed_keys.get(k) {
                None => self.scheduler.succeeded(k),
                Some(bindings) => {
                    let delay = self.scheduler.failed(k.clone(), now);
                    for (b, f) in bindings {
                        tracing::warn!(binding = %b, key = %k, error = %f, class = f.class.as_str(), retry_in = ?delay, "binding failed");
                    }
                }
            }
        }
        for b in &outcome.converged {
            if let Some(s) = self.states.get_mut(b) {
                *s = State::Converged;
            }
        }
        for b in outcome.failed.keys() {
            if let Some(s) = self.states.get_mut(b) {
                *s = State::Failed;
            }
        }
        self.update_gauge();
        Metrics::count(&self.metrics.passes, if outcome.failed.is_empty() { "success" } else { "error" });
        if pass.full {
            self.metrics.last_resync.set(metrics::unix_now());
            if !self.first_full_done {
                self.first_full_done = true;
                self.health.set_ready(true);
                tracing::info!("first full pass finished; ready");
            }
        }
        let (applied, failed) = (outcome.applied.total(), outcome.failed.len() as u64);
        if applied > 0 || failed > 0 {
            tracing::info!(
                keys = pass.keys.len(),
                applied,
                failed,
                converged = outcome.converged.len(),
                full = pass.full,
                "pass finished"
            );
        } else {
            tracing::debug!(
                keys = pass.keys.len(),
                converged = outcome.converged.len(),
                full = pass.full,
                "pass finished; converged"
            );
        }
    }

    fn update_gauge(&self) {
        let count = |s| self.states.values().filter(|v| **v == s).count();
        self.metrics.set_bindings(count(State::Converged), count(State::Pending), count(State::Failed));
    }

    /// Fallback for missed events: compare the file's content once a second.
    fn poll_file(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.settings.config) {
            if text != self.last_text {
                self.apply_text(text);
            }
        }
    }

    fn reload(&mut self) {
        match std::fs::read_to_string(&self.settings.config) {
            Ok(text) if text == self.last_text => {}
            Ok(text) => self.apply_text(text),
            Err(e) => {
                // Mid-swap the file can be briefly missing; the next event or poll retries.
                tracing::debug!(error = %e, "config file unreadable right now");
            }
        }
    }

    fn apply_text(&mut self, text: String) {
        let name = self.settings.config.display().to_string();
        let parsed = config::parse(&text, &name);
        self.last_text = text;
        match parsed {
            Err(e) => {
                Metrics::count(&self.metrics.reloads, "error");
                for err in &e.errors {
                    tracing::error!(location = %err.location, error = %err.message, "invalid config; keeping the last good one");
                }
            }
            Ok(new) => {
                Metrics::count(&self.metrics.reloads, "success");
                let changed = changed_keys(&self.desired, &new);
                let now = Instant::now();
                for k in &changed {
                    self.scheduler.schedule(k.clone(), now);
                }
                let keys: BTreeSet<KeyArn> = new.bindings.iter().map(|b| b.key.clone()).collect();
                self.scheduler.retain(|k| keys.contains(k));
                let old: BTreeSet<&config::Binding> = self.desired.bindings.iter().collect();
                self.states = new
                    .bindings
                    .iter()
                    .map(|b| {
                        let keep = old.contains(b) && !changed.contains(&b.key);
                        let s = if keep {
                            self.states.get(&b.asg).copied().unwrap_or(State::Pending)
                        } else {
                            State::Pending
                        };
                        (b.asg.clone(), s)
                    })
                    .collect();
                tracing::info!(bindings = new.bindings.len(), changed_keys = changed.len(), "config reloaded");
                self.desired = Arc::new(new);
                self.update_gauge();
            }
        }
    }
}

/// Keys whose bindings were added or changed, or whose accounts' roles changed.
pub fn changed_keys(old: &Desired, new: &Desired) -> BTreeSet<KeyArn> {
    let before: BTreeSet<&config::Binding> = old.bindings.iter().collect();
    new.bindings
        .iter()
        .filter(|b| {
            !before.contains(b)
                || [&b.asg.account, b.key.account()].iter().any(|a| old.accounts.get(*a) != new.accounts.get(*a))
        })
        .map(|b| b.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
    const K2: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";

    fn cfg(extra: &str) -> Desired {
        config::parse(
            &format!(
                "version: 1\naccounts:\n  - {{id: \"444455556666\", roleArn: arn:aws:iam::444455556666:role/{extra}}}\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {K1}}}\n  - {{asg: b, account: \"111122223333\", key: {K2}}}\n"
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn only_keys_of_changed_bindings_are_requeued() {
        let old = cfg("r");
        assert!(changed_keys(&old, &old).is_empty());
        let mut new = old.clone();
        new.bindings[0].slr_suffix = Some("CMK".into());
        assert_eq!(changed_keys(&old, &new), BTreeSet::from([KeyArn::parse(K1).unwrap()]));
    }

    #[test]
    fn a_changed_account_role_requeues_the_keys_that_touch_it() {
        assert_eq!(changed_keys(&cfg("r"), &cfg("other")), BTreeSet::from([KeyArn::parse(K2).unwrap()]));
    }
}
