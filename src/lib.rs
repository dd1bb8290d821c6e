//! asg-cmk-operator: keeps the IAM, KMS and Auto Scaling settings that EC2 Auto Scaling
//! groups need to launch instances whose EBS volumes use customer managed KMS keys.
//!
//! The shape is a functional core and an imperative shell: [`config`] reads the desired
//! state, [`aws`] observes and writes (the only module that imports the AWS SDK), and
//! [`plan`] is the pure comparison between the two.

pub mod access;
pub mod activity;
pub mod aws;
pub mod bounded;
pub mod config;
pub mod daemon;
pub mod handoff;
pub mod healthcheck;
pub mod iam_policy;
pub mod launch;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plan;
pub mod policy;
pub mod ratelimit;
pub mod reconcile;
pub mod reencrypt;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod units;
