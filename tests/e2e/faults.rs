//! Faults are normal: the real `run` and `apply` processes against the strict emulator,
//! through a loopback proxy (tests/moto/faultproxy.py) that throttles calls, fails them
//! with 5xx, loses the answers of writes it lets through, and adds latency; beside a
//! concurrent editor, SIGKILL at random points, and a slow IAM propagation.
//!
//! Each test prints its figures as a row of the table that scripts/test.sh shows after
//! the tests (and docs/testing.md quotes).

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Waits until the fleet has converged (as `plan` against the emulator sees it).
async fn converge(fleet: &Fleet, moto: &Moto, cfg: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while !fleet.converged(moto, cfg) {
        assert!(started.elapsed() < within, "not converged within {within:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    started.elapsed()
}

fn faults(stats: &Value) -> String {
    format!(
        "{} throttled, {} 5xx, {} lost write answers",
        stats["throttled"], stats["server_errors"], stats["lost_writes"]
    )
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A small deterministic generator for kill times.
struct Lcg(u64);

impl Lcg {
    fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_throttling_5xx_lost_answers_and_latency_the_daemon_converges_without_duplicates() {
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 10).await;
    let before = fleet.foreign_statements().await;
    let proxy = FaultProxy::start(
        &moto,
        &["--seed", "7", "--throttle", "0.2", "--server-error", "0.05", "--lost-write", "0.05", "--latency", "5:40"],
    );
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &fleet.config());

    let started = Instant::now();
    let _d = Daemon::start_with(operator_command(&proxy.url, &[]), &cfg, "5s");
    converge(&fleet, &moto, &cfg, SECS(150)).await;
    let took = started.elapsed();

    fleet.assert_converged(&moto, &cfg).await;
    assert_eq!(fleet.foreign_statements().await, before, "no foreign statement changed or lost");
    let stats = proxy.stats();
    assert!(stats["throttled"].as_u64().unwrap() > 0 && stats["lost_writes"].as_u64().unwrap() > 0, "{stats}");
    report_row(
        "faults-and-latency",
        &[
            format!(
                "`run`, {} bindings on 4 keys, 20% throttled, 5% 5xx, 5% of write answers lost, 5–40 ms",
                fleet.bindings.len()
            ),
            secs(took),
            format!("{} calls", stats["requests"]),
            faults(&stats),
            "converged; one grant per key and role; foreign statements unchanged".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_made_right_after_the_daemon_read_the_policy_survives() {
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 1).await;
    let (auditor, _) = create_role(&fleet.own_conf, "auditor").await;
    let edit = json!({"Sid": "Auditors", "Effect": "Allow", "Principal": {"AWS": auditor},
                      "Action": "kms:DescribeKey", "Resource": "*"});
    let before = fleet.foreign_statements().await;
    // Right after the daemon reads this key's policy, someone adds a statement.
    let key = fleet.own[1].clone();
    moto.edit_after_next_read(&key, edit.clone());
    let proxy = FaultProxy::start(&moto, &["--seed", "11", "--throttle", "0.1", "--latency", "20:60"]);
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &fleet.config());

    let started = Instant::now();
    let _d = Daemon::start_with(operator_command(&proxy.url, &[]), &cfg, "5s");
    eventually("the edit was made", SECS(30), || async {
        moto.hook("GET", "/_launcher/edits", Value::Null)["applied"] == 1
    })
    .await;
    converge(&fleet, &moto, &cfg, SECS(90)).await;
    let took = started.elapsed();

    fleet.assert_converged(&moto, &cfg).await;
    let policy = key_policy(&fleet.own_conf, &key).await;
    assert!(statements(&policy).contains(&edit), "the edit was lost: {policy}");
    let after = fleet.foreign_statements().await;
    for ((k, b), (_, a)) in before.iter().zip(&after) {
        let extra = if *k == key { 1 } else { 0 };
        assert_eq!(a.len(), b.len() + extra, "{k}");
        assert!(b.iter().all(|s| a.contains(s)), "{k}: {a:?}");
    }
    let stats = proxy.stats();
    report_row(
        "concurrent-editor",
        &[
            "`run`; a statement added to a key policy right after the daemon read it; 10% throttled, 20–60 ms".into(),
            secs(took),
            format!("{} calls", stats["requests"]),
            faults(&stats),
            "converged; the edit survived".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_five_times_it_converges_with_no_duplicates_after_a_restart() {
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 2).await;
    let before = fleet.foreign_statements().await;
    // Latency keeps a pass, and its writes, in flight when the process dies: a cold pass
    // takes several seconds, and each run lives less than two.
    let proxy = FaultProxy::start(&moto, &["--seed", "5", "--latency", "200:500"]);
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &fleet.config());
    let mut rng = Lcg(0x5eed);
    let mut kills = Vec::new();
    for _ in 0..5 {
        let mut d = Daemon::start_with(operator_command(&proxy.url, &[]), &cfg, "5m");
        let after = rng.next_in(300, 2000);
        std::thread::sleep(Duration::from_millis(after));
        d.child.kill().unwrap(); // SIGKILL
        d.child.wait().unwrap();
        kills.push(after);
    }
    let writes_before_restart = proxy.stats()["requests"].as_u64().unwrap();

    let started = Instant::now();
    let _d = Daemon::start_with(operator_command(&proxy.url, &[]), &cfg, "5m");
    converge(&fleet, &moto, &cfg, SECS(60)).await;
    let took = started.elapsed();

    fleet.assert_converged(&moto, &cfg).await;
    assert_eq!(fleet.foreign_statements().await, before);
    let stats = proxy.stats();
    report_row(
        "sigkill",
        &[
            format!("`run` killed with SIGKILL 5 times, after {kills:?} ms, then restarted; 200–500 ms"),
            secs(took),
            format!("{} calls ({writes_before_restart} before the restart)", stats["requests"]),
            "5 kills".into(),
            "converged; no duplicate grant; foreign statements unchanged".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_four_second_iam_propagation_window_cold_applies_of_both_cases_exit_0() {
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 1).await;
    moto.strict(json!({"propagation_seconds": 4.0}));
    let proxy = FaultProxy::start(&moto, &["--seed", "3", "--latency", "5:20"]);
    let dir = TempDir::new();
    let mut rows = Vec::new();
    // Each case with a role of its own, so that each apply starts with a role IAM has
    // not yet propagated.
    for (case, keys, suffix) in [("case 1", &fleet.own, "One"), ("case 2", &fleet.other, "Two")] {
        let bindings: Vec<(&str, &str, Option<&str>)> = fleet
            .bindings
            .iter()
            .filter(|(_, k)| keys.contains(k))
            .map(|(g, k)| (g.as_str(), k.as_str(), Some(suffix)))
            .collect();
        let cfg = dir.write(&format!("{suffix}.yaml"), &config(&bindings));
        moto.reset_calls();
        let started = Instant::now();
        let out = proxy_operator(&proxy, &["apply", "--config", &cfg]);
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(0), "{case}: {}", stdout(&out));
        let calls = moto.calls();
        let refused =
            count(&calls, "PutKeyPolicy") + count(&calls, "CreateGrant") + count(&calls, "UpdateAutoScalingGroup");
        assert!(took >= SECS(4), "{case}: the window was waited out, not skipped ({took:?})");
        rows.push(format!("{case} in {}, {refused} write attempts", secs(took)));
        let plan = moto.operator(&["plan", "--config", &cfg]);
        assert_eq!(plan.status.code(), Some(0), "{case}: {}", stdout(&plan));
    }
    report_row(
        "iam-propagation",
        &[
            "cold `apply` of each case with a new role that KMS and Auto Scaling cannot see for 4 s".into(),
            rows.join("; "),
            format!("{} calls", proxy.stats()["requests"]),
            "a 4 s window".into(),
            "both exit 0".into(),
        ],
    );
}

/// `asg-cmk-operator ARGS` with the proxy as its AWS endpoint.
fn proxy_operator(proxy: &FaultProxy, args: &[&str]) -> std::process::Output {
    let out = operator_command(&proxy.url, args).output().unwrap();
    eprintln!("--- operator {args:?}: {}\n{}", out.status, stderr(&out));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_due_during_a_slow_pass_costs_no_cpu_while_it_waits() {
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 2).await;
    // Every call takes half a second: the first pass takes several.
    let proxy = FaultProxy::start(&moto, &["--latency", "500:500"]);
    let dir = TempDir::new();
    let first: Vec<(&str, &str, Option<&str>)> =
        fleet.bindings.iter().step_by(2).map(|(g, k)| (g.as_str(), k.as_str(), Some("CMK"))).collect();
    let cfg = dir.write("config.yaml", &config(&first));
    let d = Daemon::start_with(operator_command(&proxy.url, &[]), &cfg, "5m");
    d.wait_log(|v| v["message"] == "connected to AWS", SECS(20));
    std::thread::sleep(Duration::from_millis(300));
    // An edit while the first pass runs: its key falls due at once, but cannot start.
    std::fs::write(&cfg, fleet.config()).unwrap();
    d.wait_log(|v| v["message"] == "config reloaded", SECS(5));

    let pid = d.child.id();
    let (cpu0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_millis(2500));
    let (cpu, wall) = (cpu_time(pid) - cpu0, t0.elapsed());
    let first_pass_over = d.logs().iter().any(|v| v["message"] == "first full pass finished; ready");
    assert!(!first_pass_over, "the pass ended during the measurement; make it slower");
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(share < 0.25, "the daemon used {cpu:?} of CPU in {wall:?} while waiting");

    converge(&fleet, &moto, &dir.0.join("config.yaml").to_string_lossy(), SECS(60)).await;
    report_row(
        "idle-while-busy",
        &[
            "`run`; a config edit lands during a pass whose every call takes 500 ms".into(),
            format!("CPU {:.0} ms in {}", cpu.as_secs_f64() * 1000.0, secs(wall)),
            format!("{} calls", proxy.stats()["requests"]),
            "latency only".into(),
            format!("{:.1}% of one core while waiting; then converged", share * 100.0),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_at_once_converge_with_no_duplicate_grant_sid_or_lost_statement() {
    // A rolling update, or a second copy started by mistake: two daemons on the same
    // config, each through its own faulty path (throttling, lost write answers).
    let moto = Moto::start();
    let fleet = Fleet::seed(&moto, 3).await;
    let before = fleet.foreign_statements().await;
    let proxies: Vec<FaultProxy> = ["21", "22"]
        .into_iter()
        .map(|seed| {
            FaultProxy::start(
                &moto,
                &["--seed", seed, "--throttle", "0.15", "--lost-write", "0.1", "--latency", "5:30"],
            )
        })
        .collect();
    let dir = TempDir::new();
    let cfg = dir.write("config.yaml", &fleet.config());

    let started = Instant::now();
    let _replicas: Vec<Daemon> =
        proxies.iter().map(|p| Daemon::start_with(operator_command(&p.url, &[]), &cfg, "3s")).collect();
    converge(&fleet, &moto, &cfg, SECS(120)).await;
    let took = started.elapsed();
    // Both keep reconciling for a few resyncs; nothing may drift or double.
    tokio::time::sleep(SECS(8)).await;

    fleet.assert_converged(&moto, &cfg).await;
    assert_eq!(fleet.foreign_statements().await, before, "no foreign statement changed or lost");
    for key in fleet.own.iter().chain(&fleet.other) {
        let conf = if fleet.own.contains(key) { &fleet.own_conf } else { &fleet.other_conf };
        let sids: Vec<String> = statements(&key_policy(conf, key).await)
            .iter()
            .filter_map(|s| s["Sid"].as_str().map(str::to_owned))
            .collect();
        let unique: std::collections::BTreeSet<&String> = sids.iter().collect();
        assert_eq!(unique.len(), sids.len(), "a Sid repeated on {key}: {sids:?}");
    }
    let stats: Vec<Value> = proxies.iter().map(FaultProxy::stats).collect();
    let injected = |field: &str| stats.iter().map(|s| s[field].as_u64().unwrap()).sum::<u64>();
    assert!(injected("throttled") > 0 && injected("lost_writes") > 0, "{stats:?}");
    report_row(
        "two-replicas",
        &[
            format!(
                "two `run` replicas, {} bindings on 4 keys, each 15% throttled, 10% of write answers lost, 5–30 ms",
                fleet.bindings.len()
            ),
            secs(took),
            format!("{} calls", injected("requests")),
            format!("{} throttled, {} lost write answers", injected("throttled"), injected("lost_writes")),
            "converged; one grant per key and role; no Sid twice; foreign statements unchanged".into(),
        ],
    );
}
