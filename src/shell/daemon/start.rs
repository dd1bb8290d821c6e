//! The daemon's start: its endpoints up first, so a probe reaches it while it reads its
//! config (and `/readyz` says that is what it is doing), then the config read off the
//! threads that answer them, then the file watched.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{report, DaemonError, Settings};
use crate::core::model::desired::Desired;
use crate::core::status::board::StatusBoard;
use crate::shell::config_file;
use crate::shell::config_watch::{self, ConfigWatch};
use crate::shell::health::Health;
use crate::shell::metrics::Metrics;

/// What the daemon starts with.
pub(super) struct Started {
    pub server: JoinHandle<()>,
    pub watch: ConfigWatch,
    pub health: Arc<Health>,
    pub board: Arc<StatusBoard>,
    pub desired: Desired,
    /// The config file's text as parsed.
    pub last_text: String,
}

/// Listens, reads the config, watches it. Fails when the address cannot be used, the
/// config is invalid, or its folder cannot be watched.
pub(super) async fn start(settings: &Settings, metrics: &Arc<Metrics>) -> Result<Started, DaemonError> {
    let health = Arc::new(metrics.health());
    health.beat();
    metrics.resync_interval.set(settings.resync.as_secs_f64());
    let board = Arc::new(StatusBoard::default());
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: settings.listen, source })?;
    let addr = listener.local_addr().unwrap_or(settings.listen);
    health.set_cause(Some("reading the config file".into()));
    let server = tokio::spawn(crate::shell::server::serve(listener, metrics.clone(), health.clone(), board.clone()));
    tracing::info!(%addr, config = %settings.config.display(), resync = ?settings.resync, "listening");
    // One read: the text compared with later reads is the text that was parsed.
    let path = settings.config.clone();
    let mut load = tokio::task::spawn_blocking(move || config_file::load_with_text(&path));
    let loaded = loop {
        tokio::select! {
            r = &mut load => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => health.beat(),
        }
    };
    let (desired, last_text) = match loaded.map_err(|e| DaemonError::Load(e.to_string())).and_then(|r| Ok(r?)) {
        Ok(loaded) => loaded,
        Err(e) => {
            server.abort();
            return Err(e);
        }
    };
    health.set_cause(None);
    let watch = match config_watch::watch(&settings.config, settings.debounce) {
        Ok(w) => w,
        Err(e) => {
            server.abort();
            return Err(e.into());
        }
    };
    tracing::info!(bindings = desired.bindings.len(), "config loaded");
    report::warn_default_roles(&desired, None);
    report::warn_unknown_regions(&desired, None);
    report::warn_empty_prune(&desired, metrics);
    Ok(Started { server, watch, health, board, desired, last_text })
}
