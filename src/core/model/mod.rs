//! SDK-free domain types shared by the config, the planner and the AWS layer.

pub mod desired;
pub mod launch;
pub mod observed;
pub mod select;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The AWS service principal that owns Auto Scaling service-linked roles.
pub const AUTOSCALING_SERVICE: &str = "autoscaling.amazonaws.com";
/// Name of the default Auto Scaling service-linked role.
pub const DEFAULT_SLR_NAME: &str = "AWSServiceRoleForAutoScaling";

/// A 12-digit AWS account id. It is in every binding, ARN and map key, so it is stored
/// inline and copied rather than allocated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId([u8; 12]);

impl AccountId {
    /// Accepts exactly twelve ASCII digits.
    pub fn parse(s: &str) -> Option<Self> {
        let digits: [u8; 12] = s.as_bytes().try_into().ok()?;
        digits.iter().all(u8::is_ascii_digit).then_some(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parse admits only ASCII digits")
    }

    /// The account root principal, `arn:<partition>:iam::<id>:root`.
    pub fn root_arn(&self, partition: &str) -> String {
        format!("arn:{partition}:iam::{}:root", self.as_str())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({:?})", self.as_str())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partitions a key ARN may name.
const PARTITIONS: [&str; 5] = ["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"];

/// A full KMS key ARN, `arn:<partition>:kms:<region>:<account>:key/<key-id>`, or the ARN
/// of an alias, `arn:<partition>:kms:<region>:<account>:alias/<name>`, which AWS resolves
/// to the key it points to at the time (DescribeKey).
///
/// Cloning is a reference count: the same key is named by many bindings, reads, plans and
/// scheduler entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyArn(Arc<KeyArnParts>);

/// Ordered by the ARN text first, so keys sort as their ARNs do.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct KeyArnParts {
    arn: String,
    partition: &'static str,
    account: AccountId,
    /// Byte ranges of the region and key id (or `alias/NAME`) within `arn`.
    region: (usize, usize),
    key_id: usize,
    alias: bool,
}

impl KeyArn {
    /// Parses a key or alias ARN. Bare key ids and alias names are rejected: the operator
    /// must know the owner account and region of every key without asking AWS.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(
                "must be a full KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>) or alias ARN (…:alias/<name>)"
                    .into(),
            );
        }
        let (partition, service, region, account, resource) = (parts[1], parts[2], parts[3], parts[4], parts[5]);
        let Some(partition) = PARTITIONS.iter().copied().find(|p| *p == partition) else {
            return Err(format!("unknown partition {partition:?} in key ARN"));
        };
        if service != "kms" {
            return Err(format!("service is {service:?}, expected \"kms\""));
        }
        if !is_region(region) {
            return Err(format!("{region:?} is not a region name"));
        }
        let account =
            AccountId::parse(account).ok_or_else(|| format!("account {account:?} in key ARN is not 12 digits"))?;
        let (alias, id) = match (resource.strip_prefix("key/"), resource.strip_prefix("alias/")) {
            (Some(id), _) if is_key_id(id) => (false, id),
            (Some(_), _) => return Err("key id must be a UUID or an mrk- multi-Region key id".into()),
            // KMS API Reference, CreateAlias: 1-256 of [a-zA-Z0-9:/_-].
            (None, Some(name))
                if !name.is_empty()
                    && name.len() <= 256
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b)) =>
            {
                (true, resource)
            }
            (None, Some(_)) => return Err("alias name must be 1 to 256 of the characters a-z A-Z 0-9 : / _ -".into()),
            (None, None) => return Err("resource must be key/<key-id> or alias/<name>".into()),
        };
        // "arn:" + partition + ":kms:" comes before the region.
        let region_start = 4 + partition.len() + 5;
        Ok(Self(Arc::new(KeyArnParts {
            arn: s.to_owned(),
            partition,
            account,
            region: (region_start, region_start + region.len()),
            key_id: s.len() - id.len(),
            alias,
        })))
    }

    /// True for an alias ARN, which must be resolved to the key it points to.
    pub fn is_alias(&self) -> bool {
        self.0.alias
    }

    pub fn as_str(&self) -> &str {
        &self.0.arn
    }
    pub fn partition(&self) -> &'static str {
        self.0.partition
    }
    pub fn region(&self) -> &str {
        &self.0.arn[self.0.region.0..self.0.region.1]
    }
    pub fn account(&self) -> &AccountId {
        &self.0.account
    }
    /// The key id, or `alias/NAME` for an alias.
    pub fn key_id(&self) -> &str {
        &self.0.arn[self.0.key_id..]
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `us-west-2`, `ap-southeast-1`, `us-gov-west-1`, `cn-north-1`, ...
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
}

/// The regions the AWS SDK knows, in every partition: the `regions` of the endpoint
/// partitions data that the locked SDK crates embed (the SDK exposes no list; a test
/// compares this one with that data). AWS lists its regions at
/// <https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html>.
/// A region missing here is only warned about: AWS may have opened it since.
pub const KNOWN_REGIONS: &[&str] = &[
    // aws
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    // aws-cn, aws-eusc, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-us-gov
    "cn-north-1",
    "cn-northwest-1",
    "eusc-de-east-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "eu-isoe-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-gov-east-1",
    "us-gov-west-1",
];

/// Whether the SDK knows `region` (see [`KNOWN_REGIONS`]).
pub fn is_known_region(region: &str) -> bool {
    KNOWN_REGIONS.contains(&region)
}

fn is_key_id(s: &str) -> bool {
    let uuid = s.strip_prefix("mrk-").is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    uuid || (parts.len() == 5
        && parts.iter().zip(lens).all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// Checks a service-linked role custom suffix. IAM allows `[\w+=,.@-]`, and the full role
/// name `AWSServiceRoleForAutoScaling_<suffix>` must fit in 64 characters.
pub fn check_slr_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() || suffix.chars().count() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = suffix.chars().find(|c| !(c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c))) {
        return Err(format!("character {c:?} is not allowed; use letters, digits and _+=,.@-"));
    }
    let name_len = DEFAULT_SLR_NAME.len() + 1 + suffix.len();
    if name_len > 64 {
        return Err(format!("role name {DEFAULT_SLR_NAME}_{suffix} would be {name_len} characters; IAM allows 64"));
    }
    Ok(())
}

/// The name of one operator instance (`instance:` in the config). Several teams may run
/// their own operator on one key: each instance's key-policy statements and grant names
/// carry its name, so none edits or prunes another's. The instance `default` writes the
/// names earlier versions wrote, so what they wrote is read as its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance(Arc<str>);

impl Default for Instance {
    fn default() -> Self {
        Self(Arc::from(Instance::DEFAULT))
    }
}

impl Instance {
    pub const DEFAULT: &'static str = "default";
    /// Longest name accepted: Sids and grant names stay short.
    pub const MAX_LEN: usize = 32;

    /// A name of 1 to 32 lowercase letters, digits and hyphens, starting with a letter or
    /// digit and ending with one. Such a name holds no character that separates the parts
    /// of a Sid or a grant name, so the names of two instances never read as each other's.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters long", Self::MAX_LEN));
        }
        if let Some(c) = name.chars().find(|&c| !ok(c) && c != '-') {
            return Err(format!("character {c:?} is not allowed: use lowercase letters, digits and hyphens"));
        }
        if !name.starts_with(ok) || !name.ends_with(ok) {
            return Err("must start and end with a lowercase letter or a digit".to_owned());
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Auto Scaling service-linked role of one account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slr {
    pub account: AccountId,
    pub partition: &'static str,
    /// Shared with every binding that names the same suffix.
    pub suffix: Option<Arc<str>>,
}

/// The custom suffix of an Auto Scaling service-linked role, from its ARN: None for the
/// default role, or an ARN that names no such role.
pub fn slr_suffix_of(arn: &str) -> Option<Arc<str>> {
    let name = arn.rsplit('/').next()?;
    name.strip_prefix(DEFAULT_SLR_NAME)?.strip_prefix('_').filter(|s| !s.is_empty()).map(Arc::from)
}

impl Slr {
    pub fn name(&self) -> String {
        match &self.suffix {
            Some(s) => format!("{DEFAULT_SLR_NAME}_{s}"),
            None => DEFAULT_SLR_NAME.to_owned(),
        }
    }

    pub fn arn(&self) -> String {
        format!(
            "arn:{}:iam::{}:role/aws-service-role/{AUTOSCALING_SERVICE}/{}",
            self.partition,
            self.account,
            self.name()
        )
    }
}

/// Identifies one configured binding: the ASG's account, region and name.
///
/// Cloning is a reference count: the same ASG is named by the config, the daemon's state,
/// the reads, the observation and the plan. Its fields read through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsgRef(Arc<AsgId>);

/// The fields of an [`AsgRef`].
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsgId {
    pub account: AccountId,
    pub region: String,
    pub name: String,
}

impl AsgRef {
    pub fn new(account: AccountId, region: impl Into<String>, name: impl Into<String>) -> Self {
        Self(Arc::new(AsgId { account, region: region.into(), name: name.into() }))
    }
}

impl Deref for AsgRef {
    type Target = AsgId;
    fn deref(&self) -> &AsgId {
        &self.0
    }
}

impl fmt::Display for AsgRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.region, self.name)
    }
}

/// One binding: an ASG that must be able to use one key. A group that needs several keys
/// (its data volume's and its AMI's snapshots') has a binding for each.
///
/// Cloning is two reference counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingId {
    pub asg: AsgRef,
    pub key: KeyArn,
}

impl fmt::Display for BindingId {
    /// `ACCOUNT/REGION/ASG [key/ID]`, with the key's account when it is another's:
    /// `[444455556666:key/ID]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.account() == &self.asg.account {
            write!(f, "{} [{}]", self.asg, self.key.key_id())
        } else {
            write!(f, "{} [{}:{}]", self.asg, self.key.account(), self.key.key_id())
        }
    }
}

/// A KMS grant as observed (only the fields the planner reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub grant_id: String,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub operations: Vec<String>,
    /// True when the grant carries encryption-context constraints, which would keep EBS
    /// from using it for arbitrary volumes.
    pub constrained: bool,
}

/// Who manages a key: a customer managed key's policy is the operator's to extend; an
/// AWS managed key (such as `aws/ebs`) needs no authorization and cannot be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyManager {
    Customer,
    Aws,
}

/// A KMS key as DescribeKey shows it (only the fields the planner reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's own ARN: for an alias, the key it points to now.
    pub arn: KeyArn,
    /// `Enabled`, `Disabled`, `PendingDeletion`, `PendingImport`, `Unavailable`, ...
    pub state: String,
    /// `SYMMETRIC_DEFAULT` is the only spec EBS can use.
    pub spec: String,
    pub manager: KeyManager,
}

/// An IAM role as observed: its ARN is known from its name, so only its unique id is
/// kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role's unique id (`AROA...`): KMS shows a deleted role by it, and the
    /// operator's grant names carry it.
    pub role_id: String,
}

/// An Auto Scaling group as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asg {
    pub service_linked_role_arn: Option<String>,
    /// What its instances are launched from.
    pub sources: Vec<LaunchSource>,
}

/// The `via` of a group's own launch template (not its mixed instances policy's).
pub const VIA_GROUP: &str = "the group's launch template";

/// Where a group's instances come from: what `discover` reads to find the keys it uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LaunchSource {
    /// A launch template, by id or name, at the version the group names (`$Default`
    /// when it names none); `via` says where: the group itself, its mixed instances
    /// policy, or one of that policy's overrides.
    Template { id: Option<String>, name: Option<String>, version: String, via: &'static str },
    /// A launch configuration, by name.
    Configuration(String),
}

/// A group's most recent launch, from its scaling activities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchActivity {
    /// `Successful`, `Failed`, `InProgress`, `Cancelled`, ...
    pub status_code: String,
    /// For a failed launch, AWS's reason, such as `Client.InternalError: Client error on
    /// launch` when the group's role cannot use a key.
    pub status_message: Option<String>,
    pub start_time: Option<String>,
    pub description: String,
}

impl LaunchActivity {
    /// A launch that did not produce an instance: `Failed`, or `Cancelled` (Auto Scaling
    /// cancels a launch it gives up on, as when its instance could not start).
    pub fn failed(&self) -> bool {
        self.status_code == "Failed" || self.status_code == "Cancelled"
    }

    /// Why a failed launch failed, in the two classes that matter here: a KMS or
    /// permission failure, which the operator's bindings are there to cure, or anything
    /// else (capacity, quotas, subnets, ...), which they cannot. `keys` are the keys the
    /// group is bound to: a message naming one of them is a KMS failure. None for a launch
    /// that did not fail.
    pub fn failure_class(&self, keys: &[&KeyArn]) -> Option<LaunchFailureClass> {
        if !self.failed() {
            return None;
        }
        let message = self.status_message.as_deref().unwrap_or_default();
        // When the group's role may not use a volume's key, EC2 Auto Scaling reports
        // "Client.InternalError: Client error on launch" (EC2 Auto Scaling User Guide,
        // "Troubleshoot Amazon EC2 Auto Scaling: EC2 instance launch failures"); a key that
        // is disabled or pending deletion is named as a KMS key ("Client.InvalidKMSKey...").
        let kms = message.contains("Client error on launch")
            || message.to_ascii_lowercase().contains("kms")
            || keys.iter().any(|k| message.contains(k.key_id()) || message.contains(k.as_str()));
        Some(if kms { LaunchFailureClass::Kms } else { LaunchFailureClass::Other })
    }
}

/// The two kinds of launch failure: only the first is the operator's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LaunchFailureClass {
    /// The group's role could not use a key: KMS or a permission.
    Kms,
    /// Capacity, a quota, a subnet, the AMI, ...: nothing a key policy or grant can change.
    Other,
}

impl LaunchFailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchFailureClass::Kms => "kms",
            LaunchFailureClass::Other => "other",
        }
    }
}

/// What KMS answered a CreateGrant made with `DryRun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// DryRunOperationException: the call would succeed.
    Allowed,
    /// AccessDeniedException: the owner's key policy (or the caller's IAM policy) does
    /// not allow it yet.
    Refused,
    /// The grantee is not a principal KMS knows yet (the role does not exist, or IAM
    /// has not propagated it): the caller was allowed this far, and the role comes first.
    GranteeUnknown,
}

/// How an error should be handled: change the config, or try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// Retrying will not help until the config or the account changes.
    Terminal,
    /// Transient: retry with backoff.
    Retryable,
    /// The API throttled us: retry with backoff and slow down.
    Throttled,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Terminal => "terminal",
            ErrorClass::Retryable => "retryable",
            ErrorClass::Throttled => "throttled",
        }
    }

    /// Whether trying again soon may help: throttling and transient errors. A terminal
    /// failure waits for a change of config or account.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Retryable | ErrorClass::Throttled)
    }
}

/// What a binding waits for that is not a failure: someone else's work, or a read the
/// daemon owes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wait {
    /// Hand-off: the owner of a key the operator cannot act in has not yet let the
    /// group's account use it. Checked again on the hand-off interval.
    KeyOwner,
    /// An image copy EC2 is making for re-encryption. Looked at again soon.
    Copy,
    /// A quick pass switched the group without reading its launches: a full pass over
    /// it follows at once.
    Launches,
    /// Another account's image is shared with the group's, but its snapshots are not: a
    /// copy waits for its owner to share them. Checked again on the hand-off interval.
    ImageOwner,
    /// Another writer keeps replacing the key policy: the write back waits out the key's
    /// backoff (see [`crate::core::contest`]). The resync, or the writer's next event,
    /// looks again.
    Contested,
}

impl Wait {
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::KeyOwner | Wait::ImageOwner => "awaiting_owner",
            Wait::Copy => "in_progress",
            Wait::Launches => "launches_unread",
            Wait::Contested => "contested",
        }
    }
}

/// A failed AWS call, as plain data the planner can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

impl Failure {
    pub fn terminal(message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Terminal, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_regions_are_region_names() {
        assert!(KNOWN_REGIONS.iter().all(|r| is_region(r)));
        assert!(is_known_region("us-west-2"));
        assert!(!is_known_region("us-wset-2"));
    }

    /// The list matches the partitions data the locked aws-sdk-kms embeds, read from its
    /// source in the cargo registry: updating the SDK without the list fails here.
    #[test]
    fn known_regions_are_the_sdks() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
        let at = lock.find("name = \"aws-sdk-kms\"\nversion = \"").expect("aws-sdk-kms in Cargo.lock");
        let version = lock[at..].split('"').nth(3).unwrap();
        let home = std::env::var_os("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
        let source = std::fs::read_dir(home.join("registry/src"))
            .expect("the cargo registry's sources")
            .filter_map(|d| {
                std::fs::read_to_string(d.ok()?.path().join(format!("aws-sdk-kms-{version}/src/endpoint_lib.rs"))).ok()
            })
            .next()
            .expect("aws-sdk-kms's endpoint_lib.rs in the cargo registry");
        let sdk: std::collections::BTreeSet<&str> = source
            .split(r#"\":{\"description\""#)
            .filter_map(|before| before.rsplit(r#"\""#).next())
            .filter(|name| is_region(name))
            .collect();
        let ours: std::collections::BTreeSet<&str> = KNOWN_REGIONS.iter().copied().collect();
        assert!(sdk.len() > 30, "{sdk:?}");
        assert_eq!(ours, sdk);
    }

    #[test]
    fn key_arn_accepts_uuid_and_mrk_ids() {
        let k = KeyArn::parse("arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        assert_eq!(k.region(), "us-west-2");
        assert_eq!(k.account().as_str(), "444455556666");
        assert_eq!(k.key_id(), "1234abcd-12ab-34cd-56ef-1234567890ab");
        assert!(KeyArn::parse("arn:aws:kms:us-west-2:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab").is_ok());
    }

    #[test]
    fn key_arn_parts_are_read_from_the_arn_in_every_partition() {
        let k = KeyArn::parse("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
            .unwrap();
        assert_eq!(k.partition(), "aws-us-gov");
        assert_eq!(k.region(), "us-gov-west-1");
        assert_eq!(k.account().as_str(), "111122223333");
        assert_eq!(k.key_id(), "mrk-1234abcd12ab34cd56ef1234567890ab");
        assert_eq!(k.to_string(), k.as_str());
        assert!(
            KeyArn::parse("arn:aws-xx:kms:us-west-2:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab").is_err()
        );
    }

    #[test]
    fn account_ids_are_twelve_ascii_digits() {
        assert_eq!(AccountId::parse("012345678901").unwrap().as_str(), "012345678901");
        assert!(AccountId::parse("01234567890").is_none());
        assert!(AccountId::parse("0123456789012").is_none());
        // Twelve bytes, but not twelve ASCII digits.
        assert!(AccountId::parse("\u{ff11}\u{ff12}\u{ff13}\u{ff14}").is_none());
        assert!(AccountId::parse("111122223333").unwrap() < AccountId::parse("444455556666").unwrap());
    }

    #[test]
    fn alias_arns_are_accepted_and_known_as_aliases() {
        let a = KeyArn::parse("arn:aws:kms:us-west-2:444455556666:alias/team/ebs-data").unwrap();
        assert!(a.is_alias());
        assert_eq!(a.key_id(), "alias/team/ebs-data");
        assert_eq!(a.account().as_str(), "444455556666");
        assert_eq!(a.region(), "us-west-2");
        assert!(!KeyArn::parse("arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab")
            .unwrap()
            .is_alias());
        for bad in ["arn:aws:kms:us-west-2:444455556666:alias/", "arn:aws:kms:us-west-2:444455556666:alias/sp ace"] {
            assert!(KeyArn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_binding_names_its_group_and_its_key() {
        let asg = AsgRef::new(AccountId::parse("111122223333").unwrap(), "us-west-2", "web");
        let own = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let other = KeyArn::parse("arn:aws:kms:us-west-2:444455556666:alias/ebs").unwrap();
        assert_eq!(
            BindingId { asg: asg.clone(), key: own }.to_string(),
            "111122223333/us-west-2/web [1234abcd-12ab-34cd-56ef-1234567890ab]"
        );
        assert_eq!(BindingId { asg, key: other }.to_string(), "111122223333/us-west-2/web [444455556666:alias/ebs]");
    }

    #[test]
    fn key_arn_rejects_bare_ids_alias_names_and_other_services() {
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/ebs",
            "arn:aws:s3:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-west-2:4444:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:uswest2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-west-2:444455556666:key/not-a-uuid",
        ] {
            assert!(KeyArn::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn slr_suffix_limits_follow_iam() {
        assert!(check_slr_suffix("CMK").is_ok());
        assert!(check_slr_suffix("a+b=c,d.e@f-g_h").is_ok());
        assert!(check_slr_suffix("").is_err());
        assert!(check_slr_suffix("has space").is_err());
        // AWSServiceRoleForAutoScaling_ is 29 characters, so 35 fit and 36 do not.
        assert!(check_slr_suffix(&"x".repeat(35)).is_ok());
        assert!(check_slr_suffix(&"x".repeat(36)).is_err());
    }

    #[test]
    fn failed_and_cancelled_launches_are_classed_kms_or_other() {
        let key = KeyArn::parse("arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let launch = |code: &str, message: &str| LaunchActivity {
            status_code: code.into(),
            status_message: Some(message.into()),
            start_time: None,
            description: "Launching a new EC2 instance".into(),
        };
        let class = |code: &str, message: &str| launch(code, message).failure_class(&[&key]);
        let kms = Some(LaunchFailureClass::Kms);
        let other = Some(LaunchFailureClass::Other);
        assert_eq!(class("Failed", "Client.InternalError: Client error on launch"), kms);
        assert_eq!(class("Cancelled", "Client.InternalError: Client error on launch"), kms);
        assert_eq!(
            class("Failed", "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state"),
            kms
        );
        assert_eq!(class("Failed", "key 1234abcd-12ab-34cd-56ef-1234567890ab cannot be used"), kms);
        assert_eq!(
            class(
                "Failed",
                "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested"
            ),
            other
        );
        assert_eq!(class("Cancelled", "You have requested more vCPU capacity than your current vCPU limit"), other);
        assert_eq!(class("Failed", "The subnet ID 'subnet-1' does not exist"), other);
        assert_eq!(class("Successful", "Client.InternalError: Client error on launch"), None);
        assert_eq!(class("InProgress", ""), None);
        assert!(launch("Cancelled", "").failed());
    }

    #[test]
    fn slr_arn_has_the_service_role_path() {
        let slr =
            Slr { account: AccountId::parse("111122223333").unwrap(), partition: "aws", suffix: Some("CMK".into()) };
        assert_eq!(
            slr.arn(),
            "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK"
        );
    }
}
