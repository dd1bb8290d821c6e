//! One binding's conditions of what its key needs (`KeyUsable`, `RoleReady`,
//! `KeyPolicyReady`, `GrantReady`) and of its group (`AsgUsesRole`), each with what it
//! means for the binding. Stops are ranked in the order a launch needs its parts, so a
//! binding is reported by the first thing that stops it.

use super::condition::{Kind, Reason, State};
use super::handoff::{awaiting_owner, handoff_policy};
use super::key::{GrantView, KeyView};
use super::launches::{images_reencrypted, launches_healthy};
use super::parts::{account_error, entry, rank, stop_fail, stop_wait, Cx, Effect, Entry, Judging, Parts, Stop};
use crate::core::model::desired::Binding;
use crate::core::model::select::RefusalReason;
use crate::core::model::{Failure, KeyArn, KeyInfo, KeyManager, Wait};
use crate::core::naming::is_operators_grant;
use crate::core::policy::{Need, NeedKind, PrincipalIds};

/// One binding's conditions and what the planner needs of it.
pub(crate) fn judge_binding<'a>(b: &'a Binding, cx: &mut Cx<'a>) -> Judging<'a> {
    let mut j = Judging { binding: b, entries: Vec::new(), facts: None };
    let now = cx.ctx.now;
    if let Some(f) = cx.desired.unreachable(b, cx.caller).or_else(|| account_error(b, cx.observed)) {
        let mut kinds = vec![Kind::KeyUsable, Kind::RoleReady, Kind::KeyPolicyReady];
        if b.is_cross_account() {
            kinds.push(Kind::GrantReady);
        }
        kinds.extend([Kind::AsgUsesRole, Kind::LaunchesHealthy]);
        for (i, kind) in kinds.into_iter().enumerate() {
            let effect = if i == 0 { Effect::Stop(rank::ACCESS, Stop::Fail(f.clone())) } else { Effect::None };
            j.entries.push(entry(kind, State::Unknown, Reason::ReadFailed, f.message.clone(), effect, now));
        }
        return j;
    }
    if let Some(r) = b.origin.refused() {
        // A selector's group that gets nothing: nothing was read for it either.
        let reason = match r.reason {
            RefusalReason::KeyNotAllowed => Reason::KeyNotAllowed,
            RefusalReason::SelectorConflict => Reason::SelectorConflict,
            RefusalReason::LaunchKeysUnknown => Reason::LaunchKeysUnknown,
        };
        let f = Failure::terminal(r.message.to_string());
        let stop = Effect::Stop(rank::ACCESS, Stop::Refuse(f));
        j.entries.push(entry(Kind::KeyAllowed, State::False, reason, r.message.to_string(), stop, now));
        return j;
    }
    let p = Parts::of(b, cx);
    if let Some(s) = b.origin.selector() {
        let message = format!("selector {s} allows every customer managed key the group launches with");
        j.entries.push(entry(Kind::KeyAllowed, State::True, Reason::InAllowedKeys, message, Effect::None, now));
    }
    j.entries.push(key_usable(&p, now));
    j.entries.push(role_ready(&p, now));
    let (policy, need) = key_policy_ready(&p, cx);
    j.entries.push(policy);
    if b.is_cross_account() {
        j.entries.push(grant_ready(&p, cx));
    }
    j.entries.push(asg_uses_role(&p, now));
    j.entries.push(launches_healthy(&p, cx.ctx));
    let mut writes = Vec::new();
    if b.reencrypt_from.is_some() {
        j.entries.push(images_reencrypted(&p, &mut writes, now));
    }
    j.facts = p.facts(need, writes, &j);
    j
}

/// Who a binding names in its key's policy: its group's service-linked role (by ARN, and
/// by unique id when the role was read) on a key of its own account, its account's root
/// on another account's key (`key`, its own ARN). Both the needs the judgement weighs
/// and what prune keeps.
pub fn key_principal(b: &Binding, role_id: Option<&str>, key: &KeyArn) -> PrincipalIds {
    match b.is_cross_account() {
        true => PrincipalIds::account_root(&b.asg.account, key.partition()),
        false => PrincipalIds::role(&b.slr().arn(), role_id),
    }
}

fn key_usable(p: &Parts, _now: u64) -> Entry {
    let k = Kind::KeyUsable;
    let b = p.b;
    match p.info {
        None => p.not_observed(k, rank::KEY, "describe key"),
        Some(Err(f)) if p.describe_denied() => {
            let why = awaiting_owner(b, &format!("account {} may not describe it yet", b.asg.account));
            p.c(
                k,
                State::Unknown,
                Reason::AwaitingKeyOwner,
                f.message.clone(),
                stop_wait(rank::KEY, Wait::KeyOwner, why),
            )
        }
        Some(Err(f)) => p.read_failed(k, rank::KEY, "describe key", f),
        Some(Ok(i)) if i.manager == KeyManager::Aws && !p.aws_managed => {
            let f = aws_managed_elsewhere(b, i);
            p.c(k, State::False, Reason::AwsManagedInOtherAccount, f.message.clone(), stop_fail(rank::KEY, f))
        }
        Some(Ok(i)) if i.manager == KeyManager::Aws => p.c(
            k,
            State::True,
            Reason::AwsManaged,
            format!("{} is AWS managed: it needs no key policy or grant", i.arn),
            Effect::None,
        ),
        Some(Ok(i)) => match unusable(&b.key, i) {
            Some(f) => {
                let reason = Reason::of_key_state(&i.state, &i.spec);
                p.c(k, State::False, reason, f.message.clone(), stop_fail(rank::KEY, f))
            }
            None => p.c(k, State::True, Reason::Enabled, format!("{} is Enabled and symmetric", i.arn), Effect::None),
        },
    }
}

/// Why a group cannot use an AWS managed key of another account: such a key's policy
/// allows use only to callers in its own account (`kms:CallerAccount`), and can be neither
/// changed nor granted across accounts (KMS Developer Guide, "AWS managed keys").
fn aws_managed_elsewhere(b: &Binding, info: &KeyInfo) -> Failure {
    Failure::terminal(format!(
        "key {} is an AWS managed key of account {}: its policy lets only that account use it (kms:CallerAccount), and it cannot be changed or granted, so group {} in account {} can never use it; use a customer managed key (or the account's own AWS managed key)",
        info.arn,
        info.arn.account(),
        b.asg.name,
        b.asg.account
    ))
}

/// Why EBS cannot use a key, if it cannot: it must be Enabled (KMS Developer Guide, "Key
/// states of AWS KMS keys") and symmetric (EBS supports only symmetric keys). Nothing is
/// written for such a key; the failure is terminal until someone changes the key.
fn unusable(configured: &KeyArn, info: &KeyInfo) -> Option<Failure> {
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

fn role_ready(p: &Parts, _now: u64) -> Entry {
    let k = Kind::RoleReady;
    match p.role {
        _ if p.aws_managed => p.not_needed(k, "an AWS managed key needs nothing of the group's role"),
        None => p.not_observed(k, rank::ROLE, "get service-linked role"),
        Some(Err(f)) => p.read_failed(k, rank::ROLE, "get service-linked role", f),
        Some(Ok(Some(_))) => p.c(k, State::True, Reason::Exists, format!("{} exists", p.slr.arn()), Effect::None),
        Some(Ok(None)) => {
            p.c(k, State::False, Reason::NotFound, format!("{} does not exist", p.slr.arn()), Effect::Remedy)
        }
    }
}

/// `KeyPolicyReady`, and the binding's need among its key's needs (a key whose policy
/// the operator reads).
fn key_policy_ready(p: &Parts, cx: &mut Cx) -> (Entry, Option<usize>) {
    let k = Kind::KeyPolicyReady;
    if p.aws_managed {
        return (p.not_needed(k, "an AWS managed key's policy allows its use"), None);
    }
    if p.handoff {
        return (handoff_policy(p), None);
    }
    let Some(key) = p.resolved else {
        return (p.c(k, State::Unknown, Reason::NotRead, "the key policy was not read".into(), Effect::None), None);
    };
    let text = match p.observed.key_policies.get(key) {
        None => return (p.not_observed(k, rank::POLICY_READ, "get key policy"), None),
        Some(Err(f)) => return (p.read_failed(k, rank::POLICY_READ, "get key policy", f), None),
        Some(Ok(t)) => t,
    };
    let view = cx.keys.entry(key.clone()).or_insert_with(|| KeyView::of(text, &p.instance));
    if let Err(e) = &view.doc {
        let f = Failure::terminal(format!("key policy of {key}: {e}"));
        return (p.c(k, State::False, Reason::Unreadable, f.message.clone(), stop_fail(rank::POLICY, f)), None);
    }
    let b = p.b;
    if b.is_cross_account() {
        // The role uses the key through the grant, and a Deny on it in the owner's
        // policy overrides any grant.
        if let Some(why) = view.denial(key, &p.slr, &p.ids) {
            return (
                p.c(k, State::False, Reason::Denied, why.clone(), stop_fail(rank::POLICY, Failure::terminal(why))),
                None,
            );
        }
    }
    let kind = if b.is_cross_account() { NeedKind::AccountRoot } else { NeedKind::ServiceLinkedRole };
    let need = Need { who: key_principal(b, p.ids.unique_id(), key), kind };
    let who = need.who.canonical().to_owned();
    let at = view.need(key, need).expect("the document parsed");
    let n = &view.needs[at];
    let e = match &n.gap {
        Err(why) => {
            p.c(k, State::False, Reason::Denied, why.clone(), stop_fail(rank::POLICY, Failure::terminal(why.clone())))
        }
        Ok(g) if !g.any() => p.c(
            k,
            State::True,
            Reason::Allows,
            format!("the key policy lets {who} use the key and create grants"),
            Effect::None,
        ),
        Ok(_) => match &view.refusal {
            Some(why) => {
                let f = Failure::terminal(format!("key policy of {key}: {why}"));
                p.c(k, State::False, Reason::Unwritable, f.message.clone(), stop_fail(rank::POLICY, f))
            }
            None => p.c(k, State::False, Reason::Missing, n.lines().join("; "), Effect::Remedy),
        },
    };
    (e, Some(at))
}

fn grant_ready(p: &Parts, cx: &mut Cx) -> Entry {
    let k = Kind::GrantReady;
    if p.aws_managed {
        return p.not_needed(k, "an AWS managed key needs no grant");
    }
    let what = if p.handoff { "list retirable grants" } else { "list grants" };
    let Some(key) = p.resolved else {
        return p.c(k, State::Unknown, Reason::NotRead, "the grants were not listed".into(), Effect::None);
    };
    let grants = match p.observed.grants.get(key) {
        None => return p.not_observed(k, rank::GRANTS_READ, what),
        Some(Err(f)) => return p.read_failed(k, rank::GRANTS_READ, what, f),
        Some(Ok(g)) => g,
    };
    let (slr, instance) = (&p.slr, &p.instance);
    let view = cx
        .grants
        .entry((key.clone(), slr.clone()))
        .or_insert_with(|| GrantView::of(grants, &p.ids, |g| is_operators_grant(g.name.as_deref(), slr, instance)));
    let arn = slr.arn();
    match (&view.complete, &view.foreign_short) {
        (Some(g), _) => {
            p.c(k, State::True, Reason::Complete, format!("grant {g} gives {arn} what EBS needs"), Effect::None)
        }
        (None, Some(g)) => {
            let f = Failure::terminal(format!(
                "grant {g} on {key} for {arn} lacks operations or has constraints; it is not the operator's to change: revoke it so the operator can create a complete one"
            ));
            p.c(k, State::False, Reason::Incomplete, f.message.clone(), stop_fail(rank::GRANT, f))
        }
        (None, None) if view.any => p.c(
            k,
            State::False,
            Reason::Incomplete,
            format!("the grants for {arn} lack operations or carry constraints"),
            Effect::Remedy,
        ),
        (None, None) => p.c(k, State::False, Reason::Missing, format!("no grant on the key for {arn}"), Effect::Remedy),
    }
}

fn asg_uses_role(p: &Parts, _now: u64) -> Entry {
    let (k, b, slr) = (Kind::AsgUsesRole, p.b, &p.slr);
    match p.observed.asgs.get(&b.asg) {
        None => p.not_observed(k, rank::GROUP, "describe ASG"),
        Some(Err(f)) => p.read_failed(k, rank::GROUP, "describe ASG", f),
        Some(Ok(None)) => {
            let f = Failure::terminal(format!(
                "ASG {} not found in account {} region {}",
                b.asg.name, b.asg.account, b.asg.region
            ));
            p.c(k, State::False, Reason::AsgNotFound, f.message.clone(), stop_fail(rank::GROUP, f))
        }
        _ if p.aws_managed => p.not_needed(k, "an AWS managed key needs nothing of the group's role"),
        Some(Ok(Some(g))) if uses(g, slr, b.origin.managed_by().is_some()) => match b.origin.managed_by() {
            Some(by) => p.c(
                k,
                State::True,
                Reason::ManagedByService,
                format!("the group is an {by}: it keeps its role {}, which its keys are made ready for, and the operator never updates it", slr.name()),
                Effect::None,
            ),
            None => p.c(k, State::True, Reason::UsesRole, format!("the group launches with {}", slr.name()), Effect::None),
        },
        Some(Ok(Some(g))) if b.origin.managed_by().is_some() => {
            let f = Failure::terminal(format!(
                "the group is an {}, which the operator never updates, and its role is now {}, not {}: the next sweep makes the key ready for the role it has",
                b.origin.managed_by().expect("checked"),
                g.service_linked_role_arn.as_deref().unwrap_or("the default role"),
                slr.arn()
            ));
            p.c(k, State::False, Reason::ManagedByService, f.message.clone(), Effect::Stop(rank::GROUP, Stop::Refuse(f)))
        }
        Some(Ok(Some(g))) => p.c(
            k,
            State::False,
            Reason::OtherRole,
            format!(
                "ServiceLinkedRoleARN is {}; want {}",
                g.service_linked_role_arn.as_deref().unwrap_or("unset"),
                slr.arn()
            ),
            Effect::Remedy,
        ),
    }
}

/// Whether the group launches with `slr`: named by its ARN, or, for a group another
/// service manages (whose role the operator never sets), by no role at all when `slr` is
/// the default one, which is what a group that names none uses.
fn uses(g: &crate::core::model::Asg, slr: &crate::core::model::Slr, managed: bool) -> bool {
    match g.service_linked_role_arn.as_deref() {
        Some(arn) => arn == slr.arn(),
        None => managed && slr.suffix.is_none(),
    }
}
