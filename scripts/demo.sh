#!/usr/bin/env bash
# One command, no AWS account needed: starts a local AWS emulator (moto, with the test
# launcher's extensions) on loopback, seeds a sample fleet whose ASGs cannot launch yet,
# and runs `asg-cmk-operator run` against it. Edit target/demo/config.yaml while it runs.
# Ctrl-C stops everything. It never talks to real AWS: the endpoint and credentials are
# set here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv
# cargo shows its own progress; the first build compiles the AWS SDK (minutes).
cargo build --locked

DEMO_DIR=target/demo
LISTEN="${DEMO_LISTEN:-127.0.0.1:8080}"
mkdir -p "$DEMO_DIR"
rm -f "$DEMO_DIR/emulator.out"

.venv/bin/python tests/moto/launcher.py --host 127.0.0.1 --port 0 >"$DEMO_DIR/emulator.out" 2>"$DEMO_DIR/emulator.log" &
EMULATOR=$!
cleanup() {
  kill "$EMULATOR" 2>/dev/null || true
  wait "$EMULATOR" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 100); do
  grep -q '^READY ' "$DEMO_DIR/emulator.out" 2>/dev/null && break
  kill -0 "$EMULATOR" 2>/dev/null || { cat "$DEMO_DIR/emulator.log" >&2; exit 1; }
  sleep 0.1
done
ENDPOINT=$(sed -n 's/^READY //p' "$DEMO_DIR/emulator.out")
[ -n "$ENDPOINT" ] || { echo "demo: the emulator did not start" >&2; exit 1; }
echo "demo: local AWS emulator at $ENDPOINT"

export AWS_ENDPOINT_URL="$ENDPOINT" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-west-2
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN
.venv/bin/python scripts/demo_seed.py --endpoint "$ENDPOINT" --config "$DEMO_DIR/config.yaml" | sed 's/^/demo: /'
echo "demo: config at $DEMO_DIR/config.yaml; metrics at http://$LISTEN/metrics; Ctrl-C to stop"
echo
target/debug/asg-cmk-operator run --config "$DEMO_DIR/config.yaml" --listen "$LISTEN" --resync-interval 30s
