//! Offboarding against the emulator: with `prune` on, what this instance wrote for a
//! binding that is gone is removed, and nothing else.

use std::time::Duration;

use crate::common::*;
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

/// Polls the operator's use statement on `key` until it names exactly `want`.
async fn wait_principals(own: &aws_config::SdkConfig, key: &str, want: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = owned_principals(&key_policy(own, key).await, "AsgCmkOperatorUse");
        if now == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{key}: {now:?}, want {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_weighs_a_whole_edit_in_bindings_against_the_guard() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (k1, k2) = (create_key(&own, None).await, create_key(&own, None).await);
    create_asgs(&own, &["a", "b", "c", "d", "e", "f"]).await;
    let dir = TempDir::new();
    let prune = |bindings: &[(&str, &str, Option<&str>)], extra: &str| {
        with(&config(bindings), &format!("defaults:\n  prune: true\n{extra}"))
    };
    let (k1s, k2s) = (k1.as_str(), k2.as_str());
    // a, b and c share one role.
    let [a, b, c, d, e, f] = [
        ("a", k1s, Some("S")),
        ("b", k1s, Some("S")),
        ("c", k2s, Some("S")),
        ("d", k2s, Some("D")),
        ("e", k1s, Some("E")),
        ("f", k2s, Some("F")),
    ];
    let path = dir.write("config.yaml", &prune(&[a, b, c, d, e, f], ""));
    let mut daemon = Daemon::start(&moto, &path, "10m");
    daemon.wait_ready(std::time::Duration::from_secs(30));
    let role = |s: &str| slr_arn(OWN, Some(s));

    // One binding of six removed: its key is pruned at once, without waiting for a resync.
    dir.write("config.yaml", &prune(&[a, b, c, e, f], ""));
    wait_principals(&own, &k2, &[role("F"), role("S")]).await;

    // Three of the five removed, over both keys: the role they share leaves each key, two
    // accesses, no more than the two bindings the config keeps, which a pass's guard lets
    // through. The edit as a whole removes more than half of the bindings, and is held.
    dir.write("config.yaml", &prune(&[e, f], ""));
    let held = daemon.wait_log(|v| v["message"] == "prune held", std::time::Duration::from_secs(10));
    assert!(held["reason"].as_str().unwrap().contains("removes 3 of its 5 bindings"), "{held}");
    // Both keys' passes end holding their prunes.
    let after_hold = |d: &Daemon| -> (u64, usize) {
        let logs = d.logs();
        let at = logs.iter().position(|v| v["message"] == "prune held").unwrap();
        let keys = logs[at..].iter().filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("pass finished")));
        let held = logs[at + 1..].iter().filter(|v| v["message"] == "prune held").count();
        (keys.map(|v| v["keys"].as_u64().unwrap()).sum(), held)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while after_hold(&daemon).0 < 2 {
        assert!(std::time::Instant::now() < deadline, "passes over both keys: {:?}", daemon.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(after_hold(&daemon).1 >= 1, "a pass says it holds its prune");
    assert_eq!(owned_principals(&key_policy(&own, &k1).await, "AsgCmkOperatorUse"), [role("E"), role("S")]);
    assert_eq!(owned_principals(&key_policy(&own, &k2).await, "AsgCmkOperatorUse"), [role("F"), role("S")]);
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("asg_cmk_operator_prunes_held_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Confirmed in the config: every key is looked at again, and both are pruned.
    dir.write("config.yaml", &prune(&[e, f], "  allowMassPrune: true\n"));
    wait_principals(&own, &k1, &[role("E")]).await;
    wait_principals(&own, &k2, &[role("F")]).await;
    daemon.terminate(std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_prunes_a_key_whose_last_binding_left() {
    let CrossAccount { moto, own, other, key, dir, cfg: _ } = one_asg_on_other_key(Some("Api")).await;
    let mine = create_key(&own, None).await;
    create_asgs(&own, &["web"]).await;
    let both = [("web", mine.as_str(), Some("Web")), ("api", key.as_str(), Some("Api"))];
    let path = dir.write("config.yaml", &with(&config(&both), "defaults:\n  prune: true\n"));
    let mut d = Daemon::start(&moto, &path, "10m");
    d.wait_ready(std::time::Duration::from_secs(30));
    let before = key_policy(&other, &key).await;
    assert_eq!(owned_principals(&before, "AsgCmkOperatorUse"), [format!("arn:aws:iam::{OWN}:root")]);
    assert_eq!(grants(&other, &key).await.len(), 1);

    // The other account's key is named by no binding now: the daemon saw it leave, and
    // prunes it once, the account root from the owner's policy and the grant.
    dir.write("config.yaml", &with(&config(&both[..1]), "defaults:\n  prune: true\n"));
    d.wait_log(
        |v| v["message"].as_str().is_some_and(|m| m.starts_with("nothing this instance wrote is left")),
        std::time::Duration::from_secs(30),
    );
    let after = key_policy(&other, &key).await;
    assert!(
        after["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["Sid"].as_str().unwrap_or("").starts_with("AsgCmkOperator")),
        "the operator's statements, left empty, are deleted: {after}"
    );
    let foreign = |p: &Value| -> Vec<Value> {
        let all = p["Statement"].as_array().unwrap().iter();
        all.filter(|s| !s["Sid"].as_str().unwrap_or("").starts_with("AsgCmkOperator")).cloned().collect()
    };
    assert!(!foreign(&before).is_empty());
    assert_eq!(foreign(&after), foreign(&before), "the owner's own statements are unchanged");
    assert!(grants(&other, &key).await.is_empty());
    assert_eq!(owned_principals(&key_policy(&own, &mine).await, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Web"))]);
    let logged = |action: &str| d.logs().iter().any(|v| v["action"] == action && v["message"] == "applied change");
    assert!(logged("PutKeyPolicy") && logged("RetireGrant"), "both prunes are logged as writes");
    d.terminate(std::time::Duration::from_secs(10));
}

/// Groups web and api onboarded on one key of the operator's account, and a config that
/// removes api with pruning on.
struct TwoOnOneKey {
    moto: Moto,
    own: aws_config::SdkConfig,
    key: String,
    _dir: TempDir,
    pruning: String,
}

async fn two_on_one_key() -> TwoOnOneKey {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let both = dir.write("both.yaml", &config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]));
    assert!(moto.operator(&["apply", "--config", &both]).status.success());
    let pruning = dir.write("prune.yaml", &with(&config(&[("web", &key, Some("Web"))]), "defaults:\n  prune: true\n"));
    TwoOnOneKey { moto, own, key, _dir: dir, pruning }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_that_keeps_being_throttled_is_reported_not_done_and_done_later() {
    let TwoOnOneKey { moto, own, key, _dir, pruning } = two_on_one_key().await;

    // Every PutKeyPolicy is throttled: the prune, a write for no binding, is not done, and
    // apply says so and fails rather than report the key converged.
    let proxy = FaultProxy::start(&moto, &["--quota", "PutKeyPolicy=1:0"]);
    let out = operator_command(&proxy.url, &["apply", "--config", &pruning, "--max-passes", "2"]).output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("1 key not pruned:") && text.contains(&key), "{text}");
    assert!(proxy.stats()["quota_throttled"].as_u64().unwrap() >= 2, "tried again: {}", proxy.stats());
    let policy = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Api")), slr_arn(OWN, Some("Web"))]);

    // Once AWS lets it through, it is done.
    let out = moto.operator(&["apply", "--config", &pruning]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(owned_principals(&key_policy(&own, &key).await, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Web"))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_backs_off_and_retries_a_throttled_prune() {
    let TwoOnOneKey { moto, own, key, _dir, pruning: path } = two_on_one_key().await;

    // Every PutKeyPolicy is throttled: the daemon says the prune is not done, and tries
    // again after a backoff rather than count the key converged.
    let proxy = FaultProxy::start(&moto, &["--quota", "PutKeyPolicy=1:0"]);
    let d = Daemon::start_with(operator_command(&proxy.url, &[]), &path, "10m");
    let not_done = |d: &Daemon| d.logs().into_iter().filter(|v| v["message"] == "prune not done").collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while not_done(&d).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", not_done(&d));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let first = &not_done(&d)[0];
    assert_eq!(first["key"], key.as_str());
    assert!(first["retry_in"].as_str().is_some_and(|r| !r.is_empty()), "{first}");
    let policy = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [slr_arn(OWN, Some("Api")), slr_arn(OWN, Some("Web"))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_still_launches_with_the_key_keeps_its_access_until_it_is_deleted() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let template = launch_template(&own, "web-lt", None, Some(&key)).await;
    group_on_template(&own, "web", &template, 0, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let both = dir.write("both.yaml", &config(&[("web", &key, Some("Web")), ("api", &key, Some("Api"))]));
    assert!(moto.operator(&["apply", "--config", &both]).status.success());
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, Some("Web"))));

    // web's binding goes, with prune on (and mass pruning allowed), while web still
    // launches with the key on the role the operator gave it: its access stays, named.
    let pruning = dir.write("prune.yaml", &with(&config(&[("api", &key, Some("Api"))]), "defaults:\n  prune: true\n"));
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &pruning, "--allow-mass-prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "nothing pruned");
    let policy = key_policy(&own, &key).await;
    assert!(owned_principals(&policy, "AsgCmkOperatorUse").contains(&slr_arn(OWN, Some("Web"))), "{policy}");
    let said = stdout(&out);
    assert!(said.contains("Prune held") && said.contains(&format!("{OWN}/us-west-2/web")), "{said}");
    assert!(stderr(&out).contains("prune held"), "the log says so too: {}", stderr(&out));
    let plan = moto.operator(&["plan", "--config", &pruning, "--output", "json"]);
    let plan: Value = serde_json::from_str(&stdout(&plan)).unwrap();
    let spared = &plan["prune"]["spared"][0];
    assert_eq!(spared["groups"][0]["asg"], format!("{OWN}/us-west-2/web"), "{plan}");
    assert_eq!(spared["groups"][0]["role"], slr_arn(OWN, Some("Web")), "{plan}");
    assert_eq!(spared["principal"], slr_arn(OWN, Some("Web")), "{plan}");
    let status = stdout(&moto.operator(&["status", "--config", &pruning]));
    assert!(status.contains("Prune held:") && status.contains(&format!("{OWN}/us-west-2/web")), "{status}");
    let status = moto.operator(&["status", "--config", &pruning, "--output", "json"]);
    let status: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert!(status["prunesHeld"][0].as_str().unwrap().contains(&format!("{OWN}/us-west-2/web")), "{status}");

    // The daemon holds it too, and /status names it.
    let d = Daemon::start(&moto, &pruning, "2s");
    d.wait_ready(Duration::from_secs(30));
    let status: Value = serde_json::from_str(&d.get("/status").1).unwrap();
    let held = status["prunesHeld"].as_array().unwrap_or_else(|| panic!("{status}"));
    assert!(held.len() == 1 && held[0].as_str().unwrap().contains(&format!("{OWN}/us-west-2/web")), "{status}");

    // Once the group is gone, so is its access, at the next pass; the other binding's stays.
    let asc = aws_sdk_autoscaling::Client::new(&own);
    asc.delete_auto_scaling_group().auto_scaling_group_name("web").force_delete(true).send().await.unwrap();
    eventually("the access pruned", Duration::from_secs(20), || async {
        owned_principals(&key_policy(&own, &key).await, "AsgCmkOperatorUse") == [slr_arn(OWN, Some("Api"))]
    })
    .await;
    eventually("the hold gone from /status", Duration::from_secs(10), || async {
        serde_json::from_str::<Value>(&d.get("/status").1).unwrap().get("prunesHeld").is_none()
    })
    .await;
    drop(d);
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &pruning]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "nothing left to prune");
}
