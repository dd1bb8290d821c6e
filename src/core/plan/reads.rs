//! What a pass reads: derived from the desired state, one read per role, per key, per
//! key's grants and per hundred groups of an account and Region, however many bindings
//! share them.

use crate::core::model::desired::Desired;
pub use crate::core::model::observed::Depth;
use crate::core::model::observed::Reads;
use crate::core::model::{AccountId, KeyArn};

/// Lists every read a pass needs: one per role, per key, per cross-account key's grants,
/// and per (account, region) for ASGs, however many bindings share them.
pub fn reads(desired: &Desired, caller: &AccountId, depth: Depth) -> Reads {
    let mut r = Reads::default();
    // A selector's group that gets nothing (a key it may not grant) is not read either.
    let live = |b: &&crate::core::model::desired::Binding| {
        desired.unreachable(b, caller).is_none() && b.origin.refused().is_none()
    };
    for b in desired.bindings.iter().filter(live) {
        r.roles.insert(b.slr());
        r.asgs.entry((b.asg.account, b.asg.region.clone())).or_default().insert(b.asg.clone());
        r.accounts.insert(b.asg.account);
        if depth == Depth::Full {
            r.launches.insert(b.asg.clone());
        }
        if let Some(from) = &b.reencrypt_from {
            r.reencrypt.insert(b.asg.clone());
            // The owners of the keys being replaced that the operator acts in: their
            // policies are judged for what a copy needs.
            r.accounts.extend(from.iter().map(|k| *k.account()).filter(|a| desired.accounts.contains_key(a)));
        }
        if desired.is_handoff(b, caller) {
            // An alias cannot name another account's key here: the binding fails (step 1).
            if !b.key.is_alias() {
                r.handoff.entry(b.key.clone()).or_default().insert(b.slr());
            }
            continue;
        }
        r.keys.insert(b.key.clone());
        // Pruning looks for the operator's grants on every key it reads: a key may keep
        // the grant of a cross-account binding that is gone.
        if b.is_cross_account() || desired.operator.prune {
            r.grant_keys.insert(b.key.clone());
        }
        r.accounts.insert(*b.key.account());
    }
    if desired.operator.prune {
        // A key that left the config is read, with its owner's credentials, to prune it.
        for key in desired.operator.departed.iter().filter(|k| departed_readable(k, desired, caller)) {
            r.keys.insert(key.clone());
            r.grant_keys.insert(key.clone());
            r.accounts.insert(*key.account());
        }
    }
    r
}

/// Whether the operator can read a key that left the config, to prune it: its owner is
/// the operator's account or listed under `accounts`. A hand-off key's policy is the
/// owner's to edit.
pub fn departed_readable(key: &KeyArn, desired: &Desired, caller: &AccountId) -> bool {
    desired.reaches(key.account(), caller)
}
