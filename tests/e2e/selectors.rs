//! Selectors end to end, against the strict emulator: groups chosen by tag are onboarded
//! with the keys their selector allows and no other; untagged groups are left alone; a
//! group on a key outside the allowlist gets nothing; the daemon follows groups that
//! appear or gain the tag without an edit; a group that loses it is pruned only under the
//! prune rules; and an EKS managed node group keeps its role.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const TAG: &str = "asg-cmk-operator";

async fn tag(conf: &aws_config::SdkConfig, group: &str, key: &str, value: &str) {
    let t = aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(false)
        .build();
    aws_sdk_autoscaling::Client::new(conf).create_or_update_tags().tags(t).send().await.unwrap();
}

async fn untag(conf: &aws_config::SdkConfig, group: &str, key: &str) {
    let t = aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .build();
    aws_sdk_autoscaling::Client::new(conf).delete_tags().tags(t).send().await.unwrap();
}

/// A group on its own launch template whose data volume uses `key`.
async fn group_on_key(conf: &aws_config::SdkConfig, name: &str, key: &str) {
    let lt = launch_template(conf, name, None, Some(key)).await;
    group_on_template(conf, name, &lt, 0, None).await;
}

/// A config with one selector of OWN's groups tagged `asg-cmk-operator: managed`.
fn selector_config(allowed: &[&str], extra: &str) -> String {
    let keys: Vec<String> = allowed.iter().map(|k| format!("\n      - {k}")).collect();
    format!(
        "version: 1\ndefaults:\n  region: {REGION}\n{extra}accounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nselectors:\n  - name: managed\n    account: \"{OWN}\"\n    matchTags:\n      {TAG}: managed\n    serviceLinkedRoleSuffix: CMK\n    allowedKeys:{}\n",
        keys.concat()
    )
}

fn status_json(moto: &Moto, cfg: &str) -> (Option<i32>, Value) {
    let out = moto.operator(&["status", "--config", cfg, "--output", "json"]);
    (out.status.code(), serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out))))
}

fn binding<'a>(doc: &'a Value, asg: &str) -> Option<&'a Value> {
    doc["bindings"].as_array().unwrap().iter().find(|b| b["asg"] == asg)
}

fn condition<'a>(b: &'a Value, kind: &str) -> &'a Value {
    b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind} in {b}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tagged_groups_are_onboarded_with_allowed_keys_and_nothing_else_is_touched() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let own_key = create_key(&own, None).await;
    let other_key = create_key(&other, None).await;
    let stray_key = create_key(&own, None).await;
    group_on_key(&own, "eks-nodes-a1b2", &own_key).await;
    group_on_key(&own, "pipeline-7", &other_key).await;
    group_on_key(&own, "untagged", &own_key).await;
    group_on_key(&own, "rogue", &stray_key).await;
    for g in ["eks-nodes-a1b2", "pipeline-7", "rogue"] {
        tag(&own, g, TAG, "managed").await;
    }
    let untagged_role = asg_role(&own, "untagged").await;
    let rogue_role = asg_role(&own, "rogue").await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &selector_config(&[&own_key, &other_key], ""));
    assert!(moto.operator(&["validate", "--config", &cfg]).status.success());

    // The preview names what each selected group would get.
    let preview = moto.operator(&["discover", "--selector", "managed", "--config", &cfg]);
    assert!(preview.status.success(), "{}", stderr(&preview));
    let text = stdout(&preview);
    assert!(text.contains("3 groups selected"), "{text}");
    assert!(
        text.contains(&format!("eks-nodes-a1b2: binds {own_key} for role AWSServiceRoleForAutoScaling_CMK")),
        "{text}"
    );
    assert!(text.contains("rogue: nothing is written (KeyNotAllowed)"), "{text}");
    assert!(!text.contains("untagged"), "{text}");

    moto.reset_calls();
    let apply = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(apply.status.code(), Some(1), "rogue fails: {}", stdout(&apply));
    assert_eq!(asg_role(&own, "eks-nodes-a1b2").await, Some(slr_arn(OWN, Some("CMK"))));
    assert_eq!(asg_role(&own, "pipeline-7").await, Some(slr_arn(OWN, Some("CMK"))));
    assert_eq!(grants(&other, &other_key).await.len(), 1, "case 2 through the selector: one grant");
    assert_eq!(asg_role(&own, "untagged").await, untagged_role, "an untagged group is untouched");
    assert_eq!(asg_role(&own, "rogue").await, rogue_role, "a group on a key outside the allowlist keeps its role");
    let rogue_policy = key_policy(&own, &stray_key).await;
    assert_eq!(statements(&rogue_policy).len(), 1, "nothing written on the key it may not have: {rogue_policy}");

    let (code, doc) = status_json(&moto, &cfg);
    assert_eq!(code, Some(2));
    let rogue = binding(&doc, "rogue").expect("rogue is shown");
    assert_eq!(rogue["selector"], "managed");
    let allowed = condition(rogue, "KeyAllowed");
    assert_eq!((allowed["status"].as_str(), allowed["reason"].as_str()), (Some("False"), Some("KeyNotAllowed")));
    assert!(allowed["message"].as_str().unwrap().contains(&stray_key), "{allowed}");
    assert_eq!(rogue["verdict"]["type"], "Failed");
    let onboarded = binding(&doc, "eks-nodes-a1b2").unwrap();
    assert_eq!(onboarded["ready"], true, "{onboarded}");
    assert_eq!(condition(onboarded, "KeyAllowed")["reason"], "InAllowedKeys");
    assert!(binding(&doc, "untagged").is_none());

    // A second apply writes nothing: the sweep is reads only.
    moto.reset_calls();
    moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_onboards_a_new_tagged_group_and_a_retagged_one_without_an_edit() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    group_on_key(&own, "first", &key).await;
    tag(&own, "first", TAG, "managed").await;
    group_on_key(&own, "later", &key).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &selector_config(&[&key], "  selectorSyncInterval: 1s\n"));
    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(Duration::from_secs(30));
    assert_eq!(asg_role(&own, "first").await, Some(slr_arn(OWN, Some("CMK"))), "ready covers the selected groups");

    // A group created with the tag, and one that gains it: no config edit.
    group_on_key(&own, "created", &key).await;
    tag(&own, "created", TAG, "managed").await;
    tag(&own, "later", TAG, "managed").await;
    for g in ["created", "later"] {
        // The role is switched within the pass; /status has the binding once it ends.
        eventually(&format!("{g} onboarded"), Duration::from_secs(20), || async {
            let doc: Value = serde_json::from_str(&d.get("/status").1).unwrap();
            asg_role(&own, g).await == Some(slr_arn(OWN, Some("CMK"))) && binding(&doc, g).is_some()
        })
        .await;
    }
    let (_, status) = d.get("/status");
    let doc: Value = serde_json::from_str(&status).unwrap();
    for g in ["first", "created", "later"] {
        assert_eq!(binding(&doc, g).map(|b| b["selector"].clone()), Some(Value::from("managed")), "{doc}");
    }
    let metrics = d.get("/metrics").1;
    assert!(metrics.contains("asg_cmk_operator_selector_bindings{selector=\"managed\",state=\"ready\"}"), "{metrics}");
    assert!(d.logs().iter().any(|v| v["message"] == "selectors swept"), "the sweep is logged as an edit is");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_loses_its_tag_is_pruned_only_under_the_prune_rules() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    for g in ["a", "b", "c"] {
        group_on_key(&own, g, &key).await;
        tag(&own, g, TAG, "managed").await;
    }
    let dir = TempDir::new();
    // Without prune: a group that loses its tag keeps what it had.
    let cfg = dir.write("c.yaml", &selector_config(&[&key], ""));
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    assert_eq!(grants(&other, &key).await.len(), 1, "one grant for the role the three share");
    untag(&own, "c", TAG).await;
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(grants(&other, &key).await.len(), 1, "nothing revoked without prune");

    // With prune, a group that lost its tag while others keep the same role and key
    // costs nothing they need; all of them losing it is a mass removal, held.
    let pruning = dir.write("p.yaml", &selector_config(&[&key], "  prune: true\n"));
    assert!(moto.operator(&["apply", "--config", &pruning]).status.success());
    assert_eq!(grants(&other, &key).await.len(), 1, "a and b still need the role's grant");
    untag(&own, "a", TAG).await;
    untag(&own, "b", TAG).await;
    let held = moto.operator(&["plan", "--config", &pruning, "--output", "json"]);
    let plan: Value = serde_json::from_str(&stdout(&held)).unwrap();
    assert!(plan["prune"]["held"].as_str().is_some_and(|h| h.contains("nothing is pruned")), "{plan:#}");
    assert!(moto.operator(&["apply", "--config", &pruning]).status.success());
    assert_eq!(grants(&other, &key).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_eks_managed_node_group_keeps_its_role_while_its_key_is_made_ready_for_it() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    group_on_key(&own, "eks-general-1a2b3c", &key).await;
    tag(&own, "eks-general-1a2b3c", TAG, "managed").await;
    tag(&own, "eks-general-1a2b3c", "eks:nodegroup-name", "general").await;
    let role = asg_role(&own, "eks-general-1a2b3c").await;
    assert_eq!(role, Some(slr_arn(OWN, None)), "the default role, as the emulator gives a new group");
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &selector_config(&[&key], ""));

    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(count(&moto.calls(), "UpdateAutoScalingGroup"), 0, "the group is EKS's: never updated");
    assert_eq!(asg_role(&own, "eks-general-1a2b3c").await, role);
    assert!(
        stderr(&out).contains("uses the default service-linked role"),
        "the default-role warning: {}",
        stderr(&out)
    );
    // The key is ready for the role the group has: the default one.
    let principals: Vec<String> = statements(&key_policy(&own, &key).await)
        .iter()
        .flat_map(|s| s["Principal"]["AWS"].as_array().cloned().unwrap_or_else(|| vec![s["Principal"]["AWS"].clone()]))
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    assert!(principals.contains(&slr_arn(OWN, None)), "{principals:?}");
    let (code, doc) = status_json(&moto, &cfg);
    assert_eq!(code, Some(0), "{doc:#}");
    let b = binding(&doc, "eks-general-1a2b3c").unwrap();
    let uses = condition(b, "AsgUsesRole");
    assert_eq!((uses["status"].as_str(), uses["reason"].as_str()), (Some("True"), Some("ManagedByService")));
    assert!(uses["message"].as_str().unwrap().contains("EKS managed node group general"), "{uses}");
    // And it launches.
    set_desired(&own, "eks-general-1a2b3c", 1).await;
    assert_eq!(activities(&own, "eks-general-1a2b3c").await[0], successful());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selectors_config_is_validated_with_located_errors() {
    let moto = Moto::start();
    let dir = TempDir::new();
    let cfg = dir.write(
        "c.yaml",
        &format!(
            "version: 1\nselectors:\n  - name: a\n    account: \"{OWN}\"\n    matchTags: {{}}\n    allowedKeys: [\"arn:aws:kms:{REGION}:{OWN}:key/*\"]\n  - name: a\n    account: \"{OWN}\"\n    regions: [{REGION}]\n    matchTags: {{team: 5}}\n"
        ),
    );
    let out = moto.operator(&["validate", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in [
        "selectors[0].regions: is required (or defaults.region)",
        "selectors[0].matchTags: must name at least one tag",
        "selectors[0].allowedKeys[0]: must name one key or alias (no wildcards)",
        "selectors[1].matchTags.team: expected the tag's value as a string",
        "selectors[1].allowedKeys: is required",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    assert_eq!(moto.calls().len(), 0);
}
