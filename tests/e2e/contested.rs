//! Contested keys end to end: a writer that replaces the whole key policy (as Terraform's
//! `aws_kms_key_policy` does on every apply) and so deletes the operator's statements is
//! named in `/status`, the operator's writes back off instead of fighting it, and once the
//! writer's own policy holds the statements the key is ready with nothing written.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const PUT_KEY_POLICY: &str =
    "asg_cmk_operator_aws_calls_total{service=\"kms\",operation=\"PutKeyPolicy\",outcome=\"success\"}";
const CONTESTS: &str = "asg_cmk_operator_key_policy_contests_total";

fn metric(d: &Daemon, series: &str) -> f64 {
    let text = d.get("/metrics").1;
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// The policy the other writer keeps: the account's root, and what it was told to add.
fn writers_policy(extra: &[Value]) -> Value {
    let mut st = vec![json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")}, "Action": "kms:*", "Resource": "*"})];
    st.extend(extra.iter().cloned());
    json!({"Version": "2012-10-17", "Statement": st})
}

/// Another writer: whenever the key's policy is not its own, it puts its own back, within
/// a second. Its own policy is what `wants` holds at the time.
fn start_writer(conf: aws_config::SdkConfig, key: String, wants: Arc<Mutex<Value>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let kms = aws_sdk_kms::Client::new(&conf);
        loop {
            let mine = wants.lock().unwrap().clone();
            if statements(&key_policy(&conf, &key).await) != statements(&mine) {
                let put = kms.put_key_policy().key_id(&key).policy_name("default").policy(mine.to_string());
                put.send().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The binding's `KeyPolicyReady`, as `/status` shows it.
fn key_policy_ready(d: &Daemon) -> Value {
    let status: Value = serde_json::from_str(&d.get("/status").1).unwrap();
    let b = &status["bindings"][0];
    b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "KeyPolicyReady").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_reverts_every_write_is_named_and_backed_off_until_its_policy_holds_the_statements() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, Some(&writers_policy(&[]).to_string())).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK"))]));
    let wants = Arc::new(Mutex::new(writers_policy(&[])));
    let writer = start_writer(own.clone(), key.clone(), wants.clone());

    let started = Instant::now();
    let d = Daemon::start(&moto, &cfg, "2s");
    d.wait_ready(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(started.elapsed())).await;
    let writes = metric(&d, PUT_KEY_POLICY);
    assert!((3.0..=8.0).contains(&writes), "PutKeyPolicy calls in the first 40 s: {writes}");
    assert_eq!(metric(&d, CONTESTS), 1.0, "one contest begun");
    assert_eq!(d.get("/healthz").0, 200, "a contest is no failure of the daemon's");

    // /status says Contested, names no writer (events are off) and gives the statements.
    let mut c = key_policy_ready(&d);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c["reason"] != "Contested" {
        assert!(Instant::now() < deadline, "not Contested in /status: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = key_policy_ready(&d);
    }
    let message = c["message"].as_str().unwrap().to_owned();
    assert_eq!(c["status"], "False");
    assert!(message.contains("another writer") && message.contains(&slr_arn(OWN, Some("CMK"))), "{message}");
    let given = message.rsplit_once("will write nothing: ").expect("the statements").1;
    let given: Vec<Value> = serde_json::from_str(given).expect("the statements are JSON");
    assert_eq!(given.len(), 2, "the use and the attachment statements: {given:?}");

    // The writer puts them into its own policy: ready, and nothing more is written.
    *wants.lock().unwrap() = writers_policy(&given);
    let deadline = Instant::now() + Duration::from_secs(15);
    while key_policy_ready(&d)["reason"] != "Allows" {
        assert!(Instant::now() < deadline, "not ready once the writer holds the statements: {}", key_policy_ready(&d));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = metric(&d, PUT_KEY_POLICY);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(metric(&d, PUT_KEY_POLICY), settled, "no write once the writer's policy allows the role");
    assert_eq!(key_policy_ready(&d)["status"], "True");
    assert_eq!(statements(&key_policy(&own, &key).await), statements(&writers_policy(&given)));
    writer.abort();
}
