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

import boto3

OWN, OTHER = "123456789012", "444455556666"
ROLE = f"arn:aws:iam::{OTHER}:role/key-admin"
REGION = "us-west-2"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--config", required=True, help="where to write the operator's config")
    args = p.parse_args()

    own = boto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)
    creds = own.client("sts", endpoint_url=args.endpoint).assume_role(RoleArn=ROLE, RoleSessionName="demo-seed")[
        "Credentials"
    ]
    other = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    own_key = own.client("kms", endpoint_url=args.endpoint).create_key(Description="demo: EBS key, own account")
    other_key = other.client("kms", endpoint_url=args.endpoint).create_key(Description="demo: EBS key, key account")
    own_arn, other_arn = own_key["KeyMetadata"]["Arn"], other_key["KeyMetadata"]["Arn"]

    asc = own.client("autoscaling", endpoint_url=args.endpoint)
    asc.create_launch_configuration(LaunchConfigurationName="demo", ImageId="ami-12c6146b", InstanceType="t3.micro")
    for name in ["web", "api", "worker", "batch"]:
        asc.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchConfigurationName="demo",
            AvailabilityZones=[f"{REGION}a"],
            MinSize=0,
            MaxSize=2,
        )

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
    print("seeded: ASGs web, api, worker, batch (no service-linked role set)")


if __name__ == "__main__":
    main()
