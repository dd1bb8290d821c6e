//! How the daemon stands with AWS: a small state machine that says when it needs waking.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(super) enum Connection<C> {
    /// Not connected: the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
        failures: u32,
    },
    /// An attempt is under way; its end wakes the loop.
    Connecting {
        handle: JoinHandle<Result<C, String>>,
        failures: u32,
    },
    Up(Arc<C>),
}

impl<C> Connection<C> {
    /// When the loop must wake for the connection: only to retry it.
    pub fn wake_at(&self) -> Option<Instant> {
        match self {
            Connection::Down { retry_at, .. } => Some(*retry_at),
            Connection::Connecting { .. } | Connection::Up(_) => None,
        }
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        match self {
            Connection::Down { failures, .. } | Connection::Connecting { failures, .. } => *failures,
            Connection::Up(_) => 0,
        }
    }
}

/// Resolves when a connection attempt ends; never while there is none.
pub(super) async fn join<C>(c: &mut Connection<C>) -> Result<Result<C, String>, tokio::task::JoinError> {
    match c {
        Connection::Connecting { handle, .. } => handle.await,
        _ => std::future::pending().await,
    }
}
