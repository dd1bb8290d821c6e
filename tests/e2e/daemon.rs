//! End to end: `asg-cmk-operator run` against moto's server.

use std::time::Duration;

use crate::common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread")]
async fn converges_serves_endpoints_takes_an_appended_binding_and_stops_on_sigterm() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["first", "second", "third"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &config(&[("first", &key, Some("CMK"))]));
    let slr = slr_arn(OWN, Some("CMK"));

    let mut d = Daemon::start(&moto, &cfg, "5m");
    assert_eq!(d.get("/healthz").0, 200);
    d.wait_ready(SECS(20));
    assert_eq!(asg_role(&own, "first").await.as_deref(), Some(slr.as_str()));
    assert_eq!(asg_role(&own, "second").await.as_deref(), Some(slr_arn(OWN, None).as_str()), "not configured yet");

    // Onboard a second ASG by appending to the file.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "  - asg: second\n    account: \"{OWN}\"\n    key: {key}\n    serviceLinkedRoleSuffix: CMK\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    eventually("appended binding converged", SECS(10), || async {
        asg_role(&own, "second").await.as_deref() == Some(slr.as_str())
    })
    .await;
    d.wait_log(|v| v["message"] == "config reloaded" && v["changed_keys"] == 1, SECS(5));
    let applied = d.wait_log(
        |v| v["message"] == "applied change" && v["action"] == "UpdateAutoScalingGroup" && v["target"] == "second",
        SECS(5),
    );
    for field in ["account", "region", "reason"] {
        assert!(applied.get(field).is_some(), "{field} missing in {applied}");
    }

    let needles = [
        "asg_cmk_operator_reconcile_passes_total{result=\"success\"}",
        "asg_cmk_operator_aws_calls_total{service=\"kms\",operation=\"GetKeyPolicy\",outcome=\"success\"}",
        "asg_cmk_operator_changes_applied_total{action=\"UpdateAutoScalingGroup\"} 2",
        "asg_cmk_operator_bindings{state=\"ready\"} 2",
        "asg_cmk_operator_config_reloads_total{result=\"success\"} 2",
        "asg_cmk_operator_last_successful_resync_timestamp_seconds",
    ];
    // The pass's bookkeeping lands just after its last write.
    eventually("metrics reflect the second pass", SECS(5), || async {
        let (status, metrics) = d.get("/metrics");
        status == 200 && needles.iter().all(|n| metrics.contains(n))
    })
    .await;
    assert_eq!(d.get("/nope").0, 404);

    // A group on the default service-linked role is warned about once, when it appears.
    let on_default = |v: &serde_json::Value| {
        v["level"] == "WARN"
            && v["message"].as_str().is_some_and(|m| m.contains("uses the default service-linked role"))
    };
    assert!(!d.logs().iter().any(on_default), "no group was on the default role");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("  - asg: third\n    account: \"{OWN}\"\n    key: {key}\n"));
    std::fs::write(&cfg, &text).unwrap();
    let warned = d.wait_log(on_default, SECS(5));
    assert_eq!(warned["asg"], format!("{OWN}/{REGION}/third"));
    assert!(warned["message"].as_str().unwrap().contains("anyone who can create an Auto Scaling group"), "{warned}");
    text.push_str("# touched\n");
    std::fs::write(&cfg, &text).unwrap();
    eventually("the touch reloaded", SECS(5), || async {
        d.logs().iter().filter(|v| v["message"] == "config reloaded").count() == 3
    })
    .await;
    assert_eq!(d.logs().iter().filter(|v| on_default(v)).count(), 1, "warned once");

    assert_eq!(d.terminate(SECS(15)), Some(0));
    d.wait_log(|v| v["message"] == "stopped", SECS(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_edit_keeps_the_last_good_config_and_drift_is_repaired_on_resync() {
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api", "late"]).await;
    let dir = TempDir::new();
    let good = config(&[("api", &key, Some("CMK"))]);
    let cfg = dir.write("config.yaml", &good);
    let slr = slr_arn(OWN, Some("CMK"));

    let d = Daemon::start(&moto, &cfg, "2s");
    d.wait_ready(SECS(20));
    assert_eq!(asg_role(&own, "api").await.as_deref(), Some(slr.as_str()));

    // A broken edit, saved the way editors save (rename over the file).
    rename_replace(&cfg, &format!("{good}  - asg: late\n    account: 123\n    colour: blue\n"));
    let err = d.wait_log(|v| v["message"] == "invalid config; keeping the last good one", SECS(10));
    assert!(err["location"].as_str().unwrap().starts_with("bindings[1]"), "{err}");
    eventually("error reload counted", SECS(5), || async {
        d.get("/metrics").1.contains("asg_cmk_operator_config_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/readyz").0, 200);

    // Drift behind the operator's back, on the last good config's resources: the ASG goes
    // back to the default role, the grant is revoked, the operator's statements removed.
    aws_sdk_autoscaling::Client::new(&own)
        .update_auto_scaling_group()
        .auto_scaling_group_name("api")
        .service_linked_role_arn(slr_arn(OWN, None))
        .send()
        .await
        .unwrap();
    let kms = aws_sdk_kms::Client::new(&other);
    let grants = kms.list_grants().key_id(&key).send().await.unwrap();
    assert_eq!(grants.grants().len(), 1);
    kms.revoke_grant().key_id(&key).grant_id(grants.grants()[0].grant_id().unwrap()).send().await.unwrap();
    let mut policy = key_policy(&other, &key).await;
    let kept: Vec<serde_json::Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["Sid"].as_str().unwrap_or("").starts_with("AsgCmkOperator"))
        .cloned()
        .collect();
    policy["Statement"] = serde_json::Value::Array(kept);
    kms.put_key_policy().key_id(&key).policy_name("default").policy(policy.to_string()).send().await.unwrap();

    eventually("drift repaired", SECS(15), || async {
        let asg_ok = asg_role(&own, "api").await.as_deref() == Some(slr.as_str());
        let grants = kms.list_grants().key_id(&key).send().await.unwrap();
        let p = key_policy(&other, &key).await;
        let sids: Vec<String> =
            p["Statement"].as_array().unwrap().iter().filter_map(|s| s["Sid"].as_str().map(str::to_owned)).collect();
        asg_ok && grants.grants().len() == 1 && sids.iter().any(|s| s == "AsgCmkOperatorUse")
    })
    .await;

    // A valid rename-replace edit is picked up after the broken one.
    rename_replace(&cfg, &config(&[("api", &key, Some("CMK")), ("late", &key, Some("CMK"))]));
    eventually("renamed-in binding converged", SECS(10), || async {
        asg_role(&own, "late").await.as_deref() == Some(slr.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swap_is_picked_up() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["one", "two"]).await;
    // The layout a Kubernetes ConfigMap volume has.
    let dir = TempDir::new();
    let v1 = dir.0.join("..2026_11_28_00_00_00.000000001");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("config.yaml"), config(&[("one", &key, Some("CMK"))])).unwrap();
    std::os::unix::fs::symlink(v1.file_name().unwrap(), dir.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.0.join("config.yaml")).unwrap();
    let cfg = dir.0.join("config.yaml").to_string_lossy().into_owned();

    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(SECS(20));
    let slr = slr_arn(OWN, Some("CMK"));
    assert_eq!(asg_role(&own, "one").await.as_deref(), Some(slr.as_str()));

    // What the kubelet does on a ConfigMap update.
    let v2 = dir.0.join("..2026_11_28_00_05_00.000000002");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("config.yaml"), config(&[("one", &key, Some("CMK")), ("two", &key, Some("CMK"))])).unwrap();
    std::os::unix::fs::symlink(v2.file_name().unwrap(), dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    eventually("binding from the swapped ConfigMap converged", SECS(10), || async {
        asg_role(&own, "two").await.as_deref() == Some(slr.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_aws_at_start_is_retried_and_ready_follows_once_it_answers() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = TempDir::new();
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-1111-1111-1111-111111111111";
    let cfg = dir.write("config.yaml", &config(&[("web", key, None)]));
    let d = Daemon::start_with(operator_command(&endpoint, &[]), &cfg, "5m");
    d.wait_log(|v| v["message"] == "cannot reach AWS; not ready", SECS(30));
    assert_eq!(d.get("/healthz").0, 200);
    let (status, body) = d.get("/readyz");
    assert_eq!(status, 503);
    // The cause, named: not just "waiting for the first full pass".
    assert!(body.starts_with("not ready: cannot reach AWS (retrying in "), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")) || body.contains("dispatch failure"), "{body}");

    // AWS comes up (an empty account: the binding fails, but the pass completes).
    let _moto = Moto::start_on(port);
    d.wait_ready(SECS(60));
    d.wait_log(
        |v| v["message"] == "binding failed" && v["error"].as_str().unwrap_or("").contains("not found"),
        SECS(5),
    );
    assert_eq!(d.get("/healthz").0, 200);
}

#[test]
fn invalid_config_at_start_is_a_clear_error() {
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", "version: 1\nbindings:\n  - asg: x\n");
    let out =
        operator_command("http://127.0.0.1:9", &["run", "--config", &cfg, "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bindings[0].account: is required"), "{err}");
    assert!(err.contains("bindings[0].key: is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_converges_while_another_key_waits_for_iam_propagation() {
    // web's new role is one IAM has not propagated to KMS and Auto Scaling yet (a 15 s
    // window): its unit waits, queued again by its backoff, not sleeping in a pass. api,
    // added meanwhile on another key whose role has long existed, converges at once.
    let moto = Moto::start();
    let own = moto.own().await;
    let (slow_key, fast_key) = (create_key(&own, None).await, create_key(&own, None).await);
    create_slr(&own, "Fast").await;
    create_asgs(&own, &["web", "api"]).await;
    moto.strict(serde_json::json!({"propagation_seconds": 15.0}));
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &config(&[("web", &slow_key, Some("Slow"))]));
    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_log(
        |v| {
            v["message"] == "binding failed"
                && v["error"].as_str().is_some_and(|e| e.contains("IAM has not propagated"))
        },
        SECS(20),
    );

    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "  - asg: api\n    account: \"{OWN}\"\n    key: {fast_key}\n    serviceLinkedRoleSuffix: Fast\n"
    ));
    let edited = std::time::Instant::now();
    std::fs::write(&cfg, text).unwrap();
    eventually("api converged", SECS(10), || async {
        asg_role(&own, "api").await.as_deref() == Some(slr_arn(OWN, Some("Fast")).as_str())
    })
    .await;
    let took = edited.elapsed();
    assert_ne!(
        asg_role(&own, "web").await.as_deref(),
        Some(slr_arn(OWN, Some("Slow")).as_str()),
        "api converged in {took:?}, before web's role propagated, not behind it"
    );
    // And web converges once the window has passed.
    eventually("web converged after propagation", SECS(60), || async {
        asg_role(&own, "web").await.as_deref() == Some(slr_arn(OWN, Some("Slow")).as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_write_failure_ends_the_pass_and_its_unit_comes_back_when_due() {
    // Auto Scaling refuses the switch once with ScalingActivityInProgress (a 400 the SDK
    // does not retry, and this operator counts as transient). The pass does not sleep and
    // try again: it ends, reports the binding failed with when it will be retried, and a
    // later pass, started by the unit's backoff, makes the switch.
    let OneAsg { moto, own, key: _, dir: _dir, cfg } = one_asg_on_own_key(Some("CMK")).await;
    moto.fault(
        "autoscaling",
        "UpdateAutoScalingGroup",
        1,
        400,
        "ScalingActivityInProgress",
        "Scaling activity is in progress and blocks this action.",
    );
    moto.reset_calls();
    let d = Daemon::start(&moto, &cfg, "5m");
    let slr = slr_arn(OWN, Some("CMK"));
    eventually("web switched", SECS(20), || async { asg_role(&own, "web").await.as_deref() == Some(slr.as_str()) })
        .await;

    let logs = d.logs();
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool, from: usize| {
        logs.iter().skip(from).position(pred).map(|i| i + from)
    };
    let failed = at(
        &|v| {
            v["message"] == "binding failed"
                && v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("ScalingActivityInProgress") && e.contains("to be tried again"))
                && v["retry_in"].is_string()
        },
        0,
    )
    .expect("the pass ended with the binding failed and a retry time");
    let retry = at(&|v| v["message"] == "pass started" && v["span"]["trigger"] == "retry", failed)
        .expect("a retry pass after the failed one");
    at(&|v| v["message"] == "applied change" && v["action"] == "UpdateAutoScalingGroup", retry)
        .expect("the switch made by the retry pass");
    assert_eq!(count(&moto.calls(), "UpdateAutoScalingGroup"), 2, "refused once, then made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_config_file_is_warned_about_once_shown_and_its_return_noticed() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let mut d = Daemon::start(&s.moto, &s.cfg, "5m");
    d.wait_ready(SECS(20));
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    let gone = |v: &serde_json::Value| {
        v["level"] == "WARN" && v["message"] == "config file cannot be read; keeping the last good config"
    };
    let back = |v: &serde_json::Value| v["level"] == "WARN" && v["message"] == "config file can be read again";
    let metric = |d: &Daemon, value: u8| {
        d.get("/metrics").1.lines().any(|l| l == format!("asg_cmk_operator_config_file_unreadable {value}"))
    };
    assert!(metric(&d, 0));

    std::fs::remove_file(&s.cfg).unwrap();
    let warned = d.wait_log(gone, SECS(5));
    assert_eq!(warned["config"], s.cfg.as_str(), "{warned}");
    assert!(warned["error"].as_str().unwrap().contains("No such file"), "{warned}");
    eventually("the gauge says so", SECS(5), || async { metric(&d, 1) }).await;
    let status: serde_json::Value = serde_json::from_str(&d.get("/status").1).unwrap();
    assert_eq!(status["configFile"]["readable"], false, "{status}");
    assert!(status["configFile"]["error"].as_str().unwrap().contains(&s.cfg), "{status}");
    assert_eq!(status["bindings"].as_array().unwrap().len(), 1, "the last good config's binding: {status}");
    assert_eq!(d.get("/readyz").0, 200, "the last good config is in use");
    // The daemon looks once a second: several looks later, still one warning.
    std::thread::sleep(SECS(3));
    assert_eq!(d.logs().iter().filter(|v| gone(v)).count(), 1, "warned once");

    std::fs::write(&s.cfg, &text).unwrap();
    d.wait_log(back, SECS(5));
    eventually("the gauge is back to 0", SECS(5), || async { metric(&d, 0) }).await;
    let status: serde_json::Value = serde_json::from_str(&d.get("/status").1).unwrap();
    assert!(status.get("configFile").is_none(), "{status}");
    assert_eq!(d.logs().iter().filter(|v| back(v)).count(), 1);

    // Gone again: warned again.
    std::fs::remove_file(&s.cfg).unwrap();
    eventually("warned a second time", SECS(5), || async { d.logs().iter().filter(|v| gone(v)).count() == 2 }).await;
    assert_eq!(d.terminate(SECS(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_that_cannot_succeed_warns_once_not_on_every_retry() {
    let moto = Moto::start();
    let own = moto.own().await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    // No such key: every retry fails the same way.
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-1111-1111-1111-111111111111";
    let cfg = dir.write("config.yaml", &config(&[("web", key, Some("CMK"))]));
    let d = Daemon::start(&moto, &cfg, "5m");
    let warned = |v: &serde_json::Value| v["level"] == "WARN" && v["message"] == "binding failed";
    let again = |v: &serde_json::Value| v["level"] == "DEBUG" && v["message"] == "binding still failing";
    // Backoff 2 s, then 4 s (with jitter): the third failure within some 10 s.
    eventually("three failed attempts", SECS(30), || async {
        d.logs().iter().filter(|v| warned(v) || again(v)).count() >= 3
    })
    .await;
    let logs = d.logs();
    assert_eq!(logs.iter().filter(|v| warned(v)).count(), 1, "warned once");
    let first = logs.iter().find(|v| warned(v)).unwrap();
    assert!(first["error"].as_str().unwrap().contains("does not exist"), "{first}");
    let repeat = logs.iter().find(|v| again(v)).unwrap();
    assert_eq!(repeat["error"], first["error"], "the same failure, at debug");

    // A changed binding is a new state: a binding on another failing key warns at once.
    let other = "arn:aws:kms:us-west-2:123456789012:key/22222222-2222-2222-2222-222222222222";
    rename_replace(&cfg, &config(&[("web", other, Some("CMK"))]));
    d.wait_log(|v| warned(v) && v["key"] == other, SECS(10));
}

/// Starts `run` on a fixed port with its stderr on a pipe whose reader is already gone.
fn daemon_with_stderr_closed(moto: &Moto, cfg: &str, port: u16) -> std::process::Child {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = moto.operator_command(&[
        "run",
        "--config",
        cfg,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--resync-interval",
        "5m",
    ]);
    cmd.env("RUST_LOG", "debug").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::from(writer));
    cmd.spawn().expect("start daemon")
}

/// GET `path` on `addr`: the status, or None when nothing answered within 2 s.
fn get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(SECS(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_its_stderr_closed_goes_on_reconciling_and_serving() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["first", "second"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &config(&[("first", &key, Some("CMK"))]));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = daemon_with_stderr_closed(&moto, &cfg, port);
    let slr = slr_arn(OWN, Some("CMK"));
    eventually("ready with stderr gone", SECS(30), || async { get_status(&addr, "/readyz") == Some(200) }).await;
    assert_eq!(asg_role(&own, "first").await.as_deref(), Some(slr.as_str()));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "  - asg: second\n    account: \"{OWN}\"\n    key: {key}\n    serviceLinkedRoleSuffix: CMK\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    eventually("an edit onboarded with stderr gone", SECS(15), || async {
        asg_role(&own, "second").await.as_deref() == Some(slr.as_str())
    })
    .await;
    assert_eq!(get_status(&addr, "/healthz"), Some(200));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    let mut metrics = String::new();
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        s.read_to_string(&mut metrics).unwrap();
    }
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("asg_cmk_operator_log_writes_dropped_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the dropped-logs counter");
    assert!(dropped > 0.0, "the lines it could not write are counted: {dropped}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_connections_that_never_finish_a_request_leave_healthz_answering_within_a_second() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let d = Daemon::start(&s.moto, &s.cfg, "5m");
    d.wait_ready(SECS(20));
    let mut held = Vec::new();
    for _ in 0..1000 {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&d.addr).unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        held.push(c);
    }
    for path in ["/healthz", "/readyz"] {
        let started = std::time::Instant::now();
        assert_eq!(get_status(&d.addr, path), Some(200), "{path}");
        assert!(started.elapsed() < SECS(1), "{path} took {:?}", started.elapsed());
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_edit_shows_on_status_and_the_gauge_until_it_is_fixed() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let d = Daemon::start(&s.moto, &s.cfg, "5m");
    d.wait_ready(SECS(20));
    let status = |d: &Daemon| serde_json::from_str::<serde_json::Value>(&d.get("/status").1).unwrap();
    assert_eq!(status(&d)["config"]["valid"], true);
    assert!(d.get("/metrics").1.contains("asg_cmk_operator_config_valid 1\n"));
    let good = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(&s.cfg, good.replace(&format!("account: \"{OWN}\""), "account: \"12345\"")).unwrap();
    eventually("the refusal shows", SECS(10), || async { status(&d)["config"]["valid"] == false }).await;
    let config = status(&d)["config"].clone();
    assert_eq!(config["location"], "bindings[0].account", "{config}");
    assert!(config["error"].as_str().unwrap().contains("12 digits"), "{config}");
    assert!(config["since"].as_str().is_some_and(|t| t.ends_with('Z')), "{config}");
    assert!(d.get("/metrics").1.contains("asg_cmk_operator_config_valid 0\n"));
    // The last good config still stands: the binding is still ready.
    assert_eq!(status(&d)["bindings"][0]["ready"], true);
    std::fs::write(&s.cfg, &good).unwrap();
    eventually("the fix shows", SECS(10), || async { status(&d)["config"]["valid"] == true }).await;
    assert!(d.get("/metrics").1.contains("asg_cmk_operator_config_valid 1\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_stays_200_while_a_large_edit_parses() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let d = Daemon::start(&s.moto, &s.cfg, "5m");
    d.wait_ready(SECS(20));
    // Sixty thousand bindings on groups that do not exist: seconds of parsing.
    let mut big = std::fs::read_to_string(&s.cfg).unwrap();
    for i in 0..60_000 {
        big.push_str(&format!("  - asg: ghost-{i:05}\n    account: \"{OWN}\"\n    key: {}\n", s.key));
    }
    std::fs::write(&s.cfg, &big).unwrap();
    let started = std::time::Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    while !d.logs().iter().any(|v| v["message"] == "config reloaded") {
        let t = std::time::Instant::now();
        assert_eq!(get_status(&d.addr, "/healthz"), Some(200), "after {:?}", started.elapsed());
        slowest = slowest.max(t.elapsed());
        assert!(started.elapsed() < SECS(120), "the edit was never taken in");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("the edit parsed in about {:?}; /healthz took at most {slowest:?}", started.elapsed());
    assert!(slowest < SECS(1), "{slowest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_config_again_and_the_daemon_goes_on() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let mut d = Daemon::start(&s.moto, &s.cfg, "5m");
    d.wait_ready(SECS(20));
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    d.wait_log(
        |v| v["message"] == "signal received: reading the config file again" && v["signal"] == "SIGHUP",
        SECS(5),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(d.child.try_wait().unwrap().is_none(), "SIGHUP stopped the daemon");
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.terminate(SECS(20)), Some(0));
}
