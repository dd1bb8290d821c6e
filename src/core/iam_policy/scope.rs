//! How `iam-policy` names the groups the operator updates and the service-linked roles it
//! manages: one by one while the policy fits IAM's size limits, else by what a condition
//! or a wildcard can say (a tag the groups carry, name prefixes, every Auto Scaling
//! service-linked role of the account), so that the policy fits at any fleet size, and an
//! onboarding within that scope needs no policy change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, AUTOSCALING_SERVICE, DEFAULT_SLR_NAME};

/// What the user asked for: a tag the operator's groups carry, or name prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub group_tag: Option<(String, String)>,
    pub group_prefixes: Vec<String>,
}

impl Scope {
    /// Whether the user chose how groups are named (a tag or prefixes) rather than
    /// leaving it to the config's names.
    pub fn is_chosen(&self) -> bool {
        self.group_tag.is_some() || !self.group_prefixes.is_empty()
    }
}

/// How `UpdateAutoScalingGroup` names its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GroupScope {
    /// Each configured group's ARN.
    #[default]
    Exact,
    /// Any group that carries this tag (`autoscaling:ResourceTag/KEY`; EC2 Auto Scaling
    /// User Guide, "Control access with tags").
    Tag(String, String),
    /// Any group whose name starts with one of these.
    Prefixes(Vec<String>),
}

/// How the role statements name the service-linked roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RoleScope {
    /// Each configured role's ARN.
    #[default]
    Exact,
    /// Every Auto Scaling service-linked role of the account:
    /// `.../autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling*`.
    AllAutoScaling,
}

/// The ARN pattern of every Auto Scaling service-linked role of `account`.
pub fn all_autoscaling_roles(account: &AccountId, partition: &str) -> String {
    format!("arn:{partition}:iam::{account}:role/aws-service-role/{AUTOSCALING_SERVICE}/{DEFAULT_SLR_NAME}*")
}

impl RoleScope {
    pub fn resources(&self, mine: &[&Binding], account: &AccountId, partition: &str) -> BTreeSet<String> {
        match self {
            RoleScope::Exact => mine.iter().map(|b| b.slr().arn()).collect(),
            RoleScope::AllAutoScaling => BTreeSet::from([all_autoscaling_roles(account, partition)]),
        }
    }
}

impl GroupScope {
    /// The resources of the group update statement, and its condition.
    pub fn resources(
        &self,
        mine: &[&Binding],
        account: &AccountId,
        partition: &str,
    ) -> (BTreeSet<String>, Option<Value>) {
        let arn = |region: &str, name: &str| {
            format!("arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{name}")
        };
        let regions: BTreeSet<&str> = mine.iter().map(|b| b.asg.region.as_str()).collect();
        match self {
            GroupScope::Exact => (mine.iter().map(|b| arn(&b.asg.region, &b.asg.name)).collect(), None),
            GroupScope::Tag(key, value) => {
                let condition = json!({"StringEquals": {format!("autoscaling:ResourceTag/{key}"): value}});
                (regions.iter().map(|r| arn(r, "*")).collect(), Some(condition))
            }
            GroupScope::Prefixes(prefixes) => {
                (regions.iter().flat_map(|r| prefixes.iter().map(move |p| arn(r, p))).collect(), None)
            }
        }
    }
}

/// Name patterns for `names`, `depth` characters deep: names that share their first
/// `depth` characters with another are named by that prefix and `*`; the rest as they
/// are. The deeper, the closer to the names themselves (and the longer the list).
pub fn prefixes(names: &BTreeSet<&str>, depth: usize) -> Vec<String> {
    let mut by_prefix: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in names {
        let cut = n.char_indices().nth(depth).map_or(n.len(), |(i, _)| i);
        by_prefix.entry(&n[..cut]).or_default().push(n);
    }
    by_prefix
        .into_iter()
        .map(|(prefix, ns)| match ns.as_slice() {
            [only] if *only == prefix => (*only).to_owned(),
            [only] if only.len() > prefix.len() && depth > 0 => (*only).to_owned(),
            _ => format!("{prefix}*"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_the_names_that_share_them_with_a_wildcard_and_the_rest_as_they_are() {
        let names: BTreeSet<&str> = ["web-1", "web-2", "api", "batch-nightly"].into_iter().collect();
        assert_eq!(prefixes(&names, 4), ["api", "batch-nightly", "web-*"]);
        assert_eq!(prefixes(&names, 20), ["api", "batch-nightly", "web-1", "web-2"]);
        assert_eq!(prefixes(&names, 0), ["*"]);
        let many: Vec<String> = (0..1000).map(|i| format!("asg-{i:05}")).collect();
        let many: BTreeSet<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(prefixes(&many, 6), ["asg-00*"]);
        assert_eq!(prefixes(&many, 7).len(), 10);
    }
}
