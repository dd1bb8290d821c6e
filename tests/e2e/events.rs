//! Change events end to end: EventBridge's events, as they reach the SQS queue (moto's
//! SQS, in the strict emulator), repair drift within seconds while the resync is ten
//! minutes away; bad messages are dropped and counted; a launch failure is reported; and
//! without a queue nothing changes.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const RESYNC: &str = "10m";

async fn queue(conf: &aws_config::SdkConfig, name: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(conf);
    sqs.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_owned()
}

async fn send(conf: &aws_config::SdkConfig, url: &str, body: &str) {
    aws_sdk_sqs::Client::new(conf).send_message().queue_url(url).message_body(body).send().await.unwrap();
}

/// Messages still in the queue, visible or in flight.
async fn left(conf: &aws_config::SdkConfig, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = aws_sdk_sqs::Client::new(conf)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().unwrap();
    [A::ApproximateNumberOfMessages, A::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .map(|a| attrs.get(a).map_or(0, |v| v.parse::<u64>().unwrap()))
        .sum()
}

/// A CloudTrail management event as EventBridge delivers it.
fn api_call(service: &str, name: &str, params: Value) -> String {
    json!({
        "version": "0", "id": format!("{name}-{}", std::process::id()), "detail-type": "AWS API Call via CloudTrail",
        "source": format!("aws.{service}"), "account": OWN, "time": "2026-12-07T10:00:00Z", "region": REGION, "resources": [],
        "detail": {"eventVersion": "1.08", "eventSource": format!("{service}.amazonaws.com"), "eventName": name,
                   "awsRegion": REGION, "requestParameters": params, "responseElements": null,
                   "eventType": "AwsApiCall", "recipientAccountId": OWN}
    })
    .to_string()
}

fn events_config(bindings: &[(&str, &str)], url: &str) -> String {
    let mut s = format!("version: 1\nevents:\n  queueUrl: {url}\n  region: {REGION}\nbindings:\n");
    for (asg, key) in bindings {
        s.push_str(&format!("  - {{asg: {asg}, account: \"{OWN}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n"));
    }
    s
}

/// Waits until `check` holds, and says how long that took.
async fn within<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn policy_names_role(conf: &aws_config::SdkConfig, key: &str) -> bool {
    key_policy(conf, key).await.to_string().contains(&slr_arn(OWN, Some("CMK")))
}

async fn default_policy(conf: &aws_config::SdkConfig, key: &str) {
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")}, "Action": "kms:*", "Resource": "*"}]});
    let kms = aws_sdk_kms::Client::new(conf);
    kms.put_key_policy().key_id(key).policy_name("default").policy(policy.to_string()).send().await.unwrap();
}

/// A daemon on a 10-minute resync that reads a queue of change events, each group bound to
/// a key of its own (in the order given).
struct Setup {
    d: Daemon,
    own: aws_config::SdkConfig,
    url: String,
    keys: Vec<String>,
    moto: Moto,
    _dir: TempDir,
}

async fn setup(groups: &[&str]) -> Setup {
    let moto = Moto::start();
    let own = moto.own().await;
    let mut keys = Vec::new();
    for _ in groups {
        keys.push(create_key(&own, None).await);
    }
    create_asgs(&own, groups).await;
    let url = queue(&own, "changes").await;
    let dir = TempDir::new();
    let bindings: Vec<(&str, &str)> = groups.iter().copied().zip(keys.iter().map(String::as_str)).collect();
    let cfg = dir.write("c.yaml", &events_config(&bindings, &url));
    let d = Daemon::start(&moto, &cfg, RESYNC);
    d.wait_ready(Duration::from_secs(30));
    Setup { d, own, url, keys, moto, _dir: dir }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_policy_write_and_a_group_moved_back_are_repaired_within_seconds_of_their_events() {
    let Setup { d: _daemon, own, url, keys, moto: _moto, _dir } = setup(&["web"]).await;
    let key = &keys[0];
    assert!(policy_names_role(&own, key).await);

    // IaC rewrites the whole policy; its event arrives: repaired long before the resync.
    default_policy(&own, key).await;
    assert!(!policy_names_role(&own, key).await);
    send(&own, &url, &api_call("kms", "PutKeyPolicy", json!({"keyId": key, "policyName": "default"}))).await;
    let took = within("the key policy repaired", Duration::from_secs(5), || policy_names_role(&own, key)).await;
    eprintln!("event: whole-policy write repaired in {took:?} (scripts/bench.sh living measures this)");

    // Someone moves the group back to the default role.
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let back =
        asc.update_auto_scaling_group().auto_scaling_group_name("web").service_linked_role_arn(slr_arn(OWN, None));
    back.send().await.unwrap();
    send(&own, &url, &api_call("autoscaling", "UpdateAutoScalingGroup", json!({"autoScalingGroupName": "web"}))).await;
    let took = within("the group back on its role", Duration::from_secs(5), || async {
        asg_role(&own, "web").await == Some(slr_arn(OWN, Some("CMK")))
    })
    .await;
    eprintln!("event: group moved back, repaired in {took:?}");
    within("the queue drained", Duration::from_secs(5), || async { left(&own, &url).await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_keys_event_reads_that_keys_unit_and_no_other() {
    let Setup { d, own, url, keys, moto, _dir } = setup(&["web", "api"]).await;
    let a = &keys[0];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let passes = |d: &Daemon| d.logs().iter().filter(|v| v["message"] == "pass finished; nothing to change").count();
    let before = passes(&d);
    moto.reset_calls();
    send(&own, &url, &api_call("kms", "CreateGrant", json!({"keyId": a, "granteePrincipal": "x"}))).await;
    within("the key's pass", Duration::from_secs(5), || async { passes(&d) > before }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = moto.calls();
    assert_eq!(count(&calls, "GetKeyPolicy"), 1, "one key's unit: {calls:?}");
    assert_eq!(count(&calls, "DescribeKey"), 1, "{calls:?}");
    let not_sqs: Vec<_> = calls.iter().filter(|(s, _)| s != "sqs").cloned().collect();
    assert_eq!(writes(&not_sqs), Vec::<String>::new(), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_messages_are_dropped_and_counted_and_a_good_event_after_them_is_handled() {
    let Setup { d, own, url, keys, moto: _moto, _dir } = setup(&["web"]).await;
    let key = &keys[0];
    let unknown_key = "arn:aws:kms:us-west-2:123456789012:key/99999999-9999-9999-9999-999999999999";
    for bad in [
        "not json at all".to_owned(),
        json!({"id": "x", "detail-type": "Object Created", "source": "aws.s3", "account": OWN, "region": REGION, "detail": {}}).to_string(),
        api_call("kms", "PutKeyPolicy", json!({})),
        api_call("kms", "PutKeyPolicy", json!({"keyId": unknown_key})),
        api_call("autoscaling", "UpdateAutoScalingGroup", json!({"autoScalingGroupName": "not-mine"})),
    ] {
        send(&own, &url, &bad).await;
    }
    default_policy(&own, key).await;
    send(&own, &url, &api_call("kms", "PutKeyPolicy", json!({"keyId": key}))).await;
    within("the good event handled", Duration::from_secs(10), || policy_names_role(&own, key)).await;
    within("the queue drained", Duration::from_secs(10), || async { left(&own, &url).await == 0 }).await;
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/readyz").0, 200);
    let metrics = d.get("/metrics").1;
    let dropped = |reason: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("asg_cmk_operator_events_dropped_total{{reason=\"{reason}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        [dropped("not_json"), dropped("unknown_event"), dropped("missing_field"), dropped("not_covered")],
        [1.0, 1.0, 1.0, 2.0],
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launch_failure_event_reports_the_failure_and_runs_the_groups_unit() {
    let Setup { d, own, url, keys: _, moto: _moto, _dir } = setup(&["web"]).await;
    let passes = |d: &Daemon| {
        d.logs().iter().filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("pass finished"))).count()
    };
    // AWS gives times in whole seconds: a launch in the same second as the fix could have
    // been either side of it, and reads as fixed. This one is a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = passes(&d);
    // A launch that fails after the permissions were in place (now, in the emulator's time).
    let started = asg_cmk_operator::core::status::rfc3339(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    );
    let event = json!({
        "version": "0", "id": "launch-1", "detail-type": "EC2 Instance Launch Unsuccessful", "source": "aws.autoscaling",
        "account": OWN, "time": started, "region": REGION, "resources": [],
        "detail": {"StatusCode": "Failed", "AutoScalingGroupName": "web", "ActivityId": "a1",
                   "StatusMessage": "Client.InternalError: Client error on launch", "StartTime": started,
                   "Cause": "At the time an instance was started"}
    });
    send(&own, &url, &event.to_string()).await;
    within("the group's pass", Duration::from_secs(5), || async { passes(&d) > before }).await;
    let status: Value = serde_json::from_str(&d.get("/status").1).unwrap();
    let c = status["bindings"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "LaunchesHealthy")
        .unwrap()
        .clone();
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("LaunchFailedKms")), "{c}");
    assert!(c["message"].as_str().unwrap().contains(&started), "the event's time: {c}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_queue_nothing_is_received_and_the_calls_are_as_before() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK"))]));
    moto.reset_calls();
    let d = Daemon::start(&moto, &cfg, RESYNC);
    d.wait_ready(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = moto.calls();
    assert!(calls.iter().all(|(service, _)| service != "sqs"), "{calls:?}");
    let metrics = d.get("/metrics").1;
    assert!(metrics.contains("asg_cmk_operator_events_configured 0"), "{metrics}");
}
