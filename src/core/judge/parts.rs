//! What judging one binding works with: the parts read for it, and what each condition
//! means for it (nothing, a remedy, a ranked stop, or a word on its launches).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::condition::{Condition, Kind, Reason, State};
use super::key::{GrantView, KeyView};
use super::Context;
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, Asg, ErrorClass, Failure, KeyArn, KeyInfo, KeyManager, Role, Slr, Wait};
use crate::core::policy::PrincipalIds;
use crate::core::reencrypt::Write;

/// Ranks of stops, in the order the parts of a launch are read and needed.
pub(crate) mod rank {
    /// The group's account cannot be acted in, or its credentials could not be had.
    pub const ACCESS: u8 = 0;
    /// The group could not be described, or does not exist.
    pub const GROUP: u8 = 1;
    /// A hand-off key named by an alias.
    pub const ALIAS: u8 = 2;
    /// The key could not be described, or EBS cannot use it.
    pub const KEY: u8 = 3;
    pub const ROLE: u8 = 4;
    /// A hand-off key's dry run of the grant.
    pub const DRY_RUN: u8 = 5;
    pub const POLICY_READ: u8 = 6;
    pub const GRANTS_READ: u8 = 7;
    /// A grant for the role that someone else made and that falls short.
    pub const GRANT: u8 = 8;
    /// The key policy: unreadable, a Deny, or a write KMS would refuse.
    pub const POLICY: u8 = 9;
    /// Re-encryption: a copy the key's owner must allow or EC2 is making, or a state the
    /// operator cannot change.
    pub const IMAGES: u8 = 11;
}

/// What one condition means for the binding.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    None,
    /// A write the planner makes can make it true.
    Remedy,
    /// The binding cannot go on this pass: ranked (see [`rank`]).
    Stop(u8, Stop),
    /// Says nothing of the permissions: the group's launches. Decides the verdict only
    /// when nothing else does.
    Launch(LaunchEffect),
}

#[derive(Debug, Clone)]
pub(crate) enum Stop {
    Wait(Wait, String),
    Fail(Failure),
    /// Nothing is done for the binding, and trying again will not change that until its
    /// config, its group's tags or what the group launches with change: looked at again
    /// at the next resync or sweep.
    Refuse(Failure),
}

#[derive(Debug, Clone)]
pub(crate) enum LaunchEffect {
    /// The launch failed over KMS, or its read failed.
    Failed(Failure),
    /// Never read for this binding: a full pass is owed.
    Unread,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub condition: Condition,
    pub effect: Effect,
}

/// What the planner writes from: the parts of a binding that every read found.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The key's own ARN (an alias resolved).
    pub key: &'a KeyArn,
    pub slr: Slr,
    pub role: Option<&'a Role>,
    pub group: &'a Asg,
    /// A hand-off key's: its policy is never read or written.
    pub handoff: bool,
    /// The binding's need in its key's policy, by index into that key's
    /// [`KeyView::needs`]; None for a hand-off key.
    pub need: Option<usize>,
    /// `strategy: reencrypt`: the next write of each launch source that has one.
    pub reencrypt: Vec<(Write, String)>,
}

/// One binding being judged.
pub(crate) struct Judging<'a> {
    pub binding: &'a Binding,
    pub entries: Vec<Entry>,
    pub facts: Option<Facts<'a>>,
}

impl Judging<'_> {
    pub fn entry(&self, kind: Kind) -> Option<&Entry> {
        self.entries.iter().find(|e| e.condition.kind == kind)
    }

    pub fn entry_mut(&mut self, kind: Kind) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.condition.kind == kind)
    }

    /// The first stop, by rank.
    pub fn stop(&self) -> Option<(u8, &Stop)> {
        self.entries
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::Stop(r, s) => Some((*r, s)),
                _ => None,
            })
            .min_by_key(|(r, _)| *r)
    }

    pub fn remedies(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.effect, Effect::Remedy))
    }
}

/// What every binding is judged with: the desired and observed states, and each key's
/// policy and grants, read once for all the bindings that share them.
pub(crate) struct Cx<'a> {
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub caller: &'a AccountId,
    pub ctx: &'a Context<'a>,
    pub keys: BTreeMap<KeyArn, KeyView>,
    pub grants: BTreeMap<(KeyArn, Slr), GrantView>,
}

/// What was read for one binding, and what it is.
pub(super) struct Parts<'a> {
    pub b: &'a Binding,
    pub observed: &'a Observed,
    pub instance: crate::core::model::Instance,
    pub now: u64,
    pub slr: Slr,
    pub info: Option<&'a Result<KeyInfo, Failure>>,
    /// The key as DescribeKey resolved it (an alias to its key).
    pub resolved: Option<&'a KeyArn>,
    /// An AWS managed key of the group's own account: it needs nothing.
    pub aws_managed: bool,
    pub handoff: bool,
    pub role: Option<&'a Result<Option<Role>, Failure>>,
    pub ids: PrincipalIds,
}

impl<'a> Parts<'a> {
    pub fn of(b: &'a Binding, cx: &Cx<'a>) -> Self {
        let info = cx.observed.keys.get(&b.key);
        let slr = b.slr();
        let role = cx.observed.roles.get(&(slr.account, slr.name()));
        let role_id = role.and_then(|r| r.as_ref().ok()).and_then(|r| r.as_ref()).map(|r| r.role_id.as_str());
        let ids = PrincipalIds::role(&slr.arn(), role_id);
        Parts {
            b,
            observed: cx.observed,
            instance: cx.desired.operator.instance.clone(),
            now: cx.ctx.now,
            info,
            resolved: match info {
                Some(Ok(i)) => Some(&i.arn),
                _ => None,
            },
            aws_managed: matches!(info, Some(Ok(i)) if i.manager == KeyManager::Aws && i.arn.account() == &b.asg.account),
            handoff: cx.desired.is_handoff(b, cx.caller),
            role,
            ids,
            slr,
        }
    }

    pub fn c(&self, kind: Kind, status: State, reason: Reason, message: String, effect: Effect) -> Entry {
        entry(kind, status, reason, message, effect, self.now)
    }

    /// A read that was not made: the binding cannot be planned for this pass.
    pub fn not_observed(&self, kind: Kind, rank: u8, what: &str) -> Entry {
        let f = Failure { class: ErrorClass::Retryable, message: format!("{what}: not observed") };
        self.c(kind, State::Unknown, Reason::NotRead, f.message.clone(), Effect::Stop(rank, Stop::Fail(f)))
    }

    /// A read that failed, with its class.
    pub fn read_failed(&self, kind: Kind, rank: u8, what: &str, f: &Failure) -> Entry {
        let f = Failure { class: f.class, message: format!("{what}: {}", f.message) };
        self.c(kind, State::Unknown, Reason::ReadFailed, f.message.clone(), Effect::Stop(rank, Stop::Fail(f)))
    }

    pub fn not_needed(&self, kind: Kind, message: &str) -> Entry {
        self.c(kind, State::True, Reason::NotNeeded, message.to_owned(), Effect::None)
    }

    /// Whether the key's owner has not let the group's account describe a hand-off key yet.
    pub fn describe_denied(&self) -> bool {
        self.handoff && matches!(self.info, Some(Err(f)) if f.message.contains("AccessDenied"))
    }

    /// What the planner writes from, once every part was read; none for an AWS managed
    /// key (nothing to write) or a binding whose reads fell short.
    pub fn facts(&self, need: Option<usize>, reencrypt: Vec<(Write, String)>, j: &Judging) -> Option<Facts<'a>> {
        if self.aws_managed || j.stop().is_some_and(|(r, _)| r <= rank::GRANTS_READ) {
            return None;
        }
        let Some(Ok(Some(group))) = self.observed.asgs.get(&self.b.asg) else { return None };
        let Some(Ok(role)) = self.role else { return None };
        Some(Facts {
            key: self.resolved?,
            slr: self.slr.clone(),
            role: role.as_ref(),
            group,
            handoff: self.handoff,
            need,
            reencrypt,
        })
    }
}

pub(super) fn entry(kind: Kind, status: State, reason: Reason, message: String, effect: Effect, now: u64) -> Entry {
    Entry { condition: Condition { kind, status, reason, message: Arc::from(message), since: now }, effect }
}

pub(super) fn account_error(b: &Binding, observed: &Observed) -> Option<Failure> {
    [&b.asg.account, b.key.account()].into_iter().find_map(|a| {
        observed
            .account_errors
            .get(a)
            .map(|f| Failure { class: f.class, message: format!("credentials for account {a}: {}", f.message) })
    })
}

pub(super) fn stop_fail(rank: u8, f: Failure) -> Effect {
    Effect::Stop(rank, Stop::Fail(f))
}

pub(super) fn stop_wait(rank: u8, wait: Wait, message: String) -> Effect {
    Effect::Stop(rank, Stop::Wait(wait, message))
}
