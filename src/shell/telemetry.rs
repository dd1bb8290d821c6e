//! Logging: tracing to stderr, as text or one JSON object per line.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The SDK credential chain logs a warning per source that gave nothing, as raw error
/// structures; when no source gives credentials, the operator says so in one plain error.
const QUIET_CREDENTIAL_CHAIN: &str = "aws_config::meta::credentials::chain=error";

/// The filter when RUST_LOG is unset.
pub const DEFAULT_FILTER: &str = "info,aws_config::meta::credentials::chain=error";

/// The filter for a RUST_LOG value (None: unset). A RUST_LOG that does not mention
/// `aws_config` keeps the credential chain quiet, so `RUST_LOG=info` reads as the default.
pub fn filter_directives(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_FILTER.to_owned(),
        Some(v) if v.contains("aws_config") => v.to_owned(),
        Some(v) => format!("{v},{QUIET_CREDENTIAL_CHAIN}"),
    }
}

/// Installs the global subscriber, filtered by [`filter_directives`] of `RUST_LOG`.
pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(rust_log.as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        let given = rust_log.as_deref().unwrap_or_default();
        eprintln!("warning: RUST_LOG={given:?} is not a valid filter ({e}); using {DEFAULT_FILTER}");
        EnvFilter::new(DEFAULT_FILTER)
    });
    // Colours only on a terminal: log collectors would store the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_keeps_the_credential_chain_quiet_unless_it_names_aws_config() {
        assert_eq!(filter_directives(None), DEFAULT_FILTER);
        assert_eq!(filter_directives(Some(" ")), DEFAULT_FILTER);
        assert_eq!(filter_directives(Some("debug")), "debug,aws_config::meta::credentials::chain=error");
        assert_eq!(filter_directives(Some("info,aws_config=debug")), "info,aws_config=debug");
        for v in [None, Some("trace"), Some("warn,hyper=off")] {
            assert!(EnvFilter::try_new(filter_directives(v)).is_ok(), "{v:?}");
        }
    }
}
