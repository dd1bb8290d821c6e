//! Conditions in the style of Kubernetes: each one `True`, `False` or `Unknown`, with a
//! typed reason and a message. Their kinds and reasons are enums, rendered as the names
//! `status`, `/status` and `plan` have always shown.

use std::sync::Arc;

/// The conditions of a binding, in the order a launch needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A selector's binding only: the selector allows every customer managed key the
    /// group launches with (and no other selector disagrees about the group).
    KeyAllowed,
    /// The key is Enabled and symmetric (or AWS managed).
    KeyUsable,
    /// The group's service-linked role exists.
    RoleReady,
    /// The key policy lets the role (case 1) or the group's account (case 2) use the key
    /// and create grants, and no Deny stops it.
    KeyPolicyReady,
    /// Case 2 only: a complete grant for the role is on the key.
    GrantReady,
    /// The group's `ServiceLinkedRoleARN` is that role.
    AsgUsesRole,
    /// The group's most recent launch did not fail for a reason the bindings can cure.
    LaunchesHealthy,
    /// `strategy: reencrypt` only: the group launches no image or volume encrypted with
    /// another account's key.
    ImagesReencrypted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KeyAllowed => "KeyAllowed",
            Kind::KeyUsable => "KeyUsable",
            Kind::RoleReady => "RoleReady",
            Kind::KeyPolicyReady => "KeyPolicyReady",
            Kind::GrantReady => "GrantReady",
            Kind::AsgUsesRole => "AsgUsesRole",
            Kind::LaunchesHealthy => "LaunchesHealthy",
            Kind::ImagesReencrypted => "ImagesReencrypted",
        }
    }

    /// The conditions that say a key is ready for the group's role: while one of them is
    /// not `True` for one of a group's keys, the group is not switched.
    pub fn key_ready(self) -> bool {
        matches!(self, Kind::KeyUsable | Kind::RoleReady | Kind::KeyPolicyReady | Kind::GrantReady)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    True,
    False,
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }
}

/// Why a condition has its status. One enum for every condition: several reasons
/// (`NotRead`, `Missing`, ...) are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The part was not read by this observation.
    NotRead,
    /// The read failed; the message says how.
    ReadFailed,
    /// An AWS managed key needs nothing of this part.
    NotNeeded,
    // KeyAllowed
    InAllowedKeys,
    KeyNotAllowed,
    SelectorConflict,
    LaunchKeysUnknown,
    // KeyUsable
    Enabled,
    AwsManaged,
    AwsManagedInOtherAccount,
    NotSymmetric,
    KeyDisabled,
    KeyPendingDeletion,
    KeyPendingImport,
    KeyPendingReplicaDeletion,
    KeyUnavailable,
    KeyCreating,
    KeyUpdating,
    /// A key state KMS did not document when this was built.
    KeyStateUnknown,
    // RoleReady
    Exists,
    NotFound,
    // KeyPolicyReady
    Allows,
    Missing,
    Denied,
    Unreadable,
    Unwritable,
    AwaitingKeyOwner,
    /// Another writer keeps replacing the policy and removing the operator's statements.
    Contested,
    AliasAcrossAccounts,
    OwnerAllows,
    GranteeUnknown,
    // GrantReady
    Complete,
    Incomplete,
    // AsgUsesRole
    UsesRole,
    OtherRole,
    HeldByKey,
    AsgNotFound,
    /// Another service (EKS) manages the group: it keeps its role, which is not the
    /// operator's to change.
    ManagedByService,
    // LaunchesHealthy
    NoRecentLaunch,
    LastLaunch,
    LaunchFailedKms,
    LaunchFailedOther,
    /// The most recent launch failed over KMS, but every permission the binding needs is
    /// in place now and was not when it failed (or, for a one-shot command, may not have
    /// been): the next launch will tell.
    FixedSinceLastLaunch,
    // ImagesReencrypted
    OwnKeyOnly,
    ReencryptPending,
    CopyInProgress,
    ReencryptBlocked,
    /// The group's image comes from a Systems Manager parameter: a copy would freeze it.
    ImageFromParameter,
    /// Another account's image is shared, but not its snapshots: its owner must share them.
    SnapshotNotShared,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotRead => "NotRead",
            Reason::ReadFailed => "ReadFailed",
            Reason::NotNeeded => "NotNeeded",
            Reason::InAllowedKeys => "InAllowedKeys",
            Reason::KeyNotAllowed => "KeyNotAllowed",
            Reason::SelectorConflict => "SelectorConflict",
            Reason::LaunchKeysUnknown => "LaunchKeysUnknown",
            Reason::Enabled => "Enabled",
            Reason::AwsManaged => "AwsManaged",
            Reason::AwsManagedInOtherAccount => "AwsManagedInOtherAccount",
            Reason::NotSymmetric => "NotSymmetric",
            Reason::KeyDisabled => "KeyDisabled",
            Reason::KeyPendingDeletion => "KeyPendingDeletion",
            Reason::KeyPendingImport => "KeyPendingImport",
            Reason::KeyPendingReplicaDeletion => "KeyPendingReplicaDeletion",
            Reason::KeyUnavailable => "KeyUnavailable",
            Reason::KeyCreating => "KeyCreating",
            Reason::KeyUpdating => "KeyUpdating",
            Reason::KeyStateUnknown => "KeyStateUnknown",
            Reason::Exists => "Exists",
            Reason::NotFound => "NotFound",
            Reason::Allows => "Allows",
            Reason::Missing => "Missing",
            Reason::Contested => "Contested",
            Reason::Denied => "Denied",
            Reason::Unreadable => "Unreadable",
            Reason::Unwritable => "Unwritable",
            Reason::AwaitingKeyOwner => "AwaitingKeyOwner",
            Reason::AliasAcrossAccounts => "AliasAcrossAccounts",
            Reason::OwnerAllows => "OwnerAllows",
            Reason::GranteeUnknown => "GranteeUnknown",
            Reason::Complete => "Complete",
            Reason::Incomplete => "Incomplete",
            Reason::UsesRole => "UsesRole",
            Reason::OtherRole => "OtherRole",
            Reason::HeldByKey => "HeldByKey",
            Reason::AsgNotFound => "AsgNotFound",
            Reason::ManagedByService => "ManagedByService",
            Reason::NoRecentLaunch => "NoRecentLaunch",
            Reason::LastLaunch => "LastLaunch",
            Reason::LaunchFailedKms => "LaunchFailedKms",
            Reason::LaunchFailedOther => "LaunchFailedOther",
            Reason::FixedSinceLastLaunch => "FixedSinceLastLaunch",
            Reason::OwnKeyOnly => "OwnKeyOnly",
            Reason::ReencryptPending => "ReencryptPending",
            Reason::CopyInProgress => "CopyInProgress",
            Reason::ReencryptBlocked => "ReencryptBlocked",
            Reason::ImageFromParameter => "ImageFromParameter",
            Reason::SnapshotNotShared => "SnapshotNotShared",
        }
    }

    /// The reason of a key that is not Enabled or not symmetric (KMS API Reference,
    /// KeyMetadata, `KeyState`).
    pub fn of_key_state(state: &str, spec: &str) -> Reason {
        match state {
            "Enabled" if spec != "SYMMETRIC_DEFAULT" => Reason::NotSymmetric,
            "Enabled" => Reason::Enabled,
            "Disabled" => Reason::KeyDisabled,
            "PendingDeletion" => Reason::KeyPendingDeletion,
            "PendingImport" => Reason::KeyPendingImport,
            "PendingReplicaDeletion" => Reason::KeyPendingReplicaDeletion,
            "Unavailable" => Reason::KeyUnavailable,
            "Creating" => Reason::KeyCreating,
            "Updating" => Reason::KeyUpdating,
            _ => Reason::KeyStateUnknown,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: Kind,
    pub status: State,
    pub reason: Reason,
    /// Shared: most bindings' messages are the same text as many others' (a key's, a
    /// role's), and the daemon keeps every binding's status.
    pub message: Arc<str>,
    /// When `status` last changed: Unix seconds.
    pub since: u64,
}

impl Condition {
    /// Whether `status` lists it: not `True`, or `True` with news (a launch that failed
    /// for a reason outside the operator's reach).
    pub fn notable(&self) -> bool {
        self.status != State::True || self.reason == Reason::LaunchFailedOther
    }
}
