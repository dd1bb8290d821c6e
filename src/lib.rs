//! asg-cmk-operator: keeps the IAM, KMS and Auto Scaling settings that EC2 Auto Scaling
//! groups need to launch instances whose EBS volumes use customer managed KMS keys.
//!
//! The shape is a functional core and an imperative shell, one folder each: [`core`]
//! holds the pure modules ([`core::config`] reads the desired state, [`core::plan`] is
//! the comparison between it and what AWS has), and [`shell`] the ones that do I/O
//! ([`shell::aws`] observes and writes, and is the only module that imports the AWS SDK).

pub mod core;
pub mod shell;
