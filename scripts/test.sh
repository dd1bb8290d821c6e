#!/usr/bin/env bash
# Runs every test. Sets up .venv (moto's server, the AWS emulator that the end-to-end tests
# start on a loopback port) the first time, and Debian's prometheus package (prometheus and
# promtool, for tests/e2e/monitoring.rs) when it is missing and can be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv
. scripts/prometheus.sh
ensure_prometheus
rm -rf target/fault-suite
# Four end-to-end tests at a time on two cores: they mostly wait on the emulator and the
# operator's own timers (measured on 2 cores: 226 s with 2 at a time, 136 s with 4).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --locked "$@"
# The fault-injection suite's figures (tests/e2e/faults.rs), as docs/testing.md's table.
if compgen -G "target/fault-suite/*.md" >/dev/null; then
  echo
  echo "Fault-injection suite (tests/e2e/faults.rs):"
  echo "| scenario | setting | time to converge | calls | faults injected | result |"
  echo "|---|---|---|---|---|---|"
  cat target/fault-suite/*.md
fi
