//! The conditions of what a group launches: its most recent launch (`LaunchesHealthy`),
//! and, for `strategy: reencrypt`, whether its images still use another account's key
//! (`ImagesReencrypted`).

use super::condition::{Condition, Kind, Reason, State};
use super::parts::{rank, stop_fail, stop_wait, Effect, Entry, LaunchEffect, Parts, Stop};
use super::Context;
use crate::core::model::launch::GroupLaunch;
use crate::core::model::{ErrorClass, Failure, LaunchActivity, LaunchFailureClass, Wait};
use crate::core::reencrypt::{self, Next, Write};

/// `LaunchesHealthy`: from this observation, or, when it did not read the group's
/// launches (a quick pass), from the last judgement of the binding.
pub(super) fn launches_healthy(p: &Parts, ctx: &Context) -> Entry {
    let k = Kind::LaunchesHealthy;
    let launch = match p.observed.launches.get(&p.b.asg) {
        Some(l) => l,
        None => {
            let prior = ctx.prior.get(&p.b.id()).and_then(|j| j.conditions.iter().find(|c| c.kind == k));
            return match prior {
                Some(c) if c.reason != Reason::NotRead => Entry { condition: c.clone(), effect: launch_effect(c) },
                _ => p.c(
                    k,
                    State::Unknown,
                    Reason::NotRead,
                    "recent launches were not read".into(),
                    Effect::Launch(LaunchEffect::Unread),
                ),
            };
        }
    };
    match launch {
        Err(f) => {
            let f = Failure { class: f.class, message: f.message.clone() };
            p.c(k, State::Unknown, Reason::ReadFailed, f.message.clone(), Effect::Launch(LaunchEffect::Failed(f)))
        }
        Ok(None) => p.c(
            k,
            State::True,
            Reason::NoRecentLaunch,
            "no launch among the recent scaling activities".into(),
            Effect::None,
        ),
        Ok(Some(a)) if a.failed() => launch_failed(p, a),
        Ok(Some(a)) => p.c(
            k,
            State::True,
            Reason::LastLaunch,
            format!("the most recent launch is {}", a.status_code),
            Effect::None,
        ),
    }
}

/// What a `LaunchesHealthy` carried over from the last judgement means.
fn launch_effect(c: &Condition) -> Effect {
    match c.status {
        State::True => Effect::None,
        _ => Effect::Launch(LaunchEffect::Failed(Failure::terminal(c.message.to_string()))),
    }
}

/// The most recent launch failed: over KMS or a permission, or for another reason.
fn launch_failed(p: &Parts, a: &LaunchActivity) -> Entry {
    let keys: Vec<_> = std::iter::once(&p.b.key).chain(p.resolved).collect();
    let (status, reason, why) = match a.failure_class(&keys) {
        Some(LaunchFailureClass::Other) => {
            (State::True, Reason::LaunchFailedOther, ", for a reason the key's permissions cannot cure")
        }
        _ => (State::False, Reason::LaunchFailedKms, " over KMS or a permission"),
    };
    let message = format!(
        "the most recent launch{} {}{why}: {}",
        a.start_time.as_deref().map(|t| format!(" (at {t})")).unwrap_or_default(),
        if a.status_code == "Cancelled" { "was cancelled" } else { "failed" },
        a.status_message.as_deref().unwrap_or("no status message")
    );
    let effect = match status {
        State::True => Effect::None,
        _ => Effect::Launch(LaunchEffect::Failed(Failure::terminal(message.clone()))),
    };
    p.c(Kind::LaunchesHealthy, status, reason, message, effect)
}

/// `strategy: reencrypt`: whether every source the group launches from uses only keys of
/// its own account, and if not, the next step of each ([`reencrypt::next`]). Each
/// source's write is kept in `writes` for the planner.
pub(super) fn images_reencrypted(p: &Parts, writes: &mut Vec<(Write, String)>, _now: u64) -> Entry {
    let (k, b) = (Kind::ImagesReencrypted, p.b);
    let what = "read the group's launch template";
    let launch: &GroupLaunch = match p.observed.launch_keys.get(&b.asg) {
        None => return p.not_observed(k, rank::IMAGES, what),
        Some(Err(f)) => return p.read_failed(k, rank::IMAGES, what, f),
        Some(Ok(l)) => l,
    };
    let Some(Ok(own)) = p.info else {
        return p.c(k, State::Unknown, Reason::NotRead, format!("key {} was not described", b.key), Effect::None);
    };
    let mut first: Option<Entry> = None;
    let mut stop: Option<Entry> = None;
    for s in &launch.sources {
        match reencrypt::next(b, &own.arn, launch, s, &p.observed.reencrypt) {
            Next::Done => {}
            Next::Write { write, why } => {
                first
                    .get_or_insert_with(|| p.c(k, State::False, Reason::ReencryptPending, why.clone(), Effect::Remedy));
                writes.push((write, why));
            }
            Next::Wait(wait, message) if stop.is_none() => {
                let reason = match wait {
                    Wait::Copy => Reason::CopyInProgress,
                    Wait::ImageOwner => Reason::SnapshotNotShared,
                    _ => Reason::AwaitingKeyOwner,
                };
                stop = Some(p.c(k, State::False, reason, message.clone(), stop_wait(rank::IMAGES, wait, message)));
            }
            Next::Stop(f) if stop.is_none() => {
                let reason =
                    if f.class == ErrorClass::Terminal { Reason::ReencryptBlocked } else { Reason::ReadFailed };
                stop = Some(p.c(k, State::False, reason, f.message.clone(), stop_fail(rank::IMAGES, f)));
            }
            Next::ImageFromParameter(message) if stop.is_none() => {
                let f = Failure::terminal(message.clone());
                let effect = Effect::Stop(rank::IMAGES, Stop::Refuse(f));
                stop = Some(p.c(k, State::False, Reason::ImageFromParameter, message, effect));
            }
            Next::Wait(..) | Next::Stop(_) | Next::ImageFromParameter(_) => {}
        }
    }
    stop.or(first).unwrap_or_else(|| {
        p.c(
            k,
            State::True,
            Reason::OwnKeyOnly,
            format!("the group launches only images and volumes encrypted with keys of account {}", b.asg.account),
            Effect::None,
        )
    })
}
