//! Table tests of the judgement alone: each row an observation, and the conditions and
//! verdict it must give.

use super::*;
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::{
    Asg, AsgRef, DryRun, ErrorClass, Failure, Grant, KeyArn, KeyInfo, KeyManager, LaunchActivity, Role,
};
use crate::core::policy::GRANT_OPERATIONS;

/// Every binding of `d` judged from `o`, at `now`, with nothing settled and no prior.
fn evaluate(d: &Desired, o: &Observed, caller: &AccountId, now: u64) -> Vec<Judged> {
    judge(d, o, caller, &Context::at(now)).judged
}

const ASG_ACCT: &str = "111122223333";
const OWN_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const OTHER_KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
const SLR: &str =
    "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn desired(keys: &[&str]) -> Desired {
    let mut d = Desired::default();
    d.accounts.insert(acct("444455556666"), "arn:aws:iam::444455556666:role/key-admin".into());
    for k in keys {
        d.bindings.push(Binding {
            asg: AsgRef::new(acct(ASG_ACCT), "us-west-2", "web"),
            key: KeyArn::parse(k).unwrap(),
            slr_suffix: None,
            reencrypt_from: None,
            reencrypt_parameter: None,
            origin: Default::default(),
        });
    }
    d
}

/// Everything in place for every binding: both cases converged, the last launch fine.
fn converged(d: &Desired) -> Observed {
    let mut o = Observed::default();
    for b in &d.bindings {
        let info = KeyInfo {
            arn: b.key.clone(),
            state: "Enabled".into(),
            spec: "SYMMETRIC_DEFAULT".into(),
            manager: KeyManager::Customer,
        };
        o.keys.insert(b.key.clone(), Ok(info));
        o.roles.insert((b.asg.account, b.slr().name()), Ok(Some(Role { role_id: "AROAQAAAAAAAAAAAAAAAA".into() })));
        let who = if b.is_cross_account() { format!("\"{ASG_ACCT}\"") } else { format!("\"{SLR}\"") };
        o.key_policies.insert(
            b.key.clone(),
            Ok(format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":{who}}},"Action":"kms:*","Resource":"*"}}]}}"#
            )),
        );
        if b.is_cross_account() {
            let g = Grant {
                grant_id: "g".into(),
                name: None,
                grantee_principal: SLR.into(),
                operations: GRANT_OPERATIONS.iter().map(|s| s.to_string()).collect(),
                constrained: false,
            };
            o.grants.insert(b.key.clone(), Ok(vec![g]));
        }
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(SLR.into()), sources: vec![] })));
        o.launches.insert(b.asg.clone(), Ok(None));
    }
    o
}

/// Everything converged, and the group's most recent launch as given.
fn with_launch(d: &Desired, code: &str, message: &str) -> Observed {
    let mut o = converged(d);
    let a = LaunchActivity {
        status_code: code.into(),
        status_message: Some(message.into()),
        start_time: Some("2026-11-29T01:00:00Z".into()),
        description: "Launching a new EC2 instance".into(),
    };
    o.launches.insert(d.bindings[0].asg.clone(), Ok(Some(a)));
    o
}

fn of<'a>(s: &'a Judged, kind: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.kind.as_str() == kind).unwrap_or_else(|| panic!("no {kind} in {s:?}"))
}

struct Row {
    reason: &'static str,
    keys: Vec<&'static str>,
    observed: fn(&Desired) -> Observed,
    /// (condition, status, reason, text in the message)
    want: Vec<(&'static str, State, &'static str, &'static str)>,
    ready: bool,
}

#[test]
fn conditions_table() {
    let rows = vec![
        Row {
            reason: "case 1 converged → ready, every condition True",
            keys: vec![OWN_KEY],
            observed: converged,
            want: vec![
                ("KeyPolicyReady", State::True, "Allows", ""),
                ("LaunchesHealthy", State::True, "NoRecentLaunch", ""),
            ],
            ready: true,
        },
        Row {
            reason: "case 2 converged → ready, with GrantReady",
            keys: vec![OTHER_KEY],
            observed: converged,
            want: vec![("GrantReady", State::True, "Complete", "grant g")],
            ready: true,
        },
        Row {
            reason: "the role does not exist → RoleReady False",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.roles.insert((acct(ASG_ACCT), "AWSServiceRoleForAutoScaling".into()), Ok(None));
                o
            },
            want: vec![("RoleReady", State::False, "NotFound", "does not exist")],
            ready: false,
        },
        Row {
            reason: "a disabled key → KeyUsable False, naming the state",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                if let Some(Ok(k)) = o.keys.get_mut(&d.bindings[0].key) {
                    k.state = "Disabled".into();
                }
                o
            },
            want: vec![("KeyUsable", State::False, "KeyDisabled", "it is disabled")],
            ready: false,
        },
        Row {
            reason: "an AWS managed key of another account → not usable: it serves its own account only",
            keys: vec![OTHER_KEY],
            observed: |d| {
                let mut o = converged(d);
                if let Some(Ok(k)) = o.keys.get_mut(&d.bindings[0].key) {
                    k.manager = KeyManager::Aws;
                }
                o
            },
            want: vec![("KeyUsable", State::False, "AwsManagedInOtherAccount", "kms:CallerAccount")],
            ready: false,
        },
        Row {
            reason: "an AWS managed key → usable, and no policy or grant needed",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                if let Some(Ok(k)) = o.keys.get_mut(&d.bindings[0].key) {
                    k.manager = KeyManager::Aws;
                }
                o.key_policies.clear();
                o.grants.clear();
                o
            },
            want: vec![
                ("KeyUsable", State::True, "AwsManaged", "AWS managed"),
                ("KeyPolicyReady", State::True, "NotNeeded", ""),
            ],
            ready: true,
        },
        Row {
            reason: "case 2 without a grant → GrantReady False, Missing",
            keys: vec![OTHER_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.grants.insert(d.bindings[0].key.clone(), Ok(vec![]));
                o
            },
            want: vec![("GrantReady", State::False, "Missing", "no grant on the key")],
            ready: false,
        },
        Row {
            reason: "the owner's policy denies the role → KeyPolicyReady False, Denied by Sid",
            keys: vec![OTHER_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.key_policies.insert(
                    d.bindings[0].key.clone(),
                    Ok(format!(r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ASG_ACCT}"}},"Action":"kms:*","Resource":"*"}},{{"Sid":"No","Effect":"Deny","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#)),
                );
                o
            },
            want: vec![("KeyPolicyReady", State::False, "Denied", "\"No\" denies kms:Decrypt")],
            ready: false,
        },
        Row {
            reason: "case 1 policy missing the role → KeyPolicyReady False, saying what is missing",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.key_policies.insert(d.bindings[0].key.clone(), Ok(r#"{"Statement":[]}"#.into()));
                o
            },
            want: vec![("KeyPolicyReady", State::False, "Missing", "to use the key")],
            ready: false,
        },
        Row {
            reason: "the group is on another role → AsgUsesRole False",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.asgs.insert(
                    d.bindings[0].asg.clone(),
                    Ok(Some(Asg { service_linked_role_arn: None, sources: vec![] })),
                );
                o
            },
            want: vec![("AsgUsesRole", State::False, "OtherRole", "is unset")],
            ready: false,
        },
        Row {
            reason: "the last launch failed over KMS → LaunchesHealthy False, quoting AWS",
            keys: vec![OWN_KEY],
            observed: |d| with_launch(d, "Failed", "Client.InternalError: Client error on launch"),
            want: vec![(
                "LaunchesHealthy",
                State::False,
                "LaunchFailedKms",
                "Client.InternalError: Client error on launch",
            )],
            ready: false,
        },
        Row {
            reason: "the last launch was cancelled over KMS → LaunchesHealthy False",
            keys: vec![OWN_KEY],
            observed: |d| with_launch(d, "Cancelled", "Client.InternalError: Client error on launch"),
            want: vec![("LaunchesHealthy", State::False, "LaunchFailedKms", "was cancelled")],
            ready: false,
        },
        Row {
            reason: "the last launch failed for capacity → shown, but True: the binding is ready",
            keys: vec![OWN_KEY],
            observed: |d| {
                with_launch(
                    d,
                    "Failed",
                    "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested",
                )
            },
            want: vec![("LaunchesHealthy", State::True, "LaunchFailedOther", "sufficient t3.micro capacity")],
            ready: true,
        },
        Row {
            reason: "the last launch was cancelled over a subnet → shown, but True",
            keys: vec![OTHER_KEY],
            observed: |d| with_launch(d, "Cancelled", "The subnet ID 'subnet-1' does not exist"),
            want: vec![("LaunchesHealthy", State::True, "LaunchFailedOther", "subnet-1")],
            ready: true,
        },
        Row {
            reason: "launches not read (a quick pass) → Unknown, NotRead",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.launches.clear();
                o
            },
            want: vec![("LaunchesHealthy", State::Unknown, "NotRead", "")],
            ready: false,
        },
        Row {
            reason: "the key owner's credentials failed → every condition Unknown",
            keys: vec![OTHER_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.account_errors.insert(acct("444455556666"), Failure::terminal("AccessDenied"));
                o
            },
            want: vec![
                ("KeyUsable", State::Unknown, "ReadFailed", "AccessDenied"),
                ("GrantReady", State::Unknown, "ReadFailed", ""),
            ],
            ready: false,
        },
    ];
    for row in rows {
        let d = desired(&row.keys);
        let o = (row.observed)(&d);
        let s = evaluate(&d, &o, &acct(ASG_ACCT), 1_000);
        assert_eq!(s.len(), 1);
        let kinds: Vec<&str> = s[0].conditions.iter().map(|c| c.kind.as_str()).collect();
        let mut want_kinds = vec!["KeyUsable", "RoleReady", "KeyPolicyReady", "AsgUsesRole", "LaunchesHealthy"];
        if d.bindings[0].is_cross_account() {
            want_kinds.insert(3, "GrantReady");
        }
        assert_eq!(kinds, want_kinds, "{}", row.reason);
        for (kind, status, reason, text) in &row.want {
            let c = of(&s[0], kind);
            assert_eq!((c.status, c.reason.as_str()), (*status, *reason), "{}: {kind}: {}", row.reason, c.message);
            assert!(c.message.contains(text), "{}: {kind}: {}", row.reason, c.message);
        }
        assert_eq!(s[0].ready(), row.ready, "{}: {:?}", row.reason, s[0]);
    }
}

#[test]
fn transition_times_and_unread_launches_carry_over_from_the_last_pass() {
    let d = desired(&[OWN_KEY]);
    let mut before = evaluate(&d, &converged(&d), &acct(ASG_ACCT), 1_000).remove(0);
    assert_eq!(before.verdict, Verdict::Ready);
    of(&before, "LaunchesHealthy");
    // A later quick pass, with the role now gone and launches not read.
    let mut o = converged(&d);
    o.launches.clear();
    o.roles.insert((acct(ASG_ACCT), "AWSServiceRoleForAutoScaling".into()), Ok(None));
    let prior = BTreeMap::from([(before.binding.clone(), before.clone())]);
    let settled = Settled::new();
    let ctx = Context { now: 2_000, settled: &settled, prior: &prior, ..Context::at(0) };
    let after = judge(&d, &o, &acct(ASG_ACCT), &ctx).judged.remove(0);
    assert_eq!(of(&after, "KeyUsable").since, 1_000, "unchanged: the old transition time");
    assert_eq!(of(&after, "RoleReady").since, 2_000, "changed: this pass's time");
    assert_eq!(of(&after, "LaunchesHealthy"), of(&before, "LaunchesHealthy"), "not read: the last one read");
    before.conditions.clear();
    assert!(!after.ready());
    assert_eq!(after.verdict, Verdict::Converging, "the role is missing: a write makes it");
}

#[test]
fn bindings_that_share_a_key_share_its_texts() {
    // Two groups on one key: each condition's reason and message is one allocation.
    let mut d = desired(&[OWN_KEY, OWN_KEY]);
    d.bindings[1].asg = AsgRef::new(acct(ASG_ACCT), "us-west-2", "api");
    let s = evaluate(&d, &converged(&d), &acct(ASG_ACCT), 1_000);
    assert_eq!(s.len(), 2);
    for (a, b) in s[0].conditions.iter().zip(&s[1].conditions) {
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.reason, b.reason);
        assert!(Arc::ptr_eq(&a.message, &b.message), "{:?}: {} and {}", a.kind, a.message, b.message);
    }
}

#[test]
fn a_group_held_back_by_one_of_its_keys_names_that_key() {
    // web uses both keys and is still on the default role's predecessor; the other key's
    // grant is missing, so the switch waits for it, and both bindings say so.
    let d = desired(&[OWN_KEY, OTHER_KEY]);
    let mut o = converged(&d);
    let old =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_Old";
    o.asgs.insert(
        d.bindings[0].asg.clone(),
        Ok(Some(Asg { service_linked_role_arn: Some(old.into()), sources: vec![] })),
    );
    o.grants.insert(KeyArn::parse(OTHER_KEY).unwrap(), Ok(vec![]));
    let s = evaluate(&d, &o, &acct(ASG_ACCT), 1);
    let c = of(&s[0], "AsgUsesRole");
    assert_eq!((c.status, c.reason), (State::False, Reason::HeldByKey), "{}", s[0].binding);
    assert!(c.message.contains(&format!("key {OTHER_KEY} is not (GrantReady False: Missing)")), "{}", c.message);
    assert!(c.message.contains("_Old"), "{}", c.message);
    // The other key's own binding says what it lacks in its own conditions.
    assert_eq!(of(&s[1], "AsgUsesRole").reason, Reason::OtherRole);
    assert_eq!(of(&s[1], "GrantReady").reason, Reason::Missing);
    // A grant the pass can make holds nothing: the switch follows it in the same pass.
    assert_eq!(s[0].verdict, Verdict::Converging);
    // With the grant in place the same group is simply not switched yet.
    let mut o = converged(&d);
    o.asgs.insert(
        d.bindings[0].asg.clone(),
        Ok(Some(Asg { service_linked_role_arn: Some(old.into()), sources: vec![] })),
    );
    let s = evaluate(&d, &o, &acct(ASG_ACCT), 1);
    assert!(s.iter().all(|b| of(b, "AsgUsesRole").reason == Reason::OtherRole));
}

#[test]
fn a_handoff_key_awaiting_its_owner_says_so_with_the_statements_and_is_ready_once_allowed() {
    const HANDOFF_KEY: &str = "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333";
    let d = desired(&[HANDOFF_KEY]);
    let mut o = converged(&d);
    let key = KeyArn::parse(HANDOFF_KEY).unwrap();
    o.key_policies.remove(&key); // never read: the owner has no `accounts` entry
    let slr = d.bindings[0].slr();
    o.handoff.insert((key.clone(), slr.clone()), Ok(DryRun::Refused));
    let s = &evaluate(&d, &o, &acct(ASG_ACCT), 100)[0];
    let c = of(s, "KeyPolicyReady");
    assert_eq!((c.status, c.reason), (State::False, Reason::AwaitingKeyOwner));
    assert!(c.message.contains(r#""Sid":"AsgCmkOperatorUse""#), "{}", c.message);
    assert!(c.message.contains("arn:aws:iam::111122223333:root"), "{}", c.message);
    assert!(!s.ready() && matches!(s.verdict, Verdict::Waiting { wait: Wait::KeyOwner, .. }), "{s:?}");
    // The owner's change is seen: the dry run succeeds.
    o.handoff.insert((key.clone(), slr), Ok(DryRun::Allowed));
    let s = &evaluate(&d, &o, &acct(ASG_ACCT), 100)[0];
    assert_eq!(of(s, "KeyPolicyReady").reason, Reason::OwnerAllows);
    assert!(s.ready(), "{s:?}");
    // A key the group's account may not even describe yet waits for its owner too.
    let denied = Failure { class: ErrorClass::Terminal, message: "DescribeKey: AccessDeniedException".into() };
    o.keys.insert(key, Err(denied));
    let s = &evaluate(&d, &o, &acct(ASG_ACCT), 100)[0];
    assert_eq!(of(s, "KeyPolicyReady").reason, Reason::AwaitingKeyOwner);
    assert_eq!(of(s, "KeyUsable").reason, Reason::AwaitingKeyOwner);
    assert!(matches!(s.verdict, Verdict::Waiting { wait: Wait::KeyOwner, .. }), "{s:?}");
}

/// What a verdict is, in a word, for the table below.
fn kind_of(v: &Verdict) -> String {
    match v {
        Verdict::Ready => "Ready".into(),
        Verdict::Converging => "Converging".into(),
        Verdict::Waiting { wait, .. } => format!("Waiting {}", wait.as_str()),
        Verdict::Blocked { by, holder, .. } => format!("Blocked by {} ({})", by.key_id(), kind_of(holder)),
        Verdict::Failed { failure, retry } => format!("Failed {} {retry:?}", failure.class.as_str()),
    }
}

#[test]
fn verdicts_table() {
    struct Row {
        reason: &'static str,
        keys: Vec<&'static str>,
        observed: fn(&Desired) -> Observed,
        /// The verdict of each binding, in a word, and a text in its message.
        want: Vec<(&'static str, &'static str)>,
    }
    let rows = vec![
        Row {
            reason: "everything in place, launches fine → ready",
            keys: vec![OWN_KEY, OTHER_KEY],
            observed: converged,
            want: vec![("Ready", ""), ("Ready", "")],
        },
        Row {
            reason: "the role is missing → converging: a write makes it",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.roles.insert((acct(ASG_ACCT), "AWSServiceRoleForAutoScaling".into()), Ok(None));
                o
            },
            want: vec![("Converging", "")],
        },
        Row {
            reason: "a disabled key → failed, terminal, backed off (someone may enable it)",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                if let Some(Ok(k)) = o.keys.get_mut(&d.bindings[0].key) {
                    k.state = "Disabled".into();
                }
                o
            },
            want: vec![("Failed terminal Backoff", "it is disabled")],
        },
        Row {
            reason: "a throttled read of the group → failed, throttled: tried again after a backoff",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                let f = Failure { class: ErrorClass::Throttled, message: "Throttling".into() };
                o.asgs.insert(d.bindings[0].asg.clone(), Err(f));
                o
            },
            want: vec![("Failed throttled Backoff", "describe ASG: Throttling")],
        },
        Row {
            reason: "a Deny on the role in the other key's policy → that binding failed, and the group's other binding blocked by it",
            keys: vec![OWN_KEY, OTHER_KEY],
            observed: |d| {
                let mut o = converged(d);
                let old = "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_Old";
                o.asgs.insert(
                    d.bindings[0].asg.clone(),
                    Ok(Some(Asg { service_linked_role_arn: Some(old.into()), sources: vec![] })),
                );
                o.key_policies.insert(
                    KeyArn::parse(OTHER_KEY).unwrap(),
                    Ok(format!(
                        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ASG_ACCT}"}},"Action":"kms:*","Resource":"*"}},{{"Sid":"NoRole","Effect":"Deny","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
                    )),
                );
                o
            },
            want: vec![
                ("Blocked by 22222222-2222-2222-2222-222222222222 (Failed terminal Backoff)", "stays on"),
                ("Failed terminal Backoff", "\"NoRole\" denies kms:Decrypt"),
            ],
        },
        Row {
            reason: "a hand-off key whose owner has not acted → waiting for the key's owner",
            keys: vec!["arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333"],
            observed: |d| {
                let mut o = converged(d);
                o.handoff.insert((d.bindings[0].key.clone(), d.bindings[0].slr()), Ok(DryRun::Refused));
                o.grants.insert(d.bindings[0].key.clone(), Ok(vec![]));
                o
            },
            want: vec![("Waiting awaiting_owner", "awaiting key owner")],
        },
        Row {
            reason: "everything in place but the last launch failed over KMS → failed, retried at the resync",
            keys: vec![OWN_KEY],
            observed: |d| with_launch(d, "Failed", "Client.InternalError: Client error on launch"),
            want: vec![("Failed terminal Resync", "Client error on launch")],
        },
        Row {
            reason: "a launch that failed for capacity → ready: no write cures it",
            keys: vec![OWN_KEY],
            observed: |d| with_launch(d, "Failed", "insufficient capacity"),
            want: vec![("Ready", "")],
        },
        Row {
            reason: "everything in place, launches never read (a quick pass) → waiting for a full pass",
            keys: vec![OWN_KEY],
            observed: |d| {
                let mut o = converged(d);
                o.launches.clear();
                o
            },
            want: vec![("Waiting launches_unread", "not read")],
        },
    ];
    for row in rows {
        let d = desired(&row.keys);
        let o = (row.observed)(&d);
        let judged = evaluate(&d, &o, &acct(ASG_ACCT), 1);
        assert_eq!(judged.len(), row.want.len(), "{}", row.reason);
        for (j, (kind, text)) in judged.iter().zip(&row.want) {
            assert_eq!(kind_of(&j.verdict), *kind, "{}: {:?}", row.reason, j.verdict);
            assert!(j.verdict.message().contains(text), "{}: {}", row.reason, j.verdict.message());
        }
    }
}

#[test]
fn a_settled_binding_keeps_its_verdict_and_holds_its_group() {
    // A write for the other key failed earlier in the pass: its binding is settled, and
    // the group's switch waits for it although the own key is ready.
    let d = desired(&[OWN_KEY, OTHER_KEY]);
    let mut o = converged(&d);
    let old =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_Old";
    o.asgs.insert(
        d.bindings[0].asg.clone(),
        Ok(Some(Asg { service_linked_role_arn: Some(old.into()), sources: vec![] })),
    );
    let failed = Verdict::Failed {
        failure: Failure { class: ErrorClass::Throttled, message: "CreateGrant: slow".into() },
        retry: Retry::Backoff,
    };
    let settled: Settled = BTreeMap::from([(d.bindings[1].id(), failed.clone())]);
    let none = BTreeMap::new();
    let judged =
        judge(&d, &o, &acct(ASG_ACCT), &Context { now: 1, settled: &settled, prior: &none, ..Context::at(0) }).judged;
    assert_eq!(judged[1].verdict, failed);
    assert_eq!(
        kind_of(&judged[0].verdict),
        "Blocked by 22222222-2222-2222-2222-222222222222 (Failed throttled Backoff)"
    );
    assert!(judged[0].verdict.message().contains("CreateGrant: slow"), "{:?}", judged[0].verdict);
}

#[test]
fn a_launch_that_failed_before_the_fix_reads_as_fixed_and_one_after_it_as_failed() {
    let d = desired(&[OWN_KEY]);
    let o = with_launch(&d, "Failed", "Client.InternalError: Client error on launch");
    let failed_at = unix_seconds("2026-11-29T01:00:00Z").unwrap();
    // A one-shot status an hour later, with every permission in place: the launch may
    // have failed before they were; the next launch tells.
    let later = evaluate(&d, &o, &acct(ASG_ACCT), failed_at + 3600).remove(0);
    let c = of(&later, "LaunchesHealthy");
    assert_eq!((c.status, c.reason), (State::Unknown, Reason::FixedSinceLastLaunch), "{}", c.message);
    assert!(c.message.contains("the next launch will tell"), "{}", c.message);
    assert_eq!(later.verdict, Verdict::Ready);
    // In the daemon, the permissions were in place since before that launch: it failed
    // although they were, and the binding is not ready.
    let mut prior = later.clone();
    for c in &mut prior.conditions {
        c.since = failed_at - 600;
    }
    let prior = BTreeMap::from([(prior.binding.clone(), prior)]);
    let settled = Settled::new();
    let ctx = Context { now: failed_at + 3600, settled: &settled, prior: &prior, ..Context::at(0) };
    let daemon = judge(&d, &o, &acct(ASG_ACCT), &ctx).judged.remove(0);
    assert_eq!(of(&daemon, "LaunchesHealthy").reason, Reason::LaunchFailedKms);
    assert!(matches!(daemon.verdict, Verdict::Failed { retry: Retry::Resync, .. }), "{:?}", daemon.verdict);
    // With a permission missing, the failure is what it says.
    let mut o = o;
    o.roles.insert((acct(ASG_ACCT), "AWSServiceRoleForAutoScaling".into()), Ok(None));
    let missing = evaluate(&d, &o, &acct(ASG_ACCT), failed_at + 3600).remove(0);
    assert_eq!(of(&missing, "LaunchesHealthy").reason, Reason::LaunchFailedKms);
}

#[test]
fn aws_times_read_as_unix_seconds() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
    assert_eq!(unix_seconds("2026-11-29T23:49:13.861554Z"), unix_seconds("2026-11-29T23:49:13+00:00"));
    for t in 0..5 {
        let secs = 1_700_000_000 + t * 86_399;
        assert_eq!(unix_seconds(&crate::core::status::rfc3339(secs)), Some(secs));
    }
    assert_eq!(unix_seconds("yesterday"), None);
    assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
}

#[test]
fn a_contested_key_names_its_writer_and_the_statements_and_waits_out_its_backoff() {
    let d = desired(&[OWN_KEY]);
    let mut o = converged(&d);
    let key = KeyArn::parse(OWN_KEY).unwrap();
    let root = r#"{"Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    o.key_policies.insert(key.clone(), Ok(root.into()));
    let b = d.bindings[0].id();
    let mut contests = crate::core::contest::Contests::new(60);
    for t in [100, 200] {
        contests.wrote([&b], t);
        let missing = evaluate(&d, &o, &acct(ASG_ACCT), t + 1);
        contests.take_in(policy_seen(&missing), t + 1);
    }
    contests.keys.get_mut(&key).unwrap().writer = Some("arn:aws:sts::111122223333:assumed-role/terraform/ci".into());
    let (settled, prior) = (Settled::new(), BTreeMap::new());
    let at = |now| Context { now, settled: &settled, prior: &prior, contests: &contests };
    let waiting = judge(&d, &o, &acct(ASG_ACCT), &at(230)).judged.remove(0);
    let c = waiting.condition(Kind::KeyPolicyReady).unwrap();
    assert_eq!((c.status, c.reason), (State::False, Reason::Contested));
    assert!(c.message.contains("assumed-role/terraform/ci"), "{}", c.message);
    assert!(c.message.contains(SLR) && c.message.contains("kms:GrantIsForAWSResource"), "{}", c.message);
    assert!(c.message.contains("in 30s"), "{}", c.message);
    assert!(matches!(waiting.verdict, Verdict::Waiting { wait: Wait::Contested, .. }), "{:?}", waiting.verdict);
    // Its backoff over (60 s after the last write), the write is made again.
    let due = judge(&d, &o, &acct(ASG_ACCT), &at(260)).judged.remove(0);
    assert!(due.has(Kind::KeyPolicyReady, Reason::Contested));
    assert_eq!(due.verdict, Verdict::Converging);
    // The writer's own policy grants the access: ready, whatever the contest.
    let own = converged(&d);
    let ready = judge(&d, &own, &acct(ASG_ACCT), &at(230)).judged.remove(0);
    assert!(ready.has(Kind::KeyPolicyReady, Reason::Allows) && ready.ready());
}
