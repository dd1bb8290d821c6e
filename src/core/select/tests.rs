use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::core::model::launch::LaunchKey;
use crate::core::model::select::TagValue;
use crate::core::model::{AccountId, Failure};

const ACCT: &str = "111122223333";
const OWN_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const OTHER_KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
const STRAY_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/33333333-3333-3333-3333-333333333333";
const ALIAS: &str = "arn:aws:kms:us-west-2:111122223333:alias/ebs";

fn key(k: &str) -> KeyArn {
    KeyArn::parse(k).unwrap()
}

fn selector(name: &str, allowed: &[&str], suffix: Option<&str>) -> Selector {
    Selector {
        name: name.into(),
        account: AccountId::parse(ACCT).unwrap(),
        regions: vec!["us-west-2".into()],
        match_tags: vec![("cmk".into(), TagValue::Is("yes".into()))],
        match_names: vec![],
        allowed_keys: allowed.iter().map(|k| key(k)).collect(),
        slr_suffix: suffix.map(Arc::from),
        reencrypt_with: None,
    }
}

fn found(name: &str, tags: &[(&str, &str)], keys: &[(&str, KeyManager)]) -> Found {
    let keys = keys
        .iter()
        .map(|(k, m)| LaunchKey {
            key_ref: k.to_string(),
            source: format!("launch template lt-1 ({name}) version 1: /dev/xvdb"),
            resolved: Ok((key(k), *m)),
        })
        .collect();
    Found {
        asg: AsgRef::new(AccountId::parse(ACCT).unwrap(), "us-west-2", name),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        role_arn: None,
        launch: Ok(GroupLaunch { keys, ..Default::default() }),
    }
}

fn config(selectors: Vec<Selector>) -> Desired {
    Desired { selectors, ..Desired::default() }
}

fn swept(places: Vec<(&str, Result<Vec<Found>, Failure>)>) -> Swept {
    Swept {
        places: places.into_iter().map(|(s, r)| ((Arc::from(s), "us-west-2".to_owned()), r)).collect(),
        allowed: BTreeMap::new(),
    }
}

const C: KeyManager = KeyManager::Customer;

#[test]
fn a_tagged_group_on_an_allowed_key_is_bound_with_the_selectors_role() {
    let d = config(vec![selector("nodes", &[OWN_KEY], Some("CMK"))]);
    let s = swept(vec![(
        "nodes",
        Ok(vec![found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C)]), found("web", &[], &[(OWN_KEY, C)])]),
    )]);
    let out = expand(&d, &s, &Desired::default());
    assert_eq!(out.bindings.len(), 1, "the untagged group is not selected: {:?}", out.bindings);
    let b = &out.bindings[0];
    assert_eq!((b.asg.name.as_str(), b.key.as_str(), b.slr_suffix.as_deref()), ("eks-a", OWN_KEY, Some("CMK")));
    assert_eq!(b.origin.selector().map(|s| &**s), Some("nodes"));
    assert!(b.origin.refused().is_none());
    assert_eq!(out.operator.config_bindings, 1);
}

#[test]
fn a_group_with_a_key_outside_the_allowlist_gets_every_key_refused() {
    let d = config(vec![selector("nodes", &[OWN_KEY], Some("CMK"))]);
    let g = found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C), (STRAY_KEY, C)]);
    let out = expand(&d, &swept(vec![("nodes", Ok(vec![g]))]), &Desired::default());
    assert_eq!(out.bindings.len(), 2);
    for b in &out.bindings {
        let r = b.origin.refused().expect("refused");
        assert_eq!(r.reason, RefusalReason::KeyNotAllowed);
        assert!(r.message.contains(STRAY_KEY) && r.message.contains("selector nodes"), "{}", r.message);
    }
}

#[test]
fn aws_managed_keys_need_nothing_and_an_alias_allows_the_key_it_names() {
    let mut d = config(vec![selector("nodes", &[ALIAS], None)]);
    d.selectors[0].match_tags = vec![("cmk".into(), TagValue::Any)];
    let ebs = "arn:aws:kms:us-west-2:111122223333:key/44444444-4444-4444-4444-444444444444";
    let g = found("eks-a", &[("cmk", "anything")], &[(OWN_KEY, C), (ebs, KeyManager::Aws)]);
    let mut s = swept(vec![("nodes", Ok(vec![g]))]);
    s.allowed.insert(key(ALIAS), Ok(key(OWN_KEY)));
    let out = expand(&d, &s, &Desired::default());
    assert_eq!(out.bindings.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), [ALIAS]);
    assert!(out.bindings[0].origin.refused().is_none());
}

#[test]
fn a_group_the_config_names_follows_its_binding() {
    let text = format!("version: 1\nbindings:\n  - {{asg: eks-a, account: \"{ACCT}\", key: {OWN_KEY}, serviceLinkedRoleSuffix: MINE}}\n");
    let mut d = crate::core::config::parse(&text, "t").unwrap();
    d.selectors = vec![selector("nodes", &[OWN_KEY], Some("CMK"))];
    let g = found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C)]);
    let out = expand(&d, &swept(vec![("nodes", Ok(vec![g]))]), &Desired::default());
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].slr_suffix.as_deref(), Some("MINE"));
    assert!(out.bindings[0].origin.selector().is_none());
}

#[test]
fn two_selectors_that_disagree_about_a_group_leave_it_alone() {
    let d = config(vec![selector("a", &[OWN_KEY], Some("A")), selector("b", &[OWN_KEY], Some("B"))]);
    let g = found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C)]);
    let s = swept(vec![("a", Ok(vec![g.clone()])), ("b", Ok(vec![g]))]);
    let out = expand(&d, &s, &Desired::default());
    assert_eq!(out.bindings.len(), 1);
    let r = out.bindings[0].origin.refused().expect("refused");
    assert_eq!(r.reason, RefusalReason::SelectorConflict);
    assert!(r.message.contains("selectors a, b"), "{}", r.message);
    // Agreeing selectors share the group, and its allowed keys.
    let d = config(vec![selector("a", &[OWN_KEY], Some("A")), selector("b", &[OTHER_KEY], Some("A"))]);
    let g = found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C), (OTHER_KEY, C)]);
    let out = expand(&d, &swept(vec![("a", Ok(vec![g.clone()])), ("b", Ok(vec![g]))]), &Desired::default());
    assert_eq!(out.bindings.len(), 2);
    assert!(out
        .bindings
        .iter()
        .all(|b| b.origin.refused().is_none() && b.origin.selector().map(|s| &**s) == Some("a+b")));
}

#[test]
fn an_eks_managed_group_keeps_the_role_it_has() {
    let d = config(vec![selector("nodes", &[OWN_KEY], Some("CMK"))]);
    let mut g = found("eks-ng-1a2b", &[("cmk", "yes"), (EKS_NODEGROUP_TAG, "general")], &[(OWN_KEY, C)]);
    let out = expand(&d, &swept(vec![("nodes", Ok(vec![g.clone()]))]), &Desired::default());
    assert_eq!(out.bindings[0].slr_suffix, None, "no role named: the default one");
    assert_eq!(out.bindings[0].origin.managed_by().map(|s| &**s), Some("EKS managed node group general"));
    g.role_arn = Some(format!(
        "arn:aws:iam::{ACCT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_Eks"
    ));
    let out = expand(&d, &swept(vec![("nodes", Ok(vec![g]))]), &Desired::default());
    assert_eq!(out.bindings[0].slr_suffix.as_deref(), Some("Eks"));
}

#[test]
fn what_a_sweep_could_not_see_keeps_what_the_last_one_found() {
    let d = config(vec![selector("nodes", &[OWN_KEY], Some("CMK"))]);
    let first = expand(
        &d,
        &swept(vec![("nodes", Ok(vec![found("eks-a", &[("cmk", "yes")], &[(OWN_KEY, C)])]))]),
        &Desired::default(),
    );
    assert_eq!(first.bindings.len(), 1);
    // The place could not be listed.
    let failed = swept(vec![("nodes", Err(Failure::terminal("throttled")))]);
    assert_eq!(expand(&d, &failed, &first).bindings, first.bindings);
    // The group was listed, but what it launches with could not be read.
    let mut g = found("eks-a", &[("cmk", "yes")], &[]);
    g.launch = Err(Failure::terminal("DescribeLaunchTemplateVersions: throttled"));
    assert_eq!(expand(&d, &swept(vec![("nodes", Ok(vec![g]))]), &first).bindings, first.bindings);
    // The group is gone, or lost its tag: its binding goes.
    assert!(expand(&d, &swept(vec![("nodes", Ok(vec![]))]), &first).bindings.is_empty());
}

#[test]
fn a_reencrypting_selector_replaces_other_accounts_keys_with_its_own() {
    let mut sel = selector("nodes", &[OTHER_KEY, OWN_KEY], Some("CMK"));
    sel.reencrypt_with = Some(key(OWN_KEY));
    let d = config(vec![sel]);
    let g = found("eks-a", &[("cmk", "yes")], &[(OTHER_KEY, C)]);
    let out = expand(&d, &swept(vec![("nodes", Ok(vec![g]))]), &Desired::default());
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].key.as_str(), OWN_KEY);
    assert_eq!(out.bindings[0].reencrypt_from.as_deref(), Some(&[key(OTHER_KEY)][..]));
}
