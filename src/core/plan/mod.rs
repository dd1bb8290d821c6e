//! The planner: `plan(desired, observed)` judges every binding ([`crate::core::judge`]) and
//! lists the AWS writes that would make what AWS has match the desired state, only where
//! the judgement says a write can help. No I/O, no async, no SDK types.
//!
//! A binding is written for when its verdict is [`Verdict::Converging`] (its own parts can
//! be made ready), or [`Verdict::Blocked`] (its own key is made ready, but its group's
//! switch waits for another key), and only for the conditions that are not `True`. Nothing
//! is written for one that waits for someone or failed.

mod change;
pub mod prune;
pub mod reads;
mod spare;

use std::collections::BTreeMap;

pub use change::{Change, PlannedChange};
pub use prune::{edit_prune_hold, PruneReport, CONFIRM, PRUNE_LEAVES};
pub use reads::{departed_readable, reads, Depth};
pub use spare::{Spared, SparedBy};

pub use crate::core::judge::{Context, Judged, Note, NoteKind, Settled};
pub use crate::core::model::DryRun;
pub use crate::core::naming::{grant_name, is_operators_grant, operators_grant_account};

use crate::core::judge::{judge, Facts, Judgement, KeyView, Kind, Reason, Retry, Verdict};
use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, AsgRef, BindingId, KeyArn, Slr, Wait};
use crate::core::policy::{self, PolicyDocument};
use crate::core::reencrypt::Write;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order (by phase).
    pub changes: Vec<PlannedChange>,
    /// Every binding's conditions and verdict, in the desired state's order.
    pub judged: Vec<Judged>,
    pub notes: Vec<Note>,
    /// What pruning found, when it is on.
    pub prune: PruneReport,
}

impl Plan {
    /// The bindings this plan cannot move on: waiting for someone, blocked, or failed,
    /// each with its verdict. Not those whose permissions are in place and only their
    /// launches fail or were not read: no write would change that.
    pub fn stopped(&self) -> impl Iterator<Item = &Judged> {
        self.judged.iter().filter(|j| match &j.verdict {
            Verdict::Ready | Verdict::Converging => false,
            Verdict::Waiting { wait, .. } => *wait != Wait::Launches,
            Verdict::Failed { retry, .. } => *retry != Retry::Resync,
            Verdict::Blocked { .. } => true,
        })
    }
}

/// Judges `desired` against `observed`, and plans the writes the judgement asks for, in
/// execution order.
pub fn plan(desired: &Desired, observed: &Observed, caller: &AccountId, ctx: &Context) -> Plan {
    let j = judge(desired, observed, caller, ctx);
    let prunes = prune::find_prunes(desired, observed, caller);
    let writes = Writable::of(&j);
    let mut changes = roles(&writes);
    changes.extend(grants(desired, &j, &writes));
    changes.extend(key_policies(desired, observed, &j, &writes, &prunes.principals));
    changes.extend(groups(&writes));
    changes.extend(reencrypt(&writes));
    changes.extend(prunes.grants);
    changes.extend(cleanup(desired, observed));
    changes.sort_by_key(|c| c.change.phase());
    Plan { changes, judged: j.judged, notes: j.notes, prune: prunes.report }
}

/// A binding the planner writes for, with what it read.
struct Writable<'j, 'a> {
    id: &'j BindingId,
    judged: &'j Judged,
    facts: &'j Facts<'a>,
    /// Its group's switch waits for another key: its own key is made ready meanwhile.
    blocked: bool,
}

impl<'j, 'a> Writable<'j, 'a> {
    fn of(j: &'j Judgement<'a>) -> Vec<Self> {
        j.judged
            .iter()
            .zip(&j.facts)
            .filter_map(|(judged, facts)| {
                // Writes serve a binding that is not stopped: one that writes make ready,
                // one whose switch is held (its own key is made ready), or one already
                // ready (the operator's own grants that fall short are retired beside a
                // complete one).
                let blocked = match &judged.verdict {
                    Verdict::Blocked { .. } => true,
                    Verdict::Waiting { wait, .. } if *wait != Wait::Launches => return None,
                    Verdict::Failed { retry, .. } if *retry != Retry::Resync => return None,
                    _ => false,
                };
                Some(Writable { id: &judged.binding, judged, facts: facts.as_ref()?, blocked })
            })
            .collect()
    }

    fn lacks(&self, kind: Kind, reasons: &[Reason]) -> bool {
        self.judged.condition(kind).is_some_and(|c| reasons.contains(&c.reason))
    }
}

/// The service-linked roles that do not exist yet, once each.
fn roles(writes: &[Writable]) -> Vec<PlannedChange> {
    let mut roles: BTreeMap<&Slr, Vec<BindingId>> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.lacks(Kind::RoleReady, &[Reason::NotFound])) {
        roles.entry(&w.facts.slr).or_default().push(w.id.clone());
    }
    roles
        .into_iter()
        .map(|(slr, bindings)| PlannedChange {
            change: Change::CreateServiceLinkedRole { slr: slr.clone() },
            reason: format!("service-linked role {} does not exist in account {}", slr.name(), slr.account),
            bindings,
        })
        .collect()
}

/// Case 2: one complete grant per (key, role), and the operator's own grants that no
/// longer do their job retired once it stands.
fn grants(desired: &Desired, j: &Judgement, writes: &[Writable]) -> Vec<PlannedChange> {
    let instance = &desired.operator.instance;
    let mut pairs: BTreeMap<(&KeyArn, &Slr), Vec<&Writable>> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.judged.binding.key.account() != &w.judged.binding.asg.account) {
        pairs.entry((w.facts.key, &w.facts.slr)).or_default().push(w);
    }
    let mut out = Vec::new();
    for ((key, slr), ws) in pairs {
        let Some(view) = j.grants.get(&(key.clone(), slr.clone())) else { continue };
        let bindings: Vec<BindingId> = ws.iter().map(|w| w.id.clone()).collect();
        if view.complete.is_none() {
            out.push(PlannedChange {
                change: Change::CreateGrant {
                    key: key.clone(),
                    slr: slr.clone(),
                    role_id: ws[0].facts.role.map(|r| r.role_id.clone()),
                    instance: instance.clone(),
                },
                reason: format!(
                    "no complete grant on this key for {}; a key of another account needs one (case 2)",
                    slr.arn()
                ),
                bindings: bindings.clone(),
            });
        }
        for (grant_id, why) in &view.retire {
            out.push(PlannedChange {
                change: Change::RetireGrant { key: key.clone(), slr: slr.clone(), grant_id: grant_id.clone() },
                reason: format!("the operator's grant {grant_id} {why}"),
                bindings: bindings.clone(),
            });
        }
    }
    out
}

/// One merged document per key for all its bindings that lack something, with what no
/// binding explains pruned first.
fn key_policies(
    desired: &Desired,
    observed: &Observed,
    j: &Judgement,
    writes: &[Writable],
    pruned: &prune::Pruned,
) -> Vec<PlannedChange> {
    let mut by_key: BTreeMap<&KeyArn, Vec<&Writable>> = BTreeMap::new();
    for w in writes
        .iter()
        .filter(|w| w.facts.need.is_some() && w.lacks(Kind::KeyPolicyReady, &[Reason::Missing, Reason::Contested]))
    {
        by_key.entry(w.facts.key).or_default().push(w);
    }
    // A key with something to prune is written even when none of its bindings lacks
    // anything.
    for key in pruned.keys() {
        by_key.entry(key).or_default();
    }
    let mut out = Vec::new();
    for (key, ws) in by_key {
        let prune: &[(String, String)] = pruned.get(key).map_or(&[], Vec::as_slice);
        if let Some(c) = key_policy(desired, observed, j, key, &ws, prune) {
            out.push(c);
        }
    }
    out
}

/// One key's write: the missing needs of `ws` merged into its policy, after the
/// principals in `prune` leave this instance's statements.
fn key_policy(
    desired: &Desired,
    observed: &Observed,
    j: &Judgement,
    key: &KeyArn,
    ws: &[&Writable],
    prune: &[(String, String)],
) -> Option<PlannedChange> {
    let instance = &desired.operator.instance;
    let view = j.keys.get(key);
    let mut doc = writable_document(observed, view, key, instance)?;
    let removed = policy::prune(&mut doc, instance, &prune.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    let (missing, mut reason, current) = match view {
        Some(v) => missing_needs(v, ws),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    if missing.is_empty() && removed.is_empty() {
        return None;
    }
    let merged = match missing.is_empty() {
        true => doc,
        false => policy::extend(&doc, instance, &missing, &current).ok()?,
    };
    reason.extend(prune.iter().filter(|(p, _)| removed.contains(p)).map(|(p, why)| format!("prune {p}: {why}")));
    let policy = merged.to_json();
    let before_bytes = observed.key_policies.get(key).and_then(|p| p.as_ref().ok()).map_or(0, String::len);
    reason.push(policy_size(before_bytes, policy.len()));
    Some(PlannedChange {
        change: Change::PutKeyPolicy {
            key: key.clone(),
            needs: missing.iter().map(|(n, _)| (*n).clone()).collect(),
            prune: removed,
            instance: instance.clone(),
            policy,
            before_bytes,
        },
        reason: reason.join("; "),
        bindings: ws.iter().map(|w| w.id.clone()).collect(),
    })
}

/// A policy's size before and after a write, against KMS's limit (KMS Developer Guide,
/// "Resource quotas": 32 KB).
fn policy_size(before: usize, after: usize) -> String {
    let max = policy::MAX_POLICY_BYTES;
    format!("policy {before} → {after} bytes of {max} ({}%)", after * 100 / max)
}

/// The key's policy as read, to write a merge of; none when KMS would refuse any write of
/// it (a statement the operator may not edit names a deleted principal: the bindings say
/// so, in the judgement) or it could not be read.
fn writable_document(
    observed: &Observed,
    view: Option<&KeyView>,
    key: &KeyArn,
    instance: &crate::core::model::Instance,
) -> Option<PolicyDocument> {
    match view {
        Some(v) if v.refusal.is_some() => None,
        Some(v) => v.doc.as_ref().ok().cloned(),
        None => {
            // A key no binding names any more, read to prune it.
            let doc = PolicyDocument::parse(observed.key_policies.get(key)?.as_ref().ok()?).ok()?;
            policy::refusal(&policy::foreign_orphans(&doc, instance)).is_none().then_some(doc)
        }
    }
}

/// The needs `ws` lack on their key (each once), with their lines for the change's
/// reason, and the unique ids of every role the key's policy is written for.
fn missing_needs<'v>(
    v: &'v KeyView,
    ws: &[&Writable],
) -> (Vec<(&'v policy::Need, policy::Gap)>, Vec<String>, Vec<&'v str>) {
    let mut needs: Vec<usize> = ws.iter().filter_map(|w| w.facts.need).collect();
    needs.sort_unstable();
    needs.dedup();
    let missing = needs.iter().filter_map(|&n| Some((&v.needs[n].need, *v.needs[n].gap.as_ref().ok()?))).collect();
    let mut lines: Vec<String> = Vec::new();
    for &n in &needs {
        for l in v.needs[n].lines() {
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
    }
    let current = v.needs.iter().filter_map(|n| n.need.who.unique_id()).collect();
    (missing, lines, current)
}

/// Each group not on its role, switched once (however many keys it is bound to), unless
/// another of its keys holds the switch.
fn groups(writes: &[Writable]) -> Vec<PlannedChange> {
    let mut groups: BTreeMap<&AsgRef, Vec<&Writable>> = BTreeMap::new();
    for w in writes.iter().filter(|w| !w.blocked && w.lacks(Kind::AsgUsesRole, &[Reason::OtherRole, Reason::HeldByKey]))
    {
        groups.entry(&w.judged.binding.asg).or_default().push(w);
    }
    groups
        .into_iter()
        .map(|(asg, ws)| {
            let slr = &ws[0].facts.slr;
            let have = ws[0].facts.group.service_linked_role_arn.as_deref();
            PlannedChange {
                reason: format!("ServiceLinkedRoleARN is {}; want {}", have.unwrap_or("unset"), slr.name()),
                change: Change::UpdateAutoScalingGroup { asg: asg.clone(), service_linked_role_arn: slr.arn() },
                bindings: ws.iter().map(|w| w.id.clone()).collect(),
            }
        })
        .collect()
}

/// `strategy: reencrypt`: the next write of each launch source, once for every binding
/// that needs it (groups sharing a template or an image). A copy may start at once; what
/// changes the group's launches waits until nothing holds its switch, so the group
/// launches the own key only once its role may use it.
fn reencrypt(writes: &[Writable]) -> Vec<PlannedChange> {
    let mut out: Vec<PlannedChange> = Vec::new();
    // By account, Region, the group for a write to the group alone, and the write.
    let mut seen: BTreeMap<(AccountId, &str, &str, &Write), usize> = BTreeMap::new();
    for w in writes {
        let asg = &w.judged.binding.asg;
        for (write, why) in &w.facts.reencrypt {
            if w.blocked && !matches!(write, Write::CopyImage { .. }) {
                continue;
            }
            let alone = match write {
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => asg.name.as_str(),
                _ => "",
            };
            match seen.entry((asg.account, asg.region.as_str(), alone, write)) {
                std::collections::btree_map::Entry::Occupied(at) => out[*at.get()].bindings.push(w.id.clone()),
                std::collections::btree_map::Entry::Vacant(at) => {
                    at.insert(out.len());
                    let change = Change::Reencrypt { asg: asg.clone(), key: w.facts.key.clone(), write: write.clone() };
                    out.push(PlannedChange { change, reason: why.clone(), bindings: vec![w.id.clone()] });
                }
            }
        }
    }
    out
}

/// `defaults.reencryptCleanup`: each unused copy the pass found, deregistered with its
/// snapshots, for no binding.
fn cleanup(desired: &Desired, observed: &Observed) -> Vec<PlannedChange> {
    if !desired.operator.reencrypt_cleanup {
        return Vec::new();
    }
    let unused = observed.reencrypt.unused.iter();
    unused
        .flat_map(|((account, region), copies)| {
            copies.iter().map(|c| PlannedChange {
                reason: crate::core::reencrypt::cleanup::reason(c),
                change: Change::DeleteCopy { account: *account, region: region.clone(), copy: c.clone() },
                bindings: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
