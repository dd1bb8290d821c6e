//! Table tests for `plan`: each row reads like the procedure.

use super::*;
use crate::config::{Binding, Desired};
use crate::model::{AccountId, Asg, AsgRef, Grant, KeyArn, Role};

const ASG_ACCT: &str = "111122223333";
const KEY_ACCT: &str = "444455556666";
const OWN_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const OTHER_KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
const SLR_NAME: &str = "AWSServiceRoleForAutoScaling";
const SLR_ARN: &str =
    "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn binding(asg: &str, key: &str) -> Binding {
    Binding { asg: AsgRef::new(acct(ASG_ACCT), "us-west-2", asg), key: KeyArn::parse(key).unwrap(), slr_suffix: None }
}

fn desired(bindings: Vec<Binding>) -> Desired {
    let mut d = Desired { accounts: Default::default(), bindings };
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
        o.roles.insert((b.asg.account, b.slr().name()), Ok(None));
        o.key_policies.insert(b.key.clone(), Ok(default_policy(b.key.account().as_str())));
        if b.is_cross_account() {
            o.grants.insert(b.key.clone(), Ok(vec![]));
        }
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: None })));
    }
    o
}

/// Everything observed in the converged state.
fn converged(d: &Desired) -> Observed {
    let mut o = fresh(d);
    for b in &d.bindings {
        o.roles.insert(
            (b.asg.account, b.slr().name()),
            Ok(Some(Role { arn: b.slr().arn(), role_id: "AROAEXAMPLE".into() })),
        );
        let p = if b.is_cross_account() { converged_policy_other() } else { converged_policy_own() };
        o.key_policies.insert(b.key.clone(), Ok(p));
        if b.is_cross_account() {
            o.grants.insert(b.key.clone(), Ok(vec![full_grant(&b.slr().arn())]));
        }
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(b.slr().arn()) })));
    }
    o
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
                o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![full_grant("AROAEXAMPLE")]));
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
                o.asgs.insert(d.bindings[1].asg.clone(), Ok(Some(Asg { service_linked_role_arn: None })));
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
            reason: "key owner neither ours nor listed → that binding fails",
            bindings: vec![binding("a", "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333")],
            observed: fresh,
            want: vec![],
            want_blocked: vec![("a", "key owner account 999999999999 is neither")],
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
                    Ok(Some(Asg { service_linked_role_arn: Some("arn:aws:iam::111122223333:role/x".into()) })),
                );
                o
            },
            want: vec![("UpdateAutoScalingGroup", "a")],
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
        assert_eq!(p.blocked.len(), case.want_blocked.len(), "{}: {:?}", case.reason, p.blocked);
        for (asg, text) in case.want_blocked {
            let b = p
                .blocked
                .iter()
                .find(|b| b.binding.name == asg)
                .unwrap_or_else(|| panic!("{}: {asg} not blocked", case.reason));
            assert!(b.failure.message.contains(text), "{}: {}", case.reason, b.failure.message);
        }
    }
}

#[test]
fn applying_the_plan_converges() {
    // Feed the planned writes back as observations: the next plan must be empty.
    let d = desired(vec![binding("a", OWN_KEY), binding("b", OTHER_KEY), binding("c", OTHER_KEY)]);
    let mut o = fresh(&d);
    for c in plan(&d, &o, &acct(ASG_ACCT)).changes {
        match c.change {
            Change::CreateServiceLinkedRole { slr } => {
                o.roles.insert((slr.account, slr.name()), Ok(Some(Role { arn: slr.arn(), role_id: "AROAX".into() })));
            }
            Change::PutKeyPolicy { key, policy } => {
                o.key_policies.insert(key, Ok(policy));
            }
            Change::CreateGrant { key, grantee, .. } => {
                o.grants.insert(key, Ok(vec![full_grant(&grantee)]));
            }
            Change::UpdateAutoScalingGroup { asg, service_linked_role_arn } => {
                o.asgs.insert(asg, Ok(Some(Asg { service_linked_role_arn: Some(service_linked_role_arn) })));
            }
        }
    }
    assert_eq!(plan(&d, &o, &acct(ASG_ACCT)), Plan::default());
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
    bs.push(binding("unreachable", "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333"));
    let r = reads(&desired(bs), &acct(ASG_ACCT));
    assert_eq!(r.roles.len(), 1);
    assert_eq!(r.keys.len(), 2);
    assert_eq!(r.grant_keys.len(), 1);
    assert_eq!(r.asgs.len(), 1);
    assert_eq!(r.asgs.values().next().unwrap().len(), 250);
}

#[test]
fn grant_names_are_deterministic_and_valid() {
    let mut slr = binding("a", OTHER_KEY).slr();
    assert_eq!(grant_name(&slr), "asg-cmk-operator-111122223333-AWSServiceRoleForAutoScaling");
    slr.suffix = Some("a.b@c".into());
    let n = grant_name(&slr);
    assert_eq!(n, grant_name(&slr));
    assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "_-:/".contains(c)), "{n}");
    slr.suffix = Some("a,b@c".into());
    assert_ne!(n, grant_name(&slr));
}
