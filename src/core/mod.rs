//! The functional core: plain data in, plain data out. Nothing here reads a file, a
//! socket, the AWS SDK or an async runtime; `scripts/check_layout.py` checks that.

pub mod access;
pub mod activity;
pub mod config;
pub mod contest;
pub mod events;
pub mod handoff;
pub mod iam_policy;
pub mod judge;
pub mod launch;
pub mod model;
pub mod naming;
pub mod next;
pub mod output;
pub mod plan;
pub mod policy;
pub mod reencrypt;
pub mod select;
pub mod status;
pub mod units;
