"""Launches and scaling activities for the moto launcher.

moto starts instances whenever a group's desired capacity rises, and its
DescribeScalingActivities always answers an empty list. Here:

- every activity is kept per (account, region, group) and DescribeScalingActivities answers
  from that store (EC2 Auto Scaling API Reference, DescribeScalingActivities, Activity);
- with the strict switch ``launches`` on, each instance moto starts for a group is a launch,
  recorded as an activity. It succeeds only if the group's service-linked role may use
  every customer managed key the launch uses (``evaluate``); otherwise the activity fails
  with "Client.InternalError: Client error on launch" and the instance is terminated at
  once (EC2 Auto Scaling User Guide, "Troubleshoot Amazon EC2 Auto Scaling: EC2 instance
  launch failures", "Client.InternalError: Client error on launch"; "Required AWS KMS key
  policy for use with encrypted volumes"). The group is left short of its desired
  capacity; the next capacity change starts the missing instances again, which is when
  AWS's own retries would succeed too.

Launches are noted while moto answers a request (on that request's thread) and settled
once it has answered (``settle``): by then the launcher has stored the request's
ServiceLinkedRoleARN, which a launch in the same request uses.
"""

import datetime
import json
import secrets
import threading
import traceback
import uuid

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, autoscaling_backends
from moto.autoscaling.responses import AutoScalingResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

import gaps
import kms_access
import strict
import wire

LAUNCH_FAILURE = "Client.InternalError: Client error on launch"

# EC2 Auto Scaling API Reference, Activity, StatusCode.
STATUS_CODES = (
    "PendingSpotBidPlacement",
    "WaitingForSpotInstanceRequestId",
    "WaitingForSpotInstanceId",
    "WaitingForInstanceId",
    "PreInService",
    "InProgress",
    "WaitingForELBConnectionDraining",
    "MidLifecycleAction",
    "WaitingForInstanceWarmup",
    "Successful",
    "Failed",
    "Cancelled",
    "WaitingForConnectionDraining",
)
MAX_RECORDS = 100  # DescribeScalingActivities, MaxRecords: default and maximum


class InvalidNextToken(AutoscalingClientError):
    """EC2 Auto Scaling API Reference, DescribeScalingActivities, Errors."""

    code = "InvalidNextToken"


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _instance_id():
    return "i-" + secrets.token_hex(9)[:17]


def _truthy(value):
    return value is True or str(value).lower() == "true"


# --- which keys a launch uses ---------------------------------------------------------------
# Amazon EBS User Guide, "Amazon EBS encryption": a volume is encrypted with the KmsKeyId of
# its mapping, else from an encrypted snapshot with the snapshot's key (which is read in
# any case), else, when the mapping asks for encryption or encryption by default is on,
# with the account's default key (GetEbsDefaultKmsKeyId). EC2 User Guide, "Block device
# mappings": a launch's mappings add to or replace (by device name) the image's.


class Uses:
    """The keys one launch uses: [(key as written, source)], and each volume's key."""

    DEFAULT = object()  # a volume encrypted with the account's default key

    def __init__(self):
        self.keys = []
        self.volumes = {}  # device -> key as written, DEFAULT, or None (not encrypted)

    def add(self, key, source):
        self.keys.append((key, source))


def _snapshot(ec2, snapshot_id):
    return ec2.snapshots.get(snapshot_id) if snapshot_id else None


def _image_volumes(ec2, image_id, uses):
    """The image's volumes: its own account's image, or one shared with it (gaps.py, 10).
    EC2 User Guide, "Use encryption with EBS-backed AMIs": a volume from an encrypted
    snapshot of another account's image is re-encrypted with the launching account's
    default EBS key unless the launch names one; the snapshot's own key is still used to
    read it."""
    image = gaps.visible_image(ec2, image_id) if image_id else None
    if image is None:
        return
    shared = image.ec2_backend.account_id != ec2.account_id
    for mapping in image.block_device_mappings:
        ebs, device = mapping.get("Ebs"), mapping.get("DeviceName")
        if not isinstance(ebs, dict):
            continue
        snapshot = _snapshot(image.ec2_backend, ebs.get("SnapshotId"))
        if snapshot is not None and snapshot.encrypted:
            key = snapshot.kms_key_id or Uses.DEFAULT
            if key is not Uses.DEFAULT:
                uses.add(key, f"image {image_id} snapshot {snapshot.id} ({device})")
            uses.volumes[device] = Uses.DEFAULT if shared else key
        else:
            uses.volumes[device] = None


def _mapping_volume(ec2, mapping, where, uses):
    device, ebs = mapping.get("DeviceName"), mapping.get("Ebs")
    if _truthy(mapping.get("NoDevice")) or mapping.get("VirtualName"):
        uses.volumes.pop(device, None)
        return
    if not isinstance(ebs, dict):
        return
    snapshot = _snapshot(ec2, ebs.get("SnapshotId"))
    if snapshot is not None and snapshot.encrypted and snapshot.kms_key_id:
        uses.add(snapshot.kms_key_id, f"{where} {device} snapshot {snapshot.id}")
        uses.volumes[device] = snapshot.kms_key_id
    if _truthy(ebs.get("Encrypted")) and ebs.get("KmsKeyId"):
        uses.add(ebs["KmsKeyId"], f"{where} {device}")
        uses.volumes[device] = ebs["KmsKeyId"]
    elif _truthy(ebs.get("Encrypted")) and uses.volumes.get(device) is None:
        uses.volumes[device] = Uses.DEFAULT
    else:
        uses.volumes.setdefault(device, None)


def launch_uses(ec2, image_id, mappings, where):
    """The keys a launch from ``image_id`` with block device ``mappings`` uses."""
    uses = Uses()
    _image_volumes(ec2, image_id, uses)
    for mapping in mappings or []:
        if isinstance(mapping, dict):
            _mapping_volume(ec2, mapping, where, uses)
    volumes = uses.volumes.values()
    if any(v is Uses.DEFAULT for v in volumes):
        uses.add(gaps.ebs_default_key(ec2), f"EBS default key ({where} asks for encryption without a key)")
    elif ec2.ebs_encryption_by_default and any(v is None for v in volumes):
        uses.add(gaps.ebs_default_key(ec2), "EBS default key (encryption by default)")
    return uses


def _template(ec2, spec):
    template_id, name = spec.get("LaunchTemplateId"), spec.get("LaunchTemplateName")
    if template_id:
        return ec2.launch_templates.get(template_id)
    template_id = ec2.launch_template_name_to_ids.get(name)
    return ec2.launch_templates.get(template_id) if template_id else None


def _template_uses(ec2, spec):
    """(uses, problem) for a LaunchTemplateSpecification; Version absent means $Default
    (EC2 Auto Scaling API Reference, LaunchTemplateSpecification, Version)."""
    template = _template(ec2, spec)
    wanted = spec.get("Version") or "$Default"
    if template is None:
        return None, f"launch template {spec.get('LaunchTemplateId') or spec.get('LaunchTemplateName')} not found"
    try:
        version = template.get_version(wanted)
    except (InvalidLaunchTemplateVersionNotFound, ValueError):  # ValueError: not a number
        return None, f"launch template {template.id} has no version {wanted}"
    where = f"launch template {template.id} version {version.number}"
    data = version.data
    # EC2 User Guide, "Use a Systems Manager parameter instead of an AMI ID": resolved at launch.
    image_id = gaps.resolve_image_id(ec2.account_id, ec2.region_name, data.get("ImageId"))
    return launch_uses(ec2, image_id, data.get("BlockDeviceMappings"), where), None


def _group_specs(group):
    """The launch template specifications a group launches from (a MixedInstancesPolicy's
    template and its overrides' templates), or [] for a launch configuration."""
    policy = group.mixed_instances_policy
    if policy:
        template = policy.get("LaunchTemplate", {})
        overrides = [o.get("LaunchTemplateSpecification") for o in template.get("Overrides") or []]
        return [template.get("LaunchTemplateSpecification", {})] + [s for s in overrides if s]
    if group.ec2_launch_template is not None:
        return [{"LaunchTemplateId": group.ec2_launch_template.id, "Version": group.launch_template_version}]
    return []


def group_uses(group):
    """([(key as written, source)], [problem]) for one launch of ``group``."""
    ec2 = ec2_backends[group.account_id][group.region]
    keys, problems = [], []
    specs = _group_specs(group)
    for spec in specs:
        uses, problem = _template_uses(ec2, spec)
        if problem:
            problems.append(problem)
        else:
            keys.extend(uses.keys)
    config = group.launch_config
    if not specs and config is not None:
        uses = launch_uses(ec2, config.image_id, config.block_device_mapping_dict, f"launch configuration {config.name}")
        keys.extend(uses.keys)
    return keys, problems


# --- whether the role may use them -----------------------------------------------------------


class Judge:
    """Whether a role may use keys, with the strict layer's view of policies and grants."""

    def __init__(self, strict_layer, role_arn, window):
        self.strict = strict_layer
        self.role_arn = role_arn
        self.role_visible = strict.visible_role(role_arn, window) is not None

    def key(self, key):
        """(ok, why) for one resolved key (None: no such key).

        KMS Developer Guide, "AWS managed keys": any principal in the account that may
        use the service may use them, so they need nothing. "Key states of AWS KMS keys":
        only an Enabled key can be used. The propagation window: see strict.py.
        """
        if key is None:
            return False, "no such key"
        if key.key_manager == "AWS":
            return True, "AWS managed key: needs nothing"
        if key.key_state != "Enabled":
            return False, f"key is {key.key_state}"
        if not self.role_visible:
            return False, f"role {self.role_arn} does not exist or has not propagated"
        grants = [
            (g.id, self.strict.shown_grantee(g.id, g.grantee_principal), g.operations, g.constraints)
            for g in list(key.grants.values())
        ]
        return kms_access.role_may_use(self.strict.shown_policy(key), key.arn, self.role_arn, grants)


def evaluate(group, strict_layer, window):
    """{"can_launch", "role", "keys": [{"key", "source", "ok", "why"}], "problems"}."""
    role = group.service_linked_role_arn
    judge = Judge(strict_layer, role, window)
    entries = []
    keys, problems = group_uses(group)
    for written, source in keys:
        key = gaps.resolve_key(group.account_id, group.region, written)
        ok, why = judge.key(key)
        entries.append({"key": key.arn if key is not None else written, "source": source, "ok": ok, "why": why})
    can = not problems and all(e["ok"] for e in entries)
    return {"can_launch": can, "role": role, "keys": entries, "problems": problems}


# --- the store ---------------------------------------------------------------------------------


class Launches:
    def __init__(self, settings, strict_layer):
        self.settings = settings
        self.strict = strict_layer
        self.lock = threading.RLock()
        self.activities = {}  # (account, region, group) -> [activity], oldest first
        self.tokens = {}  # NextToken -> (query, offset)
        self.sequence = 0
        self.local = threading.local()  # .pending: [(group, [InstanceState], count before)]

    # --- recording ---

    def record(self, account, region, group_name, fields):
        """Appends one activity (a dict of Activity fields) and returns it."""
        with self.lock:
            self.sequence += 1
            activity = dict(fields, AutoScalingGroupName=group_name, _seq=self.sequence)
            activity.setdefault("ActivityId", str(uuid.uuid4()))
            self.activities.setdefault((account, region, group_name), []).append(activity)
            return activity

    def forget(self, account, region, group_name):
        """A deleted group's activities go (AWS keeps them for IncludeDeletedGroups, which
        is not modelled), so that a new group of the same name starts with none."""
        with self.lock:
            self.activities.pop((account, region, group_name), None)

    def note(self, group, new_states, before):
        """Called (on the request's thread) when moto has started instances for a group."""
        if not new_states or not self.settings.get("launches"):
            return
        if not hasattr(self.local, "pending"):
            self.local.pending = []
        self.local.pending.append((group, new_states, before))

    def settle(self):
        """Judges and records the launches noted during the request just answered."""
        pending = getattr(self.local, "pending", [])
        self.local.pending = []
        verdicts = {}
        for group, states, before in pending:
            if id(group) not in verdicts:
                verdicts[id(group)] = self._verdict(group)
            self._launched(group, states, before, *verdicts[id(group)])

    def _verdict(self, group):
        """(ok, status message if not). A fault in the evaluation itself fails the launch
        with a message naming it, rather than the request moto has already carried out."""
        try:
            if evaluate(group, self.strict, self.settings.get("propagation_seconds"))["can_launch"]:
                return True, None
            return False, LAUNCH_FAILURE
        except Exception as e:  # noqa: BLE001 - surfaced in the activity and on stderr
            traceback.print_exc()
            return False, f"emulator error while judging the launch: {e!r}"

    def _launched(self, group, states, before, ok, message):
        for i, state in enumerate(states):
            now = _now()
            cause = (
                f"At {_stamp(now)} an instance was started in response to a difference between desired and "
                f"actual capacity, increasing the capacity from {before + i} to {before + i + 1}."
            )
            fields = {
                "Description": f"Launching a new EC2 instance: {state.instance.id}",
                "Cause": cause,
                "StartTime": now,
                "EndTime": now,
                "StatusCode": "Successful" if ok else "Failed",
                "Progress": 100,
                "Details": json.dumps({"Availability Zone": state.instance.placement.zone}),
            }
            if not ok:
                fields["StatusMessage"] = message
                self._terminate(group, state)
            self.record(group.account_id, group.region, group.name, fields)

    @staticmethod
    def _terminate(group, state):
        """EC2 User Guide, "Troubleshoot instance launch issues", "Instance terminates
        immediately": the instance ends at once, with the launch error as its reason."""
        if state in group.instance_states:
            group.instance_states.remove(state)
        state.instance.terminate()
        state.instance.state_reason = StateReason(LAUNCH_FAILURE, "Client.InternalError")

    # --- DescribeScalingActivities ---

    def describe(self, account, region, group_name, activity_ids, max_records, next_token):
        """(page, next token or None), most recent first (EC2 Auto Scaling API Reference,
        DescribeScalingActivities: every group of the account and Region without a group
        name; MaxRecords 1-100, default 100; NextToken from an earlier answer). That
        activities still in progress come first is not modelled: launches here end at once."""
        if max_records is None:
            max_records = MAX_RECORDS
        if not 1 <= max_records <= MAX_RECORDS:
            raise ValidationError(
                f"1 validation error detected: Value '{max_records}' at 'maxRecords' failed to satisfy "
                f"constraint: Member must have value between 1 and {MAX_RECORDS}"
            )
        query = (account, region, group_name, tuple(activity_ids or ()))
        with self.lock:
            offset = 0
            if next_token is not None:
                known = self.tokens.get(next_token)
                if known is None or known[0] != query:
                    raise InvalidNextToken("The token is not valid.")
                offset = known[1]
            found = self._matching(account, region, group_name, activity_ids)
            page = found[offset : offset + max_records]
            token = None
            if offset + max_records < len(found):
                token = secrets.token_urlsafe(24)
                self.tokens[token] = (query, offset + max_records)
            return [{k: v for k, v in a.items() if not k.startswith("_")} for a in page], token

    def _matching(self, account, region, group_name, activity_ids):
        if group_name:
            found = list(self.activities.get((account, region, group_name), []))
        else:
            found = [a for (acc, reg, _), acts in self.activities.items() if (acc, reg) == (account, region) for a in acts]
        if activity_ids:
            found = [a for a in found if a["ActivityId"] in activity_ids]
        return sorted(found, key=lambda a: a["_seq"], reverse=True)

    # --- hooks: /_launcher/activities and /_launcher/can-launch ---

    def control(self, path, method, body, query, start_response):
        """WSGI: the launch hooks; None when ``path`` is not one of them."""
        if path == "/_launcher/activities" and method == "POST":
            return self._post_activity(body, start_response)
        if path == "/_launcher/can-launch" and method == "GET":
            return self._can_launch(query, start_response)
        return None

    def _post_activity(self, body, start_response):
        try:
            fields, where = activity_from_hook(json.loads(body or b"{}"))
        except (ValueError, KeyError, TypeError) as e:
            return wire.json_response(start_response, {"error": f"bad activity: {e}"}, 400)
        activity = self.record(*where, fields)
        return wire.json_response(start_response, _as_json(activity))

    def _can_launch(self, query, start_response):
        name = query.get("asg")
        account = query.get("account", DEFAULT_ACCOUNT_ID)
        region = query.get("region", "us-west-2")
        backend = dict.get(dict.get(autoscaling_backends, account) or {}, region)
        group = backend.autoscaling_groups.get(name) if backend is not None else None
        if group is None:
            return wire.json_response(start_response, {"error": f"no group {name!r} in {account}/{region}"}, 404)
        with self.lock:
            verdict = evaluate(group, self.strict, self.settings.get("propagation_seconds"))
        return wire.json_response(start_response, verdict)


def activity_from_hook(value):
    """(Activity fields, (account, region, group)) from a POST /_launcher/activities body.

    Raises ValueError/KeyError/TypeError for a bad one.
    """
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    group = value["asg"]
    account = value.get("account", DEFAULT_ACCOUNT_ID)
    region = value.get("region", "us-west-2")
    status = value.get("status_code", "Failed")
    if not all(isinstance(v, str) for v in (group, account, region, status)):
        raise TypeError("asg, account, region and status_code must be strings")
    if status not in STATUS_CODES:
        raise ValueError(f"unknown status_code {status!r}")
    ago = value.get("seconds_ago", 0)
    if isinstance(ago, bool) or not isinstance(ago, (int, float)) or ago < 0:
        raise ValueError("seconds_ago must be a number >= 0")
    start = _now() - datetime.timedelta(seconds=ago)
    message = value.get("status_message", LAUNCH_FAILURE if status == "Failed" else None)
    fields = {
        "Description": str(value.get("description", f"Launching a new EC2 instance: {_instance_id()}")),
        "Cause": str(
            value.get(
                "cause",
                f"At {_stamp(start)} an instance was started in response to a difference between desired "
                "and actual capacity, increasing the capacity from 0 to 1.",
            )
        ),
        "StartTime": start,
        "EndTime": start,
        "StatusCode": status,
        "Progress": 100,
    }
    if message is not None:
        fields["StatusMessage"] = str(message)
    return fields, (account, region, group)


def _as_json(activity):
    return {
        k: v.isoformat() if isinstance(v, datetime.datetime) else v for k, v in activity.items() if not k.startswith("_")
    }


# --- patches -------------------------------------------------------------------------------------


def _noting_launches(launches, replace):
    def wrapper(self, count_needed, propagated_tags):
        before = list(self.instance_states)
        replace(self, count_needed, propagated_tags)
        new = [s for s in self.instance_states if s not in before]
        launches.note(self, new, len(before))

    return wrapper


def _forgetting_activities(launches, delete):
    def wrapper(self, group_name):
        delete(self, group_name)
        launches.forget(self.account_id, self.region_name, group_name)

    return wrapper


def _describe_scaling_activities(launches):
    def handler(self):
        page, token = launches.describe(
            self.current_account,
            self.region,
            self._get_param("AutoScalingGroupName"),
            self._get_param("ActivityIds", []),
            self._get_int_param("MaxRecords"),
            self._get_param("NextToken"),
        )
        result = {"Activities": page}
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    return handler


def install(settings, strict_layer):
    """Patches moto's Auto Scaling to note launches and answer DescribeScalingActivities
    from the store; returns the store (the launcher settles it after each request)."""
    launches = Launches(settings, strict_layer)
    FakeAutoScalingGroup.replace_autoscaling_group_instances = _noting_launches(
        launches, FakeAutoScalingGroup.replace_autoscaling_group_instances
    )
    AutoScalingBackend.delete_auto_scaling_group = _forgetting_activities(
        launches, AutoScalingBackend.delete_auto_scaling_group
    )
    AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities(launches)
    return launches
