//! End to end: a key whose owner account has no `accounts` entry (hand-off mode). The
//! operator never writes its policy, prints what the owner must add, waits for it
//! without errors, and converges within its re-check interval once the owner acts.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A config binding `api` (in our account) to `key` (in OTHER), with no `accounts`.
fn handoff_config(key: &str) -> String {
    format!("version: 1\nbindings:\n  - asg: api\n    account: \"{OWN}\"\n    key: {key}\n")
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_adds_what_handoff_printed_and_the_daemon_converges_within_the_recheck_interval() {
    // (1) A case 2 key in OTHER, whose credentials the operator is not given.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &handoff_config(&key));
    let policy_before = key_policy(&other, &key).await;

    // (2) `handoff` prints the statements, per owner account.
    let out = moto.operator(&["handoff", "--config", &cfg, "--output", "json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("handoff --output json is JSON");
    let owners = doc["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{doc:#}");
    assert_eq!(owners[0]["account"], OTHER);
    let entry = &owners[0]["keys"][0];
    assert_eq!(entry["key"], key.as_str());
    let printed: Vec<Value> = entry["statements"].as_array().unwrap().iter().map(|s| s["statement"].clone()).collect();
    let sids: Vec<&str> = printed.iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert_eq!(sids, ["AsgCmkOperatorUse", "AsgCmkOperatorCrossAccountGrant"]);
    for s in entry["statements"].as_array().unwrap() {
        assert!(!s["reason"].as_str().unwrap().is_empty(), "each statement says why: {s}");
    }
    assert!(entry["steps"][0].as_str().unwrap().contains("get-key-policy"));
    assert!(entry["steps"][2].as_str().unwrap().contains("put-key-policy"));
    let text = moto.operator(&["handoff", "--config", &cfg]);
    assert!(stdout(&text).contains("AsgCmkOperatorCrossAccountGrant") && stdout(&text).contains(OTHER));

    // `plan` shows the binding as awaiting its key's owner (pending: exit 2, not 1).
    let plan = moto.operator(&["plan", "--config", &cfg]);
    assert_eq!(plan.status.code(), Some(2), "{}", stdout(&plan));
    assert!(stdout(&plan).contains("awaiting key owner"), "{}", stdout(&plan));

    // The daemon waits: pending, not failed, one log line, no error, nothing written.
    moto.reset_calls();
    let mut d = Daemon::start_with_args(moto.operator_command(&[]), &cfg, "1h", &["--handoff-recheck-interval", "2s"]);
    d.wait_ready(SECS(20));
    d.wait_log(|v| v["message"] == "waiting for the key's owner to change its key policy", SECS(10));
    let (_, status) = d.get("/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    let conds = status["bindings"][0]["conditions"].as_array().unwrap();
    let kpr = conds.iter().find(|c| c["type"] == "KeyPolicyReady").unwrap();
    assert_eq!((kpr["status"].as_str(), kpr["reason"].as_str()), (Some("False"), Some("AwaitingKeyOwner")), "{kpr}");
    let message = kpr["message"].as_str().unwrap();
    assert!(
        message.contains("AsgCmkOperatorCrossAccountGrant") && message.contains(&format!("arn:aws:iam::{OWN}:root")),
        "{message}"
    );
    // Let it re-check a few times.
    std::thread::sleep(SECS(5));
    let (_, metrics) = d.get("/metrics");
    assert_eq!(metric(&metrics, "asg_cmk_operator_bindings{state=\"waiting\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "asg_cmk_operator_bindings{state=\"failed\"}"), Some(0.0), "{metrics}");
    let logs = d.logs();
    let waiting =
        logs.iter().filter(|v| v["message"] == "waiting for the key's owner to change its key policy").count();
    assert_eq!(waiting, 1, "one line when it starts waiting, not one per pass");
    assert!(logs.iter().all(|v| v["level"] != "ERROR" && v["message"] != "binding failed"), "no error while waiting");
    let calls = moto.calls_by_account();
    let dry_runs = calls.iter().filter(|(acct, _, a)| a == "CreateGrant" && acct == OWN).count();
    assert!(dry_runs >= 3, "the key was checked again on the 2s interval: {dry_runs} dry runs");
    assert!(!calls.iter().any(|(_, _, a)| a == "PutKeyPolicy"), "the owner's policy is never written");
    assert!(calls.iter().all(|(acct, _, _)| acct == OWN), "nothing is done in the owner's account: {calls:?}");
    assert!(grants(&other, &key).await.is_empty(), "a dry run creates no grant");
    assert_eq!(key_policy(&other, &key).await, policy_before);
    assert_eq!(asg_role(&own, "api").await.as_deref(), Some(slr_arn(OWN, None).as_str()));

    // (3) The owner adds exactly what was printed.
    let mut policy = key_policy(&other, &key).await;
    policy["Statement"].as_array_mut().unwrap().extend(printed.iter().cloned());
    let acted = Instant::now();
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();

    // (4) The daemon notices within the re-check interval, makes one grant, and converges.
    d.wait_log(|v| v["message"] == "the key owner's change is seen; going on with the grant and the group", SECS(10));
    let (_, status) = d.get("/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ready"], true, "{status:#}");
    let took = acted.elapsed();
    assert!(took < SECS(2) + SECS(3), "noticed {took:?} after the owner acted; the re-check interval is 2s");
    let g = grants(&other, &key).await;
    assert_eq!(g.len(), 1, "one grant");
    assert_eq!(g[0].grantee, slr_arn(OWN, None));
    assert_eq!(g[0].operations, GRANT_OPERATIONS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(asg_role(&own, "api").await.as_deref(), Some(slr_arn(OWN, None).as_str()));
    let (_, metrics) = d.get("/metrics");
    assert_eq!(metric(&metrics, "asg_cmk_operator_bindings{state=\"ready\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "asg_cmk_operator_bindings{state=\"waiting\"}"), Some(0.0), "{metrics}");
    // Converged: the next passes read only, and make no second grant.
    moto.reset_calls();
    std::thread::sleep(SECS(3));
    let calls = moto.calls();
    assert!(writes(&calls).iter().all(|a| a == "CreateGrant"), "only dry runs after converging: {calls:?}");
    assert_eq!(grants(&other, &key).await.len(), 1, "never a second grant");
    assert_eq!(d.terminate(SECS(15)), Some(0));
}
