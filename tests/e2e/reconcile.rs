//! End to end: the real binary against moto's server, for both cases of the procedure.

use crate::common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn case_1_converges_and_a_second_apply_only_reads() {
    let OneAsg { moto, own, key, dir: _dir, cfg } = one_asg_on_own_key(Some("CMK")).await;
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success());
    let calls = moto.calls();
    assert_eq!(writes(&calls), ["CreateServiceLinkedRole", "PutKeyPolicy", "UpdateAutoScalingGroup"]);

    let slr = slr_arn(OWN, Some("CMK"));
    let iam = aws_sdk_iam::Client::new(&own);
    let role = iam.get_role().role_name("AWSServiceRoleForAutoScaling_CMK").send().await.unwrap();
    assert_eq!(role.role().unwrap().arn(), slr);
    let policy = key_policy(&own, &key).await;
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [slr.as_str()]);
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorAttachment"), [slr.as_str()]);
    let attach = statements(&policy).into_iter().find(|s| s["Sid"] == "AsgCmkOperatorAttachment").unwrap();
    assert_eq!(attach["Condition"]["Bool"]["kms:GrantIsForAWSResource"], Value::Bool(true));
    assert_eq!(asg_role(&own, "web").await.as_deref(), Some(slr.as_str()));

    // Converged: a second apply and a plan issue reads only.
    moto.reset_calls();
    let again = moto.operator(&["apply", "--config", &cfg]);
    assert!(again.status.success());
    let plan = moto.operator(&["plan", "--config", &cfg]);
    assert_eq!(plan.status.code(), Some(0));
    assert!(stdout(&plan).starts_with("No changes."), "{}", stdout(&plan));
    let calls = moto.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{calls:?}");
    // apply and plan each: STS identity, one GetRole, one DescribeKey, one GetKeyPolicy,
    // one describe of the group; and, being full passes, its recent launches and what it
    // launches with (its launch configuration, the AMI, its snapshot, the EBS defaults).
    for action in [
        "GetCallerIdentity",
        "GetRole",
        "DescribeKey",
        "GetKeyPolicy",
        "DescribeAutoScalingGroups",
        "DescribeScalingActivities",
        "DescribeLaunchConfigurations",
        "DescribeImages",
        "DescribeSnapshots",
        "GetEbsEncryptionByDefault",
        "GetEbsDefaultKmsKeyId",
    ] {
        assert_eq!(count(&calls, action), 2, "{action}: {calls:?}");
    }
    assert_eq!(calls.len(), 22, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn case_2_uses_the_owner_policy_and_one_grant_and_reapplies_without_writes() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    let key = create_key(&other, None).await;
    assert!(key.contains(&format!(":{OTHER}:key/")), "{key}");
    create_asgs(&own, &["api", "batch"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("api", &key, Some("CMK")), ("batch", &key, Some("CMK"))]));
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success());
    let calls = moto.calls();
    let mut w = writes(&calls);
    w.sort();
    assert_eq!(
        w,
        ["CreateGrant", "CreateServiceLinkedRole", "PutKeyPolicy", "UpdateAutoScalingGroup", "UpdateAutoScalingGroup"]
    );
    assert_eq!(count(&calls, "AssumeRole"), 1, "credentials are assumed once: {calls:?}");

    let slr = slr_arn(OWN, Some("CMK"));
    let root = format!("arn:aws:iam::{OWN}:root");
    let policy = key_policy(&other, &key).await;
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorUse"), [root.as_str()]);
    assert_eq!(owned_principals(&policy, "AsgCmkOperatorCrossAccountGrant"), [root.as_str()]);
    let grant_st = statements(&policy).into_iter().find(|s| s["Sid"] == "AsgCmkOperatorCrossAccountGrant").unwrap();
    assert!(grant_st.get("Condition").is_none(), "case 2 grant statement has no condition");

    let grants = aws_sdk_kms::Client::new(&other).list_grants().key_id(&key).send().await.unwrap();
    assert_eq!(grants.grants().len(), 1);
    let g = &grants.grants()[0];
    assert_eq!(g.grantee_principal(), Some(slr.as_str()));
    let mut ops: Vec<&str> = g.operations().iter().map(|o| o.as_str()).collect();
    ops.sort();
    assert_eq!(ops, GRANT_OPERATIONS);
    for asg in ["api", "batch"] {
        assert_eq!(asg_role(&own, asg).await.as_deref(), Some(slr.as_str()));
    }

    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let calls = moto.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{calls:?}");
    // The lower bound: identity, one AssumeRole, one role, one key, one policy, one grant
    // list, one describe for both ASGs; and, at start, one sweep of the region's scaling
    // activities for both groups' recent launches, and what they launch with (one launch configuration, its AMI and snapshot, the EBS
    // defaults).
    let mut seen: Vec<&str> = calls.iter().map(|(_, a)| a.as_str()).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "AssumeRole",
            "DescribeAutoScalingGroups",
            "DescribeImages",
            "DescribeKey",
            "DescribeLaunchConfigurations",
            "DescribeScalingActivities",
            "DescribeSnapshots",
            "GetCallerIdentity",
            "GetEbsDefaultKmsKeyId",
            "GetEbsEncryptionByDefault",
            "GetKeyPolicy",
            "GetRole",
            "ListGrants"
        ]
    );
    let grants = aws_sdk_kms::Client::new(&other).list_grants().key_id(&key).send().await.unwrap();
    assert_eq!(grants.grants().len(), 1, "never a second grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_key_policy_keeps_every_statement_id_and_version() {
    let moto = Moto::start();
    let own = moto.own().await;
    // KMS refuses a policy naming principals that do not exist.
    create_role(&own, "admin").await;
    create_role(&own, "app").await;
    // What the KMS console writes, including the AWS doc's Sids for another principal.
    let console = format!(
        r#"{{
  "Id": "key-consolepolicy-3",
  "Version": "2012-10-17",
  "Statement": [
    {{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
      "Principal": {{"AWS": "arn:aws:iam::{OWN}:root"}}, "Action": "kms:*", "Resource": "*"}},
    {{"Sid": "Allow access for Key Administrators", "Effect": "Allow",
      "Principal": {{"AWS": "arn:aws:iam::{OWN}:role/admin"}},
      "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*"], "Resource": "*"}},
    {{"Sid": "Allow use of the key", "Effect": "Allow",
      "Principal": {{"AWS": "arn:aws:iam::{OWN}:role/app"}},
      "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], "Resource": "*"}},
    {{"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
      "Principal": {{"AWS": "arn:aws:iam::{OWN}:role/app"}},
      "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
      "Condition": {{"Bool": {{"kms:GrantIsForAWSResource": "true"}}}}}}
  ]
}}"#
    );
    let key = create_key(&own, Some(&console)).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, None)]));
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());

    let before: Value = serde_json::from_str(&console).unwrap();
    let after = key_policy(&own, &key).await;
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(after["Version"], before["Version"]);
    let after_st = statements(&after);
    let before_st = statements(&before);
    assert_eq!(&after_st[..before_st.len()], &before_st[..], "foreign statements unchanged and in place");
    let added: Vec<&str> = after_st[before_st.len()..].iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert_eq!(added, ["AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_role_and_partly_converged_state_issue_only_the_missing_calls() {
    // The role exists already: as in AWS, the first group made without a role brought the
    // default one. And the owner already allows our root (in its own words).
    let CrossAccount { moto, own, other, key, dir: _dir, cfg } = one_asg_on_other_key(None).await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
          {{"Sid":"Owner","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{OTHER}:root"}},"Action":"kms:*","Resource":"*"}},
          {{"Sid":"Partner","Effect":"Allow","Principal":{{"AWS":["{OWN}"]}},"Action":["kms:CreateGrant","kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}}]}}"#
    );
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(&policy)
        .send()
        .await
        .unwrap();
    moto.reset_calls();

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    // An ASG created without a role already runs under the default one.
    assert_eq!(writes(&moto.calls()), ["CreateGrant"]);
    assert_eq!(asg_role(&own, "api").await, Some(slr_arn(OWN, None)));
}

#[tokio::test(flavor = "multi_thread")]
async fn many_asgs_on_one_key_cost_one_policy_write_and_batched_describes() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let names: Vec<String> = (0..130).map(|i| format!("asg-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_asgs(&own, &refs).await;
    let dir = TempDir::new();
    let bindings: Vec<(&str, &str, Option<&str>)> = refs.iter().map(|n| (*n, key.as_str(), Some("CMK"))).collect();
    let cfg = dir.write("c.yaml", &config(&bindings));
    moto.reset_calls();

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let calls = moto.calls();
    assert_eq!(count(&calls, "PutKeyPolicy"), 1);
    assert_eq!(count(&calls, "CreateServiceLinkedRole"), 1);
    assert_eq!(count(&calls, "UpdateAutoScalingGroup"), 130);
    // Two passes (write, verify), each describing 130 names in batches of 100.
    assert_eq!(count(&calls, "DescribeAutoScalingGroups"), 4, "{calls:?}");
    // Observed, read again right before the write, and verified.
    assert_eq!(count(&calls, "GetKeyPolicy"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn unpropagated_principal_is_retried_with_backoff() {
    let OneAsg { moto, own: _, key: _, dir: _dir, cfg } = one_asg_on_own_key(None).await;
    moto.reset_calls();
    moto.fault(
        "kms",
        "PutKeyPolicy",
        2,
        400,
        "MalformedPolicyDocumentException",
        "Policy contains a statement with one or more invalid principals.",
    );
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success());
    assert_eq!(count(&moto.calls(), "PutKeyPolicy"), 3);
    assert!(stderr(&out).contains("has not propagated yet"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn role_taken_between_observe_and_create_is_adopted_whatever_the_error_says() {
    for (code, message) in [
        ("EntityAlreadyExists", "Role with name AWSServiceRoleForAutoScaling_CMK already exists."),
        (
            "InvalidInput",
            "Service role name AWSServiceRoleForAutoScaling_CMK has been taken in this account, please try a different suffix.",
        ),
    ] {
        let OneAsg { moto, own: _, key: _, dir: _dir, cfg } = one_asg_on_own_key(Some("CMK")).await;
        // The role is absent when observed; someone makes it just as the operator does, so
        // the operator's create is refused although the role now exists.
        moto.fault_after_apply("iam", "CreateServiceLinkedRole", 400, code, message);
        let out = moto.operator(&["apply", "--config", &cfg]);
        assert!(out.status.success(), "{code}");
        assert!(stderr(&out).contains("already exists; adopting it"), "{code}: {}", stderr(&out));
        assert!(!stderr(&out).contains("change failed"), "{code}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_reports_pending_changes_as_json_and_changes_nothing() {
    let OneAsg { moto, own: _, key: _, dir: _dir, cfg } = one_asg_on_own_key(Some("CMK")).await;
    moto.reset_calls();
    let out = moto.operator(&["plan", "--config", &cfg, "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let actions: Vec<&str> = v["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["CreateServiceLinkedRole", "PutKeyPolicy", "UpdateAutoScalingGroup"]);
    for a in v["actions"].as_array().unwrap() {
        for field in ["account", "region", "target", "reason"] {
            assert!(a.get(field).is_some(), "{field} missing in {a}");
        }
    }
    assert_eq!(writes(&moto.calls()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_binding_fails_alone_and_is_named() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web"]).await;
    let stranger = "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333";
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, None), ("ghost", &key, None), ("web2", stranger, None)]));
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("1 of 3 bindings converged"), "{text}");
    let key_id = key.rsplit('/').next().unwrap();
    assert!(text.contains(&format!("{OWN}/us-west-2/ghost [{key_id}]: ASG ghost not found")), "{text}");
    // The stranger's account has no `accounts` entry: hand-off mode, no longer an error of
    // its own (tests/e2e/handoff.rs); this binding's group does not exist either.
    assert!(text.contains("web2 [999999999999:33333333-3333-3333-3333-333333333333]: ASG web2 not found"), "{text}");
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, None)));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_configs_are_rejected_before_any_aws_call() {
    let moto = Moto::start();
    let dir = TempDir::new();
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-1111-1111-1111-111111111111";
    let cases = [
        ("empty", String::new(), vec!["file: is empty"]),
        ("syntax", "version: 1\nbindings:\n  - asg: [x\n".to_owned(), vec!["line 4, column 1: did not find expected"]),
        ("version", "version: 3\nbindings: []\n".to_owned(), vec!["version: unsupported version 3"]),
        (
            "fields",
            format!("version: 1\nbindings:\n  - asg: a\n    account: \"12345\"\n    key: {key}\n    region: eu-west-1\n  - asg: b\n    account: \"{OWN}\"\n    key: alias/x\n    colour: red\n"),
            vec![
                "bindings[0].account: \"12345\" is not an account id of exactly 12 digits",
                "bindings[0].key: key is in region us-west-2, but the binding's region is eu-west-1",
                "bindings[1].key: must be a full KMS key ARN",
                "bindings[1].colour: unknown field",
            ],
        ),
        (
            "duplicate",
            format!("version: 1\nbindings:\n  - {{asg: a, account: \"{OWN}\", key: {key}}}\n  - {{asg: a, account: \"{OWN}\", key: {key}}}\n"),
            vec!["bindings[1]: duplicate of bindings[0]"],
        ),
        (
            "required suffix",
            format!("version: 1\ndefaults: {{requireServiceLinkedRoleSuffix: true}}\nbindings:\n  - {{asg: a, account: \"{OWN}\", key: {key}}}\n"),
            vec!["bindings[0].serviceLinkedRoleSuffix: is required (defaults.requireServiceLinkedRoleSuffix is true)"],
        ),
        (
            "suffix",
            format!("version: 1\ndefaults: {{serviceLinkedRoleSuffix: {}}}\nbindings:\n  - {{asg: a, account: \"{OWN}\", key: {key}}}\n", "s".repeat(36)),
            vec!["defaults.serviceLinkedRoleSuffix: role name AWSServiceRoleForAutoScaling_"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.write(&format!("{name}.yaml"), &text);
        for cmd in ["validate", "plan", "apply"] {
            let out = moto.operator(&[cmd, "--config", &path]);
            assert_eq!(out.status.code(), Some(1), "{name} {cmd}");
            let err = stderr(&out);
            for e in &expected {
                assert!(err.contains(e), "{name} {cmd}: missing {e:?} in\n{err}");
            }
        }
    }
    assert_eq!(moto.calls(), Vec::<(String, String)>::new(), "no AWS call for an invalid config");
    let ok = dir.write("ok.yaml", &config(&[("a", key, None)]));
    let valid = moto.operator(&["validate", "--config", &ok]);
    assert!(valid.status.success());
    // Valid, with a warning for the group on the default role, quoting why.
    assert_eq!(
        stderr(&valid)
            .lines()
            .filter(|l| l.starts_with("warning: ASG 123456789012/us-west-2/a uses the default service-linked role"))
            .count(),
        1,
        "{}",
        stderr(&valid)
    );
    assert!(
        stderr(&valid).contains("anyone who can create an Auto Scaling group in the account can use the default one")
    );
    assert_eq!(moto.calls().len(), 0, "validate makes no AWS call");
}

#[test]
fn missing_credentials_are_one_plain_error_saying_where_it_looked_and_what_to_do() {
    let dir = TempDir::new();
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-1111-1111-1111-111111111111";
    let cfg = dir.write("c.yaml", &config(&[("a", key, Some("CMK"))]));
    // Nothing to find: no keys, no profile files, no region, and instance metadata that
    // answers 403 to everything, as it does where IMDS is disabled (where it answers at
    // all, the SDK used to log raw debug structures before the one useful line).
    let imds = forbidding_http_server();
    let out = operator_command("http://127.0.0.1:9", &["plan", "--config", &cfg])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
        .env("HOME", &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot start talking to AWS: no AWS credentials. Looked in, in order: the environment"),
        "{err}"
    );
    for hint in ["AWS_PROFILE=NAME", "AWS_ENDPOINT_URL=http://HOST:PORT", "EC2 instance metadata"] {
        assert!(err.contains(hint), "{hint} missing in {err}");
    }
    assert_eq!(err.lines().count(), 1, "one line, no SDK warnings: {err}");
    assert!(!err.contains("Error {") && !err.contains("source:"), "no debug structures: {err}");
    assert!(err.contains("IMDS is disabled"), "the metadata service was asked, and answered: {err}");
}

/// An HTTP server on loopback that answers every request 403, with IMDS's own words; its URL.
fn forbidding_http_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "IMDS is disabled";
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// More keys than KMS lets PutKeyPolicy write in a second: the writes past the ceiling
/// wait for their turn before their fresh read, not between it and the write, so each
/// write still lands one round trip after the read it merged into.
#[tokio::test(flavor = "multi_thread")]
async fn each_key_policy_write_follows_its_fresh_read_within_a_round_trip_under_the_rate_limit() {
    let moto = Moto::start();
    let own = moto.own().await;
    let names: Vec<String> = (0..30).map(|i| format!("g{i}")).collect();
    create_asgs(&own, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut keys = Vec::new();
    for _ in &names {
        keys.push(create_key(&own, None).await);
    }
    let bindings: Vec<(&str, &str, Option<&str>)> =
        names.iter().zip(&keys).map(|(n, k)| (n.as_str(), k.as_str(), Some("CMK"))).collect();
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&bindings));
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.hook("GET", "/_launcher/calls", Value::Null)["calls"].as_array().unwrap().clone();
    let writes: Vec<&Value> = calls.iter().filter(|c| c["action"] == "PutKeyPolicy").collect();
    assert_eq!(writes.len(), keys.len());
    let t = |c: &Value| c["t"].as_f64().unwrap();
    let (first, last) = (t(writes[0]), t(writes[writes.len() - 1]));
    assert!(last - first > 1.0, "the ceiling held writes back: {:.2} s from first to last", last - first);
    for w in &writes {
        let read = calls
            .iter()
            .filter(|c| c["action"] == "GetKeyPolicy" && c["key"] == w["key"] && t(c) <= t(w))
            .map(t)
            .fold(f64::NEG_INFINITY, f64::max);
        let gap = t(w) - read;
        assert!(gap < 0.5, "PutKeyPolicy on {} came {gap:.2} s after its fresh read", w["key"]);
    }
}

/// STS refusing the key owner's role (no permission, or a trust policy that does not name
/// the operator) is a configuration error: `apply` asks once and does not spend its rounds
/// asking again, and the daemon reports it as terminal and backs off.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_assume_role_is_terminal_and_asked_once() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("api", &key, Some("CMK"))]));
    let refusal = format!(
        "User: arn:aws:iam::{OWN}:user/operator is not authorized to perform: sts:AssumeRole on resource: {OTHER_ROLE}"
    );
    moto.fault("sts", "AssumeRole", 1000, 403, "AccessDenied", &refusal);
    moto.reset_calls();

    let started = std::time::Instant::now();
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("AccessDenied"), "{}", stdout(&out));
    assert_eq!(count(&moto.calls(), "AssumeRole"), 1, "asked again: {:?}", moto.calls());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "apply waited {:?}", started.elapsed());

    let d = Daemon::start(&moto, &cfg, "5m");
    let failed = d.wait_log(|v| v["message"] == "binding failed", std::time::Duration::from_secs(20));
    assert_eq!(failed["class"], "terminal", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("AccessDenied"), "{failed}");
    assert!(failed["retry_in"].as_str().is_some_and(|r| !r.is_empty()), "backs off: {failed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_round_backoff_a_troubled_round_rereads_only_the_units_it_touched_and_ends() {
    // As the daemon runs a pass: web's key and api's key are two units, both converged.
    // One GetKeyPolicy answers a transient error; the pass does not wait: it reads that
    // key's unit once more, not the other's, which here answers, and ends.
    use asg_cmk_operator::core::plan::Depth;
    use asg_cmk_operator::shell::aws::{Aws, CallStats, ExecSettings};
    use std::sync::Arc;

    let moto = Moto::start();
    let own = moto.own().await;
    let (k1, k2) = (create_key(&own, None).await, create_key(&own, None).await);
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let text = config(&[("web", &k1, Some("CMK")), ("api", &k2, Some("CMK"))]);
    let cfg = dir.write("c.yaml", &text);
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());

    let desired = asg_cmk_operator::core::config::parse(&text, "c.yaml").expect("config");
    let aws = Arc::new(Aws::with_config(own.clone(), Arc::new(CallStats::default())).await.expect("connect"));
    moto.fault("kms", "GetKeyPolicy", 1, 400, "ConcurrentModificationException", "try again");
    moto.reset_calls();
    let settings = ExecSettings { round_backoff: None, ..ExecSettings::default() };
    let prior = std::collections::BTreeMap::new();
    let prior = asg_cmk_operator::shell::reconcile::Prior { judged: prior, ..Default::default() };
    let out = asg_cmk_operator::shell::reconcile::apply(&aws, &desired, 3, &settings, Depth::Quick, &prior).await;

    let calls = moto.calls();
    assert_eq!(out.rounds, 2, "one round, then one last look");
    assert_eq!(count(&calls, "GetKeyPolicy"), 3, "both keys, then the failed one's unit only: {calls:?}");
    assert_eq!(count(&calls, "DescribeKey"), 3, "{calls:?}");
    assert_eq!(writes(&calls), Vec::<String>::new());
    use asg_cmk_operator::core::judge::{Judged, Kind, State};
    assert!(!out.judged.iter().any(|j| j.verdict.is_failed()), "the last look found it converged: {:?}", out.judged);
    assert_eq!(out.judged.len(), 2, "{:?}", out.judged);
    // A quick pass reads no launches; every other condition holds.
    let holds =
        |s: &Judged| s.conditions.iter().filter(|c| c.kind != Kind::LaunchesHealthy).all(|c| c.status == State::True);
    assert!(out.judged.iter().all(holds), "{:?}", out.judged);
}
