//! Contested keys, as the loop keeps them between passes: each key's policy writes and
//! reverts go with its passes and come back with their outcomes; a change event names
//! who last wrote a key's policy. See [`crate::core::contest`].

use super::{Daemon, Reconciler};
use crate::core::model::KeyArn;
use crate::shell::reconcile::Outcome;

impl<R: Reconciler> Daemon<R> {
    /// Takes in what a pass over `current` left of its keys' contests, and counts the
    /// keys it found contested.
    pub(super) fn take_contests(&mut self, current: &[KeyArn], outcome: &mut Outcome) {
        for key in current {
            match outcome.contests.keys.remove(key) {
                Some(c) => self.contests.keys.insert(key.clone(), c),
                None => self.contests.keys.remove(key),
            };
        }
        for _ in outcome.contests_begun.iter().filter(|k| current.contains(k)) {
            self.report.metrics.key_policy_contests.inc();
        }
        // Keys that left the config: forgotten (the set is built only when there is
        // something to forget from, not at every pass of a fleet with no contest).
        if !self.contests.keys.is_empty() {
            let keys = self.config.keys();
            self.contests.keys.retain(|k, _| keys.contains(k));
        }
    }

    /// A change event says `writer` wrote the policy of `key`: named in the key's
    /// contest, unless it is the operator itself.
    pub(super) fn policy_written_by(&mut self, key: &KeyArn, writer: &str) {
        let mut own: Vec<String> = self.config.file.accounts.values().cloned().collect();
        if let super::Connection::Up(client) = &self.connection {
            own.extend(self.reconciler.identities(client));
        }
        if own.iter().any(|o| crate::core::events::same_identity(o, writer)) {
            return;
        }
        self.contests.keys.entry(key.clone()).or_default().writer = Some(writer.to_owned());
    }
}
