#!/usr/bin/env bash
# Benchmarks. With no argument: the end-to-end table (the operator against the local
# emulator, next to the article's aws CLI procedure and the lower bound on calls).
# Each writes its table into docs/benchmarks.md (--dry-run: only prints it).
#   scripts/bench.sh                 N = 24 and 1,000; daemon at 1,000
#   scripts/bench.sh --with-10k      also N = 10,000 and the daemon at 10,000 (slow)
#   scripts/bench.sh core            the pure-core criterion benchmarks (cargo bench)
#   scripts/bench.sh quota [--cases N:RATE,...]
#                                    a cold apply behind an undisclosed Auto Scaling quota
#   scripts/bench.sh living [--sizes 1000,10000] [--events 20]
#                                    selectors (a sweep's reads, a new tagged group, RSS)
#                                    and change events (event to repaired, reads per event)
set -euo pipefail
cd "$(dirname "$0")/.."
# The command, as the tables in docs/benchmarks.md say how they were measured.
export BENCH_COMMAND="scripts/bench.sh${*:+ $*}"
if [ "${1:-}" = core ]; then
  shift
  # Criterion's options follow, with or without a leading "--".
  [ "${1:-}" = -- ] && shift
  exec cargo bench --locked --bench core -- "$@"
fi
. scripts/venv.sh
ensure_venv
cargo build --locked --release --quiet
export PATH="$PWD/.venv/bin:$PATH"
if [ "${1:-}" = quota ]; then
  shift
  exec python bench/quota.py "$@"
fi
if [ "${1:-}" = living ]; then
  shift
  exec python bench/living.py "$@"
fi
if [ "${1:-}" = --with-10k ]; then
  shift
  exec python bench/e2e.py --sizes 24,1000,10000 --daemon-sizes 1000,10000 --table e2e-10k "$@"
fi
exec python bench/e2e.py "$@"
