//! Table tests for `plan`: each row reads like the procedure.

use std::collections::BTreeMap;

use super::*;
use crate::core::judge::{Retry, Standing};
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::{
    AccountId, Asg, AsgRef, ErrorClass, Failure, Grant, Instance, KeyArn, KeyInfo, KeyManager, Role, Wait,
};
use crate::core::policy::GRANT_OPERATIONS;

/// The plan of `d` against `o`, with nothing settled. As a pass does, a plan that would
/// prune first asks for the groups of the places it prunes in (here: none there, unless
/// `o` says otherwise), and prunes nothing there until it has them.
fn plan(d: &Desired, o: &Observed, caller: &AccountId) -> Plan {
    let first = super::plan(d, o, caller, &Context::at(0));
    let unread: Vec<_> = first.prune.need_users.keys().filter(|p| !o.role_users.contains_key(*p)).cloned().collect();
    if unread.is_empty() {
        return first;
    }
    let prunes = |c: &PlannedChange| match &c.change {
        Change::PutKeyPolicy { prune, .. } => !prune.is_empty(),
        Change::RetireGrant { .. } => c.bindings.is_empty(),
        _ => false,
    };
    assert!(!first.changes.iter().any(prunes), "nothing is pruned before its groups are read: {first:#?}");
    let mut o = o.clone();
    o.role_users.extend(unread.into_iter().map(|p| (p, Ok(Vec::new()))));
    super::plan(d, &o, caller, &Context::at(0))
}

/// The plan, with the bindings of `held` settled as failed (a write of theirs failed
/// earlier in the same pass).
fn plan_holding(d: &Desired, o: &Observed, caller: &AccountId, held: &BTreeMap<BindingId, Failure>) -> Plan {
    let settled: Settled =
        held.iter().map(|(b, f)| (b.clone(), Verdict::Failed { failure: f.clone(), retry: Retry::Backoff })).collect();
    let none = BTreeMap::new();
    super::plan(d, o, caller, &Context { now: 0, settled: &settled, prior: &none, ..Context::at(0) })
}

/// A binding the plan cannot move on, with its verdict and why.
#[derive(Debug)]
struct Blocked {
    binding: BindingId,
    verdict: Verdict,
    message: String,
}

/// The bindings the plan cannot move on: waiting, blocked or failed.
fn blocked(p: &Plan) -> Vec<Blocked> {
    p.stopped()
        .map(|j| Blocked {
            binding: j.binding.clone(),
            verdict: j.verdict.clone(),
            message: j.verdict.message().into(),
        })
        .collect()
}

fn is_handoff(b: &Binding, d: &Desired, caller: &AccountId) -> bool {
    d.is_handoff(b, caller)
}

const ASG_ACCT: &str = "111122223333";
const KEY_ACCT: &str = "444455556666";
const OWN_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const OTHER_KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
/// A key whose owner account has no `accounts` entry: hand-off mode.
const HANDOFF_ACCT: &str = "999999999999";
const HANDOFF_KEY: &str = "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333";
const OTHER_ALIAS: &str = "arn:aws:kms:us-west-2:444455556666:alias/ebs";
const SLR_NAME: &str = "AWSServiceRoleForAutoScaling";
const SLR_ARN: &str =
    "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";
/// The role's unique id, as IAM makes them, and the id of a role of the same name that
/// was deleted.
const ROLE_ID: &str = "AROAQAAAAAAAAAAAAAAAA";
const OLD_ROLE_ID: &str = "AROAQZZZZZZZZZZZZZZZZ";

/// The operator's own grant for the role, as it names it.
fn our_grant(grantee: &str, role_id: &str) -> Grant {
    let slr = binding("x", OTHER_KEY).slr();
    Grant {
        grant_id: "g-ours".into(),
        name: Some(grant_name(&slr, role_id, &Instance::default())),
        ..full_grant(grantee)
    }
}

fn with_grants(o: &mut Observed, grants: Vec<Grant>) {
    o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(grants));
}

fn with_policy(o: &mut Observed, key: &str, policy: String) {
    o.key_policies.insert(KeyArn::parse(key).unwrap(), Ok(policy));
}

fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn binding(asg: &str, key: &str) -> Binding {
    Binding {
        asg: AsgRef::new(acct(ASG_ACCT), "us-west-2", asg),
        key: KeyArn::parse(key).unwrap(),
        slr_suffix: None,
        reencrypt_from: None,
        reencrypt_parameter: None,
        origin: Default::default(),
    }
}

fn desired(bindings: Vec<Binding>) -> Desired {
    let mut d = Desired {
        accounts: Default::default(),
        bindings,
        selectors: Vec::new(),
        events: None,
        operator: Default::default(),
    };
    d.accounts.insert(acct(KEY_ACCT), "arn:aws:iam::444455556666:role/key-admin".into());
    d
}

fn default_policy(owner: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Id":"key-default-1","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{owner}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    )
}

fn converged_policy_own() -> String {
    format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{SLR_ARN}"}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}},
        {{"Effect":"Allow","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}}]}}"#
    )
}

fn converged_policy_other() -> String {
    r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey","kms:CreateGrant"],"Resource":"*"}]}"#.into()
}

fn full_grant(grantee: &str) -> Grant {
    Grant {
        grant_id: "g-1".into(),
        name: None,
        grantee_principal: grantee.into(),
        operations: GRANT_OPERATIONS.iter().map(|s| s.to_string()).collect(),
        constrained: false,
    }
}

/// Everything observed for the bindings, in the state "nothing done yet".
fn fresh(d: &Desired) -> Observed {
    let mut o = Observed::default();
    for b in &d.bindings {
        o.keys.insert(b.key.clone(), Ok(key_info(&b.key, "Enabled")));
        o.roles.insert((b.asg.account, b.slr().name()), Ok(None));
        o.key_policies.insert(b.key.clone(), Ok(default_policy(b.key.account().as_str())));
        if b.is_cross_account() {
            o.grants.insert(b.key.clone(), Ok(vec![]));
        }
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: None, sources: vec![] })));
    }
    o
}

/// Converged but for the groups, still on another role.
fn converged_but_asgs_on_another_role(d: &Desired) -> Observed {
    let mut o = converged(d);
    for b in &d.bindings {
        let other = "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_Old";
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(other.into()), sources: vec![] })));
    }
    o
}

/// Everything observed in the converged state.
fn converged(d: &Desired) -> Observed {
    let mut o = fresh(d);
    for b in &d.bindings {
        o.roles.insert((b.asg.account, b.slr().name()), Ok(Some(Role { role_id: ROLE_ID.into() })));
        let p = if b.is_cross_account() { converged_policy_other() } else { converged_policy_own() };
        o.key_policies.insert(b.key.clone(), Ok(p));
        if b.is_cross_account() {
            o.grants.insert(b.key.clone(), Ok(vec![full_grant(&b.slr().arn())]));
        }
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(b.slr().arn()), sources: vec![] })));
    }
    o
}

/// A symmetric customer managed key in `state`, as DescribeKey shows it.
fn key_info(key: &KeyArn, state: &str) -> KeyInfo {
    KeyInfo { arn: key.clone(), state: state.into(), spec: "SYMMETRIC_DEFAULT".into(), manager: KeyManager::Customer }
}

fn with_key(o: &mut Observed, key: &str, f: impl FnOnce(&mut KeyInfo)) {
    let k = KeyArn::parse(key).unwrap();
    let mut info = key_info(&k, "Enabled");
    f(&mut info);
    o.keys.insert(k, Ok(info));
}

fn failure(msg: &str) -> Failure {
    Failure { class: ErrorClass::Retryable, message: msg.into() }
}

struct Case {
    reason: &'static str,
    bindings: Vec<Binding>,
    observed: fn(&Desired) -> Observed,
    /// (action, target) in order.
    want: Vec<(&'static str, &'static str)>,
    /// (ASG name, text in the reason).
    want_blocked: Vec<(&'static str, &'static str)>,
}

fn rows() -> Vec<Case> {
    vec![
        Case {
            reason: "case 1 from scratch → create role, put policy, update ASG, in that order",
            bindings: vec![binding("web", OWN_KEY)],
            observed: fresh,
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OWN_KEY),
                ("UpdateAutoScalingGroup", "web"),
            ],
            want_blocked: vec![],
        },
        Case {
            reason: "case 1 converged → nothing to do",
            bindings: vec![binding("web", OWN_KEY)],
            observed: converged,
            want: vec![],
            want_blocked: vec![],
        },
        Case {
            reason: "case 2 from scratch → role, owner policy for root, grant, ASG",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: fresh,
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OTHER_KEY),
                ("CreateGrant", OTHER_KEY),
                ("UpdateAutoScalingGroup", "web"),
            ],
            want_blocked: vec![],
        },
        Case {
            reason: "case 2 key with root already allowed → only the grant is created",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![]));
                o
            },
            want: vec![("CreateGrant", OTHER_KEY)],
            want_blocked: vec![],
        },
        Case {
            reason: "case 2 grant listed by the role's unique id → no second grant",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![full_grant(ROLE_ID)]));
                o
            },
            want: vec![],
            want_blocked: vec![],
        },
        Case {
            reason: "case 2 grant for the role without CreateGrant → blocked, never duplicated",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                let mut g = full_grant(SLR_ARN);
                g.operations.retain(|op| op != "CreateGrant");
                o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![g]));
                o
            },
            want: vec![],
            want_blocked: vec![("web", "lacks operations")],
        },
        Case {
            reason: "case 2 grant for another grantee does not count → grant created",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.grants.insert(
                    KeyArn::parse(OTHER_KEY).unwrap(),
                    Ok(vec![full_grant("arn:aws:iam::111122223333:role/other")]),
                );
                o
            },
            want: vec![("CreateGrant", OTHER_KEY)],
            want_blocked: vec![],
        },
        Case {
            reason: "three ASGs on one key and role → one role, one policy write, three ASG updates",
            bindings: vec![binding("a", OWN_KEY), binding("b", OWN_KEY), binding("c", OWN_KEY)],
            observed: fresh,
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OWN_KEY),
                ("UpdateAutoScalingGroup", "a"),
                ("UpdateAutoScalingGroup", "b"),
                ("UpdateAutoScalingGroup", "c"),
            ],
            want_blocked: vec![],
        },
        Case {
            reason: "both cases on two keys sharing one role → one role, one policy per key, one grant",
            bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
            observed: fresh,
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OWN_KEY),
                ("PutKeyPolicy", OTHER_KEY),
                ("CreateGrant", OTHER_KEY),
                ("UpdateAutoScalingGroup", "a"),
                ("UpdateAutoScalingGroup", "b"),
            ],
            want_blocked: vec![],
        },
        Case {
            reason: "ASG that does not exist → that binding fails, the other goes on",
            bindings: vec![binding("ghost", OWN_KEY), binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.asgs.insert(d.bindings[0].asg.clone(), Ok(None));
                o.asgs.insert(
                    d.bindings[1].asg.clone(),
                    Ok(Some(Asg { service_linked_role_arn: None, sources: vec![] })),
                );
                o
            },
            want: vec![("UpdateAutoScalingGroup", "web")],
            want_blocked: vec![("ghost", "not found")],
        },
        Case {
            reason: "a failed key-policy read fails only the bindings on that key",
            bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.key_policies.insert(KeyArn::parse(OTHER_KEY).unwrap(), Err(failure("AccessDeniedException")));
                o
            },
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OWN_KEY),
                ("UpdateAutoScalingGroup", "a"),
            ],
            want_blocked: vec![("b", "AccessDeniedException")],
        },
        Case {
            reason: "key owner neither ours nor listed, the dry run not made → that binding waits for the read",
            bindings: vec![binding("a", HANDOFF_KEY)],
            observed: fresh,
            want: vec![],
            want_blocked: vec![("a", "dry run of CreateGrant: not observed")],
        },
        Case {
            reason: "assume-role into the key owner failed → case 2 binding fails, case 1 goes on",
            bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.account_errors.insert(acct(KEY_ACCT), failure("AccessDenied on AssumeRole"));
                o
            },
            want: vec![],
            want_blocked: vec![("b", "credentials for account 444455556666")],
        },
        Case {
            reason: "an unconditional Deny for the role → blocked, no policy write",
            bindings: vec![binding("a", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.key_policies.insert(
                    KeyArn::parse(OWN_KEY).unwrap(),
                    Ok(format!(r#"{{"Statement":[{{"Sid":"NoAsg","Effect":"Deny","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:*","Resource":"*"}}]}}"#)),
                );
                o
            },
            want: vec![],
            want_blocked: vec![("a", "\"NoAsg\" denies")],
        },
        Case {
            reason: "a Deny for a role two ASGs share → both blocked, no policy write",
            bindings: vec![binding("a", OWN_KEY), binding("b", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.key_policies.insert(
                    KeyArn::parse(OWN_KEY).unwrap(),
                    Ok(format!(r#"{{"Statement":[{{"Sid":"NoAsg","Effect":"Deny","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#)),
                );
                o
            },
            want: vec![],
            want_blocked: vec![("a", "\"NoAsg\" denies kms:Decrypt"), ("b", "\"NoAsg\" denies kms:Decrypt")],
        },
        Case {
            reason: "ASG on another role → only the ASG update",
            bindings: vec![binding("a", OWN_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.asgs.insert(
                    d.bindings[0].asg.clone(),
                    Ok(Some(Asg {
                        service_linked_role_arn: Some("arn:aws:iam::111122223333:role/x".into()),
                        sources: vec![],
                    })),
                );
                o
            },
            want: vec![("UpdateAutoScalingGroup", "a")],
            want_blocked: vec![],
        },
        Case {
            reason: "the operator's grant lacking an operation → a complete one created, then the short one retired",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                let mut g = our_grant(SLR_ARN, ROLE_ID);
                g.operations.retain(|op| op != "ReEncryptTo");
                with_grants(&mut o, vec![g]);
                o
            },
            want: vec![("CreateGrant", OTHER_KEY), ("RetireGrant", OTHER_KEY)],
            want_blocked: vec![],
        },
        Case {
            reason:
                "the operator's grant for a deleted role (grantee shown as its old id) → new grant, old one retired",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                with_grants(&mut o, vec![our_grant(OLD_ROLE_ID, OLD_ROLE_ID)]);
                o
            },
            want: vec![("CreateGrant", OTHER_KEY), ("RetireGrant", OTHER_KEY)],
            want_blocked: vec![],
        },
        Case {
            reason: "a complete grant named as earlier versions named it → nothing to do",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                let g = Grant {
                    name: Some("asg-cmk-operator-111122223333-AWSServiceRoleForAutoScaling".into()),
                    ..full_grant(SLR_ARN)
                };
                with_grants(&mut o, vec![g]);
                o
            },
            want: vec![],
            want_blocked: vec![],
        },
        Case {
            reason: "a complete grant beside a stale one of the operator's → only the stale one retired",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                with_grants(&mut o, vec![full_grant(SLR_ARN), our_grant(OLD_ROLE_ID, OLD_ROLE_ID)]);
                o
            },
            want: vec![("RetireGrant", OTHER_KEY)],
            want_blocked: vec![],
        },
        Case {
            reason: "case 2 owner policy with a Deny on the role's ARN → blocked, although the root is allowed",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = converged(d);
                with_policy(
                    &mut o,
                    OTHER_KEY,
                    format!(
                        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"111122223333"}},"Action":"kms:*","Resource":"*"}},
                       {{"Sid":"NoAsgRole","Effect":"Deny","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
                    ),
                );
                o
            },
            want: vec![],
            want_blocked: vec![("web", "\"NoAsgRole\" denies kms:Decrypt")],
        },
        Case {
            reason: "case 1 policy with a Deny on the ASG account's root → the role is covered, blocked",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                with_policy(&mut o, OWN_KEY, r#"{"Statement":[{"Sid":"Lockdown","Effect":"Deny","Principal":{"AWS":"111122223333"},"Action":"kms:Encrypt","Resource":"*"}]}"#.into());
                o
            },
            want: vec![],
            want_blocked: vec![("web", "\"Lockdown\" denies kms:Encrypt")],
        },
        Case {
            reason: "a foreign statement naming a deleted principal, and a write needed → blocked at once, naming both",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = converged(d);
                with_policy(
                    &mut o,
                    OWN_KEY,
                    format!(
                        r#"{{"Statement":[{{"Sid":"Legacy","Effect":"Allow","Principal":{{"AWS":"{OLD_ROLE_ID}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
                    ),
                );
                o
            },
            want: vec![],
            want_blocked: vec![("web", "statement \"Legacy\" names AROAQZZZZZZZZZZZZZZZZ")],
        },
        Case {
            reason: "the same foreign orphan on a key that needs no write → converged, nothing blocked",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = converged(d);
                let mut p: serde_json::Value = serde_json::from_str(&converged_policy_own()).unwrap();
                p["Statement"].as_array_mut().unwrap().push(serde_json::json!(
                    {"Sid":"Legacy","Effect":"Allow","Principal":{"AWS":OLD_ROLE_ID},"Action":"kms:Decrypt","Resource":"*"}
                ));
                with_policy(&mut o, OWN_KEY, p.to_string());
                o
            },
            want: vec![],
            want_blocked: vec![],
        },
        Case {
            reason: "a disabled key → blocked, naming the state, and nothing written (not even the role)",
            bindings: vec![binding("web", OWN_KEY), binding("api", OTHER_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                with_key(&mut o, OWN_KEY, |k| k.state = "Disabled".into());
                o
            },
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OTHER_KEY),
                ("CreateGrant", OTHER_KEY),
                ("UpdateAutoScalingGroup", "api"),
            ],
            want_blocked: vec![("web", "is disabled: enable it")],
        },
        Case {
            reason: "a key pending deletion → blocked, saying how to undo it",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = converged(d);
                with_key(&mut o, OWN_KEY, |k| k.state = "PendingDeletion".into());
                o
            },
            want: vec![],
            want_blocked: vec![("web", "pending deletion: cancel the deletion")],
        },
        Case {
            reason: "an asymmetric key → blocked: EBS uses only symmetric keys",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                with_key(&mut o, OWN_KEY, |k| k.spec = "RSA_2048".into());
                o
            },
            want: vec![],
            want_blocked: vec![("web", "key spec is RSA_2048; EBS supports only symmetric keys")],
        },
        Case {
            reason: "an AWS managed key → nothing to do, nothing blocked",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                with_key(&mut o, OWN_KEY, |k| k.manager = KeyManager::Aws);
                o
            },
            want: vec![],
            want_blocked: vec![],
        },
        Case {
            reason: "an AWS managed key of another account → blocked: only its own account may use it",
            bindings: vec![binding("web", OTHER_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                with_key(&mut o, OTHER_KEY, |k| k.manager = KeyManager::Aws);
                o
            },
            want: vec![],
            want_blocked: vec![("web", "is an AWS managed key of account 444455556666")],
        },
        Case {
            reason: "a key that could not be described → blocked with the read's error",
            bindings: vec![binding("web", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.keys.insert(KeyArn::parse(OWN_KEY).unwrap(), Err(failure("AccessDeniedException")));
                o
            },
            want: vec![],
            want_blocked: vec![("web", "describe key: AccessDeniedException")],
        },
        Case {
            reason: "a case 2 alias → the key it points to gets the policy and the grant",
            bindings: vec![binding("web", OTHER_ALIAS)],
            observed: |d| {
                let mut o = fresh(d);
                let alias = KeyArn::parse(OTHER_ALIAS).unwrap();
                let key = KeyArn::parse(OTHER_KEY).unwrap();
                o.keys.insert(alias.clone(), Ok(key_info(&key, "Enabled")));
                let (p, g) = (o.key_policies.remove(&alias).unwrap(), o.grants.remove(&alias).unwrap());
                o.key_policies.insert(key.clone(), p);
                o.grants.insert(key, g);
                o
            },
            want: vec![
                ("CreateServiceLinkedRole", SLR_NAME),
                ("PutKeyPolicy", OTHER_KEY),
                ("CreateGrant", OTHER_KEY),
                ("UpdateAutoScalingGroup", "web"),
            ],
            want_blocked: vec![],
        },
        Case {
            reason: "key policy that is not JSON → blocked with the parse error",
            bindings: vec![binding("a", OWN_KEY)],
            observed: |d| {
                let mut o = converged(d);
                o.key_policies.insert(KeyArn::parse(OWN_KEY).unwrap(), Ok("{not json".into()));
                o
            },
            want: vec![],
            want_blocked: vec![("a", "not valid JSON")],
        },
    ]
}

#[test]
fn plan_table() {
    for case in rows() {
        let d = desired(case.bindings);
        let o = (case.observed)(&d);
        let p = plan(&d, &o, &acct(ASG_ACCT));
        let got: Vec<(&str, String)> = p.changes.iter().map(|c| (c.change.action(), c.change.target())).collect();
        let want: Vec<(&str, String)> = case.want.iter().map(|(a, t)| (*a, t.to_string())).collect();
        assert_eq!(got, want, "{}", case.reason);
        let stopped = blocked(&p);
        assert_eq!(stopped.len(), case.want_blocked.len(), "{}: {:?}", case.reason, stopped);
        for (asg, text) in case.want_blocked {
            let b = stopped
                .iter()
                .find(|b| b.binding.asg.name == asg)
                .unwrap_or_else(|| panic!("{}: {asg} not blocked", case.reason));
            assert!(b.message.contains(text), "{}: {}", case.reason, b.message);
        }
    }
}

#[test]
fn an_aws_managed_key_is_noted_as_needing_nothing() {
    let d = desired(vec![binding("web", OWN_KEY)]);
    let mut o = fresh(&d);
    with_key(&mut o, OWN_KEY, |k| k.manager = KeyManager::Aws);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.notes.len(), 1);
    assert!(p.notes[0].message.contains("is an AWS managed key"), "{}", p.notes[0].message);
}

#[test]
fn applying_the_plan_converges() {
    // Feed the planned writes back as observations: the next plan must be empty.
    let d = desired(vec![binding("a", OWN_KEY), binding("b", OTHER_KEY), binding("c", OTHER_KEY)]);
    let mut o = fresh(&d);
    for c in plan(&d, &o, &acct(ASG_ACCT)).changes {
        match c.change {
            Change::CreateServiceLinkedRole { slr } => {
                o.roles.insert((slr.account, slr.name()), Ok(Some(Role { role_id: ROLE_ID.into() })));
            }
            Change::PutKeyPolicy { key, policy, .. } => {
                o.key_policies.insert(key, Ok(policy));
            }
            Change::CreateGrant { key, slr, .. } => {
                o.grants.insert(key, Ok(vec![full_grant(&slr.arn())]));
            }
            Change::RetireGrant { key, grant_id, .. } => {
                o.grants.get_mut(&key).unwrap().as_mut().unwrap().retain(|g| g.grant_id != grant_id);
            }
            Change::UpdateAutoScalingGroup { asg, service_linked_role_arn } => {
                o.asgs.insert(
                    asg,
                    Ok(Some(Asg { service_linked_role_arn: Some(service_linked_role_arn), sources: vec![] })),
                );
            }
            Change::Reencrypt { .. } => panic!("no binding here re-encrypts"),
            Change::DeleteCopy { .. } => panic!("clean-up is off here"),
        }
    }
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.is_empty() && blocked(&p).is_empty(), "{p:#?}");
}

#[test]
fn cross_account_grant_is_made_with_the_asg_account_credentials() {
    let d = desired(vec![binding("web", OTHER_KEY)]);
    let p = plan(&d, &fresh(&d), &acct(ASG_ACCT));
    let grant = p.changes.iter().find(|c| c.change.action() == "CreateGrant").unwrap();
    assert_eq!(grant.change.account().as_str(), ASG_ACCT);
    let put = p.changes.iter().find(|c| c.change.action() == "PutKeyPolicy").unwrap();
    assert_eq!(put.change.account().as_str(), KEY_ACCT);
    assert!(put.reason.contains("arn:aws:iam::111122223333:root"), "{}", put.reason);
}

#[test]
fn reads_are_shared_across_bindings() {
    let mut bs: Vec<Binding> =
        (0..250).map(|i| binding(&format!("asg-{i}"), if i % 2 == 0 { OWN_KEY } else { OTHER_KEY })).collect();
    bs.push(binding("handed-off", HANDOFF_KEY));
    let r = reads(&desired(bs), &acct(ASG_ACCT), Depth::Quick);
    assert_eq!(r.roles.len(), 1);
    assert_eq!(r.keys.len(), 2, "a hand-off key is not read with its owner's credentials");
    assert_eq!(r.handoff.len(), 1);
    assert!(!r.accounts.contains(&acct(HANDOFF_ACCT)), "no credentials are sought for its owner");
    assert_eq!(r.grant_keys.len(), 1);
    assert_eq!(r.asgs.len(), 1);
    assert_eq!(r.asgs.values().next().unwrap().len(), 251);
    assert!(r.launches.is_empty(), "launches are read on full passes only");
}

#[test]
fn grant_names_carry_the_role_id_and_are_valid() {
    let mut slr = binding("a", OTHER_KEY).slr();
    assert_eq!(
        grant_name(&slr, ROLE_ID, &Instance::default()),
        format!("asg-cmk-operator-111122223333-AWSServiceRoleForAutoScaling-{ROLE_ID}")
    );
    assert_ne!(
        grant_name(&slr, ROLE_ID, &Instance::default()),
        grant_name(&slr, OLD_ROLE_ID, &Instance::default()),
        "a recreated role gets its own grant"
    );
    slr.suffix = Some("a.b@c".into());
    let n = grant_name(&slr, ROLE_ID, &Instance::default());
    assert_eq!(n, grant_name(&slr, ROLE_ID, &Instance::default()));
    assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "_-:/".contains(c)), "{n}");
    slr.suffix = Some("a,b@c".into());
    assert_ne!(n, grant_name(&slr, ROLE_ID, &Instance::default()));
}

#[test]
fn the_operators_grants_are_known_by_name_whatever_role_id_they_carry() {
    let slr = binding("a", OTHER_KEY).slr();
    let mut suffixed = slr.clone();
    suffixed.suffix = Some("CMK".into());
    assert!(is_operators_grant(Some(&grant_name(&slr, ROLE_ID, &Instance::default())), &slr, &Instance::default()));
    assert!(is_operators_grant(Some(&grant_name(&slr, OLD_ROLE_ID, &Instance::default())), &slr, &Instance::default()));
    // As versions before the role id named them.
    assert!(is_operators_grant(
        Some("asg-cmk-operator-111122223333-AWSServiceRoleForAutoScaling"),
        &slr,
        &Instance::default()
    ));
    assert!(
        !is_operators_grant(Some(&grant_name(&suffixed, ROLE_ID, &Instance::default())), &slr, &Instance::default()),
        "another role's grant"
    );
    assert!(!is_operators_grant(
        Some(&grant_name(&slr, ROLE_ID, &Instance::default())),
        &suffixed,
        &Instance::default()
    ));
    assert!(!is_operators_grant(
        Some("asg-cmk-operator-111122223333-AWSServiceRoleForAutoScaling-x"),
        &slr,
        &Instance::default()
    ));
    assert!(!is_operators_grant(None, &slr, &Instance::default()));
}

// Each step of the pipeline on its own: the plan's changes of the step's actions. A row
// gives the bindings, what was observed, and which bindings earlier steps blocked (here,
// settled as failed); it wants the step's changes (action, target, bindings served) and
// the bindings it blocks.

struct StepCase {
    reason: &'static str,
    bindings: Vec<Binding>,
    observed: fn(&Desired) -> Observed,
    blocked_before: Vec<&'static str>,
    want: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    want_blocked: Vec<(&'static str, &'static str)>,
}

fn run_step(actions: &[&str], cases: Vec<StepCase>) {
    for case in cases {
        let d = desired(case.bindings);
        let o = (case.observed)(&d);
        let before: BTreeMap<BindingId, Failure> = d
            .bindings
            .iter()
            .filter(|b| case.blocked_before.contains(&b.asg.name.as_str()))
            .map(|b| (b.id(), Failure::terminal("blocked earlier")))
            .collect();
        let p = plan_holding(&d, &o, &acct(ASG_ACCT), &before);
        let got: Vec<(&str, String, Vec<String>)> = p
            .changes
            .iter()
            .filter(|c| actions.contains(&c.change.action()))
            .map(|c| (c.change.action(), c.change.target(), c.bindings.iter().map(|b| b.asg.name.clone()).collect()))
            .collect();
        let want: Vec<(&str, String, Vec<String>)> = case
            .want
            .iter()
            .map(|(a, t, bs)| (*a, t.to_string(), bs.iter().map(|b| b.to_string()).collect()))
            .collect();
        assert_eq!(got, want, "{}", case.reason);
        let stopped: Vec<Blocked> = blocked(&p).into_iter().filter(|b| !before.contains_key(&b.binding)).collect();
        let got_blocked: Vec<&str> = stopped.iter().map(|b| b.binding.asg.name.as_str()).collect();
        let want_blocked: Vec<&str> = case.want_blocked.iter().map(|(b, _)| *b).collect();
        assert_eq!(got_blocked, want_blocked, "{}: {:?}", case.reason, stopped);
        for (b, (_, text)) in stopped.iter().zip(&case.want_blocked) {
            assert!(b.message.contains(text), "{}: {}", case.reason, b.message);
        }
    }
}

#[test]
fn check_observed_table() {
    struct Row {
        reason: &'static str,
        bindings: Vec<Binding>,
        observed: fn(&Desired) -> Observed,
        want_ready: Vec<&'static str>,
        want_blocked: Vec<(&'static str, &'static str)>,
    }
    let rows = vec![
        Row {
            reason: "every read succeeded, nothing exists yet → every binding is ready",
            bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
            observed: fresh,
            want_ready: vec!["a", "b"],
            want_blocked: vec![],
        },
        Row {
            reason: "the ASG does not exist → that binding is blocked, terminally",
            bindings: vec![binding("a", OWN_KEY), binding("b", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.asgs.insert(d.bindings[0].asg.clone(), Ok(None));
                o
            },
            want_ready: vec!["b"],
            want_blocked: vec![("a", "ASG a not found")],
        },
        Row {
            reason: "a failed role read blocks the bindings on that role with the read's error",
            bindings: vec![binding("a", OWN_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.roles.insert((acct(ASG_ACCT), SLR_NAME.into()), Err(failure("Throttling")));
                o
            },
            want_ready: vec![],
            want_blocked: vec![("a", "get service-linked role: Throttling")],
        },
        Row {
            reason: "case 2 whose grants were not listed → blocked, not observed",
            bindings: vec![binding("a", OTHER_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.grants.clear();
                o
            },
            want_ready: vec![],
            want_blocked: vec![("a", "list grants: not observed")],
        },
        Row {
            reason: "the key owner's credentials failed → its case 2 binding is blocked",
            bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
            observed: |d| {
                let mut o = fresh(d);
                o.account_errors.insert(acct(KEY_ACCT), failure("AccessDenied"));
                o
            },
            want_ready: vec!["a"],
            want_blocked: vec![("b", "credentials for account 444455556666: AccessDenied")],
        },
        Row {
            reason: "an ASG account neither ours nor listed → blocked before any read is looked at",
            bindings: vec![Binding {
                asg: AsgRef::new(acct("999999999999"), "us-west-2", "a"),
                key: KeyArn::parse(OWN_KEY).unwrap(),
                slr_suffix: None,
                reencrypt_from: None,
                reencrypt_parameter: None,
                origin: Default::default(),
            }],
            observed: |_| Observed::default(),
            want_ready: vec![],
            want_blocked: vec![("a", "ASG account 999999999999 is neither the operator's own account")],
        },
    ];
    for row in rows {
        let d = desired(row.bindings);
        let o = (row.observed)(&d);
        let p = plan(&d, &o, &acct(ASG_ACCT));
        let stopped = blocked(&p);
        let names: Vec<&str> = d
            .bindings
            .iter()
            .filter(|b| !stopped.iter().any(|s| s.binding == b.id()))
            .map(|b| b.asg.name.as_str())
            .collect();
        assert_eq!(names, row.want_ready, "{}", row.reason);
        let got: Vec<&str> = stopped.iter().map(|b| b.binding.asg.name.as_str()).collect();
        let want: Vec<&str> = row.want_blocked.iter().map(|(b, _)| *b).collect();
        assert_eq!(got, want, "{}", row.reason);
        for (b, (_, text)) in stopped.iter().zip(&row.want_blocked) {
            assert!(b.message.contains(text), "{}: {}", row.reason, b.message);
        }
    }
}

#[test]
fn plan_grants_table() {
    run_step(
        &["CreateGrant", "RetireGrant"],
        vec![
            StepCase {
                reason: "case 1 needs no grant",
                bindings: vec![binding("a", OWN_KEY)],
                observed: fresh,
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![],
            },
            StepCase {
                reason: "two case 2 ASGs on one role and key → one grant serving both",
                bindings: vec![binding("a", OTHER_KEY), binding("b", OTHER_KEY)],
                observed: fresh,
                blocked_before: vec![],
                want: vec![("CreateGrant", OTHER_KEY, vec!["a", "b"])],
                want_blocked: vec![],
            },
            StepCase {
                reason: "a complete grant listed by the role's unique id → nothing",
                bindings: vec![binding("a", OTHER_KEY)],
                observed: |d| {
                    let mut o = converged(d);
                    o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![full_grant(ROLE_ID)]));
                    o
                },
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![],
            },
            StepCase {
                reason: "a constrained grant for the role that is not the operator's → blocked, not duplicated",
                bindings: vec![binding("a", OTHER_KEY)],
                observed: |d| {
                    let mut o = converged(d);
                    let mut g = full_grant(SLR_ARN);
                    g.constrained = true;
                    o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![g]));
                    o
                },
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![("a", "lacks operations or has constraints")],
            },
            StepCase {
                reason: "a binding blocked by an earlier step gets no grant",
                bindings: vec![binding("a", OTHER_KEY), binding("b", OTHER_KEY)],
                observed: fresh,
                blocked_before: vec!["a"],
                want: vec![("CreateGrant", OTHER_KEY, vec!["b"])],
                want_blocked: vec![],
            },
        ],
    );
}

#[test]
fn plan_key_policies_table() {
    run_step(
        &["PutKeyPolicy"],
        vec![
            StepCase {
                reason: "converged policies → nothing",
                bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
                observed: converged,
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![],
            },
            StepCase {
                reason: "case 1 and case 2 on two keys → one write per key",
                bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY), binding("c", OTHER_KEY)],
                observed: fresh,
                blocked_before: vec![],
                want: vec![("PutKeyPolicy", OWN_KEY, vec!["a"]), ("PutKeyPolicy", OTHER_KEY, vec!["b", "c"])],
                want_blocked: vec![],
            },
            StepCase {
                reason: "a Deny on the role blocks its bindings and writes nothing for them",
                bindings: vec![binding("a", OWN_KEY)],
                observed: |d| {
                    let mut o = fresh(d);
                    o.key_policies.insert(
                        KeyArn::parse(OWN_KEY).unwrap(),
                        Ok(format!(r#"{{"Statement":[{{"Sid":"NoAsg","Effect":"Deny","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:*","Resource":"*"}}]}}"#)),
                    );
                    o
                },
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![("a", "\"NoAsg\" denies")],
            },
            StepCase {
                reason: "a policy that is not JSON blocks every binding on the key",
                bindings: vec![binding("a", OWN_KEY), binding("b", OWN_KEY)],
                observed: |d| {
                    let mut o = fresh(d);
                    o.key_policies.insert(KeyArn::parse(OWN_KEY).unwrap(), Ok("[".into()));
                    o
                },
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![("a", "not valid JSON"), ("b", "not valid JSON")],
            },
            StepCase {
                reason: "a binding blocked earlier adds nothing to the merged policy",
                bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
                observed: fresh,
                blocked_before: vec!["b"],
                want: vec![("PutKeyPolicy", OWN_KEY, vec!["a"])],
                want_blocked: vec![],
            },
        ],
    );
}

#[test]
fn plan_roles_and_asgs_table() {
    run_step(
        &["CreateServiceLinkedRole", "UpdateAutoScalingGroup"],
        vec![
            StepCase {
                reason: "a group bound to two keys → one update, serving both bindings",
                bindings: vec![binding("a", OWN_KEY), binding("a", OTHER_KEY)],
                observed: converged_but_asgs_on_another_role,
                blocked_before: vec![],
                want: vec![("UpdateAutoScalingGroup", "a", vec!["a", "a"])],
                want_blocked: vec![],
            },
            StepCase {
                reason: "the role is absent → created once for every ASG on it, and each ASG updated",
                bindings: vec![binding("a", OWN_KEY), binding("b", OTHER_KEY)],
                observed: fresh,
                blocked_before: vec![],
                want: vec![
                    ("CreateServiceLinkedRole", SLR_NAME, vec!["a", "b"]),
                    ("UpdateAutoScalingGroup", "a", vec!["a"]),
                    ("UpdateAutoScalingGroup", "b", vec!["b"]),
                ],
                want_blocked: vec![],
            },
            StepCase {
                reason: "converged → nothing",
                bindings: vec![binding("a", OWN_KEY)],
                observed: converged,
                blocked_before: vec![],
                want: vec![],
                want_blocked: vec![],
            },
            StepCase {
                reason: "a blocked binding neither creates its role nor switches its ASG",
                bindings: vec![binding("a", OWN_KEY), binding("b", OWN_KEY)],
                observed: fresh,
                blocked_before: vec!["a"],
                want: vec![
                    ("CreateServiceLinkedRole", SLR_NAME, vec!["b"]),
                    ("UpdateAutoScalingGroup", "b", vec!["b"]),
                ],
                want_blocked: vec![],
            },
        ],
    );
}

/// The owner's policy of OTHER_KEY allows the ASG account, and denies the group's new role.
fn other_key_denies_the_role(o: &mut Observed) {
    with_policy(
        o,
        OTHER_KEY,
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"111122223333"}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey","kms:CreateGrant"],"Resource":"*"}},
            {{"Sid":"NoNewRole","Effect":"Deny","Principal":{{"AWS":"{SLR_ARN}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
        ),
    );
}

fn blocked_message(p: &Plan, key: &str) -> String {
    let b = blocked(p).into_iter().find(|b| b.binding.key.as_str() == key);
    b.unwrap_or_else(|| panic!("{key} not blocked")).message
}

fn blocked_verdict(p: &Plan, key: &str) -> Verdict {
    let b = blocked(p).into_iter().find(|b| b.binding.key.as_str() == key);
    b.unwrap_or_else(|| panic!("{key} not blocked")).verdict
}

#[test]
fn a_group_is_not_switched_while_another_of_its_keys_denies_the_new_role() {
    let d = desired(vec![binding("web", OWN_KEY), binding("web", OTHER_KEY)]);
    let mut o = converged_but_asgs_on_another_role(&d);
    other_key_denies_the_role(&mut o);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.iter().all(|c| c.change.action() != "UpdateAutoScalingGroup"), "{:?}", p.changes);
    assert!(blocked_message(&p, OTHER_KEY).contains("NoNewRole"), "{}", blocked_message(&p, OTHER_KEY));
    let held = blocked_message(&p, OWN_KEY);
    assert!(held.contains(&format!("key {OTHER_KEY} is not")) && held.contains("NoNewRole"), "{held}");
    assert!(held.contains("AWSServiceRoleForAutoScaling_Old"), "names the role it keeps: {held}");
    let own = blocked_verdict(&p, OWN_KEY);
    assert_eq!(own.failure().unwrap().class, ErrorClass::Terminal, "held by a Deny: terminal, as the Deny is");
}

#[test]
fn a_held_group_still_gets_its_other_key_ready() {
    // The own key's policy lacks the role: written now (that changes nothing the group
    // launches with today), while the switch waits for the other key.
    let d = desired(vec![binding("web", OWN_KEY), binding("web", OTHER_KEY)]);
    let mut o = converged_but_asgs_on_another_role(&d);
    other_key_denies_the_role(&mut o);
    with_policy(&mut o, OWN_KEY, default_policy(ASG_ACCT));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let actions: Vec<&str> = p.changes.iter().map(|c| c.change.action()).collect();
    assert_eq!(actions, ["PutKeyPolicy"]);
    assert_eq!(p.changes[0].change.target(), OWN_KEY);
}

#[test]
fn a_failed_write_for_one_key_holds_the_switch_in_the_replan() {
    // The write for OTHER_KEY failed this pass: the re-plan holds that binding, and the
    // group stays on its role although its other key is ready.
    let d = desired(vec![binding("web", OWN_KEY), binding("web", OTHER_KEY)]);
    let o = converged_but_asgs_on_another_role(&d);
    let other = d.bindings.iter().find(|b| b.key.as_str() == OTHER_KEY).unwrap().id();
    let held: BTreeMap<BindingId, Failure> =
        [(other, failure("CreateGrant: ThrottlingException"))].into_iter().collect();
    let p = plan_holding(&d, &o, &acct(ASG_ACCT), &held);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    let msg = blocked_message(&p, OWN_KEY);
    assert!(msg.contains("ThrottlingException"), "{msg}");
    let own = blocked_verdict(&p, OWN_KEY);
    assert_eq!(own.failure().unwrap().class, ErrorClass::Retryable, "held by a transient failure: retried");
    // Without the failure the group is switched, once.
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes.iter().filter(|c| c.change.action() == "UpdateAutoScalingGroup").count(), 1);
}

#[test]
fn a_group_already_on_its_role_is_not_held_by_a_blocked_key() {
    let d = desired(vec![binding("web", OWN_KEY), binding("web", OTHER_KEY)]);
    let mut o = converged(&d);
    other_key_denies_the_role(&mut o);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.is_empty());
    assert_eq!(blocked(&p).len(), 1, "only the denied binding: {:?}", blocked(&p));
}

/// A hand-off binding as observed with the group account's credentials: the key described,
/// the operator's grants listed (none), the dry run answered `dry`, the role present.
fn handoff_observed(d: &Desired, dry: DryRun) -> Observed {
    let mut o = fresh(d);
    let key = KeyArn::parse(HANDOFF_KEY).unwrap();
    o.key_policies.remove(&key);
    for b in &d.bindings {
        o.roles.insert((b.asg.account, b.slr().name()), Ok(Some(Role { role_id: ROLE_ID.into() })));
        o.handoff.insert((key.clone(), b.slr()), Ok(dry));
    }
    o
}

#[test]
fn a_handoff_key_awaits_its_owner_and_nothing_is_written_for_it() {
    let d = desired(vec![binding("web", HANDOFF_KEY), binding("web", OWN_KEY)]);
    assert!(is_handoff(&d.bindings[0], &d, &acct(ASG_ACCT)));
    assert!(!is_handoff(&d.bindings[1], &d, &acct(ASG_ACCT)));
    let p = plan(&d, &handoff_observed(&d, DryRun::Refused), &acct(ASG_ACCT));
    // The own key is made ready; the group stays where it is while the other key waits.
    let got: Vec<(&str, String)> = p.changes.iter().map(|c| (c.change.action(), c.change.target())).collect();
    assert_eq!(got, [("PutKeyPolicy", OWN_KEY.to_owned())], "never the hand-off key's policy, no grant, no switch");
    let waiting = blocked_verdict(&p, HANDOFF_KEY);
    assert_eq!(waiting.standing(), Standing::Waiting(Wait::KeyOwner));
    let message = waiting.message();
    assert!(message.contains("awaiting key owner"), "{message}");
    assert!(message.contains(r#""Sid":"AsgCmkOperatorCrossAccountGrant""#), "{message}");
    assert!(message.contains("arn:aws:iam::111122223333:root"), "{message}");
    let held = blocked_verdict(&p, OWN_KEY);
    assert!(held.message().contains("stays on"), "{}", held.message());
    assert_eq!(held.standing(), Standing::Waiting(Wait::KeyOwner), "held by a waiting key, the binding waits too");
}

#[test]
fn a_handoff_key_the_owner_allows_gets_one_grant_and_the_switch() {
    let d = desired(vec![binding("web", HANDOFF_KEY)]);
    let mut o = handoff_observed(&d, DryRun::Allowed);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let got: Vec<(&str, String)> = p.changes.iter().map(|c| (c.change.action(), c.change.target())).collect();
    assert_eq!(got, [("CreateGrant", HANDOFF_KEY.to_owned()), ("UpdateAutoScalingGroup", "web".to_owned())]);
    assert!(blocked(&p).is_empty(), "{:?}", blocked(&p));
    assert_eq!(p.changes[0].change.account().as_str(), ASG_ACCT, "made with the group account's credentials");
    // Once the grant is listed (ListRetirableGrants) and the group switched: nothing.
    let slr = d.bindings[0].slr();
    o.grants.insert(KeyArn::parse(HANDOFF_KEY).unwrap(), Ok(vec![our_grant(&slr.arn(), ROLE_ID)]));
    o.asgs
        .insert(d.bindings[0].asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(slr.arn()), sources: vec![] })));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.is_empty() && blocked(&p).is_empty(), "{p:?}");
}

#[test]
fn a_handoff_key_the_group_account_may_not_describe_awaits_its_owner() {
    let d = desired(vec![binding("web", HANDOFF_KEY)]);
    let mut o = handoff_observed(&d, DryRun::Refused);
    let denied = Failure { class: ErrorClass::Terminal, message: "DescribeKey: AccessDeniedException".into() };
    o.keys.insert(KeyArn::parse(HANDOFF_KEY).unwrap(), Err(denied));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.is_empty());
    let b = &blocked(&p)[0];
    assert_eq!(b.verdict.standing(), Standing::Waiting(Wait::KeyOwner));
    assert!(b.message.contains("may not describe it yet"), "{}", b.message);
}

// Pruning: what this instance wrote that no binding explains.

const SLR_CMK: &str =
    "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK";

fn pruning(mut d: Desired, instance: &str, mass: bool, config_bindings: usize) -> Desired {
    d.operator.prune = true;
    d.operator.instance = Instance::parse(instance).unwrap();
    d.operator.allow_mass_prune = mass;
    d.operator.config_bindings = config_bindings;
    d
}

/// A policy with a foreign statement, this instance's statements (default Sids) naming
/// `ours`, and another instance's naming `theirs`.
fn shared_policy(ours: &[&str], theirs: &[&str]) -> String {
    let use_actions = r#"["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"]"#;
    format!(
        r#"{{"Statement":[
          {{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*"}},
          {{"Sid":"AsgCmkOperatorUse","Effect":"Allow","Principal":{{"AWS":{ours}}},"Action":{use_actions},"Resource":"*"}},
          {{"Sid":"AsgCmkOperatorAttachment","Effect":"Allow","Principal":{{"AWS":{ours}}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}},
          {{"Sid":"AsgCmkOperatorUse-team-b","Effect":"Allow","Principal":{{"AWS":{theirs}}},"Action":{use_actions},"Resource":"*"}}]}}"#,
        ours = serde_json::json!(ours),
        theirs = serde_json::json!(theirs),
    )
}

fn suffixed(asg: &str, key: &str, suffix: &str) -> Binding {
    Binding { slr_suffix: Some(suffix.into()), ..binding(asg, key) }
}

#[test]
fn a_principal_no_binding_explains_leaves_only_this_instances_statements() {
    // Group a (default role) stays; group b (role _CMK) was removed from the config.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 1);
    let mut o = converged(&d);
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN, SLR_CMK], &[SLR_CMK]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes.len(), 1, "{p:#?}");
    let Change::PutKeyPolicy { prune, policy, needs, .. } = &p.changes[0].change else { panic!("{p:#?}") };
    assert_eq!(prune, &[SLR_CMK.to_owned()]);
    assert!(needs.is_empty());
    assert!(p.changes[0].bindings.is_empty(), "a prune is made for no binding");
    assert!(p.changes[0].reason.contains(&format!("prune {SLR_CMK}")), "{}", p.changes[0].reason);
    let doc: serde_json::Value = serde_json::from_str(policy).unwrap();
    let st = doc["Statement"].as_array().unwrap();
    assert_eq!(st[0]["Sid"], "Enable IAM User Permissions");
    assert_eq!(st[1]["Principal"]["AWS"], serde_json::json!([SLR_ARN]));
    assert_eq!(st[2]["Principal"]["AWS"], serde_json::json!([SLR_ARN]));
    assert_eq!(st[3]["Sid"], "AsgCmkOperatorUse-team-b");
    assert_eq!(st[3]["Principal"]["AWS"], serde_json::json!([SLR_CMK]), "another instance's principal stays");
    assert_eq!(p.prune.pruned, 1);
    assert_eq!(p.prune.notes, [PRUNE_LEAVES]);
    // Applied, the next plan has nothing to do.
    with_policy(&mut o, OWN_KEY, policy.clone());
    assert_eq!(plan(&d, &o, &acct(ASG_ACCT)).changes, vec![]);
}

#[test]
fn without_prune_nothing_is_removed() {
    let mut d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 1);
    d.operator.prune = false;
    let mut o = converged(&d);
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN, SLR_CMK], &[]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes, vec![]);
    assert_eq!(p.prune, PruneReport::default());
}

#[test]
fn another_instance_prunes_only_its_own_statement() {
    // Instance team-b has no binding left for _CMK: its statement goes, the default
    // instance's statements (naming the same role) stay.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "team-b", true, 1);
    let mut o = converged(&d);
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN, SLR_CMK], &[SLR_CMK]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let Change::PutKeyPolicy { prune, policy, .. } = &p.changes[0].change else { panic!("{p:#?}") };
    assert_eq!(prune, &[SLR_CMK.to_owned()]);
    let doc: serde_json::Value = serde_json::from_str(policy).unwrap();
    let sids: Vec<&str> = doc["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert_eq!(sids, ["Enable IAM User Permissions", "AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
    assert_eq!(doc["Statement"][1]["Principal"]["AWS"], serde_json::json!([SLR_ARN, SLR_CMK]));
}

#[test]
fn the_operators_grant_for_a_removed_role_is_retired_and_foreign_grants_stay() {
    // Group b (role _CMK) on the other account's key was removed; a (default role) stays.
    let d = pruning(desired(vec![binding("a", OTHER_KEY)]), "default", false, 1);
    let mut o = converged(&d);
    let cmk = suffixed("b", OTHER_KEY, "CMK").slr();
    let theirs = Grant { grant_id: "g-foreign".into(), name: Some("someone-else".into()), ..full_grant(SLR_CMK) };
    let gone = Grant {
        grant_id: "g-gone".into(),
        name: Some(grant_name(&cmk, OLD_ROLE_ID, &Instance::default())),
        ..full_grant(SLR_CMK)
    };
    let b_instance = Grant {
        grant_id: "g-team-b".into(),
        name: Some(grant_name(&cmk, OLD_ROLE_ID, &Instance::parse("team-b").unwrap())),
        ..full_grant(SLR_CMK)
    };
    let kept = Grant { grant_id: "g-kept".into(), ..our_grant(SLR_ARN, ROLE_ID) };
    with_grants(&mut o, vec![kept, theirs, gone, b_instance]);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let retired: Vec<(&str, &AccountId, Option<&str>)> = p
        .changes
        .iter()
        .filter_map(|c| match &c.change {
            Change::RetireGrant { grant_id, slr, .. } => Some((grant_id.as_str(), &slr.account, slr.suffix.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(retired, [("g-gone", &acct(ASG_ACCT), Some("CMK"))], "{p:#?}");
    assert_eq!(p.changes.len(), 1, "the account root stays: group a still needs it; {p:#?}");
    assert!(p.changes[0].reason.starts_with("prune grant g-gone"), "{}", p.changes[0].reason);
}

#[test]
fn a_blocked_binding_still_explains_its_principal() {
    // Group a's ASG cannot be read: its role must not look unexplained.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 1);
    let mut o = converged(&d);
    o.asgs.insert(d.bindings[0].asg.clone(), Err(failure("throttled")));
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN], &[]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes, vec![]);
    assert_eq!(blocked(&p).len(), 1);
}

#[test]
fn a_prune_of_more_than_the_bindings_left_is_held_until_confirmed() {
    // Two roles gone, one binding left: more than half of the three there were.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 1);
    let mut o = converged(&d);
    let other =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_X";
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN, SLR_CMK, other], &[]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes, vec![], "held");
    let held = p.prune.held.as_deref().expect("held");
    assert!(held.contains("remove 2 accesses while the config keeps 1 binding"), "{held}");
    assert!(held.contains("--allow-mass-prune"), "{held}");
    // The whole config counts, not the part a pass plans for.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 4);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.prune.held, None);
    assert_eq!(p.prune.pruned, 2);
    // Confirmed.
    let d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", true, 1);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let Change::PutKeyPolicy { prune, .. } = &p.changes[0].change else { panic!("{p:#?}") };
    assert_eq!(prune.len(), 2);
}

#[test]
fn a_config_with_no_bindings_prunes_nothing_and_says_so() {
    let d = pruning(desired(vec![]), "default", false, 0);
    let p = plan(&d, &Observed::default(), &acct(ASG_ACCT));
    assert_eq!(p.changes, vec![]);
    assert!(p.prune.held.as_deref().is_some_and(|h| h.contains("no bindings")), "{:?}", p.prune);
    // Allowed to prune everything, with nothing left to prune: nothing is held, so the
    // report says nothing of a hold.
    let d = pruning(desired(vec![]), "default", true, 0);
    let p = plan(&d, &Observed::default(), &acct(ASG_ACCT));
    assert_eq!((p.changes, p.prune.held), (vec![], None));
}

#[test]
fn a_key_an_unresolved_alias_may_name_is_not_pruned() {
    let mut d = pruning(desired(vec![binding("a", OTHER_KEY)]), "default", true, 1);
    d.bindings.push(binding("b", OTHER_ALIAS));
    let mut o = converged(&d);
    o.keys.insert(KeyArn::parse(OTHER_ALIAS).unwrap(), Err(failure("throttled")));
    let root9 = "arn:aws:iam::999988887777:root";
    with_policy(&mut o, OTHER_KEY, shared_policy(&["arn:aws:iam::111122223333:root", root9], &[]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(
        !p.changes.iter().any(|c| matches!(&c.change, Change::PutKeyPolicy { prune, .. } if !prune.is_empty())),
        "{p:#?}"
    );
}

#[test]
fn instances_name_their_grants_apart() {
    let slr = binding("a", OTHER_KEY).slr();
    let (default, b) = (Instance::default(), Instance::parse("team-b").unwrap());
    let named = grant_name(&slr, ROLE_ID, &b);
    assert_eq!(named, format!("asg-cmk-operator:team-b:111122223333-AWSServiceRoleForAutoScaling-{ROLE_ID}"));
    assert!(named.chars().all(|c| c.is_ascii_alphanumeric() || "_-:/".contains(c)), "{named}");
    assert!(is_operators_grant(Some(&named), &slr, &b));
    assert!(!is_operators_grant(Some(&named), &slr, &default));
    assert!(!is_operators_grant(Some(&grant_name(&slr, ROLE_ID, &default)), &slr, &b));
    assert_eq!(operators_grant_account(Some(&named), &b), Some(acct(ASG_ACCT)));
    assert_eq!(operators_grant_account(Some(&named), &default), None);
    assert_eq!(operators_grant_account(Some("someone-else"), &default), None);
}

#[test]
fn an_edit_removing_more_than_half_of_the_bindings_is_held_as_a_whole() {
    let before = desired(vec![binding("a", OWN_KEY), binding("b", OWN_KEY), binding("c", OTHER_KEY)]);
    let after = |keep: &[usize], mass: bool| {
        let mut d = pruning(before.clone(), "default", mass, keep.len());
        d.bindings = keep.iter().map(|i| before.bindings[*i].clone()).collect();
        d
    };
    assert_eq!(edit_prune_hold(&before, &after(&[0, 2], false)), None, "one of three");
    let held = edit_prune_hold(&before, &after(&[2], false)).expect("two of three");
    assert!(held.contains("removes 2 of its 3 bindings") && held.contains("--allow-mass-prune"), "{held}");
    assert!(edit_prune_hold(&before, &after(&[], false)).is_some(), "all of them");
    assert_eq!(edit_prune_hold(&before, &after(&[2], true)), None, "confirmed");
    let mut off = after(&[2], false);
    off.operator.prune = false;
    assert_eq!(edit_prune_hold(&before, &off), None, "not pruning");
    // A role suffix changed removes the old role's access.
    let mut renamed = after(&[0, 1, 2], false);
    renamed.bindings[0].slr_suffix = Some("New".into());
    renamed.bindings[1].slr_suffix = Some("New".into());
    assert!(edit_prune_hold(&before, &renamed).is_some());
}

#[test]
fn a_held_edit_prunes_nothing_on_any_key_until_confirmed() {
    let other =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_X";
    let mut d = pruning(desired(vec![binding("a", OWN_KEY)]), "default", false, 4);
    let mut o = converged(&d);
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN, other], &[]));
    assert_eq!(plan(&d, &o, &acct(ASG_ACCT)).prune.pruned, 1, "this key alone passes its guard");
    d.operator.prune_held = Some("the config edit removes 3 of its 5 bindings".into());
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.changes, vec![]);
    assert_eq!(p.prune.held.as_deref(), Some("the config edit removes 3 of its 5 bindings"));
    d.operator.allow_mass_prune = true;
    assert_eq!(plan(&d, &o, &acct(ASG_ACCT)).prune.pruned, 1);
}

#[test]
fn a_removed_group_on_another_accounts_key_is_one_access() {
    // Two groups of the key's other account left on the key, each with its own role; one
    // is removed: its grant is one access, and the account root stays.
    let mut web = binding("web", OTHER_KEY);
    web.slr_suffix = Some("Web".into());
    let mut api = binding("api", OTHER_KEY);
    api.slr_suffix = Some("Api".into());
    let full = desired(vec![web.clone(), api]);
    let mut o = converged(&full);
    let named = |b: &Binding, id: &str| Grant {
        grant_id: id.into(),
        name: Some(grant_name(&b.slr(), ROLE_ID, &Instance::default())),
        ..full_grant(&b.slr().arn())
    };
    o.grants.insert(web.key.clone(), Ok(vec![named(&full.bindings[0], "g-web"), named(&full.bindings[1], "g-api")]));
    let d = pruning(desired(vec![web]), "default", false, 1);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert_eq!(p.prune.held, None, "{:?}", p.prune);
    assert_eq!(p.prune.pruned, 1);
    assert!(
        matches!(&p.changes[..], [PlannedChange { change: Change::RetireGrant { grant_id, .. }, .. }] if grant_id == "g-api"),
        "{:#?}",
        p.changes
    );
}

#[test]
fn a_key_that_left_the_config_is_read_and_pruned_whole_when_the_daemon_names_it() {
    let mut d = pruning(desired(vec![binding("a", OTHER_KEY)]), "default", false, 1);
    let own = KeyArn::parse(OWN_KEY).unwrap();
    let handoff = KeyArn::parse(HANDOFF_KEY).unwrap();
    d.operator.departed = [own.clone(), handoff.clone()].into();
    let r = reads(&d, &acct(ASG_ACCT), Depth::Quick);
    assert!(r.keys.contains(&own) && r.grant_keys.contains(&own), "read with its owner's credentials");
    assert!(!r.keys.contains(&handoff), "a hand-off key's policy is its owner's");

    let mut o = converged(&d);
    o.keys.insert(own.clone(), Ok(key_info(&own, "Enabled")));
    with_policy(&mut o, OWN_KEY, shared_policy(&[SLR_ARN], &[]));
    o.grants.insert(own.clone(), Ok(vec![]));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let Change::PutKeyPolicy { key, prune, needs, .. } = &p.changes[0].change else { panic!("{p:#?}") };
    assert_eq!((key, prune.as_slice(), needs.is_empty()), (&own, [SLR_ARN.to_owned()].as_slice(), true));
    assert!(p.changes[0].bindings.is_empty() && p.changes[0].prune_only_key() == Some(&own));
    assert!(
        p.prune.notes.iter().any(|n| n.contains(HANDOFF_KEY) && n.contains("not under `accounts`")),
        "{:?}",
        p.prune
    );

    // Unread, it is not taken for done.
    o.key_policies.insert(own.clone(), Err(failure("GetKeyPolicy: ThrottlingException")));
    let p = plan(&d, &o, &acct(ASG_ACCT));
    assert!(p.changes.iter().all(|c| c.prune_only_key().is_none()), "{:#?}", p.changes);
    assert!(p.prune.unread.get(&own).is_some_and(|f| f.message.contains("Throttling")), "{:?}", p.prune);
}

#[test]
fn an_unused_copy_is_deleted_for_no_binding_last_and_only_with_clean_up_on() {
    use crate::core::reencrypt::OwnCopy;
    let mut d = desired(vec![binding("web", OWN_KEY)]);
    let mut o = fresh(&d);
    let copy = OwnCopy {
        image_id: "ami-copy".into(),
        name: "asg-cmk-operator/ami-src/k".into(),
        state: "available".into(),
        snapshots: vec!["snap-1".into()],
        configurations: vec![],
    };
    o.reencrypt.unused.insert((acct(ASG_ACCT), "us-west-2".into()), vec![copy.clone()]);
    let deletes = |p: &Plan| -> Vec<PlannedChange> {
        p.changes.iter().filter(|c| matches!(c.change, Change::DeleteCopy { .. })).cloned().collect()
    };
    assert!(deletes(&plan(&d, &o, &acct(ASG_ACCT))).is_empty(), "clean-up is off by default");
    d.operator.reencrypt_cleanup = true;
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let found = deletes(&p);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].change, Change::DeleteCopy { account: acct(ASG_ACCT), region: "us-west-2".into(), copy });
    assert!(found[0].bindings.is_empty() && found[0].reason.contains("snap-1"), "{:?}", found[0]);
    assert_eq!(p.changes.last().map(|c| c.change.phase()), Some(Change::PHASES - 1));
}

#[test]
fn a_key_policy_write_says_its_size_before_and_after_against_the_limit() {
    let d = desired(vec![binding("web", OWN_KEY)]);
    let o = fresh(&d);
    let p = plan(&d, &o, &acct(ASG_ACCT));
    let c = p.changes.iter().find(|c| matches!(c.change, Change::PutKeyPolicy { .. })).expect("a policy write");
    let Change::PutKeyPolicy { key, policy, before_bytes, .. } = &c.change else { unreachable!() };
    let read = o.key_policies[key].as_ref().unwrap().len();
    assert_eq!(*before_bytes, read);
    assert!(policy.len() > read, "statements are added");
    let said = format!("policy {read} → {} bytes of 32768 ({}%)", policy.len(), policy.len() * 100 / 32768);
    assert!(c.reason.contains(&said), "{}", c.reason);
}
