//! The test emulator itself: the launcher's strict mode (each behaviour as AWS documents
//! it, and moto's lenient behaviour when switched off), the concurrent-edit hook, and the
//! fault proxy in front of the launcher. Everything goes through the AWS SDK for Rust.

mod common;

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, GrantOperation};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use common::*;
use serde_json::{json, Value};

const INVALID_PRINCIPALS: &str = "Policy contains a statement with one or more invalid principals.";

// --- helpers ---------------------------------------------------------------------------

/// Changes the launcher's strict settings; returns the new settings.
fn strict(moto: &Moto, changes: Value) -> Value {
    moto.strict(changes)
}

/// A JSON hook call on a helper's `url` that must succeed.
fn hook(url: &str, method: &str, path: &str, body: Value) -> Value {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, answer) = http(url, method, path, &text);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    serde_json::from_str(&answer).unwrap()
}

/// (code, message) of a failed SDK call; panics on success.
fn failure<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(r: Result<O, E>) -> (String, String) {
    match r {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => {
            let code = e.code().unwrap_or_else(|| panic!("no error code in {e:?}")).to_owned();
            (code, e.message().unwrap_or_default().to_owned())
        }
    }
}

/// The error code of a failed SDK call; panics on success.
fn code<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(r: Result<O, E>) -> String {
    failure(r).0
}

/// A key policy: the account root, plus `principals` allowed to decrypt.
fn policy(principals: &[&str]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": principals},
             "Action": "kms:Decrypt", "Resource": "*"}
        ]
    })
    .to_string()
}

/// The principals of the "Use" statement, as GetKeyPolicy shows them.
async fn use_principals(conf: &SdkConfig, key: &str) -> Vec<String> {
    let p = key_policy(conf, key).await;
    let st = p["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "Use").unwrap().clone();
    st["Principal"]["AWS"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

async fn raw_policy(conf: &SdkConfig, key: &str) -> String {
    let kms = aws_sdk_kms::Client::new(conf);
    let out = kms.get_key_policy().key_id(key).policy_name("default").send().await.unwrap();
    out.policy().unwrap().to_owned()
}

async fn put_policy(
    conf: &SdkConfig,
    key: &str,
    text: &str,
) -> Result<(), aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::put_key_policy::PutKeyPolicyError>> {
    let kms = aws_sdk_kms::Client::new(conf);
    kms.put_key_policy().key_id(key).policy_name("default").policy(text).send().await.map(|_| ())
}

async fn grant(
    conf: &SdkConfig,
    key: &str,
    grantee: &str,
    name: Option<&str>,
    ops: &[GrantOperation],
) -> Result<String, aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::create_grant::CreateGrantError>> {
    let kms = aws_sdk_kms::Client::new(conf);
    let out = kms
        .create_grant()
        .key_id(key)
        .grantee_principal(grantee)
        .set_name(name.map(str::to_owned))
        .set_operations(Some(ops.to_vec()))
        .send()
        .await?;
    Ok(out.grant_id().unwrap().to_owned())
}

/// Every grant of `key` in one unpaged call: (grant id, grantee).
async fn all_grants(conf: &SdkConfig, key: &str) -> Vec<(String, String)> {
    let kms = aws_sdk_kms::Client::new(conf);
    let out = kms.list_grants().key_id(key).limit(100).send().await.unwrap();
    assert!(!out.truncated());
    out.grants()
        .iter()
        .map(|g| (g.grant_id().unwrap().to_owned(), g.grantee_principal().unwrap_or_default().to_owned()))
        .collect()
}

async fn update_asg_role(
    conf: &SdkConfig,
    asg: &str,
    arn: &str,
) -> Result<
    (),
    aws_sdk_autoscaling::error::SdkError<
        aws_sdk_autoscaling::operation::update_auto_scaling_group::UpdateAutoScalingGroupError,
    >,
> {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    asc.update_auto_scaling_group().auto_scaling_group_name(asg).service_linked_role_arn(arn).send().await.map(|_| ())
}

/// The key id at the end of a key ARN (moto's DisableKey and ScheduleKeyDeletion need it).
fn key_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// `conf` without SDK retries: one attempt per call.
fn no_retries(conf: &SdkConfig) -> SdkConfig {
    conf.to_builder().retry_config(RetryConfig::standard().with_max_attempts(1)).build()
}

/// SDK configuration for the own account, through the proxy, without SDK retries.
async fn through(proxy: &FaultProxy, moto: &Moto) -> SdkConfig {
    no_retries(&moto.own().await).to_builder().endpoint_url(&proxy.url).build()
}

// --- settings --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn strict_settings_default_on_and_change_at_runtime() {
    let moto = Moto::start();
    let defaults = hook(&moto.url, "GET", "/_launcher/strict", Value::Null);
    assert_eq!(
        defaults,
        json!({"principals": true, "propagation_seconds": 0.0, "grant_names": true,
               "key_state": true, "grant_paging": true, "asg_roles": true})
    );
    let changed = strict(&moto, json!({"key_state": false, "propagation_seconds": 1.5}));
    assert_eq!(changed["key_state"], false);
    assert_eq!(changed["propagation_seconds"], 1.5);
    assert_eq!(changed["principals"], true);
    // A bad key or value changes nothing.
    for bad in [json!({"nope": true}), json!({"principals": "yes"}), json!({"propagation_seconds": -1})] {
        let (status, _) = http(&moto.url, "POST", "/_launcher/strict", &bad.to_string());
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(hook(&moto.url, "GET", "/_launcher/strict", Value::Null), changed);
}

#[tokio::test(flavor = "multi_thread")]
async fn lenient_launcher_starts_with_every_switch_off() {
    let launcher = Moto::start_with(&["--lenient", "--propagation-seconds", "3"]);
    let settings = launcher.hook("GET", "/_launcher/strict", Value::Null);
    assert_eq!(
        settings,
        json!({"principals": false, "propagation_seconds": 3.0, "grant_names": false,
               "key_state": false, "grant_paging": false, "asg_roles": false})
    );
}

// --- principals ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn put_key_policy_rejects_an_unknown_role_unless_lenient() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let ghost = format!("arn:aws:iam::{OWN}:role/ghost");

    let (c, m) = failure(put_policy(&own, &key, &policy(&[&ghost])).await);
    assert_eq!((c.as_str(), m.as_str()), ("MalformedPolicyDocumentException", INVALID_PRINCIPALS));
    // So does CreateKey with such a policy; accounts, "*" and existing roles are fine.
    let kms = aws_sdk_kms::Client::new(&own);
    assert_eq!(code(kms.create_key().policy(policy(&[&ghost])).send().await), "MalformedPolicyDocumentException");
    let (role, _) = create_role(&own, "app").await;
    put_policy(&own, &key, &policy(&[&role, OTHER, "*", &format!("arn:aws:iam::{OTHER}:root")])).await.unwrap();

    strict(&moto, json!({"principals": false}));
    put_policy(&own, &key, &policy(&[&ghost])).await.unwrap();
    assert_eq!(use_principals(&own, &key).await, [ghost]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_role_shows_as_its_unique_id_and_that_policy_cannot_be_put_back() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let (arn, id) = create_role(&own, "app").await;
    put_policy(&own, &key, &policy(&[&arn])).await.unwrap();
    assert_eq!(use_principals(&own, &key).await, [arn.as_str()]);

    delete_role(&own, "app").await;
    assert!(id.starts_with("AROA"), "{id}");
    assert_eq!(use_principals(&own, &key).await, [id.as_str()]);
    // The orphaned id is an invalid principal: the policy as read cannot be written back.
    let read = raw_policy(&own, &key).await;
    assert_eq!(code(put_policy(&own, &key, &read).await), "MalformedPolicyDocumentException");

    // Lenient: moto shows what was written and accepts anything.
    strict(&moto, json!({"principals": false}));
    assert_eq!(use_principals(&own, &key).await, [arn.as_str()]);
    put_policy(&own, &key, &read).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn recreated_role_shows_the_old_unique_id() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let (arn, old_id) = create_role(&own, "app").await;
    put_policy(&own, &key, &policy(&[&arn])).await.unwrap();
    delete_role(&own, "app").await;
    let (same_arn, new_id) = create_role(&own, "app").await;
    assert_eq!(same_arn, arn);
    assert_ne!(new_id, old_id);

    assert_eq!(use_principals(&own, &key).await, [old_id.as_str()]);
    // A policy put now names the new role, and shows its ARN.
    put_policy(&own, &key, &policy(&[&arn])).await.unwrap();
    assert_eq!(use_principals(&own, &key).await, [arn.as_str()]);
    // The document keeps its other statements as written.
    assert_eq!(key_policy(&own, &key).await["Statement"][0]["Sid"], "Root");

    delete_role(&own, "app").await;
    create_role(&own, "app").await;
    strict(&moto, json!({"principals": false}));
    assert_eq!(use_principals(&own, &key).await, [arn.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_grant_rejects_an_unknown_grantee_and_lists_a_deleted_one_by_its_id() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let ghost = format!("arn:aws:iam::{OWN}:role/ghost");
    let r = grant(&own, &key, &ghost, None, &[GrantOperation::Decrypt]).await;
    let want = ("InvalidArnException".to_owned(), format!("ARN does not refer to a valid principal: {ghost}"));
    assert_eq!(failure(r), want);
    // Service principals and account roots are valid grantees.
    grant(&own, &key, "ec2.amazonaws.com", None, &[GrantOperation::Decrypt]).await.unwrap();
    grant(&own, &key, &format!("arn:aws:iam::{OTHER}:root"), None, &[GrantOperation::Decrypt]).await.unwrap();

    let (arn, id) = create_role(&own, "worker").await;
    let g = grant(&own, &key, &arn, None, &[GrantOperation::Decrypt]).await.unwrap();
    let grantee = |gs: Vec<(String, String)>| gs.into_iter().find(|(i, _)| *i == g).unwrap().1;
    assert_eq!(grantee(all_grants(&own, &key).await), arn);
    delete_role(&own, "worker").await;
    assert_eq!(grantee(all_grants(&own, &key).await), id);

    strict(&moto, json!({"principals": false}));
    assert_eq!(grantee(all_grants(&own, &key).await), arn);
    grant(&own, &key, &ghost, None, &[GrantOperation::Decrypt]).await.unwrap();
}

// --- propagation -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn new_roles_are_invisible_to_kms_and_auto_scaling_until_the_window_passes() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web"]).await;
    let before = asg_role(&own, "web").await;
    strict(&moto, json!({"propagation_seconds": 2.0}));

    let (role, _) = create_role(&own, "fresh").await;
    let (slr, _) = create_slr(&own, "Fresh").await;
    let born = Instant::now();
    // IAM sees them at once.
    let iam = aws_sdk_iam::Client::new(&own);
    iam.get_role().role_name("fresh").send().await.unwrap();
    // KMS and Auto Scaling do not, yet.
    assert_eq!(code(put_policy(&own, &key, &policy(&[&role])).await), "MalformedPolicyDocumentException");
    assert_eq!(code(grant(&own, &key, &role, None, &[GrantOperation::Decrypt]).await), "InvalidArnException");
    let (c, m) = failure(update_asg_role(&own, "web", &slr).await);
    assert_eq!((c.as_str(), m.as_str()), ("ValidationError", "ARN specified for Service-Linked Role does not exist."));
    assert_eq!(asg_role(&own, "web").await, before);
    assert!(born.elapsed() < Duration::from_secs(2), "the checks took longer than the window");

    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(born.elapsed())).await;
    put_policy(&own, &key, &policy(&[&role])).await.unwrap();
    grant(&own, &key, &role, None, &[GrantOperation::Decrypt]).await.unwrap();
    update_asg_role(&own, "web", &slr).await.unwrap();
    assert_eq!(asg_role(&own, "web").await.as_deref(), Some(slr.as_str()));

    // With the checks off, the window changes nothing.
    strict(&moto, json!({"principals": false, "asg_roles": false}));
    let (newer, _) = create_role(&own, "fresher").await;
    let (newer_slr, _) = create_slr(&own, "Fresher").await;
    put_policy(&own, &key, &policy(&[&newer])).await.unwrap();
    grant(&own, &key, &newer, None, &[GrantOperation::Decrypt]).await.unwrap();
    update_asg_role(&own, "web", &newer_slr).await.unwrap();
}

// --- grants ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn create_grant_with_the_same_name_and_parameters_returns_the_same_grant() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let (role, _) = create_role(&own, "grantee").await;
    use GrantOperation::{Decrypt, Encrypt};

    let first = grant(&own, &key, &role, Some("n"), &[Decrypt, Encrypt]).await.unwrap();
    // Same name and parameters (operations as a set): the same grant, nothing new.
    let again = grant(&own, &key, &role, Some("n"), &[Encrypt, Decrypt]).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(all_grants(&own, &key).await.len(), 1);
    // Same name, different operations: a new grant. No name: always a new grant.
    let other = grant(&own, &key, &role, Some("n"), &[Decrypt]).await.unwrap();
    assert_ne!(other, first);
    let a = grant(&own, &key, &role, None, &[Decrypt]).await.unwrap();
    let b = grant(&own, &key, &role, None, &[Decrypt]).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(all_grants(&own, &key).await.len(), 4);

    strict(&moto, json!({"grant_names": false}));
    let lenient = grant(&own, &key, &role, Some("n"), &[Decrypt, Encrypt]).await.unwrap();
    assert_ne!(lenient, first);
    assert_eq!(all_grants(&own, &key).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_and_pending_deletion_keys_refuse_grants_and_crypto_but_show_policy_and_grants() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let key = create_key(&own, None).await;
    let dec = [GrantOperation::Decrypt];
    grant(&own, &key, "ec2.amazonaws.com", None, &dec).await.unwrap();

    kms.disable_key().key_id(key_id(&key)).send().await.unwrap();
    let r = grant(&own, &key, "ec2.amazonaws.com", None, &dec).await;
    assert_eq!(failure(r), ("DisabledException".to_owned(), format!("{key} is disabled.")));
    assert_eq!(code(kms.encrypt().key_id(&key).plaintext(Blob::new("x")).send().await), "DisabledException");
    key_policy(&own, &key).await;
    assert_eq!(all_grants(&own, &key).await.len(), 1);
    put_policy(&own, &key, &policy(&[OTHER])).await.unwrap();
    kms.describe_key().key_id(&key).send().await.unwrap();

    kms.enable_key().key_id(key_id(&key)).send().await.unwrap();
    kms.schedule_key_deletion().key_id(key_id(&key)).pending_window_in_days(7).send().await.unwrap();
    let r = grant(&own, &key, "ec2.amazonaws.com", None, &dec).await;
    assert_eq!(failure(r), ("KMSInvalidStateException".to_owned(), format!("{key} is pending deletion.")));
    let gdk = kms.generate_data_key().key_id(&key).key_spec(DataKeySpec::Aes256).send().await;
    assert_eq!(code(gdk), "KMSInvalidStateException");
    key_policy(&own, &key).await;
    assert_eq!(all_grants(&own, &key).await.len(), 1);

    strict(&moto, json!({"key_state": false}));
    grant(&own, &key, "ec2.amazonaws.com", None, &dec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn list_grants_pages_120_grants_by_limit_and_marker() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let key = create_key(&own, None).await;
    let mut created = Vec::new();
    for _ in 0..120 {
        created.push(grant(&own, &key, "ec2.amazonaws.com", None, &[GrantOperation::Decrypt]).await.unwrap());
    }

    let (mut seen, mut pages, mut marker) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let out = kms.list_grants().key_id(&key).limit(50).set_marker(marker.take()).send().await.unwrap();
        pages.push((out.grants().len(), out.truncated()));
        for g in out.grants() {
            assert_eq!(g.issuing_account(), Some(format!("arn:aws:iam::{OWN}:root").as_str()));
            seen.push(g.grant_id().unwrap().to_owned());
        }
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_owned()),
            (false, None) => break,
            other => panic!("inconsistent page: {other:?}"),
        }
    }
    assert_eq!(pages, [(50, true), (50, true), (20, false)]);
    assert_eq!(seen, created, "every grant once, in a stable order");
    // The default limit is 50.
    assert_eq!(kms.list_grants().key_id(&key).send().await.unwrap().grants().len(), 50);

    for bad in [0, 101] {
        assert_eq!(code(kms.list_grants().key_id(&key).limit(bad).send().await), "ValidationException", "{bad}");
    }
    assert_eq!(code(kms.list_grants().key_id(&key).marker("never-issued").send().await), "InvalidMarkerException");
    // The GrantId filter still works.
    let one = kms.list_grants().key_id(&key).grant_id(&created[7]).send().await.unwrap();
    assert_eq!(one.grants().len(), 1);

    strict(&moto, json!({"grant_paging": false}));
    let out = kms.list_grants().key_id(&key).limit(50).send().await.unwrap();
    assert_eq!((out.grants().len(), out.truncated()), (120, false));
    assert_eq!(out.grants()[0].issuing_account(), None);
    kms.list_grants().key_id(&key).limit(0).send().await.unwrap();
}

// --- Auto Scaling ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn auto_scaling_rejects_a_service_linked_role_that_does_not_exist() {
    let moto = Moto::start();
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    create_asgs(&own, &["web"]).await;
    let before = asg_role(&own, "web").await;
    let missing = slr_arn(OWN, Some("Missing"));

    assert_eq!(code(update_asg_role(&own, "web", &missing).await), "ValidationError");
    assert_eq!(asg_role(&own, "web").await, before);
    let create = asc
        .create_auto_scaling_group()
        .auto_scaling_group_name("web2")
        .launch_configuration_name("test-lc")
        .availability_zones("us-west-2a")
        .min_size(0)
        .max_size(1)
        .service_linked_role_arn(&missing)
        .send()
        .await;
    let (c, m) = failure(create);
    assert_eq!((c.as_str(), m.as_str()), ("ValidationError", "ARN specified for Service-Linked Role does not exist."));
    let described = asc.describe_auto_scaling_groups().auto_scaling_group_names("web2").send().await.unwrap();
    assert!(described.auto_scaling_groups().is_empty());
    // A role of another account does not exist in this one.
    assert_eq!(code(update_asg_role(&own, "web", &slr_arn(OTHER, None)).await), "ValidationError");

    let (slr, _) = create_slr(&own, "Here").await;
    update_asg_role(&own, "web", &slr).await.unwrap();
    assert_eq!(asg_role(&own, "web").await.as_deref(), Some(slr.as_str()));

    strict(&moto, json!({"asg_roles": false}));
    update_asg_role(&own, "web", &missing).await.unwrap();
    assert_eq!(asg_role(&own, "web").await.as_deref(), Some(missing.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_group_made_without_a_role_brings_the_default_service_linked_role() {
    let moto = Moto::start();
    let own = moto.own().await;
    let iam = aws_sdk_iam::Client::new(&own);
    let default = "AWSServiceRoleForAutoScaling";
    assert_eq!(code(iam.get_role().role_name(default).send().await), "NoSuchEntity");
    create_asgs(&own, &["web", "api"]).await;
    let role = iam.get_role().role_name(default).send().await.unwrap();
    assert_eq!(role.role().unwrap().arn(), slr_arn(OWN, None));
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, None)));
    update_asg_role(&own, "api", &slr_arn(OWN, None)).await.unwrap();

    // moto's own behaviour, switched back on: no role appears.
    strict(&moto, json!({"asg_roles": false}));
    let other = moto.other().await;
    create_asgs(&other, &["elsewhere"]).await;
    let iam = aws_sdk_iam::Client::new(&other);
    assert_eq!(code(iam.get_role().role_name(default).send().await), "NoSuchEntity");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_after_apply_carries_the_request_out_and_only_fails_its_answer() {
    let moto = Moto::start();
    let own = moto.own().await;
    moto.fault_after_apply("iam", "CreateServiceLinkedRole", 400, "InvalidInput", "has been taken in this account");
    let iam = aws_sdk_iam::Client::new(&own);
    let created =
        iam.create_service_linked_role().aws_service_name("autoscaling.amazonaws.com").custom_suffix("Raced").send();
    assert_eq!(failure(created.await), ("InvalidInput".to_owned(), "has been taken in this account".to_owned()));
    iam.get_role().role_name("AWSServiceRoleForAutoScaling_Raced").send().await.expect("the role was made");
}

// --- concurrent edits ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn queued_edit_lands_right_after_the_next_get_key_policy() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let other_key = create_key(&own, None).await;
    let (role, id) = create_role(&own, "editor").await;
    let sneaky = json!({"Sid": "Sneaky", "Effect": "Allow", "Principal": {"AWS": role},
                        "Action": "kms:Decrypt", "Resource": "*"});
    let queued = hook(&moto.url, "POST", "/_launcher/edits", json!({"key": key, "statement": sneaky}));
    assert_eq!(queued, json!({"pending": 1, "applied": 0}));

    let sids = |p: Value| p["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].clone()).collect::<Vec<_>>();
    // Another key's read does not fire it; this key's first read does not see it.
    key_policy(&own, &other_key).await;
    assert_eq!(hook(&moto.url, "GET", "/_launcher/edits", Value::Null)["applied"], 0);
    let first = key_policy(&own, &key).await;
    assert!(!sids(first).contains(&json!("Sneaky")));
    assert_eq!(hook(&moto.url, "GET", "/_launcher/edits", Value::Null), json!({"pending": 0, "applied": 1}));
    // The next read does, once: the statement was appended to the stored policy.
    let second = key_policy(&own, &key).await;
    assert_eq!(sids(second.clone()), [json!("Enable IAM User Permissions"), json!("Sneaky")]);
    assert_eq!(second["Statement"][1]["Principal"]["AWS"], json!(role));
    assert_eq!(sids(key_policy(&own, &key).await).len(), 2);
    // Its principal was recorded like any other: a deleted role shows as its id.
    delete_role(&own, "editor").await;
    assert_eq!(key_policy(&own, &key).await["Statement"][1]["Principal"]["AWS"], json!(id));
}

// --- the fault proxy -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn fault_proxy_throttles_every_request_at_probability_one() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto, &["--throttle", "1.0"]);
    let conf = through(&proxy, &moto).await;
    moto.reset_calls();

    let kms = aws_sdk_kms::Client::new(&conf);
    assert_eq!(code(kms.list_keys().send().await), "ThrottlingException");
    let asc = aws_sdk_autoscaling::Client::new(&conf);
    assert_eq!(code(asc.describe_auto_scaling_groups().send().await), "Throttling");
    assert!(moto.calls().is_empty(), "nothing reached the launcher");
    let stats = proxy.stats();
    assert_eq!(
        (stats["requests"].clone(), stats["throttled"].clone(), stats["forwarded"].clone()),
        (json!(2), json!(2), json!(0))
    );
    assert_eq!(stats["by_action"]["ListKeys"], json!({"requests": 1, "faults": 1}));

    // Turned off at runtime, requests pass through unchanged.
    proxy.set(json!({"throttle": 0.0}));
    hook(&proxy.url, "POST", "/_proxy/stats/reset", Value::Null);
    kms.list_keys().send().await.unwrap();
    assert_eq!(moto.calls(), [("kms".to_owned(), "ListKeys".to_owned())]);
    assert_eq!(proxy.stats()["forwarded"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_proxy_lost_write_is_applied_although_the_client_got_a_500() {
    let moto = Moto::start();
    let own = moto.own().await;
    create_asgs(&own, &["web"]).await;
    let (slr, _) = create_slr(&own, "Lost").await;
    let proxy = FaultProxy::start(&moto, &["--lost-write", "1.0", "--seed", "3"]);
    let conf = through(&proxy, &moto).await;

    let r = update_asg_role(&conf, "web", &slr).await;
    let err = r.expect_err("the answer is lost");
    assert_eq!(err.code(), Some("InternalFailure"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(asg_role(&own, "web").await.as_deref(), Some(slr.as_str()), "yet the write was done");
    // Reads are never lost.
    assert_eq!(asg_role(&conf, "web").await.as_deref(), Some(slr.as_str()));
    let stats = proxy.stats();
    assert_eq!((stats["lost_writes"].clone(), stats["forwarded"].clone()), (json!(1), json!(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_proxy_quota_throttles_beyond_the_burst_and_counts_it_apart() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto, &["--quota", "ListKeys=0.2:2"]);
    let conf = through(&proxy, &moto).await;
    let kms = aws_sdk_kms::Client::new(&conf);
    kms.list_keys().send().await.unwrap();
    kms.list_keys().send().await.unwrap();
    assert_eq!(code(kms.list_keys().send().await), "ThrottlingException");
    assert_eq!(code(kms.list_keys().send().await), "ThrottlingException");
    // Other actions have no quota.
    kms.describe_key().key_id(create_key(&moto.own().await, None).await).send().await.unwrap();
    let stats = proxy.stats();
    assert_eq!((stats["quota_throttled"].clone(), stats["throttled"].clone()), (json!(2), json!(0)));
    assert_eq!(stats["by_action"]["ListKeys"], json!({"requests": 4, "faults": 2}));
    assert_eq!(stats["forwarded"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_proxy_decisions_repeat_for_the_same_seed() {
    let moto = Moto::start();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let proxy = FaultProxy::start(&moto, &["--seed", "42", "--throttle", "0.3", "--server-error", "0.3"]);
        let kms = aws_sdk_kms::Client::new(&through(&proxy, &moto).await);
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            outcomes.push(kms.list_keys().send().await.err().and_then(|e| e.code().map(str::to_owned)));
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1]);
    let kinds = |want: Option<&str>| runs[0].iter().filter(|o| o.as_deref() == want).count();
    assert!(kinds(None) > 0 && kinds(Some("ThrottlingException")) > 0 && kinds(Some("KMSInternalException")) > 0);
}
