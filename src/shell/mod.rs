//! The imperative shell: everything that does I/O or keeps time. AWS calls, the daemon
//! loop and its scheduling, the config file watch, the HTTP endpoints, metrics and logs.

pub mod aws;
pub mod bounded;
pub mod clock;
pub mod config_file;
pub mod config_watch;
pub mod daemon;
pub mod health;
pub mod healthcheck;
pub mod metrics;
pub mod ratelimit;
pub mod reconcile;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod telemetry;
pub mod writes;
