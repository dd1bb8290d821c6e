//! The status document and text, rendered from judgements.

use super::*;
use crate::core::judge::{judge, Context, Judged};
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, Asg, AsgRef, KeyArn, KeyInfo, KeyManager, LaunchActivity, Role};

const ASG_ACCT: &str = "111122223333";
const OWN_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const SLR: &str =
    "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn desired(keys: &[&str]) -> Desired {
    let mut d = Desired::default();
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

/// Everything in place for a case 1 binding, the last launch fine.
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
        o.key_policies.insert(
            b.key.clone(),
            Ok(format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:*","Resource":"*"}}]}}"#
            )),
        );
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: Some(SLR.into()), sources: vec![] })));
        o.launches.insert(b.asg.clone(), Ok(None));
    }
    o
}

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

fn evaluate(d: &Desired, o: &Observed, caller: &AccountId, now: u64) -> Vec<Judged> {
    judge(d, o, caller, &Context::at(now)).judged
}

#[test]
fn the_document_has_the_documented_shape() {
    let d = desired(&[OWN_KEY]);
    let s = evaluate(&d, &converged(&d), &acct(ASG_ACCT), 1_764_377_000);
    let doc: serde_json::Value = serde_json::from_str(&document(&s)).unwrap();
    assert_eq!(doc["ready"], true);
    let b = &doc["bindings"][0];
    assert_eq!(
        (b["asg"].as_str(), b["account"].as_str(), b["region"].as_str()),
        (Some("web"), Some(ASG_ACCT), Some("us-west-2"))
    );
    assert_eq!(b["key"], OWN_KEY);
    let c = &b["conditions"][0];
    for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
        assert!(c.get(field).is_some(), "{field} missing in {c}");
    }
    assert_eq!(c["lastTransitionTime"], "2025-11-29T00:43:20Z");
    assert!(text(&s).contains("1 of 1 binding ready."), "{}", text(&s));
}

#[test]
fn a_launch_failure_the_operator_cannot_fix_is_listed_but_leaves_the_binding_ready() {
    let d = desired(&[OWN_KEY]);
    let s = evaluate(&d, &with_launch(&d, "Failed", "The subnet ID 'subnet-1' does not exist"), &acct(ASG_ACCT), 1_000);
    let doc: serde_json::Value = serde_json::from_str(&document(&s)).unwrap();
    assert_eq!(doc["ready"], true);
    let launches = doc["bindings"][0]["conditions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((launches["status"].as_str(), launches["reason"].as_str()), (Some("True"), Some("LaunchFailedOther")));
    let t = text(&s);
    assert!(t.contains("ready     "), "{t}");
    assert!(t.contains("LaunchesHealthy True (LaunchFailedOther)"), "{t}");
    assert!(t.contains("subnet-1"), "{t}");
}

#[test]
fn rfc3339_counts_days_like_the_calendar() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_709_164_799), "2024-02-28T23:59:59Z");
    assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
}
