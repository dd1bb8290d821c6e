//! The command line as a user meets it: pipes that close early, paths that cannot be
//! written, and mistakes in the config.

use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `cmd` with stdout on a pipe whose reading end is already closed (as `| head` leaves
/// it once it has read enough), and returns (exit code, stderr).
fn run_into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap();
    let stderr = stderr(&out);
    eprintln!("--- {cmd:?} exit {:?}\n{stderr}", out.status.code());
    (out.status.code(), stderr)
}

fn without_emulator(args: &[&str]) -> Command {
    // Nothing listens on port 9: a command that called AWS would fail.
    operator_command("http://127.0.0.1:9", args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_the_command_quietly() {
    let dir = TempDir::new();
    let key = format!("arn:aws:kms:{REGION}:{OWN}:key/00000000-0000-0000-0000-000000000001");
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK")), ("api", &key, Some("CMK"))]));
    for args in
        [&["completions", "bash"][..], &["man"], &["iam-policy", "--config", &cfg], &["validate", "--config", &cfg]]
    {
        let (code, stderr) = run_into_closed_pipe(without_emulator(args));
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?} reported the closed pipe: {stderr}");
        assert_eq!(code, Some(0), "{args:?}");
    }

    // plan against the emulator: changes pending, so its exit status is 2, pipe or not.
    let s = one_asg_on_own_key(Some("CMK")).await;
    let (code, stderr) =
        run_into_closed_pipe(s.moto.operator_command(&["plan", "--config", &s.cfg, "--output", "json"]));
    assert!(!stderr.contains("panicked"), "plan panicked: {stderr}");
    assert_eq!(code, Some(2), "plan's own status stands");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_stats_path_it_cannot_write_before_any_aws_call() {
    let s = one_asg_on_own_key(Some("CMK")).await;
    let missing = s.dir.0.join("no-such-folder").join("stats.json");
    s.moto.reset_calls();
    let out = s.moto.operator(&["apply", "--config", &s.cfg, "--stats-json", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--stats-json") && err.contains("no-such-folder"), "{err}");
    assert_eq!(s.moto.calls(), Vec::<(String, String)>::new(), "no AWS call before the path is checked");
    assert_eq!(asg_role(&s.own, "web").await, Some(slr_arn(OWN, None)), "the group was not changed");

    // A path that can be written is left for apply to fill, and not created early.
    let ok = s.dir.0.join("stats.json");
    let out = s.moto.operator(&["apply", "--config", &s.cfg, "--stats-json", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ok).unwrap()).unwrap();
    assert!(stats["applied"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn validate_warns_about_a_region_the_sdk_does_not_know() {
    let dir = TempDir::new();
    let key = format!("arn:aws:kms:us-wset-2:{OWN}:key/00000000-0000-0000-0000-000000000001");
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK"))]));
    let out = run_logged(without_emulator(&["validate", "--config", &cfg]), &["validate"]);
    assert!(out.status.success(), "a warning, not an error");
    let err = stderr(&out);
    assert!(err.contains("warning: region \"us-wset-2\" (ASG web) is not a region the AWS SDK knows"), "{err}");
}

#[test]
fn a_config_file_over_16_mib_is_refused_before_it_is_read() {
    let dir = TempDir::new();
    let cfg = dir.write("big.yaml", "version: 1\n");
    // Sparse: as large as it says, and nothing to read until a reader reads it.
    std::fs::OpenOptions::new().write(true).open(&cfg).unwrap().set_len((16 << 20) + 1).unwrap();
    let started = std::time::Instant::now();
    let out = run_logged(without_emulator(&["validate", "--config", &cfg]), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("file: is larger than 16 MiB, the most a config file may hold"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    // Exactly 16 MiB is read (and then found wanting as YAML, not as a size).
    std::fs::OpenOptions::new().write(true).open(&cfg).unwrap().set_len(16 << 20).unwrap();
    let out = run_logged(without_emulator(&["validate", "--config", &cfg]), &["validate"]);
    assert!(!stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[test]
fn an_endpoint_url_without_a_scheme_is_one_clear_line() {
    let dir = TempDir::new();
    let key = format!("arn:aws:kms:{REGION}:{OWN}:key/00000000-0000-0000-0000-000000000001");
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK"))]));
    for args in [&["plan", "--config", &cfg][..], &["status", "--config", &cfg], &["discover", "--region", REGION]] {
        let mut cmd = operator_command("127.0.0.1:9", args);
        cmd.env("RUST_LOG", "warn");
        let out = run_logged(cmd, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "error: AWS_ENDPOINT_URL=\"127.0.0.1:9\" is not a URL with a scheme and a host, such as http://127.0.0.1:9\n",
            "{args:?}"
        );
    }
}

#[test]
fn iam_policy_for_an_account_the_config_never_names_warns() {
    let dir = TempDir::new();
    let key = format!("arn:aws:kms:{REGION}:{OWN}:key/00000000-0000-0000-0000-000000000001");
    // config() lists OTHER under `accounts`, so any other account gets the hub's policy.
    let cfg = dir.write("c.yaml", &config(&[("web", &key, Some("CMK"))]));
    let out = run_logged(without_emulator(&["iam-policy", "--config", &cfg, "--account", "999988887777"]), &[]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("warning: account 999988887777 is named nowhere in the config"), "{err}");
    serde_json::from_str::<serde_json::Value>(&stdout(&out)).expect("the policy, still printed");
    // Named accounts: the group's (a policy), and the `accounts` entry's (which owns nothing
    // here: an error, as before, but no warning).
    for (account, code) in [(OWN, 0), (OTHER, 1)] {
        let out = run_logged(without_emulator(&["iam-policy", "--config", &cfg, "--account", account]), &[]);
        assert_eq!(out.status.code(), Some(code));
        assert!(!stderr(&out).contains("warning"), "{account} is named: {}", stderr(&out));
    }
}

/// Runs `cmd` with stderr on a pipe whose reading end is already closed (a log shipper
/// that went away), stdout captured; returns (exit code, stdout).
fn run_with_stderr_closed(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd.stderr(Stdio::from(writer)).stdout(Stdio::piped()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("--- {cmd:?} exit {:?}\n{stdout}", out.status.code());
    (out.status.code(), stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_with_its_stderr_closed_by_the_reader_converges_and_exits_0() {
    // Logs at debug: every line fails to be written, and none stops the command.
    let s = one_asg_on_own_key(Some("CMK")).await;
    let mut cmd = s.moto.operator_command(&["apply", "--config", &s.cfg]);
    cmd.env("RUST_LOG", "debug");
    let (code, stdout) = run_with_stderr_closed(cmd);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("1 of 1 binding converged."), "{stdout}");
    assert_eq!(asg_role(&s.own, "web").await, Some(slr_arn(OWN, Some("CMK"))));
}

#[test]
fn a_deeply_nested_config_is_refused_at_once_naming_the_place() {
    let dir = TempDir::new();
    // 117 KB of brackets took about a minute to parse before the depth was capped.
    let deep = format!("version: 1\nbindings: {}{}\n", "[".repeat(60_000), "]".repeat(60_000));
    let cfg = dir.write("deep.yaml", &deep);
    let started = std::time::Instant::now();
    let out = run_logged(without_emulator(&["validate", "--config", &cfg]), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(stderr(&out).contains("line 2, column 74: nests deeper than 64 levels"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_apply_finishes_the_write_in_flight_says_what_was_and_was_not_done_and_exits_143() {
    let moto = Moto::start();
    let own = moto.own().await;
    let mut keys = Vec::new();
    for _ in 0..12 {
        keys.push(create_key(&own, None).await);
    }
    let names: Vec<String> = (0..12).map(|i| format!("g{i:02}")).collect();
    create_asgs(&own, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let dir = TempDir::new();
    let bindings: Vec<(&str, &str, Option<&str>)> =
        names.iter().zip(&keys).map(|(n, k)| (n.as_str(), k.as_str(), Some("CMK"))).collect();
    let cfg = dir.write("c.yaml", &config(&bindings));
    // Every call takes a quarter of a second: the apply is under way for seconds.
    let proxy = FaultProxy::start(&moto, &["--latency", "250:250"]);
    let mut cmd = operator_command(&proxy.url, &["--log-format", "json", "apply", "--config", &cfg]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut logs = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    loop {
        line.clear();
        assert!(logs.read_line(&mut line).unwrap() > 0, "apply ended before it wrote anything");
        if line.contains("\"applied change\"") {
            break;
        }
    }
    let signalled = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let rest = std::thread::spawn(move || logs.lines().map_while(Result::ok).collect::<Vec<_>>());
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let text = stdout(&out);
    eprintln!("--- apply after SIGTERM exit {:?} in {took:?}\n{text}", out.status.code());
    let rest = rest.join().unwrap();
    assert_eq!(out.status.code(), Some(143), "{text}");
    assert!(text.contains("stopped by SIGTERM: the writes in flight finished, and no other was made."), "{text}");
    assert!(text.contains("binding converged.") || text.contains("bindings converged."), "{text}");
    assert!(!text.contains("12 of 12 bindings converged."), "the signal came too late to show anything: {text}");
    assert!(text.contains("failed:"), "what was not done is listed: {text}");
    assert!(rest.iter().any(|l| l.contains("\"SIGTERM\"")), "{rest:?}");
    // It did not go on with the rest of the fleet: the remaining writes would take seconds.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // What it left is finished by the next apply, with no duplicate.
    let again = moto.operator(&["apply", "--config", &cfg]);
    assert!(again.status.success(), "{}", stdout(&again));
    for n in &names {
        assert_eq!(asg_role(&own, n).await, Some(slr_arn(OWN, Some("CMK"))), "{n}");
    }
}
