//! Config edits as the daemon sees them: the file watched and polled, an unreadable file
//! reported once, and a valid edit taken in (its changed keys queued, its departed keys
//! pruned, what left the config forgotten); an invalid one is said and left.

use tokio::time::Instant;

use super::{report, Daemon, Reconciler};
use crate::core::config as config_text;
use crate::core::status::board::ConfigState;
use crate::shell::clock::unix_seconds;
use crate::shell::config_file;
use crate::shell::metrics::Metrics;

/// What parsing an edit gives.
pub(super) type Parsed = Result<crate::core::model::desired::Desired, config_text::ConfigErrors>;

/// A parse under way: its text and what it found.
pub(super) type Parsing = tokio::task::JoinHandle<(String, Parsed)>;

/// Resolves when a parse under way ends; never while there is none.
pub(super) async fn join(p: &mut Option<Parsing>) -> Result<(String, Parsed), tokio::task::JoinError> {
    match p {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

impl<R: Reconciler> Daemon<R> {
    /// Fallback for missed events: compare the file's content once a second. This is also
    /// where a file that stays unreadable (deleted) is reported.
    pub(super) fn poll_file(&mut self) {
        match config_file::read_text(&self.settings.config) {
            Ok(text) => {
                self.file_readable();
                self.parse(text);
            }
            Err(e) => self.file_unreadable(&e),
        }
    }

    pub(super) fn reload(&mut self) {
        match config_file::read_text(&self.settings.config) {
            Ok(text) => {
                self.file_readable();
                self.parse(text);
            }
            // Mid-swap the file can be briefly missing; the next event or poll retries,
            // and the poll reports a file that stays unreadable.
            Err(e) => tracing::debug!(error = %e, "config file unreadable right now"),
        }
    }

    /// Warns once when the file becomes unreadable, and sets the gauge and `/status`.
    fn file_unreadable(&mut self, e: &std::io::Error) {
        if std::mem::replace(&mut self.config.unreadable, true) {
            return;
        }
        let config = self.settings.config.display().to_string();
        tracing::warn!(%config, error = %e, "config file cannot be read; keeping the last good config");
        self.report.metrics.config_unreadable.set(1);
        self.report.board.set_config_unreadable(Some(format!("{config}: {e}")));
    }

    /// Warns once when an unreadable file can be read again, and clears the gauge and
    /// `/status`.
    fn file_readable(&mut self) {
        if !std::mem::replace(&mut self.config.unreadable, false) {
            return;
        }
        let config = self.settings.config.display().to_string();
        tracing::warn!(%config, "config file can be read again");
        self.report.metrics.config_unreadable.set(0);
        self.report.board.set_config_unreadable(None);
    }

    /// Parses `text`, when it is an edit, off the loop's thread: the loop goes on turning
    /// (and `/healthz` answering) however long it takes. One parse at a time; an edit
    /// made meanwhile is read by the next look at the file.
    fn parse(&mut self, text: String) {
        if self.parsing.is_some() || text == self.config.last_text {
            return;
        }
        let name = self.settings.config.display().to_string();
        self.parsing = Some(tokio::task::spawn_blocking(move || {
            let parsed = config_text::parse(&text, &name);
            (text, parsed)
        }));
    }

    /// Takes in what a parse found.
    pub(super) fn parsed(&mut self, r: Result<(String, Parsed), tokio::task::JoinError>) {
        self.parsing = None;
        match r {
            Ok((text, parsed)) => self.apply_text(text, parsed),
            Err(e) => tracing::error!(error = %e, "parsing the config file failed inside the operator"),
        }
    }

    fn apply_text(&mut self, text: String, parsed: Parsed) {
        self.config.last_text = text;
        let metrics = self.report.metrics.clone();
        let mut new = match parsed {
            Ok(new) => new,
            Err(e) => {
                Metrics::count(&metrics.reloads, "error");
                for err in &e.errors {
                    tracing::error!(location = %err.location, error = %err.message, "invalid config; keeping the last good one");
                }
                let first = e.errors.first();
                self.report.board.set_config(ConfigState::Invalid {
                    error: first.map_or_else(String::new, |f| f.message.clone()),
                    location: first.map_or_else(String::new, |f| f.location.clone()),
                    errors: e.errors.len(),
                    since: unix_seconds(),
                });
                metrics.config_valid.set(0);
                return;
            }
        };
        Metrics::count(&metrics.reloads, "success");
        self.report.board.set_config(ConfigState::Valid);
        metrics.config_valid.set(1);
        self.config.file = std::sync::Arc::new(new.clone());
        new = self.expand_edit(&new);
        self.take_desired(new, "config reloaded");
    }

    /// Takes in a new desired state, from an edit or a sweep: the prune guard weighs it,
    /// its changed keys are queued, its departed keys pruned, what left it forgotten.
    pub(super) fn take_desired(&mut self, mut new: crate::core::model::desired::Desired, what: &'static str) {
        let metrics = self.report.metrics.clone();
        match self.config.hold_mass_prune(&mut new) {
            Some(true) => tracing::warn!(reason = new.operator.prune_held.as_deref().unwrap_or_default(), "prune held"),
            Some(false) => tracing::info!("prune no longer held: the config's removals are confirmed or undone"),
            None => {}
        }
        let fresh = self.config.fresh(&new);
        let old = self.config.desired.clone();
        let edit = self.config.apply(new);
        let now = Instant::now();
        for k in &edit.changed {
            self.scheduler.schedule(k.clone(), now);
        }
        for k in &edit.departed {
            tracing::info!(key = %k, "no binding names this key any more: pruning what this instance wrote on it");
            self.scheduler.schedule(k.clone(), now);
        }
        self.scheduler.retain(|k| edit.keys.contains(k));
        self.passes.runner.retain(|k| edit.keys.contains(k));
        self.resync.retain(&edit.keys);
        self.launches_owed.retain(|k| edit.keys.contains(k));
        // A new or changed binding's judgement was about what it was: it is pending until
        // a pass reports on it as it is now.
        let bound = &self.config.bound;
        self.report.board.retain(|b| bound.contains(b) && !fresh.contains(b));
        self.report.forget(bound, &edit.gone_groups);
        self.report.forget_keys(&edit.keys);
        let new = self.config.desired.clone();
        tracing::info!(bindings = new.bindings.len(), changed_keys = edit.changed.len(), "{what}");
        report::warn_default_roles(&new, Some(&old));
        report::warn_unknown_regions(&new, Some(&old));
        report::warn_empty_prune(&new, &metrics);
        self.report.gauge(&self.config.bound, &self.config.desired);
        self.prune_gauge();
        self.resync_done_if_paid();
    }
}
