//! The selector sweep: for each selector, account and Region, the groups that carry its
//! tags, listed by DescribeAutoScalingGroups filtered on the server (100 a page), and what
//! each selected group launches with (the `discover` reads, template versions cached);
//! and each allowed key named by an alias, resolved. Reads only.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::discover::{describe_groups, group_launches, list_groups, Listed};
use super::observe::READ_CONCURRENCY;
use super::reads::describe_key_ref;
use super::{Account, Aws};
use crate::core::model::desired::Desired;
use crate::core::model::observed::{RoleUser, UsersWanted};
use crate::core::model::select::{Found, Selector, Swept};
use crate::core::model::{AccountId, AsgRef, Failure, KeyArn};
use crate::shell::bounded::for_each;

/// Sweeps every selector of `desired`, its places concurrently (at most
/// [`READ_CONCURRENCY`] reads in flight in all).
pub async fn sweep(aws: &Arc<Aws>, desired: &Desired) -> Swept {
    let mut swept = Swept::default();
    if desired.selectors.is_empty() {
        return swept;
    }
    let places: Vec<(&Selector, &String)> =
        desired.selectors.iter().flat_map(|s| s.regions.iter().map(move |r| (s, r))).collect();
    let each = (READ_CONCURRENCY / places.len().clamp(1, READ_CONCURRENCY)).max(1);
    let start = |(s, region): (&Selector, &String)| {
        let (aws, s, region) = (aws.clone(), s.clone(), region.clone());
        let role = desired.accounts.get(&s.account).cloned();
        async move {
            let found = match aws.ensure_account(&s.account, role.as_deref()).await {
                Ok(account) => sweep_place(&account, &region, &s, each).await,
                Err(f) => Err(f),
            };
            ((s.name.clone(), region), found)
        }
    };
    for_each(places, READ_CONCURRENCY, start, |joined| match joined {
        Ok((place, found)) => {
            swept.places.insert(place, found);
        }
        Err(e) => tracing::error!(error = %e, "selector sweep task failed"),
    })
    .await;
    swept.allowed = resolve_allowed(aws, desired).await;
    swept
}

/// One selector's groups in one Region, and what each launches with.
async fn sweep_place(account: &Arc<Account>, region: &str, s: &Selector, limit: usize) -> Result<Vec<Found>, Failure> {
    let listed = list_tagged(account, region, s).await?;
    let selected: Vec<Listed> = listed.into_iter().filter(|(asg, _, tags)| s.selects(&asg.name, tags)).collect();
    let sources: Vec<(AsgRef, Vec<crate::core::model::LaunchSource>)> =
        selected.iter().map(|(a, g, _)| (a.clone(), g.sources.clone())).collect();
    let mut launches: BTreeMap<AsgRef, _> =
        group_launches(account, region, &sources, limit).await.into_iter().collect();
    Ok(selected
        .into_iter()
        .map(|(asg, g, tags)| {
            let launch = launches.remove(&asg).unwrap_or_else(|| Err(Failure::terminal("not read")));
            Found { asg, tags, role_arn: g.service_linked_role_arn, launch }
        })
        .collect())
}

/// The groups of one account and Region that the selector's tag filters let through, with
/// their tags, page by page.
async fn list_tagged(account: &Account, region: &str, s: &Selector) -> Result<Vec<Listed>, Failure> {
    use aws_sdk_autoscaling::types::Filter;
    let filters: Vec<Filter> = s
        .filters()
        .into_iter()
        .map(|(name, values)| Filter::builder().name(name).set_values(Some(values)).build())
        .collect();
    list_groups(account, region, None, Some(filters)).await
}

/// Each allowed key named by an alias, as DescribeKey resolves it now (in the selector's
/// account: an alias resolves only there). A key ARN needs no read.
async fn resolve_allowed(aws: &Arc<Aws>, desired: &Desired) -> BTreeMap<KeyArn, Result<KeyArn, Failure>> {
    let mut aliases: BTreeMap<KeyArn, &Selector> = BTreeMap::new();
    for s in &desired.selectors {
        for k in s.allowed_keys.iter().filter(|k| k.is_alias()) {
            aliases.entry(k.clone()).or_insert(s);
        }
    }
    let start = |(key, s): (KeyArn, &Selector)| {
        let aws = aws.clone();
        let (account, role) = (s.account, desired.accounts.get(&s.account).cloned());
        async move {
            let resolved = match aws.ensure_account(&account, role.as_deref()).await {
                Ok(handle) => describe_key_ref(&handle, key.region(), key.as_str()).await.map(|i| i.arn),
                Err(f) => Err(f),
            };
            (key, resolved)
        }
    };
    let mut out = BTreeMap::new();
    for_each(aliases, READ_CONCURRENCY, start, |joined| {
        if let Ok((k, r)) = joined {
            out.insert(k, r);
        }
    })
    .await;
    out
}

/// The config's bindings and its selectors', from a sweep made now (for the one-shot
/// commands); what the sweep could not see is said at warn level.
pub async fn selected(aws: &Arc<Aws>, config: &Desired) -> Desired {
    if config.selectors.is_empty() {
        return config.clone();
    }
    let swept = sweep(aws, config).await;
    warn_unseen(&swept);
    let expanded = crate::core::select::expand(config, &swept, &Desired::default());
    let selected = Desired {
        bindings: expanded.bindings.iter().filter(|b| b.origin.selector().is_some()).cloned().collect(),
        ..Desired::default()
    };
    for w in crate::core::config::default_role_warnings(&selected) {
        tracing::warn!("{w}");
    }
    expanded
}

/// A warning for each place a sweep could not list, and each selected group whose
/// launches could not be read: they keep what the last sweep found.
pub fn warn_unseen(swept: &Swept) {
    for ((selector, region), found) in &swept.places {
        match found {
            Err(f) => {
                tracing::warn!(%selector, %region, error = %f, "a selector's groups could not be listed; they keep what the last sweep found")
            }
            Ok(groups) => {
                for g in groups {
                    if let Err(f) = &g.launch {
                        tracing::warn!(%selector, asg = %g.asg, error = %f, "what a selected group launches with could not be read; it keeps what the last sweep found");
                    }
                }
            }
        }
    }
    for (key, r) in &swept.allowed {
        if let Err(f) = r {
            tracing::warn!(%key, error = %f, "an allowed key's alias could not be resolved: groups that launch with its key are refused until it is");
        }
    }
}

/// Before a prune: the groups of each place `need` names, each with its role, and what
/// those on a role in question launch with (the `discover` reads). One unfiltered
/// DescribeAutoScalingGroups a page, then the launches of those groups only.
pub async fn role_users(
    aws: &Arc<Aws>,
    desired: &Desired,
    need: &BTreeMap<(AccountId, String), UsersWanted>,
) -> BTreeMap<(AccountId, String), Result<Vec<RoleUser>, Failure>> {
    let each = (READ_CONCURRENCY / need.len().clamp(1, READ_CONCURRENCY)).max(1);
    let start = |(place, wanted): (&(AccountId, String), &UsersWanted)| {
        let (aws, place, wanted) = (aws.clone(), place.clone(), wanted.clone());
        let role = desired.accounts.get(&place.0).cloned();
        async move {
            let users = match aws.ensure_account(&place.0, role.as_deref()).await {
                Ok(account) => users_at(&account, &place.1, &wanted, each).await,
                Err(f) => Err(f),
            };
            (place, users)
        }
    };
    let mut out = BTreeMap::new();
    for_each(need, READ_CONCURRENCY, start, |joined| match joined {
        Ok((place, users)) => {
            out.insert(place, users);
        }
        Err(e) => tracing::error!(error = %e, "a read of groups before a prune failed"),
    })
    .await;
    out
}

async fn users_at(
    account: &Arc<Account>,
    region: &str,
    wanted: &UsersWanted,
    limit: usize,
) -> Result<Vec<RoleUser>, Failure> {
    let listed = describe_groups(account, region, &[]).await?;
    let role_of = |g: &crate::core::model::Asg| g.service_linked_role_arn.clone().unwrap_or_default();
    let sources: Vec<(AsgRef, Vec<crate::core::model::LaunchSource>)> =
        listed.iter().filter(|(_, g)| wanted.wants(&role_of(g))).map(|(a, g)| (a.clone(), g.sources.clone())).collect();
    let mut launches: BTreeMap<AsgRef, _> =
        group_launches(account, region, &sources, limit).await.into_iter().collect();
    Ok(listed
        .into_iter()
        .map(|(asg, g)| RoleUser { launch: launches.remove(&asg), role_arn: role_of(&g), asg })
        .collect())
}
