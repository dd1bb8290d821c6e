//! The judgement: for every binding, typed conditions and one verdict, from one reading of
//! the desired and the observed state. Pure.
//!
//! Every question about a binding is answered here once: is its key usable, does its role
//! exist, does the key policy let it in, is its grant complete, is its group on the role,
//! do its launches work, is its image re-encrypted; and so: is it ready, can a write move
//! it on, does it wait for someone (and whom), is it held back by another key of its
//! group, or has it failed (and how to try again). The planner writes only where the
//! judgement says a write can help ([`crate::core::plan`]); `status`, `/status`, the
//! `bindings` gauge, `plan`'s output and every exit code render it; the daemon's next
//! step is a function of it ([`crate::core::next`]).

pub(crate) mod binding;
pub mod condition;
mod handoff;
pub(crate) mod key;
mod launches;
pub mod notes;
pub(crate) mod parts;
pub mod verdict;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub use binding::key_principal;
pub use condition::{Condition, Kind, Reason, State};
pub use handoff::{awaiting_owner, handoff_statements};
pub use key::{is_sufficient, GrantView, KeyView};
pub use notes::{Note, NoteKind};
pub use parts::Facts;
use parts::{rank, Cx, Effect, Judging, LaunchEffect, Stop};
pub use verdict::{Retry, Standing, Verdict};

use crate::core::contest::Contests;
use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, AsgRef, BindingId, KeyArn, Slr, Wait};
use crate::core::policy;

/// Bindings already settled in this apply (a write of theirs failed, or they wait for
/// someone): not judged again, but they still count as their groups' keys.
pub type Settled = BTreeMap<BindingId, Verdict>;

/// What the judgement knows besides the two states.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Unix seconds: the transition time of a condition that changes now.
    pub now: u64,
    pub settled: &'a Settled,
    /// Each binding's last judgement (the daemon's): what this observation did not read
    /// (a quick pass reads no launches) is taken from it, and the transition times of
    /// conditions that did not change are kept.
    pub prior: &'a BTreeMap<BindingId, Judged>,
    /// Each key's policy writes and reverts: a contested key's writes back off.
    pub contests: &'a Contests,
}

impl Context<'_> {
    /// A context with nothing settled and no prior judgement, at `now`.
    pub fn at(now: u64) -> Context<'static> {
        static NONE: std::sync::OnceLock<(Settled, BTreeMap<BindingId, Judged>, Contests)> = std::sync::OnceLock::new();
        let (settled, prior, contests) = NONE.get_or_init(Default::default);
        Context { now, settled, prior, contests }
    }
}

/// One binding judged: its conditions, in the order a launch needs them, and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub binding: BindingId,
    /// The selector that found the binding's group, when one did (not the config).
    pub selector: Option<Arc<str>>,
    pub conditions: Vec<Condition>,
    pub verdict: Verdict,
}

impl Judged {
    pub fn ready(&self) -> bool {
        self.verdict.is_ready()
    }

    pub fn condition(&self, kind: Kind) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Whether the condition of `kind` has `reason`.
    pub fn has(&self, kind: Kind, reason: Reason) -> bool {
        self.condition(kind).is_some_and(|c| c.reason == reason)
    }
}

/// The judgement of every binding of a desired state, and what the planner writes from.
#[derive(Debug)]
pub struct Judgement<'a> {
    /// In the order of the desired state's bindings.
    pub judged: Vec<Judged>,
    /// What is true of a binding's group that is neither a condition nor a failure.
    pub notes: Vec<Note>,
    /// For each binding (in the same order), what every read found, when they did.
    pub facts: Vec<Option<Facts<'a>>>,
    /// Each key's policy, read once (by its own ARN).
    pub keys: BTreeMap<KeyArn, KeyView>,
    /// Each key's grants for each role.
    pub grants: BTreeMap<(KeyArn, Slr), GrantView>,
}

/// Judges every binding of `desired` from `observed`.
pub fn judge<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    caller: &'a AccountId,
    ctx: &'a Context<'a>,
) -> Judgement<'a> {
    let mut cx = Cx { desired, observed, caller, ctx, keys: BTreeMap::new(), grants: BTreeMap::new() };
    let mut judging: Vec<Judging> = desired.bindings.iter().map(|b| binding::judge_binding(b, &mut cx)).collect();
    too_large(&mut judging, &mut cx);
    contested(&mut judging, &cx);
    let held = Holds::of(&judging, ctx);
    let verdicts: Vec<Verdict> = (0..judging.len()).map(|i| held.verdict(i, &judging, observed, ctx)).collect();
    held.mark(&mut judging, &verdicts);
    let mut texts = Texts::default();
    let judged = judging
        .iter()
        .zip(verdicts)
        .map(|(j, verdict)| {
            let id = j.binding.id();
            let prior = ctx.prior.get(&id);
            let conditions = j
                .entries
                .iter()
                .map(|e| {
                    let mut c = e.condition.clone();
                    if let Some(old) = prior.and_then(|p| p.condition(c.kind)).filter(|o| o.status == c.status) {
                        c.since = c.since.min(old.since);
                    }
                    c.message = texts.share(&c.message);
                    c
                })
                .collect();
            Judged { binding: id, selector: j.binding.origin.selector().cloned(), conditions, verdict }
        })
        .collect();
    let mut judged: Vec<Judged> = judged;
    let notes = notes::of(desired, observed);
    for j in &mut judged {
        let unbound: Vec<&str> = notes
            .iter()
            .filter(|n| n.kind == notes::NoteKind::UnboundKey && n.binding.asg == j.binding.asg)
            .map(|n| n.message.as_str())
            .collect();
        fixed_since_last_launch(j, observed, &unbound);
    }
    let facts = judging.into_iter().map(|j| j.facts).collect();
    Judgement { judged, notes, facts, keys: cx.keys, grants: cx.grants }
}

/// A key whose missing needs, merged, would exceed KMS's size limit cannot be written:
/// the bindings that need the write are stopped, their `KeyPolicyReady` says why.
fn too_large(judging: &mut [Judging], cx: &mut Cx) {
    let instance = &cx.desired.operator.instance;
    for (key, view) in cx.keys.iter_mut() {
        let Ok(doc) = &view.doc else { continue };
        let owners: Vec<usize> = (0..judging.len())
            .filter(|&i| {
                let j = &judging[i];
                let writes = j.facts.as_ref().is_some_and(|f| f.key == key && f.need.is_some())
                    && j.entry(Kind::KeyPolicyReady).is_some_and(|e| e.condition.reason == Reason::Missing)
                    && j.stop().is_none_or(|(r, _)| r > rank::POLICY)
                    && !cx.ctx.settled.contains_key(&j.binding.id());
                writes
            })
            .collect();
        if owners.is_empty() {
            continue;
        }
        let mut needs: Vec<usize> = owners.iter().filter_map(|&i| judging[i].facts.as_ref()?.need).collect();
        needs.sort_unstable();
        needs.dedup();
        let missing: Vec<(&policy::Need, policy::Gap)> =
            needs.iter().filter_map(|&n| Some((&view.needs[n].need, *view.needs[n].gap.as_ref().ok()?))).collect();
        let current: Vec<&str> = view.needs.iter().filter_map(|n| n.need.who.unique_id()).collect();
        let Err(e) = policy::extend(doc, instance, &missing, &current) else { continue };
        let f = crate::core::model::Failure::terminal(format!("key policy of {key}: {e}"));
        view.too_large = Some(f.message.clone());
        for i in owners {
            if let Some(entry) = judging[i].entry_mut(Kind::KeyPolicyReady) {
                entry.condition.status = State::False;
                entry.condition.reason = Reason::Unwritable;
                entry.condition.message = Arc::from(f.message.as_str());
                entry.effect = Effect::Stop(rank::POLICY, Stop::Fail(f.clone()));
            }
        }
    }
}

/// What `judged` found of each binding's access in its key policy, for
/// [`Contests::take_in`].
pub fn policy_seen(judged: &[Judged]) -> impl Iterator<Item = crate::core::contest::Seen<'_>> {
    judged.iter().filter_map(|j| {
        let c = j.condition(Kind::KeyPolicyReady)?;
        Some(crate::core::contest::Seen {
            binding: &j.binding,
            allowed: c.status == State::True,
            missing: matches!(c.reason, Reason::Missing | Reason::Contested),
        })
    })
}

/// The bindings of a contested key (see [`crate::core::contest`]) that need a policy
/// write: `KeyPolicyReady` says who fights the operator and what to add to that writer's
/// code, and the write waits out the key's backoff.
fn contested(judging: &mut [Judging], cx: &Cx) {
    let now = cx.ctx.now;
    for j in judging.iter_mut() {
        let Some(c) = cx.ctx.contests.contested(&j.binding.key) else { continue };
        let Some(key) = j.facts.as_ref().map(|f| f.key) else { continue };
        let Some(entry) = j.entry(Kind::KeyPolicyReady) else { continue };
        if entry.condition.reason != Reason::Missing {
            continue;
        }
        let statements = cx.keys.get(key).map(|v| v.statements(&cx.desired.operator.instance)).unwrap_or_default();
        let at = c.write_at(now, cx.ctx.contests.base);
        let message = contest_message(key, c, now, at, &statements);
        let entry = j.entry_mut(Kind::KeyPolicyReady).expect("found above");
        entry.condition.reason = Reason::Contested;
        entry.condition.message = Arc::from(message.as_str());
        if at > now {
            entry.effect = Effect::Stop(rank::POLICY, parts::Stop::Wait(Wait::Contested, message));
        }
    }
}

fn contest_message(key: &KeyArn, c: &crate::core::contest::Contest, now: u64, at: u64, statements: &str) -> String {
    let next = match at > now {
        true => format!("the operator writes them back once more in {}s", at - now),
        false => "the operator writes them back now".to_owned(),
    };
    format!(
        "contested: {writer} replaced the key policy of {key} and removed the statements this operator wrote, {n} times; {next}, and waits twice as long after each revert (up to 1 hour). To end it, add these statements to that writer's own policy (its Terraform or CloudFormation), and the operator will write nothing: {statements}",
        writer = c.writer_name(),
        n = c.reverts(),
    )
}

/// The groups whose switch to their role is held: a group is switched only once every
/// key it uses is ready for that role. The role it has today may be the one that can use
/// a key that is not, and the switch would break launches that work.
struct Holds {
    /// The first binding of each group that cannot be made ready this pass (stopped, or
    /// settled), by index.
    holders: BTreeMap<AsgRef, usize>,
    /// The first binding of each group with a key condition not `True` (it may be made
    /// ready by this pass's writes), by index.
    unready: BTreeMap<AsgRef, Vec<usize>>,
}

impl Holds {
    fn of(judging: &[Judging], ctx: &Context) -> Self {
        let mut holders = BTreeMap::new();
        let mut unready: BTreeMap<AsgRef, Vec<usize>> = BTreeMap::new();
        for (i, j) in judging.iter().enumerate() {
            let asg = j.binding.asg.clone();
            let stopped = j.stop().is_some_and(|(r, _)| r <= rank::POLICY);
            if stopped || ctx.settled.contains_key(&j.binding.id()) {
                holders.entry(asg.clone()).or_insert(i);
            }
            if j.entries.iter().any(|e| e.condition.kind.key_ready() && e.condition.status != State::True) {
                unready.entry(asg).or_default().push(i);
            }
        }
        Holds { holders, unready }
    }

    /// Whether binding `i`'s group must be switched: its group is not on its role.
    fn switch_needed(j: &Judging) -> bool {
        j.entry(Kind::AsgUsesRole).is_some_and(|e| e.condition.reason == Reason::OtherRole)
    }

    /// The binding of `i`'s group (another key) that holds its switch, if one does.
    fn holder(&self, i: usize, judging: &[Judging]) -> Option<usize> {
        let j = &judging[i];
        let h = *self.holders.get(&j.binding.asg)?;
        (h != i && judging[h].binding.key != j.binding.key && Self::switch_needed(j)).then_some(h)
    }

    fn verdict(&self, i: usize, judging: &[Judging], observed: &Observed, ctx: &Context) -> Verdict {
        let j = &judging[i];
        // What stops a binding by itself: settled earlier in this apply, or a part that
        // cannot be made ready this pass.
        let own = |j: &Judging, max: u8| match (ctx.settled.get(&j.binding.id()), j.stop()) {
            (Some(v), _) => Some(v.clone()),
            (None, Some((r, s))) if r <= max => Some(stopped(s)),
            _ => None,
        };
        if let Some(v) = own(j, rank::POLICY) {
            return v;
        }
        if let Some(h) = self.holder(i, judging) {
            let holder = own(&judging[h], rank::POLICY).expect("a holder is stopped or settled");
            return blocked(j, &judging[h], holder, observed);
        }
        if let Some(v) = own(j, u8::MAX) {
            return v;
        }
        if j.remedies() {
            return Verdict::Converging;
        }
        for e in &j.entries {
            match &e.effect {
                Effect::Launch(LaunchEffect::Failed(f)) => {
                    return Verdict::Failed { failure: f.clone(), retry: Retry::Resync }
                }
                Effect::Launch(LaunchEffect::Unread) => {
                    return Verdict::Waiting { wait: Wait::Launches, message: e.condition.message.clone() }
                }
                _ => {}
            }
        }
        Verdict::Ready
    }

    /// `AsgUsesRole` of a group not on its role, while another of its keys is not ready
    /// for the role: `HeldByKey`, naming that key. When the key can be made ready this
    /// pass, the switch follows its write; when it cannot, the binding is blocked.
    fn mark(&self, judging: &mut [Judging], verdicts: &[Verdict]) {
        for i in 0..judging.len() {
            if !Self::switch_needed(&judging[i]) {
                continue;
            }
            let key = judging[i].binding.key.clone();
            let other = |&&h: &&usize| judging[h].binding.key != key;
            let by = self
                .holder(i, judging)
                .or_else(|| self.unready.get(&judging[i].binding.asg).and_then(|hs| hs.iter().find(other).copied()));
            let Some(h) = by else { continue };
            let Some(c) = judging[h]
                .entries
                .iter()
                .map(|e| &e.condition)
                .find(|c| c.kind.key_ready() && c.status != State::True)
                .cloned()
            else {
                continue;
            };
            let holder_key = judging[h].binding.key.clone();
            let blocked = matches!(verdicts[i], Verdict::Blocked { .. });
            let Some(e) = judging[i].entry_mut(Kind::AsgUsesRole) else { continue };
            e.condition.reason = Reason::HeldByKey;
            e.condition.message = Arc::from(format!(
                "{}; the group is switched only once every key it uses is ready for the role, and key {holder_key} is not ({} {}: {})",
                e.condition.message,
                c.kind.as_str(),
                c.status.as_str(),
                c.reason
            ));
            if blocked {
                e.effect = Effect::None;
            }
        }
    }
}

fn stopped(s: &Stop) -> Verdict {
    match s {
        Stop::Wait(wait, message) => Verdict::Waiting { wait: *wait, message: Arc::from(message.as_str()) },
        Stop::Fail(f) => Verdict::Failed { failure: f.clone(), retry: Retry::Backoff },
        Stop::Refuse(f) => Verdict::Failed { failure: f.clone(), retry: Retry::Sweep },
    }
}

/// Binding `j`, whose group stays on its role because of `h`, blocked by it.
fn blocked(j: &Judging, h: &Judging, holder: Verdict, observed: &Observed) -> Verdict {
    let b = j.binding;
    let have = match observed.asgs.get(&b.asg) {
        Some(Ok(Some(g))) => g.service_linked_role_arn.clone(),
        _ => None,
    };
    let message = format!(
        "group {} stays on {}: it is switched to {} only once every key it uses is ready for that role, and key {} is not: {}",
        b.asg.name,
        have.as_deref().unwrap_or("its current role"),
        b.slr().name(),
        h.binding.key,
        holder.message()
    );
    Verdict::Blocked { by: h.binding.key.clone(), holder: Box::new(holder), message: Arc::from(message) }
}

/// A launch that failed over KMS before the binding's permissions were all in place says
/// nothing of the next one: `LaunchesHealthy` is `Unknown` (`FixedSinceLastLaunch`) until
/// a launch made since succeeds or fails, and the binding is ready. When the permissions
/// became ready is the latest transition time of its other conditions: in the daemon, the
/// pass that made them so; in a one-shot command, which has no memory, now (so a launch
/// that failed although they were in place shows as fixed too, and the next launch tells).
/// A group that launches with a customer managed key no binding covers (`unbound`, the
/// notes that say so) is not fixed: its next launch fails too, and its condition says why.
fn fixed_since_last_launch(j: &mut Judged, observed: &Observed, unbound: &[&str]) {
    if !j.has(Kind::LaunchesHealthy, Reason::LaunchFailedKms) {
        return;
    }
    if !unbound.is_empty() {
        if let Some(c) = j.conditions.iter_mut().find(|c| c.kind == Kind::LaunchesHealthy) {
            c.message = Arc::from(format!("{}; {}", c.message, unbound.join("; ")));
        }
        return;
    }
    let others = j.conditions.iter().filter(|c| c.kind != Kind::LaunchesHealthy);
    if others.clone().any(|c| c.status != State::True) {
        return;
    }
    let ready_since = others.map(|c| c.since).max().unwrap_or(0);
    let started = match observed.launches.get(&j.binding.asg) {
        Some(Ok(Some(a))) => a.start_time.as_deref().and_then(unix_seconds),
        _ => None,
    };
    let Some(started) = started else { return };
    if started > ready_since {
        return;
    }
    let Some(c) = j.conditions.iter_mut().find(|c| c.kind == Kind::LaunchesHealthy) else { return };
    c.status = State::Unknown;
    c.reason = Reason::FixedSinceLastLaunch;
    c.message = Arc::from(format!(
        "{}; every permission the group needs is in place now, and was not when it failed (or may not have been): the next launch will tell",
        c.message
    ));
    if matches!(j.verdict, Verdict::Failed { retry: Retry::Resync, .. }) {
        j.verdict = Verdict::Ready;
    }
}

/// Unix seconds of an RFC 3339 UTC time as AWS writes it (`2026-11-29T23:49:13Z`, with or
/// without a fraction, `Z` or `+00:00`); None for anything else.
pub fn unix_seconds(t: &str) -> Option<u64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00"))?;
    let time = time.split('.').next()?;
    let mut h = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm, the inverse of status::rfc3339).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// One copy of each message text. At 10,000 bindings, a copy per condition was 12 MB of
/// the daemon's heap.
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

#[cfg(test)]
mod tests;
