//! The changes a plan makes: each one AWS write, why it is needed, and the bindings that
//! need it.

use crate::core::model::{AccountId, AsgRef, BindingId, Instance, KeyArn, Slr};
use crate::core::policy::Need;
use crate::core::reencrypt::{OwnCopy, Write};

/// One AWS write call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateServiceLinkedRole {
        slr: Slr,
    },
    /// The policy is read again right before it is written, and `needs` are merged into
    /// what is read then: PutKeyPolicy has no condition, so an edit made since the pass
    /// observed the key must not be lost. `policy` is the merge of the observed policy,
    /// shown by `plan`.
    ///
    /// `prune` (principals no current binding explains) are removed from the statements
    /// of `instance` in that same fresh read, before `needs` are merged in.
    PutKeyPolicy {
        key: KeyArn,
        needs: Vec<Need>,
        prune: Vec<String>,
        instance: Instance,
        policy: String,
        /// The size of the policy as read, in bytes: `plan` shows it beside `policy`'s,
        /// against KMS's limit.
        before_bytes: usize,
    },
    /// Created with the credentials of the role's account, the ASG account (procedure
    /// case 2), under the operator's name for the role. `role_id` is None only while the
    /// role does not exist yet; the grant is named once it does.
    CreateGrant {
        key: KeyArn,
        slr: Slr,
        role_id: Option<String>,
        instance: Instance,
    },
    /// One of the operator's own grants that no longer does its job (it falls short, or
    /// its grantee was deleted), retired with the credentials of the account that created
    /// it: the ASG account.
    RetireGrant {
        key: KeyArn,
        slr: Slr,
        grant_id: String,
    },
    UpdateAutoScalingGroup {
        asg: AsgRef,
        service_linked_role_arn: String,
    },
    /// Re-encryption (`strategy: reencrypt`): one EC2 or Auto Scaling write for `asg`,
    /// made with its account's credentials, re-encrypting with `key` (its own ARN).
    Reencrypt {
        asg: AsgRef,
        key: KeyArn,
        write: Write,
    },
    /// `defaults.reencryptCleanup`: one of the operator's image copies that nothing
    /// launches or may launch any more, deregistered and then its snapshots deleted, with
    /// its account's credentials. Made for no binding.
    DeleteCopy {
        account: AccountId,
        region: String,
        copy: OwnCopy,
    },
}

impl Change {
    /// How many phases a plan runs in; see [`Change::phase`].
    pub const PHASES: u8 = 6;

    pub fn action(&self) -> &'static str {
        match self {
            Change::CreateServiceLinkedRole { .. } => "CreateServiceLinkedRole",
            Change::PutKeyPolicy { .. } => "PutKeyPolicy",
            Change::CreateGrant { .. } => "CreateGrant",
            Change::RetireGrant { .. } => "RetireGrant",
            Change::UpdateAutoScalingGroup { .. } => "UpdateAutoScalingGroup",
            Change::Reencrypt { write, .. } => match write {
                Write::CopyImage { .. } => "CopyImage",
                Write::CreateVersion { .. } => "CreateLaunchTemplateVersion",
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => "UpdateAutoScalingGroup",
                Write::CopyConfiguration { .. } => "CreateLaunchConfiguration",
                Write::PutParameter { .. } => "PutParameter",
            },
            Change::DeleteCopy { .. } => "DeregisterImage",
        }
    }

    /// The account whose credentials make the call.
    pub fn account(&self) -> &AccountId {
        match self {
            Change::CreateServiceLinkedRole { slr } => &slr.account,
            Change::PutKeyPolicy { key, .. } => key.account(),
            Change::CreateGrant { slr, .. } | Change::RetireGrant { slr, .. } => &slr.account,
            Change::UpdateAutoScalingGroup { asg, .. } | Change::Reencrypt { asg, .. } => &asg.account,
            Change::DeleteCopy { account, .. } => account,
        }
    }

    /// None for IAM, which is global.
    pub fn region(&self) -> Option<&str> {
        match self {
            Change::CreateServiceLinkedRole { .. } => None,
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } | Change::RetireGrant { key, .. } => {
                Some(key.region())
            }
            Change::UpdateAutoScalingGroup { asg, .. } | Change::Reencrypt { asg, .. } => Some(&asg.region),
            Change::DeleteCopy { region, .. } => Some(region),
        }
    }

    pub fn target(&self) -> String {
        match self {
            Change::CreateServiceLinkedRole { slr } => slr.name(),
            Change::PutKeyPolicy { key, .. } | Change::CreateGrant { key, .. } | Change::RetireGrant { key, .. } => {
                key.to_string()
            }
            Change::UpdateAutoScalingGroup { asg, .. } => asg.name.clone(),
            Change::Reencrypt { asg, write, .. } => match write {
                Write::CopyImage { source_image, .. } => source_image.clone(),
                Write::CreateVersion { template_id, .. } => template_id.clone(),
                Write::PointGroup { .. } | Write::UseConfiguration { .. } => asg.name.clone(),
                Write::CopyConfiguration { name, .. } | Write::PutParameter { name, .. } => name.clone(),
            },
            Change::DeleteCopy { copy, .. } => copy.image_id.clone(),
        }
    }

    /// Changes run in phases: a role must exist before a policy or grant names it, an ASG
    /// is switched to its role only once the role can use the key, a group launches a
    /// re-encrypted image only once its role is set, and a grant is retired only after its
    /// replacement exists. An image copy changes no launch: it starts early.
    pub fn phase(&self) -> u8 {
        match self {
            Change::CreateServiceLinkedRole { .. } => 0,
            Change::PutKeyPolicy { .. } | Change::Reencrypt { write: Write::CopyImage { .. }, .. } => 1,
            Change::CreateGrant { .. } => 2,
            Change::UpdateAutoScalingGroup { .. } => 3,
            Change::Reencrypt { .. } => 4,
            Change::RetireGrant { .. } | Change::DeleteCopy { .. } => 5,
        }
    }
}

/// A change, why it is needed, and the bindings that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    pub change: Change,
    pub reason: String,
    pub bindings: Vec<BindingId>,
}

impl PlannedChange {
    /// The key of a change made for no binding: a prune only.
    pub fn prune_only_key(&self) -> Option<&KeyArn> {
        match &self.change {
            Change::PutKeyPolicy { key, .. } | Change::RetireGrant { key, .. } if self.bindings.is_empty() => Some(key),
            _ => None,
        }
    }
}
