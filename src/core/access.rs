//! Whether the IAM policy that `iam-policy` prints is what lets the operator manage a key.
//!
//! A KMS key's policy decides first. IAM policies count only where the key policy
//! delegates to the account, through a statement for the account's root (the "root
//! statement" of the default key policy); where it does not, the operator's own identity
//! must be named in the key policy for the actions the operator calls on the key (KMS
//! Developer Guide, "Key policies in AWS KMS", "Allows access to the AWS account and
//! enables IAM policies"). Pure: computed from an observation.

use std::collections::BTreeMap;

use crate::core::model::desired::Desired;
use crate::core::model::observed::Observed;
use crate::core::model::{AccountId, KeyArn, KeyManager};
use crate::core::policy::{coverage, Conditions, Coverage, PolicyDocument, PrincipalIds};

/// How the operator may call what it needs on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The key policy delegates to the key's account: the IAM policy decides.
    Account,
    /// The key policy names the operator's identity (as written there).
    Operator(String),
    /// Neither, for these actions.
    Missing(Vec<&'static str>),
    /// A Deny in the key policy stops the operator (the Sid, if any, and the action).
    Denied(Option<String>, &'static str),
    /// The key policy could not be read (the reason).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAccess {
    pub key: KeyArn,
    /// The key's account, whose credentials the operator manages the key with.
    pub account: AccountId,
    /// The operator's identity in that account (an IAM user or role, or an assumed-role
    /// session), when known.
    pub operator: Option<String>,
    pub access: Access,
}

impl KeyAccess {
    /// `account`, `operator`, `none`, `denied` or `unknown`.
    pub fn kind(&self) -> &'static str {
        match self.access {
            Access::Account => "account",
            Access::Operator(_) => "operator",
            Access::Missing(_) => "none",
            Access::Denied(..) => "denied",
            Access::Unknown(_) => "unknown",
        }
    }

    pub fn message(&self) -> String {
        let who = self.operator.as_deref().unwrap_or("the operator's identity");
        match &self.access {
            Access::Account => format!(
                "the key policy delegates to account {} (its root statement): the IAM policy from `iam-policy` is what lets the operator manage this key",
                self.account
            ),
            Access::Operator(named) => format!(
                "the key policy does not delegate to account {} but names the operator ({named}): the key policy, not the IAM policy, lets the operator manage this key",
                self.account
            ),
            Access::Missing(actions) => format!(
                "the key policy neither delegates to account {} nor names the operator ({who}) for {}: no IAM policy can allow them; add the operator to the key policy for them, or a root statement",
                self.account,
                actions.join(", ")
            ),
            Access::Denied(sid, action) => format!(
                "a Deny in the key policy{} stops the operator ({who}) from {action}",
                sid.as_deref().map(|s| format!(" (Sid {s})")).unwrap_or_default()
            ),
            Access::Unknown(why) => format!("the key policy could not be read: {why}"),
        }
    }
}

/// What the operator calls on a key with its owner's credentials: it describes the key
/// and reads and writes its policy, and lists the grants of a key other accounts use.
fn actions(cross_account: bool) -> Vec<&'static str> {
    let mut a = vec!["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"];
    if cross_account {
        a.push("kms:ListGrants");
    }
    a
}

/// One entry per customer managed key of `desired` whose description was read, in key
/// order. `operators` holds the operator's identity (ARN) in each account it knows it.
pub fn key_access(desired: &Desired, observed: &Observed, operators: &BTreeMap<AccountId, String>) -> Vec<KeyAccess> {
    let mut keys: BTreeMap<&KeyArn, bool> = BTreeMap::new();
    for b in &desired.bindings {
        if let Some(Ok(info)) = observed.keys.get(&b.key) {
            if info.manager == KeyManager::Customer {
                *keys.entry(&info.arn).or_default() |= b.is_cross_account();
            }
        }
    }
    // A hand-off key's owner account is none the operator acts in: nothing to say.
    keys.into_iter()
        .filter(|(key, _)| operators.contains_key(key.account()) || observed.key_policies.contains_key(*key))
        .map(|(key, cross)| {
            let account = *key.account();
            let operator = operators.get(&account).cloned();
            let access = match observed.key_policies.get(key) {
                Some(Ok(text)) => match PolicyDocument::parse(text) {
                    Ok(doc) => judge(&doc, key, &account, operator.as_deref(), &actions(cross)),
                    Err(e) => Access::Unknown(e.to_string()),
                },
                Some(Err(f)) => Access::Unknown(f.message.clone()),
                None => Access::Unknown("not read on this pass".into()),
            };
            KeyAccess { key: key.clone(), account, operator, access }
        })
        .collect()
}

fn judge(
    doc: &PolicyDocument,
    key: &KeyArn,
    account: &AccountId,
    operator: Option<&str>,
    actions: &[&'static str],
) -> Access {
    let root = PrincipalIds::account_root(account, key.partition());
    let named = operator.map(|o| as_written(doc, o));
    let who = named.as_deref().map(|n| PrincipalIds::role(n, None));
    let mut missing = Vec::new();
    let mut by_account = true;
    for &action in actions {
        if let Some(w) = &who {
            if let Coverage::Denied(sid) = coverage(doc, w, action, key.as_str(), Conditions::None) {
                return Access::Denied(sid, action);
            }
        }
        let delegated = coverage(doc, &root, action, key.as_str(), Conditions::None) == Coverage::Allowed;
        by_account &= delegated;
        let direct =
            who.as_ref().is_some_and(|w| coverage(doc, w, action, key.as_str(), Conditions::None) == Coverage::Allowed);
        if !delegated && !direct {
            missing.push(action);
        }
    }
    match (by_account, missing.is_empty(), named) {
        (true, _, _) => Access::Account,
        (false, true, Some(n)) => Access::Operator(n),
        _ => Access::Missing(missing),
    }
}

/// The operator's identity as the key policy would name it: an assumed-role session
/// (`arn:P:sts::A:assumed-role/NAME/SESSION`) is named in a policy by its role's ARN,
/// whose path the session ARN does not show, so a role of that name named in the policy
/// is taken as it; else the role ARN without a path.
fn as_written(doc: &PolicyDocument, operator: &str) -> String {
    let Some((head, rest)) = operator.split_once(":assumed-role/") else { return operator.to_owned() };
    let Some(name) = rest.split('/').next() else { return operator.to_owned() };
    let prefix = format!("{}:role/", head.replacen(":sts:", ":iam:", 1));
    let written = doc.principals().into_iter().find(|p| p.starts_with(&prefix) && p.rsplit('/').next() == Some(name));
    written.unwrap_or_else(|| format!("{prefix}{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::KeyInfo;
    use serde_json::json;

    const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";

    fn desired() -> Desired {
        crate::core::config::parse(
            &format!("version: 1\nbindings:\n  - {{asg: web, account: \"111122223333\", key: {KEY}, serviceLinkedRoleSuffix: CMK}}\n"),
            "t",
        )
        .unwrap()
    }

    fn observed(policy: serde_json::Value) -> Observed {
        let key = KeyArn::parse(KEY).unwrap();
        let mut o = Observed::default();
        let info = KeyInfo {
            arn: key.clone(),
            state: "Enabled".into(),
            spec: "SYMMETRIC_DEFAULT".into(),
            manager: KeyManager::Customer,
        };
        o.keys.insert(key.clone(), Ok(info));
        o.key_policies.insert(key, Ok(policy.to_string()));
        o
    }

    fn access(policy: serde_json::Value, operator: &str) -> KeyAccess {
        let operators = BTreeMap::from([(AccountId::parse("111122223333").unwrap(), operator.to_owned())]);
        let mut all = key_access(&desired(), &observed(policy), &operators);
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn allow(principal: &str, actions: serde_json::Value) -> serde_json::Value {
        json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"})
    }

    const ADMIN: &str = "arn:aws:iam::111122223333:role/ops/key-admin";
    const SESSION: &str = "arn:aws:sts::111122223333:assumed-role/key-admin/asg-cmk-operator";

    #[test]
    fn the_default_root_statement_delegates_to_iam() {
        let a = access(json!({"Statement": [allow("arn:aws:iam::111122223333:root", json!("kms:*"))]}), SESSION);
        assert_eq!(a.access, Access::Account);
        assert_eq!(a.kind(), "account");
        assert!(a.message().contains("the IAM policy from `iam-policy` is what lets the operator manage this key"));
    }

    #[test]
    fn a_policy_naming_the_operators_role_is_found_through_its_session_and_path() {
        let p =
            json!({"Statement": [allow(ADMIN, json!(["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"]))]});
        let a = access(p, SESSION);
        assert_eq!(a.access, Access::Operator(ADMIN.to_owned()));
        assert!(a.message().contains("the key policy, not the IAM policy"), "{}", a.message());
    }

    #[test]
    fn neither_names_the_actions_no_iam_policy_can_allow() {
        let p = json!({"Statement": [allow(ADMIN, json!(["kms:DescribeKey", "kms:GetKeyPolicy"]))]});
        let a = access(p, SESSION);
        assert_eq!(a.access, Access::Missing(vec!["kms:PutKeyPolicy"]));
        assert!(a.message().contains("no IAM policy can allow them"), "{}", a.message());
        // An IAM user as the operator, named nowhere.
        let a = access(json!({"Statement": []}), "arn:aws:iam::111122223333:user/ops");
        assert_eq!(a.access, Access::Missing(vec!["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"]));
    }

    #[test]
    fn a_deny_for_the_operator_is_named() {
        let p = json!({"Statement": [
            allow("arn:aws:iam::111122223333:root", json!("kms:*")),
            {"Sid": "NoWrites", "Effect": "Deny", "Principal": {"AWS": ADMIN}, "Action": "kms:PutKeyPolicy", "Resource": "*"}
        ]});
        let a = access(p, SESSION);
        assert_eq!(a.access, Access::Denied(Some("NoWrites".into()), "kms:PutKeyPolicy"));
        assert!(a.message().contains("(Sid NoWrites)"), "{}", a.message());
    }

    #[test]
    fn an_unreadable_policy_and_aws_managed_keys() {
        let mut o = observed(json!({}));
        let key = KeyArn::parse(KEY).unwrap();
        o.key_policies.insert(key.clone(), Err(crate::core::model::Failure::terminal("AccessDeniedException")));
        let all = key_access(&desired(), &o, &BTreeMap::new());
        assert_eq!(all[0].access, Access::Unknown("AccessDeniedException".into()));
        if let Some(Ok(info)) = o.keys.get_mut(&key) {
            info.manager = KeyManager::Aws;
        }
        assert!(key_access(&desired(), &o, &BTreeMap::new()).is_empty(), "AWS managed keys need nothing");
    }
}
