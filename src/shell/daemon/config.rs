//! The daemon's config generations: the desired state in force, its units of work, which
//! keys each edit changed, and the guard against pruning by accident over a whole edit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core::model::desired::{Binding, Desired, Operator};
use crate::core::model::{BindingId, KeyArn};
use crate::core::units::Units;

/// The desired state and what the daemon knows of each binding.
pub(super) struct Config {
    /// The config file as last read and found valid: its bindings and its selectors.
    pub file: Arc<Desired>,
    /// What is in force: the file's bindings and those its selectors' last sweep found.
    pub desired: Arc<Desired>,
    pub units: Units,
    /// The file's text as last read, to tell a real edit from a touch.
    pub last_text: String,
    /// Every binding of `desired`. Where each stands is its judgement on the board, the
    /// one answer `/status` and the `bindings` gauge both give.
    pub bound: BTreeSet<BindingId>,
    /// Counts the configs applied; a pass records the one it started from.
    pub generation: u64,
    /// The generation in which each key's bindings last changed.
    pub changed_in: BTreeMap<KeyArn, u64>,
    /// Whether the last look found the file unreadable (deleted, say).
    pub unreadable: bool,
    /// The last config whose edit the mass-prune guard let prune: an edit is weighed
    /// against it, so a cut made in several quick edits counts as one.
    pub prune_baseline: Arc<Desired>,
    /// Keys no binding names any more, seen to leave while pruning: each is read and
    /// pruned in a pass of its own until nothing this instance wrote is left on it.
    pub departed: BTreeSet<KeyArn>,
}

/// What an edit changes, for the daemon to act on.
pub(super) struct Edit {
    /// Keys whose bindings were added or changed (see [`changed_keys`]).
    pub changed: BTreeSet<KeyArn>,
    /// Keys that left the config while pruning, newly owed a pass that prunes them.
    pub departed: Vec<KeyArn>,
    /// Every key the daemon still reads: the config's and the departed ones.
    pub keys: BTreeSet<KeyArn>,
    /// The groups no binding names any more.
    pub gone_groups: Vec<crate::core::model::AsgRef>,
}

impl Config {
    pub fn new(desired: Desired, last_text: String) -> Self {
        Config {
            bound: desired.bindings.iter().map(|b| b.id()).collect(),
            units: Units::of(&desired),
            prune_baseline: Arc::new(desired.clone()),
            file: Arc::new(desired.clone()),
            departed: BTreeSet::new(),
            desired: Arc::new(desired),
            last_text,
            generation: 0,
            changed_in: BTreeMap::new(),
            unreadable: false,
        }
    }

    /// Whether a pass started from `generation` still speaks for `key`: the key is in the
    /// config and its bindings have not changed since.
    pub fn current(&self, key: &KeyArn, generation: u64) -> bool {
        !self.units.unit_of(key).is_empty() && self.changed_in.get(key).is_none_or(|g| *g <= generation)
    }

    /// The units of work for `desired`, with each departed key in a unit of its own.
    pub fn set_units(&mut self, desired: &Desired) {
        self.units = Units::of(desired).with_lone(&self.departed);
    }

    pub fn keys(&self) -> BTreeSet<KeyArn> {
        self.desired.bindings.iter().map(|b| b.key.clone()).collect()
    }

    /// The part of the config a pass over `keys` plans: their bindings, the departed keys
    /// among them, and the whole config's count of bindings, which the prune guard weighs
    /// against (a unit alone would make every offboarding look like a mass one).
    pub fn subset(&self, keys: &[KeyArn]) -> Desired {
        let wanted: BTreeSet<&KeyArn> = keys.iter().collect();
        let desired = &self.desired;
        let mut operator = desired.operator.clone();
        operator.departed = self.departed.iter().filter(|k| wanted.contains(k)).cloned().collect();
        Desired {
            accounts: desired.accounts.clone(),
            bindings: desired.bindings.iter().filter(|b| wanted.contains(&b.key)).cloned().collect(),
            selectors: Vec::new(),
            events: None,
            operator,
        }
    }

    /// The guard against pruning by accident, over the whole edit: a pass plans one unit
    /// and sees only its key's prunes, so a cut spread over many keys is weighed here,
    /// against the last config the guard let prune. Returns whether the hold started
    /// (Some(true)) or lifted (Some(false)).
    pub fn hold_mass_prune(&self, new: &mut Desired) -> Option<bool> {
        new.operator.prune_held = crate::core::plan::edit_prune_hold(&self.prune_baseline, new);
        let was = self.desired.operator.prune_held.is_some();
        match &new.operator.prune_held {
            Some(_) if !was && !new.bindings.is_empty() => Some(true),
            None if was => Some(false),
            _ => None,
        }
    }

    /// Takes in a valid edit: the new generation, its units, and the keys it changed or
    /// left to prune.
    pub fn apply(&mut self, new: Desired) -> Edit {
        let changed = changed_keys(&self.desired, &new);
        self.generation += 1;
        for k in &changed {
            self.changed_in.insert(k.clone(), self.generation);
        }
        let named: BTreeSet<KeyArn> = new.bindings.iter().map(|b| b.key.clone()).collect();
        let departed = self.note_departed(&new, &named);
        self.set_units(&new);
        let units = &self.units;
        self.changed_in.retain(|k, _| !units.unit_of(k).is_empty());
        let keys: BTreeSet<KeyArn> = named.union(&self.departed).cloned().collect();
        let groups: BTreeSet<_> = new.bindings.iter().map(|b| &b.asg).collect();
        let mut gone_groups: Vec<_> =
            self.desired.bindings.iter().map(|b| &b.asg).filter(|a| !groups.contains(a)).cloned().collect();
        gone_groups.dedup();
        self.bound = new.bindings.iter().map(|b| b.id()).collect();
        self.desired = Arc::new(new);
        if self.desired.operator.prune_held.is_none() {
            self.prune_baseline = self.desired.clone();
        }
        Edit { changed, departed, keys, gone_groups }
    }

    /// The bindings of `new` that are new or changed (a role suffix edited): their last
    /// judgement was about what they were.
    pub fn fresh(&self, new: &Desired) -> BTreeSet<BindingId> {
        let before: BTreeSet<&Binding> = self.desired.bindings.iter().collect();
        new.bindings.iter().filter(|b| !before.contains(b)).map(|b| b.id()).collect()
    }

    /// With pruning on and not held, the keys the edit leaves no binding on (against the
    /// last config the guard let prune) are owed a pass that prunes them; a key named
    /// again is not. With pruning off, none is. Returns the keys newly departed.
    fn note_departed(&mut self, new: &Desired, named: &BTreeSet<KeyArn>) -> Vec<KeyArn> {
        if !new.operator.prune {
            self.departed.clear();
            return Vec::new();
        }
        self.departed.retain(|k| !named.contains(k));
        if new.operator.prune_held.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for b in self.prune_baseline.bindings.iter().filter(|b| !named.contains(&b.key)) {
            if self.departed.insert(b.key.clone()) {
                out.push(b.key.clone());
            }
        }
        out
    }

    /// Keys that left the config and are settled (nothing left to prune, or given up):
    /// no longer read.
    pub fn forget_departed(&mut self, keys: &[KeyArn]) {
        for k in keys {
            self.departed.remove(k);
        }
        let desired = self.desired.clone();
        self.set_units(&desired);
    }
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
