//! Change events, as the loop takes them in: the poller's task (started once connected,
//! restarted when the queue changes), and each batch mapped to what it touches: those
//! units are due now, a tag change sweeps the selectors, and a launch that failed is
//! handed to the group's next pass. Nothing else is read again. A message that touches
//! nothing the config covers, or cannot be read, is dropped and counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Daemon, Reconciler};
use crate::core::events::{self, Templates};
use crate::core::model::desired::Events;
use crate::core::model::{AsgRef, LaunchActivity, LaunchSource};
use crate::shell::aws::events::Batch;
use crate::shell::metrics::ReasonLabel;

/// The poller in flight, and what the loop remembers for the events it maps.
pub(super) struct Inbox {
    rx: mpsc::Receiver<Batch>,
    task: JoinHandle<()>,
    /// The queue the poller receives from.
    queue: Events,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What events leave for the passes: groups by the templates they launch from, and
/// failed launches reported by events, for the next pass over their groups.
#[derive(Default)]
pub(super) struct EventState {
    pub inbox: Option<Inbox>,
    pub templates: Templates,
    sources: BTreeMap<AsgRef, Vec<String>>,
    pub launches: BTreeMap<AsgRef, LaunchActivity>,
}

impl EventState {
    /// Takes in where the groups a pass read launch from.
    pub fn learn_sources(&mut self, read: &BTreeMap<AsgRef, Vec<LaunchSource>>) {
        for (asg, sources) in read {
            for old in self.sources.remove(asg).unwrap_or_default() {
                if let Some(groups) = self.templates.get_mut(&old) {
                    groups.remove(asg);
                }
            }
            let keys = events::template_keys(sources);
            for k in &keys {
                self.templates.entry(k.clone()).or_default().insert(asg.clone());
            }
            self.sources.insert(asg.clone(), keys);
        }
        self.templates.retain(|_, groups| !groups.is_empty());
    }
}

/// Resolves with the next batch; never while no poller runs.
pub(super) async fn recv(state: &mut EventState) -> Option<Batch> {
    match &mut state.inbox {
        Some(inbox) => inbox.rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<R: Reconciler> Daemon<R> {
    /// The queue of change events: `--events-queue`, else the config's `events`.
    pub(super) fn events_queue(&self) -> Option<Events> {
        let file = &self.config.file;
        let Some(url) = &self.settings.events_queue else { return file.events.clone() };
        let region = file.events.as_ref().map(|e| e.region.clone());
        let region = region.or_else(|| file.bindings.first().map(|b| b.asg.region.clone()));
        let region = region.or_else(|| file.selectors.first().map(|s| s.regions[0].clone()));
        match Events::parse(url, None).or_else(|e| region.as_deref().map_or(Err(e), |r| Events::parse(url, Some(r)))) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "--events-queue cannot be used; no events are received");
                None
            }
        }
    }

    /// Starts the poller once connected, and again when the queue changes; stops it when
    /// the queue is no longer configured.
    pub(super) fn start_events(&mut self, client: Arc<R::Client>) {
        let queue = self.events_queue();
        let running = self.events.inbox.as_ref().map(|i| &i.queue);
        if running == queue.as_ref() {
            return;
        }
        self.events.inbox = None;
        self.report.metrics.events_configured.set(i64::from(queue.is_some()));
        let Some(queue) = queue else { return };
        let (tx, rx) = mpsc::channel(4);
        let role = self.config.file.accounts.get(&queue.account).cloned();
        let poll = self.reconciler.poll_events(client, queue.clone(), role, tx, self.report.metrics.clone());
        self.events.inbox = Some(Inbox { rx, task: tokio::spawn(poll), queue });
    }

    /// Takes in a batch of events: what each touches is due now.
    pub(super) fn on_events(&mut self, batch: Batch) {
        let now = Instant::now();
        let metrics = self.report.metrics.clone();
        for body in &batch.bodies {
            metrics.events_received.inc();
            let touch = events::parse(body).and_then(|e| {
                match events::touches(&e, &self.config.desired, &self.events.templates) {
                    Ok(t) => Ok((e, t)),
                    Err(d) => Err((d, e.id)),
                }
            });
            let (e, t) = match touch {
                Ok(found) => found,
                Err((reason, id)) => {
                    metrics.events_dropped.get_or_create(&ReasonLabel { reason: reason.as_str().into() }).inc();
                    tracing::debug!(event = %id, reason = reason.as_str(), "event dropped");
                    continue;
                }
            };
            metrics.events_last.set(crate::shell::metrics::unix_now());
            tracing::debug!(event = %e.id, keys = t.keys.len(), sweep = t.sweep, "event: its units are due now");
            for k in &t.keys {
                self.scheduler.schedule(k.clone(), now);
                if let Some(writer) = &e.policy_writer {
                    self.policy_written_by(k, writer);
                }
            }
            if t.sweep {
                self.sweeps.next_at = now;
            }
            if let Some((asg, activity)) = t.launch {
                self.events.launches.insert(asg, activity);
            }
        }
        // The poller deletes the batch now that what it touches is scheduled.
        let _ = batch.scheduled.send(());
    }
}
