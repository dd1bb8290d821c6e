#!/usr/bin/env python3
"""A living fleet: selectors sweeping groups that come and go, and change events.

Against the project's emulator (tests/moto/launcher.py), with the release binary:

- a selector sweep's reads at N groups (half of them tagged), against the lower bound
  that no design can avoid: ceil(tagged / 100) filtered describes, plus one read per
  distinct launch template version not yet cached (the fleet's groups share a few);
- the time from a group created with the tag to its switch, with events off: the sweep
  interval plus the pass (goal: the interval plus 1 s);
- peak RSS of `run` with N selected groups;
- change events: with 1,000 bindings and a 10-minute resync, over M events each, the time
  from the message sent to the repair (a whole-policy write; a group moved back), p50 and
  p99, and the operator's reads per event against the reads of the unit it touches.

Reads are the operator's own, from its /metrics (`aws_calls_total`), so that the bench's
own calls to the emulator do not count. Writes its table into docs/benchmarks.md (block
`living`), or prints it only with --dry-run.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "moto"))
import report  # noqa: E402
from e2e import BIN, OWN, REGION, Emulator, rss_kib  # noqa: E402
from seed import create_key, sessions  # noqa: E402

TAG = "asg-cmk-operator"
SLR = f"arn:aws:iam::{OWN}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK"
TEMPLATES = 4
READ_PREFIXES = ("Get", "List", "Describe")


def seed_selected(emu, n):
    """N groups on TEMPLATES launch templates whose data volume uses one key; every
    other group tagged. The key, and the groups' names."""
    own, _ = sessions(emu.url, access_key="bench")
    key = create_key(own, emu.url)
    ec2 = own.client("ec2", endpoint_url=emu.url)
    asc = own.client("autoscaling", endpoint_url=emu.url)
    data = {
        "ImageId": "ami-12c6146b",
        "InstanceType": "t3.micro",
        "BlockDeviceMappings": [{"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key}}],
    }
    templates = [
        ec2.create_launch_template(LaunchTemplateName=f"lt-{t}", LaunchTemplateData=data)["LaunchTemplate"]["LaunchTemplateId"]
        for t in range(TEMPLATES)
    ]
    names = [f"pipeline-{i:05d}" for i in range(n)]

    def create(i):
        tags = [{"Key": TAG, "Value": "managed", "PropagateAtLaunch": False}] if i % 2 == 0 else []
        asc.create_auto_scaling_group(
            AutoScalingGroupName=names[i],
            LaunchTemplate={"LaunchTemplateId": templates[i % TEMPLATES], "Version": "1"},
            AvailabilityZones=[f"{REGION}a"],
            MinSize=0,
            MaxSize=1,
            Tags=tags,
        )

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    return key, names, asc, templates


def selector_config(path, key, sync="1m"):
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"version: 1\ndefaults:\n  region: {REGION}\n  selectorSyncInterval: {sync}\nselectors:\n"
            f"  - name: pipelines\n    account: \"{OWN}\"\n    matchTags:\n      {TAG}: managed\n"
            f"    serviceLinkedRoleSuffix: CMK\n    allowedKeys: [{key}]\n"
        )


class Daemon:
    """`run` on a free port, its JSON logs drained; its /metrics read on demand."""

    def __init__(self, emu, cfg, extra=()):
        # The sweeps are logged at debug level: the bench times them from those lines.
        env = dict(emu.env(), RUST_LOG="info,asg_cmk_operator::shell::daemon::sweeps=debug")
        args = [BIN, "--log-format", "json", "run", "--config", cfg, "--listen", "127.0.0.1:0", "--resync-interval", "10m", *extra]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addr = None
        self.lines = []
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self.ready.wait(600):
            raise RuntimeError("daemon not ready within 10 minutes")

    def _drain(self):
        for line in self.proc.stderr:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.lines.append(ev)
            if ev.get("message") == "listening":
                self.addr = ev["addr"]
            if ev.get("message") == "first full pass finished; ready":
                self.ready.set()

    def reads(self):
        """The operator's reads so far, by operation."""
        with urllib.request.urlopen(f"http://{self.addr}/metrics") as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if not line.startswith("asg_cmk_operator_aws_calls_total{"):
                continue
            labels = dict(p.split("=", 1) for p in line[line.index("{") + 1 : line.index("}")].split(","))
            op = labels["operation"].strip('"')
            if op.startswith(READ_PREFIXES):
                out[op] = out.get(op, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


def diff(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


def wait_for(what, check, limit=60):
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > limit:
            raise RuntimeError(f"{what}: not within {limit} s")
        time.sleep(0.01)
    return time.perf_counter() - t0


def sweep_measures(n, tmp):
    """A sweep's reads, the time to onboard a new tagged group, and peak RSS, at N."""
    emu = Emulator()
    try:
        key, names, asc, templates = seed_selected(emu, n)
        cfg = os.path.join(tmp, f"selected-{n}.yaml")
        sync = 5
        selector_config(cfg, key, f"{sync}s")
        t0 = time.perf_counter()
        d = Daemon(emu, cfg)
        start = time.perf_counter() - t0
        try:
            # One sweep of the converged fleet, alone: between two sweeps nothing else runs.
            # Counted from the end of one sweep to the end of the next, so that the
            # window holds exactly one sweep's reads.
            finished = lambda: len([e for e in d.lines if "selector sweep finished" in e.get("message", "")])
            done = finished()
            wait_for("a sweep to end", lambda: finished() > done, 3 * sync)
            before = d.reads()
            wait_for("the next sweep to end", lambda: finished() > done + 1, 3 * sync)
            sweep = diff(d.reads(), before)
            # A group created with the tag, then its switch.
            name = f"new-{n}"
            asc.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateId": templates[0], "Version": "1"},
                AvailabilityZones=[f"{REGION}a"],
                MinSize=0,
                MaxSize=1,
                Tags=[{"Key": TAG, "Value": "managed", "PropagateAtLaunch": False}],
            )
            role = lambda: asc.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0].get("ServiceLinkedRoleARN")
            onboard = wait_for("the new group switched", lambda: role() == SLR, 4 * sync)
            peak, _ = rss_kib(d.proc.pid)
        finally:
            d.close()
    finally:
        emu.close()
    tagged = math.ceil(n / 2)
    # The groups launch numbered template versions, read once and cached by the first
    # sweep: a later sweep owes only its filtered describes.
    bound = math.ceil(tagged / 100)
    return {"sweep": sweep, "bound": bound, "tagged": tagged, "onboard": onboard, "sync": sync, "peak": peak, "start": start}


def events_measures(n, count, tmp):
    """Event to repair at N bindings, for a whole-policy write and a group moved back."""
    emu = Emulator()
    try:
        own, _ = sessions(emu.url, access_key="bench")
        keys = [create_key(own, emu.url) for _ in range(10)]
        names = [f"asg-{i:05d}" for i in range(n)]
        from seed import create_asgs

        asc = create_asgs(own, emu.url, names, launch_configuration="bench")
        sqs = own.client("sqs", endpoint_url=emu.url)
        url = sqs.create_queue(QueueName="changes")["QueueUrl"]
        kms = own.client("kms", endpoint_url=emu.url)
        cfg = os.path.join(tmp, f"events-{n}.yaml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(f"version: 1\nevents:\n  queueUrl: {url}\n  region: {REGION}\nbindings:\n")
            for i, name in enumerate(names):
                f.write(f'  - {{asg: {name}, account: "{OWN}", key: {keys[i % 10]}, serviceLinkedRoleSuffix: CMK}}\n')
        d = Daemon(emu, cfg)
        default = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                              "Principal": {"AWS": f"arn:aws:iam::{OWN}:root"}, "Action": "kms:*", "Resource": "*"}]})

        def event(service, name, params):
            return json.dumps({"version": "0", "id": f"{name}-{time.time()}", "detail-type": "AWS API Call via CloudTrail",
                               "source": f"aws.{service}", "account": OWN, "region": REGION, "time": "2026-12-07T10:00:00Z",
                               "detail": {"eventSource": f"{service}.amazonaws.com", "eventName": name, "awsRegion": REGION,
                                          "requestParameters": params, "recipientAccountId": OWN}})

        policy_times, group_times, reads = [], [], []
        try:
            time.sleep(1)
            for i in range(count):
                key = keys[i % 10]
                kms.put_key_policy(KeyId=key, PolicyName="default", Policy=default)
                before = d.reads()
                t0 = time.perf_counter()
                sqs.send_message(QueueUrl=url, MessageBody=event("kms", "PutKeyPolicy", {"keyId": key}))
                policy = lambda: SLR in kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
                wait_for("policy repaired", policy, 30)
                policy_times.append(time.perf_counter() - t0)
                time.sleep(0.3)
                reads.append(sum(diff(d.reads(), before).values()))
            for i in range(count):
                name = names[i * 7 % n]
                asc.update_auto_scaling_group(AutoScalingGroupName=name, ServiceLinkedRoleARN=SLR.replace("_CMK", ""))
                t0 = time.perf_counter()
                sqs.send_message(QueueUrl=url, MessageBody=event("autoscaling", "UpdateAutoScalingGroup", {"autoScalingGroupName": name}))
                back = lambda: asc.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0].get("ServiceLinkedRoleARN") == SLR
                wait_for("group repaired", back, 30)
                group_times.append(time.perf_counter() - t0)
        finally:
            d.close()
    finally:
        emu.close()
    # A unit here is one key's 100 groups: DescribeKey, GetKeyPolicy, GetRole and one
    # describe of its 100 groups (the least a pass over it reads).
    unit_reads = 4
    return {"policy": policy_times, "group": group_times, "reads": reads, "unit_reads": unit_reads}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000", help="comma-separated N for the selector measures (10000 is slow)")
    p.add_argument("--events", type=int, default=20, help="events of each kind")
    p.add_argument("--event-bindings", type=int, default=1000)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            print(f"bench: selectors N={n}", file=sys.stderr)
            m = sweep_measures(n, tmp)
            reads = sum(m["sweep"].values())
            detail = ", ".join(f"{k} {int(v)}" for k, v in sorted(m["sweep"].items()))
            rows.append((f"selector sweep of {n} groups ({m['tagged']} tagged), reads", f"{int(reads)} ({detail})", f"lower bound {m['bound']}", f"{reads / max(1, m['bound']):.2f}"))
            rows.append((f"N={n}: a new tagged group to switched, events off", f"{m['onboard']:.2f} s", f"target {m['sync']} s interval + 1 s", f"{m['onboard'] / (m['sync'] + 1):.2f}"))
            target = 20 if n <= 1000 else 64
            rows.append((f"N={n}: peak RSS of run with the selected groups", f"{m['peak'] / 1024:.1f} MiB", f"target {target} MiB", f"{m['peak'] / 1024 / target:.2f}"))
        n = args.event_bindings
        print(f"bench: events N={n}", file=sys.stderr)
        e = events_measures(n, args.events, tmp)
        for what, xs in (("a whole-policy write", e["policy"]), ("a group moved back", e["group"])):
            rows.append((f"events, N={n}: {what}, event sent to repaired, p50 / p99 of {len(xs)}", f"{statistics.median(xs):.2f} / {pct(xs, 99):.2f} s", "target p50 1 s", f"{statistics.median(xs):.2f}"))
        per = statistics.median(e["reads"])
        rows.append((f"events, N={n}: the operator's reads per key event (median)", f"{per:.0f}", f"the unit's own reads {e['unit_reads']}", f"{per / e['unit_reads']:.2f}"))
    w = [max(len(r[i]) for r in rows + [("measure", "operator", "reference", "ratio")]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"
    table = "\n".join([line(("measure", "operator", "reference", "ratio")), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])
    print(table)
    if not args.dry_run:
        report.write("living", table)


if __name__ == "__main__":
    main()
