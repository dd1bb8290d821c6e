//! The status board: every binding's latest status, as the daemon's passes report them,
//! and where each binding stands.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::BindingStatus;
use crate::core::model::BindingId;

/// Where one binding stands on the [`StatusBoard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Its group can launch with its key.
    Ready,
    /// Not ready, and not only for want of a key owner's change.
    Failed,
    /// Not ready only because a hand-off key's owner has not acted yet.
    AwaitingOwner,
    /// No pass has reported on it as it is now configured, or AWS is still at work for it
    /// (an image copy).
    Pending,
}

/// Bindings counted by where they stand on the [`StatusBoard`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ready: usize,
    /// Not ready, and not only for want of a key owner's change.
    pub not_ready: usize,
    pub pending: usize,
    /// Not ready only because a hand-off key's owner has not acted yet.
    pub awaiting_owner: usize,
}

impl Tally {
    pub fn of(standings: impl IntoIterator<Item = Standing>) -> Tally {
        let mut t = Tally::default();
        for s in standings {
            match s {
                Standing::Ready => t.ready += 1,
                Standing::Failed => t.not_ready += 1,
                Standing::AwaitingOwner => t.awaiting_owner += 1,
                Standing::Pending => t.pending += 1,
            }
        }
        t
    }
}

/// Every binding's latest status, served on `/status`. The document is written when it
/// is asked for, not after every pass.
#[derive(Debug, Default)]
pub struct StatusBoard {
    statuses: std::sync::RwLock<BTreeMap<BindingId, BindingStatus>>,
    /// Whether a pass has reported yet: before that the document says so.
    reported: AtomicBool,
    /// Why the config file cannot be read, while it cannot: the document says so.
    config_unreadable: std::sync::RwLock<Option<String>>,
}

impl StatusBoard {
    /// Takes in a pass's statuses, keeping each condition's transition time while its
    /// status holds and, on a quick pass, the launches last read.
    pub fn update(&self, statuses: Vec<BindingStatus>) {
        let mut all = self.statuses.write().expect("status lock");
        for mut s in statuses {
            if let Some(before) = all.get(&s.binding) {
                s.carry_over(before);
            }
            all.insert(s.binding.clone(), s);
        }
        self.reported.store(true, Ordering::Relaxed);
    }

    /// Forgets the bindings the config no longer has.
    pub fn retain(&self, bound: impl Fn(&BindingId) -> bool) {
        self.statuses.write().expect("status lock").retain(|b, _| bound(b));
    }

    /// Where the `bound` bindings stand: ready, not ready, or not reported on yet.
    pub fn tally<B: std::borrow::Borrow<BindingId>>(&self, bound: impl IntoIterator<Item = B>) -> Tally {
        Tally::of(self.standings(bound).into_iter().map(|(_, s)| s))
    }

    /// Each of the `bound` bindings, with where it stands.
    pub fn standings<B: std::borrow::Borrow<BindingId>>(
        &self,
        bound: impl IntoIterator<Item = B>,
    ) -> Vec<(B, Standing)> {
        let all = self.statuses.read().expect("status lock");
        bound
            .into_iter()
            .map(|b| {
                let standing = match all.get(b.borrow()) {
                    Some(s) if s.ready() => Standing::Ready,
                    Some(s) if s.awaiting_owner() => Standing::AwaitingOwner,
                    // An image copy AWS is making: not failed, not done.
                    Some(s) if s.in_progress() => Standing::Pending,
                    Some(_) => Standing::Failed,
                    None => Standing::Pending,
                };
                (b, standing)
            })
            .collect()
    }

    /// Whether any of `bindings` has a status whose group's launches no pass has read.
    pub fn launches_unread<B: std::borrow::Borrow<BindingId>>(&self, bindings: impl IntoIterator<Item = B>) -> bool {
        let all = self.statuses.read().expect("status lock");
        bindings.into_iter().any(|b| all.get(b.borrow()).is_some_and(BindingStatus::launches_unread))
    }

    /// Whether the binding's last status said it awaits its key's owner.
    pub fn awaiting_owner(&self, b: &BindingId) -> bool {
        self.statuses.read().expect("status lock").get(b).is_some_and(BindingStatus::awaiting_owner)
    }

    /// Sets or clears why the config file cannot be read.
    pub fn set_config_unreadable(&self, error: Option<String>) {
        *self.config_unreadable.write().expect("status lock") = error;
    }

    /// The document, or an empty one before the first pass; while the config file cannot
    /// be read, with a `configFile` object saying why.
    pub fn get(&self) -> String {
        let doc = if !self.reported.load(Ordering::Relaxed) {
            r#"{"ready": false, "bindings": []}"#.to_owned()
        } else {
            super::document(self.statuses.read().expect("status lock").values())
        };
        let Some(error) = self.config_unreadable.read().expect("status lock").clone() else { return doc };
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("the status document is JSON");
        v["configFile"] = serde_json::json!({"readable": false, "error": error, "using": "the last good config"});
        serde_json::to_string_pretty(&v).expect("JSON serialises")
    }
}
