#!/usr/bin/env bash
# Runs every test. Sets up .venv (moto's server, the AWS emulator that the end-to-end tests
# start on a loopback port) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv
cargo test --locked "$@"
