#!/usr/bin/env bash
# Runs every test. Creates .venv with moto's server (the AWS emulator the end-to-end tests
# start on a loopback port) when it is missing or holds another moto version.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
if ! .venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "setting up .venv with moto[server]==$MOTO_VERSION" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

cargo test --locked "$@"
