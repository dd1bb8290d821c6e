//! Command line: `validate`, `plan`, `apply`, `status`, `discover`, `run`, `handoff`,
//! `iam-policy`, and the conventions around them (`healthcheck`, `completions`, `man`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};

mod cli;
#[cfg(test)]
use cli::{listen_address, parse_duration, resync_interval};
use cli::{Cli, Command, Output};

use asg_cmk_operator::core::config;

use asg_cmk_operator::core::judge::{Judged, Standing};
use asg_cmk_operator::core::model::desired::Desired;
use asg_cmk_operator::core::model::is_region;
use asg_cmk_operator::core::model::{AccountId, Wait};
use asg_cmk_operator::core::plan::Depth;
use asg_cmk_operator::core::{access, iam_policy, launch, output, status};
use asg_cmk_operator::shell::aws::{self, Aws, ExecSettings};
use asg_cmk_operator::shell::telemetry;
use asg_cmk_operator::shell::{clock, config_file, daemon, healthcheck, reconcile};

/// `eprintln!` that never panics: a message stderr cannot take (its reader went away) is
/// dropped and counted, and the command goes on.
macro_rules! errln {
    ($($arg:tt)*) => { telemetry::eprint(&format!("{}\n", format_args!($($arg)*))) };
}

/// Set when writing to stdout failed for a reason other than a reader that went away.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout. A reader that has gone away (`| head`) is not an error: the rest of
/// the output is dropped quietly, as Unix tools do, and the command's exit status stands.
/// Any other write error is reported once, and makes the exit status 1.
fn emit(text: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe && !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
            errln!("error: cannot write to stdout: {e}");
        }
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { emit(format!($($arg)*).as_bytes()) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { emit(format!("{}\n", format_args!($($arg)*)).as_bytes()) };
}

/// Whether a group, a key or an `accounts` entry of the config is in `account`.
fn names_account(desired: &Desired, account: &AccountId) -> bool {
    desired.accounts.contains_key(account)
        || desired.bindings.iter().any(|b| &b.asg.account == account || b.key.account() == account)
        || desired
            .selectors
            .iter()
            .any(|s| &s.account == account || s.allowed_keys.iter().any(|k| k.account() == account))
}

/// The endpoint URL settings the SDK reads from the environment (`AWS_ENDPOINT_URL`, and
/// `AWS_ENDPOINT_URL_<SERVICE>`): each must be an absolute URL. The SDK would log a
/// warning and then fail every call with a dump of its request.
fn check_endpoint_env() -> Result<(), String> {
    if std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(());
    }
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else { continue };
        if name != "AWS_ENDPOINT_URL" && !name.starts_with("AWS_ENDPOINT_URL_") {
            continue;
        }
        let uri = value.parse::<hyper::Uri>().ok();
        if !uri.is_some_and(|u| u.scheme().is_some() && u.authority().is_some()) {
            let example =
                if value.contains("://") { "http://127.0.0.1:5000".to_owned() } else { format!("http://{value}") };
            return Err(format!("{name}={value:?} is not a URL with a scheme and a host, such as {example}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let calls_aws = matches!(
        cli.command,
        Command::Plan { .. }
            | Command::Apply { .. }
            | Command::Discover { .. }
            | Command::Status { .. }
            | Command::Handoff { .. }
            | Command::Run { .. }
    );
    if let Some(Err(e)) = calls_aws.then(check_endpoint_env) {
        errln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let code = match cli.command {
        Command::Validate { config } => match load_warning(&config) {
            Some(d) => {
                outln!("{}: valid, {} binding{}", config.display(), d.bindings.len(), plural(d.bindings.len()));
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Plan { config, output, prune, allow_mass_prune } => {
            let Some(mut desired) = load_warning(&config) else { return ExitCode::FAILURE };
            desired.operator.prune |= prune;
            desired.operator.allow_mass_prune |= allow_mass_prune;
            runtime().block_on(plan(desired, output))
        }
        Command::Apply { config, max_rounds, stats_json, prune, allow_mass_prune } => {
            apply_command(&config, max_rounds, stats_json, prune, allow_mass_prune)
        }
        Command::Discover { selector: Some(name), config: Some(config), .. } => {
            let Some(desired) = load(&config) else { return ExitCode::FAILURE };
            runtime().block_on(preview_selector(desired, name))
        }
        Command::Discover { region, asgs, account, .. } => {
            runtime().block_on(discover(region.unwrap_or_default(), asgs, account))
        }
        Command::Status { config, output } => {
            let Some(desired) = load(&config) else { return ExitCode::FAILURE };
            runtime().block_on(status(desired, output))
        }
        Command::IamPolicy {
            config,
            account,
            group_tag,
            group_prefixes,
            trust,
            oidc_provider,
            namespace,
            service_account,
            operator_role,
            out_dir,
        } => {
            let scope = iam_policy::Scope { group_tag, group_prefixes };
            let trusts = TrustInputs { kind: trust, oidc_provider, namespace, service_account, operator_role };
            iam_policy_command(&config, account.as_deref(), &scope, &trusts, out_dir.as_deref())
        }
        Command::Healthcheck { url, timeout } => healthcheck_command(&url, timeout),
        Command::Completions { shell } => completions_command(shell),
        Command::Man => man_command(),
        Command::Handoff { config, output } => {
            let Some(desired) = load(&config) else { return ExitCode::FAILURE };
            runtime().block_on(handoff(desired, output))
        }
        Command::Run {
            config,
            listen,
            resync_interval,
            handoff_recheck_interval,
            copy_recheck_interval,
            events_queue,
        } => {
            let mut settings = daemon::Settings::new(config, listen, resync_interval);
            settings.handoff_recheck = handoff_recheck_interval;
            settings.progress_recheck = copy_recheck_interval;
            settings.events_queue = events_queue;
            run_daemon(settings)
        }
    };
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        ExitCode::FAILURE
    } else {
        code
    }
}

/// `apply`: the config's changes made, after checking that `--stats-json` can be written.
fn apply_command(
    config: &Path,
    max_rounds: u32,
    stats_json: Option<PathBuf>,
    prune: bool,
    allow_mass_prune: bool,
) -> ExitCode {
    let Some(mut desired) = load_warning(config) else { return ExitCode::FAILURE };
    desired.operator.prune |= prune;
    desired.operator.allow_mass_prune |= allow_mass_prune;
    // Before any change is made: a path that cannot be written would otherwise fail
    // only after every change, with no summary.
    if let Some(Err(e)) = stats_json.as_deref().map(check_writable) {
        errln!("error: --stats-json {}: cannot write: {e}", stats_json.unwrap_or_default().display());
        return ExitCode::FAILURE;
    }
    runtime().block_on(apply(desired, max_rounds, stats_json))
}

/// What `iam-policy` needs for the trust policies.
struct TrustInputs {
    kind: Option<cli::Trust>,
    oidc_provider: Option<String>,
    namespace: String,
    service_account: String,
    operator_role: Option<String>,
}

impl TrustInputs {
    /// Each trust policy whose inputs are given, by its file name; an error for `kind`
    /// when its inputs are missing or wrong.
    fn policies(&self, account: &AccountId) -> Result<Vec<(&'static str, serde_json::Value)>, String> {
        use iam_policy::trust;
        let mut out = vec![
            ("trust-pod-identity.json", trust::pod_identity(account)),
            ("trust-ecs.json", trust::ecs_task(account)),
        ];
        match &self.oidc_provider {
            Some(p) => out.push(("trust-irsa.json", trust::irsa(p, &self.namespace, &self.service_account)?)),
            None if self.kind == Some(cli::Trust::Irsa) => return Err("--trust irsa needs --oidc-provider ARN".into()),
            None => {}
        }
        match &self.operator_role {
            Some(r) => out.push(("trust-key-account.json", trust::assumed_by(r)?)),
            None if self.kind == Some(cli::Trust::KeyAccount) => {
                return Err("--trust key-account needs --operator-role ARN (the role the operator runs as)".into())
            }
            None => {}
        }
        Ok(out)
    }
}

/// `iam-policy`: the operator's least-privilege policy for one account, in documents IAM
/// accepts; or a trust policy; or all of them written to a folder.
fn iam_policy_command(
    config: &Path,
    account: Option<&str>,
    scope: &iam_policy::Scope,
    trusts: &TrustInputs,
    out_dir: Option<&Path>,
) -> ExitCode {
    let Some(desired) = load(config) else { return ExitCode::FAILURE };
    let account = match account.map(|a| AccountId::parse(a).ok_or(a)) {
        Some(Err(a)) => {
            errln!("error: --account {a:?} is not an account id of exactly 12 digits");
            return ExitCode::FAILURE;
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    // An account the config names nowhere still gets the hub's policy (assume the
    // roles of `accounts`), which is also what a mistyped id gets.
    if let Some(a) = account.filter(|a| !names_account(&desired, a)) {
        errln!("warning: account {a} is named nowhere in the config (no group, key or `accounts` entry is in it): the policy below only assumes the roles of `accounts`; check the id if this is not the account the operator runs in");
    }
    let account = match iam_policy::default_account(&desired, account) {
        Ok(a) => a,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let trust = match trusts.policies(&account) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(kind) = trusts.kind {
        let file = match kind {
            cli::Trust::Irsa => "trust-irsa.json",
            cli::Trust::PodIdentity => "trust-pod-identity.json",
            cli::Trust::Ecs => "trust-ecs.json",
            cli::Trust::KeyAccount => "trust-key-account.json",
        };
        let doc = trust.iter().find(|(f, _)| *f == file).map(|(_, d)| d).expect("checked above");
        outln!("{}", serde_json::to_string_pretty(doc).expect("policy JSON serialises"));
        return ExitCode::SUCCESS;
    }
    let policies = match iam_policy::policies(&desired, &account, scope) {
        Ok(p) => p,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for n in &policies.notes {
        errln!("note: {n}");
    }
    match out_dir {
        Some(dir) => write_policies(dir, &policies.documents, &trust),
        None => {
            let shown = match policies.documents.as_slice() {
                [one] => one.clone(),
                many => serde_json::Value::Array(many.to_vec()),
            };
            outln!("{}", serde_json::to_string_pretty(&shown).expect("policy JSON serialises"));
            ExitCode::SUCCESS
        }
    }
}

/// `iam-policy --out-dir`: each document in a file of its own, named as it is listed.
fn write_policies(dir: &Path, documents: &[serde_json::Value], trust: &[(&str, serde_json::Value)]) -> ExitCode {
    let mut files: Vec<(String, &serde_json::Value)> = match documents {
        [one] => vec![("permissions.json".to_owned(), one)],
        many => many.iter().enumerate().map(|(i, d)| (format!("permissions-{}.json", i + 1), d)).collect(),
    };
    files.extend(trust.iter().map(|(f, d)| ((*f).to_owned(), d)));
    if let Err(e) = std::fs::create_dir_all(dir) {
        errln!("error: --out-dir {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, doc) in files {
        let path = dir.join(&name);
        let text = serde_json::to_string_pretty(doc).expect("policy JSON serialises");
        if let Err(e) = std::fs::write(&path, format!("{text}\n")) {
            errln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        outln!("{}", path.display());
    }
    ExitCode::SUCCESS
}

/// `healthcheck`: the daemon's /healthz answered 200, or why not.
fn healthcheck_command(url: &str, timeout: Duration) -> ExitCode {
    match healthcheck::check(url, timeout) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(code) => {
            errln!("unhealthy: {url} answered {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            errln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `completions`: the shell's completion script on stdout.
fn completions_command(shell: clap_complete::Shell) -> ExitCode {
    // Rendered first: the generator panics on a write error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "asg-cmk-operator", &mut script);
    emit(&script);
    ExitCode::SUCCESS
}

/// `man`: the man page on stdout.
fn man_command() -> ExitCode {
    match man_page() {
        Ok(page) => {
            emit(&page);
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: the daemon, until a shutdown signal.
fn run_daemon(settings: daemon::Settings) -> ExitCode {
    match runtime().block_on(daemon::run(settings, async {
        shutdown_signal().await;
    })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The man page: clap_mangen's, which lists the subcommands but not their options, then a
/// section for each subcommand with its synopsis, description and options.
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        let title = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
        clap_mangen::roff::Roff::default().control("SH", [title.as_str()]).to_writer(&mut page)?;
        // The subcommand's own sections become subsections of its section.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => page.extend_from_slice(format!(".SS {heading}\n").as_bytes()),
                None => page.extend_from_slice(format!("{line}\n").as_bytes()),
            }
        }
    }
    Ok(page)
}

/// Resolves on SIGTERM or SIGINT, with the signal's name. Where the handler cannot be
/// installed, it never resolves (and says so): the default action stops the process.
async fn shutdown_signal() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        tracing::warn!("cannot handle SIGTERM; it stops the process without a summary");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal = name, "signal received");
    name
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core) and
/// keeps what is freed in it. The operator waits on AWS far more than it allocates, so one
/// arena costs it no measurable time, and at 10,000 bindings it took the daemon's peak RSS
/// from 62 to 43 MiB (`scripts/bench.sh`). A `MALLOC_ARENA_MAX` in the environment wins.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: no other thread exists yet, and mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Whether `path` can be opened for writing. Leaves an existing file as it is, and no file
/// where there was none.
fn check_writable(path: &Path) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("failed to start the tokio runtime")
}

/// [`load`], and a warning on stderr for each group on the default service-linked role and
/// each region the SDK does not know (`validate`, `plan` and `apply`; `run` logs them).
fn load_warning(path: &Path) -> Option<Desired> {
    let d = load(path)?;
    for w in config::default_role_warnings(&d).into_iter().chain(config::unknown_region_warnings(&d)) {
        errln!("warning: {w}");
    }
    Some(d)
}

fn load(path: &Path) -> Option<Desired> {
    match config_file::load(path) {
        Ok(d) => Some(d),
        Err(e) => {
            errln!("error: {e}");
            None
        }
    }
}

async fn connect(desired: &Desired) -> Option<Arc<Aws>> {
    let region = desired.bindings.first().map(|b| b.asg.region.as_str());
    let region = region.or_else(|| desired.selectors.first().map(|s| s.regions[0].as_str())).unwrap_or("us-east-1");
    match Aws::connect(region, Default::default()).await {
        Ok(aws) => {
            tracing::info!(account = %aws.caller(), "connected to AWS");
            aws.set_create_grant_rate(desired.operator.create_grant_rate());
            Some(Arc::new(aws))
        }
        Err(e) => {
            errln!("error: {e}");
            None
        }
    }
}

async fn plan(desired: Desired, output: Output) -> ExitCode {
    let Some(aws) = connect(&desired).await else { return ExitCode::FAILURE };
    let desired = aws::select::selected(&aws, &desired).await;
    let (observed, p) = reconcile::observe_and_plan(&aws, &desired, Depth::Full).await;
    // The operator acts as its own caller in its account, and as the configured role in
    // every other.
    let mut operators: BTreeMap<AccountId, String> = desired.accounts.clone();
    operators.insert(*aws.caller(), aws.caller_arn().to_owned());
    let access = access::key_access(&desired, &observed, &operators);
    match output {
        Output::Text => out!("{}", output::plan_text(&p, &access)),
        Output::Json => outln!("{}", output::plan_json(&p, &access)),
    }
    if p.stopped().any(|j| j.verdict.is_failed()) {
        ExitCode::FAILURE
    } else if p.changes.is_empty() && p.stopped().next().is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn handoff(desired: Desired, output: Output) -> ExitCode {
    let Some(aws) = connect(&desired).await else { return ExitCode::FAILURE };
    let desired = aws::select::selected(&aws, &desired).await;
    match output {
        Output::Text => out!("{}", asg_cmk_operator::core::handoff::text(&desired, aws.caller())),
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&asg_cmk_operator::core::handoff::document(&desired, aws.caller()))
                .expect("hand-off JSON serialises")
        ),
    }
    ExitCode::SUCCESS
}

async fn discover(region: String, asgs: Vec<String>, account: Option<String>) -> ExitCode {
    if !is_region(&region) {
        errln!("error: --region {region:?} is not a region name");
        return ExitCode::FAILURE;
    }
    if !asg_cmk_operator::core::model::is_known_region(&region) {
        errln!("warning: --region {region:?} is not a region the AWS SDK knows: check its spelling");
    }
    let aws = match Aws::connect(&region, Default::default()).await {
        Ok(aws) => aws,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let caller = *aws.caller();
    if let Some(a) = account.filter(|a| a != caller.as_str()) {
        errln!("error: --account {a} is not the account the credentials act in ({caller}); run discover with that account's credentials");
        return ExitCode::FAILURE;
    }
    let own = aws.account(&caller).expect("our own account always resolves");
    let groups = match aws::discover::describe_groups(&own, &region, &asgs).await {
        Ok(g) => g,
        Err(f) => {
            errln!("error: {f}");
            return ExitCode::FAILURE;
        }
    };
    let sources: Vec<_> = groups.iter().map(|(a, g)| (a.clone(), g.sources.clone())).collect();
    let launches = aws::discover::group_launches(&own, &region, &sources, aws::READ_CONCURRENCY).await;
    let rows: Vec<(String, Result<_, String>)> =
        launches.into_iter().map(|(a, r)| (a.name.clone(), r.map_err(|f| f.message))).collect();
    out!("{}", launch::render_config(&caller, &region, &rows, &status::rfc3339(clock::unix_seconds())));
    ExitCode::SUCCESS
}

/// `discover --selector NAME`: what the selector would bind now, group by group.
async fn preview_selector(mut desired: Desired, name: String) -> ExitCode {
    let Some(selector) = desired.selectors.iter().find(|s| *s.name == *name).cloned() else {
        let names: Vec<&str> = desired.selectors.iter().map(|s| &*s.name).collect();
        errln!(
            "error: the config has no selector {name:?} (it has: {})",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        );
        return ExitCode::FAILURE;
    };
    desired.selectors = vec![selector];
    let Some(aws) = connect(&desired).await else { return ExitCode::FAILURE };
    let swept = aws::select::sweep(&aws, &desired).await;
    out!("{}", asg_cmk_operator::core::select::preview(&desired, &swept));
    ExitCode::SUCCESS
}

async fn status(desired: Desired, output: Output) -> ExitCode {
    let Some(aws) = connect(&desired).await else { return ExitCode::FAILURE };
    let desired = aws::select::selected(&aws, &desired).await;
    // The plan's judgement, and with prune on, what a prune would hold for groups that
    // still launch through an access no binding needs.
    let (_, plan) = reconcile::observe_and_plan(&aws, &desired, Depth::Full).await;
    let held: Vec<String> = plan.prune.spared.iter().map(ToString::to_string).collect();
    let judged = plan.judged;
    match output {
        Output::Text => {
            out!("{}", status::text(&judged));
            for h in &held {
                outln!("Prune held: {h}");
            }
        }
        Output::Json => {
            let mut doc: serde_json::Value = serde_json::from_str(&status::document(&judged)).expect("status is JSON");
            if !held.is_empty() {
                doc["prunesHeld"] = serde_json::json!(held);
            }
            outln!("{}", serde_json::to_string_pretty(&doc).expect("JSON serialises"));
        }
    }
    if judged.iter().all(|j| j.ready()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn apply(desired: Desired, max_rounds: u32, stats_json: Option<PathBuf>) -> ExitCode {
    let Some(aws) = connect(&desired).await else { return ExitCode::FAILURE };
    let desired = aws::select::selected(&aws, &desired).await;
    // SIGTERM or SIGINT: the writes in flight finish, no other starts, and what was done
    // and what was not is said before exiting non-zero.
    let settings = ExecSettings::default();
    let stop = settings.stop.clone();
    let signalled = tokio::spawn(async move {
        let name = shutdown_signal().await;
        stop.request();
        name
    });
    let out = reconcile::apply(&aws, &desired, max_rounds, &settings, Depth::Full, &Default::default()).await;
    let stopped_by = match signalled.is_finished() {
        true => signalled.await.ok(),
        false => {
            signalled.abort();
            None
        }
    };
    for (asg, launch) in &out.launches {
        if let Ok(Some(a)) = launch.as_ref().map(Option::as_ref) {
            if a.failed() {
                let message = a.status_message.as_deref().unwrap_or("no status message");
                tracing::warn!(asg = %asg, status_message = message, "the group's most recent launch failed");
            }
        }
    }
    if let Some(Err(e)) = stats_json.as_deref().map(|path| write_stats(path, &aws, &out)) {
        errln!("error: cannot write {}: {e}", stats_json.unwrap_or_default().display());
        return ExitCode::FAILURE;
    }
    let n = out.applied.total() as usize;
    let converged = out.judged.iter().filter(|j| j.verdict.converged()).count();
    outln!(
        "{} change{} applied; {} of {} binding{} converged.",
        n,
        plural(n),
        converged,
        desired.bindings.len(),
        plural(desired.bindings.len())
    );
    if let Some(why) = &out.prune_held {
        outln!("Prune held: {why}");
    }
    if !out.prune_pending.is_empty() {
        outln!("{} key{} not pruned:", out.prune_pending.len(), plural(out.prune_pending.len()));
        for (key, f) in &out.prune_pending {
            outln!("  ! {key}: {f}");
        }
    }
    if let Some(signal) = stopped_by {
        outln!("stopped by {signal}: the writes in flight finished, and no other was made.");
    }
    let exit = match stopped_by {
        Some("SIGINT") => ExitCode::from(130),
        Some(_) => ExitCode::from(143),
        None => ExitCode::FAILURE,
    };
    if out.judged.iter().all(|j| j.verdict.converged()) {
        return if out.prune_pending.is_empty() && stopped_by.is_none() { ExitCode::SUCCESS } else { exit };
    }
    print_unconverged(&out.judged);
    exit
}

/// `--stats-json`: the rounds, the changes applied and the calls made, by outcome.
fn write_stats(path: &Path, aws: &Aws, out: &reconcile::Outcome) -> std::io::Result<()> {
    let calls: Vec<serde_json::Value> = aws
        .stats()
        .snapshot()
        .into_iter()
        .map(|((service, operation, outcome), count)| {
            serde_json::json!({"service": service, "operation": operation, "outcome": outcome, "count": count})
        })
        .collect();
    let doc = serde_json::json!({"rounds": out.rounds, "applied": out.applied.total(), "calls": calls});
    std::fs::write(path, doc.to_string())
}

/// The bindings that did not converge: failed, awaiting their key's owner, or with an
/// image copy in progress.
fn print_unconverged(judged: &[Judged]) {
    let waits = |j: &&Judged, w: Wait| j.verdict.standing() == Standing::Waiting(w);
    let failed: Vec<&Judged> = judged.iter().filter(|j| !j.verdict.converged() && j.verdict.is_failed()).collect();
    let waiting: Vec<&Judged> =
        judged.iter().filter(|j| waits(j, Wait::KeyOwner) || waits(j, Wait::ImageOwner)).collect();
    let copying: Vec<&Judged> = judged.iter().filter(|j| waits(j, Wait::Copy)).collect();
    for line in output::contested_lines(judged) {
        outln!("{line}");
    }
    if !failed.is_empty() {
        outln!("{} binding{} failed:", failed.len(), plural(failed.len()));
        for j in &failed {
            outln!("  ! {}: {}", j.binding, j.verdict.message());
        }
    }
    if !waiting.is_empty() {
        outln!(
            "{} binding{} awaiting another account's owner (each says what to ask; `asg-cmk-operator handoff` prints key policy statements):",
            waiting.len(),
            plural(waiting.len())
        );
        for j in &waiting {
            outln!("  ? {}: {}", j.binding, j.verdict.message());
        }
    }
    if !copying.is_empty() {
        outln!(
            "{} binding{} in progress (run `apply` again once AWS has finished, or let `run` follow it):",
            copying.len(),
            plural(copying.len())
        );
        for j in &copying {
            outln!("  ~ {}: {}", j.binding, j.verdict.message());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubernetes_flags() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Err("\"45\" has no unit: write 45s, 45m or 45h".into()));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn durations_that_overflow_are_errors_not_panics() {
        assert_eq!(parse_duration("18446744073709551615h"), Err("\"18446744073709551615h\" is too long".into()));
        assert!(parse_duration("307445734561825861m").is_err());
        assert!(parse_duration("99999999999999999999s").is_err(), "more digits than a u64 holds");
        assert_eq!(parse_duration("18446744073709551615s"), Ok(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn the_resync_interval_is_range_checked() {
        assert_eq!(resync_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(resync_interval("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert!(resync_interval("999ms").unwrap_err().contains("between 1s and 168h"));
        assert!(resync_interval("169h").is_err());
        // Would overflow Instant arithmetic in the daemon if let through.
        assert!(resync_interval("18446744073709551615s").is_err());
    }

    #[test]
    fn the_man_page_lists_every_option_of_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let title = format!(".SH \"ASG-CMK-OPERATOR {}\"", sub.get_name().to_uppercase());
            let at = page.find(&title).unwrap_or_else(|| panic!("no section {title} in\n{page}"));
            let section = &page[at..];
            let section = &section[..section[1..].find("\n.SH ").map_or(section.len(), |n| n + 1)];
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let name = match arg.get_long() {
                    Some(long) => format!("\\-\\-{}", long.replace('-', "\\-")),
                    None => arg.get_id().as_str().to_owned(),
                };
                assert!(section.contains(&name), "{} lacks {name}:\n{section}", sub.get_name());
            }
        }
    }

    #[test]
    fn help_texts_name_what_they_take() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        let listen = run.split("--listen").nth(1).unwrap();
        assert!(listen[..listen.find("--resync-interval").unwrap()].contains("/status"), "{run}");
        let apply = cmd.find_subcommand_mut("apply").unwrap().render_help().to_string();
        assert!(apply.contains("--stats-json <FILE>"), "{apply}");
    }

    #[test]
    fn listen_takes_a_host_name() {
        let cli = Cli::try_parse_from(["asg-cmk-operator", "run", "--config", "c.yaml", "--listen", "localhost:8080"]);
        let Command::Run { listen, .. } = cli.unwrap().command else { panic!("not run") };
        assert!(listen.ip().is_loopback() && listen.port() == 8080, "{listen}");
        assert_eq!(listen_address("0.0.0.0:9"), Ok(std::net::SocketAddr::from(([0, 0, 0, 0], 9))));
        assert!(listen_address("localhost").unwrap_err().contains("localhost:8080"));
    }

    #[test]
    fn the_command_line_refuses_out_of_range_values() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for args in [
            &["asg-cmk-operator", "run", "--config", "c.yaml", "--resync-interval", "99999999999999999h"][..],
            &["asg-cmk-operator", "run", "--config", "c.yaml", "--resync-interval", "0s"],
            &["asg-cmk-operator", "apply", "--config", "c.yaml", "--max-passes", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
