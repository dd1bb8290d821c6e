//! Contested keys: another writer (Terraform's `aws_kms_key_policy`, CloudFormation's
//! `KeyPolicy`) replaces a whole key policy and so deletes the statements the operator
//! wrote. Writing them back at every pass would fight it forever: a CloudTrail entry and
//! a window of failing launches each round, and nothing telling the user that the fix is
//! to put the statements into that writer's code. Pure.
//!
//! A *revert* is a binding whose access the operator's last write of its key added,
//! found missing again by a later observation. After the second revert within
//! [`WINDOW`], the key is contested: its bindings' `KeyPolicyReady` is False with reason
//! `Contested`, and writes to it back off exponentially, from the base interval (the
//! daemon's resync) up to [`MAX_BACKOFF`], doubling with each further revert. Once the
//! writer's own policy grants the access, the key is ready with nothing written, and the
//! contest is over; so it is once a write of the operator's has stood for [`WINDOW`].

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::{BindingId, KeyArn};

/// Reverts older than this no longer count.
pub const WINDOW: u64 = 3600;
/// The longest a contested key's writes are held back.
pub const MAX_BACKOFF: u64 = 3600;
/// How many reverts within [`WINDOW`] make a key contested.
pub const REVERTS: usize = 2;

/// What the operator remembers of one key's policy writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contest {
    /// When the operator last wrote the key's policy to add access.
    pub last_write: Option<u64>,
    /// The bindings that write added access for, until an observation finds them missing
    /// again (or the next write): empty when nothing was written since the last revert.
    wrote_for: BTreeSet<BindingId>,
    /// When reverts were found: those within [`WINDOW`] of the latest while the key is not
    /// contested, every one of the contest while it is.
    reverts: Vec<u64>,
    /// Whether the key is contested.
    contested: bool,
    /// Who last wrote the key's policy besides the operator, as change events name them
    /// (CloudTrail's `userIdentity.arn`).
    pub writer: Option<String>,
}

impl Contest {
    /// The reverts counted: those of the contest, or those within the hour before it.
    pub fn reverts(&self) -> usize {
        self.reverts.len()
    }

    pub fn contested(&self) -> bool {
        self.contested
    }

    /// How long writes wait after the last one: `base` at the second revert, doubling
    /// with each further one, up to [`MAX_BACKOFF`]. None while not contested.
    pub fn backoff(&self, base: u64) -> Option<u64> {
        let extra = self.reverts.len().checked_sub(REVERTS).filter(|_| self.contested)?;
        let doubled = base.max(1).saturating_mul(1u64 << extra.min(20) as u32);
        Some(doubled.min(MAX_BACKOFF))
    }

    /// When the next write to the key may be made: now, unless it is contested and its
    /// backoff since the last write has not passed.
    pub fn write_at(&self, now: u64, base: u64) -> u64 {
        match (self.backoff(base), self.last_write) {
            (Some(b), Some(last)) => last + b,
            _ => now,
        }
    }

    /// Who to name as the other writer.
    pub fn writer_name(&self) -> &str {
        self.writer.as_deref().unwrap_or("another writer")
    }

    /// A revert found at `now`; whether it begins a contest.
    fn reverted(&mut self, now: u64) -> bool {
        self.wrote_for.clear();
        if !self.contested {
            self.reverts.retain(|&t| t + WINDOW > now);
        }
        self.reverts.push(now);
        let begins = !self.contested && self.reverts.len() >= REVERTS;
        self.contested |= begins;
        begins
    }

    /// The key's bindings are all allowed at `now`: the contest ends when the writer's own
    /// policy grants the access (nothing written since the last revert), or when the
    /// operator's last write has stood for [`WINDOW`].
    fn allowed(&mut self, now: u64) {
        let written = !self.wrote_for.is_empty();
        let own_policy = !self.reverts.is_empty() && !written;
        let stood = written && self.last_write.is_some_and(|w| w + WINDOW <= now);
        if own_policy || (self.contested && stood) {
            self.reverts.clear();
            self.contested = false;
        }
    }
}

/// The base of the backoff when nothing sets it: the daemon's default resync interval.
pub const DEFAULT_BASE: u64 = 300;

/// What one observation found of one binding's access in its key policy
/// (`crate::core::judge::policy_seen` makes these of a judgement).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub binding: &'a BindingId,
    /// The policy lets the binding's principal in (`KeyPolicyReady` True).
    pub allowed: bool,
    /// The policy lacks what the binding needs, and a write of it would add it
    /// (`KeyPolicyReady` Missing or Contested).
    pub missing: bool,
}

/// Every key's [`Contest`], with the base of the backoff (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contests {
    pub keys: BTreeMap<KeyArn, Contest>,
    pub base: u64,
}

impl Default for Contests {
    fn default() -> Self {
        Contests::new(DEFAULT_BASE)
    }
}

impl Contests {
    pub fn new(base: u64) -> Self {
        Contests { keys: BTreeMap::new(), base }
    }

    pub fn get(&self, key: &KeyArn) -> Option<&Contest> {
        self.keys.get(key)
    }

    /// The key's contest while it is contested.
    pub fn contested(&self, key: &KeyArn) -> Option<&Contest> {
        self.keys.get(key).filter(|c| c.contested())
    }

    /// The operator wrote the policy of each binding's key (as the binding names it) at
    /// `now`, to add their access.
    pub fn wrote<'a>(&mut self, bindings: impl IntoIterator<Item = &'a BindingId>, now: u64) {
        for b in bindings {
            let c = self.keys.entry(b.key.clone()).or_default();
            c.last_write = Some(now);
            c.wrote_for.insert(b.clone());
        }
    }

    /// Takes in an observation made at `now`: a binding the last write added access for
    /// that is missing it again is a revert (one per write). A key whose bindings are all
    /// allowed ends its contest when nothing was written since the last revert, or the
    /// last write has stood for [`WINDOW`]. Returns the keys that became contested.
    pub fn take_in<'a>(&mut self, seen: impl IntoIterator<Item = Seen<'a>>, now: u64) -> Vec<KeyArn> {
        let mut begun = Vec::new();
        let mut allowed: BTreeMap<&KeyArn, bool> = BTreeMap::new();
        for s in seen {
            *allowed.entry(&s.binding.key).or_insert(true) &= s.allowed;
            let Some(contest) = self.keys.get_mut(&s.binding.key) else { continue };
            if s.missing && contest.wrote_for.contains(s.binding) && contest.reverted(now) {
                begun.push(s.binding.key.clone());
            }
        }
        for (key, ok) in allowed {
            if let Some(c) = self.keys.get_mut(key).filter(|_| ok) {
                c.allowed(now);
            }
        }
        begun
    }

    /// Keeps only the keys of `keep`.
    pub fn only(&self, keep: &[KeyArn]) -> Contests {
        let keys = self.keys.iter().filter(|(k, _)| keep.contains(k)).map(|(k, c)| (k.clone(), c.clone())).collect();
        Contests { keys, base: self.base }
    }
}

#[cfg(test)]
mod tests;
