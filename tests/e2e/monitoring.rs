//! Monitoring, end to end: a real Prometheus scrapes `asg-cmk-operator run` (against the
//! emulator) with the alert rules of deploy/monitoring loaded, and what it stored is read
//! back through its HTTP API; promtool checks the classic exposition and runs the rules'
//! unit tests; the PrometheusRule and the plain rules file hold the same rules.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package (scripts/test.sh
//! installs it when it can). Without them these tests are skipped, except under `CI=true`,
//! where they fail.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The project's directory: deploy/monitoring and its files.
fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

/// `name` on PATH; None (the test is skipped, saying why) when it is absent, unless
/// `CI=true`, where a missing tool fails the test.
fn tool(name: &str) -> Option<PathBuf> {
    let found =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|dir| dir.join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{name} is not on PATH: in CI it must be (scripts/test.sh installs Debian's prometheus package)"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install prometheus); CI runs this test");
    }
    found
}

/// A Prometheus server on a loopback port, with its config and storage in a temporary
/// directory; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Scrapes `target` (HOST:PORT) every second as job `asg-cmk-operator`, and evaluates
    /// `rules` every second.
    fn start(bin: &Path, target: &str, rules: &Path) -> Prometheus {
        let dir = TempDir::new();
        let port = free_port();
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: asg-cmk-operator\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display()
            ),
        );
        let child = Command::new(bin)
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        p.wait("prometheus ready", SECS(30), |p| p.get_raw("/-/ready").0 == 200);
        p
    }

    /// A GET over HTTP/1.0, so the answer is not chunked: (status, body); status 0 when
    /// nothing listens yet.
    fn get_raw(&self, path: &str) -> (u16, String) {
        let addr = self.url.trim_start_matches("http://");
        let Ok(mut conn) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
        conn.set_read_timeout(Some(SECS(10))).unwrap();
        write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_owned())
    }

    /// A GET of the HTTP API, which must answer `"status": "success"`: its `data`.
    fn api(&self, path: &str) -> Value {
        let (status, body) = self.get_raw(path);
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// An instant query: each result's labels and value.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
            .collect()
    }

    fn wait(&self, what: &str, within: Duration, mut ok: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !ok(self) {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The families a classic exposition declares: name → type.
fn families(classic: &str) -> std::collections::BTreeMap<String, String> {
    classic
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// Every `asg_cmk_operator_…` name the rules file's expressions use.
fn metrics_in_rules() -> BTreeSet<String> {
    let rules: Value = serde_norway::from_str(&std::fs::read_to_string(monitoring_dir().join("rules.yaml")).unwrap())
        .expect("rules.yaml is YAML");
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("asg_cmk_operator_") {
                let tail = &rest[i..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_counters_as_counters_and_the_converged_bindings() {
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else { return };
    let moto = Moto::start();
    let own = moto.own().await;
    let other = moto.other().await;
    let own_key = create_key(&own, None).await;
    let other_key = create_key(&other, None).await;
    create_asgs(&own, &["web", "api", "worker"]).await;
    let dir = TempDir::new();
    let cfg = dir.write(
        "config.yaml",
        &config(&[("web", &own_key, Some("CMK")), ("api", &own_key, Some("CMK")), ("worker", &other_key, Some("CMK"))]),
    );
    // The first reads of both key policies end throttled, after the SDK's three attempts
    // each: counted as `throttled`, and retried by the daemon.
    moto.fault("kms", "GetKeyPolicy", 6, 400, "ThrottlingException", "Rate exceeded");
    let mut d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(SECS(30));

    let rules = monitoring_dir().join("rules.yaml");
    let p = Prometheus::start(&prometheus, &d.addr, &rules);

    p.wait("the target is up", SECS(30), |p| p.query("up{job=\"asg-cmk-operator\"}").iter().any(|(_, v)| *v == 1.0));
    p.wait("bindings reach the converged count", SECS(30), |p| {
        p.query("asg_cmk_operator_bindings{state=\"ready\"}").iter().any(|(_, v)| *v == 3.0)
    });
    let failed = p.query("asg_cmk_operator_binding_failed");
    assert_eq!(failed.len(), 3, "one series per binding: {failed:?}");
    assert!(failed.iter().all(|(_, v)| *v == 0.0), "{failed:?}");
    // Each key's policy, as a share of KMS's 32,768 bytes: a new key's default policy and
    // the operator's statements are far from it.
    let sizes = p.query("asg_cmk_operator_key_policy_size_ratio");
    assert_eq!(sizes.len(), 2, "one series per key: {sizes:?}");
    assert!(sizes.iter().all(|(_, v)| *v > 0.0 && *v < 0.2), "{sizes:?}");
    let asgs: BTreeSet<&str> = failed.iter().map(|(m, _)| m["asg"].as_str().unwrap()).collect();
    assert_eq!(asgs, BTreeSet::from(["api", "web", "worker"]));
    assert!(!p.query("asg_cmk_operator_aws_calls_total{outcome=\"success\"} > 0").is_empty());
    assert!(!p.query("asg_cmk_operator_aws_calls_total{service=\"kms\",outcome=\"throttled\"} > 0").is_empty());

    // Converged, the classic answer (no Accept header) passes Prometheus's own checker, lints included.
    let (status, classic) = d.get("/metrics");
    assert_eq!(status, 200);
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(classic.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {:?}\n{}{}\n{classic}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let throttled = classic
        .lines()
        .find(|l| {
            l.starts_with(
                "asg_cmk_operator_aws_calls_total{service=\"kms\",operation=\"GetKeyPolicy\",outcome=\"throttled\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no throttled GetKeyPolicy calls counted:\n{classic}"));
    assert!(throttled.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0, "{throttled}");
    // Every metric the alert rules use is one the daemon exports.
    let declared = families(&classic);
    for name in metrics_in_rules() {
        assert!(declared.contains_key(&name), "the rules use {name}, which /metrics does not declare:\n{classic}");
    }

    // Each counter family arrives typed as a counter, with its help; gauges as gauges.
    // Scraped as OpenMetrics (Prometheus prefers it) a counter family is named without
    // `_total`; scraped in the classic format, with it.
    p.wait("metadata of every family", SECS(30), |p| !p.api("/api/v1/metadata")["asg_cmk_operator_ready"].is_null());
    let metadata = p.api("/api/v1/metadata");
    for (name, kind) in &declared {
        let om_name = name.strip_suffix("_total").filter(|_| kind == "counter").unwrap_or(name);
        let entry = metadata[om_name].get(0).or_else(|| metadata[name.as_str()].get(0));
        let entry = entry.unwrap_or_else(|| panic!("no metadata for {name}: {metadata}"));
        assert_eq!(entry["type"], kind.as_str(), "{name}: {entry}");
        assert!(entry["help"].as_str().is_some_and(|h| h.len() > 10), "{name}: {entry}");
    }
    for counter in ["reconcile_passes", "reconcile_errors", "aws_calls", "changes_applied", "config_reloads"] {
        let name = format!("asg_cmk_operator_{counter}_total");
        assert_eq!(declared.get(&name).map(String::as_str), Some("counter"), "{name} in {declared:?}");
    }

    // The rules load and evaluate against the live series, and none fires or is pending.
    let in_file = alerts_of(&yaml(&monitoring_dir().join("rules.yaml"))["groups"]).len();
    assert!(in_file >= 9, "{in_file} rules");
    p.wait("every rule evaluated", SECS(30), |p| {
        let groups = p.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<Value> =
            groups.as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect();
        rules.len() == in_file
            && rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")))
    });
    for group in p.api("/api/v1/rules")["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }
    // (`AsgCmkOperatorDown` may be pending from an evaluation before the first scrape, when
    // the job had no `up` yet; the next evaluation after it clears that.)
    p.wait("no alert pending or firing while the daemon is converged", SECS(15), |p| {
        p.api("/api/v1/alerts")["alerts"].as_array().unwrap().is_empty()
    });

    // Stopped, the operator is seen down, and the alert for it starts its 5 minutes.
    assert_eq!(d.terminate(SECS(15)), Some(0));
    p.wait("the down alert is pending", SECS(30), |p| {
        p.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "AsgCmkOperatorDown" && a["state"] == "pending")
    });
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool") else { return };
    let dir = monitoring_dir();
    for args in [&["check", "rules", "rules.yaml"][..], &["test", "rules", "rules.test.yaml"]] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alerts_of(groups: &Value) -> Vec<Value> {
    groups.as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
}

#[test]
fn the_prometheus_rule_holds_the_rules_file_and_every_alert_is_tested_and_has_a_runbook() {
    let dir = monitoring_dir();
    let plain = yaml(&dir.join("rules.yaml"));
    let crd = yaml(&dir.join("prometheusrule.yaml"));
    assert_eq!(crd["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(
        crd["spec"]["groups"], plain["groups"],
        "prometheusrule.yaml's spec.groups differ from rules.yaml's groups"
    );

    let alerts = alerts_of(&plain["groups"]);
    assert!(alerts.len() >= 6, "{alerts:?}");
    let tests = yaml(&dir.join("rules.test.yaml"));
    let mut fired = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for t in case["alert_rule_test"].as_array().unwrap() {
            if t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(t["alertname"].as_str().unwrap().to_owned());
            }
        }
    }
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        assert!(fired.contains(name), "{name} has no unit test in which it fires");
        let annotations = &alert["annotations"];
        for field in ["summary", "description", "runbook"] {
            assert!(annotations[field].as_str().is_some_and(|s| s.len() > 20), "{name}: no {field}");
        }
        assert!(annotations["summary"].as_str().unwrap().contains("{{ $labels."), "{name}: its summary names nothing");
    }
}
