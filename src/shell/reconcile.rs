//! One pass: rounds of observe → judge and plan → write, until every binding is ready or
//! stopped, or the rounds run out.
//!
//! A *pass* reconciles some bindings once (`apply` is one pass over the whole config; the
//! daemon runs passes over units of work). A *round* is one observation, one judgement
//! and plan, and the plan's writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::Instrument;

use crate::core::contest::Contests;
use crate::core::judge::{Context, Judged, Retry, Settled, Verdict};
use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AsgRef, BindingId, ErrorClass, Failure, KeyArn, LaunchActivity, LaunchSource};
use crate::core::plan::{self, Depth, Plan, PlannedChange};
use crate::shell::aws::{self, Aws, ExecSettings};
use crate::shell::clock::unix_seconds;
use crate::shell::scheduler::Jitter;
pub use crate::shell::writes::{execute_plan, within, Applied, Executed};

/// Observes everything `desired` needs at `depth` and plans against it (`plan`).
pub async fn observe_and_plan(aws: &Arc<Aws>, desired: &Desired, depth: Depth) -> (Observed, Plan) {
    let reads = plan::reads(desired, aws.caller(), depth);
    let mut observed = aws::observe(aws, desired, &reads).await;
    let mut p = plan::plan(desired, &observed, aws.caller(), &Context::at(unix_seconds()));
    if before_prune(aws, desired, &mut observed, &p).await {
        p = plan::plan(desired, &observed, aws.caller(), &Context::at(unix_seconds()));
    }
    (observed, p)
}

/// Before a prune: reads the groups of the places whose accesses it would remove, once,
/// into `observed`. True when it read something, and the plan must be made again.
async fn before_prune(aws: &Arc<Aws>, desired: &Desired, observed: &mut Observed, plan: &Plan) -> bool {
    let need: BTreeMap<_, _> = plan
        .prune
        .need_users
        .iter()
        .filter(|(place, _)| !observed.role_users.contains_key(*place))
        .map(|(p, w)| (p.clone(), w.clone()))
        .collect();
    if need.is_empty() {
        return false;
    }
    observed.role_users.extend(aws::select::role_users(aws, desired, &need).await);
    true
}

/// What a pass knows before it reads: each binding's last judgement (for what it does
/// not read, and the transition times of what did not change), and launches that events
/// reported since the groups' launches were last read.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    pub judged: BTreeMap<BindingId, Judged>,
    pub launches: BTreeMap<AsgRef, LaunchActivity>,
    /// The policy writes and reverts of the pass's keys (see [`crate::core::contest`]).
    pub contests: Contests,
}

/// The result of [`apply`].
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rounds run, the last of which found nothing more to do (or ran out).
    pub rounds: u32,
    pub applied: Applied,
    /// Every binding's judgement (in the config's order), as of the last observation of
    /// each of its parts: what `status` shows, and what the daemon's next step is made of.
    pub judged: Vec<Judged>,
    /// The groups' most recent launches, when this was a full pass.
    pub launches: BTreeMap<AsgRef, Result<Option<LaunchActivity>, Failure>>,
    /// Why a prune was held by the guard against pruning by accident, or for a group
    /// that still launches, if one was.
    pub prune_held: Option<String>,
    /// Each access kept from prune because a group still launches through it, by key.
    pub prune_spared: Vec<(KeyArn, String)>,
    /// Keys on which something to prune is left (a prune that failed, or was not tried
    /// again after a failure), with why. A prune that is held is not pending.
    pub prune_pending: BTreeMap<KeyArn, Failure>,
    /// Where each group read launches from: what a launch template's event touches.
    pub sources: BTreeMap<AsgRef, Vec<LaunchSource>>,
    /// The pass's keys' policy writes and reverts, as the pass leaves them.
    pub contests: Contests,
    /// The keys found contested by this pass.
    pub contests_begun: Vec<KeyArn>,
    /// The size in bytes of each key policy as last read: how near KMS's limit it is.
    pub policy_bytes: BTreeMap<KeyArn, usize>,
}

impl Outcome {
    /// The bindings whose groups can launch.
    pub fn ready(&self) -> usize {
        self.judged.iter().filter(|j| j.ready()).count()
    }
}

/// Reconciles until every binding is ready or stopped (failed for good in this pass, or
/// waiting for someone), or `max_rounds` rounds of writes have run; a last round observes
/// the result. What failed for a transient reason, a read or a write, is tried again:
/// with `settings.round_backoff`, in the next round after that backoff; without it, not
/// in this pass: the next round only reads the units it touched, to report where they
/// stand, and the caller queues the work again (the daemon never sleeps in a pass).
///
/// A full pass (`depth`) also reads the groups' recent launches, in its first round.
/// `prior` is what is known before reading: the last judgements, and launches events
/// reported (a read of the launches replaces them).
pub async fn apply(
    aws: &Arc<Aws>,
    desired: &Desired,
    max_rounds: u32,
    settings: &ExecSettings,
    depth: Depth,
    prior: &Prior,
) -> Outcome {
    aws.set_create_grant_rate(desired.operator.create_grant_rate());
    let mut out = Outcome::default();
    let mut r = Rounds { contests: prior.contests.clone(), ..Rounds::default() };
    r.seen.launches.extend(prior.launches.iter().map(|(a, l)| (a.clone(), Ok(Some(l.clone())))));
    let prior = &prior.judged;
    let mut jitter = Jitter::from_clock();
    loop {
        out.rounds += 1;
        // After a troubled round: wait and go on, or read once more and stop.
        // Stopped (a signal): the writes in flight have finished, and one more look at what
        // they touched says where things stand.
        let last_look = settings.stop.requested() || after_trouble(r.troubled, settings, &mut jitter).await;
        let span = tracing::info_span!("round", round = out.rounds);
        let depth = if out.rounds == 1 { depth } else { Depth::Quick };
        // The last look reads only the units the troubled round wrote to or failed on:
        // the others' judgement from that round stands, as nothing was written there.
        let focus = (last_look && out.rounds > 1).then(|| within(desired, &r.touched));
        let scope = focus.as_ref().unwrap_or(desired);
        let mut plan = r.observe_and_plan(aws, scope, depth, prior).instrument(span.clone()).await;
        r.prunes.skip_stopped(&mut plan);
        let retry = plan.stopped().filter_map(|j| j.verdict.failure()).any(|f| f.class.is_transient())
            || plan.prune.unread.values().any(|f| f.class.is_transient());
        if out.rounds == 1 {
            out.prune_held = report_prune(&plan);
            out.prune_spared = plan.prune.spared.iter().map(|s| (s.key.clone(), s.to_string())).collect();
        }
        if depth == Depth::Full {
            warn_drift(&plan);
        }
        let done = plan.changes.is_empty() && !retry;
        if done || last_look || out.rounds > max_rounds {
            out.prune_pending = r.prunes.left(&plan);
            out.judged = r.conclude(desired, &plan, out.rounds, max_rounds);
            out.contests = std::mem::take(&mut r.contests);
            out.contests_begun = std::mem::take(&mut r.contests_begun);
            out.launches = std::mem::take(&mut r.seen.launches);
            seen_parts(&mut out, &r.seen);
            return out;
        }
        r.settle(plan.stopped().map(|j| (&j.binding, &j.verdict)));
        r.touched = keys_in_play(&plan);
        let (settled, seen) = (r.settled.clone(), std::mem::take(&mut r.seen));
        let executed = execute_plan(aws, scope, &settled, seen, plan, settings).instrument(span).await;
        r.took(executed, &mut out.applied, retry);
    }
}

/// What the outcome keeps of the last observation: each key policy's size, and where each
/// group read launches from.
fn seen_parts(out: &mut Outcome, seen: &Observed) {
    out.policy_bytes =
        seen.key_policies.iter().filter_map(|(k, p)| Some((k.clone(), p.as_ref().ok()?.len()))).collect();
    out.sources =
        seen.asgs.iter().filter_map(|(a, g)| Some((a.clone(), g.as_ref().ok()?.as_ref()?.sources.clone()))).collect();
}

/// What the rounds of one pass carry from one to the next.
#[derive(Default)]
struct Rounds {
    /// The latest observation of every part: later rounds read only what is in play.
    seen: Observed,
    /// Bindings stopped for this pass (a terminal failure, a wait): not read again.
    settled: Settled,
    /// The latest judgement of each binding.
    judged: BTreeMap<BindingId, Judged>,
    /// The last round's failed writes, by binding.
    last_failed: BTreeMap<BindingId, Failure>,
    /// The keys the last round wrote to or failed on.
    touched: BTreeSet<KeyArn>,
    /// Whether the last round had a transient failure, and how many in a row did.
    troubled: u32,
    prunes: PruneProgress,
    /// Each key's policy writes and reverts.
    contests: Contests,
    contests_begun: Vec<KeyArn>,
}

impl Rounds {
    /// Reads what the bindings of `scope` still in play need, and plans from the latest
    /// observation of every part.
    async fn observe_and_plan(
        &mut self,
        aws: &Arc<Aws>,
        scope: &Desired,
        depth: Depth,
        prior: &BTreeMap<BindingId, Judged>,
    ) -> Plan {
        let live = without(scope, &self.settled);
        let reads = plan::reads(&live, aws.caller(), depth);
        let observed = aws::observe(aws, &live, &reads).await;
        self.seen.absorb(observed);
        let now = unix_seconds();
        let ctx = Context { now, settled: &self.settled, prior, contests: &self.contests };
        let mut plan = plan::plan(scope, &self.seen, aws.caller(), &ctx);
        let mut again = before_prune(aws, scope, &mut self.seen, &plan).await;
        let begun = self.contests.take_in(crate::core::judge::policy_seen(&plan.judged), now);
        for key in &begun {
            let writer = self.contests.get(key).map_or("another writer", |c| c.writer_name());
            tracing::warn!(%key, writer, "key policy contested: another writer removed this operator's statements again");
        }
        again |= !begun.is_empty();
        self.contests_begun.extend(begun);
        if again {
            let ctx = Context { now, settled: &self.settled, prior, contests: &self.contests };
            plan = plan::plan(scope, &self.seen, aws.caller(), &ctx);
        }
        for j in &plan.judged {
            self.judged.insert(j.binding.clone(), j.clone());
        }
        plan
    }

    /// Keeps the verdicts that will not change within this pass: their bindings are not
    /// read again in later rounds. A transient failure is tried again.
    fn settle<'a>(&mut self, stopped: impl Iterator<Item = (&'a BindingId, &'a Verdict)>) {
        for (b, v) in stopped {
            if !v.failure().is_some_and(|f| f.class.is_transient()) {
                self.settled.insert(b.clone(), v.clone());
            }
        }
    }

    /// Takes in what a round's writes did.
    fn took(&mut self, mut executed: Executed, applied: &mut Applied, retry: bool) {
        self.seen = std::mem::take(&mut executed.observed);
        self.contests.wrote(&executed.policy_for, unix_seconds());
        for (b, f) in executed.failed.iter().filter(|(_, f)| !f.class.is_transient()) {
            self.settled.insert(b.clone(), Verdict::Failed { failure: f.clone(), retry: Retry::Backoff });
        }
        self.touched.extend(executed.failed.keys().map(|b| b.key.clone()));
        let prune_trouble = self.prunes.record(executed.prune_failed);
        let troubled = retry || prune_trouble || executed.failed.values().any(|f| f.class.is_transient());
        self.troubled = if troubled { self.troubled + 1 } else { 0 };
        self.last_failed = executed.failed;
        applied.extend(&executed.applied);
    }

    /// Every binding's last judgement, in the config's order. One that writes would still
    /// move on when the rounds end has not converged: it failed for now, with the last
    /// failure of its writes when there was one.
    fn conclude(&mut self, desired: &Desired, last: &Plan, rounds: u32, max_rounds: u32) -> Vec<Judged> {
        let pending = |b: &BindingId| last.changes.iter().find(|c| c.bindings.contains(b));
        desired
            .bindings
            .iter()
            .filter_map(|b| self.judged.remove(&b.id()))
            .map(|mut j| {
                if j.verdict == Verdict::Converging {
                    let why = self.last_failed.get(&j.binding).map_or("not converged", |f| f.message.as_str());
                    let action = pending(&j.binding).map_or("a write", |c| c.change.action());
                    let message = match rounds > max_rounds {
                        true => format!("{why} after {max_rounds} rounds; still pending: {action}"),
                        false => format!("{why}; still pending: {action}, to be tried again"),
                    };
                    let failure = Failure { class: ErrorClass::Retryable, message };
                    j.verdict = Verdict::Failed { failure, retry: Retry::Backoff };
                }
                j
            })
            .collect()
    }
}

/// Once a pass: a held prune at warn level (and why, returned), each access kept for a
/// group that still launches through it, and what pruning leaves as it is.
fn report_prune(plan: &Plan) -> Option<String> {
    for n in &plan.prune.notes {
        tracing::info!(note = %n, pruned = plan.prune.pruned, "prune");
    }
    for s in &plan.prune.spared {
        let groups: Vec<String> = s.groups().iter().map(|(g, _)| g.to_string()).collect();
        tracing::warn!(key = %s.key, principal = %s.principal, groups = %groups.join(","), reason = %s, "prune held");
    }
    if let Some(why) = &plan.prune.held {
        tracing::warn!(reason = %why, "prune held");
    }
    let spared = plan.prune.spared.iter().map(ToString::to_string);
    let why: Vec<String> = plan.prune.held.iter().cloned().chain(spared).collect();
    (!why.is_empty()).then(|| why.join("; "))
}

/// Once a pass: groups that will fail to launch for a reason their bindings do not cover.
fn warn_drift(plan: &Plan) {
    for n in plan.notes.iter().filter(|n| n.kind.is_drift()) {
        tracing::warn!(binding = %n.binding, note = %n.message, "drift");
    }
}

/// The keys a round is about to write to, or failed on for a reason that may pass.
fn keys_in_play(plan: &Plan) -> BTreeSet<KeyArn> {
    let mut keys: BTreeSet<KeyArn> =
        plan.changes.iter().flat_map(|c| c.bindings.iter().map(|b| b.key.clone())).collect();
    let transient = |j: &&Judged| j.verdict.failure().is_some_and(|f| f.class.is_transient());
    keys.extend(plan.stopped().filter(transient).map(|j| j.binding.key.clone()));
    keys.extend(plan.changes.iter().filter_map(|c| c.prune_only_key().cloned()));
    keys.extend(plan.prune.unread.keys().cloned());
    keys
}

/// After a troubled round: with a backoff set, waits it and goes on (false); without one,
/// the next round is the last look (true).
async fn after_trouble(troubled_rounds: u32, settings: &ExecSettings, jitter: &mut Jitter) -> bool {
    match (troubled_rounds, settings.round_backoff) {
        (0, _) => false,
        (n, Some(backoff)) => {
            let wait = backoff.delay(n, jitter.sample());
            tracing::debug!(wait = ?wait, "transient failures in the last round; waiting before the next");
            tokio::time::sleep(wait).await;
            false
        }
        (_, None) => true,
    }
}

/// The desired state without the bindings of `drop`.
pub fn without<V>(desired: &Desired, drop: &BTreeMap<BindingId, V>) -> Desired {
    Desired {
        accounts: desired.accounts.clone(),
        bindings: desired.bindings.iter().filter(|b| !drop.contains_key(&b.id())).cloned().collect(),
        selectors: Vec::new(),
        events: None,
        operator: desired.operator.clone(),
    }
}

/// How the prunes of one pass went: a prune is a write for no binding, so its failure is
/// kept by key. One that failed terminally is not tried again within the pass.
#[derive(Default)]
struct PruneProgress {
    /// The last failure of each key's prune.
    failed: BTreeMap<KeyArn, Failure>,
    stopped: BTreeMap<KeyArn, Failure>,
}

impl PruneProgress {
    /// Drops from `plan` the prunes not to be tried again.
    fn skip_stopped(&self, plan: &mut Plan) {
        plan.changes.retain(|c| c.prune_only_key().is_none_or(|k| !self.stopped.contains_key(k)));
    }

    /// Takes in a round's failed prunes; whether one of them may pass if tried again.
    fn record(&mut self, failed: BTreeMap<KeyArn, Failure>) -> bool {
        let transient = failed.values().any(|f| f.class.is_transient());
        for (key, f) in failed {
            if !f.class.is_transient() {
                self.stopped.insert(key.clone(), f.clone());
            }
            self.failed.insert(key, f);
        }
        transient
    }

    /// The keys with something to prune left after the last round: those whose prune
    /// stopped on a terminal failure, those the last plan still prunes (with the last
    /// failure when there was one), and keys that left the config and could not be read,
    /// where whether anything is left is not known.
    fn left(&self, last: &Plan) -> BTreeMap<KeyArn, Failure> {
        let mut left = self.stopped.clone();
        for key in last.changes.iter().filter_map(PlannedChange::prune_only_key) {
            left.entry(key.clone()).or_insert_with(|| {
                self.failed.get(key).cloned().unwrap_or_else(|| Failure {
                    class: ErrorClass::Retryable,
                    message: "something is left to prune, to be tried again".to_owned(),
                })
            });
        }
        left.extend(last.prune.unread.clone());
        left
    }
}
