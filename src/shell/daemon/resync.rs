//! Full resyncs: when the next one is due, the keys still owed their full pass in the
//! current one, and whether one has finished (the first makes the daemon ready).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::model::KeyArn;

pub(super) struct Resync {
    pub every: Duration,
    pub next_at: Instant,
    pub owed: BTreeSet<KeyArn>,
    /// Whether a resync is under way: started, and not every key has had its full pass.
    active: bool,
    /// Full passes of the current resync still in flight.
    in_flight: usize,
    /// Whether a full pass of the current resync had a transient failure.
    troubled: bool,
    pub first_done: bool,
}

/// How a resync ended.
pub(super) struct Ended {
    /// No full pass of it had a transient failure.
    pub clean: bool,
    /// It was the first: the daemon is ready.
    pub first: bool,
}

impl Resync {
    pub fn new(every: Duration, now: Instant) -> Self {
        Resync {
            every,
            next_at: now,
            owed: BTreeSet::new(),
            active: false,
            in_flight: 0,
            troubled: false,
            first_done: false,
        }
    }

    /// Starts a resync if one is due: every key is owed a full pass. Returns the keys.
    pub fn start_if_due(&mut self, now: Instant, keys: BTreeSet<KeyArn>) -> Option<&BTreeSet<KeyArn>> {
        if self.next_at > now {
            return None;
        }
        self.next_at = now + self.every;
        self.owed = keys;
        self.troubled = false;
        self.active = true;
        Some(&self.owed)
    }

    /// A full pass over `keys` starts.
    pub fn pass_started(&mut self, keys: &[KeyArn]) {
        for k in keys {
            self.owed.remove(k);
        }
        self.in_flight += 1;
    }

    /// A full pass ended, troubled by a transient failure or not.
    pub fn pass_ended(&mut self, troubled: bool) {
        self.in_flight -= 1;
        self.troubled |= troubled;
    }

    /// Keys that left the config are owed no full pass.
    pub fn retain(&mut self, keys: &BTreeSet<KeyArn>) {
        self.owed.retain(|k| keys.contains(k));
    }

    /// Ends the current resync once every key has had its full pass.
    pub fn end_if_paid(&mut self) -> Option<Ended> {
        if !self.active || !self.owed.is_empty() || self.in_flight > 0 {
            return None;
        }
        self.active = false;
        let first = !self.first_done;
        self.first_done = true;
        Some(Ended { clean: !self.troubled, first })
    }
}
