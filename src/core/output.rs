//! Renders a plan for people (like `terraform plan`) and for programs (JSON).

use serde_json::{json, Value};

use crate::core::access::{Access, KeyAccess};
use crate::core::judge::{Judged, Kind, Reason, Standing};
use crate::core::model::Wait;
use crate::core::plan::{grant_name, Change, Plan, PlannedChange};
use crate::core::policy::GRANT_OPERATIONS;
use crate::core::reencrypt::Write;

fn details(c: &Change) -> Value {
    match c {
        Change::CreateServiceLinkedRole { slr } => json!({
            "roleName": slr.name(), "roleArn": slr.arn(), "customSuffix": slr.suffix.as_deref(),
        }),
        Change::PutKeyPolicy { policy, prune, before_bytes, .. } => json!({
            "policyBytes": {
                "before": before_bytes, "after": policy.len(), "limit": crate::core::policy::MAX_POLICY_BYTES,
            },
            "policy": serde_json::from_str::<Value>(policy).unwrap_or(Value::String(policy.clone())),
            "prune": prune,
        }),
        // The name carries the role's unique id; null until the role exists.
        Change::CreateGrant { slr, role_id, instance, .. } => json!({
            "granteePrincipal": slr.arn(), "name": role_id.as_deref().map(|id| grant_name(slr, id, instance)),
            "operations": GRANT_OPERATIONS, "retiringPrincipal": slr.account.root_arn(slr.partition),
            "createdBy": slr.account.as_str(),
        }),
        Change::RetireGrant { slr, grant_id, .. } => json!({ "grantId": grant_id, "retiredBy": slr.account.as_str() }),
        Change::UpdateAutoScalingGroup { service_linked_role_arn, .. } => {
            json!({ "serviceLinkedRoleArn": service_linked_role_arn })
        }
        Change::Reencrypt { key, write, .. } => match write {
            Write::CopyImage { source_image, name } => {
                json!({ "sourceImageId": source_image, "name": name, "encrypted": true, "kmsKeyId": key.as_str() })
            }
            Write::CreateVersion { template_id, source_version, image_id, devices, description } => json!({
                "launchTemplateId": template_id, "sourceVersion": source_version, "imageId": image_id,
                "kmsKeyId": key.as_str(), "devices": devices, "versionDescription": description,
            }),
            Write::PointGroup { template_id, version, .. } => {
                json!({ "launchTemplate": { "launchTemplateId": template_id, "version": version.to_string() } })
            }
            Write::CopyConfiguration { from, name, image_id } => {
                json!({ "copyOf": from, "launchConfigurationName": name, "imageId": image_id })
            }
            Write::UseConfiguration { name } => json!({ "launchConfigurationName": name }),
            Write::PutParameter { name, image_id } => {
                json!({ "parameterName": name, "value": image_id, "dataType": "aws:ec2:image" })
            }
        },
        Change::DeleteCopy { copy, .. } => {
            json!({ "imageId": copy.image_id, "name": copy.name, "deleteSnapshots": copy.snapshots })
        }
    }
}

fn action_json(c: &PlannedChange) -> Value {
    json!({
        "action": c.change.action(),
        "account": c.change.account().as_str(),
        "region": c.change.region(),
        "target": c.change.target(),
        "reason": c.reason,
        "bindings": c.bindings.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        "details": details(&c.change),
    })
}

/// `{"actions": [...], "errors": [...], "notes": [...], "keys": [...]}`.
pub fn plan_json(plan: &Plan, access: &[KeyAccess]) -> String {
    let v = json!({
        "actions": plan.changes.iter().map(action_json).collect::<Vec<_>>(),
        "errors": plan.stopped().map(|j| json!({
            "binding": j.binding.to_string(),
            "selector": j.selector.as_deref(),
            "class": j.verdict.class(),
            "error": j.verdict.message(),
        })).collect::<Vec<_>>(),
        "notes": plan.notes.iter().map(|n| json!({
            "binding": n.binding.to_string(),
            "note": n.message,
        })).collect::<Vec<_>>(),
        "prune": json!({
            "pruned": plan.prune.pruned,
            "held": plan.prune.held,
            "spared": plan.prune.spared.iter().map(|s| json!({
                "key": s.key.as_str(),
                "principal": s.principal,
                "grant": s.grant,
                "groups": s.groups().iter().map(|(g, role)| json!({"asg": g.to_string(), "role": role})).collect::<Vec<_>>(),
                "message": s.to_string(),
            })).collect::<Vec<_>>(),
            "notes": plan.prune.notes,
        }),
        "keys": access.iter().map(|a| json!({
            "key": a.key.as_str(),
            "account": a.account.as_str(),
            "operator": a.operator,
            "access": a.kind(),
            "message": a.message(),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).expect("plan JSON serialises")
}

/// One line per change with its reason, then one line per binding that cannot progress,
/// then what lets the operator manage each key.
pub fn plan_text(plan: &Plan, access: &[KeyAccess]) -> String {
    let mut s = String::new();
    let bindings = plan.judged.len();
    let stopped = plan.stopped().count();
    if plan.changes.is_empty() && stopped == 0 {
        s.push_str(&format!(
            "No changes. {bindings} of {bindings} binding{} up to date.\n",
            if bindings == 1 { " is" } else { "s are" }
        ));
    } else if plan.changes.is_empty() {
        // Nothing to write is not "nothing to do": say first that some cannot progress.
        s.push_str(&format!(
            "No change can be made: {stopped} of {bindings} binding{} cannot progress (see below); {} up to date.\n",
            if bindings == 1 { "" } else { "s" },
            bindings - stopped
        ));
    } else {
        changes_text(&mut s, plan);
    }
    if !plan.notes.is_empty() || !plan.prune.notes.is_empty() {
        s.push_str("\nNotes:\n");
        for n in &plan.notes {
            s.push_str(&format!("  - {}: {}\n", n.binding, n.message));
        }
        for n in &plan.prune.notes {
            s.push_str(&format!("  - prune: {n}\n"));
        }
    }
    if let Some(why) = &plan.prune.held {
        s.push_str(&format!("\nPrune held: {why}\n"));
    }
    for spared in &plan.prune.spared {
        s.push_str(&format!("\nPrune held: {spared}\n"));
    }
    blocked_text(&mut s, plan);
    if !access.is_empty() {
        s.push_str("\nWhat lets the operator manage each key:\n");
        for a in access {
            let sign = if matches!(a.access, Access::Account | Access::Operator(_)) { '=' } else { '!' };
            s.push_str(&format!("  {sign} {}: {}\n", a.key, a.message()));
        }
    }
    s
}

/// The changes, one line each with its reason, and their count.
fn changes_text(s: &mut String, plan: &Plan) {
    s.push_str("asg-cmk-operator will make these changes:\n\n");
    let w = plan.changes.iter().map(|c| c.change.action().len()).max().unwrap_or(0);
    for c in &plan.changes {
        let sign = match &c.change {
            Change::CreateServiceLinkedRole { .. } | Change::CreateGrant { .. } => '+',
            Change::RetireGrant { .. } | Change::DeleteCopy { .. } => '-',
            Change::PutKeyPolicy { needs, prune, .. } if needs.is_empty() && !prune.is_empty() => '-',
            _ => '~',
        };
        s.push_str(&format!(
            "  {sign} {:<w$}  {}  {:<14} {}\n      # {}\n",
            c.change.action(),
            c.change.account(),
            c.change.region().unwrap_or("global"),
            c.change.target(),
            c.reason
        ));
        if let Change::PutKeyPolicy { prune, instance, .. } = &c.change {
            for p in prune {
                s.push_str(&format!("      - {p}: leaves the statements of instance {instance}\n"));
            }
        }
    }
    let n = plan.changes.len();
    s.push_str(&format!("\nPlan: {n} change{}.\n", if n == 1 { "" } else { "s" }));
}

/// The bindings that cannot progress, and those awaiting their key's owner.
fn blocked_text(s: &mut String, plan: &Plan) {
    let owner = |j: &&Judged| j.verdict.standing() == Standing::Waiting(Wait::KeyOwner);
    let contested = |j: &&Judged| j.verdict.standing() == Standing::Waiting(Wait::Contested);
    let (waiting, stuck): (Vec<&Judged>, Vec<&Judged>) = plan.stopped().filter(|j| !contested(j)).partition(owner);
    for line in contested_lines(&plan.judged) {
        s.push_str(&format!("\n{line}\n"));
    }
    if !stuck.is_empty() {
        s.push_str(&format!("\n{} binding{} cannot progress:\n", stuck.len(), if stuck.len() == 1 { "" } else { "s" }));
        for j in &stuck {
            let by = j.selector.as_ref().map(|s| format!(" (selector {s})")).unwrap_or_default();
            s.push_str(&format!("  ! {}{by}: {}\n", j.binding, j.verdict.message()));
        }
    }
    if !waiting.is_empty() {
        s.push_str(&format!(
            "\n{} binding{} awaiting key owner (`asg-cmk-operator handoff` prints what each owner must add):\n",
            waiting.len(),
            if waiting.len() == 1 { "" } else { "s" }
        ));
        for j in &waiting {
            let b = &j.binding;
            s.push_str(&format!(
                "  ? {}: awaiting key owner: account {} has not yet let account {} use key {}\n",
                b,
                b.key.account(),
                b.asg.account,
                b.key
            ));
        }
    }
}

/// One line per contested key (see [`crate::core::contest`]): who fights the operator
/// over its policy, the statements to add to that writer's code, and the groups that wait.
pub fn contested_lines(judged: &[Judged]) -> Vec<String> {
    let mut keys: std::collections::BTreeMap<&str, (Vec<String>, &str)> = std::collections::BTreeMap::new();
    for j in judged {
        let Some(c) = j.condition(Kind::KeyPolicyReady).filter(|c| c.reason == Reason::Contested) else { continue };
        let e = keys.entry(j.binding.key.as_str()).or_insert((Vec::new(), &c.message));
        e.0.push(j.binding.asg.to_string());
    }
    keys.into_iter()
        .map(|(key, (groups, message))| format!("≠ key {key} is contested (groups {}): {message}", groups.join(", ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::judge::{Retry, Verdict};
    use crate::core::model::{AccountId, AsgRef, BindingId, Failure, KeyArn, Slr};
    use crate::core::plan::{Note, NoteKind};

    /// A binding judged with `verdict`, and no conditions.
    fn judged(binding: BindingId, verdict: Verdict) -> Judged {
        Judged { binding, selector: None, conditions: vec![], verdict }
    }

    fn sample() -> Plan {
        let account = AccountId::parse("111122223333").unwrap();
        let key = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111").unwrap();
        let asg = AsgRef::new(account, "us-west-2", "web");
        let web = BindingId { asg: asg.clone(), key: key.clone() };
        Plan {
            changes: vec![
                PlannedChange {
                    change: Change::CreateServiceLinkedRole {
                        slr: Slr { account, partition: "aws", suffix: Some("CMK".into()) },
                    },
                    reason: "service-linked role AWSServiceRoleForAutoScaling_CMK does not exist".into(),
                    bindings: vec![web.clone()],
                },
                PlannedChange {
                    change: Change::UpdateAutoScalingGroup {
                        asg: asg.clone(),
                        service_linked_role_arn: "arn:x".into(),
                    },
                    reason: "ServiceLinkedRoleARN is unset".into(),
                    bindings: vec![web.clone()],
                },
            ],
            judged: vec![
                judged(web.clone(), Verdict::Converging),
                judged(
                    BindingId { asg: AsgRef::new(account, "us-west-2", "ghost"), key: key.clone() },
                    Verdict::Failed { failure: Failure::terminal("ASG ghost not found"), retry: Retry::Backoff },
                ),
            ],
            notes: vec![Note {
                binding: BindingId { asg: AsgRef::new(account, "us-west-2", "batch"), key },
                kind: NoteKind::AwsManaged,
                message: "an AWS managed key".into(),
            }],
            prune: Default::default(),
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: Value = serde_json::from_str(&plan_json(&sample(), &[])).unwrap();
        let a = &v["actions"][0];
        assert_eq!(a["action"], "CreateServiceLinkedRole");
        assert_eq!(a["account"], "111122223333");
        assert_eq!(a["region"], Value::Null);
        assert_eq!(a["target"], "AWSServiceRoleForAutoScaling_CMK");
        assert!(a["reason"].as_str().unwrap().contains("does not exist"));
        assert_eq!(v["actions"][1]["region"], "us-west-2");
        assert_eq!(v["notes"][0]["note"], "an AWS managed key");
        assert_eq!(v["errors"][0]["binding"], "111122223333/us-west-2/ghost [11111111-1111-1111-1111-111111111111]");
    }

    #[test]
    fn a_binding_awaiting_its_key_owner_is_listed_apart_from_the_failures() {
        let mut p = sample();
        let key = KeyArn::parse("arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333").unwrap();
        let account = AccountId::parse("111122223333").unwrap();
        p.judged.push(judged(
            BindingId { asg: AsgRef::new(account, "us-west-2", "api"), key },
            Verdict::Waiting { wait: Wait::KeyOwner, message: "awaiting key owner: ...".into() },
        ));
        let t = plan_text(&p, &[]);
        assert!(t.contains("1 binding cannot progress:"), "{t}");
        assert!(t.contains("1 binding awaiting key owner"), "{t}");
        assert!(t.contains("  ? 111122223333/us-west-2/api [999999999999:33333333-3333-3333-3333-333333333333]: awaiting key owner: account 999999999999 has not yet let account 111122223333 use key"), "{t}");
        let v: Value = serde_json::from_str(&plan_json(&p, &[])).unwrap();
        assert_eq!(v["errors"][1]["class"], "awaiting_owner");
    }

    #[test]
    fn text_has_one_line_per_change_and_per_blocked_binding() {
        let t = plan_text(&sample(), &[]);
        assert!(t.contains("  + CreateServiceLinkedRole  111122223333  global"), "{t}");
        assert!(t.contains("  ~ UpdateAutoScalingGroup   111122223333  us-west-2      web"), "{t}");
        assert!(t.contains("Plan: 2 changes."), "{t}");
        assert!(
            t.contains(
                "Notes:\n  - 111122223333/us-west-2/batch [11111111-1111-1111-1111-111111111111]: an AWS managed key"
            ),
            "{t}"
        );
        assert!(
            t.contains("  ! 111122223333/us-west-2/ghost [11111111-1111-1111-1111-111111111111]: ASG ghost not found"),
            "{t}"
        );
        let ready = sample().judged.into_iter().map(|j| judged(j.binding, Verdict::Ready)).collect();
        let done = Plan { judged: ready, ..Plan::default() };
        assert_eq!(plan_text(&done, &[]), "No changes. 2 of 2 bindings are up to date.\n");
        let failing = sample().judged.into_iter().filter(|j| j.binding.asg.name == "ghost").collect();
        let t = plan_text(&Plan { judged: failing, ..Plan::default() }, &[]);
        assert!(
            t.starts_with("No change can be made: 1 of 1 binding cannot progress (see below); 0 up to date.\n"),
            "{t}"
        );
        assert!(t.contains("ASG ghost not found"), "{t}");
    }

    #[test]
    fn a_contested_key_gets_one_line_with_its_groups_and_the_message() {
        let account = AccountId::parse("111122223333").unwrap();
        let key = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111").unwrap();
        let message: std::sync::Arc<str> = "contested: another writer replaced the key policy".into();
        let contested = |name: &str| {
            let c = crate::core::judge::Condition {
                kind: Kind::KeyPolicyReady,
                status: crate::core::judge::State::False,
                reason: Reason::Contested,
                message: message.clone(),
                since: 0,
            };
            let binding = BindingId { asg: AsgRef::new(account, "us-west-2", name), key: key.clone() };
            let verdict = Verdict::Waiting { wait: Wait::Contested, message: message.clone() };
            Judged { binding, selector: None, conditions: vec![c], verdict }
        };
        let lines = contested_lines(&[contested("web"), contested("api")]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("111122223333/us-west-2/web, 111122223333/us-west-2/api"), "{}", lines[0]);
        assert!(lines[0].ends_with(&*message), "{}", lines[0]);
        let plan = Plan { judged: vec![contested("web")], ..Plan::default() };
        let mut text = String::new();
        blocked_text(&mut text, &plan);
        assert!(text.contains("is contested") && !text.contains("cannot progress"), "{text}");
    }
}
