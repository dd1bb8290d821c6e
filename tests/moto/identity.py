"""Identity-based policies: AWS authorizes every call before doing it; moto does not.

IAM User Guide, "Policy evaluation logic": a request made by an IAM principal in its own
account is allowed only when one of its identity-based policies allows it and no policy
denies it explicitly. This module applies that rule to callers registered through
``/_launcher/identity-policies``, each with one policy document; every other caller is
left to moto (which authorizes everything). A refused request is answered as AWS answers
it (IAM User Guide, "Troubleshoot access denied error messages": "User: ARN is not
authorized to perform: ACTION on resource: ARN because no identity-based policy allows the
ACTION action"), in the protocol's wire format, and never reaches moto.

What a request is checked as, from its actual parameters: the IAM action, the resource
ARN and the request context of the Service Authorization Reference ("Actions, resources,
and condition keys for ..."), for the operations in ``AUTHORIZERS``. An operation not in
the table is refused (the emulator cannot tell what it needs), except a KMS operation on
the key of its ``KeyId``, checked as ``kms:<operation>`` on that key; ``sts:GetCallerIdentity``
needs no permission (STS API Reference, GetCallerIdentity).

Two choices where AWS leaves the answer open, both on the strict side:
- Auto Scaling documents no ``iam:PassedToService`` value for the service-linked role a
  group is given (EC2 Auto Scaling User Guide, "Control which service-linked role can be
  passed" scopes ``iam:PassRole`` by role ARN alone), so the PassRole check of
  CreateAutoScalingGroup/UpdateAutoScalingGroup carries no such key: a policy that
  requires it is refused here.
- GetRole on a role that does not exist is checked against the ARN the role would have:
  for an Auto Scaling service-linked role name, under ``aws-service-role/autoscaling.amazonaws.com/``.

Policy language (IAM User Guide, "IAM JSON policy elements"): Action/NotAction (``*`` and
``?``, case-insensitive), Resource/NotResource (``*`` and ``?``), and Condition with the
operators String{Not}Equals{IgnoreCase}, String{Not}Like, Arn{Not}Equals, Arn{Not}Like,
Bool and Null, each optionally ``...IfExists``, and the set qualifiers ``ForAllValues:``
and ``ForAnyValue:``. A missing key makes a positive operator false and a negated one
true; ``ForAllValues`` over a missing key is true, ``ForAnyValue`` false ("Condition
operators", "Multivalued context keys"). An operator outside that list never matches an
Allow and always matches a Deny.

Every decision is logged (``GET /_launcher/authorizations``) with the statements that
allowed it, so a test can check both ways: that every call was allowed, and that every
action a policy allows was used.
"""

import json
import re
import threading

from moto.autoscaling.models import autoscaling_backends
from moto.iam.models import iam_backends
from moto.sts.models import sts_backends

import wire

AUTOSCALING_SERVICE = "autoscaling.amazonaws.com"
SLR_PREFIX = "AWSServiceRoleForAutoScaling"

# --- who is calling ---------------------------------------------------------------------


def caller_of(access_key, account):
    """The caller's ARN as GetCallerIdentity shows it (moto's own lookup order)."""
    if access_key:
        for per_account in list(dict.values(sts_backends)):
            for backend in list(dict.values(per_account)):
                for role in list(getattr(backend, "assumed_roles", [])):
                    if role.access_key_id == access_key:
                        return role.arn
        for per_account in list(dict.values(iam_backends)):
            for backend in list(dict.values(per_account)):
                user = backend.get_user_from_access_key_id(access_key)
                if user is not None:
                    return user.arn
    return f"arn:aws:sts::{account}:user/moto"


# --- what a request is checked as -------------------------------------------------------


class Check:
    """One authorization: an IAM action on a resource, in a request context."""

    def __init__(self, action, resource, context=None):
        self.action, self.resource = action, resource
        self.context = context or {}  # key (lower case) -> list of values

    def as_json(self):
        return {"action": self.action, "resource": self.resource, "context": self.context}


def _partition(req):
    return "aws-cn" if (req.region or "").startswith("cn-") else "aws"


def _role_arn(req, name):
    """The ARN of role ``name`` in the caller's account, as it is or would be."""
    partition = _partition(req)
    backend = dict.get(dict.get(iam_backends, req.account) or {}, partition)
    if backend is not None:
        for role in list(backend.roles.values()):
            if role.name == name:
                return role.arn
    path = f"aws-service-role/{AUTOSCALING_SERVICE}/" if name.startswith(SLR_PREFIX) else ""
    return f"arn:{partition}:iam::{req.account}:role/{path}{name}"


def _key(req, kms_backend_for, param="KeyId"):
    """(key ARN, aliases of the key, the alias named if any) for the key a request names."""
    value = req.params.get(param) or ""
    alias = value if "alias/" in value else None
    backend = kms_backend_for(req.action, req.params, req.account, req.region)
    try:
        key = backend.keys.get(backend.any_id_to_key_id(value))
    except (AttributeError, TypeError, KeyError):
        key = None
    if key is None:
        if value.startswith("arn:"):
            return value, [], alias
        return f"arn:{_partition(req)}:kms:{req.region}:{req.account}:key/{value}", [], alias
    return key.arn, sorted(key.aliases.keys()), alias


def _kms(action, extra=None):
    """A KMS key resource operation (KMS Developer Guide, "AWS KMS condition keys":
    kms:CallerAccount and kms:ResourceAliases for every one; kms:RequestAlias when the key
    is named by an alias)."""

    def authorize(req, kms_backend_for):
        arn, aliases, alias = _key(req, kms_backend_for)
        context = {"kms:calleraccount": [req.account], "kms:resourcealiases": aliases}
        if alias:
            context["kms:requestalias"] = [alias.rpartition(":")[2]]
        if extra:
            context.update(extra(req))
        return [Check(f"kms:{action}", arn, context)]

    return authorize


def _grant_context(req):
    """KMS Developer Guide, "AWS KMS condition keys": kms:GranteePrincipal,
    kms:RetiringPrincipal and kms:GrantOperations come from the CreateGrant request;
    kms:GrantIsForAWSResource is true only when an AWS service calls for the principal."""
    operations = req.params.get("Operations") or []
    context = {
        "kms:granteeprincipal": [req.params.get("GranteePrincipal", "")],
        "kms:grantoperations": list(operations) if isinstance(operations, list) else [],
        "kms:grantisforawsresource": ["false"],
    }
    if req.params.get("RetiringPrincipal"):
        context["kms:retiringprincipal"] = [req.params["RetiringPrincipal"]]
    return context


def _everything(action):
    """An operation that supports no resource-level permission: Resource "*"."""
    return lambda req, _: [Check(action, "*")]


def _get_role(req, _):
    return [Check("iam:GetRole", _role_arn(req, req.params.get("RoleName", "")))]


def _create_service_linked_role(req, _):
    service = req.params.get("AWSServiceName", "")
    suffix = req.params.get("CustomSuffix")
    name = SLR_PREFIX + (f"_{suffix}" if suffix else "") if service == AUTOSCALING_SERVICE else service
    arn = f"arn:{_partition(req)}:iam::{req.account}:role/aws-service-role/{service}/{name}"
    return [Check("iam:CreateServiceLinkedRole", arn, {"iam:awsservicename": [service]})]


def _assume_role(req, _):
    return [Check("sts:AssumeRole", req.params.get("RoleArn", ""))]


def _group_tags(group):
    """The condition keys a group's tags give (Service Authorization Reference, "Actions,
    resources, and condition keys for Amazon EC2 Auto Scaling": UpdateAutoScalingGroup
    takes autoscaling:ResourceTag/${TagKey} and aws:ResourceTag/${TagKey} of the group)."""
    context = {}
    for tag in getattr(group, "tags", None) or []:
        key, value = tag.get("Key") or tag.get("key"), tag.get("Value") or tag.get("value") or ""
        if key:
            for prefix in ("autoscaling", "aws"):
                context[f"{prefix}:resourcetag/{key.lower()}"] = [value]
    return context


def _group(verb):
    """Create/UpdateAutoScalingGroup: the group (in the context of its tags), and
    iam:PassRole on the role it is given."""

    def authorize(req, _):
        name = req.params.get("AutoScalingGroupName", "")
        backend = dict.get(dict.get(autoscaling_backends, req.account) or {}, req.region)
        group = backend.autoscaling_groups.get(name) if backend is not None else None
        arn = (
            group.arn
            if group is not None
            else f"arn:{_partition(req)}:autoscaling:{req.region}:{req.account}:autoScalingGroup:*:autoScalingGroupName/{name}"
        )
        checks = [Check(f"autoscaling:{verb}", arn, _group_tags(group))]
        role = req.params.get("ServiceLinkedRoleARN")
        if role:
            checks.append(Check("iam:PassRole", role))
        return checks + _launch_template_checks(req)

    return authorize


# --- re-encryption: EC2's copy, template versions and launch configurations -----------------


def _ec2_resource(req, kind, rest, account=True):
    return f"arn:{_partition(req)}:ec2:{req.region}:{req.account if account else ''}:{kind}/{rest}"


def _via_ec2(req, key_arn, actions, aws_resource_grant):
    """EC2 User Guide, "Copy an Amazon EC2 AMI" and Amazon EBS User Guide, "Permissions
    for IAM users": EC2 uses the caller's permissions on the keys, through EC2
    (kms:ViaService ec2.<region>.amazonaws.com; KMS Developer Guide, "kms:ViaService"),
    and creates its grant for an AWS resource (kms:GrantIsForAWSResource true)."""
    context = {"kms:viaservice": [f"ec2.{req.region}.amazonaws.com"], "kms:calleraccount": [req.account]}
    checks = [Check(a, key_arn, context) for a in actions]
    if aws_resource_grant:
        checks.append(Check("kms:CreateGrant", key_arn, dict(context, **{"kms:grantisforawsresource": ["true"]})))
    return checks


def _copy_image(req, _):
    """Service Authorization Reference, Amazon EC2: CopyImage on the new image, and
    ec2:CreateTags (ec2:CreateAction CopyImage) when it is tagged on creation; the keys of
    the source's snapshots are read, and the copy's key written, through EC2."""
    import gaps

    checks = [Check("ec2:CopyImage", _ec2_resource(req, "image", "*", account=False))]
    # EC2 User Guide, "Grant permissions to copy Amazon EC2 AMIs": ec2:CreateTags "to tag
    # the target AMI. For EBS-backed AMIs, it also grants permission to tag the target
    # AMI's backing snapshots": on each kind tagged (CopyImage, TagSpecifications).
    tagged = sorted(
        {v for k, v in req.params.items() if k.startswith("TagSpecification.") and k.endswith(".ResourceType")}
    )
    for kind in tagged:
        resource = _ec2_resource(req, kind, "*", account=False)
        checks.append(Check("ec2:CreateTags", resource, {"ec2:createaction": ["CopyImage"]}))
    from moto.ec2.models import ec2_backends

    region = req.params.get("SourceRegion") or req.region
    backend = ec2_backends[req.account][region]
    source = gaps.visible_image(backend, req.params.get("SourceImageId", ""))
    if source is not None:
        owner = ec2_backends[source.owner_id][region]
        for m in source.block_device_mappings:
            snapshot = owner.snapshots.get((m.get("Ebs") or {}).get("SnapshotId") or "")
            if snapshot is not None and snapshot.encrypted and snapshot.kms_key_id:
                key = gaps.key_arn(source.owner_id, region, snapshot.kms_key_id)
                checks += _via_ec2(req, key, ["kms:Decrypt", "kms:ReEncryptFrom"], True)
    target = req.params.get("KmsKeyId")
    if target:
        key = gaps.key_arn(req.account, req.region, target)
        checks += _via_ec2(req, key, ["kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptTo"], True)
    return checks


def _template(action):
    def authorize(req, _):
        return [Check(action, _ec2_resource(req, "launch-template", req.params.get("LaunchTemplateId", "*")))]

    return authorize


def _tagged(action, kind, param):
    """DeregisterImage and DeleteSnapshot (Service Authorization Reference, Amazon EC2): on
    the image or snapshot (``arn:aws:ec2:REGION::image/ID``, ``::snapshot/ID``), in the
    context of its tags (``aws:ResourceTag/${TagKey}`` and ``ec2:ResourceTag/${TagKey}``)."""

    def authorize(req, _):
        from moto.ec2.models import ec2_backends

        rid = req.params.get(param, "")
        context = {}
        try:
            tags = ec2_backends[req.account][req.region].tags.get(rid, {})
        except Exception:  # an unknown account or region: moto answers
            tags = {}
        for key, value in tags.items():
            for prefix in ("aws", "ec2"):
                context[f"{prefix}:resourcetag/{key.lower()}"] = [value]
        return [Check(action, _ec2_resource(req, kind, rid, account=False), context)]

    return authorize


def _instance_profile_roles(req, profile):
    """The roles of instance profile ``profile`` (a name or an ARN) in the caller's account."""
    name = (profile or "").rpartition("/")[2]
    backend = dict.get(dict.get(iam_backends, req.account) or {}, _partition(req))
    if backend is None or not name:
        return []
    for p in list(backend.instance_profiles.values()):
        if p.name == name:
            return [r.arn for r in p.roles]
    return []


def _pass_profile(req, profile):
    """Amazon EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling API permissions":
    iam:PassRole for the role of an instance profile a launch template or configuration
    names, passed to EC2."""
    return [
        Check("iam:PassRole", role, {"iam:passedtoservice": ["ec2.amazonaws.com"]})
        for role in _instance_profile_roles(req, profile)
    ]


# Amazon EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling API permissions": "Create a
# launch configuration (autoscaling:CreateLaunchConfiguration)" also checks these reads,
# and iam:PassRole when it names an instance profile.
LAUNCH_CONFIGURATION_READS = (
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceAttribute",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotInstanceRequests",
    "ec2:DescribeVpcClassicLink",
)


def _create_launch_configuration(req, _):
    name = req.params.get("LaunchConfigurationName", "")
    arn = f"arn:{_partition(req)}:autoscaling:{req.region}:{req.account}:launchConfiguration:*:launchConfigurationName/{name}"
    reads = [Check(action, "*") for action in LAUNCH_CONFIGURATION_READS]
    return [Check("autoscaling:CreateLaunchConfiguration", arn)] + reads + _pass_profile(
        req, req.params.get("IamInstanceProfile")
    )


def _launch_template_checks(req):
    """Amazon EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling API permissions": a
    group given a launch template needs ec2:RunInstances (checked with the template,
    ec2:LaunchTemplate), iam:PassRole for the template's instance profile, and
    ec2:CreateTags "to tag instances and volumes on launch when a launch template with a
    tag specification is provided" (ec2:CreateAction RunInstances); and ssm:GetParameters
    on the parameter a template names its image by ("This allows the parameter value to be
    validated": EC2 Auto Scaling User Guide, "Use AWS Systems Manager parameters instead of
    AMI IDs in launch templates")."""
    from moto.ec2.models import ec2_backends

    checks = []
    for prefix in ("LaunchTemplate.", "MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification."):
        template_id = req.params.get(prefix + "LaunchTemplateId")
        if not template_id:
            continue
        arn = _ec2_resource(req, "launch-template", template_id)
        checks.append(Check("ec2:RunInstances", "*", {"ec2:launchtemplate": [arn]}))
        try:
            template = ec2_backends[req.account][req.region].get_launch_template(template_id)
            data = template.get_version(req.params.get(prefix + "Version") or template.default_version_number).data
        except Exception:  # an unknown template or version: moto answers the error
            continue
        profile = (data.get("IamInstanceProfile") or {}) if isinstance(data, dict) else {}
        checks += _pass_profile(req, profile.get("Arn") or profile.get("Name"))
        tagged = {s.get("ResourceType") for s in (data.get("TagSpecifications") or [])} if isinstance(data, dict) else set()
        for kind in sorted(tagged & {"instance", "volume"}):
            checks.append(Check("ec2:CreateTags", _ec2_resource(req, kind, "*"), {"ec2:createaction": ["RunInstances"]}))
        image = data.get("ImageId") if isinstance(data, dict) else None
        if isinstance(image, str) and image.startswith("resolve:ssm:"):
            checks.append(Check("ssm:GetParameters", _parameter_arn(req, image[len("resolve:ssm:") :])))
    return checks


def _parameter_arn(req, name):
    """arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME, for a name with or without its
    leading slash (Service Authorization Reference, AWS Systems Manager: parameter)."""
    return f"arn:{_partition(req)}:ssm:{req.region}:{req.account}:parameter/{name.lstrip('/')}"


def _ssm(action):
    def authorize(req, _):
        return [Check(action, _parameter_arn(req, req.params.get("Name", "")))]

    return authorize


AUTHORIZERS = {
    ("sts", "GetCallerIdentity"): lambda req, _: [],
    ("sts", "AssumeRole"): _assume_role,
    ("iam", "GetRole"): _get_role,
    ("iam", "CreateServiceLinkedRole"): _create_service_linked_role,
    ("autoscaling", "DescribeAutoScalingGroups"): _everything("autoscaling:DescribeAutoScalingGroups"),
    ("autoscaling", "DescribeScalingActivities"): _everything("autoscaling:DescribeScalingActivities"),
    ("autoscaling", "DescribeLaunchConfigurations"): _everything("autoscaling:DescribeLaunchConfigurations"),
    ("autoscaling", "UpdateAutoScalingGroup"): _group("UpdateAutoScalingGroup"),
    ("autoscaling", "CreateAutoScalingGroup"): _group("CreateAutoScalingGroup"),
    ("ec2", "DescribeLaunchTemplateVersions"): _everything("ec2:DescribeLaunchTemplateVersions"),
    ("ec2", "DescribeImages"): _everything("ec2:DescribeImages"),
    ("ec2", "DescribeSnapshots"): _everything("ec2:DescribeSnapshots"),
    ("ec2", "GetEbsEncryptionByDefault"): _everything("ec2:GetEbsEncryptionByDefault"),
    ("ec2", "GetEbsDefaultKmsKeyId"): _everything("ec2:GetEbsDefaultKmsKeyId"),
    ("ec2", "CopyImage"): _copy_image,
    ("ec2", "CreateLaunchTemplateVersion"): _template("ec2:CreateLaunchTemplateVersion"),
    ("ec2", "ModifyLaunchTemplate"): _template("ec2:ModifyLaunchTemplate"),
    ("ec2", "DeregisterImage"): _tagged("ec2:DeregisterImage", "image", "ImageId"),
    ("autoscaling", "DeleteLaunchConfiguration"): lambda req, _: [
        # Service Authorization Reference, Amazon EC2 Auto Scaling: on the configuration.
        Check(
            "autoscaling:DeleteLaunchConfiguration",
            f"arn:{_partition(req)}:autoscaling:{req.region}:{req.account}:launchConfiguration:*"
            f":launchConfigurationName/{req.params.get('LaunchConfigurationName', '')}",
        )
    ],
    ("ssm", "GetParameter"): _ssm("ssm:GetParameter"),
    ("ssm", "PutParameter"): _ssm("ssm:PutParameter"),
    ("ec2", "DeleteSnapshot"): _tagged("ec2:DeleteSnapshot", "snapshot", "SnapshotId"),
    ("autoscaling", "CreateLaunchConfiguration"): _create_launch_configuration,
    ("kms", "DescribeKey"): _kms("DescribeKey"),
    ("kms", "GetKeyPolicy"): _kms("GetKeyPolicy"),
    ("kms", "PutKeyPolicy"): _kms("PutKeyPolicy"),
    ("kms", "ListGrants"): _kms("ListGrants"),
    ("kms", "CreateGrant"): _kms("CreateGrant", _grant_context),
    # Service Authorization Reference, AWS KMS: ListRetirableGrants has no resource type.
    ("kms", "ListRetirableGrants"): lambda req, _: [Check("kms:ListRetirableGrants", "*")],
    ("kms", "RetireGrant"): _kms("RetireGrant"),
    ("kms", "RevokeGrant"): _kms("RevokeGrant"),
}


# --- the policy language ----------------------------------------------------------------


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _glob(pattern, value, ignore_case):
    if not isinstance(pattern, str) or not isinstance(value, str):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


# Operator (without qualifier or IfExists) -> (test of one context value against one
# policy value, negated?). A negated operator holds when no pair matches.
OPERATORS = {
    "stringequals": (lambda v, p: v == p, False),
    "stringnotequals": (lambda v, p: v == p, True),
    "stringequalsignorecase": (lambda v, p: v.lower() == p.lower(), False),
    "stringnotequalsignorecase": (lambda v, p: v.lower() == p.lower(), True),
    "stringlike": (lambda v, p: _glob(p, v, False), False),
    "stringnotlike": (lambda v, p: _glob(p, v, False), True),
    "arnequals": (lambda v, p: _glob(p, v, False), False),
    "arnlike": (lambda v, p: _glob(p, v, False), False),
    "arnnotequals": (lambda v, p: _glob(p, v, False), True),
    "arnnotlike": (lambda v, p: _glob(p, v, False), True),
    "bool": (lambda v, p: v.lower() == p.lower(), False),
}


def _condition_holds(operator, key, wanted, context):
    """Whether one (operator, key, values) entry of a Condition holds; None if unknown."""
    name = operator.lower()
    qualifier = None
    for q in ("forallvalues:", "foranyvalue:"):
        if name.startswith(q):
            qualifier, name = q[:-1], name[len(q) :]
    if_exists = name.endswith("ifexists")
    if if_exists:
        name = name[: -len("ifexists")]
    present = key.lower() in context
    values = [_text(v) for v in context.get(key.lower(), [])]
    wanted = [_text(w) for w in _as_list(wanted)]
    if name == "null":
        # Null: true means "the key is absent".
        return all((w.lower() == "true") != present for w in wanted)
    if name not in OPERATORS:
        return None
    test, negated = OPERATORS[name]

    def one(value):
        hit = any(test(value, w) for w in wanted)
        return not hit if negated else hit

    if qualifier == "forallvalues":
        return all(one(v) for v in values)  # an empty or missing set: true
    if qualifier == "foranyvalue":
        return any(one(v) for v in values)  # an empty or missing set: false
    if not present:
        return True if if_exists else negated
    return any(one(v) for v in values) if not negated else all(one(v) for v in values)


def _conditions_hold(condition, context, is_deny):
    if not condition:
        return True
    if not isinstance(condition, dict):
        return is_deny
    for operator, entries in condition.items():
        if not isinstance(entries, dict):
            return is_deny
        for key, wanted in entries.items():
            holds = _condition_holds(operator, key, wanted, context)
            if holds is None:
                return is_deny  # unknown operator: never allows, always denies
            if not holds:
                return False
    return True


def _statement_matches(statement, check):
    is_deny = str(statement.get("Effect", "")).lower() == "deny"
    if "Action" in statement:
        acted = any(_glob(a, check.action, True) for a in _as_list(statement["Action"]))
    else:
        acted = not any(_glob(a, check.action, True) for a in _as_list(statement.get("NotAction")))
    if not acted:
        return False
    if "Resource" in statement:
        placed = any(_glob(r, check.resource, False) for r in _as_list(statement["Resource"]))
    else:
        placed = not any(_glob(r, check.resource, False) for r in _as_list(statement.get("NotResource")))
    return placed and _conditions_hold(statement.get("Condition"), check.context, is_deny)


def evaluate(policy, check):
    """("allowed" | "denied" | "implicit", indices of the Allow statements that match)."""
    statements = [s for s in _as_list(policy.get("Statement")) if isinstance(s, dict)]
    allowing = []
    for i, statement in enumerate(statements):
        if not _statement_matches(statement, check):
            continue
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny":
            return "denied", []
        if effect == "allow":
            allowing.append(i)
    return ("allowed" if allowing else "implicit"), allowing


# --- the layer --------------------------------------------------------------------------

# IAM User Guide, "Troubleshoot access denied error messages"; the codes per service.
DENIED = {
    "kms": ("AccessDeniedException", 400),
    "ec2": ("UnauthorizedOperation", 403),
}


class Identity:
    def __init__(self, kms_backend_for):
        self.kms_backend_for = kms_backend_for
        self.lock = threading.Lock()
        self.policies = {}  # caller ARN -> policy document
        self.decisions = []  # the log served on /_launcher/authorizations

    def check(self, req, access_key, start_response):
        """None when ``req`` may go on; else the WSGI answer refusing it."""
        with self.lock:
            if not self.policies:
                return None
            caller = caller_of(access_key, req.account)
            policy = self.policies.get(caller)
        if policy is None:
            return None
        authorize = AUTHORIZERS.get((req.service, req.action))
        if authorize is None and req.service == "kms" and req.params.get("KeyId"):
            authorize = _kms(req.action)  # any other operation on one key
        if authorize is None:
            return self._refuse(req, start_response, caller, None, "this emulator does not know what it needs")
        for check in authorize(req, self.kms_backend_for):
            verdict, allowing = evaluate(policy, check)
            with self.lock:
                self.decisions.append(
                    {
                        "caller": caller,
                        "service": req.service,
                        "operation": req.action,
                        **check.as_json(),
                        "allowed": verdict == "allowed",
                        "statements": allowing,
                    }
                )
            if verdict != "allowed":
                why = "an explicit deny in an identity-based policy" if verdict == "denied" else None
                return self._refuse(req, start_response, caller, check, why)
        return None

    def _refuse(self, req, start_response, caller, check, why):
        code, status = DENIED.get(req.service, ("AccessDenied", 403))
        if check is None:
            message = f"User: {caller} is not authorized to perform: {req.service}:{req.action} ({why})"
        else:
            # IAM User Guide, "Troubleshooting access denied error messages": an implicit
            # deny reads "because no identity-based policy allows the ACTION action", an
            # explicit one "with an explicit deny in an identity-based policy".
            because = f"with {why}" if why else f"because no identity-based policy allows the {check.action} action"
            message = f"User: {caller} is not authorized to perform: {check.action} on resource: {check.resource} {because}"
        return wire.error({"code": code, "message": message, "status": status}, req.environ, start_response)

    def control(self, path, method, body, start_response):
        """WSGI: the identity hooks; None when ``path`` is not one of them."""
        if path == "/_launcher/identity-policies" and method == "POST":
            try:
                entry = json.loads(body)
                caller, policy = entry["caller"], entry.get("policy")
                if not isinstance(caller, str) or not (policy is None or isinstance(policy, dict)):
                    raise ValueError("caller must be a string and policy an object or null")
            except (ValueError, KeyError, TypeError) as e:
                return wire.json_response(start_response, {"error": f"bad identity policy: {e!r}"}, 400)
            with self.lock:
                if policy is None:
                    self.policies.pop(caller, None)
                else:
                    self.policies[caller] = policy
                return wire.json_response(start_response, {"callers": sorted(self.policies)})
        if path == "/_launcher/identity-policies" and method == "GET":
            with self.lock:
                return wire.json_response(start_response, {"callers": sorted(self.policies)})
        if path == "/_launcher/identity-evaluate" and method == "POST":
            # One policy against one check, as the layer would judge a request: for tests
            # that show what a policy refuses without a call that would be refused.
            try:
                entry = json.loads(body)
                c = entry["check"]
                context = {k.lower(): v for k, v in (c.get("context") or {}).items()}
                decision, statements = evaluate(entry["policy"], Check(c["action"], c["resource"], context))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return wire.json_response(start_response, {"error": f"bad evaluation: {e!r}"}, 400)
            return wire.json_response(start_response, {"decision": decision, "statements": statements})
        if path == "/_launcher/sessions" and method == "GET":
            return wire.json_response(start_response, {"sessions": _sessions()})
        if path == "/_launcher/authorizations" and method == "GET":
            with self.lock:
                return wire.json_response(start_response, {"decisions": list(self.decisions)})
        if path == "/_launcher/authorizations/reset" and method == "POST":
            with self.lock:
                self.decisions.clear()
                return wire.json_response(start_response, {})
        return None


def _sessions():
    """Every assumed-role session moto handed out, with its secrets (for tests that check
    no log carries them)."""
    out = []
    for per_account in list(dict.values(sts_backends)):
        for backend in list(dict.values(per_account)):
            for role in list(getattr(backend, "assumed_roles", [])):
                out.append(
                    {
                        "arn": role.arn,
                        "access_key_id": role.access_key_id,
                        "secret_access_key": role.secret_access_key,
                        "session_token": role.session_token,
                    }
                )
    return out


def install(kms_backend_for):
    return Identity(kms_backend_for)

