#!/usr/bin/env python3
"""End-to-end benchmark of asg-cmk-operator against the local AWS emulator.

For each fleet size N (ASGs) over K keys, a third of them owned by a second account, it
measures, each on a freshly seeded emulator:

- cold convergence: wall time of one `apply`, and its reads and writes counted at the HTTP
  level by the emulator, checked against the operator's own call counts;
- steady state: the calls of a second `apply`, against the lower bound (Fleet.lower_bound)
  1 GetCallerIdentity + 1 AssumeRole per other account + 1 GetRole per role
  + 1 DescribeKey and 1 GetKeyPolicy per key + 1 ListGrants per cross-account key
  + ceil(ASGs/100) DescribeAutoScalingGroups per account and region, and, since an apply
  is a start (a full pass), 1 DescribeScalingActivities per account and region (one sweep
  of every group's activities) and the reads of what the
  groups launch with (launch configuration, AMI, snapshot, two EBS defaults);
- the highest PutKeyPolicy and CreateGrant rates in any one-second window;
- the seed procedure: the article's aws CLI commands, once per key and once per ASG, on an
  identical fresh fleet (its time against the operator's cold apply);
- the daemon: time from start to ready on a fleet where nothing is done yet (a cold first
  pass, every write made); time from appending a binding to a config of N bindings to
  that ASG being converged (p50 over several edits), the same while another key waits 40 s
  for IAM to propagate its new role, and peak RSS of `run`; then a restart on the
  converged fleet: its time from start to ready, and the calls of that full pass, against
  the same lower bound.

The table goes into docs/benchmarks.md (bench/report.py), with the machine, the date and
the command, unless --dry-run.

Times vary on shared machines; compare the ratios. Run it through scripts/bench.sh.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "moto"))
import seed  # noqa: E402

# ASG_CMK_OPERATOR_BIN runs another build, as in the tests.
BIN = os.environ.get("ASG_CMK_OPERATOR_BIN") or os.path.join(ROOT, "target", "release", "asg-cmk-operator")
LAUNCHER = os.path.join(ROOT, "tests", "moto", "launcher.py")
OWN, OTHER, ROLE, REGION = seed.OWN, seed.OTHER, seed.OTHER_ROLE, seed.REGION
SUFFIX = "CMK"
SLR = f"arn:aws:iam::{OWN}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_{SUFFIX}"
READ_PREFIXES = ("Get", "List", "Describe")
USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
GRANT_OPS = "Encrypt Decrypt ReEncryptFrom ReEncryptTo GenerateDataKey GenerateDataKeyWithoutPlaintext DescribeKey CreateGrant"


class Emulator:
    """The project's moto launcher on a free loopback port."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, LAUNCHER, "--port", "0", "--exit-with-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("emulator did not start")
        self.url = line.split()[1]

    def _req(self, method, path):
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"{}")

    def calls(self):
        return self._req("GET", "/_launcher/calls")["calls"]

    def reset(self):
        self._req("POST", "/_launcher/calls/reset")

    def strict(self, changes):
        """Changes the strict emulator's settings (tests/moto/strict.py)."""
        req = urllib.request.Request(
            self.url + "/_launcher/strict", method="POST", data=json.dumps(changes).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"{}")

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            RUST_LOG="warn",
        )
        return env

    def sessions(self):
        return seed.sessions(self.url, access_key="bench")

    def close(self):
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Fleet:
    """N ASGs over K keys (every third key in the other account) plus `extra` spare ASGs."""

    def __init__(self, emu, n, k, extra=0):
        self.emu, self.n, self.k = emu, n, k
        own, other = emu.sessions()
        self.keys = [seed.create_key(other if i % 3 == 0 else own, emu.url) for i in range(k)]
        self.names = [f"asg-{i:05d}" for i in range(n + extra)]
        self.asc = seed.create_asgs(own, emu.url, self.names, launch_configuration="bench")

    def key_of(self, i):
        return self.keys[i % self.k]

    def binding(self, i):
        return f'  - asg: {self.names[i]}\n    account: "{OWN}"\n    key: {self.key_of(i)}\n'

    def config(self, path, count=None):
        count = self.n if count is None else count
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                f'version: 1\ndefaults:\n  region: {REGION}\n  serviceLinkedRoleSuffix: {SUFFIX}\n'
                f'accounts:\n  - id: "{OTHER}"\n    roleArn: {ROLE}\nbindings:\n'
            )
            for i in range(count):
                f.write(self.binding(i))

    def lower_bound(self):
        """The reads an apply cannot do without, as a start (a full pass) of run.

        Every pass: 1 GetCallerIdentity + 1 AssumeRole + 1 GetRole + per key a DescribeKey
        and a GetKeyPolicy + a ListGrants per cross-account key + ceil(N/100) group
        describes. At start and on resync: one sweep of the account and region's scaling
        activities (one page: the fleet has launched nothing), and what the groups launch
        with: their one launch configuration, its AMI and that AMI's snapshot, and the two
        EBS defaults of the account and region.
        """
        cross = sum(1 for i in range(self.k) if i % 3 == 0)
        every_pass = 1 + 1 + 1 + 2 * self.k + cross + math.ceil(self.n / 100)
        at_start = 1 + 1 + 1 + 1 + 2
        return every_pass + at_start


def split(calls):
    reads = [c for c in calls if c["service"] == "sts" or c["action"].startswith(READ_PREFIXES)]
    writes = [c for c in calls if c not in reads]
    return reads, writes


def max_per_second(calls, action):
    """The most `action` calls in any one-second window of one account: KMS quotas are per
    account and Region (the fleet is in one Region)."""
    best = 0
    for account in {c["account"] for c in calls}:
        ts = sorted(c["t"] for c in calls if c["action"] == action and c["account"] == account)
        j = 0
        for i, t in enumerate(ts):
            while ts[j] <= t - 1.0:
                j += 1
            best = max(best, i - j + 1)
    return best


def counts(calls):
    out = {}
    for c in calls:
        out[c["action"]] = out.get(c["action"], 0) + 1
    return out


def operator_apply(emu, cfg, stats):
    t0 = time.perf_counter()
    r = subprocess.run([BIN, "apply", "--config", cfg, "--stats-json", stats], env=emu.env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"apply failed:\n{r.stdout}\n{r.stderr[-3000:]}")
    with open(stats, encoding="utf-8") as f:
        own = {}
        for c in json.load(f)["calls"]:
            own[c["operation"]] = own.get(c["operation"], 0) + c["count"]
    return wall, own


def cli(env, *args):
    subprocess.run(["aws", *args], env=env, check=True, capture_output=True, text=True)


def cli_out(env, *args):
    return subprocess.run(["aws", *args], env=env, check=True, capture_output=True, text=True).stdout


def seed_procedure(emu, fleet, tmp):
    """What a person following the article does, with the aws CLI: one role, then each key's
    policy edited by hand (and a grant for the other account's keys), then each ASG."""
    own_env = emu.env()
    t0 = time.perf_counter()
    cli(own_env, "iam", "create-service-linked-role", "--aws-service-name", "autoscaling.amazonaws.com", "--custom-suffix", SUFFIX)
    creds = json.loads(cli_out(own_env, "sts", "assume-role", "--role-arn", ROLE, "--role-session-name", "person"))["Credentials"]
    other_env = dict(own_env, AWS_ACCESS_KEY_ID=creds["AccessKeyId"], AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"], AWS_SESSION_TOKEN=creds["SessionToken"])
    for i, key in enumerate(fleet.keys):
        cross = i % 3 == 0
        env = other_env if cross else own_env
        policy = json.loads(cli_out(env, "kms", "get-key-policy", "--key-id", key, "--policy-name", "default", "--output", "text"))
        principal = f"arn:aws:iam::{OWN}:root" if cross else SLR
        grant = {"Sid": "Allow attachment of persistent resources", "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "kms:CreateGrant", "Resource": "*"}
        if not cross:
            grant["Condition"] = {"Bool": {"kms:GrantIsForAWSResource": True}}
        policy["Statement"] += [
            {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": principal}, "Action": USE_ACTIONS, "Resource": "*"},
            grant,
        ]
        path = os.path.join(tmp, "policy.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(policy, f)
        cli(env, "kms", "put-key-policy", "--key-id", key, "--policy-name", "default", "--policy", f"file://{path}")
        if cross:
            cli(own_env, "kms", "create-grant", "--key-id", key, "--grantee-principal", SLR, "--operations", *GRANT_OPS.split())
    for name in fleet.names[: fleet.n]:
        cli(own_env, "autoscaling", "update-auto-scaling-group", "--auto-scaling-group-name", name, "--service-linked-role-arn", SLR)
    return time.perf_counter() - t0


def asg_role(fleet, name):
    g = fleet.asc.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return g[0].get("ServiceLinkedRoleARN") if g else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def rss_split(pid):
    """The resident set now, split into heap and stacks (anonymous) and the binary's and
    libraries' pages (file): which of the two a change in peak RSS comes from."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
        kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if line.split(":", 1)[1].strip().endswith("kB"))}
    return f"RSS now {kib['Rss'] / 1024:.1f} MiB: anonymous {kib['Anonymous'] / 1024:.1f}, file-backed {(kib['Rss'] - kib['Anonymous']) / 1024:.1f}"


# How long the waiting key's new role stays invisible to KMS and Auto Scaling.
PROPAGATION_SECONDS = 40.0


def daemon(emu, n, k, edits, tmp):
    # Extra groups: `edits` appended as they are, `edits` more while a key waits, and the
    # waiting one.
    fleet = Fleet(emu, n, k, extra=2 * edits + 1)
    cfg = os.path.join(tmp, f"daemon-{n}.yaml")
    fleet.config(cfg)
    env = dict(emu.env(), RUST_LOG="info")
    proc = subprocess.Popen(
        [BIN, "--log-format", "json", "run", "--config", cfg, "--listen", "127.0.0.1:0", "--resync-interval", "10m"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addr = None
        t_start = time.perf_counter()
        for line in proc.stderr:
            ev = json.loads(line)
            if ev.get("message") == "listening":
                addr = ev["addr"]
            if ev.get("message") == "first full pass finished; ready":
                break
        else:
            raise RuntimeError("daemon exited before it was ready")
        startup = time.perf_counter() - t_start
        # Drain further logs in the background so the pipe never fills.
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        def timed_edit(i):
            time.sleep(0.3)
            t0 = time.perf_counter()
            with open(cfg, "a", encoding="utf-8") as f:
                f.write(fleet.binding(i))
            while asg_role(fleet, fleet.names[i]) != SLR:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"edit of {fleet.names[i]} did not converge")
                time.sleep(0.005)
            return time.perf_counter() - t0

        latencies = [timed_edit(n + e) for e in range(edits)]
        # A group on a role the daemon must create, which KMS will not see for 40 s, on a
        # key none of the timed edits uses: its unit waits while the edits go on.
        emu.strict({"propagation_seconds": PROPAGATION_SECONDS})
        waiting = fleet.names[n + 2 * edits]
        with open(cfg, "a", encoding="utf-8") as f:
            f.write(f'  - asg: {waiting}\n    account: "{OWN}"\n    key: {fleet.keys[k // 2]}\n    serviceLinkedRoleSuffix: Waiting\n')
        time.sleep(2)
        waiting_latencies = [timed_edit(n + edits + e) for e in range(edits)]
        still_waiting = asg_role(fleet, waiting) != SLR.replace(SUFFIX, "Waiting")
        with urllib.request.urlopen(f"http://{addr}/readyz") as r:
            assert r.status == 200
        peak, now = rss_kib(proc.pid)
        print(f"bench: daemon N={n}: {rss_split(proc.pid)}", file=sys.stderr, flush=True)
        proc.terminate()
        proc.wait(timeout=20)
        reads, writes, restart = full_resync(emu, fleet, cfg)
        return {
            "resync_reads": len(reads),
            "resync_writes": len(writes),
            "resync_bound": fleet.lower_bound(),
            "startup": startup,
            "restart": restart,
            "p50": statistics.median(latencies),
            "latencies": latencies,
            "waiting_p50": statistics.median(waiting_latencies),
            "still_waiting": still_waiting,
            "peak_kib": peak,
            "rss_kib": now,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def full_resync(emu, fleet, cfg):
    """The calls of a full pass over the converged fleet of `fleet.n` bindings, and its
    time: the first pass of a fresh `run`, from start to ready (so with the connect's
    GetCallerIdentity and AssumeRole, which a periodic resync of a running daemon makes no
    more)."""
    fleet.config(cfg)
    emu.reset()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [BIN, "--log-format", "json", "run", "--config", cfg, "--listen", "127.0.0.1:0", "--resync-interval", "10m"],
        env=dict(emu.env(), RUST_LOG="info"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if json.loads(line).get("message") == "first full pass finished; ready":
                break
        else:
            raise RuntimeError("daemon exited before it was ready")
        ready = time.perf_counter() - t0
        return (*split(emu.calls()), ready)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def run_size(n, k, with_seed, tmp):
    rows = []
    emu = Emulator()
    try:
        fleet = Fleet(emu, n, k)
        cfg = os.path.join(tmp, f"fleet-{n}.yaml")
        fleet.config(cfg)
        emu.reset()
        cold, own_cold = operator_apply(emu, cfg, os.path.join(tmp, "stats.json"))
        calls = emu.calls()
        http = counts(calls)
        reads, writes = split(calls)
        match = "match" if http == own_cold else f"MISMATCH http={http} operator={own_cold}"
        put_rate, grant_rate = max_per_second(calls, "PutKeyPolicy"), max_per_second(calls, "CreateGrant")
        emu.reset()
        _, own_steady = operator_apply(emu, cfg, os.path.join(tmp, "stats.json"))
        steady = emu.calls()
        s_reads, s_writes = split(steady)
        bound = fleet.lower_bound()
        tag = f"N={n} K={k}"
        rows.append((f"{tag}: cold apply, wall time", f"{cold:.2f} s", "", ""))
        rows.append((f"{tag}: cold apply, calls (HTTP)", f"{len(reads)} reads + {len(writes)} writes", f"operator's own count: {match}", ""))
        rows.append((f"{tag}: steady-state apply, calls", f"{len(s_reads)} reads + {len(s_writes)} writes", f"lower bound {bound}", f"{len(steady) / bound:.2f}"))
        rows.append((f"{tag}: peak PutKeyPolicy per second, one account", str(put_rate), "KMS quota 15", f"{put_rate / 15:.2f}"))
        rows.append((f"{tag}: peak CreateGrant per second, one account", str(grant_rate), "KMS quota 50", f"{grant_rate / 50:.2f}"))
    finally:
        emu.close()
    if with_seed:
        emu = Emulator()
        try:
            fleet = Fleet(emu, n, k)
            seed = seed_procedure(emu, fleet, tmp)
            # The seed procedure must converge the same fleet: the operator then has nothing to do.
            cfg = os.path.join(tmp, f"seed-{n}.yaml")
            fleet.config(cfg)
            r = subprocess.run([BIN, "plan", "--config", cfg], env=emu.env(), capture_output=True, text=True)
            verdict = "converged" if r.returncode == 0 else f"NOT converged (plan exit {r.returncode})"
            rows.append((f"N={n} K={k}: cold convergence, seed CLI procedure vs operator", f"{cold:.2f} s", f"{seed:.2f} s ({verdict})", f"{seed / cold:.1f}x faster"))
        finally:
            emu.close()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="24,1000", help="comma-separated N (ASGs); K = N/4 for 24, else 100")
    p.add_argument("--daemon-sizes", default="1000", help="comma-separated N for the daemon measures")
    p.add_argument("--edits", type=int, default=7, help="appended bindings timed per daemon size")
    p.add_argument("--seed-sizes", default="24", help="sizes on which to time the aws CLI procedure too")
    p.add_argument("--table", default="e2e", help="the block of docs/benchmarks.md the table goes into")
    p.add_argument("--dry-run", action="store_true", help="print the table only; docs/benchmarks.md is left as it is")
    args = p.parse_args()
    if not shutil.which("aws"):
        sys.exit("bench: the aws CLI is not on PATH (scripts/bench.sh puts .venv/bin first)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    seed_sizes = {int(s) for s in args.seed_sizes.split(",") if s}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            k = max(1, n // 4) if n <= 24 else 100
            print(f"bench: fleet N={n} K={k}", file=sys.stderr)
            rows += run_size(n, k, n in seed_sizes, tmp)
        for n in [int(s) for s in args.daemon_sizes.split(",") if s]:
            print(f"bench: daemon N={n}", file=sys.stderr)
            emu = Emulator()
            try:
                d = daemon(emu, n, 100, args.edits, tmp)
            finally:
                emu.close()
            lat = ", ".join(f"{x * 1000:.0f}" for x in sorted(d["latencies"]))
            rows.append((f"daemon N={n}: config edit to ASG converged, p50 of {args.edits}", f"{d['p50'] * 1000:.0f} ms", "target 1000 ms", f"{d['p50']:.2f}"))
            rows.append((f"daemon N={n}: edit latencies (ms)", lat, "", ""))
            waited = "the key still waiting" if d["still_waiting"] else "the key no longer waiting"
            rows.append((
                f"daemon N={n}: the same while a key waits {PROPAGATION_SECONDS:.0f} s on IAM propagation, p50 of {args.edits}",
                f"{d['waiting_p50'] * 1000:.0f} ms",
                f"target 1000 ms ({waited})",
                f"{d['waiting_p50']:.2f}",
            ))
            rows.append((
                f"daemon N={n}: full resync of the converged fleet (a restart's first pass), calls",
                f"{d['resync_reads']} reads + {d['resync_writes']} writes",
                f"lower bound {d['resync_bound']}",
                f"{(d['resync_reads'] + d['resync_writes']) / d['resync_bound']:.2f}",
            ))
            target = 20 if n <= 1000 else 64
            rows.append((f"daemon N={n}: peak RSS of run", f"{d['peak_kib'] / 1024:.1f} MiB", f"target {target} MiB", f"{d['peak_kib'] / 1024 / target:.2f}"))
            rows.append((f"daemon N={n}: start to ready, cold first pass (nothing done yet: every write made)", f"{d['startup']:.2f} s", "", ""))
            rows.append((f"daemon N={n}: start to ready, restart on the converged fleet (reads only)", f"{d['restart']:.2f} s", "", ""))
    w = [max(len(r[i]) for r in rows + [("measure", "operator", "reference", "ratio")]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"
    table = "\n".join([line(("measure", "operator", "reference", "ratio")), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])
    print(table)
    if not args.dry_run:
        report.write(args.table, table)


if __name__ == "__main__":
    main()
