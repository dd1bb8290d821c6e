//! `iam-policy`: the generated policies parse as IAM managed policies, and they grant every
//! action the operator actually calls while converging a fleet.

use std::collections::BTreeSet;

use crate::common::*;
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

/// IAM's count: characters without white space.
fn iam_size(doc: &Value) -> usize {
    doc.to_string().chars().filter(|c| !c.is_whitespace()).count()
}

/// 1,000 groups over 10 keys (5 of OWN, 5 of OTHER), named as node groups and pipelines
/// name them.
fn thousand_groups() -> String {
    let mut text = "version: 1\nbindings:\n".to_owned();
    for i in 0..1000 {
        let owner = if i % 10 < 5 { OWN } else { OTHER };
        let asg = if i % 2 == 0 { format!("eks-nodes-{i:04}-a1b2c3d4") } else { format!("pipeline-run-{i:04}") };
        text.push_str(&format!(
            "  - {{asg: {asg}, account: \"{OWN}\", key: \"arn:aws:kms:{REGION}:{owner}:key/{:08}-1111-1111-1111-111111111111\", serviceLinkedRoleSuffix: S{}}}\n",
            i % 10,
            i % 7
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_groups_over_ten_keys_give_documents_iam_accepts() {
    let moto = Moto::start();
    let iam = aws_sdk_iam::Client::new(&moto.own().await);
    let dir = TempDir::new();
    let cfg = dir.write("fleet.yaml", &thousand_groups());

    // Named by the config alone: prefixes, said on stderr, in as few documents as fit.
    let out = moto.operator(&["iam-policy", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("note: the groups are too many to name one by one"), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let documents = match printed {
        Value::Array(docs) => docs,
        one => vec![one],
    };
    assert!((1..=10).contains(&documents.len()), "{}", documents.len());
    for (i, doc) in documents.iter().enumerate() {
        assert!(iam_size(doc) <= 6144, "document {i}: {} characters", iam_size(doc));
        let made = iam.create_policy().policy_name(format!("asg-cmk-operator-{i}")).policy_document(doc.to_string());
        made.send().await.unwrap_or_else(|e| panic!("document {i}: {e:?}"));
    }

    // Scoped by a tag: one document, and every file of --out-dir is accepted by IAM.
    let out_dir = dir.0.join("iam");
    let provider = format!("arn:aws:iam::{OWN}:oidc-provider/oidc.eks.{REGION}.amazonaws.com/id/ABCDEF");
    let operator_role = format!("arn:aws:iam::{OWN}:role/asg-cmk-operator");
    let args = [
        "iam-policy",
        "--config",
        &cfg,
        "--group-tag",
        "asg-cmk-operator=managed",
        "--oidc-provider",
        &provider,
        "--operator-role",
        &operator_role,
        "--out-dir",
        out_dir.to_str().unwrap(),
    ];
    let out = moto.operator(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(
        files,
        ["permissions.json", "trust-ecs.json", "trust-irsa.json", "trust-key-account.json", "trust-pod-identity.json"]
    );
    let read = |f: &str| serde_json::from_str::<Value>(&std::fs::read_to_string(out_dir.join(f)).unwrap()).unwrap();
    let permissions = read("permissions.json");
    assert!(iam_size(&permissions) <= 6144);
    assert!(permissions.to_string().contains("autoscaling:ResourceTag/asg-cmk-operator"));
    iam.create_policy().policy_name("scoped").policy_document(permissions.to_string()).send().await.unwrap();
    for trust in ["trust-ecs.json", "trust-irsa.json", "trust-key-account.json", "trust-pod-identity.json"] {
        let role = iam.create_role().role_name(trust.trim_end_matches(".json"));
        role.assume_role_policy_document(read(trust).to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{trust}: {e:?}"));
    }
    // One trust policy alone, and its missing input named.
    let irsa = moto.operator(&["iam-policy", "--config", &cfg, "--trust", "irsa", "--oidc-provider", &provider]);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&irsa)).unwrap(), read("trust-irsa.json"));
    let missing = moto.operator(&["iam-policy", "--config", &cfg, "--trust", "irsa"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("--trust irsa needs --oidc-provider"), "{}", stderr(&missing));
}
