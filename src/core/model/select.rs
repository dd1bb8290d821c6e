//! Selectors: groups chosen by their tags (and, optionally, names) instead of one by one,
//! each with the keys it may grant; and what a sweep of them found. Plain data: the
//! expansion into bindings is [`crate::core::select`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::launch::GroupLaunch;
use super::{AccountId, AsgRef, Failure, KeyArn};

/// The tag EKS puts on the Auto Scaling group of a managed node group: such a group is
/// EKS's, and the operator never updates it (EKS User Guide, "Managed node groups").
pub const EKS_NODEGROUP_TAG: &str = "eks:nodegroup-name";

/// One entry of `selectors`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: Arc<str>,
    pub account: AccountId,
    /// At least one; `defaults.region` when the entry names none.
    pub regions: Vec<String>,
    /// Every tag must match. Sorted by key.
    pub match_tags: Vec<(String, TagValue)>,
    /// When not empty, a group's name must match one: a glob (`*`, `?`) or, without
    /// either, a prefix.
    pub match_names: Vec<String>,
    /// The keys a group it selects may be granted, as configured (key or alias ARNs). A
    /// group that launches with a customer managed key outside them gets nothing.
    pub allowed_keys: Vec<KeyArn>,
    pub slr_suffix: Option<Arc<str>>,
    /// `strategy: reencrypt`: the group's own key that replaces other accounts' keys.
    pub reencrypt_with: Option<KeyArn>,
}

/// What a tag of `matchTags` must be.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagValue {
    /// `"*"`: present, with any value.
    Any,
    Is(String),
}

impl Selector {
    /// Whether a group of this name and these tags is one of this selector's.
    pub fn selects(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        let tagged = self.match_tags.iter().all(|(k, want)| match (want, tags.get(k)) {
            (TagValue::Any, Some(_)) => true,
            (TagValue::Is(v), Some(have)) => v == have,
            (_, None) => false,
        });
        tagged && (self.match_names.is_empty() || self.match_names.iter().any(|p| name_matches(p, name)))
    }

    /// The filters of DescribeAutoScalingGroups that list this selector's groups on the
    /// server: `tag:KEY` with the value for each tag with one, and `tag-key` for one tag
    /// that any value will do (a second such tag cannot be said in the same request: the
    /// values of one filter are alternatives). What the filters cannot say,
    /// [`Selector::selects`] checks. (EC2 Auto Scaling API Reference, `Filter`: filters
    /// are joined with AND.)
    pub fn filters(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in &self.match_tags {
            match v {
                TagValue::Is(v) => out.push((format!("tag:{k}"), vec![v.clone()])),
                TagValue::Any if !out.iter().any(|(n, _)| n == "tag-key") => {
                    out.push(("tag-key".to_owned(), vec![k.clone()]))
                }
                TagValue::Any => {}
            }
        }
        out
    }
}

/// Whether `name` matches `pattern`: a glob when it has `*` or `?`, else a prefix.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return name.starts_with(pattern);
    }
    wildcard(pattern, name, false)
}

/// IAM-style wildcard match: `*` any run, `?` one character; with `fold`, ASCII
/// case-insensitive (policy actions and resources), else exact (group names, condition
/// values). Works on bytes without allocating, iterative with one backtrack point: linear
/// in practice, never exponential. A `?` may match one byte of a multi-byte character,
/// which no name, ARN or account id here contains.
pub fn wildcard(pattern: &str, text: &str, fold: bool) -> bool {
    let (p, s) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        let same = pi < p.len() && if fold { p[pi].eq_ignore_ascii_case(&s[si]) } else { p[pi] == s[si] };
        if pi < p.len() && (p[pi] == b'?' || same) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A group a sweep found for a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub asg: AsgRef,
    pub tags: BTreeMap<String, String>,
    /// The group's `ServiceLinkedRoleARN` (None: the default role).
    pub role_arn: Option<String>,
    /// What its launches use, or why that could not be read.
    pub launch: Result<GroupLaunch, Failure>,
}

/// What one sweep found: for each selector, its groups in each of its places (account and
/// Region), or why a place could not be listed; and each allowed key as DescribeKey
/// resolves it (an alias to its key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub places: BTreeMap<(Arc<str>, String), Result<Vec<Found>, Failure>>,
    pub allowed: BTreeMap<KeyArn, Result<KeyArn, Failure>>,
}

/// Why a binding came to be: the config's `bindings`, or a selector's sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    #[default]
    Config,
    Selector(Arc<Selection>),
}

/// A selector's binding: which selector, and what it found of the group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selection {
    pub selector: Arc<str>,
    /// Why nothing is done for the group: a key outside `allowedKeys`, two selectors that
    /// disagree, or what it launches with could not be known. The judgement reports it
    /// (`KeyAllowed False`), and nothing is read or written for it.
    pub refused: Option<Refusal>,
    /// Another service manages the group (EKS, for a managed node group): it keeps the
    /// role it has, which its keys are made ready for, and is never updated.
    pub managed_by: Option<Arc<str>>,
}

/// Why a selector's group gets nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The group launches with a customer managed key the selector does not allow.
    KeyNotAllowed,
    /// Two selectors select the group with different roles or strategies.
    SelectorConflict,
    /// What the group launches with could not be read, or a key of it described.
    LaunchKeysUnknown,
}

impl Origin {
    pub fn selection(&self) -> Option<&Selection> {
        match self {
            Origin::Config => None,
            Origin::Selector(s) => Some(s),
        }
    }

    /// The selector's name, for a selector's binding.
    pub fn selector(&self) -> Option<&Arc<str>> {
        self.selection().map(|s| &s.selector)
    }

    pub fn refused(&self) -> Option<&Refusal> {
        self.selection().and_then(|s| s.refused.as_ref())
    }

    pub fn managed_by(&self) -> Option<&Arc<str>> {
        self.selection().and_then(|s| s.managed_by.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_by_prefix_or_glob() {
        assert!(name_matches("eks-", "eks-general-1a2b"));
        assert!(!name_matches("eks-", "web"));
        assert!(name_matches("eks-*-1a2b", "eks-general-1a2b"));
        assert!(name_matches("ci-??", "ci-42"));
        assert!(!name_matches("ci-??", "ci-420"));
        assert!(name_matches("*", ""));
        assert!(!name_matches("a*b*c", "a-b-d"));
        assert!(name_matches("a*b*c", "axxbyyc"));
        let long = "a".repeat(200);
        assert!(!name_matches(&format!("{}b", "a*".repeat(50)), &long), "no exponential backtracking");
    }

    #[test]
    fn a_selector_selects_by_every_tag_and_a_name_and_filters_what_the_server_can() {
        let s = Selector {
            name: "nodes".into(),
            account: AccountId::parse("111122223333").unwrap(),
            regions: vec!["us-west-2".into()],
            match_tags: vec![
                ("team".into(), TagValue::Is("data".into())),
                ("cmk".into(), TagValue::Any),
                ("env".into(), TagValue::Any),
            ],
            match_names: vec!["eks-".into()],
            allowed_keys: vec![],
            slr_suffix: None,
            reencrypt_with: None,
        };
        let tags = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(s.selects("eks-a", &tags(&[("team", "data"), ("cmk", ""), ("env", "prod")])));
        assert!(!s.selects("eks-a", &tags(&[("team", "data"), ("cmk", "yes")])), "env is missing");
        assert!(!s.selects("eks-a", &tags(&[("team", "web"), ("cmk", "yes"), ("env", "prod")])));
        assert!(!s.selects("web", &tags(&[("team", "data"), ("cmk", "yes"), ("env", "prod")])));
        assert_eq!(
            s.filters(),
            vec![("tag:team".to_owned(), vec!["data".to_owned()]), ("tag-key".to_owned(), vec!["cmk".to_owned()])]
        );
    }
}
