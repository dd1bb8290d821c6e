"""More gaps between moto 5.2.5 and AWS, closed by patches applied at import time (as in the
launcher, site-packages is never edited). The operator's ``discover`` command and its
launch-failure reporting read these; each patch names the AWS documentation it follows.

3. KMS: keys behind the reserved ``alias/aws/...`` aliases are AWS managed keys.
4. EC2: GetEbsDefaultKmsKeyId and ResetEbsDefaultKmsKeyId exist.
5. EC2: volumes and snapshots show their KMS key as an ARN; snapshots show one at all.
6. EC2: RegisterImage and CreateImage keep the BlockDeviceMappings they are given, and an
   image's EBS mapping shows its snapshot's encryption.
7. EC2: CreateLaunchTemplateVersion honours SourceVersion.
8. Auto Scaling: UpdateAutoScalingGroup keeps the group's MixedInstancesPolicy unless it
   is given another launch source, and a new launch source replaces the old one.
9. EC2: DescribeLaunchTemplateVersions honours ResolveAlias for images named by a Systems
   Manager parameter (``resolve:ssm:...``).
10. EC2: DescribeImages by id shows another account's image that is public or shared with
   the caller.
11. EC2: CopyImage copies an image shared with the caller, gives the copy the source's
   mappings with snapshots encrypted with the KmsKeyId asked for, needs the source keys'
   owners to let the caller's account use them, keeps its ClientToken, and shows the copy
   pending until it has been described once.
12. EC2: DescribeLaunchTemplateVersions honours the ``image-id`` filter.
13. EC2: DescribeSnapshots by id shows another account's snapshot that it shared with the
   caller (create volume permission).
14. EC2: RegisterImage keeps its billing products, DescribeImages shows an image's billing
   code (UsageOperation, PlatformDetails), and CopyImage refuses another account's image
   that has one.

``resolve_key``, ``ebs_default_key``, ``resolve_image_id`` and ``visible_image`` are shared
with the launch model (launches.py) and the strict layer (strict.py).
"""

import contextvars
import copy
import re

import kms_access

from moto.autoscaling.models import FakeAutoScalingGroup
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.responses.settings import Settings as Ec2SettingsResponse
from moto.kms.models import KmsBackend, kms_backends
from moto.ssm.models import ssm_backends

# arn:PARTITION:kms:REGION:ACCOUNT:key/ID or :alias/NAME
KMS_ARN = re.compile(r"^arn:[\w-]+:kms:([\w-]+):(\d{12}):(key|alias)/.+$")
AWS_ALIAS_PREFIX = "alias/aws/"
EBS_ALIAS = "alias/aws/ebs"


def resolve_key(account, region, key_id):
    """The moto key that ``key_id`` (key id, key ARN, alias name or alias ARN) names, as
    seen from ``account`` in ``region``; None when it names no key.

    An ARN names its own account and region. A reserved ``alias/aws/...`` alias creates
    its AWS managed key on first use, as moto (and AWS) do.
    """
    if not isinstance(key_id, str) or not key_id:
        return None
    m = KMS_ARN.match(key_id)
    if m:
        region, account = m.group(1), m.group(2)
    backend = kms_backends[account][region]
    try:
        return backend.keys.get(backend.any_id_to_key_id(key_id))
    except (AttributeError, KeyError, TypeError):
        return None


def key_arn(account, region, key_id):
    """The ARN of the key ``key_id`` names; ``key_id`` itself when it names none."""
    key = resolve_key(account, region, key_id)
    return key.arn if key is not None else key_id


# --- 3. AWS managed keys ----------------------------------------------------------------
# KMS Developer Guide, "AWS managed keys": the keys AWS services create in an account, with
# aliases "alias/aws/<service>", report KeyManager "AWS". moto creates them (lazily, when
# such an alias is first named, or for EBS encryption) as customer managed keys.


def _marking_aws_managed(create_alias):
    def wrapper(self, target_key_id, alias_name):
        alias = create_alias(self, target_key_id, alias_name)
        if alias_name.startswith(AWS_ALIAS_PREFIX):
            self.keys[alias.target_key_id].key_manager = "AWS"
        return alias

    return wrapper


# --- 4. EBS encryption by default: the default key ----------------------------------------
# EC2 API Reference, GetEbsDefaultKmsKeyId: "the default KMS key for EBS encryption by
# default"; the AWS CLI example answers "alias/aws/ebs" while none was chosen.
# ModifyEbsDefaultKmsKeyId answers (and stores) the key's ARN; a key of another account is
# taken as given, since EC2 checks the key asynchronously (same reference, KmsKeyId).
# ResetEbsDefaultKmsKeyId goes back to the AWS managed key and answers its ARN.


def ebs_default_key(ec2_backend):
    """The account's EBS default key in ``ec2_backend``'s region, as GetEbsDefaultKmsKeyId
    answers it."""
    return getattr(ec2_backend, "chosen_default_kms_key_id", None) or EBS_ALIAS


def _remembering_default_key(modify):
    def wrapper(self, kms_key_id):
        m = KMS_ARN.match(kms_key_id or "")
        if m and m.group(2) != self.account_id:
            self.default_kms_key_id = kms_key_id
            arn = kms_key_id
        else:
            arn = modify(self, kms_key_id)
        self.chosen_default_kms_key_id = arn
        return arn

    return wrapper


def _get_ebs_default_kms_key_id(self):
    self.error_on_dryrun()
    return ActionResult({"KmsKeyId": ebs_default_key(self.ec2_backend)})


def _reset_ebs_default_kms_key_id(self):
    self.error_on_dryrun()
    backend = self.ec2_backend
    backend.chosen_default_kms_key_id = None
    backend.default_kms_key_id = ""  # moto's own: encrypted volumes fall back to aws/ebs
    return ActionResult({"KmsKeyId": key_arn(backend.account_id, backend.region_name, EBS_ALIAS)})


# --- 5. volume and snapshot keys ----------------------------------------------------------
# EC2 API Reference, Volume and Snapshot, KmsKeyId: "The Amazon Resource Name (ARN) of the
# KMS key that was used to protect the volume encryption key"; a snapshot is encrypted
# with its volume's key (Amazon EBS User Guide, "How EBS encryption works").


def _volume_key_as_arn(create_volume):
    def wrapper(self, *args, **kwargs):
        volume = create_volume(self, *args, **kwargs)
        if volume.kms_key_id:
            volume.kms_key_id = key_arn(self.account_id, self.region_name, volume.kms_key_id)
        return volume

    return wrapper


def _snapshot_keeps_volume_key(create_snapshot):
    def wrapper(self, *args, **kwargs):
        snapshot = create_snapshot(self, *args, **kwargs)
        if snapshot.encrypted and snapshot.kms_key_id is None:
            snapshot.kms_key_id = snapshot.volume.kms_key_id
        return snapshot

    return wrapper


# --- 6. image block device mappings ---------------------------------------------------------
# EC2 API Reference, RegisterImage / CreateImage, BlockDeviceMapping: the image has the
# mappings given (CreateImage: the instance's volumes, with the given ones added or
# replacing them by device name), each showing whether its snapshot is Encrypted. The
# snapshot's key is not shown on an image: EbsBlockDevice's KmsKeyId is "only supported on
# BlockDeviceMapping objects called by RunInstances, RequestSpotFleet, and
# RequestSpotInstances", so a reader takes the key from DescribeSnapshots. moto ignores the
# parameter and shows one made-up root volume.

_moto_image_mappings = Ami.block_device_mappings


def _with_snapshot_encryption(ec2_backend, mapping):
    mapping = copy.deepcopy(mapping)
    ebs = mapping.get("Ebs")
    snapshot = ec2_backend.snapshots.get(ebs.get("SnapshotId") or "") if isinstance(ebs, dict) else None
    if snapshot is None:
        return mapping
    ebs.setdefault("VolumeSize", snapshot.volume.size)
    ebs["Encrypted"] = bool(snapshot.encrypted)
    ebs.pop("KmsKeyId", None)
    return mapping


def _image_mappings(self):
    given = getattr(self, "given_block_device_mappings", None)
    if given is None:
        return _moto_image_mappings.fget(self)
    base = [] if self.registered else _moto_image_mappings.fget(self)
    by_device = {m["DeviceName"]: m for m in base}
    for mapping in given:
        by_device[mapping.get("DeviceName")] = _with_snapshot_encryption(self.ec2_backend, mapping)
    return list(by_device.values())


def _keeping_block_device_mappings(handler, registered):
    def wrapper(self):
        result = handler(self)
        mappings = self._get_param("BlockDeviceMappings")
        if mappings:
            image = self.ec2_backend.amis[result.result["ImageId"]]
            image.given_block_device_mappings = mappings
            image.registered = registered
            root = self._get_param("RootDeviceName")
            if registered and root:
                image.root_device_name, image.root_device_type = root, "ebs"
        return result

    return wrapper


# --- 7. launch template versions from a source version -------------------------------------
# EC2 API Reference, CreateLaunchTemplateVersion, SourceVersion: "The new version inherits
# the same launch parameters as the source version, except for parameters that you
# specify in LaunchTemplateData." moto ignores it.

_source_version = contextvars.ContextVar("source_version", default=None)


def _with_source_version(handler):
    def wrapper(self):
        token = _source_version.set(self._get_param("SourceVersion"))
        try:
            return handler(self)
        finally:
            _source_version.reset(token)

    return wrapper


def _inheriting_source(create_version):
    def wrapper(self, data, description):
        source = _source_version.get()
        if source is not None:
            merged = copy.deepcopy(self.get_version(source).data)
            merged.update({k: v for k, v in data.items() if v is not None})
            data = merged
        return create_version(self, data, description)

    return wrapper


# --- 8. a group's launch source on update ---------------------------------------------------
# EC2 Auto Scaling API Reference, UpdateAutoScalingGroup: "If you specify
# LaunchTemplate, MixedInstancesPolicy, or LaunchConfigurationName in your update request,
# the group uses the new launch source"; parameters not given are unchanged. moto drops
# MixedInstancesPolicy on every update that does not repeat it.


def _respecified(policy):
    """A copy of a stored mixed instances policy that moto can read back as a request
    (its LaunchTemplateSpecification by id only)."""
    policy = copy.deepcopy(policy)
    spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    policy["LaunchTemplate"]["LaunchTemplateSpecification"] = {
        k: v for k, v in spec.items() if k in ("LaunchTemplateId", "Version") and v
    }
    return policy


def _keeping_launch_source(update):
    def wrapper(self, *args, **kwargs):
        policy = kwargs.get("mixed_instances_policy")
        template = kwargs.get("launch_template")
        config = kwargs.get("launch_config_name")
        if not (policy or template or config) and self.mixed_instances_policy:
            kwargs["mixed_instances_policy"] = _respecified(self.mixed_instances_policy)
        update(self, *args, **kwargs)
        if config:
            self.ec2_launch_template = None
        if policy or template:
            self.launch_config = None
            self.launch_configuration_name = None

    return wrapper


# --- 9. images named by a Systems Manager parameter --------------------------------------
# EC2 User Guide, "Use a Systems Manager parameter instead of an AMI ID": a launch template's
# ImageId may be "resolve:ssm:<parameter>" (optionally ":<version>" or ":<label>"), resolved
# to the AMI id the parameter holds at launch. EC2 API Reference,
# DescribeLaunchTemplateVersions, ResolveAlias: "If true, and if a Systems Manager parameter
# is specified for ImageId, the AMI ID is displayed in the response for imageId. If false,
# and if a Systems Manager parameter is specified for ImageId, the parameter is displayed in
# the response for imageId" (default false). moto ignores ResolveAlias and answers the
# parameter: right when it is false or absent, so only a true one is patched.

SSM_IMAGE = "resolve:ssm:"


def resolve_image_id(account, region, image_id):
    """The AMI id a ``resolve:ssm:`` image id names now (``image_id`` itself when it is
    not one, or when the parameter does not exist)."""
    if not isinstance(image_id, str) or not image_id.startswith(SSM_IMAGE):
        return image_id
    backend = dict.get(dict.get(ssm_backends, account) or {}, region)
    if backend is None:
        return image_id
    try:
        parameter = backend.get_parameter(image_id[len(SSM_IMAGE) :])
    except Exception:  # noqa: BLE001 - moto's "no such version or label": not resolved
        return image_id
    return parameter.value if parameter is not None else image_id


def _resolving_alias(handler):
    def wrapper(self):
        result = handler(self)
        if str(self._get_param("ResolveAlias")).lower() != "true":
            return result
        for version in result.result.get("LaunchTemplateVersions", []):
            data = version.get("LaunchTemplateData") or {}
            resolved = resolve_image_id(self.current_account, self.region, data.get("ImageId"))
            if resolved != data.get("ImageId"):
                version["LaunchTemplateData"] = dict(data, ImageId=resolved)  # the stored version stays
        return result

    return wrapper


# --- 10. shared images ----------------------------------------------------------------------
# EC2 User Guide, "Share an AMI with specific AWS accounts" and "Make your AMI public": an
# image its owner made public, or gave the caller's account a launch permission for, is
# described to that account (DescribeImages by id). moto keeps images per account.


def visible_image(ec2_backend, image_id):
    """The image ``image_id`` names as ``ec2_backend``'s account sees it: its own, or
    another account's in the same region that is public or shared with it; else None."""
    own = ec2_backend.amis.get(image_id)
    if own is not None:
        return own
    for per_account in list(dict.values(ec2_backends)):
        backend = dict.get(per_account, ec2_backend.region_name)
        image = backend.amis.get(image_id) if backend is not None else None
        if image is None or backend.account_id == ec2_backend.account_id:
            continue
        shared = any(p.get("UserId") == ec2_backend.account_id for p in image.launch_permissions)
        if image.is_public or shared:
            return image
    return None


def _describing_shared_images(describe):
    def wrapper(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        shared = {}
        for image_id in ami_ids or []:
            image = visible_image(self, image_id) if image_id not in self.amis else None
            if image is not None:
                shared[image_id] = image
        if not shared:
            return describe(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
        rest = [i for i in ami_ids if i not in shared]
        images = describe(self, ami_ids=rest, filters=filters, exec_users=exec_users, owners=owners) if rest else []
        return images + list(shared.values())

    return wrapper


# --- 11. copying an image ---------------------------------------------------------------------
# EC2 API Reference, CopyImage: SourceImageId may name an image another account shared with
# the caller; "Encrypted: Specifies whether the destination snapshots of the copied image
# should be encrypted", with "KmsKeyId: The identifier of the symmetric KMS key to use when
# creating encrypted volumes"; ClientToken makes the request idempotent. EC2 User Guide,
# "Copy an Amazon EC2 AMI": to copy an image whose snapshots are encrypted, the caller needs
# to use the source snapshots' keys, which for another account's key its owner's key policy
# must allow (the copy is made with kms:Decrypt, kms:ReEncrypt*, kms:DescribeKey and
# kms:CreateGrant); the copy is "pending" until its snapshots are copied. EC2 API
# Reference, Image, StateReason: a copy that cannot be made ends "failed", with the reason.
# moto copies only the caller's own images, gives the copy one made-up unencrypted root
# volume, ignores Encrypted, KmsKeyId and ClientToken, and shows the copy available at once.

COPY_ACTIONS = {"kms:Decrypt", "kms:ReEncryptFrom", "kms:DescribeKey", "kms:CreateGrant"}
_copies_by_token = {}


def _source_key_refusal(ec2_backend, snapshot):
    """Why the caller's account may not use ``snapshot``'s key for a copy, or None."""
    if not snapshot.encrypted or not snapshot.kms_key_id:
        return None
    key = resolve_key(ec2_backend.account_id, ec2_backend.region_name, snapshot.kms_key_id)
    if key is None:
        return f"the key {snapshot.kms_key_id} of snapshot {snapshot.id} does not exist"
    if key.account_id == ec2_backend.account_id:
        return None
    doc = kms_access.parse(key.policy)
    root = f"arn:aws:iam::{ec2_backend.account_id}:root"
    names = kms_access.account_names(root)
    missing = COPY_ACTIONS - kms_access.allowed(doc, key.arn, names, kms_access.context_of(ec2_backend.account_id, root))
    if key.key_state != "Enabled" or missing:
        return (
            f"Client.InvalidKMSKey.InvalidState: account {ec2_backend.account_id} may not use the key "
            f"{key.arn} of snapshot {snapshot.id} ({', '.join(sorted(missing)) or key.key_state})"
        )
    return None


def _copy_image(self):
    backend = self.ec2_backend
    token = self._get_param("ClientToken")
    if token and (backend.account_id, token) in _copies_by_token:
        return ActionResult({"ImageId": _copies_by_token[(backend.account_id, token)]})
    source_id = self._get_param("SourceImageId")
    source_backend = ec2_backends[backend.account_id][self._get_param("SourceRegion") or backend.region_name]
    source = visible_image(source_backend, source_id)
    if source is None:
        from moto.ec2.exceptions import InvalidAMIIdError

        raise InvalidAMIIdError(source_id)
    owner_backend = ec2_backends[source.owner_id][source_backend.region_name]
    encrypted = str(self._get_param("Encrypted")).lower() == "true"
    key_id = self._get_param("KmsKeyId")
    # moto's copy finds the source through DescribeImages, which shows shared images (10).
    image = backend.copy_image(
        source.id, source_backend.region_name, self._get_param("Name"), self._get_param("Description")
    )
    mappings, refusals, copied = [], [], []
    for m in source.block_device_mappings:
        ebs = m.get("Ebs") or {}
        snapshot = owner_backend.snapshots.get(ebs.get("SnapshotId") or "")
        if snapshot is None:
            mappings.append(copy.deepcopy(m))
            continue
        refusal = _source_key_refusal(backend, snapshot)
        if refusal:
            refusals.append(refusal)
        volume = backend.create_volume(
            size=snapshot.volume.size,
            zone_name=backend.region_name + "a",
            encrypted=encrypted or bool(snapshot.encrypted),
            kms_key_id=key_id if encrypted else None,
        )
        new = backend.create_snapshot(volume.id, f"Copied for {image.id} from {snapshot.id}", backend.account_id)
        copied.append(new)
        backend.delete_volume(volume.id)
        mapping = copy.deepcopy(m)
        mapping["Ebs"] = {k: v for k, v in ebs.items() if k not in ("SnapshotId", "Encrypted", "KmsKeyId")}
        mapping["Ebs"]["SnapshotId"] = new.id
        mappings.append(mapping)
    image.given_block_device_mappings = mappings
    image.registered = True
    image.root_device_name, image.root_device_type = source.root_device_name, "ebs"
    if refusals:
        image.state = "failed"
        image.state_reason = {"Code": "Client.InvalidKMSKey.InvalidState", "Message": "; ".join(refusals)}
    else:
        image.state = "pending"
        image.pending_until_described = True
        # EC2 API Reference, Snapshot, Progress: a copy's snapshots are on their way.
        for snapshot in copied:
            snapshot.copy_progress = "45%"
        image.copied_snapshots = copied
    # EC2 API Reference, CopyImage, TagSpecifications: "To tag the new AMI, the value for
    # ResourceType must be image. To tag the new snapshots, the value for ResourceType must
    # be snapshot. The same tag is applied to all the new snapshots."
    for spec in self._get_param("TagSpecifications", []) or []:
        tags = {t["Key"]: t.get("Value", "") for t in spec.get("Tags") or spec.get("Tag") or []}
        ids = {"image": [image.id], "snapshot": [s.id for s in copied]}.get(spec.get("ResourceType"), [])
        if tags and ids:
            backend.create_tags(ids, tags)
    if token:
        _copies_by_token[(backend.account_id, token)] = image.id
    return ActionResult({"ImageId": image.id})


def _finishing_copies(describe):
    """A copy shown pending once is available at the next DescribeImages. A copy takes
    minutes on AWS; here one listing of it (by name or owner) stands for that time. A
    lookup by image id alone (whether an image answered exists) is not a listing: it
    neither shows a copy pending for the first time nor finishes one."""

    def wrapper(self, *args, **kwargs):
        if kwargs.get("ami_ids") and not kwargs.get("filters") and not kwargs.get("owners"):
            return describe(self, *args, **kwargs)
        for image in list(self.amis.values()):
            if getattr(image, "shown_pending", False):
                image.state, image.shown_pending = "available", False
                for snapshot in getattr(image, "copied_snapshots", []):
                    snapshot.copy_progress = None
        images = describe(self, *args, **kwargs)
        for image in images:
            if getattr(image, "pending_until_described", False):
                image.pending_until_described, image.shown_pending = False, True
        return images

    return wrapper


def _snapshot_progress(self):
    return getattr(self, "copy_progress", None) or "100%"


# --- 12. versions by image --------------------------------------------------------------
# EC2 API Reference, DescribeLaunchTemplateVersions, Filters: "image-id - The ID of the AMI."
# moto reads no Filters here ("not yet implemented") and answers every version, at most
# MaxResults of them, first to last. The filter is applied before MaxResults, as EC2 pages
# what matches.

_VERSION_IMAGES = contextvars.ContextVar("version_images", default=None)


def _filtering_by_image(handler):
    def wrapper(self):
        token = _VERSION_IMAGES.set(self._filters_from_querystring().get("image-id"))
        try:
            return handler(self)
        finally:
            _VERSION_IMAGES.reset(token)

    return wrapper


def _versions_with_images(method):
    def wrapper(self, template_name, template_id, versions, min_version, max_version, max_results):
        images = _VERSION_IMAGES.get()
        if not images:
            return method(self, template_name, template_id, versions, min_version, max_version, max_results)
        every = method(
            self, template_name, template_id, versions, min_version, max_version, max_results if min_version else None
        )
        found = [(t, v) for t, v in every if (v.data or {}).get("ImageId") in images]
        return found[:max_results]

    return wrapper


# --- 13. snapshots shared with the caller ---------------------------------------------------
# EC2 API Reference, DescribeSnapshots: "The create volume permissions fall into the
# following categories: public snapshots [...]; explicit: Owned by other Amazon Web
# Services accounts for which you have explicit create volume permissions; implicit:
# [...] owned by you", and each may be asked for by id. EBS User Guide, "Share an Amazon
# EBS snapshot": ModifySnapshotAttribute createVolumePermission shares it. moto keeps
# snapshots per account and shows only the caller's own.


def _describing_shared_snapshots(describe):
    def wrapper(self, snapshot_ids=None, filters=None):
        if not snapshot_ids:
            return describe(self, snapshot_ids=snapshot_ids, filters=filters)
        shared = {}
        for per_account in list(dict.values(ec2_backends)):
            backend = dict.get(per_account, self.region_name)
            if backend is None or backend is self:
                continue
            for sid in snapshot_ids:
                snap = backend.snapshots.get(sid)
                if snap is not None and (
                    self.account_id in snap.create_volume_permission_userids
                    or "all" in snap.create_volume_permission_groups
                ):
                    shared[sid] = snap
        rest = [sid for sid in snapshot_ids if sid not in shared]
        own = describe(self, snapshot_ids=rest, filters=filters) if rest else []
        return own + list(shared.values())

    return wrapper


# --- 14. billing codes ----------------------------------------------------------------------
# EC2 API Reference, RegisterImage, BillingProducts: "The billing product codes. Your
# account must be authorized to specify billing product codes." EC2 User Guide,
# "Understand AMI billing information": an image's billing code is shown as UsageOperation
# with its PlatformDetails, "RunInstances" for Linux/UNIX with none, "RunInstances:0002"
# for Windows, "RunInstances:0010" for Red Hat Enterprise Linux. EC2 User Guide, "Copy an
# Amazon EC2 AMI": "You can't copy an AMI with an associated billingProduct code that was
# shared with you from another account. This includes Windows AMIs and AMIs from the AWS
# Marketplace." The reference names no error code for that refusal; this answers
# InvalidRequest, with the guide's words. moto ignores BillingProducts and shows neither
# field. Only the two documented codes are taken here (an account is authorized for
# codes it is given); any other is refused as AWS refuses an unauthorized one.

BILLING_CODES = {
    "bp-6ba54002": ("RunInstances:0002", "Windows"),
    "bp-6fa54006": ("RunInstances:0010", "Red Hat Enterprise Linux"),
}


def _registering_billing_products(handler):
    def wrapper(self):
        products = self._get_param("BillingProducts", []) or []
        unknown = [p for p in products if p not in BILLING_CODES]
        if unknown:
            from moto.ec2.exceptions import InvalidParameterValueError

            raise InvalidParameterValueError(f"billing product {unknown[0]}")
        result = handler(self)
        if products:
            self.ec2_backend.amis[result.result["ImageId"]].billing_products = list(products)
        return result

    return wrapper


def _usage_operation(self):
    products = getattr(self, "billing_products", None) or []
    return BILLING_CODES[products[0]][0] if products else "RunInstances"


def _platform_details(self):
    products = getattr(self, "billing_products", None) or []
    return BILLING_CODES[products[0]][1] if products else "Linux/UNIX"


def _refusing_billed_copies(copy_image):
    def wrapper(self):
        backend = self.ec2_backend
        source_backend = ec2_backends[backend.account_id][self._get_param("SourceRegion") or backend.region_name]
        source = visible_image(source_backend, self._get_param("SourceImageId"))
        if source is not None and source.owner_id != backend.account_id and getattr(source, "billing_products", None):
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError(
                "InvalidRequest",
                "You can't copy an AMI with an associated billingProduct code that was shared with you from another account.",
            )
        return copy_image(self)

    return wrapper


def install():
    """Applies the patches above (once, at the launcher's start)."""
    KmsBackend.create_alias = _marking_aws_managed(KmsBackend.create_alias)
    EBSBackend.modify_ebs_default_kms_key_id = _remembering_default_key(EBSBackend.modify_ebs_default_kms_key_id)
    Ec2SettingsResponse.get_ebs_default_kms_key_id = _get_ebs_default_kms_key_id
    Ec2SettingsResponse.reset_ebs_default_kms_key_id = _reset_ebs_default_kms_key_id
    EBSBackend.create_volume = _volume_key_as_arn(EBSBackend.create_volume)
    EBSBackend.create_snapshot = _snapshot_keeps_volume_key(EBSBackend.create_snapshot)
    Ami.block_device_mappings = property(_image_mappings)
    AmisResponse.register_image = _keeping_block_device_mappings(AmisResponse.register_image, registered=True)
    AmisResponse.create_image = _keeping_block_device_mappings(AmisResponse.create_image, registered=False)
    LaunchTemplates.create_launch_template_version = _with_source_version(
        LaunchTemplates.create_launch_template_version
    )
    LaunchTemplate.create_version = _inheriting_source(LaunchTemplate.create_version)
    FakeAutoScalingGroup.update = _keeping_launch_source(FakeAutoScalingGroup.update)
    LaunchTemplates.describe_launch_template_versions = _filtering_by_image(
        _resolving_alias(LaunchTemplates.describe_launch_template_versions)
    )
    LaunchTemplateBackend.describe_launch_template_versions = _versions_with_images(
        LaunchTemplateBackend.describe_launch_template_versions
    )
    AmiBackend.describe_images = _finishing_copies(_describing_shared_images(AmiBackend.describe_images))
    AmisResponse.copy_image = _refusing_billed_copies(_copy_image)
    AmisResponse.register_image = _registering_billing_products(AmisResponse.register_image)
    Ami.usage_operation = property(_usage_operation)
    Ami.platform_details = property(_platform_details)
    EBSBackend.describe_snapshots = _describing_shared_snapshots(EBSBackend.describe_snapshots)
    Snapshot.progress = property(_snapshot_progress)
