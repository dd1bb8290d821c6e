//! Selector sweeps: when the next one is due (every `selectorSyncInterval`, never less
//! often than the resync, and with every full resync), the one in flight, and what a
//! finished one changes: the bindings it found are taken in as an edit of the config is,
//! so a group that appears or gains its tag is onboarded, and one that goes or loses it
//! is a removed binding, under the same prune rules and guard.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Daemon, Reconciler};
use crate::core::model::desired::{Desired, DEFAULT_SELECTOR_SYNC};
use crate::core::model::select::Swept;

pub(super) struct Sweeps {
    /// When the next sweep is due.
    pub next_at: Instant,
    pub running: Option<JoinHandle<Swept>>,
    /// Whether a sweep has finished since the start: the first resync waits for it, so
    /// that readiness covers the selected groups.
    pub first_done: bool,
    /// What the last sweep found, for an edit of the config to expand from.
    pub last: Swept,
}

impl Sweeps {
    pub fn new(now: Instant) -> Self {
        Sweeps { next_at: now, running: None, first_done: false, last: Swept::default() }
    }
}

/// Resolves when the sweep in flight ends; never while there is none.
pub(super) async fn join(running: &mut Option<JoinHandle<Swept>>) -> Result<Swept, tokio::task::JoinError> {
    match running {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// How often the selectors of `file` are swept: `selectorSyncInterval`, never longer than
/// the resync.
pub(super) fn every(file: &Desired, resync: Duration) -> Duration {
    file.operator.selector_sync.unwrap_or(DEFAULT_SELECTOR_SYNC).min(resync)
}

impl<R: Reconciler> Daemon<R> {
    /// Whether the config has selectors to sweep.
    pub(super) fn selecting(&self) -> bool {
        !self.config.file.selectors.is_empty()
    }

    /// Starts a sweep when one is due and none is in flight.
    pub(super) fn start_sweep_if_due(&mut self, client: std::sync::Arc<R::Client>, now: Instant) {
        if !self.selecting() || self.sweeps.running.is_some() || self.sweeps.next_at > now {
            return;
        }
        self.sweeps.next_at = now + every(&self.config.file, self.settings.resync);
        let file = self.config.file.clone();
        tracing::debug!(selectors = file.selectors.len(), "selector sweep started");
        self.sweeps.running = Some(tokio::spawn(self.reconciler.sweep(client, file)));
    }

    /// Takes in what a sweep found: the bindings it makes, when they differ from those in
    /// force, are taken in as an edit.
    pub(super) fn swept(&mut self, r: Result<Swept, tokio::task::JoinError>) {
        self.sweeps.running = None;
        let swept = match r {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "selector sweep task failed");
                return;
            }
        };
        crate::shell::aws::select::warn_unseen(&swept);
        let first = !std::mem::replace(&mut self.sweeps.first_done, true);
        let expanded = crate::core::select::expand(&self.config.file, &swept, &self.config.desired);
        self.sweeps.last = swept;
        if expanded.bindings == self.config.desired.bindings {
            tracing::debug!(bindings = expanded.bindings.len(), "selector sweep finished; nothing changed");
        } else {
            self.take_desired(expanded, "selectors swept");
        }
        if first {
            tracing::info!(bindings = self.config.desired.bindings.len(), "first selector sweep finished");
        }
    }

    /// The config of `file` with the bindings the last sweep found, for an edit.
    pub(super) fn expand_edit(&mut self, file: &Desired) -> Desired {
        if file.selectors.is_empty() {
            return file.clone();
        }
        // The edit may have changed the selectors: sweep again at once.
        self.sweeps.next_at = Instant::now();
        crate::core::select::expand(file, &self.sweeps.last, &self.config.desired)
    }
}
