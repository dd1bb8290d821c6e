//! The test emulator itself: the launcher's strict mode (each behaviour as AWS documents
//! it, and moto's lenient behaviour when switched off), the concurrent-edit hook, and the
//! fault proxy in front of the launcher. Everything goes through the AWS SDK for Rust.

use std::time::{Duration, Instant};

use crate::common::*;
use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::{
    LaunchTemplate as AsgLaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification, MixedInstancesPolicy,
};
use aws_sdk_ec2::types::{
    BlockDeviceMapping as Ec2Mapping, EbsBlockDevice, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, RequestLaunchTemplateData,
};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, GrantOperation};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
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
               "key_state": true, "grant_paging": true, "asg_roles": true, "launches": true,
               "ec2_reads": true, "policy_size": true})
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
               "key_state": false, "grant_paging": false, "asg_roles": false, "launches": false,
               "ec2_reads": false, "policy_size": false})
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

// --- 1. AWS managed keys and aliases --------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_ebs_key_is_aws_managed_by_alias_name_and_alias_arn() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let by_name = kms.describe_key().key_id("alias/aws/ebs").send().await.unwrap();
    let by_name = by_name.key_metadata().unwrap();
    assert_eq!(by_name.key_manager(), Some(&aws_sdk_kms::types::KeyManagerType::Aws));
    let alias_arn = format!("arn:aws:kms:{REGION}:{OWN}:alias/aws/ebs");
    let by_arn = kms.describe_key().key_id(&alias_arn).send().await.unwrap();
    assert_eq!(by_arn.key_metadata().unwrap().arn(), by_name.arn());
    assert!(by_name.arn().unwrap().starts_with(&format!("arn:aws:kms:{REGION}:{OWN}:key/")));
    // A key of one's own is customer managed.
    let mine = kms.describe_key().key_id(create_key(&own, None).await).send().await.unwrap();
    assert_eq!(mine.key_metadata().unwrap().key_manager(), Some(&aws_sdk_kms::types::KeyManagerType::Customer));
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_key_by_a_customer_alias_arn_follows_update_alias() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let (first, second) = (create_key(&own, None).await, create_key(&own, None).await);
    kms.create_alias().alias_name("alias/ebs-data").target_key_id(key_id(&first)).send().await.unwrap();
    let alias_arn = format!("arn:aws:kms:{REGION}:{OWN}:alias/ebs-data");
    let arn = |out: aws_sdk_kms::operation::describe_key::DescribeKeyOutput| {
        out.key_metadata().unwrap().arn().unwrap().to_owned()
    };
    assert_eq!(arn(kms.describe_key().key_id(&alias_arn).send().await.unwrap()), first);
    kms.update_alias().alias_name("alias/ebs-data").target_key_id(key_id(&second)).send().await.unwrap();
    assert_eq!(arn(kms.describe_key().key_id(&alias_arn).send().await.unwrap()), second);
    assert_eq!(arn(kms.describe_key().key_id("alias/ebs-data").send().await.unwrap()), second);
}

// --- 2. EBS encryption by default -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_ebs_default_key_is_alias_aws_ebs_until_modified_and_again_after_reset() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let default = |o: aws_sdk_ec2::operation::get_ebs_default_kms_key_id::GetEbsDefaultKmsKeyIdOutput| {
        o.kms_key_id().unwrap().to_owned()
    };
    assert_eq!(default(ec2.get_ebs_default_kms_key_id().send().await.unwrap()), "alias/aws/ebs");
    assert_eq!(ec2.get_ebs_encryption_by_default().send().await.unwrap().ebs_encryption_by_default(), Some(false));
    ec2.enable_ebs_encryption_by_default().send().await.unwrap();
    assert_eq!(ec2.get_ebs_encryption_by_default().send().await.unwrap().ebs_encryption_by_default(), Some(true));

    // Modify takes any form of the key and answers (and keeps) its ARN.
    let key = create_key(&own, None).await;
    let modified = ec2.modify_ebs_default_kms_key_id().kms_key_id(key_id(&key)).send().await.unwrap();
    assert_eq!(modified.kms_key_id(), Some(key.as_str()));
    assert_eq!(default(ec2.get_ebs_default_kms_key_id().send().await.unwrap()), key);
    // A key of another account is taken as given.
    let foreign = format!("arn:aws:kms:{REGION}:{OTHER}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    ec2.modify_ebs_default_kms_key_id().kms_key_id(&foreign).send().await.unwrap();
    assert_eq!(default(ec2.get_ebs_default_kms_key_id().send().await.unwrap()), foreign);

    // Reset answers the AWS managed key's ARN; Get then answers the alias again.
    let reset = ec2.reset_ebs_default_kms_key_id().send().await.unwrap();
    let kms = aws_sdk_kms::Client::new(&own);
    let managed = kms.describe_key().key_id("alias/aws/ebs").send().await.unwrap();
    assert_eq!(reset.kms_key_id(), managed.key_metadata().unwrap().arn());
    assert_eq!(default(ec2.get_ebs_default_kms_key_id().send().await.unwrap()), "alias/aws/ebs");
}

// --- 3. encrypted volumes, snapshots and images ---------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_image_from_an_encrypted_snapshot_shows_it_encrypted_and_the_snapshot_its_key() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let key = create_key(&own, None).await;
    let snapshot = encrypted_snapshot(&own, key_id(&key)).await; // by key id: shown as ARN
    let out = ec2.describe_snapshots().snapshot_ids(&snapshot).send().await.unwrap();
    let s = &out.snapshots()[0];
    assert_eq!((s.encrypted(), s.kms_key_id()), (Some(true), Some(key.as_str())));

    let image = image_from_snapshot(&own, "encrypted-root", &snapshot).await;
    let out = ec2.describe_images().image_ids(&image).send().await.unwrap();
    let img = &out.images()[0];
    assert_eq!(img.root_device_name(), Some("/dev/xvda"));
    let mappings = img.block_device_mappings();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let ebs = mappings[0].ebs().unwrap();
    // As AWS: the image says encrypted; the key is the snapshot's to show.
    assert_eq!((ebs.snapshot_id(), ebs.encrypted(), ebs.kms_key_id()), (Some(snapshot.as_str()), Some(true), None));

    // CreateImage adds the given mappings to the instance's.
    let run = ec2.run_instances().image_id(AMI).min_count(1).max_count(1).send().await.unwrap();
    let instance = run.instances()[0].instance_id().unwrap();
    let data =
        Ec2Mapping::builder().device_name("/dev/sdb").ebs(EbsBlockDevice::builder().snapshot_id(&snapshot).build());
    let created = ec2.create_image().instance_id(instance).name("with-data").block_device_mappings(data.build()).send();
    let created = created.await.unwrap().image_id().unwrap().to_owned();
    let out = ec2.describe_images().image_ids(&created).send().await.unwrap();
    let sdb = out.images()[0].block_device_mappings().iter().find(|m| m.device_name() == Some("/dev/sdb")).unwrap();
    assert_eq!(
        (sdb.ebs().unwrap().snapshot_id(), sdb.ebs().unwrap().encrypted()),
        (Some(snapshot.as_str()), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_images_fails_whole_for_one_unknown_id_and_leaves_out_a_deregistered_one() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let unknown = "ami-0123456789abcdef0";
    let (c, message) = failure(ec2.describe_images().image_ids(AMI).image_ids(unknown).send().await);
    assert_eq!(c, "InvalidAMIID.NotFound");
    assert!(message.contains(unknown), "{message}");
    assert_eq!(code(ec2.describe_images().image_ids(AMI).image_ids("img-1").send().await), "InvalidAMIID.Malformed");
    // Recently deregistered: left out of the answer, the request succeeds.
    let key = create_key(&own, None).await;
    let gone = image_from_snapshot(&own, "gone", &encrypted_snapshot(&own, &key).await).await;
    ec2.deregister_image().image_id(&gone).send().await.unwrap();
    let out = ec2.describe_images().image_ids(AMI).image_ids(&gone).send().await.unwrap();
    let ids: Vec<&str> = out.images().iter().filter_map(|i| i.image_id()).collect();
    assert_eq!(ids, [AMI]);

    strict(&moto, json!({"ec2_reads": false}));
    let out = ec2.describe_images().image_ids(AMI).image_ids(unknown).send().await.unwrap();
    assert_eq!(out.images().len(), 1, "moto's own: the ids it knows");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_image_is_described_once_shared_and_its_snapshot_is_not() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let owners = create_key(&other, None).await;
    let snapshot = encrypted_snapshot(&other, &owners).await;
    let image = image_from_snapshot(&other, "golden", &snapshot).await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    assert_eq!(code(ec2.describe_images().image_ids(&image).send().await), "InvalidAMIID.NotFound");

    share_image(&other, &image, OWN).await;
    let out = ec2.describe_images().image_ids(&image).image_ids(AMI).send().await.unwrap();
    let shared = out.images().iter().find(|i| i.image_id() == Some(image.as_str())).expect("the shared image");
    assert_eq!(shared.owner_id(), Some(OTHER));
    let ebs = shared.block_device_mappings()[0].ebs().unwrap();
    assert_eq!((ebs.snapshot_id(), ebs.encrypted()), (Some(snapshot.as_str()), Some(true)));
    assert_eq!(code(ec2.describe_snapshots().snapshot_ids(&snapshot).send().await), "InvalidSnapshot.NotFound");

    // A launch from it re-encrypts the volume under the launching account's default key,
    // and still reads the snapshot under the owner's.
    let default = create_key(&own, None).await;
    ec2.modify_ebs_default_kms_key_id().kms_key_id(&default).send().await.unwrap();
    let lt = launch_template(&own, "web", Some(&image), None).await;
    group_on_template(&own, "web", &lt, 0, None).await;
    let verdict = can_launch(&moto, "web");
    let mut used: Vec<&str> = verdict["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    used.sort();
    let mut want = [default.as_str(), owners.as_str()];
    want.sort();
    assert_eq!(used, want, "{verdict}");
}

// --- 4. launch templates ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn describe_launch_template_versions_takes_an_id_or_a_name_not_both() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let id = launch_template(&own, "web", None, None).await;
    let both = || ec2.describe_launch_template_versions().launch_template_id(&id).launch_template_name("web");
    assert_eq!(code(both().versions("$Default").send().await), "InvalidParameterCombination");
    for one in [
        ec2.describe_launch_template_versions().launch_template_id(&id),
        ec2.describe_launch_template_versions().launch_template_name("web"),
    ] {
        let out = one.versions("$Default").send().await.unwrap();
        assert_eq!(out.launch_template_versions()[0].launch_template_id(), Some(id.as_str()));
    }
    strict(&moto, json!({"ec2_reads": false}));
    assert_eq!(both().versions("$Default").send().await.unwrap().launch_template_versions().len(), 1, "moto's own");
}

#[tokio::test(flavor = "multi_thread")]
async fn resolve_alias_answers_the_ami_a_parameter_holds_and_launches_use_it() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let key = create_key(&own, None).await;
    let snapshot = encrypted_snapshot(&own, &key).await;
    let image = image_from_snapshot(&own, "golden", &snapshot).await;
    put_parameter(&moto, "/golden/ami", &image);
    let id = launch_template(&own, "web", Some("resolve:ssm:/golden/ami"), None).await;
    let image_of = |resolve: Option<bool>| {
        let req = ec2.describe_launch_template_versions().launch_template_id(&id).versions("$Latest");
        let req = req.set_resolve_alias(resolve);
        async move {
            let out = req.send().await.unwrap();
            out.launch_template_versions()[0].launch_template_data().unwrap().image_id().unwrap().to_owned()
        }
    };
    assert_eq!(image_of(None).await, "resolve:ssm:/golden/ami");
    assert_eq!(image_of(Some(false)).await, "resolve:ssm:/golden/ami");
    assert_eq!(image_of(Some(true)).await, image);
    assert_eq!(image_of(None).await, "resolve:ssm:/golden/ami", "the stored version is unchanged");
    // A parameter that does not exist is not resolved.
    let missing = launch_template(&own, "missing", Some("resolve:ssm:/nothing/here"), None).await;
    let out =
        ec2.describe_launch_template_versions().launch_template_id(&missing).versions("$Latest").resolve_alias(true);
    let out = out.send().await.unwrap();
    assert_eq!(
        out.launch_template_versions()[0].launch_template_data().unwrap().image_id(),
        Some("resolve:ssm:/nothing/here")
    );

    // A launch resolves it too: the image's snapshot key is one it uses.
    group_on_template(&own, "web", &id, 0, None).await;
    let verdict = can_launch(&moto, "web");
    assert_eq!(verdict["keys"][0]["key"], key.as_str(), "{verdict}");
    assert!(verdict["keys"][0]["source"].as_str().unwrap().contains(&snapshot), "{verdict}");
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_template_versions_resolve_default_latest_and_numbers_by_id_and_by_name() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let id = launch_template(&own, "web", None, Some("alias/one")).await;
    let foreign = format!("arn:aws:kms:{REGION}:{OTHER}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    let alias_arn = format!("arn:aws:kms:{REGION}:{OWN}:alias/three");
    ec2.create_launch_template_version()
        .launch_template_id(&id)
        .launch_template_data(template_data(None, Some(&foreign)))
        .send()
        .await
        .unwrap();
    // Version 3 is based on version 1 and replaces only its block device mappings.
    let mapping_only = RequestLaunchTemplateData::builder()
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name("/dev/sdb")
                .ebs(LaunchTemplateEbsBlockDeviceRequest::builder().encrypted(true).kms_key_id(&alias_arn).build())
                .build(),
        )
        .build();
    let v3 = ec2.create_launch_template_version().launch_template_name("web").source_version("1");
    v3.launch_template_data(mapping_only).send().await.unwrap();
    ec2.modify_launch_template().launch_template_id(&id).default_version("2").send().await.unwrap();

    for by_name in [false, true] {
        for (wanted, number, key) in [
            ("$Default", 2, foreign.as_str()),
            ("$Latest", 3, alias_arn.as_str()),
            ("2", 2, foreign.as_str()),
            ("1", 1, "alias/one"),
        ] {
            let req = ec2.describe_launch_template_versions().versions(wanted);
            let req = if by_name { req.launch_template_name("web") } else { req.launch_template_id(&id) };
            let out = req.send().await.unwrap();
            let versions = out.launch_template_versions();
            assert_eq!(versions.len(), 1, "{wanted}");
            assert_eq!(versions[0].version_number(), Some(number), "{wanted}");
            assert_eq!(versions[0].default_version(), Some(number == 2), "{wanted}");
            let data = versions[0].launch_template_data().unwrap();
            assert_eq!(data.image_id(), Some(AMI), "{wanted}");
            let ebs = data.block_device_mappings()[0].ebs().unwrap();
            assert_eq!((ebs.encrypted(), ebs.kms_key_id()), (Some(true), Some(key)), "{wanted}");
        }
    }
}

// --- 5. groups on launch templates and launch configurations ---------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn groups_keep_their_launch_templates_mixed_policies_and_launch_configurations() {
    let moto = Moto::start();
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let id = launch_template(&own, "web", None, None).await;
    let base = |name: &str| {
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .availability_zones("us-west-2a")
            .min_size(0)
            .max_size(2)
    };
    let by_name = |v: Option<&str>| {
        LaunchTemplateSpecification::builder().launch_template_name("web").set_version(v.map(str::to_owned)).build()
    };
    base("default").launch_template(template_spec(&id, Some("$Default"))).send().await.unwrap();
    base("latest").launch_template(by_name(Some("$Latest"))).send().await.unwrap();
    base("numbered").launch_template(by_name(Some("1"))).send().await.unwrap();
    base("unversioned").launch_template(template_spec(&id, None)).send().await.unwrap();
    let policy = MixedInstancesPolicy::builder()
        .launch_template(
            AsgLaunchTemplate::builder()
                .launch_template_specification(by_name(Some("1")))
                .overrides(LaunchTemplateOverrides::builder().instance_type("t3.small").build())
                .overrides(
                    LaunchTemplateOverrides::builder()
                        .instance_type("t3.large")
                        .launch_template_specification(template_spec(&id, Some("$Latest")))
                        .build(),
                )
                .build(),
        )
        .build();
    base("mixed").mixed_instances_policy(policy).send().await.unwrap();

    let described = |name: &'static str| {
        let asc = asc.clone();
        async move {
            let out = asc.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
            out.auto_scaling_groups()[0].clone()
        }
    };
    for (name, version) in
        [("default", Some("$Default")), ("latest", Some("$Latest")), ("numbered", Some("1")), ("unversioned", None)]
    {
        let g = described(name).await;
        let lt = g.launch_template().unwrap_or_else(|| panic!("{name}: {g:?}"));
        assert_eq!((lt.launch_template_id(), lt.launch_template_name()), (Some(id.as_str()), Some("web")), "{name}");
        assert_eq!(lt.version(), version, "{name}");
    }
    // Setting the role leaves the mixed instances policy as it was.
    let (slr, _) = create_slr(&own, "Mixed").await;
    update_asg_role(&own, "mixed", &slr).await.unwrap();
    let g = described("mixed").await;
    assert!(g.launch_template().is_none());
    let lt = g.mixed_instances_policy().unwrap().launch_template().unwrap();
    let spec = lt.launch_template_specification().unwrap();
    assert_eq!((spec.launch_template_id(), spec.version()), (Some(id.as_str()), Some("1")));
    let overrides = lt.overrides();
    assert_eq!(overrides.len(), 2);
    assert_eq!(overrides[0].instance_type(), Some("t3.small"));
    let over = overrides[1].launch_template_specification().unwrap();
    assert_eq!((over.launch_template_id(), over.version()), (Some(id.as_str()), Some("$Latest")));

    // A launch configuration keeps its mappings (no KmsKeyId exists there), image and price.
    let data = aws_sdk_autoscaling::types::BlockDeviceMapping::builder()
        .device_name("/dev/sdb")
        .ebs(aws_sdk_autoscaling::types::Ebs::builder().encrypted(true).snapshot_id("snap-0123456789abcdef0").build())
        .build();
    let lc = asc.create_launch_configuration().launch_configuration_name("spot").image_id(AMI);
    lc.instance_type("t3.micro").spot_price("0.05").block_device_mappings(data).send().await.unwrap();
    let out = asc.describe_launch_configurations().launch_configuration_names("spot").send().await.unwrap();
    let lc = &out.launch_configurations()[0];
    assert_eq!((lc.image_id(), lc.spot_price()), (Some(AMI), Some("0.05")));
    let ebs = lc.block_device_mappings()[0].ebs().unwrap();
    assert_eq!((ebs.encrypted(), ebs.snapshot_id()), (Some(true), Some("snap-0123456789abcdef0")));
}

// --- 6. scaling activities --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn scaling_activities_come_most_recent_first_in_pages_from_the_hook() {
    let moto = Moto::start();
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    assert!(activities(&own, "web").await.is_empty());
    let first = moto.hook("POST", "/_launcher/activities", json!({"asg": "web", "seconds_ago": 600}));
    assert_eq!(first["StatusCode"], "Failed");
    assert_eq!(first["StatusMessage"], LAUNCH_FAILURE);
    assert!(first["Description"].as_str().unwrap().starts_with("Launching a new EC2 instance: i-"));
    for d in ["second", "third"] {
        moto.hook(
            "POST",
            "/_launcher/activities",
            json!({"asg": "web", "status_code": "Successful", "description": d}),
        );
    }
    moto.hook("POST", "/_launcher/activities", json!({"asg": "api", "description": "elsewhere"}));
    let bad = json!({"asg": "web", "status_code": "Fine"}).to_string();
    assert_eq!(http(&moto.url, "POST", "/_launcher/activities", &bad).0, 400);

    let page = asc.describe_scaling_activities().auto_scaling_group_name("web").max_records(2).send().await.unwrap();
    let descriptions: Vec<_> = page.activities().iter().map(|a| a.description().unwrap().to_owned()).collect();
    assert_eq!(descriptions, ["third", "second"]);
    let a = &page.activities()[0];
    assert_eq!((a.auto_scaling_group_name(), a.progress()), (Some("web"), Some(100)));
    assert!(a.activity_id().is_some() && a.cause().is_some() && a.start_time().is_some() && a.end_time().is_some());
    let token = page.next_token().expect("a second page").to_owned();
    let rest = asc.describe_scaling_activities().auto_scaling_group_name("web").max_records(2).next_token(&token);
    let rest = rest.send().await.unwrap();
    assert_eq!(rest.activities().len(), 1);
    assert_eq!(rest.activities()[0].activity_id(), first["ActivityId"].as_str());
    assert_eq!(rest.activities()[0].status_code().unwrap().as_str(), "Failed");
    assert!(rest.next_token().is_none());

    // Without a group name: every group of the account and region.
    assert_eq!(asc.describe_scaling_activities().send().await.unwrap().activities().len(), 4);
    let r = asc.describe_scaling_activities().max_records(101).send().await;
    assert_eq!(code(r), "ValidationError");
    let r = asc.describe_scaling_activities().auto_scaling_group_name("web").next_token("never-issued").send().await;
    assert_eq!(code(r), "InvalidNextToken");
}

// --- 7. launches --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_case_1_key_launches_once_its_policy_names_the_groups_role() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await; // the default policy: the account root only
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 1, None).await;
    assert_eq!(activities(&own, "web").await, [failed()]);
    assert_eq!(instance_count(&own, "web").await, 0, "the failed instance does not stay");
    let verdict = can_launch(&moto, "web");
    assert_eq!(verdict["can_launch"], false);
    assert_eq!(verdict["keys"][0]["key"], key.as_str());
    assert!(verdict["keys"][0]["source"].as_str().unwrap().contains(&id), "{verdict}");

    // The statements name a role of the group's own; the group is still on the default role.
    let (slr, _) = create_slr(&own, "Web").await;
    put_policy(&own, &key, &key_policy_with(OWN, case1_statements(&slr))).await.unwrap();
    set_desired(&own, "web", 1).await;
    assert_eq!(activities(&own, "web").await, [failed(), failed()]);

    update_asg_role(&own, "web", &slr).await.unwrap();
    assert_eq!(can_launch(&moto, "web")["can_launch"], true);
    set_desired(&own, "web", 2).await;
    assert_eq!(activities(&own, "web").await, [successful(), successful(), failed(), failed()]);
    assert_eq!(instance_count(&own, "web").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_policy_actions_are_read_with_wildcards_in_string_or_list_form() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (slr, _) = create_slr(&own, "Web").await;
    let key = create_key(&own, None).await;
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 0, Some(&slr)).await;
    let allow = |principal: &str, action: Value| json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*"});
    let cases = [
        (vec![allow(&slr, json!("kms:*"))], true),
        (vec![json!({"Effect": "Allow", "Principal": "*", "Action": ["kms:*"], "Resource": ["*"]})], true),
        (
            vec![allow(
                &slr,
                json!([
                    "KMS:encrypt",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:DescribeKey",
                    "kms:CreateGrant"
                ]),
            )],
            true,
        ),
        // ReEncryptFrom alone leaves kms:ReEncryptTo out.
        (
            vec![allow(
                &slr,
                json!([
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncryptFrom",
                    "kms:GenerateDataKey*",
                    "kms:DescribeKey",
                    "kms:CreateGrant"
                ]),
            )],
            false,
        ),
        // A condition it does not know makes the Allow not count.
        (
            vec![
                allow(
                    &slr,
                    json!(["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]),
                ),
                json!({"Effect": "Allow", "Principal": {"AWS": &slr}, "Action": "kms:CreateGrant", "Resource": "*",
                     "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}}}),
            ],
            false,
        ),
        // The root delegates to IAM: it does not count for the role.
        (vec![allow(OWN, json!("kms:*"))], false),
    ];
    for (statements, want) in cases {
        let text = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        put_policy(&own, &key, &text).await.unwrap();
        let verdict = can_launch(&moto, "web");
        assert_eq!(verdict["can_launch"], want, "{text}: {verdict}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_2_key_needs_the_owners_policy_and_a_grant_for_the_role() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let (slr, _) = create_slr(&own, "Api").await;
    let key = create_key(&other, None).await;
    let id = launch_template(&own, "api", None, Some(&key)).await;
    group_on_template(&own, "api", &id, 0, Some(&slr)).await;
    assert!(whys(&can_launch(&moto, "api"))[0].starts_with("owner's key policy does not allow account"));

    let account_use = json!({"Sid": "Account", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey",
                   "kms:CreateGrant"], "Resource": "*"});
    put_policy(&other, &key, &key_policy_with(OTHER, vec![account_use])).await.unwrap();
    assert!(whys(&can_launch(&moto, "api"))[0].starts_with("no grant"));
    // A grant missing an operation does not do.
    use GrantOperation::*;
    let most =
        [Encrypt, Decrypt, ReEncryptFrom, ReEncryptTo, GenerateDataKey, GenerateDataKeyWithoutPlaintext, DescribeKey];
    grant(&own, &key, &slr, Some("partial"), &most).await.unwrap();
    set_desired(&own, "api", 1).await;
    assert_eq!(activities(&own, "api").await, [failed()]);

    let all: Vec<GrantOperation> = most.iter().cloned().chain([CreateGrant]).collect();
    grant(&own, &key, &slr, Some("asg"), &all).await.unwrap();
    assert_eq!(can_launch(&moto, "api")["can_launch"], true);
    set_desired(&own, "api", 1).await;
    assert_eq!(activities(&own, "api").await, [successful(), failed()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconditional_deny_on_the_account_root_makes_the_launch_fail() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (slr, _) = create_slr(&own, "Web").await;
    let key = create_key(&own, None).await;
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 0, Some(&slr)).await;
    let deny = |condition: Option<Value>| {
        let mut st = json!({"Sid": "NoGrants", "Effect": "Deny", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
                            "Action": "kms:CreateGrant", "Resource": "*"});
        if let Some(c) = condition {
            st["Condition"] = c;
        }
        st
    };
    let mut statements = case1_statements(&slr);
    statements.push(deny(Some(json!({"Bool": {"aws:ViaAWSService": "false"}}))));
    put_policy(&own, &key, &key_policy_with(OWN, statements)).await.unwrap();
    assert_eq!(can_launch(&moto, "web")["can_launch"], true, "a conditional Deny does not apply");

    let mut statements = case1_statements(&slr);
    statements.push(deny(None));
    put_policy(&own, &key, &key_policy_with(OWN, statements)).await.unwrap();
    assert_eq!(whys(&can_launch(&moto, "web")), ["key policy statement NoGrants denies kms:CreateGrant"]);
    set_desired(&own, "web", 1).await;
    assert_eq!(activities(&own, "web").await, [failed()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_of_an_images_snapshot_is_checked_too() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (slr, _) = create_slr(&own, "Web").await;
    let key = create_key(&own, None).await;
    let snapshot = encrypted_snapshot(&own, &key).await;
    let image = image_from_snapshot(&own, "encrypted-root", &snapshot).await;
    let id = launch_template(&own, "web", Some(&image), None).await;
    group_on_template(&own, "web", &id, 1, Some(&slr)).await;
    assert_eq!(activities(&own, "web").await, [failed()]);
    let verdict = can_launch(&moto, "web");
    assert_eq!(verdict["keys"][0]["key"], key.as_str());
    assert!(verdict["keys"][0]["source"].as_str().unwrap().contains(&snapshot), "{verdict}");

    put_policy(&own, &key, &key_policy_with(OWN, case1_statements(&slr))).await.unwrap();
    set_desired(&own, "web", 1).await;
    assert_eq!(activities(&own, "web").await, [successful(), failed()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_managed_keys_need_nothing_but_a_customer_default_key_is_checked() {
    let moto = Moto::start();
    let own = moto.own().await;
    let by_alias = launch_template(&own, "managed", None, Some("alias/aws/ebs")).await;
    group_on_template(&own, "managed", &by_alias, 1, None).await;
    assert_eq!(activities(&own, "managed").await, [successful()]);
    assert_eq!(whys(&can_launch(&moto, "managed")), ["AWS managed key: needs nothing"]);

    // Encrypted without a key: the account's default key, alias/aws/ebs until changed.
    let unkeyed = launch_template(&own, "unkeyed", None, Some("")).await;
    group_on_template(&own, "unkeyed", &unkeyed, 1, None).await;
    assert_eq!(activities(&own, "unkeyed").await, [successful()]);
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let key = create_key(&own, None).await;
    ec2.modify_ebs_default_kms_key_id().kms_key_id(&key).send().await.unwrap();
    set_desired(&own, "unkeyed", 2).await;
    assert_eq!(activities(&own, "unkeyed").await, [failed(), successful()]);

    // Encryption by default: even a group with no encrypted mapping uses the default key.
    let plain = launch_template(&own, "plain", None, None).await;
    group_on_template(&own, "plain", &plain, 0, None).await;
    assert_eq!(
        can_launch(&moto, "plain"),
        json!({"can_launch": true, "role": slr_arn(OWN, None), "keys": [], "problems": []})
    );
    ec2.enable_ebs_encryption_by_default().send().await.unwrap();
    let verdict = can_launch(&moto, "plain");
    assert_eq!((verdict["can_launch"].clone(), verdict["keys"][0]["key"].clone()), (json!(false), json!(key)));
    // So does a launch configuration's encrypted mapping (which cannot name a key).
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let data = aws_sdk_autoscaling::types::BlockDeviceMapping::builder()
        .device_name("/dev/sdb")
        .ebs(aws_sdk_autoscaling::types::Ebs::builder().encrypted(true).volume_size(8).build())
        .build();
    let lc = asc.create_launch_configuration().launch_configuration_name("lc").image_id(AMI).instance_type("t3.micro");
    lc.block_device_mappings(data).send().await.unwrap();
    let group = asc.create_auto_scaling_group().auto_scaling_group_name("on-lc").launch_configuration_name("lc");
    group.availability_zones("us-west-2a").min_size(0).max_size(2).desired_capacity(1).send().await.unwrap();
    let verdict = can_launch(&moto, "on-lc");
    assert_eq!(verdict["keys"][0]["key"], key.as_str());
    assert!(verdict["keys"][0]["source"].as_str().unwrap().contains("launch configuration lc"), "{verdict}");
    // Back to the AWS managed key: nothing to check.
    ec2.reset_ebs_default_kms_key_id().send().await.unwrap();
    set_desired(&own, "on-lc", 1).await;
    assert_eq!(activities(&own, "on-lc").await, [successful(), failed()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_key_fails_the_launch() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (slr, _) = create_slr(&own, "Web").await;
    let key = create_key(&own, None).await;
    put_policy(&own, &key, &key_policy_with(OWN, case1_statements(&slr))).await.unwrap();
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 1, Some(&slr)).await;
    let kms = aws_sdk_kms::Client::new(&own);
    kms.disable_key().key_id(key_id(&key)).send().await.unwrap();
    set_desired(&own, "web", 2).await;
    assert_eq!(activities(&own, "web").await, [failed(), successful()]);
    assert_eq!(whys(&can_launch(&moto, "web")), ["key is Disabled"]);
    assert_eq!(instance_count(&own, "web").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_younger_than_the_propagation_window_cannot_launch() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let anyone = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
    put_policy(&own, &key, &key_policy_with(OWN, vec![anyone])).await.unwrap();
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 0, None).await;
    strict(&moto, json!({"propagation_seconds": 1.5, "asg_roles": false}));
    let (slr, _) = create_slr(&own, "Fresh").await;
    let born = Instant::now();
    update_asg_role(&own, "web", &slr).await.unwrap();
    let verdict = can_launch(&moto, "web");
    assert!(born.elapsed() < Duration::from_millis(1500), "the check took longer than the window");
    assert_eq!(verdict["can_launch"], false);
    assert!(whys(&verdict)[0].ends_with("does not exist or has not propagated"), "{verdict}");
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(born.elapsed())).await;
    assert_eq!(can_launch(&moto, "web")["can_launch"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_launches_off_nothing_is_recorded_and_instances_stay() {
    let moto = Moto::start();
    let own = moto.own().await;
    strict(&moto, json!({"launches": false}));
    let key = create_key(&own, None).await;
    let id = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &id, 2, None).await;
    assert!(activities(&own, "web").await.is_empty());
    assert_eq!(instance_count(&own, "web").await, 2);
    // The evaluation is still there to ask.
    assert_eq!(can_launch(&moto, "web")["can_launch"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launch_uses_the_template_version_the_group_names_and_a_mixed_policys_templates() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (ec2, asc) = (aws_sdk_ec2::Client::new(&own), aws_sdk_autoscaling::Client::new(&own));
    let key = create_key(&own, None).await;
    let id = launch_template(&own, "web", None, None).await; // version 1: no encrypted volume
    let v2 = ec2.create_launch_template_version().launch_template_id(&id);
    v2.launch_template_data(template_data(None, Some(&key))).send().await.unwrap();
    let base = |name: &str| {
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .availability_zones("us-west-2a")
            .min_size(0)
            .max_size(1)
    };
    for (name, version) in
        [("default", Some("$Default")), ("unversioned", None), ("latest", Some("$Latest")), ("two", Some("2"))]
    {
        base(name).launch_template(template_spec(&id, version)).send().await.unwrap();
    }
    let judged = |name: &str| can_launch(&moto, name)["can_launch"].as_bool().unwrap();
    let now: Vec<bool> = ["default", "unversioned", "latest", "two"].iter().map(|n| judged(n)).collect();
    assert_eq!(now, [true, true, false, false]);
    ec2.modify_launch_template().launch_template_id(&id).default_version("2").send().await.unwrap();
    assert!(!judged("default") && !judged("unversioned"));
    ec2.modify_launch_template().launch_template_id(&id).default_version("1").send().await.unwrap();

    // A mixed instances group launches from its template and from its overrides' templates.
    let mixed = |overrides: Vec<LaunchTemplateOverrides>| {
        let lt = AsgLaunchTemplate::builder().launch_template_specification(template_spec(&id, Some("1")));
        MixedInstancesPolicy::builder().launch_template(lt.set_overrides(Some(overrides)).build()).build()
    };
    let plain = LaunchTemplateOverrides::builder().instance_type("t3.small").build();
    base("mixed-plain").mixed_instances_policy(mixed(vec![plain.clone()])).send().await.unwrap();
    let keyed = LaunchTemplateOverrides::builder()
        .instance_type("t3.large")
        .launch_template_specification(template_spec(&id, Some("2")))
        .build();
    base("mixed-keyed").mixed_instances_policy(mixed(vec![plain, keyed])).send().await.unwrap();
    assert!(judged("mixed-plain"));
    let verdict = can_launch(&moto, "mixed-keyed");
    assert_eq!(verdict["can_launch"], false);
    assert_eq!(verdict["keys"][0]["source"], format!("launch template {id} version 2 /dev/sdb"));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_grant_dry_run_across_accounts_follows_the_owner_key_policy_and_creates_nothing() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api"]).await; // brings the default service-linked role
    let root = format!("arn:aws:iam::{OWN}:root");
    let dry = || async {
        aws_sdk_kms::Client::new(&own)
            .create_grant()
            .key_id(&key)
            .grantee_principal(slr_arn(OWN, None))
            .retiring_principal(&root)
            .operations(GrantOperation::Decrypt)
            .dry_run(true)
            .send()
            .await
    };
    // The default policy allows only the owner's own account.
    assert_eq!(code(dry().await), "AccessDeniedException");
    // A statement conditioned on kms:GrantIsForAWSResource does not allow the caller's own call.
    let conditioned = json!({"Sid": "Attach", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:CreateGrant",
        "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}});
    let mut p = key_policy(&other, &key).await;
    p["Statement"].as_array_mut().unwrap().push(conditioned);
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(p.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(code(dry().await), "AccessDeniedException");
    // An unconditioned Allow for the account: the call would succeed.
    p["Statement"].as_array_mut().unwrap().push(json!({"Effect": "Allow", "Principal": {"AWS": OWN},
        "Action": "kms:CreateGrant", "Resource": "*"}));
    aws_sdk_kms::Client::new(&other)
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(p.to_string())
        .send()
        .await
        .unwrap();
    let e = dry().await.unwrap_err();
    assert_eq!(e.code(), Some("DryRunOperationException"));
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert!(grants(&other, &key).await.is_empty(), "a dry run creates no grant");
    // The real call, then the grants the group's account may retire, on the other account's key.
    aws_sdk_kms::Client::new(&own)
        .create_grant()
        .key_id(&key)
        .grantee_principal(slr_arn(OWN, None))
        .retiring_principal(&root)
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    let listed = aws_sdk_kms::Client::new(&own).list_retirable_grants().retiring_principal(&root).send().await.unwrap();
    let keys: Vec<&str> = listed.grants().iter().filter_map(|g| g.key_id()).collect();
    assert_eq!(keys, [key.as_str()], "listed by the caller's account, KeyId the key's ARN");
    let none = aws_sdk_kms::Client::new(&other)
        .list_retirable_grants()
        .retiring_principal(format!("arn:aws:iam::{OTHER}:root"))
        .send()
        .await
        .unwrap();
    assert!(none.grants().is_empty());
}

// --- IAM policy sizes --------------------------------------------------------------------

/// An IAM policy of exactly `size` characters without white space, padded with `pad`
/// white space characters that IAM does not count.
fn sized_policy(size: usize, pad: usize) -> String {
    let shell = |resource: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::{resource}"}}]}}"#
        )
    };
    let fill = size - shell("").len();
    let text = shell(&"b".repeat(fill));
    assert_eq!(text.len(), size);
    format!("{text}{}", " ".repeat(pad))
}

#[tokio::test(flavor = "multi_thread")]
async fn iam_refuses_policies_over_its_size_limits_and_does_not_count_white_space() {
    let moto = Moto::start();
    let iam = aws_sdk_iam::Client::new(&moto.own().await);
    // A managed policy: 6,144 characters, however much white space besides.
    let at_limit = iam.create_policy().policy_name("at-limit").policy_document(sized_policy(6144, 3000)).send();
    let arn = at_limit.await.unwrap().policy().unwrap().arn().unwrap().to_owned();
    let (refused, message) =
        failure(iam.create_policy().policy_name("over").policy_document(sized_policy(6145, 0)).send().await);
    assert_eq!((refused.as_str(), message.as_str()), ("LimitExceeded", "Cannot exceed quota for PolicySize: 6144"));
    let version = iam.create_policy_version().policy_arn(&arn).policy_document(sized_policy(6145, 0)).send().await;
    assert_eq!(code(version), "LimitExceeded");
    // A role's inline policies: 10,240 characters together.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role().role_name("r").assume_role_policy_document(trust).send().await.unwrap();
    let put = |name: &str, size: usize| {
        iam.put_role_policy().role_name("r").policy_name(name).policy_document(sized_policy(size, 100)).send()
    };
    put("a", 6000).await.unwrap();
    put("b", 4240).await.unwrap();
    assert_eq!(code(put("c", 200).await), "LimitExceeded", "10,440 together");
    put("b", 4000).await.expect("a policy replaced is not counted twice");
    // moto's own behaviour, when switched off: any size.
    strict(&moto, json!({"policy_size": false}));
    iam.create_policy().policy_name("over").policy_document(sized_policy(20000, 0)).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_template_versions_are_filtered_by_image_id_before_max_results() {
    let moto = Moto::start();
    let own = moto.own().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let id = launch_template(&own, "web", Some("ami-aaaa1111"), None).await;
    for image in ["ami-bbbb2222", "ami-aaaa1111", "ami-bbbb2222", "ami-aaaa1111"] {
        let data = RequestLaunchTemplateData::builder().image_id(image).build();
        ec2.create_launch_template_version().launch_template_id(&id).launch_template_data(data).send().await.unwrap();
    }
    let by_image = |image: &str, max: Option<i32>| {
        let filter = aws_sdk_ec2::types::Filter::builder().name("image-id").values(image).build();
        ec2.describe_launch_template_versions().launch_template_id(&id).filters(filter).set_max_results(max).send()
    };
    let numbers =
        |out: aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput| {
            out.launch_template_versions().iter().map(|v| v.version_number().unwrap()).collect::<Vec<i64>>()
        };
    assert_eq!(numbers(by_image("ami-aaaa1111", None).await.unwrap()), [1, 3, 5]);
    assert_eq!(numbers(by_image("ami-bbbb2222", None).await.unwrap()), [2, 4]);
    assert_eq!(numbers(by_image("ami-aaaa1111", Some(2)).await.unwrap()), [1, 3], "MaxResults counts matches");
    assert!(numbers(by_image("ami-cccc3333", None).await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_shared_with_the_account_is_described_to_it() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let foreign = create_key(&other, None).await;
    let snapshot = encrypted_snapshot(&other, &foreign).await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    assert_eq!(code(ec2.describe_snapshots().snapshot_ids(&snapshot).send().await), "InvalidSnapshot.NotFound");
    share_snapshot(&other, &snapshot, OWN).await;
    let out = ec2.describe_snapshots().snapshot_ids(&snapshot).send().await.unwrap();
    let s = &out.snapshots()[0];
    assert_eq!((s.owner_id(), s.kms_key_id()), (Some(OTHER), Some(foreign.as_str())));
    // Its owner still sees it as its own.
    let theirs = aws_sdk_ec2::Client::new(&other).describe_snapshots().snapshot_ids(&snapshot).send().await.unwrap();
    assert_eq!(theirs.snapshots()[0].owner_id(), Some(OTHER));
}
