#!/usr/bin/env python3
"""Seeds the local emulator with a sample fleet whose ASGs cannot launch yet (`seed`);
completes the config `discover` wrote for it (`config`); scales groups out (`scale`).

Fleet: account 123456789012 (the operator's own) with one customer managed key, and
account 444455556666 with another, reached through the role key-admin. Four ASGs in the
own account, each on a launch template of its own whose data volume is encrypted: web,
api and batch with the own key (case 1), worker with the other account's (case 2). None
has a service-linked role set, so each is on the default one, which may use neither key:
web and worker are scaled to one instance, and those launches fail as AWS fails them
("Client.InternalError: Client error on launch").
"""

import argparse
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "moto"))
from seed import OTHER, OTHER_ROLE as ROLE, REGION, create_key, sessions  # noqa: E402

GROUPS = {"web": "own", "api": "own", "worker": "other", "batch": "own"}
FAILING = ["web", "worker"]


def encrypted_template(ec2, name, key):
    """A launch template whose data volume /dev/sdb is encrypted with ``key``; its id."""
    data = {
        "ImageId": "ami-12c6146b",
        "InstanceType": "t3.micro",
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key}}
        ],
    }
    return ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)["LaunchTemplate"][
        "LaunchTemplateId"
    ]


def seed(args):
    own, other = sessions(args.endpoint, access_key="demo")
    keys = {
        "own": create_key(own, args.endpoint, "demo: EBS key, own account"),
        "other": create_key(other, args.endpoint, "demo: EBS key, key account"),
    }
    ec2 = own.client("ec2", endpoint_url=args.endpoint)
    asc = own.client("autoscaling", endpoint_url=args.endpoint)
    for name, key in GROUPS.items():
        template = encrypted_template(ec2, name, keys[key])
        asc.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template},
            AvailabilityZones=[f"{REGION}a"],
            MinSize=0,
            MaxSize=2,
        )
    print(f"seeded: own key {keys['own']}")
    print(f"seeded: other key {keys['other']}")
    print("seeded: ASGs web, api, batch (own key) and worker (other key), on launch templates with an encrypted")
    print("seeded:   data volume, all on the default service-linked role AWSServiceRoleForAutoScaling")
    scale(asc, FAILING, 1)


def scale(asc, groups, desired, say=""):
    """Sets each group's desired capacity, and prints the launch that made, after ``say``."""
    for name in groups:
        asc.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=desired)
        activity = asc.describe_scaling_activities(AutoScalingGroupName=name)["Activities"][0]
        message = activity.get("StatusMessage")
        line = f"{say}{name} scaled to {desired}: launch {activity['StatusCode']}" + (f": {message}" if message else "")
        print(line, flush=True)


def complete(args):
    """The config discover wrote, with its commented accounts entry filled in (the demo's
    key account and role) and the demo's service-linked role suffix."""
    text = open(args.discovered, encoding="utf-8").read()
    filled = {
        "# accounts:\n": "accounts:\n",
        f'#   - id: "{OTHER}"\n': f'  - id: "{OTHER}"\n',
        f"#     roleArn: arn:aws:iam::{OTHER}:role/NAME\n": f"    roleArn: {ROLE}\n",
        f"  region: {REGION}\n": f"  region: {REGION}\n  serviceLinkedRoleSuffix: CMK\n",
    }
    for old, new in filled.items():
        if old not in text:
            sys.exit(f"demo: discover's config has no line {old.strip()!r}")
        text = text.replace(old, new, 1)
    with open(args.config, "w", encoding="utf-8") as f:
        f.write(text)


def wait_ready(url, seconds):
    """Whether ``url`` answers 200 within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("seed", help="the fleet, with a failed launch in web and worker")
    c = sub.add_parser("config", help="complete discover's config")
    c.add_argument("--discovered", required=True)
    c.add_argument("--config", required=True)
    s = sub.add_parser("scale", help="set groups' desired capacity")
    s.add_argument("--desired", type=int, required=True)
    s.add_argument("--when-ready", metavar="URL", help="first wait (up to 5 min) until URL answers 200")
    s.add_argument("groups", nargs="+")
    args = p.parse_args()
    if args.command == "seed":
        seed(args)
    elif args.command == "config":
        complete(args)
    else:
        if args.when_ready and not wait_ready(args.when_ready, 300):
            sys.exit(f"demo: {args.when_ready} was not ready within 300 s")
        own, _ = sessions(args.endpoint, access_key="demo")
        say = "demo: after the fix, " if args.when_ready else ""
        scale(own.client("autoscaling", endpoint_url=args.endpoint), args.groups, args.desired, say)


if __name__ == "__main__":
    main()
