#!/usr/bin/env python3
"""How close to an undisclosed Auto Scaling quota a cold apply runs, and what it wastes.

For each case N:RATE it seeds N groups over three keys (one in a second account, as
e2e.py's fleets), puts the fault proxy (tests/moto/faultproxy.py) between the operator
and the emulator with a token-bucket quota of RATE UpdateAutoScalingGroup calls a second
(burst RATE) that the operator is not told about, runs one `apply`, and reports:

- the floor, N / RATE: no client can set N groups' roles faster;
- the UpdateAutoScalingGroup phase: from the first such call the emulator received to the
  last, and its ratio to the floor (target at most 1.3);
- the share of UpdateAutoScalingGroup requests the quota throttled (target at most 10%);
- the whole apply's wall time (reads and the KMS writes included), for context.

Run it through `scripts/bench.sh quota`. The table goes into docs/benchmarks.md
(bench/report.py), unless --dry-run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import e2e
import report

PROXY = os.path.join(e2e.ROOT, "tests", "moto", "faultproxy.py")
ACTION = "UpdateAutoScalingGroup"


class Proxy:
    def __init__(self, upstream, rate):
        self.proc = subprocess.Popen(
            [sys.executable, PROXY, "--upstream", upstream, "--quota", f"{ACTION}={rate}", "--exit-with-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("proxy did not start")
        self.url = line.split()[1]

    def stats(self):
        with urllib.request.urlopen(self.url + "/_proxy/stats") as r:
            return json.loads(r.read())

    def close(self):
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def case(n, rate, work):
    emu = e2e.Emulator()
    proxy = None
    try:
        print(f"quota: fleet N={n}, {ACTION} quota {rate}/s", file=sys.stderr, flush=True)
        fleet = e2e.Fleet(emu, n, 3)
        cfg = os.path.join(work, f"quota-{n}-{rate}.yaml")
        fleet.config(cfg)
        proxy = Proxy(emu.url, rate)
        env = emu.env()
        env["AWS_ENDPOINT_URL"] = proxy.url
        emu.reset()
        started = time.monotonic()
        out = subprocess.run([e2e.BIN, "apply", "--config", cfg], env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if out.returncode != 0:
            raise RuntimeError(f"apply failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        updates = sorted(c["t"] for c in emu.calls() if c["action"] == ACTION)
        if len(updates) != n:
            raise RuntimeError(f"{len(updates)} {ACTION} calls reached the emulator, want {n}")
        seen = proxy.stats()["by_action"][ACTION]
        floor = n / rate
        phase = updates[-1] - updates[0]
        return {
            "n": n,
            "rate": rate,
            "floor": floor,
            "phase": phase,
            "ratio": phase / floor,
            "requests": seen["requests"],
            "throttled": seen["faults"],
            "share": seen["faults"] / seen["requests"],
            "wall": wall,
        }
    finally:
        if proxy:
            proxy.close()
        emu.close()


def table(results):
    head = (
        "| groups | quota | floor N/rate | UpdateAutoScalingGroup phase | ratio (target ≤ 1.3) "
        "| throttled (target ≤ 10%) | whole apply |"
    )
    rows = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r['n']} | {r['rate']}/s | {r['floor']:.2f} s | {r['phase']:.2f} s | {r['ratio']:.2f} "
            f"| {r['throttled']} of {r['requests']} ({100 * r['share']:.1f}%) | {r['wall']:.2f} s |"
        )
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="300:15,300:150", help="comma-separated N:RATE")
    p.add_argument("--dry-run", action="store_true", help="print the table only; docs/benchmarks.md is left as it is")
    args = p.parse_args()
    cases = [tuple(int(x) for x in c.split(":")) for c in args.cases.split(",") if c]
    with tempfile.TemporaryDirectory() as work:
        results = [case(n, rate, work) for n, rate in cases]
    print(table(results))
    if not args.dry_run:
        report.write("quota", table(results))


if __name__ == "__main__":
    main()
