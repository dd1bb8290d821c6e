//! Every end-to-end test, in one binary: each file here is a module, and each test starts
//! its own emulator (moto's server with the project's launcher, `tests/moto/`) on a
//! loopback port. One binary links once and runs every test in one pool, so that a slow
//! test of one file overlaps the tests of the others. Run one file's tests with
//! `cargo test --test e2e <file>::`, one test with its name.

mod common;

mod aws_fidelity;
mod cli;
mod contested;
mod daemon;
mod emulator;
mod events;
mod faults;
mod handoff;
mod iam_policy;
mod launchable;
mod least_privilege;
mod monitoring;
mod prune;
mod quotas;
mod reconcile;
mod reencrypt;
mod selectors;
mod template_versions;
