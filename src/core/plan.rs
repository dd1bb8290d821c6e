//! The pure core: `plan(desired, observed)` lists the AWS calls that would make the
//! observed state match the desired one. No I/O, no async, no SDK types.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::desired::{Binding, Desired, Operator};
use crate::core::model::observed::{Observed, Reads};
pub use crate::core::model::DryRun;
use crate::core::model::{
    AccountId, Asg, AsgRef, BindingId, ErrorClass, Failure, Grant, Instance, KeyArn, KeyInfo, KeyManager, Role, Slr,
};
use crate::core::policy::{self, Need, NeedKind, PolicyDocument, PrincipalIds, GRANT_OPERATIONS};
use crate::core::reencrypt::{self, Next, Write};

/// One AWS write call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateServiceLinkedRole {
        slr: Slr,
    },
    /// The policy is read again right before it is written, and `needs` are merged into
    /// what is read then: PutKeyPolicy has no condition, so an edit made since the pass
    /// observed the key must not be lost. `policy` is the merge of the observed policy,
    /// shown by `plan`.
    ///
    /// `prune` (principals no current binding explains) are removed from the statements
    /// of `instance` in that same fresh read, before `needs` are merged in.
    PutKeyPolicy {
        key: KeyArn,
        needs: Vec<Need>,
        prune: Vec<String>,
        instance: Instance,
        policy: String,
    },
    /// Created with the credentials of the role's account, the ASG account (procedure
    /// case 2), under the operator's name for the role. `role_id` is None only while the
    /// role does not exist yet; the grant is named once it does.
    CreateGrant {
        key: KeyArn,
        slr: Slr,
        role_id: Option<String>,
        instance: Instance,
    },
    /// One of the operator's own grants that no longer does its job (it falls short, or
    /// its grantee was deleted), retired with the credentials of the account that created
    /// it: the ASG account.
    RetireGrant {
        key: KeyArn,
        slr: Slr,
        grant_id: String,
    },
    UpdateAutoScalingGroup {
        asg: AsgRef,
        service_linked_role_arn: String,
    },
    /// Re-encryption (`strategy: reencrypt`): one EC2 or Auto Scaling write for `asg`,
    /// made with its account's credentials, re-encrypting with `key` (its own ARN).
    Reencrypt {
        asg: AsgRef,
        key: KeyArn,
        write: Write,
    },
}

impl Change {
    /// How many phases a plan runs in; see [`Change::phase`].
    pub const PHASES: u8 = 6;

    pub fn action(&self) -> &'static str {
        match self {
            Change::CreateServiceLinkedRole { .. } => "CreateServiceLinkedRole",
            Change::PutKeyPolicy { .. } => "PutKeyPolicy",
            Change::CreateGrant { .. } => "CreateGrant",
            Change::RetireGrant { .. } => "RetireGrant",
            Change::UpdateAutoScalingGroup { .. } => "UpdateAutoScalingGroup",
            Change::Reencrypt { write, .. } => match write {
                Write::CopyImage { .. } => "CopyImage",
                Write::CreateVersion { .. } => "CreateLaunchTemplateVersion",
                Write::SetDefaultVersion { .. } => "ModifyLaunchTemplate",
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => "UpdateAutoScalingGroup",
                Write::CopyConfiguration { .. } => "CreateLaunchConfiguration",
            },
        }
    }

    /// The account whose credentials make the call.
    pub fn account(&self) -> &AccountId {
        match self {
            Change::CreateServiceLinkedRole { slr } => &slr.account,
            Change::PutKeyPolicy { key, .. } => key.account(),
            Change::CreateGrant { slr, .. } | Change::RetireGrant { slr, .. } => &slr.account,
            Change::UpdateAutoScalingGroup { asg, .. } | Change::Reencrypt { asg, .. } => &asg.account,
        }
    }

    /// None for IAM, which is global.
    pub fn region(&self) -> Option<&str> {
        match self {
            Change::CreateServiceLinkedRole { .. } => None,
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } | Change::RetireGrant { key, .. } => {
                Some(key.region())
            }
            Change::UpdateAutoScalingGroup { asg, .. } | Change::Reencrypt { asg, .. } => Some(&asg.region),
        }
    }

    pub fn target(&self) -> String {
        match self {
            Change::CreateServiceLinkedRole { slr } => slr.name(),
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } | Change::RetireGrant { key, .. } => {
                key.to_string()
            }
            Change::UpdateAutoScalingGroup { asg, .. } => asg.name.clone(),
            Change::Reencrypt { asg, write, .. } => match write {
                Write::CopyImage { source_image, .. } => source_image.clone(),
                Write::CreateVersion { template_id, .. } | Write::SetDefaultVersion { template_id, .. } => {
                    template_id.clone()
                }
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => asg.name.clone(),
                Write::CopyConfiguration { name, .. } => name.clone(),
            },
        }
    }

    /// Changes run in phases: a role must exist before a policy or grant names it, an ASG
    /// is switched to its role only once the role can use the key, a group launches a
    /// re-encrypted image only once its role is set, and a grant is retired only after its
    /// replacement exists. An image copy changes no launch: it starts early.
    pub fn phase(&self) -> u8 {
        match self {
            Change::CreateServiceLinkedRole { .. } => 0,
            Change::PutKeyPolicy { .. } | Change::Reencrypt { write: Write::CopyImage { .. }, .. } => 1,
            Change::CreateGrant { .. } => 2,
            Change::UpdateAutoScalingGroup { .. } => 3,
            Change::Reencrypt { .. } => 4,
            Change::RetireGrant { .. } => 5,
        }
    }
}

/// A change, why it is needed, and the bindings that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    pub change: Change,
    pub reason: String,
    pub bindings: Vec<BindingId>,
}

impl PlannedChange {
    /// The key of a change made for no binding: a prune only.
    pub fn prune_only_key(&self) -> Option<&KeyArn> {
        match &self.change {
            Change::PutKeyPolicy { key, .. } | Change::RetireGrant { key, .. } if self.bindings.is_empty() => Some(key),
            _ => None,
        }
    }
}

/// A binding that cannot progress this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub binding: BindingId,
    pub failure: Failure,
}

/// Something true of a binding that is neither a change nor a failure, for `plan`'s
/// output and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub binding: BindingId,
    pub kind: NoteKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The key is AWS managed: nothing to do.
    AwsManaged,
    /// The group's most recent launch failed.
    LaunchFailed,
    /// The group launches with a customer managed key that no binding covers.
    UnboundKey,
    /// The group launches Spot instances through a launch configuration.
    Spot,
    /// A volume's key could not be known.
    UnknownKey,
}

impl NoteKind {
    /// Drift the operator warns of once a pass: a group that will fail to launch, or
    /// might, for a reason outside its bindings.
    pub fn is_drift(self) -> bool {
        matches!(self, NoteKind::UnboundKey | NoteKind::Spot | NoteKind::UnknownKey)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order (by phase).
    pub changes: Vec<PlannedChange>,
    pub blocked: Vec<Blocked>,
    pub notes: Vec<Note>,
    /// What pruning found, when it is on.
    pub prune: PruneReport,
}

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
}

/// What pruning never does, said as a note with every prune.
pub const PRUNE_LEAVES: &str = "a removed group's ServiceLinkedRoleARN is not reverted, and no service-linked role is deleted: the group and its role are the group owner's";

/// How much a pass reads. A full pass (at start, on resync, and for the one-shot
/// commands) also reads what changes rarely but matters to whether a group can launch:
/// its recent launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Quick,
    Full,
}

/// Why a binding cannot be acted on with the credentials at hand, if it cannot. A key
/// owner account the operator cannot act in is no error: see [`is_handoff`].
pub fn access_error(b: &Binding, desired: &Desired, caller: &AccountId) -> Option<Failure> {
    let reachable = |a: &AccountId| a == caller || desired.accounts.contains_key(a);
    if reachable(&b.asg.account) {
        return None;
    }
    Some(Failure::terminal(format!(
        "ASG account {} is neither the operator's own account ({caller}) nor listed under `accounts`",
        b.asg.account
    )))
}

/// Hand-off mode (procedure case 2 when someone else owns the key): the key's owner
/// account is neither the caller's nor listed under `accounts`. The operator never
/// writes that key's policy: it checks, with the group account's credentials, whether the
/// owner's policy lets the group's account create the grant, creates it once it does,
/// and until then reports what the owner must add ([`handoff_statements`]).
pub fn is_handoff(b: &Binding, desired: &Desired, caller: &AccountId) -> bool {
    b.key.account() != caller && b.key.account() != &b.asg.account && !desired.accounts.contains_key(b.key.account())
}

/// The statements a hand-off key's owner must add for the group accounts `accounts`: the
/// same ones, with the same Sids, that the operator writes itself in case 2.
pub fn handoff_statements(key: &KeyArn, accounts: &BTreeSet<AccountId>) -> Vec<serde_json::Value> {
    let roots: Vec<String> = accounts.iter().map(|a| a.root_arn(key.partition())).collect();
    policy::case2_statements(&roots)
}

/// Why a hand-off binding waits, with the statements to add, as one message.
pub fn awaiting_owner(b: &Binding, why: &str) -> Failure {
    let statements = handoff_statements(&b.key, &BTreeSet::from([b.asg.account]));
    Failure {
        class: ErrorClass::AwaitingOwner,
        message: format!(
            "awaiting key owner: account {owner} owns key {key} and has no entry under `accounts`, so its key policy is its administrators' to change, and {why}. Ask them to add these statements to the key policy (`asg-cmk-operator handoff` prints them with the steps): {json}",
            owner = b.key.account(),
            key = b.key,
            json = serde_json::Value::Array(statements),
        ),
    }
}

/// Lists every read a pass needs: one per role, per key, per cross-account key's grants,
/// and per (account, region) for ASGs, however many bindings share them.
pub fn reads(desired: &Desired, caller: &AccountId, depth: Depth) -> Reads {
    let mut r = Reads::default();
    for b in desired.bindings.iter().filter(|b| access_error(b, desired, caller).is_none()) {
        r.roles.insert(b.slr());
        r.asgs.entry((b.asg.account, b.asg.region.clone())).or_default().insert(b.asg.clone());
        r.accounts.insert(b.asg.account);
        if depth == Depth::Full {
            r.launches.insert(b.asg.clone());
        }
        if b.reencrypt_from.is_some() {
            r.reencrypt.insert(b.asg.clone());
        }
        if is_handoff(b, desired, caller) {
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
    key.account() == caller || desired.accounts.contains_key(key.account())
}

/// The operator's name for its grant to one service-linked role: the role's name and
/// unique id, so a role that was deleted and created again (a new principal to KMS) gets
/// a grant of its own. KMS returns the existing grant for a retried CreateGrant with the
/// same name and parameters (KMS API Reference, CreateGrant, `Name`), so a retry after a
/// lost answer makes no second grant.
pub fn grant_name(slr: &Slr, role_id: &str, instance: &Instance) -> String {
    format!("{}{}-{role_id}", instance_prefix(instance), grant_role_part(slr))
}

/// How every grant name of `instance` starts: `asg-cmk-operator-` for the instance
/// `default` (as earlier versions named grants), `asg-cmk-operator:<instance>:` for any
/// other. An instance name has no `:`, and the default's prefix is followed by an account
/// id, never by `:`, so a name belongs to one instance at most.
fn instance_prefix(instance: &Instance) -> String {
    match instance.is_default() {
        true => "asg-cmk-operator-".to_owned(),
        false => format!("asg-cmk-operator:{instance}:"),
    }
}

/// `<account>-<role name>`. Grant names allow `[a-zA-Z0-9:/_-]`; other characters of the
/// role name are replaced and a hash of the original keeps names apart.
fn grant_role_part(slr: &Slr) -> String {
    let name = slr.name();
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-:/".contains(c) { c } else { '-' }).collect();
    let mut out = format!("{}-{clean}", slr.account);
    if clean != name {
        out.push_str(&format!("-{:08x}", fnv1a(name.as_bytes())));
    }
    out
}

/// True when a grant carries the name `instance` gives its grant for `slr`: it is that
/// instance's own, whichever role id it was made for (and with none, as earlier versions
/// named it).
pub fn is_operators_grant(name: Option<&str>, slr: &Slr, instance: &Instance) -> bool {
    let prefix = format!("{}{}", instance_prefix(instance), grant_role_part(slr));
    name.and_then(|n| n.strip_prefix(prefix.as_str()))
        .is_some_and(|rest| rest.is_empty() || rest.strip_prefix('-').is_some_and(policy::is_unique_id))
}

/// The account of a grant that `instance` named, whatever role it is for; None for a
/// grant it did not name.
pub fn operators_grant_account(name: Option<&str>, instance: &Instance) -> Option<AccountId> {
    let rest = name?.strip_prefix(instance_prefix(instance).as_str())?;
    let (account, role) = rest.split_once('-')?;
    role.starts_with(crate::core::model::DEFAULT_SLR_NAME).then_some(())?;
    AccountId::parse(account)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// True when the grant lets the grantee do all that EBS needs, with no constraints.
pub(crate) fn grant_is_sufficient(g: &Grant) -> bool {
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
pub type BlockedSet = BTreeMap<BindingId, Failure>;

/// What one step of the planner found: changes, and bindings it blocks.
#[derive(Debug, Default)]
struct Step {
    changes: Vec<PlannedChange>,
    blocked: Vec<(BindingId, Failure)>,
    notes: Vec<Note>,
}

/// A binding whose reads all succeeded: what the later steps plan from.
struct Ready<'a> {
    binding: &'a Binding,
    id: BindingId,
    /// The key's own ARN (the binding's alias resolved).
    key: &'a KeyArn,
    slr: Slr,
    role: Option<&'a Role>,
    /// The group as observed.
    group: &'a Asg,
    /// A hand-off key's: its policy is never read or written.
    handoff: bool,
}

/// Compares desired with observed and returns the changes, in execution order, and the
/// bindings that cannot progress. A pipeline of small steps; each one sees the bindings
/// that the steps before it blocked, and plans nothing for them.
pub fn plan(desired: &Desired, observed: &Observed, caller: &AccountId) -> Plan {
    plan_holding(desired, observed, caller, &BlockedSet::new())
}

/// [`plan`], with some bindings already known to be blocked (`held`: a write of theirs
/// failed earlier in the same apply). They are planned for no further, and are not
/// looked up in `observed`, but they still count as their groups' keys: a group is not
/// switched to a role while one of its keys is held.
pub fn plan_holding(desired: &Desired, observed: &Observed, caller: &AccountId, held: &BlockedSet) -> Plan {
    let mut blocked = held.clone();
    let mut changes = Vec::new();
    let (ready, checked) = check_observed(desired, observed, caller, held);
    blocked.extend(checked.blocked);
    let notes = checked.notes;
    let prunes = find_prunes(desired, observed, caller);
    let instance = &desired.operator.instance;
    for step in [plan_grants, plan_key_policies] {
        let out = step(&ready, observed, &blocked, instance, &prunes.principals);
        for (b, f) in out.blocked {
            blocked.entry(b).or_insert(f);
        }
        changes.extend(out.changes);
    }
    let groups = plan_roles_and_asgs(desired, &ready, &blocked);
    changes.extend(groups.changes);
    let held: BTreeSet<&BindingId> = groups.blocked.iter().map(|(b, _)| b).collect();
    let images = plan_reencrypt(&ready, observed, &blocked, &held);
    changes.extend(images.changes);
    for (b, f) in images.blocked {
        blocked.entry(b).or_insert(f);
    }
    changes.extend(prunes.grants);
    let mut plan = assemble(changes, blocked);
    plan.prune = prunes.report;
    // A binding whose group is held back by another key still has its own key made
    // ready (that changes nothing the group launches with today); only the switch waits.
    plan.blocked.extend(groups.blocked.into_iter().map(|(binding, failure)| Blocked { binding, failure }));
    plan.notes = notes;
    plan.notes.extend(failed_launches(desired, observed));
    plan.notes.extend(drift(desired, observed));
    plan
}

/// For each bound group whose launches were read: a note for every customer managed key
/// it launches with that none of its bindings covers (its launches will fail), for a
/// volume whose key could not be known, and for Spot instances requested through a
/// launch configuration, which EC2 launches through `AWSServiceRoleForEC2Spot` (EC2 Auto
/// Scaling User Guide, service-linked roles): that role needs the keys too, and the
/// operator does not manage it.
pub fn drift(desired: &Desired, observed: &Observed) -> Vec<Note> {
    if observed.launch_keys.is_empty() {
        return Vec::new(); // a quick pass reads no launch sources
    }
    let mut by_group: BTreeMap<&AsgRef, Vec<&Binding>> = BTreeMap::new();
    for b in &desired.bindings {
        by_group.entry(&b.asg).or_default().push(b);
    }
    let mut notes = Vec::new();
    for (asg, bindings) in by_group {
        let Some(Ok(launch)) = observed.launch_keys.get(asg) else { continue };
        // What the bindings cover: each key as configured, and the key it resolves to.
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        for b in &bindings {
            covered.insert(b.key.as_str());
            // The keys being re-encrypted away from are the binding's to replace.
            covered.extend(b.reencrypt_from.iter().flat_map(|f| f.iter()).map(KeyArn::as_str));
            if let Some(Ok(info)) = observed.keys.get(&b.key) {
                covered.insert(info.arn.as_str());
            }
        }
        let first = bindings[0].id();
        let note = |kind, message| Note { binding: first.clone(), kind, message };
        for k in &launch.keys {
            match &k.resolved {
                Ok((_, KeyManager::Aws)) => {}
                Ok((arn, KeyManager::Customer)) if covered.contains(arn.as_str()) => {}
                Ok((arn, KeyManager::Customer)) => notes.push(note(
                    NoteKind::UnboundKey,
                    format!("the group launches with customer managed key {arn} ({}), which no binding covers: its launches will fail until it is bound", k.source),
                )),
                Err(_) if covered.contains(k.key_ref.as_str()) => {}
                Err(why) => notes.push(note(
                    NoteKind::UnknownKey,
                    format!("the group launches with key {} ({}), which could not be described ({why}): bind it if it is customer managed", k.key_ref, k.source),
                )),
            }
        }
        for why in &launch.unknown {
            notes.push(note(NoteKind::UnknownKey, format!("a volume's key could not be known: {why}")));
        }
        for lc in &launch.spot {
            notes.push(note(
                NoteKind::Spot,
                format!("{lc} requests Spot instances, which EC2 launches through AWSServiceRoleForEC2Spot: that role needs the group's keys too, and the operator does not grant it"),
            ));
        }
    }
    notes
}

/// A note for each binding whose group's most recent launch failed (when launches were
/// read): the symptom the operator is there to cure, quoted.
fn failed_launches(desired: &Desired, observed: &Observed) -> Vec<Note> {
    let mut notes = Vec::new();
    if observed.launches.is_empty() {
        return notes; // a quick pass reads no launches
    }
    for b in &desired.bindings {
        if let Some(Ok(Some(a))) = observed.launches.get(&b.asg) {
            if a.failed() {
                let message = a.status_message.as_deref().unwrap_or("no status message");
                notes.push(Note {
                    binding: b.id(),
                    kind: NoteKind::LaunchFailed,
                    message: format!("the group's most recent launch failed: {message}"),
                });
            }
        }
    }
    notes
}

/// Step 1: a binding whose account, ASG, role, key, key policy or grants could not be read
/// is blocked with that read's failure, and so is one whose key EBS cannot use (not
/// Enabled, or not symmetric); one whose key is AWS managed needs nothing (a note); the
/// others are ready.
fn check_observed<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    caller: &AccountId,
    held: &BlockedSet,
) -> (Vec<Ready<'a>>, Step) {
    let mut ready = Vec::new();
    let mut step = Step::default();
    for b in desired.bindings.iter().filter(|b| !held.contains_key(&b.id())) {
        match check_binding(b, desired, observed, caller) {
            Ok(Some(r)) => ready.push(r),
            Ok(None) => step.notes.push(Note {
                binding: b.id(),
                kind: NoteKind::AwsManaged,
                message: format!(
                    "{} is an AWS managed key: Auto Scaling may use it with no key policy statement or grant; nothing to do",
                    b.key
                ),
            }),
            Err(f) => step.blocked.push((b.id(), f)),
        }
    }
    (ready, step)
}

/// One binding: ready to plan for, with what was read for it; None for an AWS managed key
/// (nothing to do); or why it cannot be planned for.
fn check_binding<'a>(
    b: &'a Binding,
    desired: &Desired,
    observed: &'a Observed,
    caller: &AccountId,
) -> Result<Option<Ready<'a>>, Failure> {
    let slr = b.slr();
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
        Failure::terminal(format!("ASG {} not found in account {} region {}", b.asg.name, b.asg.account, b.asg.region))
    })?;
    let handoff = is_handoff(b, desired, caller);
    if handoff && b.key.is_alias() {
        return Err(Failure::terminal(format!(
            "key {} belongs to account {}, which has no entry under `accounts`: name it by its key ARN (hand-off keys are checked by key ARN only), or list the account with a role to assume",
            b.key,
            b.key.account()
        )));
    }
    let info = match lookup(&observed.keys, &b.key, "describe key") {
        Err(f) if handoff && f.class == ErrorClass::AwaitingOwner => {
            return Err(awaiting_owner(b, &format!("account {} may not describe it yet", b.asg.account)))
        }
        r => r?,
    };
    if let Some(f) = unusable(&b.key, info).or_else(|| aws_managed_elsewhere(b, info)) {
        return Err(f);
    }
    if info.manager == KeyManager::Aws {
        return Ok(None);
    }
    let role = lookup(&observed.roles, &(slr.account, slr.name()), "get service-linked role")?.as_ref();
    if handoff {
        return handoff_ready(b, observed, info, slr, role, asg).map(Some);
    }
    lookup(&observed.key_policies, &info.arn, "get key policy")?;
    if b.is_cross_account() {
        lookup(&observed.grants, &info.arn, "list grants")?;
    }
    Ok(Some(Ready { binding: b, id: b.id(), key: &info.arn, slr, role, group: asg, handoff: false }))
}

/// A hand-off binding: ready once the dry run of its grant is not refused and the grants
/// it may retire are listed.
fn handoff_ready<'a>(
    b: &'a Binding,
    observed: &'a Observed,
    info: &'a KeyInfo,
    slr: Slr,
    role: Option<&'a Role>,
    asg: &'a Asg,
) -> Result<Ready<'a>, Failure> {
    match lookup(&observed.handoff, &(b.key.clone(), slr.clone()), "dry run of CreateGrant")? {
        DryRun::Refused => {
            return Err(awaiting_owner(
                b,
                &format!("a dry run of CreateGrant by account {} was refused", b.asg.account),
            ))
        }
        DryRun::Allowed | DryRun::GranteeUnknown => {}
    }
    lookup(&observed.grants, &info.arn, "list retirable grants")?;
    Ok(Ready { binding: b, id: b.id(), key: &info.arn, slr, role, group: asg, handoff: true })
}

/// Why a group cannot use an AWS managed key of another account: such a key's policy
/// allows use only to callers in its own account (`kms:CallerAccount`), and can be neither
/// changed nor granted across accounts (KMS Developer Guide, "AWS managed keys").
pub(crate) fn aws_managed_elsewhere(b: &Binding, info: &KeyInfo) -> Option<Failure> {
    (info.manager == KeyManager::Aws && info.arn.account() != &b.asg.account).then(|| {
        Failure::terminal(format!(
            "key {} is an AWS managed key of account {}: its policy lets only that account use it (kms:CallerAccount), and it cannot be changed or granted, so group {} in account {} can never use it; use a customer managed key (or the account's own AWS managed key)",
            info.arn,
            info.arn.account(),
            b.asg.name,
            b.asg.account
        ))
    })
}

/// Why EBS cannot use a key, if it cannot: it must be Enabled (KMS Developer Guide, "Key
/// states of AWS KMS keys") and symmetric (EBS supports only symmetric keys). Nothing is
/// written for such a key; the failure is terminal until someone changes the key.
pub(crate) fn unusable(configured: &KeyArn, info: &KeyInfo) -> Option<Failure> {
    let why = match info.state.as_str() {
        "Enabled" => None,
        "PendingDeletion" => {
            Some("it is pending deletion: cancel the deletion (CancelKeyDeletion) and enable it".to_owned())
        }
        "Disabled" => Some("it is disabled: enable it (EnableKey)".to_owned()),
        other => Some(format!("its state is {other}; EBS needs it Enabled")),
    };
    let why = why.or_else(|| {
        (info.spec != "SYMMETRIC_DEFAULT")
            .then(|| format!("its key spec is {}; EBS supports only symmetric keys (SYMMETRIC_DEFAULT)", info.spec))
    })?;
    let named = if configured.is_alias() { format!("{configured} (key {})", info.arn) } else { configured.to_string() };
    Some(Failure::terminal(format!("key {named} cannot encrypt EBS volumes: {why}; nothing is written for it")))
}

/// Step 2, case 2 only: one complete grant per (key, role). A grant that carries the
/// operator's name belongs to the operator: if it falls short, or its grantee is no longer
/// the role (deleted, or deleted and created again), it is retired and a complete one made.
/// A grant for the role that someone else made and that falls short is never duplicated:
/// the binding is blocked instead, naming it.
fn plan_grants(ready: &[Ready], observed: &Observed, blocked: &BlockedSet, instance: &Instance, _: &Pruned) -> Step {
    let mut step = Step::default();
    // The bindings of each (key, role) pair, and the role as observed.
    type Pair<'a> = (&'a KeyArn, &'a Slr);
    let mut pairs: BTreeMap<Pair, (Option<&Role>, Vec<BindingId>)> = BTreeMap::new();
    for r in ready.iter().filter(|r| r.binding.is_cross_account() && !blocked.contains_key(&r.id)) {
        pairs.entry((r.key, &r.slr)).or_insert((r.role, Vec::new())).1.push(r.id.clone());
    }
    for ((key, slr), (role, bindings)) in pairs {
        let ids = PrincipalIds::role(&slr.arn(), role.map(|x| x.role_id.as_str()));
        let listed = lookup(&observed.grants, key, "list grants").expect("checked in step 1");
        let ours = |g: &Grant| is_operators_grant(g.name.as_deref(), slr, instance);
        let complete = |g: &Grant| ids.matches(&g.grantee_principal) && grant_is_sufficient(g);
        if !listed.iter().any(complete) {
            let short = listed.iter().find(|g| ids.matches(&g.grantee_principal) && !ours(g));
            if let Some(g) = short {
                let f = Failure::terminal(format!(
                    "grant {} on {key} for {} lacks operations or has constraints; it is not the operator's to change: revoke it so the operator can create a complete one",
                    g.grant_id, slr.arn()
                ));
                step.blocked.extend(bindings.iter().map(|b| (b.clone(), f.clone())));
                continue;
            }
            step.changes.push(PlannedChange {
                change: Change::CreateGrant {
                    key: key.clone(),
                    slr: slr.clone(),
                    role_id: role.map(|x| x.role_id.clone()),
                    instance: instance.clone(),
                },
                reason: format!(
                    "no complete grant on this key for {}; a key of another account needs one (case 2)",
                    slr.arn()
                ),
                bindings: bindings.clone(),
            });
        }
        for g in listed.iter().filter(|g| ours(g) && !complete(g)) {
            let why = if ids.matches(&g.grantee_principal) {
                "lacks operations or has constraints".to_owned()
            } else {
                format!(
                    "is for {}, which is no longer the role (deleted, or deleted and created again)",
                    g.grantee_principal
                )
            };
            step.changes.push(PlannedChange {
                change: Change::RetireGrant { key: key.clone(), slr: slr.clone(), grant_id: g.grant_id.clone() },
                reason: format!("the operator's grant {} {why}", g.grant_id),
                bindings: bindings.clone(),
            });
        }
    }
    step
}

/// Step 3: one merged document per key for all its bindings, when anything is missing.
/// A Deny for a binding's principal blocks that binding; an unreadable policy blocks the
/// key's bindings.
fn plan_key_policies(
    ready: &[Ready],
    observed: &Observed,
    blocked: &BlockedSet,
    instance: &Instance,
    pruned: &Pruned,
) -> Step {
    let mut step = Step::default();
    let mut by_key: BTreeMap<&KeyArn, Vec<&Ready>> = BTreeMap::new();
    for r in ready.iter().filter(|r| !blocked.contains_key(&r.id) && !r.handoff) {
        by_key.entry(r.key).or_default().push(r);
    }
    // A key with something to prune is written even when none of its bindings is ready.
    for key in pruned.keys() {
        by_key.entry(key).or_default();
    }
    for (key, rs) in by_key {
        let prune: &[(String, String)] = pruned.get(key).map_or(&[], Vec::as_slice);
        let text = lookup(&observed.key_policies, key, "get key policy").expect("checked in step 1");
        key_policy_step(&mut step, key, &rs, text, prune, instance);
    }
    step
}

/// One key's policy: the needs of its ready bindings merged in, and what no binding
/// explains pruned; the bindings a Deny or a refusal stops are blocked.
fn key_policy_step<'r>(
    step: &mut Step,
    key: &KeyArn,
    rs: &[&'r Ready<'r>],
    text: &str,
    prune: &[(String, String)],
    instance: &Instance,
) {
    let (needs, owners) = distinct_needs(key, rs);
    let mut doc = match PolicyDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let f = Failure::terminal(format!("key policy of {key}: {e}"));
            step.blocked.extend(rs.iter().map(|r| (r.id.clone(), f.clone())));
            return;
        }
    };
    let mut stopped = denied_roles(step, key, rs, &doc);
    // What no binding explains leaves first; what the bindings need is merged into
    // the rest, so a need that only a pruned principal met is added back.
    let removed = policy::prune(&mut doc, instance, &prune.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    let m = match policy::ensure(&doc, key.as_str(), &needs, instance) {
        Ok(m) => m,
        Err(e) => {
            let f = Failure::terminal(format!("key policy of {key}: {e}"));
            step.blocked.extend(rs.iter().map(|r| (r.id.clone(), f.clone())));
            return;
        }
    };
    for (n, why) in &m.denied {
        for &i in &owners[*n] {
            stopped.insert(&rs[i].id);
            step.blocked.push((rs[i].id.clone(), Failure::terminal(why.clone())));
        }
    }
    let merged = match (&m.document, removed.is_empty()) {
        (Some(merged), _) => merged,
        (None, false) => &doc,
        (None, true) => return,
    };
    let (served, bindings) = served(&m, &owners, rs, &stopped);
    if let Some(why) = m.refusal() {
        let f = Failure::terminal(format!("key policy of {key}: {why}"));
        step.blocked.extend(bindings.into_iter().map(|b| (b, f.clone())));
        return;
    }
    let mut reason = m.added.clone();
    reason.extend(prune.iter().filter(|(p, _)| removed.contains(p)).map(|(p, why)| format!("prune {p}: {why}")));
    step.changes.push(PlannedChange {
        change: Change::PutKeyPolicy {
            key: key.clone(),
            needs: served.iter().map(|n| needs[*n].clone()).collect(),
            prune: removed,
            instance: instance.clone(),
            policy: merged.to_json(),
        },
        reason: reason.join("; "),
        bindings,
    });
}

/// The write is for the needs that were missing, and serves their bindings: the needs, and
/// the bindings not stopped.
fn served(
    m: &policy::Merge,
    owners: &[Vec<usize>],
    rs: &[&Ready],
    stopped: &BTreeSet<&BindingId>,
) -> (Vec<usize>, Vec<BindingId>) {
    let served: Vec<usize> = m.missing.iter().copied().filter(|n| !m.denied.iter().any(|(d, _)| d == n)).collect();
    let bindings: Vec<BindingId> = served
        .iter()
        .flat_map(|n| owners[*n].iter().map(|&i| &rs[i].id))
        .filter(|a| !stopped.contains(a))
        .cloned()
        .collect();
    (served, bindings)
}

/// Who a binding names in its key's policy: its group's service-linked role (by ARN, and
/// by unique id when the role was read) on a key of its own account, its account's root
/// on another account's key. Both the needs of the policy step and what prune keeps.
fn key_principal(b: &Binding, slr: &Slr, role_id: Option<&str>, key: &KeyArn) -> PrincipalIds {
    match b.is_cross_account() {
        true => PrincipalIds::account_root(&b.asg.account, key.partition()),
        false => PrincipalIds::role(&slr.arn(), role_id),
    }
}

/// Many bindings share one need (ASGs on the same role or account): each distinct need
/// once, with the indexes in `rs` of the bindings it stands for.
fn distinct_needs(key: &KeyArn, rs: &[&Ready]) -> (Vec<Need>, Vec<Vec<usize>>) {
    let mut needs: Vec<Need> = Vec::new();
    let mut owners: Vec<Vec<usize>> = Vec::new();
    let mut index: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for (i, r) in rs.iter().enumerate() {
        let cross = r.binding.is_cross_account();
        let who = if cross { r.binding.asg.account.root_arn(key.partition()) } else { r.slr.arn() };
        let at = *index.entry((cross, who)).or_insert_with(|| {
            let kind = if cross { NeedKind::AccountRoot } else { NeedKind::ServiceLinkedRole };
            needs.push(Need { who: key_principal(r.binding, &r.slr, r.role.map(|x| x.role_id.as_str()), key), kind });
            owners.push(Vec::new());
            needs.len() - 1
        });
        owners[at].push(i);
    }
    (needs, owners)
}

/// In case 2 the role uses the key through the grant, and a Deny on it in the owner's
/// policy overrides any grant: the bindings so stopped, blocked. Each role is checked
/// once per key.
fn denied_roles<'r>(
    step: &mut Step,
    key: &KeyArn,
    rs: &[&'r Ready<'r>],
    doc: &PolicyDocument,
) -> BTreeSet<&'r BindingId> {
    let mut stopped: BTreeSet<&BindingId> = BTreeSet::new();
    let mut denials: BTreeMap<&Slr, Option<String>> = BTreeMap::new();
    for r in rs.iter().filter(|r| r.binding.is_cross_account()) {
        let why = denials.entry(&r.slr).or_insert_with(|| {
            let ids = PrincipalIds::role(&r.slr.arn(), r.role.map(|x| x.role_id.as_str()));
            policy::denial(doc, &ids, key.as_str())
        });
        if let Some(why) = why {
            stopped.insert(&r.id);
            step.blocked.push((r.id.clone(), Failure::terminal(why.clone())));
        }
    }
    stopped
}

/// Principals to prune from the instance's statements, by key (its own ARN), each with
/// the reason.
type Pruned = BTreeMap<KeyArn, Vec<(String, String)>>;

/// What the prune step found.
#[derive(Debug, Default)]
struct Prunes {
    principals: Pruned,
    /// RetireGrant changes, made for no binding.
    grants: Vec<PlannedChange>,
    report: PruneReport,
}

/// The prune step (`prune` on): on each key whose policy this pass read, the principals
/// in this instance's statements that no binding of the config explains, and this
/// instance's grants for a role that no binding needs on that key. Derived from what AWS
/// shows, not from memory: a binding removed while the operator was down is found too.
///
/// Guard: nothing is pruned, unless mass pruning is allowed, when the daemon found that
/// the edit that led here removes more than half of the bindings (`prune_held`), when
/// the accesses pruned outnumber the bindings the whole config keeps, or when it keeps
/// none. Each access pruned is a role's use of a key that at least one removed binding
/// had, so that count never overstates the bindings removed. The report says why.
fn find_prunes(desired: &Desired, observed: &Observed, caller: &AccountId) -> Prunes {
    let mut out = Prunes::default();
    let op = &desired.operator;
    if !op.prune {
        return out;
    }
    let explained = Explained::of(desired, observed, caller);
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
        let gone = unexplained_principals(&doc, key, &explained, &op.instance);
        count += gone.len();
        count += prune_grants(key, observed, &explained, &gone, desired, caller, &mut out);
        if !gone.is_empty() {
            out.principals.insert(key.clone(), gone);
        }
    }
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
        for b in desired.bindings.iter().filter(|b| !is_handoff(b, desired, caller)) {
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
            let who = key_principal(b, &slr, role_id, &key);
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

/// Plans the retirement of `instance`'s grants on `key` that no binding needs, into
/// `out`. Returns the accesses they remove: a grant whose account's root also leaves the
/// key (`gone`) is that same access, counted once.
fn prune_grants(
    key: &KeyArn,
    observed: &Observed,
    explained: &Explained,
    gone: &[(String, String)],
    desired: &Desired,
    caller: &AccountId,
    out: &mut Prunes,
) -> usize {
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
        let root = account.root_arn(key.partition());
        if !gone.iter().any(|(p, _)| *p == root) {
            count += 1;
        }
        let slr = Slr { account, partition: key.partition(), suffix: suffix_of(&g.grantee_principal) };
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

/// The custom suffix of an Auto Scaling service-linked role, from its ARN.
fn suffix_of(arn: &str) -> Option<std::sync::Arc<str>> {
    let name = arn.rsplit('/').next()?;
    name.strip_prefix(crate::core::model::DEFAULT_SLR_NAME)?.strip_prefix('_').map(std::sync::Arc::from)
}

/// Step 4: the service-linked roles that do not exist yet, and the groups not yet on
/// their role (one update per group, however many keys it is bound to).
///
/// A group is switched only when every key it uses is ready for the new role: if one of
/// its bindings is blocked, the role it has today may be the one that can use that key,
/// and the switch would break launches that work. The switch is held, and each of the
/// group's other bindings is reported blocked by the key that holds it back, with that
/// key's failure class (a Deny is terminal; a failed read is retried).
fn plan_roles_and_asgs(desired: &Desired, ready: &[Ready], blocked: &BlockedSet) -> Step {
    let mut step = Step::default();
    let mut roles: BTreeMap<&Slr, Vec<BindingId>> = BTreeMap::new();
    let mut groups: BTreeMap<&AsgRef, Vec<&Ready>> = BTreeMap::new();
    for r in ready.iter().filter(|r| !blocked.contains_key(&r.id)) {
        if r.role.is_none() {
            roles.entry(&r.slr).or_default().push(r.id.clone());
        }
        groups.entry(&r.binding.asg).or_default().push(r);
    }
    for (slr, bindings) in roles {
        step.changes.push(PlannedChange {
            change: Change::CreateServiceLinkedRole { slr: slr.clone() },
            reason: format!("service-linked role {} does not exist in account {}", slr.name(), slr.account),
            bindings,
        });
    }
    // The first blocked binding of each group that has one: what holds its switch.
    let mut holders: BTreeMap<&AsgRef, (&KeyArn, &Failure)> = BTreeMap::new();
    for b in &desired.bindings {
        if let Some(f) = blocked.get(&b.id()) {
            holders.entry(&b.asg).or_insert((&b.key, f));
        }
    }
    for (asg, rs) in groups {
        let (want, have) = (rs[0].slr.arn(), rs[0].group.service_linked_role_arn.as_deref());
        if have == Some(want.as_str()) {
            continue;
        }
        if let Some((key, f)) = holders.get(asg) {
            let held = Failure {
                class: f.class,
                message: format!(
                    "group {} stays on {}: it is switched to {} only once every key it uses is ready for that role, and key {key} is not: {}",
                    asg.name,
                    have.unwrap_or("its current role"),
                    rs[0].slr.name(),
                    f.message
                ),
            };
            step.blocked.extend(rs.iter().map(|r| (r.id.clone(), held.clone())));
            continue;
        }
        step.changes.push(PlannedChange {
            reason: format!("ServiceLinkedRoleARN is {}; want {}", have.unwrap_or("unset"), rs[0].slr.name()),
            change: Change::UpdateAutoScalingGroup { asg: asg.clone(), service_linked_role_arn: want },
            bindings: rs.iter().map(|r| r.id.clone()).collect(),
        });
    }
    step
}

/// Step 5, `strategy: reencrypt`: the next write for each of a group's launch sources that
/// still uses another account's key ([`reencrypt::next`]). A copy may start at once; what
/// changes the group's launches waits until nothing else holds the binding, so the group
/// launches the own key only once its role may use it. A binding is converged only once
/// no source is left; until then it is blocked (a copy in progress waits, a state the
/// operator cannot change is terminal).
fn plan_reencrypt(ready: &[Ready], observed: &Observed, blocked: &BlockedSet, held: &BTreeSet<&BindingId>) -> Step {
    let mut step = Step::default();
    // One change per write, with every binding that needs it (groups sharing a template
    // or an image): by account, Region, the group for a write to the group alone, and
    // the write.
    let mut seen: BTreeMap<(AccountId, &str, &str, Write), usize> = BTreeMap::new();
    for r in ready.iter().filter(|r| r.binding.reencrypt_from.is_some() && !blocked.contains_key(&r.id)) {
        let launch = match lookup(&observed.launch_keys, &r.binding.asg, "read the group's launch template") {
            Ok(l) => l,
            Err(f) => {
                step.blocked.push((r.id.clone(), f));
                continue;
            }
        };
        let mut waiting = None;
        for s in &launch.sources {
            let (write, why) = match reencrypt::next(r.binding, r.key, launch, s, &observed.reencrypt) {
                Next::Done => continue,
                Next::Wait(f) => {
                    waiting.get_or_insert(f);
                    continue;
                }
                Next::Write { write, why } => (write, why),
            };
            let changes_launches = !matches!(write, Write::CopyImage { .. });
            if changes_launches && held.contains(&r.id) {
                continue;
            }
            let asg = &r.binding.asg;
            let alone = match write {
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => asg.name.as_str(),
                _ => "",
            };
            match seen.entry((asg.account, asg.region.as_str(), alone, write.clone())) {
                std::collections::btree_map::Entry::Occupied(at) => step.changes[*at.get()].bindings.push(r.id.clone()),
                std::collections::btree_map::Entry::Vacant(at) => {
                    at.insert(step.changes.len());
                    let change = Change::Reencrypt { asg: asg.clone(), key: r.key.clone(), write };
                    step.changes.push(PlannedChange { change, reason: why, bindings: vec![r.id.clone()] });
                }
            }
        }
        if let Some(f) = waiting {
            step.blocked.push((r.id.clone(), f));
        }
    }
    step
}

/// The plan: each change keeps only the bindings that are still unblocked (a change with
/// none left is dropped), in execution order.
///
/// A change made for no binding (a prune only) is kept.
fn assemble(changes: Vec<PlannedChange>, blocked: BlockedSet) -> Plan {
    let mut changes: Vec<PlannedChange> = changes
        .into_iter()
        .filter_map(|mut c| {
            let for_none = c.bindings.is_empty();
            c.bindings.retain(|b| !blocked.contains_key(b));
            (for_none || !c.bindings.is_empty()).then_some(c)
        })
        .collect();
    changes.sort_by_key(|c| c.change.phase());
    let blocked = blocked.into_iter().map(|(binding, failure)| Blocked { binding, failure }).collect();
    Plan { changes, blocked, notes: Vec::new(), prune: PruneReport::default() }
}

#[cfg(test)]
mod tests;
