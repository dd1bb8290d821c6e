//! `iam-policy`: the least-privilege IAM policy for the operator's identity in one account,
//! derived from the config alone (no AWS call).
//!
//! An account can play three parts, and gets the statements of each it plays:
//! - **home**: the account whose credentials the operator runs with (any account not
//!   listed under `accounts`); it assumes the listed roles;
//! - **ASG account**: it owns bindings' ASGs, so it manages their service-linked roles, the
//!   groups, its own keys' policies (case 1), and the grants on other accounts' keys
//!   (case 2);
//! - **key owner**: it owns keys that other accounts' ASGs use (case 2), so it manages their
//!   policies and lists their grants.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

mod pack;
mod reencrypt;
use reencrypt::replaced;
mod scope;
pub mod trust;

pub use pack::{pack, size, MAX_DOCUMENTS, MAX_MANAGED_POLICY};
pub use scope::{GroupScope, RoleScope, Scope};

use crate::core::model::desired::{Binding, Desired};
use crate::core::model::{AccountId, KeyArn, AUTOSCALING_SERVICE};
use crate::core::policy::GRANT_OPERATIONS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamPolicyError {
    #[error("bindings use ASGs in several accounts ({0}); choose one with --account")]
    Ambiguous(String),
    #[error("the config has no bindings")]
    Empty,
    #[error("account {0} owns no ASG and no key in this config")]
    NotInConfig(AccountId),
    #[error("the policy does not fit in {MAX_DOCUMENTS} managed policies of {MAX_MANAGED_POLICY} characters, however its groups and roles are named: split the config by account or region, or scope the groups by a tag (--group-tag)")]
    TooLarge,
}

/// Picks the account: the given one, or the single ASG account of all bindings.
pub fn default_account(desired: &Desired, given: Option<AccountId>) -> Result<AccountId, IamPolicyError> {
    if let Some(a) = given {
        return Ok(a);
    }
    let asg_accounts: BTreeSet<&AccountId> =
        desired.bindings.iter().map(|b| &b.asg.account).chain(desired.selectors.iter().map(|s| &s.account)).collect();
    match asg_accounts.len() {
        0 => Err(IamPolicyError::Empty),
        1 => Ok(*asg_accounts.into_iter().next().expect("one")),
        _ => Err(IamPolicyError::Ambiguous(asg_accounts.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))),
    }
}

fn statement(sid: &str, actions: &[&str], resources: &BTreeSet<String>, condition: Option<Value>) -> Value {
    let mut s = json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources });
    if let Some(c) = condition {
        s["Condition"] = c;
    }
    s
}

/// The conditions of `a` and `b` together (every operator of both must hold; the two
/// never share an operator here).
fn both(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    match (a, b) {
        (Some(Value::Object(mut a)), Some(Value::Object(b))) => {
            a.extend(b);
            Some(Value::Object(a))
        }
        (a, b) => a.or(b),
    }
}

/// Statements allowing `actions` on `keys` under `condition`: key ARNs by name, and keys
/// named by an alias (whose key is not known without asking AWS) through the
/// `kms:ResourceAliases` condition, which matches a key by the aliases it has (KMS
/// Developer Guide, "Using aliases to control access to KMS keys").
fn key_statements(
    out: &mut Vec<Value>,
    sid: &str,
    actions: &[&str],
    keys: &BTreeSet<&KeyArn>,
    condition: Option<Value>,
) {
    let direct: BTreeSet<String> = keys.iter().filter(|k| !k.is_alias()).map(|k| k.to_string()).collect();
    if !direct.is_empty() {
        out.push(statement(sid, actions, &direct, condition.clone()));
    }
    let mut by_place: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.is_alias()) {
        let any_key = format!("arn:{}:kms:{}:{}:key/*", k.partition(), k.region(), k.account());
        by_place.entry(any_key).or_default().insert(k.key_id());
    }
    for (i, (any_key, aliases)) in by_place.into_iter().enumerate() {
        let by_alias = json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": aliases}});
        let sid = format!("{sid}ByAlias{}", if i == 0 { String::new() } else { (i + 1).to_string() });
        out.push(statement(&sid, actions, &BTreeSet::from([any_key]), both(Some(by_alias), condition.clone())));
    }
}

/// The policy document for `account`: exactly the calls the operator makes with its
/// credentials, each on the resources it makes them on, groups and roles named one by one.
pub fn policy(desired: &Desired, account: &AccountId) -> Result<Value, IamPolicyError> {
    let statements = statements(desired, account, &Scoped::default())?;
    Ok(json!({ "Version": "2012-10-17", "Statement": statements }))
}

/// What `iam-policy` gives for one account: documents IAM accepts, and what it chose to
/// get there, said once each.
#[derive(Debug, Clone, PartialEq)]
pub struct Policies {
    pub documents: Vec<Value>,
    pub notes: Vec<String>,
}

/// The operator's policy for `account` in documents of at most [`MAX_MANAGED_POLICY`]
/// characters. Groups and roles are named one by one while that fits one document;
/// else groups by `scope` (a tag they carry, or name prefixes), or by the longest name
/// prefixes that fit, and roles, if still needed, as every Auto Scaling service-linked
/// role of the account. What does not fit one document is split, into at most
/// [`MAX_DOCUMENTS`], and said so.
pub fn policies(desired: &Desired, account: &AccountId, scope: &Scope) -> Result<Policies, IamPolicyError> {
    let names: BTreeSet<&str> =
        desired.bindings.iter().filter(|b| &b.asg.account == account).map(|b| b.asg.name.as_str()).collect();
    let groups: Vec<GroupScope> = match (&scope.group_tag, scope.group_prefixes.is_empty()) {
        (Some((k, v)), _) => vec![GroupScope::Tag(k.clone(), v.clone())],
        (None, false) => vec![GroupScope::Prefixes(scope.group_prefixes.iter().map(|p| format!("{p}*")).collect())],
        (None, true) => {
            let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            let mut derived: Vec<Vec<String>> = Vec::new();
            for depth in (0..longest).rev() {
                let p = scope::prefixes(&names, depth);
                if derived.last() != Some(&p) {
                    derived.push(p);
                }
            }
            std::iter::once(GroupScope::Exact).chain(derived.into_iter().map(GroupScope::Prefixes)).collect()
        }
    };
    // A scope the user chose is there so that onboarding a group needs no policy change:
    // that holds only if the group's role, whatever its suffix, is covered too.
    let role_scopes: &[RoleScope] =
        if scope.is_chosen() { &[RoleScope::AllAutoScaling] } else { &[RoleScope::Exact, RoleScope::AllAutoScaling] };
    let mut fallback: Option<(Scoped, Vec<Value>)> = None;
    for roles in role_scopes {
        for g in &groups {
            let scoped = Scoped { groups: g.clone(), roles: roles.clone() };
            let Some(docs) = pack(statements(desired, account, &scoped)?, MAX_MANAGED_POLICY) else { continue };
            if docs.len() == 1 {
                return Ok(Policies { notes: notes(&scoped, scope, 1), documents: docs });
            }
            if docs.len() <= MAX_DOCUMENTS && fallback.is_none() {
                fallback = Some((scoped, docs));
            }
        }
    }
    match fallback {
        Some((scoped, docs)) => Ok(Policies { notes: notes(&scoped, scope, docs.len()), documents: docs }),
        None => Err(IamPolicyError::TooLarge),
    }
}

/// What a choice of scope means, said to the person who attaches the policy.
fn notes(scoped: &Scoped, scope: &Scope, documents: usize) -> Vec<String> {
    let mut out = Vec::new();
    if let GroupScope::Prefixes(p) = &scoped.groups {
        if scope.group_prefixes.is_empty() {
            out.push(format!(
                "the groups are too many to name one by one in a policy IAM accepts: UpdateAutoScalingGroup is allowed on groups named {}, which may match groups the config does not name; --group-tag KEY=VALUE scopes it by a tag the groups carry instead",
                p.join(", ")
            ));
        }
    }
    if scoped.roles == RoleScope::AllAutoScaling && !scope.is_chosen() {
        out.push("the service-linked roles are too many to name one by one: the role statements name every Auto Scaling service-linked role of the account (AWSServiceRoleForAutoScaling*)".to_owned());
    }
    if documents > 1 {
        out.push(format!(
            "the policy is split into {documents} documents of at most {MAX_MANAGED_POLICY} characters each (IAM's limit for a managed policy): attach every one of them"
        ));
    }
    out
}

/// How the statements name the groups the operator updates and the roles it manages.
#[derive(Debug, Clone, Default)]
pub struct Scoped {
    pub groups: GroupScope,
    pub roles: RoleScope,
}

/// The statements for `account`, with groups and roles as `scoped` says.
pub fn statements(desired: &Desired, account: &AccountId, scoped: &Scoped) -> Result<Vec<Value>, IamPolicyError> {
    // A selector's groups are not known until it sweeps: each of its allowed keys stands
    // in as a binding of a group of the selector's account and Regions, and its group
    // writes are scoped by its tags.
    let with_selected;
    let desired = if desired.selectors.is_empty() {
        desired
    } else {
        with_selected = Desired {
            bindings: desired.bindings.iter().cloned().chain(scope::selector_bindings(&desired.selectors)).collect(),
            ..desired.clone()
        };
        &with_selected
    };
    let selecting = desired.selectors.iter().any(|s| &s.account == account);
    // A selected group keeps its role when EKS manages it, and that role is not known
    // before the sweep: every Auto Scaling role of the account.
    let scoped = &Scoped {
        groups: scoped.groups.clone(),
        roles: if selecting { RoleScope::AllAutoScaling } else { scoped.roles.clone() },
    };
    let in_asg = |a: &AccountId| a == account;
    let mine: Vec<_> = desired.bindings.iter().filter(|b| in_asg(&b.asg.account)).collect();
    let owned_keys_used_elsewhere: BTreeSet<&KeyArn> = desired
        .bindings
        .iter()
        .filter(|b| b.key.account() == account && b.is_cross_account())
        .map(|b| &b.key)
        .collect();
    let replaced_here = replaced_keys_owned(desired, account);
    // Any account not listed under `accounts` may be the one the operator runs in; it
    // assumes the listed roles.
    let assumes_roles = !desired.accounts.contains_key(account) && !desired.accounts.is_empty();
    let queue_here = desired.events.as_ref().is_some_and(|e| &e.account == account);
    let nothing_here = mine.is_empty() && owned_keys_used_elsewhere.is_empty() && replaced_here.is_empty();
    if nothing_here && !assumes_roles && !queue_here {
        return Err(IamPolicyError::NotInConfig(*account));
    }

    let mut statements = Vec::new();
    if !mine.is_empty() {
        group_account_statements(&mut statements, desired, account, &mine, scoped);
    }
    key_statements(
        &mut statements,
        "ManageKeyPoliciesAndReadGrantsForOtherAccounts",
        &["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:ListGrants"],
        &owned_keys_used_elsewhere,
        None,
    );
    key_statements(&mut statements, "ReadPoliciesOfKeysCopiesReplace", &["kms:GetKeyPolicy"], &replaced_here, None);
    if assumes_roles {
        let roles: BTreeSet<String> = desired.accounts.values().cloned().collect();
        statements.push(statement("AssumeRolesInOtherAccounts", &["sts:AssumeRole"], &roles, None));
    }
    statements.extend(events_statement(desired, account));
    Ok(statements)
}

/// Keys of `account` that re-encryption replaces in other accounts' groups, when the
/// operator acts in `account` (listed under `accounts`): their policies are read, with
/// its credentials, before a copy.
fn replaced_keys_owned<'a>(desired: &'a Desired, account: &AccountId) -> BTreeSet<&'a KeyArn> {
    if !desired.accounts.contains_key(account) {
        return BTreeSet::new();
    }
    let others = desired.bindings.iter().filter(|b| b.asg.account != *account);
    others.flat_map(replaced).filter(|k| k.account() == account).collect()
}

/// The queue of change events, in its own account: received, deleted once taken in, and
/// its attributes read once at start.
fn events_statement(desired: &Desired, account: &AccountId) -> Option<Value> {
    let e = desired.events.as_ref().filter(|e| &e.account == account)?;
    let partition = desired.bindings.first().map_or("aws", |b| b.key.partition());
    Some(statement(
        "ReceiveChangeEvents",
        &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
        &BTreeSet::from([e.queue_arn(partition)]),
        None,
    ))
}

/// The statements of an account with groups in the config: their roles, the reads of what
/// they launch with, the groups' updates, and the keys, grants and copies they need.
fn group_account_statements(
    statements: &mut Vec<Value>,
    desired: &Desired,
    account: &AccountId,
    mine: &[&Binding],
    scoped: &Scoped,
) {
    let partition = mine[0].key.partition();
    let slrs = scoped.roles.resources(mine, account, partition);
    let own_keys: BTreeSet<&KeyArn> = mine.iter().filter(|b| !b.is_cross_account()).map(|b| &b.key).collect();
    role_statements(statements, &slrs);
    read_statements(statements, partition);
    let named: Vec<&Binding> = mine.iter().copied().filter(|b| b.origin.selector().is_none()).collect();
    if !named.is_empty() {
        let (asgs, condition) = scoped.groups.resources(&named, account, partition);
        statements.push(statement(
            "UpdateConfiguredAutoScalingGroups",
            &["autoscaling:UpdateAutoScalingGroup"],
            &asgs,
            condition,
        ));
    }
    let selectors = desired.selectors.iter().filter(|s| &s.account == account);
    for (i, s) in selectors.enumerate() {
        let (asgs, condition) = scope::selected_groups(s, partition);
        let sid =
            format!("UpdateSelectedAutoScalingGroups{}", if i == 0 { String::new() } else { (i + 1).to_string() });
        statements.push(statement(&sid, &["autoscaling:UpdateAutoScalingGroup"], &asgs, Some(condition)));
    }
    // With prune on, the grants on its own keys are listed too: a group of another
    // account that left the config may have left its grant there, to be retired.
    let own_key_actions: &[&str] = if desired.operator.prune {
        &["kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:ListGrants"]
    } else {
        &["kms:GetKeyPolicy", "kms:PutKeyPolicy"]
    };
    key_statements(statements, "ManageOwnKeyPolicies", own_key_actions, &own_keys, None);
    grant_statements(statements, mine, account, partition, (desired.operator.prune, &scoped.roles));
    reencrypt::reencrypt_statements(statements, mine, account, partition);
    if desired.operator.reencrypt_cleanup {
        reencrypt::cleanup_statements(statements, mine, account, partition);
    }
    // Hand-off keys (their owner has no `accounts` entry): the operator cannot list
    // their grants with the owner's credentials, so it lists the grants this account
    // may retire, which are the ones it made (KMS API Reference, ListRetirableGrants:
    // an account-wide list, Resource "*"). The dry run of the grant is the
    // CreateGrant above, with the same conditions.
    // An account not listed under `accounts` is the one the operator runs in; a key of
    // another unlisted account is then a hand-off key. (A listed ASG account's keys in
    // an unlisted account are taken to be the home account's.)
    let listed = |a: &AccountId| desired.accounts.contains_key(a);
    if !listed(account) && mine.iter().any(|b| b.is_cross_account() && !listed(b.key.account())) {
        statements.push(statement(
            "ListGrantsThisAccountMayRetire",
            &["kms:ListRetirableGrants"],
            &BTreeSet::from(["*".to_owned()]),
            None,
        ));
    }
}

/// The groups' service-linked roles: read, created, and passed to Auto Scaling.
fn role_statements(statements: &mut Vec<Value>, slrs: &BTreeSet<String>) {
    statements.push(statement("ReadServiceLinkedRoles", &["iam:GetRole"], slrs, None));
    statements.push(statement(
        "CreateAutoScalingServiceLinkedRoles",
        &["iam:CreateServiceLinkedRole"],
        slrs,
        Some(json!({"StringEquals": {"iam:AWSServiceName": AUTOSCALING_SERVICE}})),
    ));
    // Scoped to the roles, with no iam:PassedToService condition: the EC2 Auto
    // Scaling User Guide ("Control which service-linked role can be passed") scopes
    // PassRole for these roles by ARN alone and documents no such key for them, so a
    // condition on it could refuse the group update in AWS. It would add nothing
    // either: a service-linked role's trust policy names its service only, and no one
    // can edit it (IAM User Guide, "Using service-linked roles").
    statements.push(statement("PassServiceLinkedRolesToAutoScaling", &["iam:PassRole"], slrs, None));
}

/// The reads of the groups and of what they launch with.
fn read_statements(statements: &mut Vec<Value>, partition: &str) {
    // These reads take no resource: their Resource must be "*".
    statements.push(statement(
        "ReadGroupsAndWhatTheyLaunchWith",
        &[
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeLaunchConfigurations",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeImages",
            "ec2:DescribeSnapshots",
            "ec2:GetEbsEncryptionByDefault",
            "ec2:GetEbsDefaultKmsKeyId",
        ],
        &BTreeSet::from(["*".to_owned()]),
        None,
    ));
    // The keys the groups launch with are found in their launch templates and AMIs,
    // so they are not known here: DescribeKey (metadata only) on any key. This also
    // covers the configured keys of this account, which are described every pass.
    statements.push(statement(
        "DescribeKeysGroupsLaunchWith",
        &["kms:DescribeKey"],
        &BTreeSet::from([format!("arn:{partition}:kms:*:*:key/*")]),
        None,
    ));
}

/// Case 2: the grants this account makes on other accounts' keys, and retires.
///
/// CreateGrant is allowed only for the grant the operator makes (KMS Developer Guide,
/// "AWS KMS condition keys"): to the service-linked roles that use those keys
/// (`kms:GranteePrincipal`), for the eight operations a launch needs and no other
/// (`ForAllValues:StringEquals kms:GrantOperations`), retirable by this account
/// (`kms:RetiringPrincipal`). Keys are grouped by the roles that use them, so a role may
/// be granted only the keys its groups are bound to.
///
/// RetireGrant has no such condition: KMS defines none that names the grant for it (the
/// grant condition keys apply to CreateGrant), and `kms:RetireGrant` in an IAM policy
/// only delegates what a grant already allows, here the grants that name this account as
/// their retiring principal or that it created (KMS Developer Guide, "Retiring and
/// revoking grants"). It is scoped to the same keys.
fn grant_statements(
    out: &mut Vec<Value>,
    mine: &[&Binding],
    account: &AccountId,
    partition: &str,
    (prune, roles): (bool, &RoleScope),
) {
    let mut by_roles: BTreeMap<&KeyArn, BTreeSet<String>> = BTreeMap::new();
    for b in mine.iter().filter(|b| b.is_cross_account()) {
        by_roles.entry(&b.key).or_default().insert(b.slr().arn());
    }
    let retired: BTreeSet<&KeyArn> = by_roles.keys().copied().collect();
    // Re-encryption: before a copy, a dry run of the same grant on each key it replaces
    // tells whether the key's owner lets this account use the key.
    for b in mine.iter().filter(|b| b.reencrypt_from.is_some()) {
        for k in replaced(b) {
            by_roles.entry(k).or_default().insert(b.slr().arn());
        }
    }
    let mut groups: BTreeMap<BTreeSet<String>, BTreeSet<&KeyArn>> = BTreeMap::new();
    for (key, roles) in by_roles {
        groups.entry(roles).or_default().insert(key);
    }
    // With every Auto Scaling service-linked role of the account named by one pattern,
    // the keys need not be told apart by role.
    if let RoleScope::AllAutoScaling = roles {
        let all: BTreeSet<&KeyArn> = groups.into_values().flatten().collect();
        groups = BTreeMap::from([(BTreeSet::new(), all)]);
    }
    for (i, (grantees, keys)) in groups.iter().enumerate() {
        let mut condition = json!({
            "StringEquals": {"kms:RetiringPrincipal": account.root_arn(partition)},
            "ForAllValues:StringEquals": {"kms:GrantOperations": GRANT_OPERATIONS},
        });
        match roles {
            RoleScope::Exact => condition["StringEquals"]["kms:GranteePrincipal"] = json!(grantees),
            RoleScope::AllAutoScaling => {
                condition["ArnLike"] = json!({"kms:GranteePrincipal": scope::all_autoscaling_roles(account, partition)})
            }
        }
        let sid = format!(
            "GrantServiceLinkedRolesOtherAccountsKeys{}",
            if i == 0 { String::new() } else { (i + 1).to_string() }
        );
        key_statements(out, &sid, &["kms:CreateGrant"], keys, Some(condition));
    }
    if prune {
        // With prune on, a grant this account made on a key the config no longer names
        // for it is retired too, so the keys cannot be listed here: any key. RetireGrant
        // delegates only the grants that name this account as their retiring principal
        // or that it created (see above), so this lets it retire nothing else.
        let any = BTreeSet::from([format!("arn:{partition}:kms:*:*:key/*")]);
        out.push(statement("RetireOwnGrantsOnOtherAccountsKeys", &["kms:RetireGrant"], &any, None));
    } else {
        key_statements(out, "RetireOwnGrantsOnOtherAccountsKeys", &["kms:RetireGrant"], &retired, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        crate::core::config::parse(
            "version: 1\naccounts:\n  - {id: \"444455556666\", roleArn: arn:aws:iam::444455556666:role/key-admin}\nbindings:\n  - {asg: web, account: \"111122223333\", key: arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111, serviceLinkedRoleSuffix: CMK}\n  - {asg: api, account: \"111122223333\", key: arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222}\n",
            "t",
        )
        .unwrap()
    }

    fn acct(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    fn sids(p: &Value) -> Vec<&str> {
        p["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect()
    }

    fn find<'a>(p: &'a Value, sid: &str) -> &'a Value {
        p["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid).unwrap()
    }

    #[test]
    fn asg_account_gets_roles_groups_own_keys_grants_and_assume_role() {
        let d = desired();
        let p = policy(&d, &default_account(&d, None).unwrap()).unwrap();
        assert_eq!(
            sids(&p),
            [
                "ReadServiceLinkedRoles",
                "CreateAutoScalingServiceLinkedRoles",
                "PassServiceLinkedRolesToAutoScaling",
                "ReadGroupsAndWhatTheyLaunchWith",
                "DescribeKeysGroupsLaunchWith",
                "UpdateConfiguredAutoScalingGroups",
                "ManageOwnKeyPolicies",
                "GrantServiceLinkedRolesOtherAccountsKeys",
                "RetireOwnGrantsOnOtherAccountsKeys",
                "AssumeRolesInOtherAccounts",
            ]
        );
        assert_eq!(
            find(&p, "ReadServiceLinkedRoles")["Resource"],
            json!([
                "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK"
            ])
        );
        assert_eq!(
            find(&p, "CreateAutoScalingServiceLinkedRoles")["Condition"]["StringEquals"]["iam:AWSServiceName"],
            "autoscaling.amazonaws.com"
        );
        assert_eq!(
            find(&p, "UpdateConfiguredAutoScalingGroups")["Resource"],
            json!([
                "arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/api",
                "arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/web"
            ])
        );
        for sid in ["GrantServiceLinkedRolesOtherAccountsKeys", "RetireOwnGrantsOnOtherAccountsKeys"] {
            assert_eq!(
                find(&p, sid)["Resource"],
                json!(["arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222"])
            );
        }
        assert_eq!(find(&p, "ManageOwnKeyPolicies")["Action"], json!(["kms:GetKeyPolicy", "kms:PutKeyPolicy"]));
        assert_eq!(find(&p, "PassServiceLinkedRolesToAutoScaling").get("Condition"), None);
        assert_eq!(
            find(&p, "AssumeRolesInOtherAccounts")["Resource"],
            json!(["arn:aws:iam::444455556666:role/key-admin"])
        );
    }

    #[test]
    fn a_handoff_key_adds_listing_the_grants_this_account_may_retire() {
        let handoff = "arn:aws:kms:us-west-2:999999999999:key/33333333-3333-3333-3333-333333333333";
        let mut d = desired();
        d.bindings.push(Binding {
            asg: crate::core::model::AsgRef::new(acct("111122223333"), "us-west-2", "handed-off"),
            key: KeyArn::parse(handoff).unwrap(),
            slr_suffix: None,
            reencrypt_from: None,
            reencrypt_parameter: None,
            origin: Default::default(),
        });
        let before = policy(&desired(), &acct("111122223333")).unwrap();
        assert!(!sids(&before).contains(&"ListGrantsThisAccountMayRetire"), "no hand-off key, no listing");
        let p = policy(&d, &acct("111122223333")).unwrap();
        let s = find(&p, "ListGrantsThisAccountMayRetire");
        assert_eq!(s["Action"], json!(["kms:ListRetirableGrants"]));
        assert_eq!(s["Resource"], json!(["*"]));
        // The dry run is the grant's own CreateGrant: the hand-off key is in its statement,
        // under the same conditions.
        let grant = sids(&p).into_iter().filter(|s| s.starts_with("GrantServiceLinkedRolesOtherAccountsKeys"));
        assert!(
            grant.map(|sid| find(&p, sid)).any(|s| s["Resource"].as_array().unwrap().contains(&json!(handoff))),
            "{p:#}"
        );
    }

    #[test]
    fn key_owner_account_gets_only_its_keys() {
        let p = policy(&desired(), &acct("444455556666")).unwrap();
        assert_eq!(sids(&p), ["ManageKeyPoliciesAndReadGrantsForOtherAccounts"]);
        let s = find(&p, "ManageKeyPoliciesAndReadGrantsForOtherAccounts");
        assert_eq!(s["Action"], json!(["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:ListGrants"]));
        assert_eq!(
            s["Resource"],
            json!(["arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222"])
        );
    }

    #[test]
    fn no_wildcard_actions_and_only_reads_on_star() {
        for account in ["111122223333", "444455556666"] {
            let p = policy(&desired(), &acct(account)).unwrap();
            for s in p["Statement"].as_array().unwrap() {
                for a in s["Action"].as_array().unwrap() {
                    let a = a.as_str().unwrap();
                    assert!(!a.contains('*'), "{a}");
                    let read = ["Describe", "Get", "List"].iter().any(|r| a.split(':').nth(1).unwrap().starts_with(r));
                    let anywhere = s["Resource"].as_array().unwrap().iter().any(|r| {
                        let r = r.as_str().unwrap();
                        r == "*" || r.ends_with(":key/*")
                    });
                    assert!(read || !anywhere || s.get("Condition").is_some(), "a write on a wildcard resource: {s}");
                }
            }
        }
    }

    #[test]
    fn several_asg_accounts_need_an_explicit_account() {
        let mut d = desired();
        let mut other = d.bindings[0].clone();
        other.asg =
            crate::core::model::AsgRef::new(acct("999988887777"), other.asg.region.clone(), other.asg.name.clone());
        d.bindings.push(other);
        assert_eq!(default_account(&d, None), Err(IamPolicyError::Ambiguous("111122223333, 999988887777".into())));
    }

    #[test]
    fn a_hub_account_that_owns_nothing_only_assumes_roles() {
        let p = policy(&desired(), &acct("123412341234")).unwrap();
        assert_eq!(sids(&p), ["AssumeRolesInOtherAccounts"]);
        let mut d = desired();
        d.accounts.clear();
        assert_eq!(policy(&d, &acct("123412341234")), Err(IamPolicyError::NotInConfig(acct("123412341234"))));
    }

    #[test]
    fn a_key_named_by_an_alias_is_allowed_through_the_alias_condition() {
        let d = crate::core::config::parse(
            "version: 1\nbindings:\n  - {asg: web, account: \"111122223333\", keys: [arn:aws:kms:us-west-2:111122223333:alias/ebs-data, arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111]}\n",
            "t",
        )
        .unwrap();
        let p = policy(&d, &acct("111122223333")).unwrap();
        assert_eq!(
            find(&p, "ManageOwnKeyPolicies")["Resource"],
            json!(["arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111"])
        );
        let by_alias = find(&p, "ManageOwnKeyPoliciesByAlias");
        assert_eq!(by_alias["Resource"], json!(["arn:aws:kms:us-west-2:111122223333:key/*"]));
        assert_eq!(
            by_alias["Condition"],
            json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": ["alias/ebs-data"]}})
        );
    }

    #[test]
    fn create_grant_is_only_for_the_roles_the_eight_operations_and_this_account_as_retirer() {
        let p = policy(&desired(), &acct("111122223333")).unwrap();
        let s = find(&p, "GrantServiceLinkedRolesOtherAccountsKeys");
        assert_eq!(s["Action"], json!(["kms:CreateGrant"]));
        assert_eq!(
            s["Condition"],
            json!({
                "StringEquals": {
                    "kms:GranteePrincipal": ["arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"],
                    "kms:RetiringPrincipal": "arn:aws:iam::111122223333:root",
                },
                "ForAllValues:StringEquals": {"kms:GrantOperations": GRANT_OPERATIONS},
            })
        );
        assert_eq!(find(&p, "RetireOwnGrantsOnOtherAccountsKeys")["Action"], json!(["kms:RetireGrant"]));
    }

    #[test]
    fn keys_used_by_different_roles_get_separate_grant_statements() {
        let d = crate::core::config::parse(
            "version: 1\nbindings:\n  - {asg: a, account: \"111122223333\", key: arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222, serviceLinkedRoleSuffix: A}\n  - {asg: b, account: \"111122223333\", key: arn:aws:kms:us-west-2:444455556666:key/33333333-3333-3333-3333-333333333333, serviceLinkedRoleSuffix: B}\n  - {asg: c, account: \"111122223333\", key: arn:aws:kms:us-west-2:444455556666:alias/shared, serviceLinkedRoleSuffix: B}\n",
            "t",
        )
        .unwrap();
        let p = policy(&d, &acct("111122223333")).unwrap();
        let grantee = |sid: &str| find(&p, sid)["Condition"]["StringEquals"]["kms:GranteePrincipal"].clone();
        let slr = |suffix: &str| {
            format!("arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_{suffix}")
        };
        assert_eq!(grantee("GrantServiceLinkedRolesOtherAccountsKeys"), json!([slr("A")]));
        assert_eq!(
            find(&p, "GrantServiceLinkedRolesOtherAccountsKeys")["Resource"],
            json!(["arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222"])
        );
        assert_eq!(grantee("GrantServiceLinkedRolesOtherAccountsKeys2"), json!([slr("B")]));
        // A key named by an alias: the role condition and the alias condition together.
        let by_alias = find(&p, "GrantServiceLinkedRolesOtherAccountsKeys2ByAlias");
        assert_eq!(by_alias["Condition"]["StringEquals"]["kms:GranteePrincipal"], json!([slr("B")]));
        assert_eq!(by_alias["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"], json!(["alias/shared"]));
        assert_eq!(by_alias["Resource"], json!(["arn:aws:kms:us-west-2:444455556666:key/*"]));
    }

    #[test]
    fn the_owner_of_a_key_copies_replace_lets_its_policy_be_read_when_it_is_listed() {
        let foreign = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
        let own = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
        let binding = format!("bindings:\n  - {{asg: web, account: \"111122223333\", key: {foreign}, strategy: reencrypt, reencryptWith: {own}}}\n");
        let listed = format!("version: 1\naccounts:\n  - id: \"444455556666\"\n    roleArn: arn:aws:iam::444455556666:role/key-admin\n{binding}");
        let d = crate::core::config::parse(&listed, "t").unwrap();
        let p = policy(&d, &acct("444455556666")).unwrap();
        let s = find(&p, "ReadPoliciesOfKeysCopiesReplace");
        assert_eq!((s["Action"].clone(), s["Resource"].clone()), (json!(["kms:GetKeyPolicy"]), json!([foreign])));
        // Not listed: the owner is never acted in, and nothing is asked of it.
        let d = crate::core::config::parse(&format!("version: 1\n{binding}"), "t").unwrap();
        assert!(policy(&d, &acct("444455556666")).is_err());
    }

    /// 1,000 groups over 10 keys (5 of this account, 5 of another), named as node groups
    /// and pipelines name them.
    fn fleet() -> Desired {
        let mut text = "version: 1\nbindings:\n".to_owned();
        for i in 0..1000 {
            let (account, k) = if i % 10 < 5 { ("111122223333", i % 10) } else { ("444455556666", i % 10) };
            let asg = if i % 2 == 0 { format!("eks-nodes-{i:04}-a1b2c3d4") } else { format!("pipeline-run-{i:04}") };
            text.push_str(&format!(
                "  - {{asg: {asg}, account: \"111122223333\", key: \"arn:aws:kms:us-west-2:{account}:key/{k:08}-1111-1111-1111-111111111111\", serviceLinkedRoleSuffix: S{}}}\n",
                i % 7
            ));
        }
        crate::core::config::parse(&text, "t").unwrap()
    }

    fn glob(pattern: &str, value: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == value,
            Some((head, rest)) => {
                value.starts_with(head) && (0..=value.len() - head.len()).any(|i| glob(rest, &value[head.len() + i..]))
            }
        }
    }

    fn group_statement(docs: &[Value]) -> &Value {
        docs.iter()
            .flat_map(|d| d["Statement"].as_array().unwrap())
            .find(|s| s["Sid"] == "UpdateConfiguredAutoScalingGroups")
            .unwrap()
    }

    #[test]
    fn a_thousand_groups_over_ten_keys_fit_in_documents_iam_accepts() {
        let d = fleet();
        let account = acct("111122223333");
        // One by one, the names alone are far over IAM's limit.
        assert!(size(&policy(&d, &account).unwrap()) > 10 * MAX_MANAGED_POLICY);
        let p = policies(&d, &account, &Scope::default()).unwrap();
        assert!(!p.documents.is_empty() && p.documents.len() <= MAX_DOCUMENTS, "{}", p.documents.len());
        for doc in &p.documents {
            assert!(size(doc) <= MAX_MANAGED_POLICY, "{} characters", size(doc));
        }
        // Every configured group is still allowed, by a prefix, and the note says so.
        let resources: Vec<&str> =
            group_statement(&p.documents)["Resource"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert!(resources.len() < 100, "{resources:?}");
        for b in &d.bindings {
            let arn = format!(
                "arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:0000-uuid:autoScalingGroupName/{}",
                b.asg.name
            );
            assert!(resources.iter().any(|r| glob(r, &arn)), "{arn} matches none of {resources:?}");
        }
        assert!(p.notes.iter().any(|n| n.contains("may match groups the config does not name")), "{:?}", p.notes);
        // The same statements as one by one, only named differently.
        let sids = |docs: &[Value]| -> BTreeSet<String> {
            docs.iter()
                .flat_map(|d| d["Statement"].as_array().unwrap())
                .map(|s| s["Sid"].as_str().unwrap().trim_end_matches(char::is_numeric).to_owned())
                .collect()
        };
        assert_eq!(sids(&p.documents), sids(&[policy(&d, &account).unwrap()]));
    }

    #[test]
    fn a_group_tag_scopes_the_updates_and_every_autoscaling_role_in_one_document() {
        let d = fleet();
        let scope = Scope { group_tag: Some(("asg-cmk-operator".into(), "managed".into())), group_prefixes: vec![] };
        let p = policies(&d, &acct("111122223333"), &scope).unwrap();
        assert_eq!(p.documents.len(), 1);
        assert!(size(&p.documents[0]) <= MAX_MANAGED_POLICY);
        let groups = group_statement(&p.documents);
        assert_eq!(
            groups["Resource"],
            json!(["arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/*"])
        );
        assert_eq!(
            groups["Condition"],
            json!({"StringEquals": {"autoscaling:ResourceTag/asg-cmk-operator": "managed"}})
        );
        // A new group's role, whatever its suffix, is covered: no policy change to onboard.
        let text = p.documents[0].to_string();
        assert!(text.contains("autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling*"), "{text}");
        assert!(!text.contains("AWSServiceRoleForAutoScaling_S3"), "{text}");
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn chosen_prefixes_name_the_groups_and_a_small_config_stays_one_by_one() {
        let d = desired();
        let account = acct("111122223333");
        let p = policies(&d, &account, &Scope::default()).unwrap();
        assert_eq!(p.documents, vec![policy(&d, &account).unwrap()], "a config that fits is named one by one");
        assert!(p.notes.is_empty());
        let scope = Scope { group_tag: None, group_prefixes: vec!["eks-".into(), "web".into()] };
        let p = policies(&d, &account, &scope).unwrap();
        assert_eq!(
            group_statement(&p.documents)["Resource"],
            json!([
                "arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/eks-*",
                "arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/web*"
            ])
        );
    }
}
