#!/usr/bin/env python3
"""Seeds the local emulator with a sample fleet whose ASGs cannot launch yet, and writes
the operator's config for it.

Fleet: account 123456789012 (the operator's own) with one customer managed key and four
ASGs (web, api, worker, batch), none with a service-linked role set; account
444455556666 with one key, reached through the role key-admin. The config binds web and
api to the own-account key (case 1) and worker to the other account's key (case 2);
batch is left out, for you to onboard.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "moto"))
from seed import OTHER, OTHER_ROLE as ROLE, OWN, REGION, create_asgs, create_key, sessions  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--config", required=True, help="where to write the operator's config")
    args = p.parse_args()

    own, other = sessions(args.endpoint, access_key="demo")
    own_arn = create_key(own, args.endpoint, "demo: EBS key, own account")
    other_arn = create_key(other, args.endpoint, "demo: EBS key, key account")
    create_asgs(own, args.endpoint, ["web", "api", "worker", "batch"], launch_configuration="demo", max_size=2)

    os.makedirs(os.path.dirname(os.path.abspath(args.config)), exist_ok=True)
    with open(args.config, "w", encoding="utf-8") as f:
        f.write(
            f"""# Demo config. Edit and save: the running operator picks the change up.
version: 1
defaults:
  region: {REGION}
  serviceLinkedRoleSuffix: CMK
accounts:
  - id: "{OTHER}"
    roleArn: {ROLE}
bindings:
  # case 1: keys of the ASGs' own account
  - asg: web
    account: "{OWN}"
    key: {own_arn}
  - asg: api
    account: "{OWN}"
    key: {own_arn}
  # case 2: a key of account {OTHER}
  - asg: worker
    account: "{OWN}"
    key: {other_arn}
"""
        )
    print(f"seeded: own key {own_arn}")
    print(f"seeded: other key {other_arn}")
    print("seeded: ASGs web, api, worker, batch, on the default service-linked role AWSServiceRoleForAutoScaling")


if __name__ == "__main__":
    main()
