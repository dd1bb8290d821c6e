//! Selectors into bindings: what a sweep found, made into the bindings a pass reconciles.
//! Pure.
//!
//! A selected group is bound to each customer managed key it launches with, as the
//! config would bind it, when every such key is one its selector allows. When one is not
//! (or two selectors disagree about the group, or what it launches with is not known),
//! its bindings carry a [`Refusal`]: the judgement says why (`KeyAllowed False`), and
//! nothing is read or written for the group, which keeps its role. A group that the
//! config binds by name follows the config. A group EKS manages keeps its role, which its
//! keys are made ready for.
//!
//! A place (selector, account, Region) whose sweep failed keeps the bindings the last
//! sweep found there, and a group whose launches could not be read keeps its own: a
//! failed read is never taken for groups that left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core::model::desired::{Binding, Desired};
use crate::core::model::launch::GroupLaunch;
use crate::core::model::select::{
    Found, Origin, Refusal, RefusalReason, Selection, Selector, Swept, EKS_NODEGROUP_TAG,
};
use crate::core::model::{slr_suffix_of, AsgRef, KeyArn, KeyManager};

/// The config's bindings and every selector's, from `swept`; `previous` (the last
/// expansion) stands in where the sweep could not see.
pub fn expand(config: &Desired, swept: &Swept, previous: &Desired) -> Desired {
    let named: BTreeSet<&AsgRef> = config.bindings.iter().map(|b| &b.asg).collect();
    let mut candidates: BTreeMap<&AsgRef, Vec<(&Selector, &Found)>> = BTreeMap::new();
    let mut kept: Vec<Binding> = Vec::new();
    for s in &config.selectors {
        for region in &s.regions {
            match swept.places.get(&(s.name.clone(), region.clone())) {
                Some(Ok(found)) => {
                    for f in found.iter().filter(|f| s.selects(&f.asg.name, &f.tags) && !named.contains(&f.asg)) {
                        candidates.entry(&f.asg).or_default().push((s, f));
                    }
                }
                // Not listed this time: what the last sweep found there stands.
                _ => kept.extend(previous.bindings.iter().filter(|b| in_place(b, s, region)).cloned()),
            }
        }
    }
    let mut bindings = config.bindings.clone();
    let kept_groups: BTreeSet<AsgRef> = kept.iter().map(|b| b.asg.clone()).collect();
    bindings.extend(kept);
    for (asg, matched) in candidates {
        if kept_groups.contains(asg) {
            continue;
        }
        match group_bindings(asg, &matched, swept) {
            Some(found) => bindings.extend(found),
            // What it launches with could not be read: it keeps what it had.
            None => bindings.extend(previous.bindings.iter().filter(|b| &b.asg == asg).cloned()),
        }
    }
    let mut out = Desired { bindings, ..config.clone() };
    out.operator.config_bindings = out.bindings.len();
    out
}

/// Whether `b` is a binding that `s` found in `region`.
fn in_place(b: &Binding, s: &Selector, region: &str) -> bool {
    b.origin.selector() == Some(&s.name) && b.asg.region == region && b.asg.account == s.account
}

/// A selected group's bindings; None when what it launches with could not be read.
fn group_bindings(asg: &AsgRef, matched: &[(&Selector, &Found)], swept: &Swept) -> Option<Vec<Binding>> {
    let (s, found) = matched[0];
    let launch = found.launch.as_ref().ok()?;
    let managed_by = found.tags.get(EKS_NODEGROUP_TAG).map(|n| Arc::from(format!("EKS managed node group {n}")));
    let names: Vec<&str> = matched.iter().map(|(s, _)| &*s.name).collect();
    let (mut bound, mut refused) = sort_keys(launch, matched, swept, &names.join(", "));
    if matched.iter().any(|(o, _)| o.slr_suffix != s.slr_suffix || o.reencrypt_with != s.reencrypt_with) {
        let why = format!(
            "selectors {} all select the group, with different roles or strategies: nothing is written for it until one of them no longer does",
            names.join(", ")
        );
        let keys: Vec<KeyArn> = bound.iter().cloned().chain(refused.iter().map(|(k, _)| k.clone())).collect();
        refused = keys.into_iter().map(|k| (k, refusal(RefusalReason::SelectorConflict, why.clone()))).collect();
        bound.clear();
    }
    let make = Make {
        asg,
        // The role: an EKS group's own, else the selector's.
        suffix: if managed_by.is_some() {
            found.role_arn.as_deref().and_then(slr_suffix_of)
        } else {
            s.slr_suffix.clone()
        },
        selector: Arc::from(names.join("+")),
        managed_by: managed_by.clone(),
    };
    if let Some((_, first)) = refused.first() {
        // One refusal speaks for the group: every one of its keys carries it.
        let keys: BTreeSet<KeyArn> = bound.into_iter().chain(refused.iter().map(|(k, _)| k.clone())).collect();
        let origin = make.origin(Some(first.clone()));
        return Some(keys.into_iter().map(|k| make.binding(k, None, origin.clone())).collect());
    }
    let origin = make.origin(None);
    let Some(with) = s.reencrypt_with.clone().filter(|_| managed_by.is_none()) else {
        return Some(bound.into_iter().map(|k| make.binding(k, None, origin.clone())).collect());
    };
    // `strategy: reencrypt`: another account's keys are replaced by `with`.
    let (foreign, own): (Vec<KeyArn>, Vec<KeyArn>) = bound.into_iter().partition(|k| k.account() != &asg.account);
    let mut out: Vec<Binding> =
        own.into_iter().filter(|k| *k != with).map(|k| make.binding(k, None, origin.clone())).collect();
    if !foreign.is_empty() {
        out.push(make.binding(with, Some(Arc::from(foreign)), origin));
    }
    Some(out)
}

/// The customer managed keys a group launches with, sorted: those its selectors allow
/// (as the selector names them), and those they do not, or that could not be described,
/// each with why.
fn sort_keys(
    launch: &GroupLaunch,
    matched: &[(&Selector, &Found)],
    swept: &Swept,
    names: &str,
) -> (BTreeSet<KeyArn>, Vec<(KeyArn, Refusal)>) {
    let allowed: Vec<(&KeyArn, Option<&KeyArn>)> = matched
        .iter()
        .flat_map(|(s, _)| &s.allowed_keys)
        .map(|k| (k, swept.allowed.get(k).and_then(|r| r.as_ref().ok())))
        .collect();
    let (mut bound, mut refused) = (BTreeSet::new(), Vec::new());
    for k in &launch.keys {
        match &k.resolved {
            Ok((_, KeyManager::Aws)) => {}
            Ok((arn, KeyManager::Customer)) => match allowed.iter().find(|(c, r)| *r == Some(arn) || *c == arn) {
                Some((configured, _)) => {
                    bound.insert((*configured).clone());
                }
                None => refused.push((
                    arn.clone(),
                    refusal(
                        RefusalReason::KeyNotAllowed,
                        format!("the group launches with customer managed key {arn} ({}), which selector {names} does not allow (allowedKeys): nothing is written for the group, and it keeps its role", k.source),
                    ),
                )),
            },
            Err(why) => match allowed.iter().find(|(c, _)| c.as_str() == k.key_ref) {
                Some((configured, _)) => {
                    bound.insert((*configured).clone());
                }
                None => refused.extend(allowed.first().map(|(c, _)| {
                    let message = format!("the group launches with key {} ({}), which could not be described ({why}): whether selector {names} allows it is not known, so nothing is written for the group", k.key_ref, k.source);
                    ((*c).clone(), refusal(RefusalReason::LaunchKeysUnknown, message))
                })),
            },
        }
    }
    (bound, refused)
}

/// What every binding of one selected group shares.
struct Make<'a> {
    asg: &'a AsgRef,
    suffix: Option<Arc<str>>,
    selector: Arc<str>,
    managed_by: Option<Arc<str>>,
}

impl Make<'_> {
    fn origin(&self, refused: Option<Refusal>) -> Origin {
        let (selector, managed_by) = (self.selector.clone(), self.managed_by.clone());
        Origin::Selector(Arc::new(Selection { selector, refused, managed_by }))
    }

    fn binding(&self, key: KeyArn, reencrypt_from: Option<Arc<[KeyArn]>>, origin: Origin) -> Binding {
        // A selector's groups have no parameter of their own to publish a copy to.
        let reencrypt_parameter = None;
        Binding {
            asg: self.asg.clone(),
            key,
            slr_suffix: self.suffix.clone(),
            reencrypt_from,
            reencrypt_parameter,
            origin,
        }
    }
}

/// `discover --selector`: what each of `desired`'s selectors would bind now, from
/// `swept`, group by group.
pub fn preview(desired: &Desired, swept: &Swept) -> String {
    let expanded = expand(desired, swept, &Desired::default());
    let mut by_group: BTreeMap<&AsgRef, Vec<&Binding>> = BTreeMap::new();
    for b in expanded.bindings.iter().filter(|b| b.origin.selector().is_some()) {
        by_group.entry(&b.asg).or_default().push(b);
    }
    let named: BTreeSet<&AsgRef> = desired.bindings.iter().map(|b| &b.asg).collect();
    let mut out = String::new();
    for s in &desired.selectors {
        let tags: Vec<String> = s
            .match_tags
            .iter()
            .map(|(k, v)| match v {
                crate::core::model::select::TagValue::Any => format!("{k}=*"),
                crate::core::model::select::TagValue::Is(v) => format!("{k}={v}"),
            })
            .collect();
        let allowed: Vec<&str> = s.allowed_keys.iter().map(KeyArn::as_str).collect();
        out.push_str(&format!(
            "selector {}: account {}, tags {}; allowed keys: {}\n",
            s.name,
            s.account,
            tags.join(", "),
            allowed.join(", ")
        ));
        for region in &s.regions {
            let found = match swept.places.get(&(s.name.clone(), region.clone())) {
                Some(Ok(f)) => f,
                Some(Err(f)) => {
                    out.push_str(&format!("  {region}: not listed: {f}\n"));
                    continue;
                }
                None => continue,
            };
            let selected: Vec<&Found> = found.iter().filter(|f| s.selects(&f.asg.name, &f.tags)).collect();
            out.push_str(&format!(
                "  {region}: {} group{} selected\n",
                selected.len(),
                if selected.len() == 1 { "" } else { "s" }
            ));
            for f in selected {
                out.push_str(&preview_group(f, &by_group, &named));
            }
        }
    }
    out
}

fn preview_group(f: &Found, by_group: &BTreeMap<&AsgRef, Vec<&Binding>>, named: &BTreeSet<&AsgRef>) -> String {
    let name = &f.asg.name;
    if named.contains(&f.asg) {
        return format!("    {name}: follows its entry in `bindings`\n");
    }
    if let Err(e) = &f.launch {
        return format!("    {name}: what it launches with could not be read: {e}\n");
    }
    let Some(bindings) = by_group.get(&f.asg) else {
        return format!("    {name}: nothing to do: it launches with no customer managed key\n");
    };
    if let Some(r) = bindings[0].origin.refused() {
        let reason = format!("{:?}", r.reason);
        return format!("    {name}: nothing is written ({reason}): {}\n", r.message);
    }
    let role = bindings[0].slr().name();
    let keeps = bindings[0].origin.managed_by().map(|m| format!(", kept: the group is an {m}")).unwrap_or_default();
    let keys: Vec<&str> = bindings.iter().map(|b| b.key.as_str()).collect();
    format!("    {name}: binds {} for role {role}{keeps}\n", keys.join(", "))
}

fn refusal(reason: RefusalReason, message: String) -> Refusal {
    Refusal { reason, message: Arc::from(message) }
}

#[cfg(test)]
mod tests;
