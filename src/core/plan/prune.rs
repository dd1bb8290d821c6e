//! The prune step (`prune` on): what this instance wrote that no binding of the config
//! explains any more, and the guard against pruning by accident.

use std::collections::{BTreeMap, BTreeSet};

use super::change::{Change, PlannedChange};
use super::reads::departed_readable;
use super::spare::{Spared, Sparing};
use crate::core::judge::key_principal;
use crate::core::model::desired::{Desired, Operator};
use crate::core::model::observed::{Observed, UsersWanted};
use crate::core::model::{AccountId, AsgRef, Failure, Instance, KeyArn, Slr};
use crate::core::naming::{is_operators_grant, operators_grant_account};
use crate::core::policy::{self, PolicyDocument, PrincipalIds};

/// What the prune step found (see [`find_prunes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Accesses it removes in this plan (a principal from a key's statements, or a grant
    /// whose account keeps no principal removed on that key).
    pub pruned: usize,
    /// Why nothing is pruned although something would be: the guard against pruning by
    /// accident holds it until it is confirmed.
    pub held: Option<String>,
    /// Said once wherever something is pruned: what pruning leaves as it is.
    pub notes: Vec<String>,
    /// Keys no binding names any more (`departed`) that could not be read: whether
    /// anything is left to prune on them is not known.
    pub unread: BTreeMap<KeyArn, Failure>,
    /// Accesses no binding needs that are kept, because a group still launches with the
    /// key through them (or whether one does could not be read).
    pub spared: Vec<Spared>,
    /// Places whose groups must be read before the rest can be pruned: until they are,
    /// nothing there is pruned.
    pub need_users: BTreeMap<(AccountId, String), UsersWanted>,
}

/// What pruning never does, said as a note with every prune.
pub const PRUNE_LEAVES: &str = "a removed group's ServiceLinkedRoleARN is not reverted, and no service-linked role is deleted: the group and its role are the group owner's";

/// Principals to prune from the instance's statements, by key (its own ARN), each with
/// the reason.
pub(super) type Pruned = BTreeMap<KeyArn, Vec<(String, String)>>;

/// What the prune step found.
#[derive(Debug, Default)]
pub(super) struct Prunes {
    pub principals: Pruned,
    /// RetireGrant changes, made for no binding.
    pub grants: Vec<PlannedChange>,
    pub report: PruneReport,
}

/// The prune step (`prune` on): on each key whose policy this pass read, the principals
/// in this instance's statements that no binding of the config explains, and this
/// instance's grants for a role that no binding needs on that key. Derived from what AWS
/// shows, not from memory: a binding removed while the operator was down is found too.
///
/// Each access found is pruned only when no group of its account and Region still
/// launches with the key through it ([`Sparing`]): the groups there are read first
/// (`need_users`), and an access a group still uses is kept and named (`spared`), whatever
/// the guard below allows.
///
/// Guard: nothing is pruned, unless mass pruning is allowed, when the daemon found that
/// the edit that led here removes more than half of the bindings (`prune_held`), when
/// the accesses pruned outnumber the bindings the whole config keeps, or when it keeps
/// none. Each access pruned is a role's use of a key that at least one removed binding
/// had, so that count never overstates the bindings removed. The report says why.
pub(super) fn find_prunes(desired: &Desired, observed: &Observed, caller: &AccountId) -> Prunes {
    let mut out = Prunes::default();
    let op = &desired.operator;
    if !op.prune {
        return out;
    }
    let explained = Explained::of(desired, observed, caller);
    let mut sparing = Sparing::default();
    for key in &op.departed {
        if !departed_readable(key, desired, caller) {
            out.report.notes.push(format!(
                "no binding names {key} any more, and its owner's account is not under `accounts`: what this instance wrote on it stays for its owner to remove"
            ));
        } else if let Some(f) = read_failure(key, observed) {
            out.report.unread.insert(key.clone(), f);
        }
    }
    let mut count = 0;
    for (key, text) in &observed.key_policies {
        let Ok(text) = text else { continue };
        if explained.unsure.contains(&(*key.account(), key.region().to_owned())) {
            continue;
        }
        let Ok(doc) = PolicyDocument::parse(text) else { continue };
        let mut gone = unexplained_principals(&doc, key, &explained, &op.instance);
        gone.retain(|(p, _)| sparing.may_prune(observed, key, p, None));
        count += gone.len();
        let seen = Seen { desired, observed, explained: &explained, caller };
        count += prune_grants(key, &gone, &seen, &mut out, &mut sparing);
        if !gone.is_empty() {
            out.principals.insert(key.clone(), gone);
        }
    }
    out.report.spared = sparing.spared;
    out.report.need_users = sparing.need;
    if let Some(why) = prune_guard(op, count) {
        out.report.held = Some(why);
        out.principals.clear();
        out.grants.clear();
        return out;
    }
    if count > 0 {
        out.report.pruned = count;
        out.report.notes.push(PRUNE_LEAVES.to_owned());
    }
    out
}

/// Why what a key holds could not be read, if it could not: its description, its policy
/// or its grants.
fn read_failure(key: &KeyArn, observed: &Observed) -> Option<Failure> {
    let arn = match observed.keys.get(key) {
        Some(Ok(info)) => &info.arn,
        Some(Err(f)) => return Some(f.clone()),
        None => key,
    };
    let policy = observed.key_policies.get(arn).and_then(|r| r.as_ref().err());
    let grants = observed.grants.get(arn).and_then(|r| r.as_ref().err());
    policy.or(grants).cloned()
}

/// What the config's bindings explain, by key (its own ARN).
///
/// A binding explains its key's principal however its pass goes (a failed read of its
/// group does not make its access look unexplained): its group's service-linked role on
/// a key of its own account, its account's root and its role's grant on another's. A key
/// that an alias which could not be described may name is not pruned.
#[derive(Default)]
struct Explained {
    principals: BTreeMap<KeyArn, Vec<PrincipalIds>>,
    /// The roles whose grants are needed on each key.
    roles: BTreeMap<KeyArn, Vec<Slr>>,
    /// (account, region) of aliases that could not be resolved: any key there may be theirs.
    unsure: BTreeSet<(AccountId, String)>,
}

impl Explained {
    fn of(desired: &Desired, observed: &Observed, caller: &AccountId) -> Self {
        let mut out = Explained::default();
        for b in desired.bindings.iter().filter(|b| !desired.is_handoff(b, caller)) {
            let key = match observed.keys.get(&b.key) {
                Some(Ok(info)) => info.arn.clone(),
                _ if !b.key.is_alias() => b.key.clone(),
                _ => {
                    out.unsure.insert((*b.key.account(), b.key.region().to_owned()));
                    continue;
                }
            };
            let slr = b.slr();
            if b.is_cross_account() {
                out.roles.entry(key.clone()).or_default().push(slr.clone());
            }
            let role_id = match observed.roles.get(&(slr.account, slr.name())) {
                Some(Ok(Some(r))) => Some(r.role_id.as_str()),
                _ => None,
            };
            let who = key_principal(b, role_id, &key);
            out.principals.entry(key).or_default().push(who);
        }
        out
    }
}

/// The principals in `instance`'s statements on `key` that no binding explains, each with
/// the reason.
fn unexplained_principals(
    doc: &PolicyDocument,
    key: &KeyArn,
    explained: &Explained,
    instance: &Instance,
) -> Vec<(String, String)> {
    let here = explained.principals.get(key).map_or(&[][..], Vec::as_slice);
    policy::owned_principals(doc, instance)
        .into_iter()
        .filter(|p| !here.iter().any(|who| who.matches(p)))
        .map(|p| {
            let why = match policy::is_unique_id(&p) {
                true => "the unique id of a deleted principal, which no binding explains".to_owned(),
                false => format!("no binding of instance {instance} uses this key through it any more"),
            };
            (p, why)
        })
        .collect()
}

/// What the prune step reads from.
#[derive(Clone, Copy)]
struct Seen<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    explained: &'a Explained,
    caller: &'a AccountId,
}

/// Plans the retirement of `instance`'s grants on `key` that no binding needs, into
/// `out`. Returns the accesses they remove: a grant whose account's root also leaves the
/// key (`gone`) is that same access, counted once.
fn prune_grants(
    key: &KeyArn,
    gone: &[(String, String)],
    seen: &Seen,
    out: &mut Prunes,
    sparing: &mut Sparing,
) -> usize {
    let Seen { desired, observed, explained, caller } = *seen;
    let instance = &desired.operator.instance;
    let needed = explained.roles.get(key).map_or(&[][..], Vec::as_slice);
    let Some(Ok(grants)) = observed.grants.get(key) else { return 0 };
    let mut count = 0;
    for g in grants {
        let Some(account) = operators_grant_account(g.name.as_deref(), instance) else { continue };
        if needed.iter().any(|slr| is_operators_grant(g.name.as_deref(), slr, instance)) {
            continue;
        }
        let name = g.name.as_deref().unwrap_or("");
        if account != *caller && !desired.accounts.contains_key(&account) {
            out.report.notes.push(format!(
                "grant {} on {key} ({name}) is this instance's and no binding needs it, but account {account}, which retires it, is neither the operator's nor listed under `accounts`: it stays",
                g.grant_id
            ));
            continue;
        }
        if !sparing.may_prune(observed, key, &g.grantee_principal, Some(&g.grant_id)) {
            continue;
        }
        let root = account.root_arn(key.partition());
        if !gone.iter().any(|(p, _)| *p == root) {
            count += 1;
        }
        let slr = Slr {
            account,
            partition: key.partition(),
            suffix: crate::core::model::slr_suffix_of(&g.grantee_principal),
        };
        out.grants.push(PlannedChange {
            reason: format!(
                "prune grant {} ({name}) for {}: no binding of instance {instance} needs it on this key any more",
                g.grant_id, g.grantee_principal
            ),
            change: Change::RetireGrant { key: key.clone(), slr, grant_id: g.grant_id.clone() },
            bindings: Vec::new(),
        });
    }
    count
}

/// Why a prune of `count` accesses is held, if it is (see [`find_prunes`]).
fn prune_guard(op: &Operator, count: usize) -> Option<String> {
    let left = op.config_bindings;
    if count == 0 {
        // Said only where it holds something back: a config allowed to prune everything
        // has nothing held when there is nothing left to prune.
        return (left == 0 && !op.allow_mass_prune).then(|| {
            "the config has no bindings: nothing is pruned (the operator reads no key, and prunes only on keys some binding names)".to_owned()
        });
    }
    if op.allow_mass_prune {
        return None;
    }
    if let Some(why) = &op.prune_held {
        return Some(why.clone());
    }
    (left == 0 || count > left).then(|| {
        format!(
            "this prune would remove {count} accesses while the config keeps {left} binding{}: more than half of what there was, or all of it. {CONFIRM}",
            if left == 1 { "" } else { "s" }
        )
    })
}

/// How a held prune is confirmed.
pub const CONFIRM: &str =
    "Nothing is pruned until it is confirmed (--allow-mass-prune, or defaults.allowMassPrune: true)";

/// The guard over a whole edit, which only the daemon sees: why the edit from `before` to
/// `after` may not prune, if it removes more than half of `before`'s bindings, or all of
/// them, and mass pruning is not allowed. A binding whose role suffix changed counts as
/// removed: its old role's access goes. `None` when `after` does not prune.
pub fn edit_prune_hold(before: &Desired, after: &Desired) -> Option<String> {
    let op = &after.operator;
    if !op.prune || op.allow_mass_prune {
        return None;
    }
    let kept: BTreeSet<(&AsgRef, &KeyArn, Option<&str>)> =
        after.bindings.iter().map(|b| (&b.asg, &b.key, b.slr_suffix.as_deref())).collect();
    let removed = before.bindings.iter().filter(|b| !kept.contains(&(&b.asg, &b.key, b.slr_suffix.as_deref()))).count();
    let was = before.bindings.len();
    (removed > 0 && (after.bindings.is_empty() || removed * 2 > was)).then(|| {
        format!("the config edit removes {removed} of its {was} bindings: more than half, or all of them. {CONFIRM}")
    })
}
