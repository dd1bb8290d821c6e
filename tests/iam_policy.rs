//! `iam-policy`: the generated policies parse as IAM managed policies, and they grant every
//! action the operator actually calls while converging a fleet.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn generated(moto: &Moto, cfg: &str, account: &str) -> Value {
    let out = moto.operator(&["iam-policy", "--config", cfg, "--account", account]);
    assert!(out.status.success());
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn actions(policy: &Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_parse_in_iam_and_cover_every_call_the_operator_makes() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    let own_key = create_key(&own, None).await;
    let other_key = create_key(&other, None).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &own_key, Some("CMK")), ("api", &other_key, Some("CMK"))]));

    let own_policy = generated(&moto, &cfg, OWN);
    let other_policy = generated(&moto, &cfg, OTHER);
    // The default account is the single ASG account.
    let default = moto.operator(&["iam-policy", "--config", &cfg]);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&default)).unwrap(), own_policy);

    // moto's IAM validates managed policy documents; make sure it rejects a bad one, then
    // that it takes both generated ones.
    let iam = aws_sdk_iam::Client::new(&own);
    let bad = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:GetKeyPolicy","Resource":"not-an-arn"}]}"#;
    assert!(iam.create_policy().policy_name("bad").policy_document(bad).send().await.is_err());
    for (name, conf, doc) in [("own", &own, &own_policy), ("other", &other, &other_policy)] {
        let created = aws_sdk_iam::Client::new(conf)
            .create_policy()
            .policy_name(format!("asg-cmk-operator-{name}"))
            .policy_document(doc.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(created.policy().unwrap().arn().unwrap().contains(":policy/asg-cmk-operator-"));
    }

    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let calls = moto.calls_by_account();
    assert!(calls.len() >= 10, "{calls:?}");
    let allowed = |account: &str| if account == OWN { actions(&own_policy) } else { actions(&other_policy) };
    for (account, service, action) in &calls {
        if (service.as_str(), action.as_str()) == ("sts", "GetCallerIdentity") {
            continue; // needs no permission
        }
        let needed = format!("{service}:{action}");
        assert!(allowed(account).contains(&needed), "{needed} in account {account} is not in its policy");
    }
    // Setting ServiceLinkedRoleARN also needs iam:PassRole on that role.
    assert!(calls.iter().any(|(_, _, a)| a == "UpdateAutoScalingGroup"));
    assert!(actions(&own_policy).contains("iam:PassRole"));
}

#[tokio::test(flavor = "multi_thread")]
async fn several_asg_accounts_need_an_explicit_account() {
    let moto = Moto::start();
    let dir = TempDir::new();
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-1111-1111-1111-111111111111";
    let cfg = dir.write(
        "c.yaml",
        &format!("version: 1\nbindings:\n  - {{asg: a, account: \"{OWN}\", key: {key}}}\n  - {{asg: b, account: \"{OTHER}\", key: {key}}}\n"),
    );
    let out = moto.operator(&["iam-policy", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("choose one with --account"), "{}", stderr(&out));
    let bad = moto.operator(&["iam-policy", "--config", &cfg, "--account", "12"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(moto.calls().len(), 0, "iam-policy makes no AWS call");
}
