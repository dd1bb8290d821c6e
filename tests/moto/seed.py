"""Seeding the local emulator the same way everywhere: the demo (scripts/demo_seed.py)
and the end-to-end benchmark (bench/e2e.py) make their accounts, keys and groups here.
The Rust tests seed through the SDK in tests/e2e/common, with the same accounts and names.

Account 123456789012 is the operator's own (plain keys); 444455556666 is reached by
assuming its role key-admin, as the operator's config tells it to.
"""

import concurrent.futures

import boto3

OWN, OTHER = "123456789012", "444455556666"
OTHER_ROLE = f"arn:aws:iam::{OTHER}:role/key-admin"
REGION = "us-west-2"


def sessions(endpoint, access_key="seed"):
    """boto3 sessions acting in the own account and, through its role, in the other."""
    own = boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=access_key, region_name=REGION)
    sts = own.client("sts", endpoint_url=endpoint)
    c = sts.assume_role(RoleArn=OTHER_ROLE, RoleSessionName="seed")["Credentials"]
    other = boto3.Session(
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
        region_name=REGION,
    )
    return own, other


def create_key(session, endpoint, description="EBS key"):
    """A symmetric customer managed key with the default key policy; its ARN."""
    return session.client("kms", endpoint_url=endpoint).create_key(Description=description)["KeyMetadata"]["Arn"]


def create_asgs(session, endpoint, names, launch_configuration="seed", max_size=1):
    """Groups made without a service-linked role (so on the default one, as in AWS), from
    one launch configuration, eight at a time."""
    asc = session.client("autoscaling", endpoint_url=endpoint)
    asc.create_launch_configuration(
        LaunchConfigurationName=launch_configuration, ImageId="ami-12c6146b", InstanceType="t3.micro"
    )

    def create(name):
        asc.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchConfigurationName=launch_configuration,
            AvailabilityZones=[f"{REGION}a"],
            MinSize=0,
            MaxSize=max_size,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
    return asc
