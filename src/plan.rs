//! The pure core: `plan(desired, observed)` lists the AWS calls that would make the
//! observed state match the desired one. No I/O, no async, no SDK types.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Binding, Desired};
use crate::model::{AccountId, Asg, AsgRef, ErrorClass, Failure, Grant, KeyArn, Role, Slr};
use crate::policy::{self, Need, NeedKind, PolicyDocument, PrincipalIds, GRANT_OPERATIONS};

/// What one pass of observation saw. Each entry is the result of one read; a failed read
/// fails only the bindings that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Accounts whose credentials could not be had (the assume-role failed).
    pub account_errors: BTreeMap<AccountId, Failure>,
    /// Service-linked roles by (account, role name); `Ok(None)` when absent.
    pub roles: BTreeMap<(AccountId, String), Result<Option<Role>, Failure>>,
    /// Key policy text by key.
    pub key_policies: BTreeMap<KeyArn, Result<String, Failure>>,
    /// Grants by key, for keys used across accounts.
    pub grants: BTreeMap<KeyArn, Result<Vec<Grant>, Failure>>,
    /// ASGs; `Ok(None)` when the group does not exist.
    pub asgs: BTreeMap<AsgRef, Result<Option<Asg>, Failure>>,
}

/// One AWS write call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateServiceLinkedRole {
        slr: Slr,
    },
    PutKeyPolicy {
        key: KeyArn,
        policy: String,
    },
    /// Created with the credentials of `account`, the ASG account (procedure case 2).
    CreateGrant {
        key: KeyArn,
        account: AccountId,
        grantee: String,
        name: String,
    },
    UpdateAutoScalingGroup {
        asg: AsgRef,
        service_linked_role_arn: String,
    },
}

impl Change {
    pub fn action(&self) -> &'static str {
        match self {
            Change::CreateServiceLinkedRole { .. } => "CreateServiceLinkedRole",
            Change::PutKeyPolicy { .. } => "PutKeyPolicy",
            Change::CreateGrant { .. } => "CreateGrant",
            Change::UpdateAutoScalingGroup { .. } => "UpdateAutoScalingGroup",
        }
    }

    /// The account whose credentials make the call.
    pub fn account(&self) -> &AccountId {
        match self {
            Change::CreateServiceLinkedRole { slr } => &slr.account,
            Change::PutKeyPolicy { key, .. } => key.account(),
            Change::CreateGrant { account, .. } => account,
            Change::UpdateAutoScalingGroup { asg, .. } => &asg.account,
        }
    }

    /// None for IAM, which is global.
    pub fn region(&self) -> Option<&str> {
        match self {
            Change::CreateServiceLinkedRole { .. } => None,
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } => Some(key.region()),
            Change::UpdateAutoScalingGroup { asg, .. } => Some(&asg.region),
        }
    }

    pub fn target(&self) -> String {
        match self {
            Change::CreateServiceLinkedRole { slr } => slr.name(),
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } => key.to_string(),
            Change::UpdateAutoScalingGroup { asg, .. } => asg.name.clone(),
        }
    }

    /// Changes run in phases: a role must exist before a policy or grant names it, and an
    /// ASG is switched to its role only once the role can use the key.
    pub fn phase(&self) -> u8 {
        match self {
            Change::CreateServiceLinkedRole { .. } => 0,
            Change::PutKeyPolicy { .. } => 1,
            Change::CreateGrant { .. } => 2,
            Change::UpdateAutoScalingGroup { .. } => 3,
        }
    }
}

/// A change, why it is needed, and the bindings that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    pub change: Change,
    pub reason: String,
    pub bindings: Vec<AsgRef>,
}

/// A binding that cannot progress this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub binding: AsgRef,
    pub failure: Failure,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order (by phase).
    pub changes: Vec<PlannedChange>,
    pub blocked: Vec<Blocked>,
}

/// The reads one pass needs, derived from the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    pub roles: BTreeSet<Slr>,
    pub keys: BTreeSet<KeyArn>,
    /// Keys whose grants must be listed (used from another account).
    pub grant_keys: BTreeSet<KeyArn>,
    /// ASGs per (account, region).
    pub asgs: BTreeMap<(AccountId, String), BTreeSet<AsgRef>>,
    /// Every account that must be acted in, with its role when it is not the caller's.
    pub accounts: BTreeSet<AccountId>,
}

/// Why a binding cannot be acted on with the credentials at hand, if it cannot.
pub fn access_error(b: &Binding, desired: &Desired, caller: &AccountId) -> Option<Failure> {
    let reachable = |a: &AccountId| a == caller || desired.accounts.contains_key(a);
    let what = if !reachable(&b.asg.account) {
        ("ASG account", &b.asg.account)
    } else if !reachable(b.key.account()) {
        ("key owner account", b.key.account())
    } else {
        return None;
    };
    Some(Failure::terminal(format!(
        "{} {} is neither the operator's own account ({caller}) nor listed under `accounts`",
        what.0, what.1
    )))
}

/// Lists every read a pass needs: one per role, per key, per cross-account key's grants,
/// and per (account, region) for ASGs, however many bindings share them.
pub fn reads(desired: &Desired, caller: &AccountId) -> Reads {
    let mut r = Reads::default();
    for b in desired.bindings.iter().filter(|b| access_error(b, desired, caller).is_none()) {
        r.roles.insert(b.slr());
        r.keys.insert(b.key.clone());
        if b.is_cross_account() {
            r.grant_keys.insert(b.key.clone());
        }
        r.asgs.entry((b.asg.account, b.asg.region.clone())).or_default().insert(b.asg.clone());
        r.accounts.insert(b.asg.account);
        r.accounts.insert(*b.key.account());
    }
    r
}

/// The deterministic grant name for one service-linked role. KMS returns the existing
/// grant for a retried CreateGrant with the same name and parameters, so a retry after a
/// lost response does not make a second grant. Grant names allow `[a-zA-Z0-9:/_-]`; other
/// characters of the role name are replaced and a hash of the original keeps names apart.
pub fn grant_name(slr: &Slr) -> String {
    let name = slr.name();
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-:/".contains(c) { c } else { '-' }).collect();
    let mut out = format!("asg-cmk-operator-{}-{clean}", slr.account);
    if clean != name {
        out.push_str(&format!("-{:08x}", fnv1a(name.as_bytes())));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// True when the grant lets the grantee do all that EBS needs, with no constraints.
fn grant_is_sufficient(g: &Grant) -> bool {
    !g.constrained && GRANT_OPERATIONS.iter().all(|op| g.operations.iter().any(|o| o == op))
}

fn lookup<'a, K: Ord, T>(map: &'a BTreeMap<K, Result<T, Failure>>, k: &K, what: &str) -> Result<&'a T, Failure> {
    match map.get(k) {
        Some(Ok(v)) => Ok(v),
        Some(Err(f)) => Err(Failure { class: f.class, message: format!("{what}: {}", f.message) }),
        None => Err(Failure { class: ErrorClass::Retryable, message: format!("{what}: not observed") }),
    }
}

/// Bindings that cannot progress this pass, each with the first reason found. Every step
/// of the planner reads it, and steps add to it only through the pipeline in [`plan`].
pub type BlockedSet = BTreeMap<AsgRef, Failure>;

/// What one step of the planner found: changes, and bindings it blocks.
#[derive(Debug, Default)]
struct Step {
    changes: Vec<PlannedChange>,
    blocked: Vec<(AsgRef, Failure)>,
}

/// A binding whose reads all succeeded: what the later steps plan from.
struct Ready<'a> {
    binding: &'a Binding,
    slr: Slr,
    role: Option<&'a Role>,
    asg: &'a Asg,
}

impl Ready<'_> {
    fn asg(&self) -> &AsgRef {
        &self.binding.asg
    }
}

/// Compares desired with observed and returns the changes, in execution order, and the
/// bindings that cannot progress. A pipeline of small steps; each one sees the bindings
/// that the steps before it blocked, and plans nothing for them.
pub fn plan(desired: &Desired, observed: &Observed, caller: &AccountId) -> Plan {
    let mut blocked = BlockedSet::new();
    let mut changes = Vec::new();
    let (ready, checked) = check_observed(desired, observed, caller);
    blocked.extend(checked.blocked);
    for step in [plan_grants, plan_key_policies, plan_roles_and_asgs] {
        let out = step(&ready, observed, &blocked);
        for (b, f) in out.blocked {
            blocked.entry(b).or_insert(f);
        }
        changes.extend(out.changes);
    }
    assemble(changes, blocked)
}

/// Step 1: a binding whose account, ASG, role, key policy or grants could not be read is
/// blocked with that read's failure; the others are ready.
fn check_observed<'a>(desired: &'a Desired, observed: &'a Observed, caller: &AccountId) -> (Vec<Ready<'a>>, Step) {
    let mut ready = Vec::new();
    let mut step = Step::default();
    for b in &desired.bindings {
        let slr = b.slr();
        let check = || -> Result<Ready<'a>, Failure> {
            if let Some(f) = access_error(b, desired, caller) {
                return Err(f);
            }
            for account in [&b.asg.account, b.key.account()] {
                if let Some(f) = observed.account_errors.get(account) {
                    return Err(Failure {
                        class: f.class,
                        message: format!("credentials for account {account}: {}", f.message),
                    });
                }
            }
            let asg = lookup(&observed.asgs, &b.asg, "describe ASG")?.as_ref().ok_or_else(|| {
                Failure::terminal(format!(
                    "ASG {} not found in account {} region {}",
                    b.asg.name, b.asg.account, b.asg.region
                ))
            })?;
            let role = lookup(&observed.roles, &(slr.account, slr.name()), "get service-linked role")?.as_ref();
            lookup(&observed.key_policies, &b.key, "get key policy")?;
            if b.is_cross_account() {
                lookup(&observed.grants, &b.key, "list grants")?;
            }
            Ok(Ready { binding: b, slr, role, asg })
        };
        match check() {
            Ok(r) => ready.push(r),
            Err(f) => step.blocked.push((b.asg.clone(), f)),
        }
    }
    (ready, step)
}

/// Step 2, case 2 only: one grant per (key, role) that has none. An existing grant for
/// the role that falls short is never duplicated: the binding is blocked instead.
fn plan_grants(ready: &[Ready], observed: &Observed, blocked: &BlockedSet) -> Step {
    let mut step = Step::default();
    let mut grants: BTreeMap<(KeyArn, Slr), (String, Vec<AsgRef>)> = BTreeMap::new();
    for r in ready.iter().filter(|r| r.binding.is_cross_account() && !blocked.contains_key(r.asg())) {
        let ids = PrincipalIds::role(&r.slr.arn(), r.role.map(|x| x.role_id.as_str()));
        let listed = lookup(&observed.grants, &r.binding.key, "list grants").expect("checked in step 1");
        let mine: Vec<&Grant> = listed.iter().filter(|g| ids.matches(&g.grantee_principal)).collect();
        if mine.iter().any(|g| grant_is_sufficient(g)) {
            continue;
        }
        if let Some(g) = mine.first() {
            step.blocked.push((
                r.asg().clone(),
                Failure::terminal(format!(
                    "grant {} on {} for {} lacks operations or has constraints; it is not the operator's to change: revoke it so the operator can create a complete one",
                    g.grant_id, r.binding.key, r.slr.arn()
                )),
            ));
            continue;
        }
        let reason = format!("no grant on this key for {}; a key of another account needs one (case 2)", r.slr.arn());
        grants.entry((r.binding.key.clone(), r.slr.clone())).or_insert((reason, Vec::new())).1.push(r.asg().clone());
    }
    step.changes = grants
        .into_iter()
        .map(|((key, slr), (reason, bindings))| PlannedChange {
            change: Change::CreateGrant { name: grant_name(&slr), grantee: slr.arn(), account: slr.account, key },
            reason,
            bindings,
        })
        .collect();
    step
}

/// Step 3: one merged document per key for all its bindings, when anything is missing.
/// A Deny for a binding's principal blocks that binding; an unreadable policy blocks the
/// key's bindings.
fn plan_key_policies(ready: &[Ready], observed: &Observed, blocked: &BlockedSet) -> Step {
    let mut step = Step::default();
    let mut by_key: BTreeMap<&KeyArn, Vec<&Ready>> = BTreeMap::new();
    for r in ready.iter().filter(|r| !blocked.contains_key(r.asg())) {
        by_key.entry(&r.binding.key).or_default().push(r);
    }
    for (key, rs) in by_key {
        let text = lookup(&observed.key_policies, key, "get key policy").expect("checked in step 1");
        // Many bindings share one need (ASGs on the same role or account): evaluate each
        // distinct need once, and remember which bindings it stands for.
        let mut needs: Vec<Need> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut index: BTreeMap<(bool, String), usize> = BTreeMap::new();
        for (i, r) in rs.iter().enumerate() {
            let cross = r.binding.is_cross_account();
            let who = if cross { r.binding.asg.account.root_arn(key.partition()) } else { r.slr.arn() };
            let at = *index.entry((cross, who)).or_insert_with(|| {
                needs.push(match cross {
                    false => Need {
                        who: PrincipalIds::role(&r.slr.arn(), r.role.map(|x| x.role_id.as_str())),
                        kind: NeedKind::ServiceLinkedRole,
                    },
                    true => Need {
                        who: PrincipalIds::account_root(&r.binding.asg.account, key.partition()),
                        kind: NeedKind::AccountRoot,
                    },
                });
                owners.push(Vec::new());
                needs.len() - 1
            });
            owners[at].push(i);
        }
        let merged = PolicyDocument::parse(text).and_then(|doc| policy::ensure(&doc, key.as_str(), &needs));
        match merged {
            Err(e) => {
                for r in &rs {
                    step.blocked.push((r.asg().clone(), Failure::terminal(format!("key policy of {key}: {e}"))));
                }
            }
            Ok(m) => {
                let mut denied: BTreeSet<&AsgRef> = BTreeSet::new();
                for (n, why) in &m.denied {
                    for &i in &owners[*n] {
                        denied.insert(rs[i].asg());
                        step.blocked.push((rs[i].asg().clone(), Failure::terminal(why.clone())));
                    }
                }
                if let Some(doc) = m.document {
                    let bindings = rs.iter().map(|r| r.asg()).filter(|a| !denied.contains(a)).cloned().collect();
                    step.changes.push(PlannedChange {
                        change: Change::PutKeyPolicy { key: key.clone(), policy: doc.to_json() },
                        reason: m.added.join("; "),
                        bindings,
                    });
                }
            }
        }
    }
    step
}

/// Step 4: the service-linked roles that do not exist yet, and the ASGs not yet on their
/// role.
fn plan_roles_and_asgs(ready: &[Ready], _observed: &Observed, blocked: &BlockedSet) -> Step {
    let mut step = Step::default();
    let live: Vec<&Ready> = ready.iter().filter(|r| !blocked.contains_key(r.asg())).collect();
    let mut roles: BTreeMap<&Slr, Vec<AsgRef>> = BTreeMap::new();
    for r in live.iter().filter(|r| r.role.is_none()) {
        roles.entry(&r.slr).or_default().push(r.asg().clone());
    }
    for (slr, bindings) in roles {
        step.changes.push(PlannedChange {
            change: Change::CreateServiceLinkedRole { slr: slr.clone() },
            reason: format!("service-linked role {} does not exist in account {}", slr.name(), slr.account),
            bindings,
        });
    }
    for r in &live {
        let want = r.slr.arn();
        if r.asg.service_linked_role_arn.as_deref() != Some(want.as_str()) {
            let have = r.asg.service_linked_role_arn.as_deref().unwrap_or("unset");
            step.changes.push(PlannedChange {
                reason: format!("ServiceLinkedRoleARN is {have}; want {}", r.slr.name()),
                change: Change::UpdateAutoScalingGroup { asg: r.asg().clone(), service_linked_role_arn: want },
                bindings: vec![r.asg().clone()],
            });
        }
    }
    step
}

/// The plan: each change keeps only the bindings that are still unblocked (a change with
/// none left is dropped), in execution order.
fn assemble(changes: Vec<PlannedChange>, blocked: BlockedSet) -> Plan {
    let mut changes: Vec<PlannedChange> = changes
        .into_iter()
        .filter_map(|mut c| {
            c.bindings.retain(|b| !blocked.contains_key(b));
            (!c.bindings.is_empty()).then_some(c)
        })
        .collect();
    changes.sort_by_key(|c| c.change.phase());
    Plan { changes, blocked: blocked.into_iter().map(|(binding, failure)| Blocked { binding, failure }).collect() }
}

#[cfg(test)]
mod tests;
