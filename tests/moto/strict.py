"""Strict mode for the moto launcher: AWS rules that moto 5.2.5 does not enforce.

The launcher routes every AWS request through ``Strict.serve``. For the few actions listed
in ``Strict.routes`` it checks the request against the current ``Settings`` before moto
sees it (rejecting it in the protocol's wire format, so the SDK parses the error code),
and/or rewrites moto's answer. Every other request goes to moto untouched.

Each behaviour names the AWS documentation it follows. The settings (see the launcher's
docstring for their meaning) can be changed at runtime through ``/_launcher/strict``.
"""

import base64
import functools
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.iam.models import IAMBackend, iam_backends
from moto.kms.models import kms_backends
from moto.utilities.utils import PARTITION_NAMES

import gaps
import kms_access
import wire

# --- settings --------------------------------------------------------------------------

BOOLEAN_SETTINGS = (
    "principals",
    "grant_names",
    "key_state",
    "grant_paging",
    "asg_roles",
    "launches",
    "ec2_reads",
    "policy_size",
)


class Settings:
    """The strict switches, readable and changeable from any thread."""

    def __init__(self, lenient=False, propagation_seconds=0.0):
        self._lock = threading.Lock()
        self._values = {
            "principals": True,
            "propagation_seconds": 0.0,
            "grant_names": True,
            "key_state": True,
            "grant_paging": True,
            "asg_roles": True,
            "launches": True,
            "ec2_reads": True,
            "policy_size": True,
        }
        changes = {name: not lenient for name in BOOLEAN_SETTINGS}
        changes["propagation_seconds"] = propagation_seconds
        self.update(changes)

    def get(self, name):
        with self._lock:
            return self._values[name]

    def snapshot(self):
        with self._lock:
            return dict(self._values)

    def update(self, changes):
        """Applies a JSON object holding any subset of the settings; all or nothing.

        Raises ValueError naming the first bad key or value.
        """
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        for name, value in changes.items():
            _validate_setting(name, value)
        with self._lock:
            for name, value in changes.items():
                self._values[name] = float(value) if name == "propagation_seconds" else value
            if "propagation_seconds" in changes:
                _window_set_at[0] = time.monotonic()
            return dict(self._values)


def _validate_setting(name, value):
    if name in BOOLEAN_SETTINGS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
    elif name == "propagation_seconds":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ValueError("propagation_seconds must be a number >= 0")
    else:
        raise ValueError(f"unknown setting {name!r}")


# --- IAM: creation times and lookups ---------------------------------------------------
# Propagation: "A role created moments ago may not yet be visible to KMS" (this project's
# AWS-FACTS; terraform-provider-aws retries kms_grant on InvalidArnException for it, and
# terraform-aws-autoscaling records "ARN specified for Service-Linked Role does not exist."
# right after creating the role). IAM's own answers are not delayed.

_born = {}  # unique id of a role or user -> time.monotonic() when moto created it
# When propagation_seconds was last set: entities made before it were made under the
# window then in force (none, unless a test set one), and count as propagated, as roles
# made long ago are on AWS.
_window_set_at = [0.0]


def _stamp_creation(create):
    """Wraps an IAMBackend create_* method to note when each entity was made."""

    def wrapper(self, *args, **kwargs):
        entity = create(self, *args, **kwargs)
        _born[entity.id] = time.monotonic()
        return entity

    return wrapper


def install_iam_clock():
    # create_service_linked_role goes through create_role, so it is stamped too.
    IAMBackend.create_role = _stamp_creation(IAMBackend.create_role)
    IAMBackend.create_user = _stamp_creation(IAMBackend.create_user)


def _visible(entity, window):
    """Whether KMS and Auto Scaling can see ``entity`` yet (IAM always can)."""
    born = _born.get(entity.id)
    return born is None or born < _window_set_at[0] or time.monotonic() - born >= window


# dict.get / dict.values bypass moto's BackendDict.__getitem__, which would create a
# backend (and load every AWS managed policy) for an account that was never used.


def _iam_backend(account, partition):
    per_account = dict.get(iam_backends, account)
    return dict.get(per_account, partition) if per_account is not None else None


def _all_iam_backends():
    for per_account in list(dict.values(iam_backends)):
        yield from list(dict.values(per_account))


def _role_named(partition, account, name):
    backend = _iam_backend(account, partition)
    if backend is None:
        return None
    return next((r for r in list(backend.roles.values()) if r.name == name), None)


def visible_role(arn, window):
    """The role ``arn`` names if it exists and is older than ``window`` seconds; else None."""
    m = ENTITY_ARN.match(arn or "")
    if not m or m.group(3) != "role":
        return None
    role = _role_named(m.group(1), m.group(2), m.group(4))
    return role if role is not None and _visible(role, window) else None


def _user_named(partition, account, name):
    backend = _iam_backend(account, partition)
    return backend.users.get(name) if backend is not None else None


def _entity_with_id(unique_id):
    """The role or user, in any account, whose unique id is ``unique_id``; else None."""
    for backend in _all_iam_backends():
        role = backend.roles.get(unique_id)  # roles are keyed by id
        if role is not None:
            return role
        for user in list(backend.users.values()):
            if user.id == unique_id:
                return user
    return None


# --- principals ------------------------------------------------------------------------
# KMS Developer Guide, "Key policies" / "Specifying principals": valid AWS principals are
# "*", an account (bare id or root ARN), an IAM role or user ARN, an assumed-role session
# ARN, or (as KMS stores them) an IAM unique id. Roles and users must exist: AWS Knowledge
# Center "kms-policy-error-invalid-principals".

ACCOUNT_ID = re.compile(r"^\d{12}$")
ROOT_ARN = re.compile(r"^arn:([\w-]+):iam::(\d{12}):root$")
ENTITY_ARN = re.compile(r"^arn:([\w-]+):iam::(\d{12}):(role|user)/(?:.*/)?([^/]+)$")
ASSUMED_ROLE_ARN = re.compile(r"^arn:([\w-]+):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
SERVICE_PRINCIPAL = re.compile(r"^[a-z0-9][a-z0-9.-]*\.amazonaws\.com(\.cn)?$")
INVALID = (False, None)

INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."


def _is_root(value):
    m = ROOT_ARN.match(value)
    return bool(m) and m.group(1) in PARTITION_NAMES


def _check_identity(value, window, allow_unique_id):
    """(valid, unique id) for a role/user ARN, assumed-role ARN or (optionally) unique id."""
    m = ENTITY_ARN.match(value)
    if m:
        partition, account, kind, name = m.groups()
        find = _role_named if kind == "role" else _user_named
        entity = find(partition, account, name)
        return (True, entity.id) if entity is not None and _visible(entity, window) else INVALID
    m = ASSUMED_ROLE_ARN.match(value)
    if m:
        role = _role_named(*m.groups())
        return (True, None) if role is not None and _visible(role, window) else INVALID
    if allow_unique_id:
        entity = _entity_with_id(value)
        if entity is not None and _visible(entity, window):
            return True, entity.id
    return INVALID


def check_policy_principal(value, window):
    """(valid, unique id KMS stores it as) for one ``AWS`` principal of a key policy."""
    if not isinstance(value, str):
        return INVALID
    if value == "*" or ACCOUNT_ID.match(value) or _is_root(value):
        return True, None
    return _check_identity(value, window, allow_unique_id=True)


def check_grant_principal(value, window):
    """(valid, unique id) for a grant's GranteePrincipal or RetiringPrincipal.

    KMS API Reference, CreateGrant, GranteePrincipal: an account, IAM user or role,
    assumed-role user, or an AWS service principal.
    """
    if not isinstance(value, str):
        return INVALID
    if _is_root(value) or SERVICE_PRINCIPAL.match(value):
        return True, None
    return _check_identity(value, window, allow_unique_id=False)


def _statements(doc):
    statements = doc.get("Statement", []) if isinstance(doc, dict) else []
    if isinstance(statements, dict):
        return [statements]
    return statements if isinstance(statements, list) else []


def principal_slots(doc):
    """(holder, key) for every ``AWS`` principal, in document order: holder[key] is it.

    Looks in ``Principal`` and ``NotPrincipal`` of every statement; ``"*"`` as the whole
    principal has no slot, and ``Service``/``Federated`` are not looked at. Raises
    ValueError for a principal element of no valid shape.
    """
    slots = []
    for statement in _statements(doc):
        if not isinstance(statement, dict):
            continue
        for element in ("Principal", "NotPrincipal"):
            principal = statement.get(element, "*")
            if principal == "*":
                continue
            if not isinstance(principal, dict):
                raise ValueError(f"{element} is neither \"*\" nor an object")
            aws = principal.get("AWS")
            if isinstance(aws, list):
                slots.extend((aws, i) for i in range(len(aws)))
            elif aws is not None:
                slots.append((principal, "AWS"))
    return slots


def analyse_policy(text, window):
    """(valid, records) for a key policy document.

    ``records`` has one (principal as written, unique id or None) per slot of
    ``principal_slots``: what KMS remembers. A text that is not JSON is left to moto:
    (True, []).
    """
    try:
        doc = json.loads(text)
    except (ValueError, TypeError):
        return True, []  # not JSON: left to moto
    try:
        slots = principal_slots(doc)
    except ValueError:
        return False, []
    valid, records = True, []
    for holder, key in slots:
        ok, unique_id = check_policy_principal(holder[key], window)
        valid = valid and ok
        records.append((holder[key], unique_id))
    return valid, records


def display_policy(text, records):
    """The policy as GetKeyPolicy shows it: remembered principals by their current state.

    KMS keeps a role or user principal by its unique id: while the entity exists it is
    shown by its (current) ARN, once it is deleted (or deleted and recreated, which makes
    a new id) by the old unique id (AWS Knowledge Center,
    "kms-policy-error-invalid-principals"). The text is returned as stored unless
    something is substituted.
    """
    try:
        doc = json.loads(text)
        slots = principal_slots(doc)
    except (ValueError, TypeError):
        return text
    changed = False
    for (holder, key), (written, unique_id) in zip(slots, records):
        if unique_id is None or holder[key] != written:
            continue
        entity = _entity_with_id(unique_id)
        shown = entity.arn if entity is not None else unique_id
        if shown != written:
            holder[key] = shown
            changed = True
    return serialise_like(doc, text) if changed else text


def serialise_like(doc, original):
    """JSON text of ``doc`` in the layout of ``original`` (indented or not, compact or not).

    Key order is kept (json keeps dict insertion order).
    """
    if "\n" in original:
        indented = [line for line in original.splitlines()[1:] if line.strip()]
        width = len(indented[0]) - len(indented[0].lstrip()) if indented else 2
        return json.dumps(doc, indent=width or 2, ensure_ascii=False)
    compact = '": ' not in original and ", " not in original
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(doc, separators=separators, ensure_ascii=False)


# --- requests and replies --------------------------------------------------------------


class Request:
    """One AWS request as the strict checks see it; its parameters are parsed on demand."""

    def __init__(self, environ, body, service, action, account):
        self.environ, self.body = environ, body
        self.service, self.action = service, action
        self.account = account or DEFAULT_ACCOUNT_ID  # as moto falls back
        self.region = wire.credential_scope(environ)[1] or "us-east-1"

    @functools.cached_property
    def params(self):
        """The JSON body (awsJson) or the form/query parameters (query protocol)."""
        if wire.is_json_protocol(self.environ):
            return wire.json_params(self.body)
        return wire.query_params(self.environ, self.body)


@dataclass
class Reply:
    """moto's answer, buffered so that it can be inspected and rewritten."""

    status: str
    headers: list
    body: bytes

    @property
    def ok(self):
        return self.status.startswith("2")

    def json(self):
        return json.loads(self.body)


def _call(app, environ):
    """Runs moto's WSGI app and buffers its answer."""
    reply = Reply("500 Internal Server Error", [], b"")
    chunks = []

    def start_response(status, headers, exc_info=None):
        reply.status, reply.headers = status, list(headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    reply.body = b"".join(chunks)
    return reply


def _send(reply, start_response):
    """Sends a (possibly rewritten) reply with a Content-Length that fits its body."""
    drop = ("content-length", "x-amz-crc32")
    headers = [(k, v) for k, v in reply.headers if k.lower() not in drop]
    start_response(reply.status, headers + [("Content-Length", str(len(reply.body)))])
    return [reply.body]


def _send_json(reply, start_response, value):
    reply.body = json.dumps(value).encode()
    return _send(reply, start_response)


# IAM User Guide, "IAM and AWS STS quotas" (character limits; white space is not counted).
MANAGED_POLICY_MAX = 6144
ROLE_INLINE_MAX = 10240


def policy_size(text):
    """A policy document's size as IAM counts it: its characters, white space left out."""
    return sum(1 for c in text if not c.isspace())


def _partition_of(req):
    """The partition of the request's Region (IAM is global within a partition)."""
    region = req.region or ""
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def _reject(req, start_response, code, message, status=400):
    return wire.error({"code": code, "message": message, "status": status}, req.environ, start_response)


# --- the strict layer ------------------------------------------------------------------

# KMS Developer Guide, "Key states of AWS KMS keys": these fail on a Disabled key
# (DisabledException) and on a key pending deletion (KMSInvalidStateException).
# Operation -> the parameters naming the keys it uses; "CiphertextBlob" means the key
# recorded in the ciphertext.
KEY_STATE_CHECKED = {
    "CreateGrant": ("KeyId",),
    "Encrypt": ("KeyId",),
    "Decrypt": ("KeyId|CiphertextBlob",),
    "ReEncrypt": ("DestinationKeyId", "SourceKeyId|CiphertextBlob"),
    "GenerateDataKey": ("KeyId",),
    "GenerateDataKeyWithoutPlaintext": ("KeyId",),
    "GenerateDataKeyPair": ("KeyId",),
    "GenerateDataKeyPairWithoutPlaintext": ("KeyId",),
    "GenerateMac": ("KeyId",),
    "VerifyMac": ("KeyId",),
    "Sign": ("KeyId",),
    "Verify": ("KeyId",),
    "GetPublicKey": ("KeyId",),
}

DEFAULT_ASG_ROLE = "AWSServiceRoleForAutoScaling"
DEFAULT_ASG_ROLE_DESCRIPTION = "Default Service-Linked Role enables access to AWS Services and Resources used or managed by Auto Scaling"

# moto's ciphertext blob starts with the 36-character id of the key (moto.kms.utils).
BLOB_KEY_ID_LEN = 36


@dataclass
class GrantInfo:
    """What KMS knows about a grant beyond moto's model."""

    issuing_account: str  # arn:<partition>:iam::<creating account>:root
    grantee: str  # as written
    grantee_id: str | None  # the unique id the grantee resolved to, if a role or user


@dataclass
class Edits:
    """One-shot key policy edits queued through /_launcher/edits."""

    pending: list = field(default_factory=list)  # [(key ARN, statement)]
    applied: int = 0


class Strict:
    def __init__(self, settings, kms_backend_for):
        self.settings = settings
        # (action, params, account, region) -> the KMS backend moto uses for the request
        # (the launcher's cross-account resolution, gap 2).
        self.kms_backend_for = kms_backend_for
        self.lock = threading.RLock()
        self.policy_records = {}  # key ARN -> records (see analyse_policy)
        self.grants = {}  # grant id -> GrantInfo
        self.markers = {}  # ListGrants marker -> (key ARN, last grant id, next offset)
        self.edits = Edits()
        self.routes = {
            ("kms", "CreateKey"): self._create_key,
            ("kms", "PutKeyPolicy"): self._put_key_policy,
            ("kms", "GetKeyPolicy"): self._get_key_policy,
            ("kms", "CreateGrant"): self._create_grant,
            ("kms", "DescribeKey"): self._describe_key,
            ("kms", "ListGrants"): self._list_grants,
            ("kms", "ListRetirableGrants"): self._list_retirable_grants,
            ("autoscaling", "CreateAutoScalingGroup"): self._asg_service_linked_role,
            ("autoscaling", "UpdateAutoScalingGroup"): self._asg_service_linked_role,
            ("ec2", "DescribeLaunchTemplateVersions"): self._one_template_name,
            ("ec2", "DescribeImages"): self._every_image_found,
            ("iam", "CreatePolicy"): self._managed_policy_size,
            ("iam", "CreatePolicyVersion"): self._managed_policy_size,
            ("iam", "PutRolePolicy"): self._role_policy_size,
        }
        for action in KEY_STATE_CHECKED:
            self.routes.setdefault(("kms", action), self._key_state_only)

    def serve(self, req, app, start_response):
        """WSGI: answers ``req``, through moto unless a strict rule rejects it."""
        handler = self.routes.get((req.service, req.action))
        if handler is None:
            return app(req.environ, start_response)
        if req.service == "ec2":  # reads checked without state of this layer: no lock
            return handler(req, app, start_response)
        with self.lock:  # check-then-act must not interleave (e.g. CreateGrant by Name)
            return handler(req, app, start_response)

    # --- key lookups ---

    def _backend(self, req):
        return self.kms_backend_for(req.action, req.params, req.account, req.region)

    def _key(self, req, param="KeyId"):
        """The key a request names in ``param`` ("A|B": A, else B), or None."""
        backend = self._backend(req)
        for name in param.split("|"):
            value = req.params.get(name)
            if not value:
                continue
            if name == "CiphertextBlob":
                return backend.keys.get(_blob_key_id(value))
            try:
                return backend.keys.get(backend.any_id_to_key_id(value))
            except (AttributeError, TypeError, KeyError):
                return None
        return None

    def _key_state_error(self, req):
        """(code, message) if a key the request uses is in a state that refuses it.

        KMS Developer Guide, "Key states of AWS KMS keys": Disabled -> DisabledException,
        PendingDeletion -> KMSInvalidStateException.
        """
        for param in KEY_STATE_CHECKED.get(req.action, ()):
            key = self._key(req, param)
            if key is None:
                continue  # moto answers NotFoundException
            if key.key_state == "Disabled":
                return "DisabledException", f"{key.arn} is disabled."
            if key.key_state == "PendingDeletion":
                return "KMSInvalidStateException", f"{key.arn} is pending deletion."
        return None

    # --- IAM handlers ---

    def _managed_policy_size(self, req, app, start_response):
        """IAM User Guide, "IAM and AWS STS quotas": a managed policy holds at most 6,144
        characters, white space not counted; IAM answers LimitExceeded (409)."""
        doc = req.params.get("PolicyDocument")
        if self.settings.get("policy_size") and isinstance(doc, str):
            size = policy_size(doc)
            if size > MANAGED_POLICY_MAX:
                return _reject(req, start_response, "LimitExceeded", f"Cannot exceed quota for PolicySize: {MANAGED_POLICY_MAX}", 409)
        return app(req.environ, start_response)

    def _role_policy_size(self, req, app, start_response):
        """IAM User Guide, "IAM and AWS STS quotas": a role's inline policies hold at most
        10,240 characters together, white space not counted (LimitExceeded, 409)."""
        doc, role_name = req.params.get("PolicyDocument"), req.params.get("RoleName", "")
        if self.settings.get("policy_size") and isinstance(doc, str):
            backend = _iam_backend(req.account, _partition_of(req))
            role = None
            if backend is not None:
                role = next((r for r in backend.roles.values() if r.name == role_name), None)
            name = req.params.get("PolicyName", "")
            others = [d for n, d in ((role.policies or {}).items() if role is not None else []) if n != name]
            total = policy_size(doc) + sum(policy_size(d if isinstance(d, str) else json.dumps(d)) for d in others)
            if total > ROLE_INLINE_MAX:
                return _reject(req, start_response, "LimitExceeded", f"Maximum policy size of {ROLE_INLINE_MAX} bytes exceeded for role {role_name}", 409)
        return app(req.environ, start_response)

    # --- KMS handlers ---

    def _key_state_only(self, req, app, start_response):
        """Cryptographic operations: refused on Disabled / PendingDeletion keys (KMS
        Developer Guide, "Key states of AWS KMS keys"; KMS API Reference, Encrypt etc.,
        Errors: DisabledException, KMSInvalidStateException)."""
        if self.settings.get("key_state"):
            error = self._key_state_error(req)
            if error:
                return _reject(req, start_response, *error)
        return app(req.environ, start_response)

    def _analyse(self, policy):
        """(rejected, records) for a policy in a CreateKey/PutKeyPolicy request."""
        valid, records = analyse_policy(policy, self.settings.get("propagation_seconds"))
        return (self.settings.get("principals") and not valid), records

    def _create_key(self, req, app, start_response):
        """KMS API Reference, CreateKey, Policy: principals must exist
        (MalformedPolicyDocumentException)."""
        arn = lambda reply: reply.json()["KeyMetadata"]["Arn"]  # noqa: E731
        return self._store_policy(req, app, start_response, req.params.get("Policy"), arn)

    def _put_key_policy(self, req, app, start_response):
        """KMS API Reference, PutKeyPolicy: MalformedPolicyDocumentException for invalid
        principals; works in every key state (Developer Guide, "Key states")."""
        key = self._key(req)
        if key is None:
            return app(req.environ, start_response)
        return self._store_policy(req, app, start_response, req.params.get("Policy"), lambda _: key.arn)

    def _store_policy(self, req, app, start_response, policy, key_arn):
        """Refuses ``policy`` if a principal in it is invalid; otherwise lets moto store it
        and remembers its principals under ``key_arn(reply)``."""
        if not isinstance(policy, str):
            return app(req.environ, start_response)
        rejected, records = self._analyse(policy)
        if rejected:
            return _reject(req, start_response, "MalformedPolicyDocumentException", INVALID_PRINCIPALS)
        reply = _call(app, req.environ)
        if reply.ok:
            self.policy_records[key_arn(reply)] = records
        return _send(reply, start_response)

    def _get_key_policy(self, req, app, start_response):
        """KMS API Reference, GetKeyPolicy: principals shown as KMS stores them; then any
        queued concurrent edit is applied (after this answer's body is produced)."""
        reply = _call(app, req.environ)
        key = self._key(req)
        if not reply.ok or key is None:
            return _send(reply, start_response)
        records = self.policy_records.get(key.arn)
        if self.settings.get("principals") and records:
            body = reply.json()
            body["Policy"] = display_policy(body["Policy"], records)
            reply.body = json.dumps(body).encode()
        self._apply_edit(key)
        return _send(reply, start_response)

    def _create_grant(self, req, app, start_response):
        """KMS API Reference, CreateGrant: refused on a Disabled / PendingDeletion key,
        InvalidArnException for an invalid principal, idempotent by Name."""
        key = self._key(req)
        if key is None:
            return app(req.environ, start_response)  # moto: NotFoundException
        if req.params.get("DryRun") is True:
            # Always on: moto ignores DryRun and would create the grant.
            return self._dry_run_grant(req, key, start_response)
        if self.settings.get("key_state"):
            error = self._key_state_error(req)
            if error:
                return _reject(req, start_response, *error)
        error = self._grant_principal_error(req)
        if error:
            return _reject(req, start_response, "InvalidArnException", error)
        same = self._same_named_grant(key, req.params) if self.settings.get("grant_names") else None
        if same is not None:
            # KMS API Reference, CreateGrant, Name: a retry with the same name and
            # parameters returns the original GrantId (with a new token).
            return wire.json_response(start_response, {"GrantId": same.id, "GrantToken": secrets.token_hex(32)})
        reply = _call(app, req.environ)
        if reply.ok:
            self._remember_grant(req, key, reply.json()["GrantId"])
        return _send(reply, start_response)

    def _describe_key(self, req, app, start_response):
        """KMS Developer Guide, "Allowing users in other accounts to use a KMS key": a
        caller in another account than the key's may use it (DescribeKey among the
        operations) only when the key policy allows the caller's account or the caller, as
        well as its IAM policy; the IAM half is identity.py's. moto lets any account
        describe any key it names by ARN. The refusal is KMS's AccessDeniedException, in the
        words that say a resource-based policy refused."""
        key = self._key(req)
        if key is None or key.arn.split(":")[4] == req.account:
            return app(req.environ, start_response)
        why = self._resource_refusal(req, key, "kms:DescribeKey")
        if why:
            return _reject(req, start_response, "AccessDeniedException", why)
        return app(req.environ, start_response)

    def _resource_refusal(self, req, key, action):
        """Why the key policy refuses ``action`` to the caller of another account, or
        None: an Allow for its account (root ARN, bare id or "*") or the caller is needed,
        with no condition (one conditioned on ``kms:GrantIsForAWSResource`` true does not
        count: the caller's own call is for no AWS resource); an unconditional Deny wins."""
        partition = key.arn.split(":")[1]
        names = {f"arn:{partition}:iam::{req.account}:root", req.account, "*"}
        caller = identity_caller(req)
        if caller:
            names.add(caller)
        doc = kms_access.parse(self.shown_policy(key))
        denied = kms_access.caller_denied(doc, key.arn, names, action)
        context = kms_access.context_of(req.account, caller or f"arn:{partition}:iam::{req.account}:root")
        if not denied and kms_access.caller_allowed(doc, key.arn, names, action, context):
            return None
        # IAM User Guide, "Troubleshooting access denied error messages": the key policy is
        # a resource-based policy, and KMS says which kind refused.
        why = (
            "with an explicit deny in a resource-based policy"
            if denied
            else f"because no resource-based policy allows the {action} action"
        )
        return f"User: {caller or req.account} is not authorized to perform: {action} on resource: {key.arn} {why}"

    def _dry_run_grant(self, req, key, start_response):
        """KMS Developer Guide, "Testing your permissions": CreateGrant with DryRun answers
        DryRunOperationException when the call would succeed and AccessDeniedException when
        it would not, and creates nothing. Across accounts both the key policy and the
        caller's IAM policy must allow it (KMS Developer Guide, "Allowing users in other
        accounts to use a KMS key"); the IAM half is checked before this (identity.py,
        for registered callers). The key policy half, here: an Allow of kms:CreateGrant for
        the caller's account (root ARN, bare id or "*") or the caller, with no condition or
        only ``kms:GrantIsForAWSResource`` true, which the operator's own call is not; an
        unconditional Deny wins. The status code, 412, is the KMS API Reference's for
        DryRunOperationException (botocore's model leaves it to the protocol's default).
        Authorization comes first, then the request's other checks (key state, grantee),
        as the real call would make them."""
        owner = key.arn.split(":")[4]
        if owner != req.account:
            message = self._resource_refusal(req, key, kms_access.GRANT_ACTION)
            if message:
                return _reject(req, start_response, "AccessDeniedException", message)
        if self.settings.get("key_state"):
            error = self._key_state_error(req)
            if error:
                return _reject(req, start_response, *error)
        error = self._grant_principal_error(req)
        if error:
            return _reject(req, start_response, "InvalidArnException", error)
        return _reject(
            req,
            start_response,
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
            status=412,
        )

    def _list_retirable_grants(self, req, app, start_response):
        """KMS API Reference, ListRetirableGrants: the grants in the caller's account and
        Region whose retiring principal is the one given, on keys of any account ("This can
        include grants on KMS keys owned by other Amazon Web Services accounts"); moto
        looks only at the caller's own keys. KeyId is the key's ARN, as in the reference's
        example."""
        principal = req.params.get("RetiringPrincipal")
        limit = req.params.get("Limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            return _reject(req, start_response, "ValidationException", f"Value '{limit}' at 'limit' failed to satisfy constraint")
        entries = []
        for per_account in list(dict.values(kms_backends)):
            backend = dict.get(per_account, req.region)
            if backend is None:
                continue
            for key in list(backend.keys.values()):
                for grant in list(key.grants.values()):
                    if grant.retiring_principal == principal:
                        entry = grant.to_json()
                        entry["KeyId"] = key.arn
                        self._present_grant(entry, True)
                        entries.append(entry)
        marker = req.params.get("Marker")
        start = int(marker) if isinstance(marker, str) and marker.isdigit() else 0
        page = entries[start : start + limit]
        body = {"Grants": page, "Truncated": start + limit < len(entries)}
        if body["Truncated"]:
            body["NextMarker"] = str(start + limit)
        return wire.json_response(start_response, body)

    def _grant_principal_error(self, req):
        """KMS API Reference, CreateGrant, Errors, InvalidArnException: the grantee and
        retiring principal must be valid, existing (and propagated) principals."""
        if not self.settings.get("principals"):
            return None
        window = self.settings.get("propagation_seconds")
        for name in ("GranteePrincipal", "RetiringPrincipal"):
            value = req.params.get(name)
            if value is not None and not check_grant_principal(value, window)[0]:
                return f"ARN does not refer to a valid principal: {value}"
        return None

    @staticmethod
    def _same_named_grant(key, params):
        """The grant on ``key`` with the request's Name and the same grantee, set of
        operations, constraints and retiring principal (KMS API Reference, CreateGrant)."""
        name = params.get("Name")
        if not name:
            return None
        for grant in list(key.grants.values()):
            if (
                grant.name == name
                and grant.grantee_principal == params.get("GranteePrincipal")
                and set(grant.operations or []) == set(params.get("Operations") or [])
                and (grant.constraints or {}) == (params.get("Constraints") or {})
                and (grant.retiring_principal or None) == (params.get("RetiringPrincipal") or None)
            ):
                return grant
        return None

    def _remember_grant(self, req, key, grant_id):
        grantee = req.params.get("GranteePrincipal")
        _, grantee_id = check_grant_principal(grantee, 0.0)
        partition = key.arn.split(":")[1]
        self.grants[grant_id] = GrantInfo(f"arn:{partition}:iam::{req.account}:root", grantee, grantee_id)

    def _list_grants(self, req, app, start_response):
        key = self._key(req)
        if key is None:
            return app(req.environ, start_response)  # moto: NotFoundException
        paging = self.settings.get("grant_paging")
        limit = req.params.get("Limit", 50)
        marker = req.params.get("Marker")
        if paging:
            error = self._paging_error(key, limit, marker)
            if error:
                return _reject(req, start_response, *error)
        reply = _call(app, req.environ)
        if not reply.ok:
            return _send(reply, start_response)
        body = reply.json()
        for entry in body.get("Grants", []):
            self._present_grant(entry, paging)
        if paging:
            body = self._page(key, body, limit, marker)
        return _send_json(reply, start_response, body)

    def _paging_error(self, key, limit, marker):
        """KMS API Reference, ListGrants: Limit is 1-100 (ValidationException); a Marker
        must be a NextMarker from an earlier answer (InvalidMarkerException)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            bound = "greater than or equal to 1" if isinstance(limit, int) and limit < 1 else "less than or equal to 100"
            return (
                "ValidationException",
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
                f"Member must have value {bound}",
            )
        if marker is not None and self.markers.get(marker, (None,))[0] != key.arn:
            return (
                "InvalidMarkerException",
                "The request was rejected because the marker that specifies where pagination should next "
                "begin is not valid.",
            )
        return None

    def _present_grant(self, entry, paging):
        """One GrantListEntry as KMS shows it (KMS API Reference, GrantListEntry)."""
        info = self.grants.get(entry.get("GrantId"))
        if info is None:
            return
        if paging:
            entry["IssuingAccount"] = info.issuing_account
        if "GranteePrincipal" in entry:
            entry["GranteePrincipal"] = self.shown_grantee(entry["GrantId"], entry["GranteePrincipal"])

    def shown_grantee(self, grant_id, grantee):
        """A grant's grantee as KMS shows (and evaluates) it: a deleted (or deleted and
        recreated) grantee shows as its old unique id (terraform-provider-aws, kms grant
        reader: "a non-ARN principal")."""
        info = self.grants.get(grant_id)
        if info is None or not self.settings.get("principals") or grantee != info.grantee:
            return grantee
        orphaned = info.grantee_id is not None and _entity_with_id(info.grantee_id) is None
        return info.grantee_id if orphaned else grantee

    def shown_policy(self, key):
        """A key's policy as KMS shows (and evaluates) it: see ``display_policy``."""
        records = self.policy_records.get(key.arn)
        if self.settings.get("principals") and records:
            return display_policy(key.policy, records)
        return key.policy

    def _page(self, key, body, limit, marker):
        """At most ``limit`` grants in creation order, with Truncated/NextMarker
        (KMS API Reference, ListGrants, Limit / Marker / NextMarker / Truncated)."""
        grants = body.get("Grants", [])
        start = 0
        if marker is not None:
            _, last_id, offset = self.markers[marker]
            ids = [g.get("GrantId") for g in grants]
            start = ids.index(last_id) + 1 if last_id in ids else min(offset, len(grants))
        page = grants[start : start + limit]
        body = {k: v for k, v in body.items() if k != "GrantCount"}  # not in the real API
        body["Grants"] = page
        body.pop("NextMarker", None)
        body["Truncated"] = start + limit < len(grants)
        if body["Truncated"]:
            next_marker = secrets.token_urlsafe(24)
            self.markers[next_marker] = (key.arn, page[-1].get("GrantId"), start + limit)
            body["NextMarker"] = next_marker
        return body

    # --- Auto Scaling ---

    def _asg_service_linked_role(self, req, app, start_response):
        """EC2 Auto Scaling API Reference, CreateAutoScalingGroup / UpdateAutoScalingGroup,
        ServiceLinkedRoleARN: the role must exist in the group's account (and, per
        AWS-FACTS, be propagated), else ValidationError; the group is left unchanged.

        EC2 Auto Scaling User Guide, "Service-linked roles": Auto Scaling creates
        AWSServiceRoleForAutoScaling the first time a group is created without another
        service-linked role, so a group created without one has the default role.
        """
        arn = req.params.get("ServiceLinkedRoleARN")
        if not self.settings.get("asg_roles"):
            return app(req.environ, start_response)
        if arn and not self._role_visible(arn, req.account):
            return _reject(req, start_response, "ValidationError", "ARN specified for Service-Linked Role does not exist.")
        if not arn and req.action == "CreateAutoScalingGroup":
            partition = "aws-cn" if req.region.startswith("cn-") else "aws-us-gov" if req.region.startswith("us-gov-") else "aws"
            if _role_named(partition, req.account, DEFAULT_ASG_ROLE) is None:
                backend = iam_backends[req.account][partition]
                backend.create_service_linked_role("autoscaling.amazonaws.com", DEFAULT_ASG_ROLE_DESCRIPTION, "")
        return app(req.environ, start_response)

    def _role_visible(self, arn, account):
        m = ENTITY_ARN.match(arn)
        in_account = bool(m) and m.group(2) == account
        return in_account and visible_role(arn, self.settings.get("propagation_seconds")) is not None

    # --- EC2 reads ---

    def _one_template_name(self, req, app, start_response):
        """EC2 API Reference, DescribeLaunchTemplateVersions, LaunchTemplateId and
        LaunchTemplateName: "you must specify either the launch template ID or the launch
        template name, but not both". The reference names no error code for it; this
        answers InvalidParameterCombination, EC2's common error for "an incorrect
        combination of parameters" (EC2 API Reference, "Common client error codes").
        moto takes both and uses the name."""
        both = req.params.get("LaunchTemplateId") and req.params.get("LaunchTemplateName")
        if self.settings.get("ec2_reads") and both:
            return _reject(
                req,
                start_response,
                "InvalidParameterCombination",
                "The parameters LaunchTemplateId and LaunchTemplateName cannot be used together.",
            )
        return app(req.environ, start_response)

    def _every_image_found(self, req, app, start_response):
        """EC2 API Reference, DescribeImages: an image id that does not exist fails the
        whole request with InvalidAMIID.NotFound ("The image id '[ami-...]' does not
        exist"), whatever the other ids are ("Error codes": InvalidAMIID.NotFound, "The
        specified AMI doesn't exist"; also for an image not shared with the caller). A
        recently deregistered image is left out of the answer ("Recently deregistered
        images appear in the returned results for a short interval and then return empty
        results"). moto fails only when none of the ids exists. A malformed id fails the
        request in moto already (InvalidAMIID.Malformed)."""
        if not self.settings.get("ec2_reads"):
            return app(req.environ, start_response)
        ids = [v for k, v in sorted(req.params.items()) if re.fullmatch(r"ImageId\.\d+", k)]
        if not ids or any(not i.startswith("ami-") for i in ids):
            return app(req.environ, start_response)
        backend = ec2_backends[req.account][req.region]  # moto makes it for the request anyway
        missing = [i for i in ids if i not in backend.deleted_amis and gaps.visible_image(backend, i) is None]
        if missing:
            listed = ", ".join(missing)
            verb = "do not exist" if len(missing) > 1 else "does not exist"
            noun = "ids" if len(missing) > 1 else "id"
            return _reject(req, start_response, "InvalidAMIID.NotFound", f"The image {noun} '[{listed}]' {verb}")
        return app(req.environ, start_response)

    # --- concurrent edits ---

    def _apply_edit(self, key):
        """Applies the first queued edit for ``key``: appends its statement to the stored
        policy, remembering its principals (without validation)."""
        index = next((i for i, (arn, _) in enumerate(self.edits.pending) if arn == key.arn), None)
        if index is None:
            return
        _, statement = self.edits.pending.pop(index)
        try:
            doc = json.loads(key.policy)
        except (ValueError, TypeError):
            doc = {"Version": "2012-10-17", "Statement": []}
        base = self.policy_records.get(key.arn)
        if base is None:
            _, base = analyse_policy(key.policy, 0.0)
        statements = doc.get("Statement", [])
        doc["Statement"] = ([statements] if isinstance(statements, dict) else list(statements)) + [statement]
        _, added = analyse_policy(json.dumps({"Statement": [statement]}), 0.0)
        key.policy = serialise_like(doc, key.policy)
        self.policy_records[key.arn] = base + added
        self.edits.applied += 1

    # --- control: /_launcher/strict and /_launcher/edits ---

    def control(self, path, method, body, start_response):
        """WSGI: the strict test hooks; None when ``path`` is not one of them."""
        if path == "/_launcher/strict" and method == "GET":
            return wire.json_response(start_response, self.settings.snapshot())
        if path == "/_launcher/strict" and method == "POST":
            try:
                return wire.json_response(start_response, self.settings.update(json.loads(body or b"{}")))
            except ValueError as e:
                return wire.json_response(start_response, {"error": str(e)}, 400)
        if path == "/_launcher/edits" and method == "GET":
            with self.lock:
                return wire.json_response(start_response, self._edit_counts())
        if path == "/_launcher/edits" and method == "POST":
            return self._queue_edit(body, start_response)
        return None

    def _queue_edit(self, body, start_response):
        try:
            edit = json.loads(body)
            key, statement = edit["key"], edit["statement"]
            if not isinstance(key, str) or not isinstance(statement, dict):
                raise ValueError("key must be a string and statement an object")
        except (ValueError, KeyError, TypeError) as e:
            return wire.json_response(start_response, {"error": f"bad edit: {e!r}"}, 400)
        with self.lock:
            self.edits.pending.append((key, statement))
            return wire.json_response(start_response, self._edit_counts())

    def _edit_counts(self):
        return {"pending": len(self.edits.pending), "applied": self.edits.applied}


def _blob_key_id(blob):
    try:
        return base64.b64decode(blob)[:BLOB_KEY_ID_LEN].decode("utf-8")
    except (ValueError, TypeError):
        return None


def install(settings, kms_backend_for):
    """Patches moto's IAM backend (creation times) and returns the strict layer."""
    install_iam_clock()
    return Strict(settings, kms_backend_for)


def identity_caller(req):
    """The caller's ARN, from the request's access key (identity.py's lookup)."""
    import identity

    access_key = wire.credential_scope(req.environ)[0]
    arn = identity.caller_of(access_key, req.account)
    return None if arn.endswith(":user/moto") else arn
