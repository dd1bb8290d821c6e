//! Running a plan's writes: roles first, then each unit of work on its own, in order
//! within the unit (key policy, grant, group, re-encryption, retirements), and units side
//! by side. One unit's group update does not wait for another unit's key policy.
//!
//! After a step of a unit in which a write failed, the rest of that unit is planned again
//! (a pure step) with the failed bindings settled, so a group whose key failed is not
//! switched, and the unit's other bindings go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::core::judge::{Context, Retry, Settled, Verdict};
use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, BindingId, Failure, KeyArn, Role};
use crate::core::plan::{self, Change, Plan, PlannedChange};
use crate::core::units::Units;
use crate::shell::aws::{self, Aws, Done, ExecSettings};

/// Writes in flight at once per account and action: a write of one kind never waits for
/// a slot held by a write of another (a group update behind key policies that wait on
/// KMS's pace, say).
pub const WRITE_CONCURRENCY: usize = 8;

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
    /// The roles the writes created.
    roles: BTreeMap<(AccountId, String), Result<Option<Role>, Failure>>,
    /// The bindings whose access a key policy write added.
    pub policy_for: Vec<BindingId>,
}

impl Executed {
    fn take(&mut self, other: Executed) {
        self.applied.extend(&other.applied);
        self.policy_for.extend(other.policy_for);
        for (b, f) in other.failed {
            self.failed.entry(b).or_insert(f);
        }
        for (k, f) in other.prune_failed {
            self.prune_failed.entry(k).or_insert(f);
        }
    }
}

/// The write slots, per account, Region and action: what one pace governs (KMS's quotas
/// and the operator's paces are per account and Region), so a write that waits for a slot
/// waits only behind writes of its own pace, never while another pace sits idle.
#[derive(Default)]
struct Slots(std::sync::Mutex<BTreeMap<SlotKey, Arc<Semaphore>>>);

/// (account, Region or "global", action).
type SlotKey = (AccountId, String, &'static str);

impl Slots {
    fn of(&self, c: &Change) -> Arc<Semaphore> {
        let region = c.region().unwrap_or("global").to_owned();
        let mut all = self.0.lock().expect("slots lock");
        let slot = all.entry((*c.account(), region, c.action()));
        slot.or_insert_with(|| Arc::new(Semaphore::new(WRITE_CONCURRENCY))).clone()
    }
}

/// What a unit's steps are planned from again after a failure.
struct Replan {
    desired: Desired,
    observed: Arc<Observed>,
    settled: Settled,
    caller: AccountId,
}

/// Runs `first`: the roles it creates, then each unit's writes, step by step.
pub async fn execute_plan(
    aws: &Arc<Aws>,
    desired: &Desired,
    settled: &Settled,
    mut observed: Observed,
    first: Plan,
    settings: &ExecSettings,
) -> Executed {
    let slots = Arc::new(Slots::default());
    let (roles, rest): (Vec<PlannedChange>, Vec<PlannedChange>) =
        first.changes.into_iter().partition(|c| c.change.phase() == 0);
    let mut done = Executed::default();
    let mut changes = rest;
    if !roles.is_empty() {
        let r = run_step(aws, roles, settings, &slots).await;
        let replan = !r.failed.is_empty() || !r.roles.is_empty();
        observed.roles.extend(r.roles.clone());
        done.take(r);
        if replan {
            // A new role's unique id names its grant; a role that failed leaves no key
            // policy naming it.
            let held = settle(settled, &done.failed);
            let ctx = Context { settled: &held, ..Context::at(crate::shell::clock::unix_seconds()) };
            changes = plan::plan(desired, &observed, aws.caller(), &ctx).changes;
            changes.retain(|c| c.change.phase() > 0);
        }
    }
    let units = Units::of(desired).with_lone(changes.iter().filter_map(PlannedChange::prune_only_key));
    let mut by_unit: BTreeMap<usize, Vec<PlannedChange>> = BTreeMap::new();
    for c in changes {
        by_unit.entry(unit_of(&units, &c)).or_default().push(c);
    }
    let shared = Arc::new(observed);
    let mut tasks = tokio::task::JoinSet::new();
    for (u, changes) in by_unit {
        let keys: BTreeSet<KeyArn> = units.members(u).iter().cloned().collect();
        let replan = Replan {
            desired: within(desired, &keys),
            observed: shared.clone(),
            settled: settled.clone(),
            caller: *aws.caller(),
        };
        let (aws, settings, slots) = (aws.clone(), settings.clone(), slots.clone());
        tasks.spawn(async move { run_unit(&aws, changes, replan, &settings, &slots).await });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => done.take(r),
            Err(e) => tracing::error!(error = %e, "write task failed"),
        }
    }
    // Every unit's task has ended, and with it every other hold on the observation.
    done.observed = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
    done
}

/// The unit a change belongs to: that of the key of its first binding, or, for a change
/// made for no binding (a prune), its key's.
fn unit_of(units: &Units, c: &PlannedChange) -> usize {
    let key = match (c.bindings.first(), c.prune_only_key()) {
        (Some(b), _) => &b.key,
        (None, Some(k)) => k,
        (None, None) => return usize::MAX,
    };
    units.index_of(key).unwrap_or(usize::MAX)
}

/// One unit's writes, step by step; after a step with a failure, the rest is planned
/// again with the failed bindings settled.
async fn run_unit(
    aws: &Arc<Aws>,
    mut changes: Vec<PlannedChange>,
    mut replan: Replan,
    settings: &ExecSettings,
    slots: &Arc<Slots>,
) -> Executed {
    let mut done = Executed::default();
    for phase in 1..Change::PHASES {
        if settings.stop.requested() {
            break;
        }
        let (now, later): (Vec<PlannedChange>, Vec<PlannedChange>) =
            changes.into_iter().partition(|c| c.change.phase() == phase);
        changes = later;
        if now.is_empty() {
            continue;
        }
        let r = run_step(aws, now, settings, slots).await;
        let failed = !r.failed.is_empty();
        done.take(r);
        if failed && !changes.is_empty() {
            replan.settled = settle(&replan.settled, &done.failed);
            let ctx = Context { settled: &replan.settled, ..Context::at(crate::shell::clock::unix_seconds()) };
            changes = plan::plan(&replan.desired, &replan.observed, &replan.caller, &ctx).changes;
            // A clean-up is made for no binding: the first plan put it in a unit of its own.
            changes.retain(|c| c.change.phase() > phase && !matches!(c.change, Change::DeleteCopy { .. }));
        }
    }
    done
}

/// `settled`, and each binding of `failed` settled as failed.
fn settle(settled: &Settled, failed: &BTreeMap<BindingId, Failure>) -> Settled {
    let mut out = settled.clone();
    for (b, f) in failed {
        out.entry(b.clone()).or_insert_with(|| Verdict::Failed { failure: f.clone(), retry: Retry::Backoff });
    }
    out
}

/// Runs one step's changes side by side, each in its account's and action's slots.
async fn run_step(
    aws: &Arc<Aws>,
    changes: Vec<PlannedChange>,
    settings: &ExecSettings,
    slots: &Arc<Slots>,
) -> Executed {
    let mut set = tokio::task::JoinSet::new();
    for c in changes {
        let (aws, settings, slot) = (aws.clone(), settings.clone(), slots.of(&c.change));
        set.spawn(async move {
            let _permit = slot.acquire_owned().await.expect("the write slots are never closed");
            if settings.stop.requested() {
                return (c, Err(Failure::terminal("not made: the pass was stopped before this write began")));
            }
            let r = aws::execute(&aws, &c.change, &settings).await;
            (c, r)
        });
    }
    let mut done = Executed::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((c, r)) => record(c, r, &mut done),
            Err(e) => tracing::error!(error = %e, "write task failed"),
        }
    }
    done
}

/// Takes in what one change did: logged, counted, a role created kept for the
/// observation, a failure kept by binding (or by key, for a prune).
fn record(c: PlannedChange, r: Result<Done, Failure>, done: &mut Executed) {
    let (action, account, region, target) =
        (c.change.action(), c.change.account().to_string(), c.change.region().unwrap_or("global"), c.change.target());
    match r {
        Ok(Done::NotNeeded(why)) => {
            tracing::info!(action, %account, region, %target, why, "change not needed any more; nothing written");
        }
        Ok(d) => {
            tracing::info!(action, %account, region, %target, reason = %c.reason, "applied change");
            done.applied.add(action, 1);
            if let Change::PutKeyPolicy { .. } = &c.change {
                done.policy_for.extend(c.bindings.iter().cloned());
            }
            if let (Done::Role(Some(role)), Change::CreateServiceLinkedRole { slr }) = (d, &c.change) {
                done.roles.insert((slr.account, slr.name()), Ok(Some(role)));
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
        }
    }
}

/// The bindings of the units (see [`Units`]) of `keys`: whole units, so a group's switch
/// is planned with all its keys in view.
pub fn within(desired: &Desired, keys: &BTreeSet<KeyArn>) -> Desired {
    let keep = Units::of(desired).close(keys);
    let mut operator = desired.operator.clone();
    operator.departed.retain(|k| keys.contains(k));
    Desired {
        accounts: desired.accounts.clone(),
        bindings: desired.bindings.iter().filter(|b| keep.contains(&b.key)).cloned().collect(),
        selectors: Vec::new(),
        events: None,
        operator,
    }
}
