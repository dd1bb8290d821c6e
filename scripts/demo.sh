#!/usr/bin/env bash
# One command, no AWS account needed: starts a local AWS emulator (moto, with the test
# launcher's extensions) on loopback, seeds a sample fleet whose ASGs cannot launch yet,
# and runs `asg-cmk-operator run` against it until the groups launch; then it shows
# `status` once more and ends. It never talks to real AWS: the endpoint and credentials
# are set here.
#
# Usage: scripts/demo.sh [--keep-running]
#   --keep-running: the operator and the emulator stay up after the story, to explore (edit
#   target/demo/config.yaml, aim other commands at it with `. target/demo/env`) until
#   Ctrl-C, or a TERM or INT sent to this script alone.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep-running) KEEP=1 ;;
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: unknown argument $arg (see scripts/demo.sh --help)" >&2
      exit 2
      ;;
  esac
done
. scripts/venv.sh
ensure_venv
# cargo shows its own progress; the first build compiles the AWS SDK (minutes).
cargo build --locked

DEMO_DIR=target/demo
LISTEN="${DEMO_LISTEN:-127.0.0.1:8080}"
mkdir -p "$DEMO_DIR"
rm -f "$DEMO_DIR/emulator.out"

# The operator's address first, so that a port in use is named before anything starts.
if ! .venv/bin/python - "$LISTEN" <<'PY'
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((host.strip("[]") or "0.0.0.0", int(port)))
except (OSError, ValueError) as e:
    sys.exit(f"demo: cannot listen on {sys.argv[1]}: {e}")
PY
then
  echo "demo: set DEMO_LISTEN to a free address, e.g. DEMO_LISTEN=127.0.0.1:18090 scripts/demo.sh" >&2
  exit 1
fi

.venv/bin/python tests/moto/launcher.py --host 127.0.0.1 --port 0 >"$DEMO_DIR/emulator.out" 2>"$DEMO_DIR/emulator.log" &
EMULATOR=$!
OPERATOR=
SCALER=
# Stops the operator (SIGTERM: it finishes in-flight calls) and the emulator, and waits for
# both, however the script ends.
cleanup() {
  trap '' INT TERM
  rm -f "$DEMO_DIR/env"
  [ -z "$SCALER" ] || kill "$SCALER" 2>/dev/null || true
  [ -z "$OPERATOR" ] || kill -TERM "$OPERATOR" 2>/dev/null || true
  [ -z "$OPERATOR" ] || wait "$OPERATOR" 2>/dev/null || true
  kill "$EMULATOR" 2>/dev/null || true
  wait "$EMULATOR" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
SEED=(.venv/bin/python scripts/demo_seed.py --endpoint "$ENDPOINT")
OP=target/debug/asg-cmk-operator
"${SEED[@]}" seed | sed 's/^/demo: /'
# The bindings come from what the groups launch with; batch is left for you to onboard.
"$OP" discover --region us-west-2 --asg web --asg api --asg worker >"$DEMO_DIR/discovered.yaml"
echo "demo: discover --region us-west-2 --asg web --asg api --asg worker found (in $DEMO_DIR/discovered.yaml):"
grep -E '^  - asg:|^      - arn:' "$DEMO_DIR/discovered.yaml" | sed 's/  #.*//; s/^/demo:   /'
"${SEED[@]}" config --discovered "$DEMO_DIR/discovered.yaml" --config "$DEMO_DIR/config.yaml"
echo "demo: $DEMO_DIR/config.yaml is that, with the key account's role and the suffix CMK; before the operator acts, status says:"
"$OP" status --config "$DEMO_DIR/config.yaml" 2>/dev/null | sed 's/^/demo:   /' || true
# What another terminal needs to aim plan, status, discover and apply at this emulator.
cat >"$DEMO_DIR/env" <<ENV
export AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-west-2
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN
ENV
if [ "$KEEP" = 1 ]; then
  echo "demo: config at $DEMO_DIR/config.yaml; metrics at http://$LISTEN/metrics; Ctrl-C to stop"
  echo "demo: to aim commands at this emulator from another terminal: . $DEMO_DIR/env"
  echo "demo:   then, for example: target/debug/asg-cmk-operator status --config $DEMO_DIR/config.yaml"
else
  echo "demo: the operator runs until the groups launch, then the demo ends (--keep-running keeps it up)"
fi
echo
# In the background, and waited for: bash runs a trap only once the foreground command
# ends, so with the operator in the foreground a signal sent to this script alone (not
# to its process group, as Ctrl-C does) would never be acted on.
"$OP" run --config "$DEMO_DIR/config.yaml" --listen "$LISTEN" --resync-interval 30s &
OPERATOR=$!
# Once the operator is ready, the groups whose launches failed are scaled out again.
"${SEED[@]}" scale --when-ready "http://$LISTEN/readyz" --desired 2 web worker &
SCALER=$!
if [ "$KEEP" = 1 ]; then
  status=0
  wait "$OPERATOR" || status=$?
  OPERATOR=
  exit "$status"
fi
# The story's end: the launches after the fix succeeded; status says so; the demo ends.
status=0
wait "$SCALER" || status=$?
SCALER=
[ "$status" = 0 ] || { echo "demo: scaling the groups out after the fix failed" >&2; exit "$status"; }
kill -0 "$OPERATOR" 2>/dev/null || { echo "demo: the operator stopped" >&2; exit 1; }
echo "demo: after the fix, status says:"
"$OP" status --config "$DEMO_DIR/config.yaml" 2>/dev/null | sed 's/^/demo:   /' || status=$?
kill -TERM "$OPERATOR"
wait "$OPERATOR" || true
OPERATOR=
[ "$status" = 0 ] || { echo "demo: status says not every binding is ready (exit $status)" >&2; exit 1; }
echo "demo: done; scripts/demo.sh --keep-running keeps the operator up to explore (onboard batch, break the config)"
