//! The command line: every subcommand, its flags, and the parsers of their values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use asg_cmk_operator::shell::telemetry::LogFormat;

/// Keeps EC2 Auto Scaling groups able to launch instances whose EBS volumes are
/// encrypted with customer managed KMS keys.
#[derive(Debug, Parser)]
#[command(name = "asg-cmk-operator", version, about)]
pub struct Cli {
    /// Log format on stderr. RUST_LOG sets the level (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Which trust policy `iam-policy --trust` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trust {
    Irsa,
    PodIdentity,
    Ecs,
    KeyAccount,
}

/// `KEY=VALUE`, for `--group-tag`.
fn tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file without calling AWS. Exit 0 when valid, 1 with every error otherwise.
    Validate {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the changes that would be made, and change nothing.
    /// Exit 0: nothing to do; 2: changes pending; 1: error.
    Plan {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Show (plan) or make (apply) prunes: remove from this instance's own statements
        /// and grants what no binding explains. Same as defaults.prune: true.
        #[arg(long)]
        prune: bool,
        /// Confirm a prune of more than half of the bindings at once, or of all of them.
        /// Same as defaults.allowMassPrune: true.
        #[arg(long)]
        allow_mass_prune: bool,
    },
    /// Reconcile once: observe, plan, execute, and observe again until converged.
    /// Exit 0 when every binding has converged.
    Apply {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// How many rounds of writes to make before giving up (1 to 100): each round
        /// observes, plans and writes.
        #[arg(long, alias = "max-passes", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        max_rounds: u32,
        /// Also write the AWS calls this apply made, by service, operation and outcome,
        /// as JSON to this file.
        #[arg(long, value_name = "FILE")]
        stats_json: Option<PathBuf>,
        /// Show (plan) or make (apply) prunes: remove from this instance's own statements
        /// and grants what no binding explains. Same as defaults.prune: true.
        #[arg(long)]
        prune: bool,
        /// Confirm a prune of more than half of the bindings at once, or of all of them.
        /// Same as defaults.allowMassPrune: true.
        #[arg(long)]
        allow_mass_prune: bool,
    },
    /// Print a config for the groups of one region: each with the customer managed keys
    /// its launches use (launch templates and configurations, AMI snapshots, the EBS
    /// default key), and where each was found. Only reads.
    Discover {
        /// The region whose groups to read.
        #[arg(long, required_unless_present = "selector")]
        region: Option<String>,
        /// Instead: preview what the config's selector NAME would bind now (needs --config).
        #[arg(long, value_name = "NAME", requires = "config", conflicts_with_all = ["region", "asgs"])]
        selector: Option<String>,
        /// The config file whose selector to preview.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only these groups (repeat the flag); all of the region's by default.
        #[arg(long = "asg", value_name = "NAME")]
        asgs: Vec<String>,
        /// The account; it must be the one the credentials act in (the default).
        #[arg(long)]
        account: Option<String>,
    },
    /// Show whether each binding's group can launch, as conditions (KeyUsable, RoleReady,
    /// KeyPolicyReady, GrantReady, AsgUsesRole, LaunchesHealthy). Only reads.
    /// Exit 0: every binding's permissions are in place, so its group can launch (a launch
    /// that failed before they were shows as LaunchesHealthy Unknown, FixedSinceLastLaunch,
    /// until the next launch tells); 2: some are not, or a launch failed with them in place;
    /// 1: error.
    Status {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the least-privilege IAM policy (JSON) for the operator's identity in one
    /// account, in documents IAM accepts (at most 6,144 characters each; several, as a
    /// JSON array, only when one cannot hold it), and the trust policies of its roles.
    /// Makes no AWS call.
    IamPolicy {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The account; defaults to the ASG account when all bindings share one.
        #[arg(long)]
        account: Option<String>,
        /// Allow the group updates on groups that carry this tag (KEY=VALUE), whatever their
        /// names: a group onboarded with the tag then needs no policy change.
        #[arg(long, value_name = "KEY=VALUE", value_parser = tag)]
        group_tag: Option<(String, String)>,
        /// Allow the group updates on groups whose names start with PREFIX (repeat it).
        #[arg(long = "group-name-prefix", value_name = "PREFIX")]
        group_prefixes: Vec<String>,
        /// Print a trust policy instead: irsa (needs --oidc-provider), pod-identity, ecs, or
        /// key-account (the role under `accounts`, trusting --operator-role).
        #[arg(long, value_enum)]
        trust: Option<Trust>,
        /// The EKS cluster's OIDC provider ARN, for the IRSA trust policy.
        #[arg(long, value_name = "ARN")]
        oidc_provider: Option<String>,
        /// The operator's Kubernetes namespace, for IRSA.
        #[arg(long, default_value = "asg-cmk-operator")]
        namespace: String,
        /// The operator's Kubernetes service account, for IRSA.
        #[arg(long, default_value = "asg-cmk-operator")]
        service_account: String,
        /// The role the operator runs as, which a key-account role trusts.
        #[arg(long, value_name = "ARN")]
        operator_role: Option<String>,
        /// Write every document to this folder (permissions*.json, and the trust policies
        /// whose inputs are given) instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Exit 0 when the daemon at URL answers 200, 1 otherwise: a container health check
    /// for platforms without an HTTP probe (ECS), in images without curl.
    Healthcheck {
        /// The daemon's /healthz (or /readyz) URL, plain http.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this help.
    Man,
    /// Run as a daemon: reconcile, watch the config file, resync periodically, and serve
    /// /healthz, /readyz, /metrics and /status.
    Run {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Address for /healthz, /readyz, /metrics and /status: IP:PORT, or HOST:PORT
        /// (localhost:8080).
        #[arg(long, default_value = "0.0.0.0:8080", value_parser = listen_address)]
        listen: SocketAddr,
        /// How often to observe everything and repair drift (e.g. 30s, 5m, 1h).
        #[arg(long, default_value = "5m", value_parser = resync_interval)]
        resync_interval: Duration,
        /// How soon a key whose owner has not yet added what `handoff` prints is checked
        /// again (e.g. 30s, 1m, 5m).
        #[arg(long, default_value = "1m", value_parser = resync_interval)]
        handoff_recheck_interval: Duration,
        /// How soon an image copy in progress (`strategy: reencrypt`) is looked at again.
        #[arg(long, default_value = "15s", value_parser = resync_interval)]
        copy_recheck_interval: Duration,
        /// Receive AWS's change events from this SQS queue (its URL), over the config's
        /// `events`; see docs/operating.md, "Change events".
        #[arg(long, value_name = "URL")]
        events_queue: Option<String>,
    },
    /// For keys whose owner account has no `accounts` entry: print, per owner account, the
    /// key policy statements to add (the operator's own case 2 statements, each with its
    /// reason) and the aws CLI steps. Only reads (who the caller is).
    Handoff {
        /// The config file (YAML; see config/example.yaml and config/schema.json).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub use asg_cmk_operator::core::config::duration::parse_duration;

/// The resync interval: from a second (more often would spend the AWS read quotas on
/// repeating the same answer) to a week.
pub fn resync_interval(s: &str) -> Result<Duration, String> {
    const RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
    let d = parse_duration(s)?;
    if d < RANGE.0 || d > RANGE.1 {
        return Err(format!("must be between 1s and 168h (a week), not {s}"));
    }
    Ok(d)
}

/// `--listen`: an IP address and port, or a host name (localhost) and port, resolved to
/// its first address.
pub fn listen_address(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let hint = "use IP:PORT or HOST:PORT, such as 0.0.0.0:8080, 127.0.0.1:8080 or localhost:8080";
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{s:?} resolves to no address; {hint}")),
        Err(e) => Err(format!("{s:?}: {e}; {hint}")),
    }
}
