//! The status board: every binding's latest judgement, as the daemon's passes report
//! them, and where each binding stands.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::core::judge::{Judged, Standing as VerdictStanding};
use crate::core::model::BindingId;

/// Where one binding stands on the [`StatusBoard`]: its verdict's standing, or pending
/// when no pass has reported on it as it is now configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Its group can launch with its key.
    Ready,
    /// Not ready, for a reason the operator cannot write away now.
    Failed,
    /// Not ready, waiting for someone else's work (a key's owner, an image copy) or for
    /// a read the daemon owes it.
    Waiting,
    /// No pass has reported on it as it is now configured.
    Pending,
}

impl Standing {
    /// The `state` label of the `bindings` gauge.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Ready => "ready",
            Standing::Failed => "failed",
            Standing::Waiting => "waiting",
            Standing::Pending => "pending",
        }
    }

    pub const ALL: [Standing; 4] = [Standing::Ready, Standing::Failed, Standing::Waiting, Standing::Pending];

    fn of(judged: Option<&Judged>) -> Standing {
        match judged.map(|j| j.verdict.standing()) {
            Some(VerdictStanding::Ready) => Standing::Ready,
            Some(VerdictStanding::Failed(..)) => Standing::Failed,
            Some(VerdictStanding::Waiting(_)) => Standing::Waiting,
            // Writes still under way when the pass ended are the pass's to report as
            // failed; a judgement that says so here was not concluded.
            Some(VerdictStanding::Converging) | None => Standing::Pending,
        }
    }
}

/// Bindings counted by where they stand on the [`StatusBoard`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ready: usize,
    pub failed: usize,
    pub waiting: usize,
    pub pending: usize,
}

impl Tally {
    pub fn of(standings: impl IntoIterator<Item = Standing>) -> Tally {
        let mut t = Tally::default();
        for s in standings {
            *t.count(s) += 1;
        }
        t
    }

    fn count(&mut self, s: Standing) -> &mut usize {
        match s {
            Standing::Ready => &mut self.ready,
            Standing::Failed => &mut self.failed,
            Standing::Waiting => &mut self.waiting,
            Standing::Pending => &mut self.pending,
        }
    }

    /// How many stand at `s`.
    pub fn get(mut self, s: Standing) -> usize {
        *self.count(s)
    }
}

/// Whether the last edit of the config file was taken in: `/status` says so, so a
/// rejected edit (the group it onboards never onboarded) shows where monitoring looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigState {
    #[default]
    Valid,
    /// The last edit was refused: the first error, where it is, how many there were,
    /// and since when (Unix seconds). The last good config stands.
    Invalid { error: String, location: String, errors: usize, since: u64 },
}

/// Every binding's latest judgement, served on `/status`. The document is written when
/// it is asked for, not after every pass.
#[derive(Debug, Default)]
pub struct StatusBoard {
    judged: std::sync::RwLock<BTreeMap<BindingId, Judged>>,
    /// Whether a pass has reported yet: before that the document says so.
    reported: AtomicBool,
    /// Why the config file cannot be read, while it cannot: the document says so.
    config_unreadable: std::sync::RwLock<Option<String>>,
    /// Whether the last edit was taken in.
    config: std::sync::RwLock<ConfigState>,
    /// Accesses prune keeps because a group still launches through them, by key.
    prunes_held: std::sync::RwLock<BTreeMap<String, Vec<String>>>,
}

impl StatusBoard {
    /// Takes in a pass's judgements (which carry over what the pass did not read from the
    /// judgements it was given: see [`crate::core::judge::Context::prior`]).
    pub fn update(&self, judged: Vec<Judged>) {
        let mut all = self.judged.write().expect("status lock");
        for j in judged {
            all.insert(j.binding.clone(), j);
        }
        self.reported.store(true, Ordering::Relaxed);
    }

    /// Forgets the bindings the config no longer has.
    pub fn retain(&self, bound: impl Fn(&BindingId) -> bool) {
        self.judged.write().expect("status lock").retain(|b, _| bound(b));
    }

    /// The last judgements of `bindings`, for a pass over them to carry over.
    pub fn prior<'a>(&self, bindings: impl IntoIterator<Item = &'a BindingId>) -> BTreeMap<BindingId, Judged> {
        let all = self.judged.read().expect("status lock");
        bindings.into_iter().filter_map(|b| all.get(b).map(|j| (b.clone(), j.clone()))).collect()
    }

    /// Where the `bound` bindings stand.
    pub fn tally<B: std::borrow::Borrow<BindingId>>(&self, bound: impl IntoIterator<Item = B>) -> Tally {
        Tally::of(self.standings(bound).into_iter().map(|(_, s)| s))
    }

    /// Each of the `bound` bindings, with where it stands.
    pub fn standings<B: std::borrow::Borrow<BindingId>>(
        &self,
        bound: impl IntoIterator<Item = B>,
    ) -> Vec<(B, Standing)> {
        let all = self.judged.read().expect("status lock");
        bound
            .into_iter()
            .map(|b| {
                let standing = Standing::of(all.get(b.borrow()));
                (b, standing)
            })
            .collect()
    }

    /// The last judgement of one binding.
    pub fn get_judged(&self, b: &BindingId) -> Option<Judged> {
        self.judged.read().expect("status lock").get(b).cloned()
    }

    /// Sets whether the last edit of the config was taken in. An edit refused while
    /// another refusal stands keeps the earlier `since`.
    pub fn set_config(&self, state: ConfigState) {
        let mut now = self.config.write().expect("status lock");
        *now = match (&*now, state) {
            (ConfigState::Invalid { since, .. }, ConfigState::Invalid { error, location, errors, .. }) => {
                ConfigState::Invalid { error, location, errors, since: *since }
            }
            (_, state) => state,
        };
    }

    /// What a pass over `key` kept from prune for a group that still launches (none:
    /// clears it).
    pub fn set_prunes_held(&self, key: &str, held: Vec<String>) {
        let mut all = self.prunes_held.write().expect("status lock");
        match held.is_empty() {
            true => all.remove(key),
            false => all.insert(key.to_owned(), held),
        };
    }

    /// Sets or clears why the config file cannot be read.
    pub fn set_config_unreadable(&self, error: Option<String>) {
        *self.config_unreadable.write().expect("status lock") = error;
    }

    /// The document, or an empty one before the first pass, with a `config` object
    /// saying whether the last edit was taken in; while the config file cannot be read,
    /// with a `configFile` object saying why.
    pub fn get(&self) -> String {
        let doc = if !self.reported.load(Ordering::Relaxed) {
            r#"{"ready": false, "bindings": []}"#.to_owned()
        } else {
            super::document(self.judged.read().expect("status lock").values())
        };
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("the status document is JSON");
        v["config"] = match self.config.read().expect("status lock").clone() {
            ConfigState::Valid => serde_json::json!({"valid": true}),
            ConfigState::Invalid { error, location, errors, since } => serde_json::json!({
                "valid": false, "error": error, "location": location, "errors": errors,
                "since": super::rfc3339(since), "using": "the last good config",
            }),
        };
        if let Some(error) = self.config_unreadable.read().expect("status lock").clone() {
            v["configFile"] = serde_json::json!({"readable": false, "error": error, "using": "the last good config"});
        }
        let held: Vec<String> = self.prunes_held.read().expect("status lock").values().flatten().cloned().collect();
        if !held.is_empty() {
            v["prunesHeld"] = serde_json::json!(held);
        }
        serde_json::to_string_pretty(&v).expect("JSON serialises")
    }
}
