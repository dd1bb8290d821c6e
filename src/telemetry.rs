//! Logging: tracing to stderr, as text or one JSON object per line.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter when RUST_LOG is unset: `info`, without the SDK credential chain's warning
/// per source that gave nothing (raw error structures; when no source gives credentials,
/// the operator says so in one plain error).
pub const DEFAULT_FILTER: &str = "info,aws_config::meta::credentials::chain=error";

/// Installs the global subscriber. `RUST_LOG` overrides [`DEFAULT_FILTER`].
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
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
