//! What a group launches with, and what re-encryption reads: plain data that the
//! observation holds. The logic that reads it is in [`crate::core::launch`] and
//! [`crate::core::reencrypt`].

use std::collections::BTreeMap;

use super::{AccountId, DryRun, Failure, KeyArn, KeyManager, LaunchSource, Slr};

/// A key one of a group's launches uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchKey {
    /// As written where it was found (a key id, ARN, alias name or alias ARN).
    pub key_ref: String,
    /// Where: `launch template lt-0abc (web) version 3 ($Default): /dev/xvdb`.
    pub source: String,
    /// The key it names, as DescribeKey answers; why not, when it could not be described.
    pub resolved: Result<(KeyArn, KeyManager), String>,
}

/// What a group's launches use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLaunch {
    pub keys: Vec<LaunchKey>,
    /// Volumes whose key could not be known (a snapshot that could not be read), and why.
    pub unknown: Vec<String>,
    /// Launch configurations that request Spot instances.
    pub spot: Vec<String>,
    /// Each launch source as read: what re-encryption (`strategy: reencrypt`) replaces.
    pub sources: Vec<SourceRead>,
}

/// One of a group's launch sources as read: its image and the keys that come with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRead {
    pub source: LaunchSource,
    /// For a launch template: its id and the number of the version the group launches.
    pub template: Option<(String, u64)>,
    /// The AMI, a Systems Manager parameter resolved.
    pub image_id: Option<String>,
    /// The keys of the AMI's encrypted snapshots that launches read (a device the source
    /// maps anew from its own snapshot is not the AMI's), as DescribeSnapshots names them.
    pub image_keys: Vec<String>,
    /// The source's own mappings that name a key: (device, key as written).
    pub mapping_keys: Vec<(String, String)>,
    /// The AMI is another account's, and has an encrypted snapshot whose key could not be
    /// read here (a shared image's snapshots usually are not): its owner's key, as far as
    /// re-encryption is concerned.
    pub shared_encrypted: bool,
    /// Why the AMI could not be read, if it could not: its snapshots' keys are unknown.
    pub image_unread: Option<String>,
    /// The Systems Manager parameter a launch template names its image by, if it does.
    pub image_parameter: Option<String>,
    /// Another account's AMI: the snapshots launches read that EC2 does not show this
    /// account, so they are not shared with it (a copy needs them shared: EC2 User Guide,
    /// "Copy an AMI"). A snapshot whose read failed, or whose key is not shown, is not
    /// counted here.
    pub unshared_snapshots: Vec<String>,
    /// Another account's AMI with a billing or product code (see
    /// [`crate::core::launch::Image::billing`]): which. EC2 does not copy it (EC2 User
    /// Guide, "Copy an Amazon EC2 AMI").
    pub billed: Option<String>,
    /// For a version the operator made: the version it was made from.
    pub made_from: Option<u64>,
    /// For a version the operator made, which the group is pointed at: what the group
    /// followed before (`$Default` or `$Latest`, as the version's description records),
    /// read now, once it has moved to another writer's version (a pipeline's new default
    /// or latest). Its `source` names the template by that selector. Re-encryption
    /// follows it; None while it has not moved.
    pub moved: Option<Box<Result<SourceRead, Failure>>>,
}

/// An image the operator copied, found by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub image_id: String,
    /// `pending`, `available`, `failed`, ... (EC2 API Reference, Image, State).
    pub state: String,
    /// Why a copy failed, as EC2 says (Image, StateReason).
    pub reason: Option<String>,
    /// While pending: the least progress of its snapshots, as EC2 writes it (`45%`).
    pub progress: Option<String>,
}

/// One of the operator's image copies in a place (tagged by it when copied), as
/// DescribeImages shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCopy {
    pub image_id: String,
    pub name: String,
    pub state: String,
    /// The snapshots of its mappings, the copy's own.
    pub snapshots: Vec<String>,
    /// Clean-up: the operator's launch configuration copies made with it that no group
    /// uses, deleted before it is.
    pub configurations: Vec<String>,
}

/// A launch template version with a given image, as read while a group still needs the
/// operator's version: its number and its description (which says whose it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSeen {
    pub number: u64,
    pub description: Option<String>,
}

/// Where a copy is looked for: the group's account and Region, and the copy's name.
pub type CopyAt = (AccountId, String, String);
/// A launch template in an account and Region, by id, and an image: the versions of the
/// template that launch that image.
pub type TemplateAt = (AccountId, String, String, String);
/// Every group of an account and Region, with its launch sources.
pub type GroupsAt = (AccountId, String);
/// The groups of a place, by name, with their launch sources.
pub type Groups = Vec<(String, Vec<LaunchSource>)>;

/// What re-encryption reads, beyond the groups' launches.
#[derive(Debug, Clone, Default)]
pub struct ReencryptReads {
    pub copies: BTreeMap<CopyAt, Result<Option<Copy>, Failure>>,
    /// The versions of a template that launch an image (a copy): the operator's is
    /// found among them by its description, whatever other writers add to the template.
    pub by_image: BTreeMap<TemplateAt, Result<Vec<VersionSeen>, Failure>>,
    /// The groups of a place, by name, with their launch sources: who else uses a
    /// template.
    pub groups: BTreeMap<GroupsAt, Result<Groups, Failure>>,
    /// Before a copy: whether the group's account may use each key being replaced, as a
    /// dry run of CreateGrant made with its credentials answers (KMS Developer Guide,
    /// "Testing your permissions").
    pub access: BTreeMap<(KeyArn, Slr), Result<DryRun, Failure>>,
    /// Whether each launch configuration copy the operator would make exists already.
    pub configurations: BTreeMap<CopyAt, Result<bool, Failure>>,
    /// Before a copy: the policy of each key being replaced whose owner the operator acts
    /// in (listed under `accounts`), read with the owner's credentials. What a copy needs
    /// of it is judged from the policy, which a dry run cannot: the copy's grants are for
    /// an AWS resource.
    pub source_policies: BTreeMap<KeyArn, Result<String, Failure>>,
    /// `defaults.reencryptCleanup`: the operator's copies in a place that nothing
    /// launches or may launch any more (see [`crate::core::reencrypt::cleanup`]).
    pub unused: BTreeMap<GroupsAt, Vec<OwnCopy>>,
    /// `reencryptParameter`: each parameter of the operator's, by account, Region and
    /// name: the AMI id it holds, None when it does not exist.
    pub parameters: BTreeMap<CopyAt, Result<Option<String>, Failure>>,
}

impl ReencryptReads {
    pub fn absorb(&mut self, newer: ReencryptReads) {
        self.copies.extend(newer.copies);
        self.by_image.extend(newer.by_image);
        self.groups.extend(newer.groups);
        self.access.extend(newer.access);
        self.configurations.extend(newer.configurations);
        self.source_policies.extend(newer.source_policies);
        self.parameters.extend(newer.parameters);
        // What is unused is planned from the round that read it only: a later round that
        // does not look again (nothing in play there) must not delete it a second time.
        self.unused = newer.unused;
    }
}
