//! How `iam-policy` names the groups the operator updates and the service-linked roles it
//! manages: one by one while the policy fits IAM's size limits, else by what a condition
//! or a wildcard can say (a tag the groups carry, name prefixes, every Auto Scaling
//! service-linked role of the account), so that the policy fits at any fleet size, and an
//! onboarding within that scope needs no policy change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use std::sync::Arc;

use crate::core::model::desired::Binding;
use crate::core::model::select::{Origin, Selection, Selector, TagValue};
use crate::core::model::{AccountId, AsgRef, KeyArn, AUTOSCALING_SERVICE, DEFAULT_SLR_NAME};

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

/// For `iam-policy`: each allowed key of each selector as a binding of a group of its
/// account and Regions (named `*`, for no group is known before a sweep).
pub fn selector_bindings(selectors: &[Selector]) -> impl Iterator<Item = Binding> + '_ {
    selectors.iter().flat_map(|s| {
        s.regions.iter().flat_map(move |region| {
            let asg = AsgRef::new(s.account, region.as_str(), "*");
            let origin =
                Origin::Selector(Arc::new(Selection { selector: s.name.clone(), refused: None, managed_by: None }));
            let in_region = move |k: &&KeyArn| k.region() == region;
            let foreign: Vec<KeyArn> =
                s.allowed_keys.iter().filter(in_region).filter(|k| k.account() != &s.account).cloned().collect();
            let binding = move |key: KeyArn, reencrypt_from: Option<Arc<[KeyArn]>>| Binding {
                asg: asg.clone(),
                key,
                slr_suffix: s.slr_suffix.clone(),
                reencrypt_from,
                reencrypt_parameter: None,
                origin: origin.clone(),
            };
            let out: Vec<Binding> = match &s.reencrypt_with {
                Some(with) if with.region() == region && !foreign.is_empty() => {
                    let own =
                        s.allowed_keys.iter().filter(in_region).filter(|k| k.account() == &s.account && *k != with);
                    own.map(|k| binding(k.clone(), None))
                        .chain([binding(with.clone(), Some(Arc::from(foreign)))])
                        .collect()
                }
                _ => s.allowed_keys.iter().filter(in_region).map(|k| binding(k.clone(), None)).collect(),
            };
            out
        })
    })
}

/// The group writes of a selector: any group of its account and Regions (or of its name
/// patterns) that carries its tags (`autoscaling:ResourceTag/KEY`; a tag any value will
/// do, by `Null` false: the key is present).
pub fn selected_groups(s: &Selector, partition: &str) -> (BTreeSet<String>, Value) {
    let names: Vec<String> = match s.match_names.is_empty() {
        true => vec!["*".to_owned()],
        false => {
            s.match_names.iter().map(|p| if p.contains(['*', '?']) { p.clone() } else { format!("{p}*") }).collect()
        }
    };
    let resources = s
        .regions
        .iter()
        .flat_map(|r| {
            names.iter().map(move |n| {
                format!("arn:{partition}:autoscaling:{r}:{}:autoScalingGroup:*:autoScalingGroupName/{n}", s.account)
            })
        })
        .collect();
    let mut equals = serde_json::Map::new();
    let mut present = serde_json::Map::new();
    for (k, v) in &s.match_tags {
        match v {
            TagValue::Is(v) => equals.insert(format!("autoscaling:ResourceTag/{k}"), json!(v)),
            TagValue::Any => present.insert(format!("autoscaling:ResourceTag/{k}"), json!("false")),
        };
    }
    let mut condition = serde_json::Map::new();
    if !equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(equals));
    }
    if !present.is_empty() {
        condition.insert("Null".into(), Value::Object(present));
    }
    (resources, Value::Object(condition))
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
