#!/usr/bin/env bash
# Checks scripts/demo.sh as a user runs it and as a user (or a supervisor) stops it:
# 0. run as the README shows it, it ends on its own, exit 0, after the launches that
#    follow the fix succeed and status finds every binding ready;
# 1. with --keep-running, started in a session of its own, then sent SIGTERM to its own
#    pid only (not the group, as Ctrl-C does), it exits, and no process of its session
#    survives: not the emulator, not the operator;
# 2. while it runs, the groups whose launches failed launch once the operator is ready,
#    target/demo/env aims other commands at it (status finds every binding ready), and the
#    file goes with the demo;
# 3. with DEMO_LISTEN on a port that is taken, it fails before starting anything, naming
#    DEMO_LISTEN.
# Usage: scripts/demo-check.sh [demo script, default scripts/demo.sh]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv
DEMO="${1:-scripts/demo.sh}"
cargo build --locked

OUT=$(mktemp -d)
HOLDER=
DEMO_PID=
finish() {
  [ -z "$DEMO_PID" ] || kill -KILL -- "-$DEMO_PID" 2>/dev/null || true
  [ -z "$HOLDER" ] || kill "$HOLDER" 2>/dev/null || true
  rm -rf "$OUT"
}
trap finish EXIT
fail() {
  echo "demo-check: $*" >&2
  echo "--- demo output" >&2
  cat "$OUT/demo.log" >&2 || true
  exit 1
}
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
session() { ps -eo pid=,sid=,args= | awk -v s="$1" '$2 == s'; }

# 0. As the README shows it: it ends on its own, in a session of its own, and leaves no
#    process of that session behind.
: >"$OUT/demo.log"
DEMO_LISTEN="127.0.0.1:$(free_port)" setsid timeout 300 "$DEMO" >"$OUT/demo.log" 2>&1 </dev/null &
DEMO_PID=$!
wait "$DEMO_PID" || fail "the demo did not end on its own with exit 0 within 300 s"
for g in web worker; do
  grep -q "demo: after the fix, $g scaled to 2: launch Successful" "$OUT/demo.log" || fail "$g's launch after the fix did not succeed"
done
grep -q "demo:   3 of 3 bindings ready." "$OUT/demo.log" || fail "status after the fix did not find every binding ready"
for _ in $(seq 1 10); do
  [ -z "$(session "$DEMO_PID")" ] && break
  sleep 0.5
done
[ -z "$(session "$DEMO_PID")" ] || fail "processes left after the demo ended: $(session "$DEMO_PID")"
DEMO_PID=
echo "demo-check: the demo ended on its own, every binding ready:"
grep 'demo: after the fix\|bindings ready' "$OUT/demo.log" | sed 's/^/  /'

# 1. SIGTERM to the script's pid.
: >"$OUT/demo.log"
DEMO_LISTEN="127.0.0.1:$(free_port)" setsid "$DEMO" --keep-running >"$OUT/demo.log" 2>&1 </dev/null &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q 'first full pass finished; ready' "$OUT/demo.log" && break
  kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo exited before it was ready"
  sleep 0.5
done
grep -q 'first full pass finished; ready' "$OUT/demo.log" || fail "the demo was not ready within 300 s"
# The groups whose launches failed before the operator acted are scaled out once it is
# ready: their new launches succeed.
for _ in $(seq 1 60); do
  grep -q 'demo: after the fix, worker scaled to 2' "$OUT/demo.log" && break
  sleep 0.5
done
for g in web worker; do
  grep -q "demo: after the fix, $g scaled to 2: launch Successful" "$OUT/demo.log" || fail "$g's launch after the fix did not succeed"
done
echo "demo-check: the demo is ready; its session:"
session "$DEMO_PID" | sed 's/^/  /'
[ "$(session "$DEMO_PID" | wc -l)" -ge 3 ] || fail "expected the script, the emulator and the operator in its session"
# The env file aims other commands at the running demo: status sees every binding ready.
[ -f target/demo/env ] || fail "no target/demo/env"
if ! (set +u; . target/demo/env; target/debug/asg-cmk-operator status --config target/demo/config.yaml) >"$OUT/status.log" 2>&1; then
  cat "$OUT/status.log" >&2
  fail "status through target/demo/env did not find every binding ready"
fi
echo "demo-check: status through target/demo/env:"
sed 's/^/  /' "$OUT/status.log" | head -n 5
kill -TERM "$DEMO_PID"
for _ in $(seq 1 40); do
  kill -0 "$DEMO_PID" 2>/dev/null || break
  sleep 0.5
done
kill -0 "$DEMO_PID" 2>/dev/null && fail "the script still runs 20 s after SIGTERM"
wait "$DEMO_PID" || true
# Its children may take a moment to be reaped after the script has gone.
for _ in $(seq 1 10); do
  [ -z "$(session "$DEMO_PID")" ] && break
  sleep 0.5
done
left=$(session "$DEMO_PID")
[ -z "$left" ] || fail "processes left after SIGTERM to the script:
$left"
grep -q '"SIGTERM"' "$OUT/demo.log" || fail "the operator was not stopped by SIGTERM"
[ ! -e target/demo/env ] || fail "target/demo/env outlived the demo"
DEMO_PID=
echo "demo-check: SIGTERM to the script stopped it, the emulator and the operator"

# 3. A taken port names DEMO_LISTEN.
port=$(free_port)
.venv/bin/python -c 'import socket, sys, time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(120)' "$port" &
HOLDER=$!
for _ in $(seq 1 50); do
  .venv/bin/python -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
  sleep 0.1
done
if DEMO_LISTEN="127.0.0.1:$port" timeout 120 "$DEMO" >"$OUT/demo.log" 2>&1 </dev/null; then
  fail "the demo ran on a port that is taken"
fi
grep -q 'DEMO_LISTEN' "$OUT/demo.log" || fail "a taken port did not name DEMO_LISTEN"
echo "demo-check: a taken port names DEMO_LISTEN:"
grep 'demo:' "$OUT/demo.log" | sed 's/^/  /'
