//! Test harness: starts the project's moto launcher on a free loopback port, seeds AWS
//! state through the SDK, runs the real operator binary against it, and reads the
//! launcher's HTTP-level call log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use serde_json::{json, Value};

pub const OWN: &str = "123456789012";
pub const OTHER: &str = "444455556666";
pub const REGION: &str = "us-west-2";
pub const OTHER_ROLE: &str = "arn:aws:iam::444455556666:role/key-admin";

/// Python with moto[server]: `MOTO_PYTHON`, else the project's `.venv`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.exists(), "no Python with moto: run scripts/test.sh (it creates .venv), or set MOTO_PYTHON");
    venv
}

/// A Python helper under tests/moto that prints `READY <url>` once it listens; stopped
/// when dropped. With `--exit-with-stdin` it also exits when this process dies, since the
/// pipe it holds open then closes.
pub struct Script {
    pub url: String,
    owner: Owner,
}

enum Owner {
    /// A process of its own.
    Process { child: Child, _stdin: ChildStdin },
    /// A launcher forked by the zygote, which stops when this connection closes.
    Forked(UnixStream),
}

/// The launcher's zygote (`launcher.py --zygote`): Python and moto start once for the
/// whole test run, and each `Moto::start` forks a fresh launcher from it, which costs
/// milliseconds instead of seconds of CPU. It exits with this process (its stdin closes).
struct Zygote {
    socket: PathBuf,
    _child: Child,
    _stdin: ChildStdin,
}

fn zygote() -> &'static Zygote {
    static ZYGOTE: OnceLock<Zygote> = OnceLock::new();
    ZYGOTE.get_or_init(|| {
        let socket = std::env::temp_dir().join(format!("asg-cmk-e2e-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let mut child = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/launcher.py"))
            .arg("--zygote")
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start the launcher's zygote: {e}"));
        let stdin = child.stdin.take().unwrap();
        let ready = BufReader::new(child.stdout.take().unwrap()).lines().find_map(|l| {
            let l = l.ok()?;
            l.starts_with("READY ").then_some(l)
        });
        assert!(ready.is_some(), "the launcher's zygote exited before it was ready");
        Zygote { socket, _child: child, _stdin: stdin }
    })
}

impl Script {
    pub fn start(name: &str, args: &[&str]) -> Script {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto").join(name);
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let url = ready_url(child.stdout.take().unwrap(), name);
        Script { url, owner: Owner::Process { child, _stdin: stdin } }
    }

    /// A launcher with these arguments, forked by the zygote.
    pub fn launcher(args: &[&str]) -> Script {
        let mut conn = UnixStream::connect(&zygote().socket).expect("the launcher's zygote is not listening");
        writeln!(conn, "{}", serde_json::to_string(args).unwrap()).unwrap();
        let url = ready_url(conn.try_clone().unwrap(), "launcher.py");
        Script { url, owner: Owner::Forked(conn) }
    }

    /// A JSON call to one of the helper's hooks, which must succeed.
    pub fn hook(&self, method: &str, path: &str, body: Value) -> Value {
        let text = if body.is_null() { String::new() } else { body.to_string() };
        let (status, answer) = http(&self.url, method, path, &text);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        serde_json::from_str(&answer).unwrap()
    }
}

/// The URL of the first `READY <url>` line; panics if the helper ends before it.
fn ready_url(from: impl Read, name: &str) -> String {
    for line in BufReader::new(from).lines() {
        match line {
            Ok(l) if l.starts_with("READY ") => return l["READY ".len()..].trim().to_owned(),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("{name} exited before it was ready")
}

impl Drop for Script {
    fn drop(&mut self) {
        match &mut self.owner {
            Owner::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Owner::Forked(conn) => {
                // The launcher stops when its connection closes, and its end closes when
                // it has exited: wait for that, as for a process of its own.
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = std::io::copy(conn, &mut std::io::sink());
            }
        }
    }
}

/// One HTTP/1.1 request to a loopback `url` ("http://HOST:PORT"): (status, body).
pub fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The project's launcher: moto's server, as strict as AWS where this project depends on
/// it (tests/moto/strict.py). Stopped when dropped.
pub struct Moto {
    script: Script,
    pub url: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// Starts the launcher with extra flags (`--lenient`, `--propagation-seconds S`).
    pub fn start_with(args: &[&str]) -> Moto {
        let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        let script = Script::launcher(&all);
        Moto { url: script.url.clone(), script }
    }

    /// Starts the launcher on a given port.
    pub fn start_on(port: u16) -> Moto {
        let script = Script::launcher(&["--host", "127.0.0.1", "--port", &port.to_string()]);
        Moto { url: script.url.clone(), script }
    }

    pub fn hook(&self, method: &str, path: &str, body: Value) -> Value {
        self.script.hook(method, path, body)
    }

    /// Every AWS call since the last reset, as (account, service, action).
    pub fn calls_by_account(&self) -> Vec<(String, String, String)> {
        self.hook("GET", "/_launcher/calls", Value::Null)["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                (s("account"), s("service"), s("action"))
            })
            .collect()
    }

    /// When each call of `action` arrived since the last reset, in seconds (the
    /// emulator's monotonic clock), in order.
    pub fn arrivals(&self, action: &str) -> Vec<f64> {
        let calls = self.hook("GET", "/_launcher/calls", Value::Null);
        calls["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == action)
            .map(|c| c["t"].as_f64().unwrap())
            .collect()
    }

    /// Every AWS call the server received since the last reset, as (service, action).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls_by_account().into_iter().map(|(_, s, a)| (s, a)).collect()
    }

    pub fn reset_calls(&self) {
        self.hook("POST", "/_launcher/calls/reset", Value::Null);
    }

    /// Makes the next `count` calls of `service`/`action` fail with `code`.
    pub fn fault(&self, service: &str, action: &str, count: u32, status: u16, code: &str, message: &str) {
        self.hook(
            "POST",
            "/_launcher/faults",
            json!({"service": service, "action": action, "count": count, "status": status, "code": code, "message": message}),
        );
    }

    /// Like [`Moto::fault`], but the request is carried out before its answer is replaced.
    pub fn fault_after_apply(&self, service: &str, action: &str, status: u16, code: &str, message: &str) {
        self.hook(
            "POST",
            "/_launcher/faults",
            json!({"service": service, "action": action, "count": 1, "status": status, "code": code,
                   "message": message, "apply": true}),
        );
    }

    /// Changes the strict settings (tests/moto/strict.py); returns the new ones.
    pub fn strict(&self, changes: Value) -> Value {
        self.hook("POST", "/_launcher/strict", changes)
    }

    /// Right after the next read of `key`'s policy, someone appends `statement` to it.
    pub fn edit_after_next_read(&self, key: &str, statement: Value) {
        self.hook("POST", "/_launcher/edits", json!({"key": key, "statement": statement}));
    }

    /// SDK configuration for the operator's own account (plain keys).
    pub async fn own(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    /// SDK configuration acting in `OTHER`, through an assumed role.
    pub async fn other(&self) -> SdkConfig {
        let own = self.own().await;
        let out = aws_sdk_sts::Client::new(&own)
            .assume_role()
            .role_arn(OTHER_ROLE)
            .role_session_name("seed")
            .send()
            .await
            .expect("assume role for seeding");
        let c = out.credentials().unwrap();
        let creds =
            Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().into()), None, "assumed");
        own.to_builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
            .build()
    }

    /// Runs the operator binary with `args` against this server.
    pub fn operator(&self, args: &[&str]) -> Output {
        run_logged(self.operator_command(args), args)
    }

    /// Like [`Moto::operator`], with the credentials of access key `id` and `secret`.
    pub fn operator_as(&self, id: &str, secret: &str, args: &[&str]) -> Output {
        let mut cmd = self.operator_command(args);
        cmd.env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret);
        run_logged(cmd, args)
    }

    pub fn operator_command(&self, args: &[&str]) -> Command {
        operator_command(&self.url, args)
    }
}

/// Runs `cmd` (the operator with `args`) and prints what it said, for a failing test's
/// output.
pub fn run_logged(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd.output().expect("run operator");
    eprintln!(
        "--- operator {args:?} exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The operator binary: this build's, or the one `ASG_CMK_OPERATOR_BIN` names (to run the
/// end-to-end tests against another build, such as the one before a change).
pub fn operator_binary() -> PathBuf {
    std::env::var_os("ASG_CMK_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_asg-cmk-operator")))
}

/// The operator binary with a clean environment pointing at `endpoint`.
pub fn operator_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(operator_binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("RUST_LOG", "info");
    cmd
}

/// Writes calls that change something (anything but Get/List/Describe and STS).
pub fn writes(calls: &[(String, String)]) -> Vec<String> {
    calls
        .iter()
        .filter(|(s, a)| s != "sts" && !(a.starts_with("Get") || a.starts_with("List") || a.starts_with("Describe")))
        .map(|(_, a)| a.clone())
        .collect()
}

pub fn count(calls: &[(String, String)], action: &str) -> usize {
    calls.iter().filter(|(_, a)| a == action).count()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "asg-cmk-operator-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a symmetric key and returns its ARN.
pub async fn create_key(conf: &SdkConfig, policy: Option<&str>) -> String {
    let kms = aws_sdk_kms::Client::new(conf);
    let out = kms.create_key().set_policy(policy.map(str::to_owned)).description("test key").send().await.unwrap();
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

pub async fn key_policy(conf: &SdkConfig, key: &str) -> serde_json::Value {
    let kms = aws_sdk_kms::Client::new(conf);
    let out = kms.get_key_policy().key_id(key).policy_name("default").send().await.unwrap();
    serde_json::from_str(out.policy().unwrap()).unwrap()
}

/// Creates ASGs (no service-linked role set) from one launch configuration.
pub async fn create_asgs(conf: &SdkConfig, names: &[&str]) {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    let lc = "test-lc";
    let _ = asc
        .create_launch_configuration()
        .launch_configuration_name(lc)
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await;
    for n in names {
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(*n)
            .launch_configuration_name(lc)
            .availability_zones("us-west-2a")
            .min_size(0)
            .max_size(1)
            .send()
            .await
            .unwrap();
    }
}

/// The ServiceLinkedRoleARN of an ASG.
pub async fn asg_role(conf: &SdkConfig, name: &str) -> Option<String> {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    let out = asc.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
    out.auto_scaling_groups().first().and_then(|g| g.service_linked_role_arn().map(str::to_owned))
}

pub fn slr_arn(account: &str, suffix: Option<&str>) -> String {
    let name =
        suffix.map_or("AWSServiceRoleForAutoScaling".to_owned(), |s| format!("AWSServiceRoleForAutoScaling_{s}"));
    format!("arn:aws:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/{name}")
}

/// A config with `accounts` listing OTHER and the given bindings (asg, key, suffix).
pub fn config(bindings: &[(&str, &str, Option<&str>)]) -> String {
    let mut s = format!("version: 1\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n");
    for (asg, key, suffix) in bindings {
        s.push_str(&format!("  - asg: {asg}\n    account: \"{OWN}\"\n    key: {key}\n"));
        if let Some(x) = suffix {
            s.push_str(&format!("    serviceLinkedRoleSuffix: {x}\n"));
        }
    }
    s
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `asg-cmk-operator run`, with its JSON log lines collected; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the daemon on a free port and waits until it is listening.
    pub fn start(moto: &Moto, config: &str, resync: &str) -> Daemon {
        Self::start_with(moto.operator_command(&[]), config, resync)
    }

    pub fn start_with(cmd: Command, config: &str, resync: &str) -> Daemon {
        Self::start_with_args(cmd, config, resync, &[])
    }

    /// [`Daemon::start_with`], with more `run` flags.
    pub fn start_with_args(mut cmd: Command, config: &str, resync: &str, extra: &[&str]) -> Daemon {
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--resync-interval",
            resync,
        ])
        .args(extra)
        .env(
            "RUST_LOG",
            "debug,aws_config=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,hyper=warn,aws_sdk_sts=warn",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start daemon");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("daemon: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut d = Daemon { child, addr: String::new(), logs };
        let listening = d.wait_log(|v| v["message"] == "listening", Duration::from_secs(20));
        d.addr = listening["addr"].as_str().expect("addr field").to_owned();
        d
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits for a log line matching `pred`, panicking with the logs on timeout.
    pub fn wait_log(&self, pred: impl Fn(&serde_json::Value) -> bool, timeout: Duration) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.logs().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "log line not seen within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path` on the daemon's listen address: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.get("/readyz").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "not ready within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "daemon did not exit within {timeout:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls an async condition until it holds.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces a file the way editors do: write a temporary file, rename it over.
pub fn rename_replace(path: &str, text: &str) {
    let tmp = format!("{path}.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The common start: an emulator, an own-account key, ASG "web" and a config binding them.
pub struct OneAsg {
    pub moto: Moto,
    pub own: SdkConfig,
    pub key: String,
    pub dir: TempDir,
    pub cfg: String,
}

pub async fn one_asg_on_own_key(suffix: Option<&str>) -> OneAsg {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, suffix)]));
    OneAsg { moto, own, key, dir, cfg }
}

/// The fault proxy (tests/moto/faultproxy.py) in front of a launcher; stopped when dropped.
pub struct FaultProxy {
    script: Script,
    pub url: String,
}

impl FaultProxy {
    /// Starts the proxy in front of `moto`, with extra flags (`--throttle 0.2`, ...).
    pub fn start(moto: &Moto, args: &[&str]) -> FaultProxy {
        let mut all = vec!["--upstream", moto.url.as_str(), "--port", "0"];
        all.extend_from_slice(args);
        let script = Script::start("faultproxy.py", &all);
        FaultProxy { url: script.url.clone(), script }
    }

    /// What the proxy saw and injected: requests, throttled, server_errors, lost_writes,
    /// quota_throttled, and by_action.
    pub fn stats(&self) -> Value {
        self.script.hook("GET", "/_proxy/stats", Value::Null)
    }

    /// Changes the fault rates (`throttle`, `server_error`, `lost_write`, `latency_ms`).
    pub fn set(&self, changes: Value) -> Value {
        self.script.hook("POST", "/_proxy/config", changes)
    }
}

/// Creates an IAM role (trusted by EC2) in the account of `conf`: (ARN, unique id).
pub async fn create_role(conf: &SdkConfig, name: &str) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(conf);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let out = iam.create_role().role_name(name).assume_role_policy_document(trust.to_string()).send().await.unwrap();
    let role = out.role().unwrap();
    (role.arn().to_owned(), role.role_id().to_owned())
}

pub async fn delete_role(conf: &SdkConfig, name: &str) {
    aws_sdk_iam::Client::new(conf).delete_role().role_name(name).send().await.unwrap();
}

/// Creates `AWSServiceRoleForAutoScaling_<suffix>`: (ARN, unique id).
pub async fn create_slr(conf: &SdkConfig, suffix: &str) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(conf);
    let out = iam
        .create_service_linked_role()
        .aws_service_name("autoscaling.amazonaws.com")
        .custom_suffix(suffix)
        .send()
        .await
        .unwrap();
    let role = out.role().unwrap();
    (role.arn().to_owned(), role.role_id().to_owned())
}

/// The statements of a key policy, whether it holds an array or one object.
pub fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// The AWS principals of the statement with Sid `sid`.
pub fn owned_principals(policy: &Value, sid: &str) -> Vec<String> {
    let st = statements(policy).into_iter().find(|s| s["Sid"] == sid).unwrap_or_else(|| panic!("no {sid} in {policy}"));
    match &st["Principal"]["AWS"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        other => panic!("principal {other}"),
    }
}

/// A grant as ListGrants shows it: (id, name, grantee, operations sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSeen {
    pub id: String,
    pub name: Option<String>,
    pub grantee: String,
    pub operations: Vec<String>,
}

/// Every grant on `key`, page by page, listed with the credentials of `conf`.
pub async fn grants(conf: &SdkConfig, key: &str) -> Vec<GrantSeen> {
    let kms = aws_sdk_kms::Client::new(conf);
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = kms.list_grants().key_id(key).set_marker(marker.take()).send().await.unwrap();
        for g in page.grants() {
            let mut operations: Vec<String> = g.operations().iter().map(|o| o.as_str().to_owned()).collect();
            operations.sort();
            out.push(GrantSeen {
                id: g.grant_id().unwrap_or_default().to_owned(),
                name: g.name().map(str::to_owned),
                grantee: g.grantee_principal().unwrap_or_default().to_owned(),
                operations,
            });
        }
        match page.next_marker() {
            Some(m) if page.truncated() => marker = Some(m.to_owned()),
            _ => return out,
        }
    }
}

/// The eight operations of the procedure's grant, sorted.
pub const GRANT_OPERATIONS: [&str; 8] = [
    "CreateGrant",
    "Decrypt",
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];

/// A two-account fleet whose groups cannot launch yet: in the operator's own account, key
/// `own[0]` (whose policy also lets role `app` decrypt) and `own[1]`; in the other
/// account, key `other[0]` (whose policy also lets role `partner` decrypt) and
/// `other[1]`; and `per_key` groups on each key, bound with the `CMK` suffix.
pub struct Fleet {
    pub own_conf: SdkConfig,
    pub other_conf: SdkConfig,
    pub own: Vec<String>,
    pub other: Vec<String>,
    /// (group, key) of every binding.
    pub bindings: Vec<(String, String)>,
}

impl Fleet {
    pub async fn seed(moto: &Moto, per_key: usize) -> Fleet {
        let (own_conf, other_conf) = (moto.own().await, moto.other().await);
        let (app, _) = create_role(&own_conf, "app").await;
        let (partner, _) = create_role(&other_conf, "partner").await;
        let with_reader = |owner: &str, reader: &str| {
            json!({"Version": "2012-10-17", "Id": "fleet", "Statement": [
                {"Sid": "Admins", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{owner}:root")},
                 "Action": "kms:*", "Resource": "*"},
                {"Sid": "Readers", "Effect": "Allow", "Principal": {"AWS": reader},
                 "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}]})
            .to_string()
        };
        let own = vec![create_key(&own_conf, Some(&with_reader(OWN, &app))).await, create_key(&own_conf, None).await];
        let other = vec![
            create_key(&other_conf, Some(&with_reader(OTHER, &partner))).await,
            create_key(&other_conf, None).await,
        ];
        let mut bindings = Vec::new();
        for (i, key) in own.iter().chain(&other).enumerate() {
            for j in 0..per_key {
                bindings.push((format!("asg-{i}-{j}"), key.clone()));
            }
        }
        let names: Vec<&str> = bindings.iter().map(|(g, _)| g.as_str()).collect();
        create_asgs(&own_conf, &names).await;
        Fleet { own_conf, other_conf, own, other, bindings }
    }

    pub fn config(&self) -> String {
        let rows: Vec<(&str, &str, Option<&str>)> =
            self.bindings.iter().map(|(g, k)| (g.as_str(), k.as_str(), Some("CMK"))).collect();
        config(&rows)
    }

    fn conf_of(&self, key: &str) -> &SdkConfig {
        if self.own.iter().any(|k| k == key) {
            &self.own_conf
        } else {
            &self.other_conf
        }
    }

    /// Every statement the operator did not write, by key.
    pub async fn foreign_statements(&self) -> Vec<(String, Vec<Value>)> {
        let mut out = Vec::new();
        for key in self.own.iter().chain(&self.other) {
            let p = key_policy(self.conf_of(key), key).await;
            let foreign = statements(&p)
                .into_iter()
                .filter(|s| !s["Sid"].as_str().unwrap_or("").starts_with("AsgCmkOperator"))
                .collect();
            out.push((key.clone(), foreign));
        }
        out
    }

    /// Panics unless every group can launch: `plan` (straight to the emulator) has
    /// nothing to do, and each key of the other account has exactly one grant, complete,
    /// for the role.
    pub async fn assert_converged(&self, moto: &Moto, cfg: &str) {
        let plan = moto.operator_command(&["plan", "--config", cfg]).output().unwrap();
        assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
        for key in &self.other {
            let g = grants(&self.other_conf, key).await;
            assert_eq!(g.len(), 1, "exactly one grant on {key}: {g:?}");
            assert_eq!(g[0].grantee, slr_arn(OWN, Some("CMK")));
            assert_eq!(g[0].operations, GRANT_OPERATIONS);
        }
        for (group, _) in &self.bindings {
            assert_eq!(asg_role(&self.own_conf, group).await, Some(slr_arn(OWN, Some("CMK"))), "{group}");
        }
    }

    /// True once `plan` against the emulator itself has nothing to do.
    pub fn converged(&self, moto: &Moto, cfg: &str) -> bool {
        let plan = moto.operator_command(&["plan", "--config", cfg]).output().unwrap();
        plan.status.code() == Some(0)
    }
}

/// One row of the fault suite's report: written to target/fault-suite/NAME.md, which
/// scripts/test.sh prints as a table after the tests.
pub fn report_row(name: &str, cells: &[String]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault-suite");
    std::fs::create_dir_all(&dir).unwrap();
    let row = format!("| {name} | {} |\n", cells.join(" | "));
    eprintln!("{row}");
    std::fs::write(dir.join(format!("{name}.md")), row).unwrap();
}

/// CPU time the process `pid` has used so far (user + system), from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks of
    // USER_HZ, which Linux fixes at 100 for user space.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The common case 2 start: an emulator, a key in the other account, ASG "api" in ours,
/// and a config binding them.
pub struct CrossAccount {
    pub moto: Moto,
    pub own: SdkConfig,
    pub other: SdkConfig,
    pub key: String,
    pub dir: TempDir,
    pub cfg: String,
}

pub async fn one_asg_on_other_key(suffix: Option<&str>) -> CrossAccount {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("api", &key, suffix)]));
    CrossAccount { moto, own, other, key, dir, cfg }
}

// --- EC2, launch sources and launches -------------------------------------------------------

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{
    BlockDeviceMapping as Ec2Mapping, EbsBlockDevice, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, RequestLaunchTemplateData,
};

/// An image that moto knows in every account and region.
pub const AMI: &str = "ami-12c6146b";

/// The error code the launch of a group whose role cannot use a key ends with.
pub const LAUNCH_FAILURE: &str = "Client.InternalError: Client error on launch";

/// Launch template data: `image` (else [`AMI`]) and, with `key`, an encrypted data volume
/// /dev/sdb under that key (`Some("")`: encrypted without a key).
pub fn template_data(image: Option<&str>, key: Option<&str>) -> RequestLaunchTemplateData {
    let mut data = RequestLaunchTemplateData::builder()
        .image_id(image.unwrap_or(AMI))
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro);
    if let Some(k) = key {
        let ebs = LaunchTemplateEbsBlockDeviceRequest::builder().volume_size(8).encrypted(true);
        let ebs = if k.is_empty() { ebs } else { ebs.kms_key_id(k) };
        data = data.block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder().device_name("/dev/sdb").ebs(ebs.build()).build(),
        );
    }
    data.build()
}

/// Creates launch template `name` (see [`template_data`]); its id.
pub async fn launch_template(conf: &SdkConfig, name: &str, image: Option<&str>, key: Option<&str>) -> String {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let out =
        ec2.create_launch_template().launch_template_name(name).launch_template_data(template_data(image, key)).send();
    out.await.unwrap().launch_template().unwrap().launch_template_id().unwrap().to_owned()
}

pub fn template_spec(id: &str, version: Option<&str>) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder().launch_template_id(id).set_version(version.map(str::to_owned)).build()
}

/// Creates group `name` on launch template `id` ($Default), with `desired` instances and
/// service-linked role `role` (else the default one).
pub async fn group_on_template(conf: &SdkConfig, name: &str, id: &str, desired: i32, role: Option<&str>) {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    asc.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(template_spec(id, None))
        .availability_zones("us-west-2a")
        .min_size(0)
        .max_size(5)
        .desired_capacity(desired)
        .set_service_linked_role_arn(role.map(str::to_owned))
        .send()
        .await
        .unwrap();
}

pub async fn set_desired(conf: &SdkConfig, group: &str, desired: i32) {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    asc.set_desired_capacity().auto_scaling_group_name(group).desired_capacity(desired).send().await.unwrap();
}

/// The group's scaling activities, most recent first: (status code, status message).
pub async fn activities(conf: &SdkConfig, group: &str) -> Vec<(String, Option<String>)> {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    let out = asc.describe_scaling_activities().auto_scaling_group_name(group).send().await.unwrap();
    out.activities()
        .iter()
        .map(|a| (a.status_code().unwrap().as_str().to_owned(), a.status_message().map(str::to_owned)))
        .collect()
}

pub fn failed() -> (String, Option<String>) {
    ("Failed".to_owned(), Some(LAUNCH_FAILURE.to_owned()))
}

pub fn successful() -> (String, Option<String>) {
    ("Successful".to_owned(), None)
}

/// How many instances the group has.
pub async fn instance_count(conf: &SdkConfig, group: &str) -> usize {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    let out = asc.describe_auto_scaling_groups().auto_scaling_group_names(group).send().await.unwrap();
    out.auto_scaling_groups()[0].instances().len()
}

/// The launcher's own evaluation of a group in the own account and region.
pub fn can_launch(moto: &Moto, group: &str) -> Value {
    moto.hook("GET", &format!("/_launcher/can-launch?asg={group}"), Value::Null)
}

/// The "why" of every key of a can-launch answer.
pub fn whys(verdict: &Value) -> Vec<String> {
    verdict["keys"].as_array().unwrap().iter().map(|k| k["why"].as_str().unwrap().to_owned()).collect()
}

/// The case 1 statements for `role` (EC2 Auto Scaling User Guide, "Required AWS KMS key
/// policy for use with encrypted volumes", example 1).
pub fn case1_statements(role: &str) -> Vec<Value> {
    vec![
        json!({"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": role},
               "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
               "Resource": "*"}),
        json!({"Sid": "Grant", "Effect": "Allow", "Principal": {"AWS": role}, "Action": "kms:CreateGrant",
               "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}),
    ]
}

/// A key policy: `owner`'s root may administer the key, plus `more` statements.
pub fn key_policy_with(owner: &str, more: Vec<Value>) -> String {
    let mut statements = vec![json!({"Sid": "Root", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{owner}:root")}, "Action": "kms:*", "Resource": "*"})];
    statements.extend(more);
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// Creates an encrypted volume under `key` and a snapshot of it; the snapshot id.
pub async fn encrypted_snapshot(conf: &SdkConfig, key: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let volume = ec2.create_volume().availability_zone("us-west-2a").size(8).encrypted(true).kms_key_id(key).send();
    let volume = volume.await.unwrap().volume_id().unwrap().to_owned();
    let snapshot = ec2.create_snapshot().volume_id(&volume).send().await.unwrap();
    snapshot.snapshot_id().unwrap().to_owned()
}

/// Registers an image whose root volume comes from `snapshot`; the image id.
pub async fn image_from_snapshot(conf: &SdkConfig, name: &str, snapshot: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let root = Ec2Mapping::builder()
        .device_name("/dev/xvda")
        .ebs(EbsBlockDevice::builder().snapshot_id(snapshot).build())
        .build();
    let out = ec2
        .register_image()
        .name(name)
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .block_device_mappings(root)
        .send()
        .await
        .unwrap();
    out.image_id().unwrap().to_owned()
}

/// Puts String parameter `name` = `value` in the own account's Systems Manager parameter
/// store of the launcher, through boto3 (the SDK for Rust has no SSM client here).
pub fn put_parameter(moto: &Moto, name: &str, value: &str) {
    let script = "import sys, boto3\n\
        ssm = boto3.client('ssm', endpoint_url=sys.argv[1], region_name=sys.argv[2],\n\
            aws_access_key_id='testing', aws_secret_access_key='testing')\n\
        ssm.put_parameter(Name=sys.argv[3], Value=sys.argv[4], Type='String', Overwrite=True)\n";
    let out = Command::new(python()).args(["-c", script, &moto.url, REGION, name, value]).output().expect("run python");
    assert!(out.status.success(), "put_parameter: {}", String::from_utf8_lossy(&out.stderr));
}

/// Shares image `image` of the account of `owner` with account `with` (a launch
/// permission), as its owner.
/// Shares snapshot `snapshot` of `owner`'s account with account `with`
/// (createVolumePermission): what copying an image of it across accounts needs.
pub async fn share_snapshot(owner: &SdkConfig, snapshot: &str, with: &str) {
    use aws_sdk_ec2::types::{OperationType, SnapshotAttributeName};
    let ec2 = aws_sdk_ec2::Client::new(owner);
    let request = ec2.modify_snapshot_attribute().snapshot_id(snapshot);
    let request = request.attribute(SnapshotAttributeName::CreateVolumePermission).operation_type(OperationType::Add);
    request.user_ids(with).send().await.unwrap();
}

pub async fn share_image(owner: &SdkConfig, image: &str, with: &str) {
    let ec2 = aws_sdk_ec2::Client::new(owner);
    let permission = aws_sdk_ec2::types::LaunchPermission::builder().user_id(with).build();
    let modification = aws_sdk_ec2::types::LaunchPermissionModifications::builder().add(permission).build();
    ec2.modify_image_attribute().image_id(image).launch_permission(modification).send().await.unwrap();
}
