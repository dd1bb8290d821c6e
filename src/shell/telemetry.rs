//! Logging: tracing to stderr, as text or one JSON object per line. Logging never stops
//! the operator: a line stderr cannot take (its reader went away: a log shipper
//! restarting, `2>&1 | head`) is dropped and counted, never a panic.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Writes to stderr that failed, and were dropped.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many writes to stderr failed and were dropped since the process started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Stderr, where a failed write is dropped and counted instead of returned: tracing
/// would report it on stderr itself (`eprintln!`, which panics when stderr is gone).
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// `eprint!` that never panics: a message stderr cannot take is dropped and counted.
pub fn eprint(text: &str) {
    let _ = LossyStderr.write(text.as_bytes());
}

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
        eprint(&format!("warning: RUST_LOG={given:?} is not a valid filter ({e}); using {DEFAULT_FILTER}\n"));
        EnvFilter::new(DEFAULT_FILTER)
    });
    // Colours only on a terminal: log collectors would store the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .log_internal_errors(false)
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
