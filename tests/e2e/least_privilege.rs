//! The generated IAM policies, checked both ways against a multi-account fleet: the
//! emulator authorizes every call the operator makes against the policy of the account
//! that makes it (tests/moto/identity.py, from each call's actual parameters), and every
//! action each policy allows is used by some call.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use crate::common::*;
use serde_json::{json, Value};

const OPERATOR_USER: &str = "asg-cmk-operator";

/// The operator's own identity in OWN: an IAM user with an access key (moto maps the key
/// to its account), so that its calls can be told from the test's.
pub(crate) async fn operator_user(own: &aws_config::SdkConfig) -> (String, String, String) {
    let iam = aws_sdk_iam::Client::new(own);
    let user = iam.create_user().user_name(OPERATOR_USER).send().await.unwrap();
    let arn = user.user().unwrap().arn().to_owned();
    let key = iam.create_access_key().user_name(OPERATOR_USER).send().await.unwrap();
    let key = key.access_key().unwrap();
    (arn, key.access_key_id().to_owned(), key.secret_access_key().to_owned())
}

pub(crate) fn run_as(moto: &Moto, creds: &(String, String, String), args: &[&str]) -> Output {
    moto.operator_as(&creds.1, &creds.2, args)
}

pub(crate) fn policy_of(moto: &Moto, cfg: &str, account: &str) -> Value {
    let out = moto.operator(&["iam-policy", "--config", cfg, "--account", account]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

pub(crate) fn decisions(moto: &Moto) -> Vec<Value> {
    moto.hook("GET", "/_launcher/authorizations", Value::Null)["decisions"].as_array().unwrap().clone()
}

/// A group on a launch template whose AMI's root snapshot is encrypted with `key`.
async fn group_on_encrypted_ami(conf: &aws_config::SdkConfig, name: &str, key: &str) {
    let snapshot = encrypted_snapshot(conf, key).await;
    let ami = image_from_snapshot(conf, &format!("{name}-root"), &snapshot).await;
    let lt = launch_template(conf, name, Some(&ami), None).await;
    group_on_template(conf, name, &lt, 0, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_is_allowed_by_the_generated_policy_and_every_allowed_action_is_used() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;

    // OWN: web (case 1, on an AMI encrypted with k1), api (case 1, its key named by an
    // alias, on a launch configuration), batch (case 2, OTHER's key k3).
    // OTHER: jobs (case 1 in OTHER, AMI encrypted with k4) and etl (k4, launch configuration).
    let k1 = create_key(&own, None).await;
    let k2 = create_key(&own, None).await;
    let kms = aws_sdk_kms::Client::new(&own);
    kms.create_alias().alias_name("alias/ebs-data").target_key_id(&k2).send().await.unwrap();
    let k2_alias = format!("arn:aws:kms:{REGION}:{OWN}:alias/ebs-data");
    let k3 = create_key(&other, None).await;
    let k4 = create_key(&other, None).await;
    group_on_encrypted_ami(&own, "web", &k1).await;
    create_asgs(&own, &["api", "batch"]).await;
    group_on_encrypted_ami(&other, "jobs", &k4).await;
    create_asgs(&other, &["etl"]).await;

    let dir = TempDir::new();
    let mut text = format!("version: 1\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n");
    for (asg, account, key) in
        [("web", OWN, &k1), ("api", OWN, &k2_alias), ("batch", OWN, &k3), ("jobs", OTHER, &k4), ("etl", OTHER, &k4)]
    {
        text.push_str(&format!(
            "  - {{asg: {asg}, account: \"{account}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n"
        ));
    }
    let cfg = dir.write("fleet.yaml", &text);

    let policies: BTreeMap<&str, Value> =
        [(OWN, policy_of(&moto, &cfg, OWN)), (OTHER, policy_of(&moto, &cfg, OTHER))].into();
    let operator = operator_user(&own).await;
    let in_other =
        format!("arn:aws:sts::{OTHER}:assumed-role/{}/asg-cmk-operator", OTHER_ROLE.rsplit('/').next().unwrap());
    let callers = [(operator.0.clone(), OWN), (in_other.clone(), OTHER)];
    for (caller, account) in &callers {
        moto.hook("POST", "/_launcher/identity-policies", json!({"caller": caller, "policy": policies[account]}));
    }

    // Converge; then give the case 2 role a short grant under the operator's name, which
    // the operator must retire; then read everything back the ways a user does.
    assert!(run_as(&moto, &operator, &["apply", "--config", &cfg]).status.success());
    let ours = grants(&other, &k3).await;
    assert_eq!(ours.len(), 1, "{ours:?}");
    kms_short_grant(&own, &k3, &ours[0].grantee, ours[0].name.as_deref().unwrap()).await;
    assert_eq!(grants(&other, &k3).await.len(), 2);
    assert!(run_as(&moto, &operator, &["apply", "--config", &cfg]).status.success());
    assert_eq!(grants(&other, &k3).await.len(), 1, "the short grant was retired");
    let status = run_as(&moto, &operator, &["status", "--config", &cfg]);
    assert_eq!(status.status.code(), Some(0), "every binding is ready");
    let discover = run_as(&moto, &operator, &["discover", "--region", REGION]);
    assert!(discover.status.success());
    assert!(stdout(&discover).contains(&k1), "{}", stdout(&discover));
    let plan = run_as(&moto, &operator, &["plan", "--config", &cfg, "--output", "json"]);
    let plan: Value = serde_json::from_str(&stdout(&plan)).unwrap();
    assert_eq!(plan["actions"], json!([]));
    // Every key's policy is the default one, which delegates to its account: the IAM
    // policy is what lets the operator manage each.
    let access: BTreeMap<&str, &str> = plan["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap(), k["access"].as_str().unwrap()))
        .collect();
    assert_eq!(
        access,
        [(k1.as_str(), "account"), (k2.as_str(), "account"), (k3.as_str(), "account"), (k4.as_str(), "account")].into()
    );

    let seen = both_ways(&moto, &callers, &policies);
    let conditioned = seen.iter().find(|d| d["action"] == "kms:CreateGrant").expect("a CreateGrant was checked");
    assert_eq!(conditioned["context"]["kms:granteeprincipal"], json!([slr_arn(OWN, Some("CMK"))]));
}

/// Both ways: every call of each caller was authorized and allowed by its account's
/// policy, and every action of every statement allowed some call of that account. The
/// decisions.
fn both_ways(moto: &Moto, callers: &[(String, &str)], policies: &BTreeMap<&str, Value>) -> Vec<Value> {
    let seen = decisions(moto);
    let refused: Vec<&Value> = seen.iter().filter(|d| d["allowed"] != true).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    for (caller, _) in callers {
        assert!(seen.iter().any(|d| d["caller"] == *caller.as_str()), "no call of {caller} was checked");
    }
    for (caller, account) in callers {
        let statements = policies[account]["Statement"].as_array().unwrap();
        let mut used: BTreeSet<(usize, String)> = BTreeSet::new();
        for d in seen.iter().filter(|d| d["caller"] == *caller.as_str()) {
            for i in d["statements"].as_array().unwrap() {
                used.insert((i.as_u64().unwrap() as usize, d["action"].as_str().unwrap().to_lowercase()));
            }
        }
        for (i, s) in statements.iter().enumerate() {
            for a in s["Action"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(
                    used.contains(&(i, a.to_lowercase())),
                    "{account}: {a} in statement {} allowed no call of the operator",
                    s["Sid"]
                );
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn reencryption_stays_within_the_generated_policy_and_uses_all_of_it() {
    // OWN's groups on an image OTHER shared, whose snapshot OTHER's key encrypts: web on a
    // launch template (its own, at $Default), batch on another at version 1, api on a
    // launch configuration, all with an instance profile, re-encrypted with OWN's key.
    // OTHER has no `accounts` entry.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
         "Action": ["kms:Decrypt", "kms:ReEncrypt*", "kms:DescribeKey", "kms:CreateGrant"], "Resource": "*"}]});
    let foreign = create_key(&other, Some(&policy.to_string())).await;
    let snapshot = encrypted_snapshot(&other, &foreign).await;
    let image = image_from_snapshot(&other, "golden", &snapshot).await;
    share_image(&other, &image, OWN).await;
    share_snapshot(&other, &snapshot, OWN).await;
    let own_key = create_key(&own, None).await;
    let iam = aws_sdk_iam::Client::new(&own);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role().role_name("app").assume_role_policy_document(trust).send().await.unwrap();
    iam.create_instance_profile().instance_profile_name("app").send().await.unwrap();
    iam.add_role_to_instance_profile().instance_profile_name("app").role_name("app").send().await.unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&own);
    // The templates tag what they launch: pointing a group at one checks ec2:CreateTags.
    let tags = |kind| {
        let tag = aws_sdk_ec2::types::Tag::builder().key("team").value("web").build();
        aws_sdk_ec2::types::LaunchTemplateTagSpecificationRequest::builder().resource_type(kind).tags(tag).build()
    };
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .iam_instance_profile(
            aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name("app").build(),
        )
        .tag_specifications(tags(aws_sdk_ec2::types::ResourceType::Instance))
        .tag_specifications(tags(aws_sdk_ec2::types::ResourceType::Volume))
        .build();
    let lt = ec2.create_launch_template().launch_template_name("web").launch_template_data(data.clone()).send();
    group_on_template(&own, "web", lt.await.unwrap().launch_template().unwrap().launch_template_id().unwrap(), 0, None)
        .await;
    let lt =
        ec2.create_launch_template().launch_template_name("batch").launch_template_data(data).send().await.unwrap();
    let spec = template_spec(lt.launch_template().unwrap().launch_template_id().unwrap(), Some("1"));
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let lc = asc.create_launch_configuration().launch_configuration_name("api-lc").image_id(&image);
    lc.instance_type("t3.micro").iam_instance_profile("app").send().await.unwrap();
    let group = asc.create_auto_scaling_group().auto_scaling_group_name("api").launch_configuration_name("api-lc");
    group.availability_zones("us-west-2a").min_size(0).max_size(1).send().await.unwrap();
    let group = asc.create_auto_scaling_group().auto_scaling_group_name("batch").launch_template(spec);
    group.availability_zones("us-west-2a").min_size(0).max_size(1).send().await.unwrap();

    let dir = TempDir::new();
    let mut text = "version: 1\nbindings:\n".to_owned();
    for asg in ["web", "api", "batch"] {
        text.push_str(&format!(
            "  - {{asg: {asg}, account: \"{OWN}\", key: {foreign}, strategy: reencrypt, reencryptWith: {own_key}, serviceLinkedRoleSuffix: CMK}}\n"
        ));
    }
    let cfg = dir.write("fleet.yaml", &text);
    let policies: BTreeMap<&str, Value> = [(OWN, policy_of(&moto, &cfg, OWN))].into();
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", json!({"caller": operator.0, "policy": policies[OWN]}));

    let first = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert!(stdout(&first).contains("in progress"), "{}", stdout(&first));
    let second = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    let status = run_as(&moto, &operator, &["status", "--config", &cfg]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    let seen = both_ways(&moto, &[(operator.0.clone(), OWN)], &policies);
    let passed: Vec<&Value> = seen.iter().filter(|d| d["action"] == "iam:PassRole").collect();
    assert!(passed.iter().any(|d| d["resource"] == "arn:aws:iam::123456789012:role/app"), "{passed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_key_is_checked_and_granted_within_the_generated_policy() {
    // OWN's group on OTHER's key, and no `accounts`: the operator has no credentials in
    // OTHER, so it checks the owner's policy with a dry run, lists the grants OWN may
    // retire, and makes the grant, all as OWN.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write(
        "c.yaml",
        &format!(
            "version: 1\nbindings:\n  - {{asg: api, account: \"{OWN}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n"
        ),
    );
    let policy = policy_of(&moto, &cfg, OWN);
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", json!({"caller": operator.0, "policy": policy}));

    // Before the owner acts: the binding waits (its IAM half allowed, the key policy not).
    let waiting = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert_eq!(waiting.status.code(), Some(1));
    assert!(stdout(&waiting).contains("awaiting key owner"), "{}", stdout(&waiting));
    assert!(grants(&other, &key).await.is_empty());
    // The owner adds what `handoff` prints; then the operator converges.
    let printed: Value =
        serde_json::from_str(&stdout(&moto.operator(&["handoff", "--config", &cfg, "--output", "json"]))).unwrap();
    let mut kp = key_policy(&other, &key).await;
    for st in printed["owners"][0]["keys"][0]["statements"].as_array().unwrap() {
        kp["Statement"].as_array_mut().unwrap().push(st["statement"].clone());
    }
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(kp.to_string())
        .send()
        .await
        .unwrap();
    assert!(run_as(&moto, &operator, &["apply", "--config", &cfg]).status.success());
    assert_eq!(grants(&other, &key).await.len(), 1);

    let seen = decisions(&moto);
    let refused: Vec<&Value> = seen.iter().filter(|d| d["allowed"] != true).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    // The statements hand-off mode relies on allowed some call each.
    let statements = policy["Statement"].as_array().unwrap();
    for (sid, action) in [
        ("ListGrantsThisAccountMayRetire", "kms:ListRetirableGrants"),
        ("GrantServiceLinkedRolesOtherAccountsKeys", "kms:CreateGrant"),
        ("DescribeKeysGroupsLaunchWith", "kms:DescribeKey"),
    ] {
        let i = statements.iter().position(|s| s["Sid"] == sid).unwrap_or_else(|| panic!("no {sid} in {policy:#}"));
        assert!(
            seen.iter().any(|d| d["action"] == action && d["statements"].as_array().unwrap().contains(&json!(i))),
            "{sid} allowed no {action}"
        );
    }
    let dry_runs = seen.iter().filter(|d| d["action"] == "kms:CreateGrant").count();
    assert!(dry_runs >= 3, "two dry runs and the grant, each within the same conditions: {dry_runs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_refused_by_the_operators_own_policy_is_not_blamed_on_the_key_owner() {
    // The owner's key policy allows OWN, but the operator's IAM policy lacks the grant
    // statement: KMS says an identity-based policy refused, and that gap is the operator's.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    let printed = {
        let cfg = TempDir::new();
        let path =
            cfg.write("c.yaml", &format!("version: 1\nbindings:\n  - {{asg: api, account: \"{OWN}\", key: {key}}}\n"));
        let out = moto.operator(&["handoff", "--config", &path, "--output", "json"]);
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()
    };
    let mut kp = key_policy(&other, &key).await;
    for st in printed["owners"][0]["keys"][0]["statements"].as_array().unwrap() {
        kp["Statement"].as_array_mut().unwrap().push(st["statement"].clone());
    }
    let kms = aws_sdk_kms::Client::new(&other);
    kms.put_key_policy().key_id(&key).policy_name("default").policy(kp.to_string()).send().await.unwrap();
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg =
        dir.write("c.yaml", &format!("version: 1\nbindings:\n  - {{asg: api, account: \"{OWN}\", key: {key}}}\n"));
    let mut policy = policy_of(&moto, &cfg, OWN);
    policy["Statement"].as_array_mut().unwrap().retain(|s| s["Sid"] != "GrantServiceLinkedRolesOtherAccountsKeys");
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", json!({"caller": operator.0, "policy": policy}));

    let out = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("awaiting key owner"), "the owner has done its part: {text}");
    assert!(text.contains("the operator's own IAM policy") && text.contains("iam-policy"), "{text}");
    assert!(grants(&other, &key).await.is_empty());
}

/// A grant for `grantee` on `key` named `name` that lacks most operations, made by OWN
/// (the test's own credentials, which the emulator does not check).
async fn kms_short_grant(own: &aws_config::SdkConfig, key: &str, grantee: &str, name: &str) {
    aws_sdk_kms::Client::new(own)
        .create_grant()
        .key_id(key)
        .grantee_principal(grantee)
        .name(name)
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_cannot_grant_the_key_to_anyone_else_nor_call_what_its_policy_lacks() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    let k3 = create_key(&other, None).await;
    create_asgs(&own, &["batch"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("batch", &k3, Some("CMK"))]));
    let policy = policy_of(&moto, &cfg, OWN);
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", json!({"caller": operator.0, "policy": policy}));
    // The owner's key policy lets OWN create grants (what the operator would write).
    let owner_policy = key_policy_with(
        OTHER,
        vec![json!({"Sid": "Own", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
                    "Action": "kms:*", "Resource": "*"})],
    );
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&k3)
        .policy_name("default")
        .policy(owner_policy)
        .send()
        .await
        .unwrap();
    let (role_arn, _) = create_slr(&own, "CMK").await;

    let creds = aws_credential_types::Credentials::new(&operator.1, &operator.2, None, None, "operator");
    let as_operator = own
        .to_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .build();
    let kms = aws_sdk_kms::Client::new(&as_operator);
    let grant = |grantee: &str, ops: &[&str], retiring: Option<String>| {
        kms.create_grant()
            .key_id(&k3)
            .grantee_principal(grantee)
            .set_retiring_principal(retiring)
            .set_operations(Some(ops.iter().map(|o| aws_sdk_kms::types::GrantOperation::from(*o)).collect()))
            .send()
    };
    let eight = [
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "DescribeKey",
        "CreateGrant",
    ];
    let root = Some(format!("arn:aws:iam::{OWN}:root"));
    let denied =
        |r: Result<_, aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::create_grant::CreateGrantError>>| {
            let e = r.expect_err("must be refused");
            assert_eq!(aws_sdk_kms::error::ProvideErrorMetadata::code(&e), Some("AccessDeniedException"), "{e:?}");
        };
    // Another grantee, an extra operation, no retiring principal: each refused.
    denied(grant(&format!("arn:aws:iam::{OWN}:user/{OPERATOR_USER}"), &eight, root.clone()).await);
    let mut nine = eight.to_vec();
    nine.push("RetireGrant");
    denied(grant(&role_arn, &nine, root.clone()).await);
    denied(grant(&role_arn, &eight, None).await);
    // What the operator makes is allowed.
    grant(&role_arn, &eight, root).await.expect("the operator's own grant is allowed");
    // An action the policy does not hold.
    let e = kms.schedule_key_deletion().key_id(&k3).send().await.expect_err("not in the policy");
    assert_eq!(aws_sdk_kms::error::ProvideErrorMetadata::code(&e), Some("AccessDeniedException"));
    assert!(format!("{e:?}").contains("kms:ScheduleKeyDeletion"), "{e:?}");
}

/// Every secret the emulator handed out: the operator user's secret key, and each
/// assumed-role session's secret key and token.
fn secrets(moto: &Moto, operator: &(String, String, String)) -> Vec<String> {
    let sessions = moto.hook("GET", "/_launcher/sessions", Value::Null)["sessions"].as_array().unwrap().clone();
    assert!(!sessions.is_empty(), "the operator assumed a role");
    let mut all = vec![operator.2.clone()];
    for s in &sessions {
        all.push(s["secret_access_key"].as_str().unwrap().to_owned());
        all.push(s["session_token"].as_str().unwrap().to_owned());
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_no_credentials_at_any_level_and_no_key_policy_at_info() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    // The own key's policy names a third party; the operator adds to it (case 1).
    let (auditor, _) = create_role(&own, "third-party-auditor").await;
    let own_key = create_key(
        &own,
        Some(&key_policy_with(
            OWN,
            vec![json!({"Sid": "ThirdPartyAuditorReadOnly", "Effect": "Allow",
            "Principal": {"AWS": auditor}, "Action": "kms:DescribeKey", "Resource": "*"})],
        )),
    )
    .await;
    let other_key = create_key(&other, None).await;
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &own_key, Some("CMK")), ("api", &other_key, Some("CMK"))]));
    let operator = operator_user(&own).await;

    // info: a first apply writes the key policy (and reads it twice).
    let info = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert!(info.status.success());
    let logs = format!("{}{}", stdout(&info), stderr(&info));
    assert!(logs.contains("PutKeyPolicy"), "the run wrote a key policy: {logs}");
    for needle in ["ThirdPartyAuditorReadOnly", auditor.as_str(), "\"Statement\""] {
        assert!(!logs.contains(needle), "a key policy is logged at info ({needle})");
    }

    // trace, everything: a run that changes something again (a role to set back).
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let default_role = slr_arn(OWN, None);
    create_slr_default(&own).await;
    asc.update_auto_scaling_group()
        .auto_scaling_group_name("web")
        .service_linked_role_arn(&default_role)
        .send()
        .await
        .unwrap();
    let mut cmd = operator_command(&moto.url, &["apply", "--config", &cfg]);
    cmd.env("AWS_ACCESS_KEY_ID", &operator.1).env("AWS_SECRET_ACCESS_KEY", &operator.2).env("RUST_LOG", "trace");
    let trace = cmd.output().unwrap();
    assert!(trace.status.success(), "{}", String::from_utf8_lossy(&trace.stderr));
    let logs = format!("{}{}", String::from_utf8_lossy(&trace.stdout), String::from_utf8_lossy(&trace.stderr));
    assert!(logs.len() > 100_000 && logs.contains("TRACE"), "a trace-level run logs a lot ({} bytes)", logs.len());
    assert!(logs.contains("UpdateAutoScalingGroup"));
    for secret in secrets(&moto, &operator) {
        assert!(!logs.contains(&secret), "a secret of length {} is in the trace logs", secret.len());
    }
}

async fn create_slr_default(conf: &aws_config::SdkConfig) {
    let iam = aws_sdk_iam::Client::new(conf);
    let _ = iam.create_service_linked_role().aws_service_name("autoscaling.amazonaws.com").send().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_a_removed_case_2_group_stays_within_the_policies_of_the_edited_config() {
    // OWN's key k, used by web (OWN, case 1) and by etl (OTHER, case 2: OTHER makes its
    // grant); jobs in OTHER on OTHER's own key keeps OTHER in the config. Then etl leaves
    // the config, with prune on: the policies are those of the edited config, as a user
    // who regenerates them after each edit has.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let k = create_key(&own, None).await;
    let k4 = create_key(&other, None).await;
    create_asgs(&own, &["web"]).await;
    create_asgs(&other, &["etl", "jobs"]).await;
    let dir = TempDir::new();
    let head = format!(
        "version: 1\ndefaults:\n  prune: true\n  allowMassPrune: true\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n"
    );
    let line = |asg: &str, account: &str, key: &str| {
        format!("  - {{asg: {asg}, account: \"{account}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n")
    };
    let kept = format!("{head}{}{}", line("web", OWN, &k), line("jobs", OTHER, &k4));
    let all = format!("{kept}{}", line("etl", OTHER, &k));
    let operator = operator_user(&own).await;
    let in_other =
        format!("arn:aws:sts::{OTHER}:assumed-role/{}/asg-cmk-operator", OTHER_ROLE.rsplit('/').next().unwrap());
    let register = |cfg: &str| {
        for (caller, account) in [(operator.0.as_str(), OWN), (in_other.as_str(), OTHER)] {
            let policy = policy_of(&moto, cfg, account);
            moto.hook("POST", "/_launcher/identity-policies", json!({"caller": caller, "policy": policy}));
        }
    };
    let before = dir.write("all.yaml", &all);
    register(&before);
    assert!(run_as(&moto, &operator, &["apply", "--config", &before]).status.success());
    assert_eq!(grants(&own, &k).await.len(), 1, "etl's grant");

    let after = dir.write("kept.yaml", &kept);
    register(&after);
    moto.hook("POST", "/_launcher/authorizations/reset", Value::Null);
    let out = run_as(&moto, &operator, &["apply", "--config", &after]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(grants(&own, &k).await.is_empty(), "etl's grant was retired");
    let seen = decisions(&moto);
    let refused: Vec<&Value> = seen.iter().filter(|d| d["allowed"] != true).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let made = |caller: &str, action: &str| seen.iter().any(|d| d["caller"] == caller && d["action"] == action);
    assert!(made(&operator.0, "kms:ListGrants"), "the owner listed the grants on its own key");
    assert!(made(&operator.0, "kms:PutKeyPolicy"), "the owner pruned OTHER's root from its statements");
    assert!(made(&in_other, "kms:RetireGrant"), "OTHER retired its grant");
}

/// Tags `group` with `key`=`value`.
async fn tag_group(conf: &aws_config::SdkConfig, group: &str, key: &str, value: &str) {
    let tag = aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(false)
        .build();
    aws_sdk_autoscaling::Client::new(conf).create_or_update_tags().tags(tag).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_scoped_by_a_group_tag_allows_every_call_for_tagged_groups_and_no_other() {
    // OWN: web (case 1, on an AMI encrypted with k1) and batch (case 2, OTHER's key k2),
    // both tagged; the policy names neither, only the tag.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let k1 = create_key(&own, None).await;
    let k2 = create_key(&other, None).await;
    group_on_encrypted_ami(&own, "web", &k1).await;
    create_asgs(&own, &["batch", "stray"]).await;
    for g in ["web", "batch"] {
        tag_group(&own, g, "asg-cmk-operator", "managed").await;
    }
    tag_group(&own, "stray", "asg-cmk-operator", "someone-else").await;
    let dir = TempDir::new();
    let head = format!("version: 1\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n");
    let line = |asg: &str, key: &str| {
        format!("  - {{asg: {asg}, account: \"{OWN}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n")
    };
    let cfg = dir.write("fleet.yaml", &format!("{head}{}{}", line("web", &k1), line("batch", &k2)));
    let scoped =
        moto.operator(&["iam-policy", "--config", &cfg, "--account", OWN, "--group-tag", "asg-cmk-operator=managed"]);
    assert!(scoped.status.success(), "{}", stderr(&scoped));
    let scoped: Value = serde_json::from_str(&stdout(&scoped)).unwrap();
    let size = scoped.to_string().chars().filter(|c| !c.is_whitespace()).count();
    assert!(size <= 6144, "{size} characters");
    assert!(!scoped.to_string().contains("autoScalingGroupName/web"), "no group is named: {scoped:#}");
    let policies: BTreeMap<&str, Value> = [(OWN, scoped), (OTHER, policy_of(&moto, &cfg, OTHER))].into();
    let operator = operator_user(&own).await;
    let in_other =
        format!("arn:aws:sts::{OTHER}:assumed-role/{}/asg-cmk-operator", OTHER_ROLE.rsplit('/').next().unwrap());
    let callers = [(operator.0.clone(), OWN), (in_other, OTHER)];
    for (caller, account) in &callers {
        moto.hook("POST", "/_launcher/identity-policies", json!({"caller": caller, "policy": policies[account]}));
    }

    let applied = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert!(applied.status.success(), "{}\n{}", stdout(&applied), stderr(&applied));
    // A short grant under the operator's name, which it retires.
    let ours = grants(&other, &k2).await;
    kms_short_grant(&own, &k2, &ours[0].grantee, ours[0].name.as_deref().unwrap()).await;
    assert!(run_as(&moto, &operator, &["apply", "--config", &cfg]).status.success());
    assert_eq!(grants(&other, &k2).await.len(), 1, "the short grant was retired");
    assert_eq!(run_as(&moto, &operator, &["status", "--config", &cfg]).status.code(), Some(0));
    let seen = both_ways(&moto, &callers, &policies);
    let updates: Vec<&Value> = seen.iter().filter(|d| d["action"] == "autoscaling:UpdateAutoScalingGroup").collect();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    for u in updates {
        assert_eq!(u["context"]["autoscaling:resourcetag/asg-cmk-operator"], json!(["managed"]), "{u:#}");
    }

    // A group without the tag, onboarded without a policy change: IAM refuses its update,
    // and the operator says which call and why.
    let stray_role = asg_role(&own, "stray").await;
    assert_ne!(stray_role, Some(slr_arn(OWN, Some("CMK"))));
    let cfg =
        dir.write("fleet.yaml", &format!("{head}{}{}{}", line("web", &k1), line("batch", &k2), line("stray", &k1)));
    let refused = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let text = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(text.contains("stray") && text.contains("UpdateAutoScalingGroup"), "{text}");
    assert_eq!(asg_role(&own, "stray").await, stray_role, "the group is unchanged");
    assert!(decisions(&moto).iter().any(|d| d["action"] == "autoscaling:UpdateAutoScalingGroup"
        && d["allowed"] != true
        && d["resource"].as_str().unwrap().ends_with("autoScalingGroupName/stray")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selectors_policy_allows_every_call_of_its_sweep_and_onboarding_and_no_untagged_group() {
    // A selector of OWN's groups tagged team=data, allowed OWN's key k1 and OTHER's k2:
    // web (case 1) and api (case 2) carry the tag; stray does not, and is never written.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let k1 = create_key(&own, None).await;
    let k2 = create_key(&other, None).await;
    for (g, k) in [("web", &k1), ("api", &k2), ("stray", &k1)] {
        let lt = launch_template(&own, g, None, Some(k)).await;
        group_on_template(&own, g, &lt, 0, None).await;
    }
    // legacy, on a launch configuration with no encrypted volume, needs nothing.
    create_asgs(&own, &["legacy"]).await;
    for g in ["web", "api", "legacy"] {
        tag_group(&own, g, "team", "data").await;
    }
    let dir = TempDir::new();
    let cfg = dir.write(
        "fleet.yaml",
        &format!(
            "version: 1\ndefaults:\n  region: {REGION}\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nselectors:\n  - name: data\n    account: \"{OWN}\"\n    matchTags: {{team: data}}\n    serviceLinkedRoleSuffix: CMK\n    allowedKeys: [{k1}, {k2}]\n"
        ),
    );
    let policies: BTreeMap<&str, Value> =
        [(OWN, policy_of(&moto, &cfg, OWN)), (OTHER, policy_of(&moto, &cfg, OTHER))].into();
    let selected = policies[OWN]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "UpdateSelectedAutoScalingGroups")
        .expect("the selector's group writes")
        .clone();
    assert_eq!(selected["Condition"], json!({"StringEquals": {"autoscaling:ResourceTag/team": "data"}}));
    let operator = operator_user(&own).await;
    let in_other =
        format!("arn:aws:sts::{OTHER}:assumed-role/{}/asg-cmk-operator", OTHER_ROLE.rsplit('/').next().unwrap());
    let callers = [(operator.0.clone(), OWN), (in_other, OTHER)];
    for (caller, account) in &callers {
        moto.hook("POST", "/_launcher/identity-policies", json!({"caller": caller, "policy": policies[account]}));
    }
    let applied = run_as(&moto, &operator, &["apply", "--config", &cfg]);
    assert!(applied.status.success(), "{}\n{}", stdout(&applied), stderr(&applied));
    let ours = grants(&other, &k2).await;
    kms_short_grant(&own, &k2, &ours[0].grantee, ours[0].name.as_deref().unwrap()).await;
    assert!(run_as(&moto, &operator, &["apply", "--config", &cfg]).status.success());
    assert_eq!(run_as(&moto, &operator, &["status", "--config", &cfg]).status.code(), Some(0));
    let seen = both_ways(&moto, &callers, &policies);
    assert!(seen.iter().any(|d| d["action"] == "autoscaling:DescribeAutoScalingGroups"));
    let updated: Vec<&str> = seen
        .iter()
        .filter(|d| d["action"] == "autoscaling:UpdateAutoScalingGroup")
        .map(|d| d["resource"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(updated.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from(["api", "web"]));
    // The policy would refuse the untagged group, were the operator to try.
    let stray = json!({"action": "autoscaling:UpdateAutoScalingGroup",
        "resource": format!("arn:aws:autoscaling:{REGION}:{OWN}:autoScalingGroup:x:autoScalingGroupName/stray"),
        "context": {}});
    let verdict = moto.hook("POST", "/_launcher/identity-evaluate", json!({"policy": policies[OWN], "check": stray}));
    assert_eq!(verdict["decision"], "implicit", "{verdict}");
}
