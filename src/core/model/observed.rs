//! What AWS has: the reads one pass needs ([`Reads`]), and what they saw ([`Observed`]).

use std::collections::{BTreeMap, BTreeSet};

use super::launch::{GroupLaunch, ReencryptReads};
use super::{AccountId, Asg, AsgRef, DryRun, Failure, Grant, KeyArn, KeyInfo, LaunchActivity, Role, Slr};

/// What one pass of observation saw. Each entry is the result of one read; a failed read
/// fails only the bindings that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Accounts whose credentials could not be had (the assume-role failed).
    pub account_errors: BTreeMap<AccountId, Failure>,
    /// Service-linked roles by (account, role name); `Ok(None)` when absent.
    pub roles: BTreeMap<(AccountId, String), Result<Option<Role>, Failure>>,
    /// Each key as configured (a key or alias ARN), as DescribeKey shows it.
    pub keys: BTreeMap<KeyArn, Result<KeyInfo, Failure>>,
    /// Key policy text by key (its own ARN, an alias resolved).
    pub key_policies: BTreeMap<KeyArn, Result<String, Failure>>,
    /// Grants by key (its own ARN), for keys used across accounts.
    pub grants: BTreeMap<KeyArn, Result<Vec<Grant>, Failure>>,
    /// ASGs; `Ok(None)` when the group does not exist.
    pub asgs: BTreeMap<AsgRef, Result<Option<Asg>, Failure>>,
    /// Each group's most recent launch (`Ok(None)`: none among its recent activities).
    /// Read only on full passes (start, resync, one-shot commands); absent otherwise.
    pub launches: BTreeMap<AsgRef, Result<Option<LaunchActivity>, Failure>>,
    /// The keys each group's launches use (full passes only).
    pub launch_keys: BTreeMap<AsgRef, Result<GroupLaunch, Failure>>,
    /// Hand-off keys: whether a dry run of the role's grant, made with the group
    /// account's credentials, would succeed (KMS Developer Guide, "Testing your
    /// permissions").
    pub handoff: BTreeMap<(KeyArn, Slr), Result<DryRun, Failure>>,
    /// Re-encryption: copies found, templates' latest versions, and who else uses them.
    pub reencrypt: ReencryptReads,
    /// With prune on, before an access is pruned: the groups of its account and Region,
    /// each with its role, and what it launches with for those on a role in question.
    pub role_users: BTreeMap<(AccountId, String), Result<Vec<RoleUser>, Failure>>,
}

/// A group, as the prune step sees it: on which role it launches, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleUser {
    pub asg: AsgRef,
    /// Its `ServiceLinkedRoleARN` (AWS names the default role when none was given).
    pub role_arn: String,
    /// What its launches use: read only for a group on a role in question (`None`: not
    /// read, its role being none of them).
    pub launch: Option<Result<GroupLaunch, Failure>>,
}

/// Which groups of one account and Region the prune step must know the launches of:
/// those on one of `roles` (service-linked role ARNs), or every group (`any_role`, for an
/// account's root, through which every role of the account reaches the key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersWanted {
    pub any_role: bool,
    pub roles: BTreeSet<String>,
}

impl UsersWanted {
    pub fn wants(&self, role_arn: &str) -> bool {
        self.any_role || self.roles.contains(role_arn)
    }

    pub fn merge(&mut self, other: &UsersWanted) {
        self.any_role |= other.any_role;
        self.roles.extend(other.roles.iter().cloned());
    }
}

impl Observed {
    /// Takes in a newer observation: what it saw replaces what this one saw.
    pub fn absorb(&mut self, newer: Observed) {
        // Credentials are had per round: the newer round's failures are the current ones.
        self.account_errors = newer.account_errors;
        self.roles.extend(newer.roles);
        self.keys.extend(newer.keys);
        self.key_policies.extend(newer.key_policies);
        self.grants.extend(newer.grants);
        self.asgs.extend(newer.asgs);
        self.launches.extend(newer.launches);
        self.launch_keys.extend(newer.launch_keys);
        self.handoff.extend(newer.handoff);
        self.reencrypt.absorb(newer.reencrypt);
        self.role_users.extend(newer.role_users);
    }
}

/// How much a pass reads. A full pass (at start, on resync, and for the one-shot
/// commands) also reads what changes rarely but matters to whether a group can launch:
/// its recent launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Quick,
    Full,
}

/// The reads one pass needs, derived from the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    pub roles: BTreeSet<Slr>,
    /// Keys as configured (key or alias ARNs): each is described, and its policy read.
    pub keys: BTreeSet<KeyArn>,
    /// Keys whose grants must be listed (used from another account), as configured.
    pub grant_keys: BTreeSet<KeyArn>,
    /// ASGs per (account, region).
    pub asgs: BTreeMap<(AccountId, String), BTreeSet<AsgRef>>,
    /// Every account that must be acted in, with its role when it is not the caller's.
    pub accounts: BTreeSet<AccountId>,
    /// Groups whose recent launches are read (full passes only).
    pub launches: BTreeSet<AsgRef>,
    /// Hand-off keys (see [`Desired::is_handoff`](super::desired::Desired::is_handoff)), each with the roles that need its grant. Not
    /// in `keys`: they are described, and their grants listed, with the group account's
    /// credentials, and their policies are never read.
    pub handoff: BTreeMap<KeyArn, BTreeSet<Slr>>,
    /// Groups re-encrypted (`strategy: reencrypt`): what they launch is read every pass,
    /// since that is what their bindings change.
    pub reencrypt: BTreeSet<AsgRef>,
}
