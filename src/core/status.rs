//! "Can the group launch?" per binding, in the style of Kubernetes conditions: each
//! condition is `True`, `False` or `Unknown`, with a reason and a message, and a binding
//! is ready when all of them are `True`. Pure: computed from an observation.
//!
//! The conditions, in the order a launch needs them:
//! - `KeyUsable`: the key is Enabled and symmetric (or AWS managed);
//! - `RoleReady`: the group's service-linked role exists;
//! - `KeyPolicyReady`: the key policy lets the role (case 1) or the group's account (case
//!   2) use the key and create grants, and no Deny stops it;
//! - `GrantReady` (case 2 only): a complete grant for the role is on the key;
//! - `AsgUsesRole`: the group's `ServiceLinkedRoleARN` is that role;
//! - `LaunchesHealthy`: the group's most recent launch did not fail for a reason the
//!   bindings can cure. A launch that failed (or was cancelled) over KMS or a permission
//!   is `False`, reason `LaunchFailedKms`. One that failed for capacity, a quota, a subnet
//!   or any other reason is shown but is `True`, reason `LaunchFailedOther`: the operator
//!   cannot fix it, so it does not make the binding not ready.
//! - `ImagesReencrypted` (`strategy: reencrypt` only): the group launches no image or
//!   volume encrypted with another account's key; while it does, the step under way
//!   (`CopyInProgress`, `ReencryptPending`) or what stops it (`ReencryptBlocked`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::core::model::desired::{Binding, Desired};
use crate::core::model::observed::Observed;
use crate::core::model::{
    AccountId, AsgRef, BindingId, ErrorClass, Failure, KeyArn, KeyInfo, KeyManager, LaunchActivity, LaunchFailureClass,
    Role, Slr,
};
use crate::core::plan::{self, DryRun};
use crate::core::policy::{self, Need, NeedKind, PolicyDocument, PrincipalIds};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    True,
    False,
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: State,
    /// Shared: most bindings' reasons and messages are the same text as many others'
    /// (a key's, a role's), and the daemon keeps every binding's status.
    pub reason: Arc<str>,
    pub message: Arc<str>,
    /// When `status` last changed: Unix seconds.
    pub since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingStatus {
    pub binding: BindingId,
    pub conditions: Vec<Condition>,
}

impl BindingStatus {
    pub fn ready(&self) -> bool {
        self.conditions.iter().all(|c| c.status == State::True)
    }

    /// Whether no pass has read the group's launches for it yet.
    pub fn launches_unread(&self) -> bool {
        self.conditions.iter().any(|c| c.kind == "LaunchesHealthy" && &*c.reason == NOT_READ)
    }

    /// Whether the binding waits for a hand-off key's owner: its key policy is not ready
    /// for that reason alone.
    pub fn awaiting_owner(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| matches!(c.kind, "KeyPolicyReady" | "ImagesReencrypted") && &*c.reason == AWAITING_KEY_OWNER)
    }

    /// Whether the binding waits for work AWS is doing for it (an image copy).
    pub fn in_progress(&self) -> bool {
        self.conditions.iter().any(|c| c.kind == "ImagesReencrypted" && &*c.reason == COPY_IN_PROGRESS)
    }

    /// Keeps the transition times of conditions whose status did not change since
    /// `before`, and the `LaunchesHealthy` of `before` when this observation did not read
    /// launches (a quick pass).
    pub fn carry_over(&mut self, before: &BindingStatus) {
        for c in &mut self.conditions {
            let Some(old) = before.conditions.iter().find(|o| o.kind == c.kind) else { continue };
            if c.kind == "LaunchesHealthy" && &*c.reason == NOT_READ {
                *c = old.clone();
            } else if old.status == c.status {
                c.since = old.since;
            }
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_struct("Condition", 5)?;
        m.serialize_field("type", self.kind)?;
        m.serialize_field("status", self.status.as_str())?;
        m.serialize_field("reason", &*self.reason)?;
        m.serialize_field("message", &*self.message)?;
        m.serialize_field("lastTransitionTime", &rfc3339(self.since))?;
        m.end()
    }
}

impl Serialize for BindingStatus {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_struct("BindingStatus", 6)?;
        m.serialize_field("asg", &self.binding.asg.name)?;
        m.serialize_field("account", self.binding.asg.account.as_str())?;
        m.serialize_field("region", &self.binding.asg.region)?;
        m.serialize_field("key", self.binding.key.as_str())?;
        m.serialize_field("ready", &self.ready())?;
        m.serialize_field("conditions", &self.conditions)?;
        m.end()
    }
}

/// The reason of a `LaunchesHealthy` that this observation did not read.
const NOT_READ: &str = "NotRead";

/// The reason of a `LaunchesHealthy` whose launch failed for a reason the operator cannot
/// fix: the condition is `True`, and shown all the same.
pub const LAUNCH_FAILED_OTHER: &str = "LaunchFailedOther";

impl Condition {
    /// Whether `status` lists it: not `True`, or `True` with news (a launch that failed
    /// for a reason outside the operator's reach).
    pub fn notable(&self) -> bool {
        self.status != State::True || &*self.reason == LAUNCH_FAILED_OTHER
    }
}

/// The status of every binding of `desired`, as of `observed` (at `now`, Unix seconds).
pub fn evaluate(desired: &Desired, observed: &Observed, caller: &AccountId, now: u64) -> Vec<BindingStatus> {
    let mut memo = PolicyMemo::new();
    let mut texts = Texts::default();
    let mut statuses: Vec<BindingStatus> =
        desired.bindings.iter().map(|b| binding_status(b, desired, observed, caller, now, &mut memo)).collect();
    hold_switches(desired, &mut statuses);
    for s in &mut statuses {
        for c in &mut s.conditions {
            c.reason = texts.share(&c.reason);
            c.message = texts.share(&c.message);
        }
    }
    statuses
}

/// The conditions that say a key is ready for the group's role.
const KEY_READY: [&str; 4] = ["KeyUsable", "RoleReady", "KeyPolicyReady", "GrantReady"];

/// A group not yet on its role is switched only once every key it uses is ready for
/// that role (see the planner): the `AsgUsesRole` of each of its bindings names another
/// of its keys that holds it back. (A binding's own key says so in its own conditions.)
fn hold_switches(desired: &Desired, statuses: &mut [BindingStatus]) {
    type Holder<'a> = (&'a KeyArn, &'static str, State, Arc<str>);
    let mut holders: BTreeMap<&AsgRef, Vec<Holder>> = BTreeMap::new();
    for (b, s) in desired.bindings.iter().zip(statuses.iter()) {
        if let Some(c) = s.conditions.iter().find(|c| KEY_READY.contains(&c.kind) && c.status != State::True) {
            holders.entry(&b.asg).or_default().push((&b.key, c.kind, c.status, c.reason.clone()));
        }
    }
    for (b, s) in desired.bindings.iter().zip(statuses.iter_mut()) {
        let Some((key, kind, state, reason)) = holders.get(&b.asg).and_then(|h| h.iter().find(|h| h.0 != &b.key))
        else {
            continue;
        };
        let Some(c) = s.conditions.iter_mut().find(|c| c.kind == "AsgUsesRole" && &*c.reason == "OtherRole") else {
            continue;
        };
        c.reason = "HeldByKey".into();
        c.message = format!(
            "{}; the group is switched only once every key it uses is ready for the role, and key {key} is not ({kind} {}: {reason})",
            c.message,
            state.as_str()
        )
        .into();
    }
}

/// One copy of each reason and message text. At 10,000 bindings, a copy per condition
/// was 12 MB of the daemon's heap.
#[derive(Default)]
struct Texts(HashSet<Arc<str>>);

impl Texts {
    fn share(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.0.get(&**text) {
            return shared.clone();
        }
        self.0.insert(text.clone());
        text.clone()
    }
}

/// `KeyPolicyReady` depends only on the key, the need and the role: many bindings share
/// them, and each policy is parsed and read once.
type PolicyMemo = BTreeMap<(String, bool, String), Condition>;

fn binding_status(
    b: &Binding,
    desired: &Desired,
    observed: &Observed,
    caller: &AccountId,
    now: u64,
    memo: &mut PolicyMemo,
) -> BindingStatus {
    let mut j = Judge { b, observed, slr: b.slr(), now, aws_managed: false, resolved: None };
    if let Some(f) = plan::access_error(b, desired, caller).or_else(|| account_error(b, observed)) {
        let kinds = ["KeyUsable", "RoleReady", "KeyPolicyReady", "GrantReady", "AsgUsesRole", "LaunchesHealthy"];
        let conditions = kinds.iter().filter(|k| **k != "GrantReady" || b.is_cross_account());
        return BindingStatus { binding: b.id(), conditions: conditions.map(|k| j.unknown(k, &f)).collect() };
    }
    let info = observed.keys.get(&b.key);
    // An AWS managed key of the group's own account needs nothing; one of another account
    // can never be used.
    j.aws_managed =
        matches!(info, Some(Ok(i)) if i.manager == KeyManager::Aws && plan::aws_managed_elsewhere(b, i).is_none());
    j.resolved = match info {
        Some(Ok(i)) => Some(&i.arn),
        _ => None,
    };
    let mut out = vec![j.key_usable(info)];
    let role = observed.roles.get(&(j.slr.account, j.slr.name()));
    out.push(j.role_ready(role));
    let role_id = role.and_then(|r| r.as_ref().ok()).and_then(|r| r.as_ref()).map(|r| r.role_id.as_str());
    let ids = PrincipalIds::role(&j.slr.arn(), role_id);
    out.push(if j.aws_managed {
        j.c("KeyPolicyReady", State::True, "NotNeeded", "an AWS managed key's policy allows its use".into())
    } else if plan::is_handoff(b, desired, caller) {
        handoff_condition(b, observed, now)
    } else {
        j.key_policy_ready(&ids, memo)
    });
    if b.is_cross_account() {
        out.push(j.grant_ready(&ids));
    }
    out.push(j.asg_uses_role());
    out.push(j.launches_healthy());
    if b.reencrypt_from.is_some() {
        let (status, reason, message) = images_reencrypted(b, observed);
        out.push(j.c("ImagesReencrypted", status, reason, message));
    }
    BindingStatus { binding: b.id(), conditions: out }
}

/// What each condition of one binding is judged with, and one method per condition.
struct Judge<'a> {
    b: &'a Binding,
    observed: &'a Observed,
    slr: Slr,
    now: u64,
    /// The key is AWS managed and of the group's own account: it needs nothing.
    aws_managed: bool,
    /// The key as DescribeKey resolved it (an alias to its key).
    resolved: Option<&'a KeyArn>,
}

impl Judge<'_> {
    fn c(&self, kind: &'static str, status: State, reason: &str, message: String) -> Condition {
        Condition { kind, status, reason: reason.into(), message: message.into(), since: self.now }
    }

    fn unknown(&self, kind: &'static str, f: &Failure) -> Condition {
        self.c(kind, State::Unknown, "ReadFailed", f.message.clone())
    }

    fn not_needed(&self, kind: &'static str) -> Condition {
        self.c(kind, State::True, "NotNeeded", "an AWS managed key needs nothing of the group's role".into())
    }

    fn key_usable(&self, info: Option<&Result<KeyInfo, Failure>>) -> Condition {
        let (b, c) = (self.b, |s, r: &str, m| self.c("KeyUsable", s, r, m));
        match info {
            None => c(State::Unknown, NOT_READ, "the key was not described".into()),
            Some(Err(f)) if f.class == ErrorClass::AwaitingOwner => {
                c(State::Unknown, AWAITING_KEY_OWNER, f.message.clone())
            }
            Some(Err(f)) => self.unknown("KeyUsable", f),
            Some(Ok(i)) if !self.aws_managed && i.manager == KeyManager::Aws => c(
                State::False,
                "AwsManagedInOtherAccount",
                plan::aws_managed_elsewhere(b, i).map(|f| f.message).unwrap_or_default(),
            ),
            Some(Ok(i)) if i.manager == KeyManager::Aws => {
                c(State::True, "AwsManaged", format!("{} is AWS managed: it needs no key policy or grant", i.arn))
            }
            Some(Ok(i)) => match plan::unusable(&b.key, i) {
                Some(f) => c(State::False, &key_state_reason(&i.state, &i.spec), f.message),
                None => c(State::True, "Enabled", format!("{} is Enabled and symmetric", i.arn)),
            },
        }
    }

    fn role_ready(&self, role: Option<&Result<Option<Role>, Failure>>) -> Condition {
        let (slr, c) = (&self.slr, |s, r: &str, m| self.c("RoleReady", s, r, m));
        match role {
            _ if self.aws_managed => self.not_needed("RoleReady"),
            None => c(State::Unknown, NOT_READ, "the role was not read".into()),
            Some(Err(f)) => self.unknown("RoleReady", f),
            Some(Ok(Some(_))) => c(State::True, "Exists", format!("{} exists", slr.arn())),
            Some(Ok(None)) => c(State::False, "NotFound", format!("{} does not exist", slr.arn())),
        }
    }

    /// From the key's policy, read once for every binding with the same key, need and role.
    fn key_policy_ready(&self, ids: &PrincipalIds, memo: &mut PolicyMemo) -> Condition {
        let b = self.b;
        match self.resolved.and_then(|k| self.observed.key_policies.get(k).map(|p| (k, p))) {
            None => self.c("KeyPolicyReady", State::Unknown, NOT_READ, "the key policy was not read".into()),
            Some((_, Err(f))) => self.unknown("KeyPolicyReady", f),
            Some((key, Ok(text))) => memo
                .entry((key.to_string(), b.is_cross_account(), ids.canonical().to_owned()))
                .or_insert_with(|| key_policy_condition(b, key.as_str(), text, ids, self.now))
                .clone(),
        }
    }

    fn grant_ready(&self, ids: &PrincipalIds) -> Condition {
        let (slr, c) = (&self.slr, |s, r: &str, m| self.c("GrantReady", s, r, m));
        if self.aws_managed {
            return c(State::True, "NotNeeded", "an AWS managed key needs no grant".into());
        }
        match self.resolved.and_then(|k| self.observed.grants.get(k)) {
            None => c(State::Unknown, NOT_READ, "the grants were not listed".into()),
            Some(Err(f)) => self.unknown("GrantReady", f),
            Some(Ok(grants)) => {
                let mine = grants.iter().filter(|g| ids.matches(&g.grantee_principal));
                match mine.clone().find(|g| plan::grant_is_sufficient(g)) {
                    Some(g) => {
                        c(State::True, "Complete", format!("grant {} gives {} what EBS needs", g.grant_id, slr.arn()))
                    }
                    None if mine.count() > 0 => c(
                        State::False,
                        "Incomplete",
                        format!("the grants for {} lack operations or carry constraints", slr.arn()),
                    ),
                    None => c(State::False, "Missing", format!("no grant on the key for {}", slr.arn())),
                }
            }
        }
    }

    fn asg_uses_role(&self) -> Condition {
        let (b, slr, c) = (self.b, &self.slr, |s, r: &str, m| self.c("AsgUsesRole", s, r, m));
        match self.observed.asgs.get(&b.asg) {
            _ if self.aws_managed => self.not_needed("AsgUsesRole"),
            None => c(State::Unknown, NOT_READ, "the group was not described".into()),
            Some(Err(f)) => self.unknown("AsgUsesRole", f),
            Some(Ok(None)) => c(State::False, "AsgNotFound", format!("no group {} in {}", b.asg.name, b.asg.region)),
            Some(Ok(Some(g))) if g.service_linked_role_arn.as_deref() == Some(slr.arn().as_str()) => {
                c(State::True, "UsesRole", format!("the group launches with {}", slr.name()))
            }
            Some(Ok(Some(g))) => c(
                State::False,
                "OtherRole",
                format!(
                    "ServiceLinkedRoleARN is {}; want {}",
                    g.service_linked_role_arn.as_deref().unwrap_or("unset"),
                    slr.arn()
                ),
            ),
        }
    }

    fn launches_healthy(&self) -> Condition {
        let c = |s, r: &str, m| self.c("LaunchesHealthy", s, r, m);
        match self.observed.launches.get(&self.b.asg) {
            None => c(State::Unknown, NOT_READ, "recent launches were not read".into()),
            Some(Err(f)) => self.unknown("LaunchesHealthy", f),
            Some(Ok(None)) => c(State::True, "NoRecentLaunch", "no launch among the recent scaling activities".into()),
            Some(Ok(Some(a))) if a.failed() => self.launch_failed(a),
            Some(Ok(Some(a))) => c(State::True, "LastLaunch", format!("the most recent launch is {}", a.status_code)),
        }
    }

    /// The most recent launch failed: over KMS or a permission, or for another reason.
    fn launch_failed(&self, a: &LaunchActivity) -> Condition {
        let keys: Vec<_> = std::iter::once(&self.b.key).chain(self.resolved).collect();
        let (status, reason, why) = match a.failure_class(&keys) {
            Some(LaunchFailureClass::Other) => {
                (State::True, LAUNCH_FAILED_OTHER, ", for a reason the key's permissions cannot cure")
            }
            _ => (State::False, "LaunchFailedKms", " over KMS or a permission"),
        };
        self.c(
            "LaunchesHealthy",
            status,
            reason,
            format!(
                "the most recent launch{} {}{why}: {}",
                a.start_time.as_deref().map(|t| format!(" (at {t})")).unwrap_or_default(),
                if a.status_code == "Cancelled" { "was cancelled" } else { "failed" },
                a.status_message.as_deref().unwrap_or("no status message")
            ),
        )
    }
}

/// `strategy: reencrypt`: whether every source the group launches from uses only keys of
/// its own account, and if not, the next step ([`crate::core::reencrypt::next`]).
fn images_reencrypted(b: &Binding, observed: &Observed) -> (State, &'static str, String) {
    let launch = match observed.launch_keys.get(&b.asg) {
        None => return (State::Unknown, NOT_READ, "the group's launch template was not read".into()),
        Some(Err(f)) => return (State::Unknown, "ReadFailed", f.message.clone()),
        Some(Ok(l)) => l,
    };
    let Some(Ok(own)) = observed.keys.get(&b.key) else {
        return (State::Unknown, NOT_READ, format!("key {} was not described", b.key));
    };
    for s in &launch.sources {
        match crate::core::reencrypt::next(b, &own.arn, launch, s, &observed.reencrypt) {
            crate::core::reencrypt::Next::Done => {}
            crate::core::reencrypt::Next::Write { why, .. } => return (State::False, "ReencryptPending", why),
            crate::core::reencrypt::Next::Wait(f) => {
                let reason = match f.class {
                    ErrorClass::InProgress => COPY_IN_PROGRESS,
                    ErrorClass::AwaitingOwner => AWAITING_KEY_OWNER,
                    ErrorClass::Terminal => "ReencryptBlocked",
                    _ => "ReadFailed",
                };
                return (State::False, reason, f.message);
            }
        }
    }
    (
        State::True,
        "OwnKeyOnly",
        format!("the group launches only images and volumes encrypted with keys of account {}", b.asg.account),
    )
}

/// The reason of `ImagesReencrypted` while an image copy is pending.
pub const COPY_IN_PROGRESS: &str = "CopyInProgress";

/// The reason of a hand-off binding's `KeyPolicyReady` while the key's owner has not yet
/// let the group's account use the key; its message holds the statements to add.
pub const AWAITING_KEY_OWNER: &str = "AwaitingKeyOwner";

/// A `KeyPolicyReady` condition as of `now`, from its status, reason and message.
fn policy_condition(now: u64) -> impl Fn(State, &str, String) -> Condition {
    move |status, reason, message| Condition {
        kind: "KeyPolicyReady",
        status,
        reason: reason.into(),
        message: message.into(),
        since: now,
    }
}

/// `KeyPolicyReady` of a hand-off key ([`plan::is_handoff`]): its policy cannot be read,
/// so what counts is KMS's answer to a dry run of the grant, made by the group's account.
fn handoff_condition(b: &Binding, observed: &Observed, now: u64) -> Condition {
    let c = policy_condition(now);
    let waiting = |why: String| c(State::False, AWAITING_KEY_OWNER, plan::awaiting_owner(b, &why).message);
    if b.key.is_alias() {
        return c(
            State::False,
            "AliasAcrossAccounts",
            "a key of an account without credentials here must be named by its key ARN".into(),
        );
    }
    if let Some(Err(f)) = observed.keys.get(&b.key) {
        if f.class == ErrorClass::AwaitingOwner {
            return waiting(format!("account {} may not describe it yet", b.asg.account));
        }
    }
    match observed.handoff.get(&(b.key.clone(), b.slr())) {
        None => c(State::Unknown, NOT_READ, "the owner's key policy was not checked".into()),
        Some(Err(f)) => c(State::Unknown, "ReadFailed", f.message.clone()),
        Some(Ok(DryRun::Refused)) => {
            waiting(format!("a dry run of CreateGrant by account {} was refused", b.asg.account))
        }
        Some(Ok(DryRun::GranteeUnknown)) => c(
            State::Unknown,
            "GranteeUnknown",
            format!("KMS does not know {} yet; the dry run is made again once it does", b.slr().arn()),
        ),
        Some(Ok(DryRun::Allowed)) => c(
            State::True,
            "OwnerAllows",
            format!(
                "a dry run of the grant by account {} succeeds: the owner's key policy lets it use the key and create grants",
                b.asg.account
            ),
        ),
    }
}

fn account_error(b: &Binding, observed: &Observed) -> Option<Failure> {
    [&b.asg.account, b.key.account()].into_iter().find_map(|a| {
        observed
            .account_errors
            .get(a)
            .map(|f| Failure { class: f.class, message: format!("credentials for account {a}: {}", f.message) })
    })
}

fn key_state_reason(state: &str, spec: &str) -> String {
    match state {
        "Enabled" if spec != "SYMMETRIC_DEFAULT" => "NotSymmetric".into(),
        other => format!("Key{other}"),
    }
}

/// Whether the policy gives this binding's principal what it needs, read by meaning.
fn key_policy_condition(b: &Binding, key: &str, text: &str, role: &PrincipalIds, now: u64) -> Condition {
    let c = policy_condition(now);
    let doc = match PolicyDocument::parse(text) {
        Ok(d) => d,
        Err(e) => return c(State::False, "Unreadable", e.to_string()),
    };
    let need = if b.is_cross_account() {
        Need { who: PrincipalIds::account_root(&b.asg.account, b.key.partition()), kind: NeedKind::AccountRoot }
    } else {
        Need { who: role.clone(), kind: NeedKind::ServiceLinkedRole }
    };
    let denied = if b.is_cross_account() { policy::denial(&doc, role, key) } else { None };
    match (denied, policy::ensure(&doc, key, std::slice::from_ref(&need), &Default::default())) {
        (Some(why), _) => c(State::False, "Denied", why),
        (None, Err(e)) => c(State::False, "Unwritable", e.to_string()),
        (None, Ok(m)) if !m.denied.is_empty() => c(State::False, "Denied", m.denied[0].1.clone()),
        (None, Ok(m)) if m.document.is_some() => c(State::False, "Missing", m.added.join("; ")),
        (None, Ok(_)) => c(
            State::True,
            "Allows",
            format!("the key policy lets {} use the key and create grants", need.who.canonical()),
        ),
    }
}

/// The document `status` prints and the daemon serves on /status, written straight from
/// the statuses (no intermediate JSON tree: with thousands of bindings that tree cost
/// more memory than everything else the daemon keeps).
pub fn document<'a, I>(statuses: I) -> String
where
    I: IntoIterator<Item = &'a BindingStatus>,
    I::IntoIter: Clone,
{
    struct Doc<I>(I);
    impl<'a, I: Iterator<Item = &'a BindingStatus> + Clone> Serialize for Doc<I> {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            let mut m = ser.serialize_struct("Status", 2)?;
            m.serialize_field("ready", &self.0.clone().all(BindingStatus::ready))?;
            m.serialize_field("bindings", &Seq(self.0.clone()))?;
            m.end()
        }
    }
    struct Seq<I>(I);
    impl<'a, I: Iterator<Item = &'a BindingStatus> + Clone> Serialize for Seq<I> {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            ser.collect_seq(self.0.clone())
        }
    }
    serde_json::to_string_pretty(&Doc(statuses.into_iter())).expect("statuses serialise: every key is a string")
}

/// One line per binding and one per condition that is not `True` or is
/// [notable](Condition::notable).
pub fn text(statuses: &[BindingStatus]) -> String {
    let mut s = String::new();
    for b in statuses {
        s.push_str(&format!("{} {}\n", if b.ready() { "ready    " } else { "NOT READY" }, b.binding));
        for c in b.conditions.iter().filter(|c| c.notable()) {
            s.push_str(&format!("    {} {} ({}): {}\n", c.kind, c.status.as_str(), c.reason, c.message));
        }
    }
    let ready = statuses.iter().filter(|s| s.ready()).count();
    s.push_str(&format!(
        "\n{ready} of {} binding{} ready.\n",
        statuses.len(),
        if statuses.len() == 1 { "" } else { "s" }
    ));
    s
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC; the civil-from-days algorithm of Howard
/// Hinnant's date library).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The statuses of the bindings in `statuses`, by binding.
pub fn by_binding(statuses: Vec<BindingStatus>) -> BTreeMap<BindingId, BindingStatus> {
    statuses.into_iter().map(|s| (s.binding.clone(), s)).collect()
}

pub mod board;

#[cfg(test)]
mod tests;
