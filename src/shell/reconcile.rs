//! One reconcile: observe → plan → execute, repeated until converged or out of passes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::Instrument;

use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, AsgRef, BindingId, ErrorClass, Failure, KeyArn, LaunchActivity};
use crate::core::plan::{self, BlockedSet, Change, Depth, Plan, PlannedChange};
use crate::core::status::{self, BindingStatus};
use crate::core::units::Units;
use crate::shell::aws::{self, Aws, Done, ExecSettings};
use crate::shell::scheduler::Jitter;

/// Writes in flight at once within one phase.
pub const WRITE_CONCURRENCY: usize = 8;

/// Observes everything the desired state needs and plans against it. The `held`
/// bindings (already failed) are not read again, but still hold their groups' switches.
pub async fn observe_and_plan(aws: &Arc<Aws>, desired: &Desired, held: &BlockedSet, depth: Depth) -> (Observed, Plan) {
    let live = without(desired, held);
    let reads = plan::reads(&live, aws.caller(), depth);
    let observed = aws::observe(aws, &live, &reads).await;
    let p = plan::plan_holding(desired, &observed, aws.caller(), held);
    (observed, p)
}

/// Applied changes, counted by action. Only the counts are kept: a cold pass over a large
/// fleet applies a change per binding, and the log already has each one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied(BTreeMap<&'static str, u64>);

impl Applied {
    pub fn add(&mut self, action: &'static str, n: u64) {
        *self.0.entry(action).or_default() += n;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// (action, count), by action name.
    pub fn by_action(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(a, n)| (*a, *n))
    }

    pub fn extend(&mut self, other: &Applied) {
        for (a, n) in other.by_action() {
            self.add(a, n);
        }
    }
}

/// What executing one plan did.
#[derive(Debug, Default)]
pub struct Executed {
    pub applied: Applied,
    /// Bindings whose changes failed, with the first failure.
    pub failed: BTreeMap<BindingId, Failure>,
    /// Keys whose prune, a change made for no binding, failed, with the first failure.
    pub prune_failed: BTreeMap<KeyArn, Failure>,
    /// The observation the plan came from, with the roles the writes created.
    pub observed: Observed,
}

/// Runs a plan phase by phase. After a phase in which a change failed or a role came to
/// exist, the later phases are planned again (a pure step): the failed change's bindings
/// are held, so a failed role never leaves a key policy naming it, a group whose key
/// failed is not switched, and a new role's unique id names its grant.
pub async fn execute_plan(
    aws: &Arc<Aws>,
    desired: &Desired,
    held: &BlockedSet,
    mut observed: Observed,
    first: Plan,
    settings: &ExecSettings,
) -> Executed {
    let mut done = Executed::default();
    let mut current = first;
    let mut replan = false;
    for phase in 0..Change::PHASES {
        if replan {
            let mut holding = held.clone();
            holding.extend(done.failed.iter().map(|(b, f)| (b.clone(), f.clone())));
            current = plan::plan_holding(desired, &observed, aws.caller(), &holding);
            replan = false;
        }
        let pending = Phase { changes: current.changes.iter(), phase };
        let start = |c: PlannedChange| {
            let (aws, settings) = (aws.clone(), settings.clone());
            async move {
                let r = aws::execute(&aws, &c.change, &settings).await;
                (c, r)
            }
        };
        crate::shell::bounded::for_each(pending, WRITE_CONCURRENCY, start, |joined| match joined {
            Ok((c, r)) => replan |= record(c, r, &mut done, &mut observed),
            Err(e) => tracing::error!(error = %e, "write task failed"),
        })
        .await;
    }
    done.observed = observed;
    done
}

/// Takes in what one change did: logged, counted, and a role created noted as observed.
/// True when the rest of the plan must be planned again (a role created, a change failed).
fn record(c: PlannedChange, r: Result<Done, Failure>, done: &mut Executed, observed: &mut Observed) -> bool {
    let (action, account, region, target) =
        (c.change.action(), c.change.account().to_string(), c.change.region().unwrap_or("global"), c.change.target());
    match r {
        Ok(Done::NotNeeded(why)) => {
            tracing::info!(action, %account, region, %target, why, "change not needed any more; nothing written");
        }
        Ok(d) => {
            tracing::info!(action, %account, region, %target, reason = %c.reason, "applied change");
            done.applied.add(action, 1);
            if let (Done::Role(Some(role)), Change::CreateServiceLinkedRole { slr }) = (d, &c.change) {
                observed.roles.insert((slr.account, slr.name()), Ok(Some(role)));
                return true;
            }
        }
        Err(f) => {
            tracing::warn!(action, %account, region, %target, error = %f, class = f.class.as_str(), "change failed");
            for b in &c.bindings {
                done.failed.entry(b.clone()).or_insert_with(|| f.clone());
            }
            if let Some(key) = c.prune_only_key() {
                done.prune_failed.entry(key.clone()).or_insert_with(|| f.clone());
            }
            return true;
        }
    }
    false
}

/// The changes of one phase, cloned one at a time as write slots free.
struct Phase<'a> {
    changes: std::slice::Iter<'a, PlannedChange>,
    phase: u8,
}

impl Iterator for Phase<'_> {
    type Item = PlannedChange;

    fn next(&mut self) -> Option<PlannedChange> {
        let phase = self.phase;
        self.changes.find(|c| c.change.phase() == phase).cloned()
    }
}

/// The bindings of the units (see [`Units`]) of `keys`: whole units, so a group's switch
/// is planned with all its keys in view.
fn within_units(desired: &Desired, keys: &BTreeSet<KeyArn>) -> Desired {
    let keep = Units::of(desired).close(keys);
    let mut operator = desired.operator.clone();
    operator.departed.retain(|k| keys.contains(k));
    Desired {
        accounts: desired.accounts.clone(),
        bindings: desired.bindings.iter().filter(|b| keep.contains(&b.key)).cloned().collect(),
        operator,
    }
}

/// The desired state without some bindings.
pub fn without(desired: &Desired, drop: &BTreeMap<BindingId, Failure>) -> Desired {
    Desired {
        accounts: desired.accounts.clone(),
        bindings: desired.bindings.iter().filter(|b| !drop.contains_key(&b.id())).cloned().collect(),
        operator: desired.operator.clone(),
    }
}

/// The result of [`apply`].
#[derive(Debug, Default)]
pub struct Outcome {
    /// Observe-and-plan rounds, the last of which found nothing more to do (or ran out).
    pub passes: u32,
    pub applied: Applied,
    pub converged: Vec<BindingId>,
    pub failed: BTreeMap<BindingId, Failure>,
    /// Whether each binding's group can launch, as of the last observation of each of
    /// its parts.
    pub status: Vec<BindingStatus>,
    /// The groups' most recent launches, when this was a full pass.
    pub launches: BTreeMap<AsgRef, Result<Option<LaunchActivity>, Failure>>,
    /// Hand-off keys whose owner has not yet let a group's account use them: the daemon
    /// checks them again on its shorter hand-off interval.
    pub awaiting_owner: BTreeSet<KeyArn>,
    /// Keys with AWS work in progress for a binding (an image copy): the daemon looks
    /// again soon.
    pub in_progress: BTreeSet<KeyArn>,
    /// Why a prune was held by the guard against pruning by accident, if one was.
    pub prune_held: Option<String>,
    /// Keys on which something to prune is left (a prune that failed, or was not tried
    /// again after a failure), with why. A prune that is held is not pending.
    pub prune_pending: BTreeMap<KeyArn, Failure>,
}

/// Reconciles until every binding has converged or failed terminally, or `max_passes`
/// rounds of work have run; a last round observes the result. Each round observes, plans
/// and executes. What failed for a transient reason, a read or a write, is tried again:
/// with `settings.round_backoff`, in the next round after that backoff; without it, not
/// in this apply: the next round only reads, to report where things stand, and the
/// caller queues the work again (the daemon never sleeps in a pass). A terminal failure
/// is not retried within the same apply.
///
/// A full pass (`depth`) also reads the groups' recent launches, in its first round.
pub async fn apply(
    aws: &Arc<Aws>,
    desired: &Desired,
    max_passes: u32,
    settings: &ExecSettings,
    depth: Depth,
) -> Outcome {
    let mut out = Outcome::default();
    // The latest observation of every part, for the bindings' status: later rounds
    // observe only the bindings still in play.
    let mut seen = Observed::default();
    let mut terminal: BTreeMap<BindingId, Failure> = BTreeMap::new();
    let mut last_failed: BTreeMap<BindingId, Failure> = BTreeMap::new();
    let mut jitter = Jitter::from_clock();
    let mut troubled_rounds = 0;
    // The keys the last round wrote to or failed on.
    let mut touched: BTreeSet<KeyArn> = BTreeSet::new();
    let mut prunes = PruneProgress::default();
    loop {
        out.passes += 1;
        // After a troubled round: wait and go on, or read once more and stop.
        let last_look = after_trouble(troubled_rounds, settings, &mut jitter).await;
        let span = tracing::info_span!("round", round = out.passes);
        let depth = if out.passes == 1 { depth } else { Depth::Quick };
        // The last look reads only the units the troubled round wrote to or failed on:
        // the others' observation from that round stands, as nothing was written there.
        let focus = last_look.then(|| within_units(desired, &touched));
        let (observed, mut plan) =
            observe_and_plan(aws, focus.as_ref().unwrap_or(desired), &terminal, depth).instrument(span.clone()).await;
        prunes.skip_stopped(&mut plan);
        let retry =
            plan.blocked.iter().map(|b| &b.failure).chain(plan.prune.unread.values()).any(|f| f.class.is_transient());
        if out.passes == 1 {
            out.prune_held = report_prune(&plan);
        }
        if depth == Depth::Full {
            warn_drift(&plan);
        }
        let done = plan.changes.is_empty() && !retry;
        if done || last_look || out.passes > max_passes {
            seen.absorb(observed);
            let failed = still_failing(terminal, &plan, &last_failed, out.passes, max_passes);
            out.prune_pending = prunes.left(&plan);
            conclude(&mut out, desired, failed, seen, aws.caller());
            return out;
        }
        hold_terminal(&mut terminal, plan.blocked.iter().map(|b| (&b.binding, &b.failure)));
        touched = keys_in_play(&plan);
        let mut executed = execute_plan(aws, desired, &terminal, observed, plan, settings).instrument(span).await;
        seen.absorb(std::mem::take(&mut executed.observed));
        hold_terminal(&mut terminal, executed.failed.iter());
        touched.extend(executed.failed.keys().map(|b| b.key.clone()));
        let prune_trouble = prunes.record(std::mem::take(&mut executed.prune_failed));
        let troubled = retry || prune_trouble || executed.failed.values().any(|f| f.class.is_transient());
        troubled_rounds = if troubled { troubled_rounds + 1 } else { 0 };
        last_failed = executed.failed;
        out.applied.extend(&executed.applied);
    }
}

/// Once an apply: a held prune at warn level (and why, returned), and what pruning
/// leaves as it is.
fn report_prune(plan: &Plan) -> Option<String> {
    for n in &plan.prune.notes {
        tracing::info!(note = %n, pruned = plan.prune.pruned, "prune");
    }
    let why = plan.prune.held.clone()?;
    tracing::warn!(reason = %why, "prune held");
    Some(why)
}

/// Keeps the failures that will not pass by themselves: their bindings are not tried
/// again in later rounds.
fn hold_terminal<'a>(
    terminal: &mut BTreeMap<BindingId, Failure>,
    failures: impl Iterator<Item = (&'a BindingId, &'a Failure)>,
) {
    for (b, f) in failures.filter(|(_, f)| !f.class.is_transient()) {
        terminal.insert(b.clone(), f.clone());
    }
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
    keys.extend(plan.blocked.iter().filter(|b| b.failure.class.is_transient()).map(|b| b.binding.key.clone()));
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

/// What fails when the rounds end: the terminal failures, the blocked bindings, and the
/// bindings of every change still pending, each with why.
fn still_failing(
    mut failed: BTreeMap<BindingId, Failure>,
    plan: &Plan,
    last_failed: &BTreeMap<BindingId, Failure>,
    passes: u32,
    max_passes: u32,
) -> BTreeMap<BindingId, Failure> {
    failed.extend(plan.blocked.iter().map(|b| (b.binding.clone(), b.failure.clone())));
    for c in &plan.changes {
        for b in &c.bindings {
            let why = last_failed.get(b).map_or("not converged", |f| f.message.as_str());
            let message = if passes > max_passes {
                format!("{why} after {max_passes} passes; still pending: {}", c.change.action())
            } else {
                format!("{why}; still pending: {}, to be tried again", c.change.action())
            };
            failed.entry(b.clone()).or_insert_with(|| Failure { class: ErrorClass::Retryable, message });
        }
    }
    failed
}

/// The outcome's bindings, from what fails at the end and the latest observation of every
/// part.
fn conclude(
    out: &mut Outcome,
    desired: &Desired,
    failed: BTreeMap<BindingId, Failure>,
    mut seen: Observed,
    caller: &AccountId,
) {
    out.converged = desired.bindings.iter().map(|b| b.id()).filter(|a| !failed.contains_key(a)).collect();
    out.awaiting_owner =
        failed.iter().filter(|(_, f)| f.class == ErrorClass::AwaitingOwner).map(|(b, _)| b.key.clone()).collect();
    out.in_progress =
        failed.iter().filter(|(_, f)| f.class == ErrorClass::InProgress).map(|(b, _)| b.key.clone()).collect();
    out.failed = failed;
    out.status = status::evaluate(desired, &seen, caller, status::now());
    out.launches = std::mem::take(&mut seen.launches);
}

/// How the prunes of one apply went: a prune is a write for no binding, so its failure
/// is kept by key. One that failed terminally is not tried again within the apply.
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
    fn left(self, last: &Plan) -> BTreeMap<KeyArn, Failure> {
        let mut left = self.stopped;
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
