//! Offboarding against the emulator: with `prune` on, what this instance wrote for a
//! binding that is gone is removed, and nothing else.

mod common;

use common::*;
use serde_json::{json, Value};

fn policy_with(owner: &str, extra: &[Value]) -> String {
    let mut statements = vec![json!({"Sid": "Admins", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{owner}:root")}, "Action": "kms:*", "Resource": "*"})];
    statements.extend(extra.iter().cloned());
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn foreign() -> Value {
    json!({"Sid": "AppReads", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
           "Action": "kms:Decrypt", "Resource": "*"})
}

fn with(cfg: &str, head: &str) -> String {
    cfg.replacen("version: 1\n", &format!("version: 1\n{head}"), 1)
}

fn statement<'a>(policy: &'a Value, sid: &str) -> Option<&'a Value> {
    policy["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_group_leaves_the_statements_and_the_rest_stays() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, Some(&policy_with(OWN, &[foreign()]))).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let both = dir.write("both.yaml", &config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]));
    assert!(moto.operator(&["apply", "--config", &both]).status.success());
    let before = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&before, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Api")), slr_arn(OWN, Some("Web"))]);

    // Without prune, removing a binding leaves everything as it is.
    let one = config(&[("web", &key, Some("Web"))]);
    let plain = dir.write("plain.yaml", &one);
    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &plain]).status.success());
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());

    // `plan --prune` shows it first, as a `-` line.
    let out = moto.operator(&["plan", "--config", &plain, "--prune"]);
    let text = stdout(&out);
    assert!(text.contains("  - PutKeyPolicy"), "{text}");
    assert!(text.contains(&format!("      - {}", slr_arn(OWN, Some("Api")))), "{text}");

    let pruning = dir.write("prune.yaml", &with(&one, "defaults:\n  prune: true\n"));
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &pruning]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), ["PutKeyPolicy"]);
    let after = key_policy(&own, &key).await;
    for sid in ["AsgCmkOperatorUse", "AsgCmkOperatorAttachment"] {
        assert_eq!(owned_principals(&after, sid), [slr_arn(OWN, Some("Web"))], "{after}");
    }
    assert_eq!(statement(&after, "Admins"), statement(&before, "Admins"));
    assert_eq!(statement(&after, "AppReads"), statement(&before, "AppReads"));
    assert_eq!(asg_role(&own, "api").await, Some(slr_arn(OWN, Some("Api"))), "the group's role is not reverted");
    assert!(stderr(&out).contains("applied change"), "{}", stderr(&out));

    // A second pass writes nothing.
    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &pruning]).status.success());
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_group_on_another_accounts_key_has_its_grant_retired() {
    let CrossAccount { moto, own: _own, other, key, dir, cfg: _ } = one_asg_on_other_key(Some("Api")).await;
    create_asgs(&moto.own().await, &["web"]).await;
    let both = dir.write("both.yaml", &config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]));
    let out = moto.operator(&["apply", "--config", &both]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = key_policy(&other, &key).await;
    let g = grants(&other, &key).await;
    assert_eq!(g.len(), 2, "{g:?}");

    let pruning = dir.write("prune.yaml", &with(&config(&[("web", &key, Some("Web"))]), "defaults:\n  prune: true\n"));
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &pruning]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), ["RetireGrant"], "the account root stays: web needs it");
    let g = grants(&other, &key).await;
    assert_eq!(g.iter().map(|g| g.grantee.clone()).collect::<Vec<_>>(), [slr_arn(OWN, Some("Web"))]);
    assert_eq!(key_policy(&other, &key).await, before);

    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &pruning]).status.success());
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_key_prune_only_their_own() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    // Instance default binds web; instance team-b binds web and api.
    let a = dir.write("a.yaml", &config(&[("web", &key, Some("Web"))]));
    let b = dir.write(
        "b.yaml",
        &with(&config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]), "instance: team-b\n"),
    );
    assert!(moto.operator(&["apply", "--config", &a]).status.success());
    // Web is allowed already (by meaning): team-b writes only api, in statements of its own.
    assert!(moto.operator(&["apply", "--config", &b]).status.success());
    let p = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&p, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Web"))]);
    assert_eq!(owned_principals(&p, "AsgCmkOperatorUse-team-b"), [slr_arn(OWN, Some("Api"))]);

    // The default instance, pruning, leaves team-b's api alone.
    let a_prune = dir.write("ap.yaml", &with(&config(&[("web", &key, Some("Web"))]), "defaults:\n  prune: true\n"));
    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &a_prune]).status.success());
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());

    // team-b drops api and prunes: its statements go, the default instance's stay.
    let b_prune = dir.write(
        "bp.yaml",
        &with(&config(&[("web", &key, Some("Web"))]), "instance: team-b\ndefaults:\n  prune: true\n"),
    );
    let out = moto.operator(&["apply", "--config", &b_prune]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = key_policy(&own, &key).await;
    assert!(statement(&after, "AsgCmkOperatorUse-team-b").is_none(), "{after}");
    assert!(statement(&after, "AsgCmkOperatorAttachment-team-b").is_none(), "{after}");
    assert_eq!(statement(&after, "AsgCmkOperatorUse"), statement(&p, "AsgCmkOperatorUse"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_cut_to_no_bindings_prunes_nothing_and_warns() {
    let OneAsg { moto, own, key, dir, cfg } = one_asg_on_own_key(Some("CMK")).await;
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let before = key_policy(&own, &key).await;
    let empty = dir.write("empty.yaml", "version: 1\ndefaults:\n  prune: true\nbindings: []\n");
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &empty]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());
    assert!(stderr(&out).contains("WARN") && stderr(&out).contains("prune held"), "{}", stderr(&out));
    assert_eq!(key_policy(&own, &key).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_removed_while_the_daemon_was_down_is_pruned_when_it_starts() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, Some(&policy_with(OWN, &[foreign()]))).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let both = with(&config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]), "defaults:\n  prune: true\n");
    let path = dir.write("config.yaml", &both);
    let mut d = Daemon::start(&moto, &path, "10m");
    d.wait_ready(std::time::Duration::from_secs(30));
    d.terminate(std::time::Duration::from_secs(10));
    let before = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&before, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Api")), slr_arn(OWN, Some("Web"))]);

    // Edited while no operator runs: nothing remembers api, and the restart still prunes it.
    dir.write("config.yaml", &with(&config(&[("web", &key, Some("Web"))]), "defaults:\n  prune: true\n"));
    let mut d = Daemon::start(&moto, &path, "10m");
    d.wait_ready(std::time::Duration::from_secs(30));
    let after = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&after, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Web"))]);
    assert_eq!(statement(&after, "AppReads"), statement(&before, "AppReads"), "the foreign statement is unchanged");
    let pruned = d.logs().iter().any(|v| v["action"] == "PutKeyPolicy" && v["message"] == "applied change");
    assert!(pruned, "the prune is logged as a write");
    d.terminate(std::time::Duration::from_secs(10));
}
