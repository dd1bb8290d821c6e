//! The operator against an emulator as strict as AWS: the failure modes that moto's
//! leniency hid. Each test fails on the operator before the change it covers (run it with
//! `ASG_CMK_OPERATOR_BIN` pointing at an older build to see it).

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const CMK: Option<&str> = Some("CMK");

/// A key policy that lets the account root administer the key, plus `extra` statements.
fn policy_with(owner: &str, extra: &[Value]) -> String {
    let mut statements = vec![json!({"Sid": "Admins", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{owner}:root")}, "Action": "kms:*", "Resource": "*"})];
    statements.extend(extra.iter().cloned());
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn grant_name(role_id: &str) -> String {
    format!("asg-cmk-operator-{OWN}-AWSServiceRoleForAutoScaling_CMK-{role_id}")
}

async fn delete_slr(conf: &aws_config::SdkConfig, name: &str) {
    aws_sdk_iam::Client::new(conf).delete_service_linked_role().role_name(name).send().await.unwrap();
}

// --- B.1: no lost updates ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_key_policy_edit_made_after_the_operator_read_it_survives() {
    let OneAsg { moto, own, key, dir: _dir, cfg } = one_asg_on_own_key(CMK).await;
    let (auditor, _) = create_role(&own, "auditor").await;
    let edit = json!({"Sid": "Auditors", "Effect": "Allow", "Principal": {"AWS": auditor},
                      "Action": "kms:DescribeKey", "Resource": "*"});
    // Someone edits the policy right after the operator's pass has read it.
    moto.edit_after_next_read(&key, edit.clone());
    moto.reset_calls();

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let calls = moto.calls();
    assert_eq!(moto.hook("GET", "/_launcher/edits", Value::Null)["applied"], 1);
    let policy = key_policy(&own, &key).await;
    assert!(statements(&policy).contains(&edit), "the edit was lost: {policy}");
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [slr_arn(OWN, CMK)]);
    // Read in the pass, read again right before the write, and verified.
    assert_eq!(count(&calls, "GetKeyPolicy"), 3);
}

// --- B.2: propagation, wherever it happens -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_case_2_apply_waits_for_the_new_role_to_reach_kms_before_the_grant() {
    let CrossAccount { moto, own, other, key, dir: _dir, cfg } = one_asg_on_other_key(CMK).await;
    moto.strict(json!({"propagation_seconds": 3.0}));
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.calls();
    assert!(count(&calls, "CreateGrant") >= 2, "the first grant was refused while the role propagated: {calls:?}");
    let g = grants(&other, &key).await;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0].grantee, slr_arn(OWN, CMK));
    assert_eq!(asg_role(&own, "api").await, Some(slr_arn(OWN, CMK)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_switched_to_a_role_made_moments_ago_waits_for_auto_scaling_to_see_it() {
    let moto = Moto::start();
    moto.strict(json!({"propagation_seconds": 3.0}));
    let own = moto.own().await;
    // The key policy already lets anyone use the key: the role is the only thing missing,
    // so the group update follows its creation at once.
    let open =
        json!({"Sid": "Anyone", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"});
    let key = create_key(&own, Some(&policy_with(OWN, &[open]))).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, CMK)]));
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.calls();
    assert_eq!(count(&calls, "PutKeyPolicy"), 0);
    assert!(count(&calls, "UpdateAutoScalingGroup") >= 2, "refused at first: {calls:?}");
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, CMK)));
}

// --- B.3: orphaned principals --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_role_deleted_and_made_again_is_written_in_place_of_its_orphaned_id() {
    let OneAsg { moto, own, key, dir: _dir, cfg } = one_asg_on_own_key(CMK).await;
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    // The role is deleted and made again: KMS now shows the old one's id, and refuses any
    // policy that still names it.
    let name = "AWSServiceRoleForAutoScaling_CMK";
    let old_id = aws_sdk_iam::Client::new(&own).get_role().role_name(name).send().await.unwrap();
    let old_id = old_id.role().unwrap().role_id().to_owned();
    delete_slr(&own, name).await;
    create_slr(&own, "CMK").await;
    assert_eq!(owned_principals(&key_policy(&own, &key).await, "AsgCmkOperatorUse"), [old_id.as_str()]);
    moto.reset_calls();

    let started = Instant::now();
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20), "no wait for a propagation that cannot come");
    assert_eq!(count(&moto.calls(), "PutKeyPolicy"), 1, "accepted at the first try");
    let policy = key_policy(&own, &key).await;
    assert!(!policy.to_string().contains(&old_id), "{policy}");
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [slr_arn(OWN, CMK)]);
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorAttachment"), [slr_arn(OWN, CMK)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_statement_naming_a_deleted_role_fails_that_key_at_once_and_names_it() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (legacy, legacy_id) = create_role(&own, "legacy").await;
    let foreign = json!({"Sid": "LegacyApp", "Effect": "Allow", "Principal": {"AWS": legacy},
                         "Action": "kms:Decrypt", "Resource": "*"});
    let stuck = create_key(&own, Some(&policy_with(OWN, &[foreign]))).await;
    let fine = create_key(&own, None).await;
    delete_role(&own, "legacy").await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &stuck, CMK), ("api", &fine, CMK)]));
    moto.reset_calls();

    let started = Instant::now();
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(20), "failed at once, not after the propagation retries");
    let text = stdout(&out);
    assert!(text.contains(&format!("statement \"LegacyApp\" names {legacy_id}")), "{text}");
    assert!(text.contains("ask the key's administrators"), "{text}");
    assert!(text.contains("1 of 2 bindings converged"), "the other key went on: {text}");
    // One write, for the other key: the stuck one was never attempted.
    assert_eq!(count(&moto.calls(), "PutKeyPolicy"), 1);
    assert_eq!(asg_role(&own, "api").await, Some(slr_arn(OWN, CMK)));
}

// --- B.4: Deny, as AWS reads it ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_deny_on_the_role_in_the_owners_policy_fails_a_case_2_binding_by_its_sid() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let (slr, _) = create_slr(&own, "CMK").await;
    let partner =
        json!({"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": OWN}, "Action": "kms:*", "Resource": "*"});
    let deny = json!({"Sid": "NotTheAsgRole", "Effect": "Deny", "Principal": {"AWS": slr},
                      "Action": "kms:CreateGrant", "Resource": "*"});
    let key = create_key(&other, Some(&policy_with(OTHER, &[partner, deny]))).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("api", &key, CMK)]));
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("\"NotTheAsgRole\" denies kms:CreateGrant"), "{}", stdout(&out));
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "nothing written for a binding that cannot work");
    assert!(grants(&other, &key).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deny_on_the_account_covers_its_service_linked_role() {
    let moto = Moto::start();
    let own = moto.own().await;
    let deny = json!({"Sid": "FreezeDecrypt", "Effect": "Deny", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
                      "Action": "kms:Decrypt", "Resource": "*"});
    let key = create_key(&own, Some(&policy_with(OWN, &[deny]))).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, CMK)]));

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("\"FreezeDecrypt\" denies kms:Decrypt"), "{}", stdout(&out));
    assert_eq!(count(&moto.calls(), "PutKeyPolicy"), 0);
}

// --- B.5: the operator's grants ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_grant_that_falls_short_is_replaced_and_retired() {
    let CrossAccount { moto, own, other, key, dir: _dir, cfg } = one_asg_on_other_key(CMK).await;
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    // An earlier run's grant, under the operator's name, that lacks ReEncryptTo.
    let first = grants(&other, &key).await;
    let kms = aws_sdk_kms::Client::new(&own);
    kms.revoke_grant().key_id(&key).grant_id(&first[0].id).send().await.unwrap();
    let short: Vec<aws_sdk_kms::types::GrantOperation> =
        GRANT_OPERATIONS.iter().filter(|o| **o != "ReEncryptTo").map(|o| (*o).into()).collect();
    let name = first[0].name.clone().unwrap();
    let short_id = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(slr_arn(OWN, CMK))
        .name(&name)
        .set_operations(Some(short))
        .send()
        .await
        .unwrap()
        .grant_id()
        .unwrap()
        .to_owned();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = grants(&other, &key).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].id, short_id);
    assert_eq!(after[0].operations, GRANT_OPERATIONS);
    assert_eq!(after[0].name.as_deref(), Some(name.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_made_again_gets_a_grant_of_its_own_and_the_stale_one_is_retired() {
    let CrossAccount { moto, own, other, key, dir: _dir, cfg } = one_asg_on_other_key(CMK).await;
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let (_, old_id) = {
        let g = grants(&other, &key).await;
        assert_eq!(g.len(), 1);
        (g[0].id.clone(), g[0].name.clone().unwrap().rsplit('-').next().unwrap().to_owned())
    };
    delete_slr(&own, "AWSServiceRoleForAutoScaling_CMK").await;
    let (_, new_id) = create_slr(&own, "CMK").await;
    // KMS now lists the grant by the deleted role's id: it serves nobody.
    assert_eq!(grants(&other, &key).await[0].grantee, old_id);

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = grants(&other, &key).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].grantee, slr_arn(OWN, CMK));
    assert_eq!(after[0].name.as_deref(), Some(grant_name(&new_id).as_str()));
    assert_eq!(after[0].operations, GRANT_OPERATIONS);
}

// --- B.6: apply retries failed reads -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn apply_reads_again_after_a_read_failed_through_the_sdks_own_retries() {
    let OneAsg { moto, own, key: _, dir: _dir, cfg } = one_asg_on_own_key(CMK).await;
    // The SDK makes three attempts; all three are throttled.
    moto.fault("kms", "GetKeyPolicy", 3, 400, "ThrottlingException", "Rate exceeded");
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(count(&moto.calls(), "GetKeyPolicy") >= 5, "{:?}", moto.calls());
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, CMK)));
}

// --- A: a group with several keys is switched only when all of them are ready ------------

/// `web` bound to an own key and to another account's key whose owner allows the ASG
/// account, and, with `deny`, denies the group's new role; `web` launches today with the
/// default role.
async fn a_group_on_two_keys(moto: &Moto, deny: bool) -> (String, String, TempDir, String) {
    let (own, other) = (moto.own().await, moto.other().await);
    let (slr, _) = create_slr(&own, "CMK").await;
    let own_key = create_key(&own, None).await;
    let mut statements = vec![
        json!({"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": OWN}, "Action": "kms:*", "Resource": "*"}),
    ];
    if deny {
        statements.push(json!({"Sid": "NotTheNewRole", "Effect": "Deny", "Principal": {"AWS": slr},
                               "Action": "kms:Decrypt", "Resource": "*"}));
    }
    let other_key = create_key(&other, Some(&policy_with(OTHER, &statements))).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write(
        "c.yaml",
        &format!(
            "version: 1\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n  - asg: web\n    account: \"{OWN}\"\n    serviceLinkedRoleSuffix: CMK\n    keys:\n      - {own_key}\n      - {other_key}\n"
        ),
    );
    (own_key, other_key, dir, cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_keeps_a_groups_role_while_another_of_its_keys_denies_the_new_one() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (own_key, other_key, _dir, cfg) = a_group_on_two_keys(&moto, true).await;
    let before = asg_role(&own, "web").await;
    assert_eq!(before.as_deref(), Some(slr_arn(OWN, None).as_str()));

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("\"NotTheNewRole\" denies kms:Decrypt"), "names the Deny: {text}");
    assert!(text.contains(&format!("key {other_key} is not")), "the held binding names the key: {text}");
    assert_eq!(asg_role(&own, "web").await, before, "the group keeps the role it launches with");
    assert_eq!(count(&moto.calls(), "UpdateAutoScalingGroup"), 0);
    // The own key is still made ready for the new role: only the switch waits.
    let policy = key_policy(&own, &own_key).await;
    assert!(policy.to_string().contains(&slr_arn(OWN, CMK)), "{policy}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_a_groups_role_while_another_of_its_keys_denies_the_new_one() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (own_key, other_key, _dir, cfg) = a_group_on_two_keys(&moto, true).await;
    let before = asg_role(&own, "web").await;
    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(Duration::from_secs(30));
    let failed = d.wait_log(
        |v| v["message"] == "binding failed" && v["error"].as_str().is_some_and(|e| e.contains("NotTheNewRole")),
        Duration::from_secs(10),
    );
    assert!(failed["binding"].as_str().is_some_and(|b| b.contains("web")), "{failed}");
    // An edit that touches only the own key (api joins it) runs a pass over that key:
    // its unit brings the other key along, and web still keeps its role.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "  - asg: api\n    account: \"{OWN}\"\n    key: {own_key}\n    serviceLinkedRoleSuffix: CMK\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    eventually("api switched by the edit's pass", Duration::from_secs(15), || async {
        asg_role(&own, "api").await.as_deref() == Some(slr_arn(OWN, CMK).as_str())
    })
    .await;
    d.wait_log(|v| v["message"] == "pass finished" && v["full"] == false, Duration::from_secs(10));
    assert_eq!(asg_role(&own, "web").await, before, "the group keeps the role it launches with");
    let (_, status) = d.get("/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    let web_own = status["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asg"] == "web" && b["key"] == own_key.as_str())
        .expect("web's own-key binding in /status");
    let uses = web_own["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "AsgUsesRole").unwrap();
    assert_eq!(uses["reason"], "HeldByKey", "{uses}");
    assert!(uses["message"].as_str().unwrap().contains(&other_key), "{uses}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_write_that_fails_holds_the_groups_switch_in_the_same_pass() {
    // Both keys can be made ready, but every CreateGrant is refused: the plan's switch of
    // web (planned after the grant) must be dropped when the grant fails.
    let moto = Moto::start();
    let own = moto.own().await;
    let (_own_key, other_key, _dir, cfg) = a_group_on_two_keys(&moto, false).await;
    let before = asg_role(&own, "web").await;
    moto.fault("kms", "CreateGrant", 1000, 400, "AccessDeniedException", "not authorized to perform kms:CreateGrant");
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("key {other_key} is not")), "{text}");
    assert!(count(&moto.calls(), "CreateGrant") >= 1, "the grant was tried");
    assert_eq!(count(&moto.calls(), "UpdateAutoScalingGroup"), 0, "never switched");
    assert_eq!(asg_role(&own, "web").await, before);
}
