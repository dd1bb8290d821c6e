//! Reads what groups will launch with, and which keys that needs: their launch template
//! versions and launch configurations, the AMIs' snapshots, and the account's EBS
//! encryption defaults (reads only). [`crate::core::launch::keys_used`] decides from that data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::error::{classify, code};
use super::mapping::mappings;
use super::reads::{asg_of, describe_key_ref};
use super::versions::{moved_sources, resolve_images, template_spec, template_versions, VersionRef};
pub(crate) use super::versions::{TemplateVersion, VersionCache, VERSION_CACHE};
use super::Account;
use crate::core::launch::{self, EbsDefaults, GroupLaunch, Image, Images, LaunchKey, LaunchSpec, SnapshotKey};
use crate::core::model::{Asg, AsgRef, Failure, KeyArn, KeyManager, LaunchSource};
use crate::shell::bounded::concurrently;

/// DescribeImages and DescribeSnapshots take this many ids a call here.
const BATCH: usize = 100;
/// DescribeLaunchConfigurations takes up to 50 names.
const LC_BATCH: usize = 50;
/// The errors with which DescribeImages refuses a whole list for one id in it (EC2 API
/// Reference, error codes): the ids are then asked one by one.
const IMAGE_ID_ERRORS: [&str; 3] = ["InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"];

/// What each group's launches use, for groups of one account and region. The reads run
/// `limit` at a time. A read that fails fails only what depends on it: a launch template
/// or configuration the groups on it, an AMI the keys of its snapshots (said in the
/// group's notes), a snapshot its key; only the region's EBS defaults fail every group.
pub async fn group_launches(
    account: &Arc<Account>,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
    limit: usize,
) -> Vec<(AsgRef, Result<GroupLaunch, Failure>)> {
    match read_all(account, region, groups, limit).await {
        Ok(out) => out,
        Err(f) => groups.iter().map(|(g, _)| (g.clone(), Err(f.clone()))).collect(),
    }
}

async fn read_all(
    account: &Arc<Account>,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
    limit: usize,
) -> Result<Vec<(AsgRef, Result<GroupLaunch, Failure>)>, Failure> {
    let sources: BTreeSet<&LaunchSource> = groups.iter().flat_map(|(_, s)| s).collect();
    if sources.is_empty() {
        return Ok(groups.iter().map(|(g, _)| (g.clone(), Ok(GroupLaunch::default()))).collect());
    }
    let mut specs = configuration_specs(account, region, &sources).await;
    // Each (template, version) is read once, whichever way groups reach it; the specs,
    // which name the way, are made after.
    let wanted: BTreeSet<VersionRef> = sources.iter().filter_map(|s| VersionRef::of(s)).collect();
    let versions = template_versions(account, region, wanted, limit).await;
    let images_now = resolve_images(account, region, &versions, limit).await;
    for source in sources.iter().filter(|s| matches!(s, LaunchSource::Template { .. })) {
        specs.insert((*source).clone(), template_spec(source, &versions, &images_now));
    }
    let on_templates: Vec<&LaunchSource> =
        sources.iter().copied().filter(|s| specs.get(*s).is_some_and(Result::is_ok)).collect();
    let moved = moved_sources(account, region, &on_templates, &versions, limit).await;
    let all_specs = || specs.values().flatten().chain(moved.values().flatten().map(|(_, spec)| spec));

    let images: BTreeSet<String> =
        all_specs().filter_map(|s| s.image_id.clone()).filter(|id| !id.starts_with("resolve:")).collect();
    let images = image_reads(account, region, images, limit).await;
    let snapshots: BTreeSet<String> = all_specs()
        .flat_map(|s| &s.mappings)
        .chain(images.values().flatten().flat_map(|i| &i.mappings))
        .filter(|m| launch::snapshot_needed(m))
        .filter_map(|m| m.snapshot_id.clone())
        .collect();
    let snapshots = snapshot_keys(account, region, snapshots, limit).await;
    let defaults = ebs_defaults(account, region).await?;

    // What each group uses, then every key named, described once.
    let mut used = group_uses(groups, &specs, &images, &snapshots, &defaults);
    with_moved(&mut used, &moved, &images, &snapshots, &defaults);
    let described = describe_found(account, region, &used, limit).await;
    Ok(with_keys(used, &described))
}

/// The specs of the launch configurations among `sources`, read in batches.
async fn configuration_specs(
    account: &Account,
    region: &str,
    sources: &BTreeSet<&LaunchSource>,
) -> BTreeMap<LaunchSource, Result<LaunchSpec, Failure>> {
    let mut specs: BTreeMap<LaunchSource, Result<LaunchSpec, Failure>> = BTreeMap::new();
    let configurations: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            LaunchSource::Configuration(n) => Some(n.as_str()),
            LaunchSource::Template { .. } => None,
        })
        .collect();
    let mut by_name = launch_configurations(account, region, &configurations).await;
    for name in configurations {
        let spec = match &mut by_name {
            Ok(found) => {
                found.remove(name).ok_or_else(|| Failure::terminal(format!("launch configuration {name} not found")))
            }
            Err(f) => Err(f.clone()),
        };
        specs.insert(LaunchSource::Configuration(name.to_owned()), spec);
    }
    specs
}

/// Per group: its notes so far and the keys found, before they are described.
type Used = Result<(GroupLaunch, Vec<launch::Found>), Failure>;

/// What each group's sources use, from the specs, images and snapshots read.
fn group_uses(
    groups: &[(AsgRef, Vec<LaunchSource>)],
    specs: &BTreeMap<LaunchSource, Result<LaunchSpec, Failure>>,
    images: &Images,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults: &EbsDefaults,
) -> Vec<(AsgRef, Used)> {
    let mut used: Vec<(AsgRef, Used)> = Vec::new();
    for (group, sources) in groups {
        let mut g = GroupLaunch::default();
        let mut found: Vec<launch::Found> = Vec::new();
        let mut failure = None;
        for s in sources {
            let spec = match &specs[s] {
                Ok(spec) => spec,
                Err(f) => {
                    failure = Some(f.clone());
                    break;
                }
            };
            if spec.spot {
                g.spot.push(spec.name.clone());
            }
            g.sources.push(launch::source_read(s, spec, images, snapshots, Some(defaults.account.as_str())));
            let uses = launch::keys_used(spec, images, snapshots, defaults);
            g.unknown.extend(uses.unknown);
            for f in uses.keys {
                if !found.iter().any(|k| k.key_ref == f.key_ref) {
                    found.push(f);
                }
            }
        }
        used.push((group.clone(), failure.map_or(Ok((g, found)), Err)));
    }
    used
}

/// Each source read of a group on a version the operator made, whose selector has moved
/// since, with what that selector launches now. Not counted among the keys the group
/// uses: it launches the operator's version until it is moved.
fn with_moved(
    used: &mut [(AsgRef, Used)],
    moved: &BTreeMap<LaunchSource, Result<(LaunchSource, LaunchSpec), Failure>>,
    images: &Images,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults: &EbsDefaults,
) {
    if moved.is_empty() {
        return;
    }
    for read in used.iter_mut().filter_map(|(_, u)| u.as_mut().ok()).flat_map(|(g, _)| g.sources.iter_mut()) {
        if let Some(m) = moved.get(&read.source) {
            let now = m.as_ref().map_err(Clone::clone).map(|(source, spec)| {
                launch::source_read(source, spec, images, snapshots, Some(defaults.account.as_str()))
            });
            read.moved = Some(Box::new(now));
        }
    }
}

/// Every key the groups' launches name, described once.
async fn describe_found(
    account: &Arc<Account>,
    region: &str,
    used: &[(AsgRef, Used)],
    limit: usize,
) -> BTreeMap<String, Result<(KeyArn, KeyManager), String>> {
    let key_refs: BTreeSet<String> =
        used.iter().filter_map(|(_, r)| r.as_ref().ok()).flat_map(|(_, f)| f).map(|f| f.key_ref.clone()).collect();
    let describe = |key_ref: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_key_ref(&account, &region, &key_ref).await }
    };
    concurrently(key_refs.into_iter().collect(), limit, describe)
        .await
        .into_iter()
        .map(|(k, r)| (k, r.map(|i| (i.arn, i.manager)).map_err(|f| f.message)))
        .collect()
}

/// Each group's launch with the keys found, as described.
fn with_keys(
    used: Vec<(AsgRef, Used)>,
    described: &BTreeMap<String, Result<(KeyArn, KeyManager), String>>,
) -> Vec<(AsgRef, Result<GroupLaunch, Failure>)> {
    used.into_iter()
        .map(|(group, r)| {
            let r = r.map(|(mut g, found)| {
                g.keys = found
                    .into_iter()
                    .map(|f| {
                        let resolved = described[&f.key_ref].clone();
                        LaunchKey { key_ref: f.key_ref, source: f.source, resolved }
                    })
                    .collect();
                g
            });
            (group, r)
        })
        .collect()
}

pub(super) async fn launch_configurations(
    account: &Account,
    region: &str,
    names: &[&str],
) -> Result<BTreeMap<String, LaunchSpec>, Failure> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(LC_BATCH) {
        let request = account
            .autoscaling(region)
            .describe_launch_configurations()
            .set_launch_configuration_names(Some(chunk.iter().map(|n| n.to_string()).collect()))
            .send();
        let page = account
            .call(None, "autoscaling", "DescribeLaunchConfigurations", &[], request)
            .await
            .map_err(|e| classify("DescribeLaunchConfigurations", &e))?;
        for lc in page.launch_configurations() {
            let name = lc.launch_configuration_name().unwrap_or_default().to_owned();
            let spec = LaunchSpec {
                name: format!("launch configuration {name}"),
                image_id: lc.image_id().map(str::to_owned),
                mappings: mappings(lc.block_device_mappings()),
                spot: lc.spot_price().is_some_and(|p| !p.is_empty()),
                template: None,
                image_parameter: None,
                made_from: None,
            };
            out.insert(name, spec);
        }
    }
    Ok(out)
}

/// Each AMI, or why it could not be read. DescribeImages refuses a whole list when one id
/// in it is unknown or malformed, so such a batch is asked again image by image: one
/// deregistered, unshared or malformed image fails only itself.
async fn image_reads(account: &Arc<Account>, region: &str, ids: BTreeSet<String>, limit: usize) -> Images {
    let batches: Vec<Vec<String>> = ids.into_iter().collect::<Vec<_>>().chunks(BATCH).map(<[String]>::to_vec).collect();
    let read = |batch: Vec<String>| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { Ok(describe_images(&account, &region, &batch).await) }
    };
    let mut out = Images::new();
    let mut again: Vec<String> = Vec::new();
    for (batch, answer) in concurrently(batches, limit, read).await {
        match answer {
            Ok(Ok(found)) => collect_images(&mut out, &batch, found),
            Ok(Err((Some(c), _))) if batch.len() > 1 && IMAGE_ID_ERRORS.contains(&c.as_str()) => again.extend(batch),
            Ok(Err((_, f))) | Err(f) => out.extend(batch.into_iter().map(|id| (id, Err(f.message.clone())))),
        }
    }
    let read = |id: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_images(&account, &region, std::slice::from_ref(&id)).await.map_err(|(_, f)| f) }
    };
    for (id, answer) in concurrently(again, limit, read).await {
        match answer {
            Ok(found) => collect_images(&mut out, std::slice::from_ref(&id), found),
            Err(f) => {
                out.insert(id, Err(f.message));
            }
        }
    }
    out
}

/// Files the images of one answer under the ids asked; an id not answered was not found.
fn collect_images(out: &mut Images, asked: &[String], found: Vec<(String, Image)>) {
    let mut found: BTreeMap<String, Image> = found.into_iter().collect();
    for id in asked {
        let image = found.remove(id).ok_or_else(|| {
            "not found: deregistered, or not shared with this account (DescribeImages does not show it)".to_owned()
        });
        out.insert(id.clone(), image);
    }
}

/// One DescribeImages call; on failure, the error code with the failure.
async fn describe_images(
    account: &Account,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, Image)>, (Option<String>, Failure)> {
    let request = account.ec2(region).describe_images().set_image_ids(Some(ids.to_vec())).send();
    let page = match account.call(None, "ec2", "DescribeImages", &IMAGE_ID_ERRORS, request).await {
        Ok(p) => p,
        Err(e) => {
            let failure = match code(&e) {
                Some("InvalidAMIID.NotFound") if ids.len() == 1 => Failure::terminal(
                    "not found: deregistered, or not shared with this account (InvalidAMIID.NotFound)",
                ),
                Some("InvalidAMIID.Malformed") if ids.len() == 1 => {
                    Failure::terminal("not an image id (InvalidAMIID.Malformed)")
                }
                Some("InvalidAMIID.Unavailable") if ids.len() == 1 => {
                    Failure::terminal("no longer available (InvalidAMIID.Unavailable)")
                }
                _ => classify("DescribeImages", &e),
            };
            return Err((code(&e).map(str::to_owned), failure));
        }
    };
    Ok(page
        .images()
        .iter()
        .map(|image| {
            let owner = image.owner_id().map(str::to_owned);
            let mappings = mappings(image.block_device_mappings());
            let billing = billing(image);
            (image.image_id().unwrap_or_default().to_owned(), Image { owner, mappings, billing })
        })
        .collect())
}

/// What bills an image's launches beyond the instance, if anything: its billing code
/// (`UsageOperation`: "RunInstances" is Linux/UNIX with none; EC2 User Guide, "Understand
/// AMI billing information") or its product codes (AWS Marketplace).
fn billing(image: &aws_sdk_ec2::types::Image) -> Option<String> {
    let codes: Vec<&str> = image.product_codes().iter().filter_map(|c| c.product_code_id()).collect();
    if !codes.is_empty() {
        return Some(format!("product code {}", codes.join(", ")));
    }
    match image.usage_operation() {
        None | Some("RunInstances") => None,
        Some(operation) => Some(format!(
            "billing code {operation}{}",
            image.platform_details().map(|p| format!(" ({p})")).unwrap_or_default()
        )),
    }
}

/// Each snapshot's key. A batch that fails (a snapshot not shared with this account fails
/// the whole call) is asked again snapshot by snapshot, so one unreadable snapshot does
/// not hide the others.
async fn snapshot_keys(
    account: &Arc<Account>,
    region: &str,
    ids: BTreeSet<String>,
    limit: usize,
) -> BTreeMap<String, SnapshotKey> {
    let batches: Vec<Vec<String>> = ids.into_iter().collect::<Vec<_>>().chunks(BATCH).map(<[String]>::to_vec).collect();
    let read = |batch: Vec<String>| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_snapshots(&account, &region, &batch).await }
    };
    let mut out = BTreeMap::new();
    let mut again: Vec<String> = Vec::new();
    for (batch, answer) in concurrently(batches, limit, read).await {
        match answer {
            Ok(found) => out.extend(found),
            Err(f) if batch.len() > 1 => {
                tracing::debug!(error = %f, "a snapshot batch failed; asking one by one");
                again.extend(batch);
            }
            Err(f) => {
                out.extend(batch.into_iter().map(|id| (id, SnapshotKey::Unknown(f.message.clone()))));
            }
        }
    }
    let read = |id: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_snapshots(&account, &region, std::slice::from_ref(&id)).await }
    };
    for (id, answer) in concurrently(again, limit, read).await {
        match answer {
            Ok(found) => out.extend(found),
            Err(f) => {
                out.insert(id, SnapshotKey::Unknown(f.message));
            }
        }
    }
    out
}

async fn describe_snapshots(
    account: &Account,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, SnapshotKey)>, Failure> {
    let request = account.ec2(region).describe_snapshots().set_snapshot_ids(Some(ids.to_vec())).send();
    let expected = ["InvalidSnapshot.NotFound"];
    let page = match account.call(None, "ec2", "DescribeSnapshots", &expected, request).await {
        Ok(p) => p,
        Err(e) if code(&e) == Some("InvalidSnapshot.NotFound") && ids.len() == 1 => {
            return Ok(vec![(ids[0].clone(), SnapshotKey::NotFound)])
        }
        Err(e) => return Err(classify("DescribeSnapshots", &e)),
    };
    Ok(page
        .snapshots()
        .iter()
        .map(|s| {
            let key = match (s.encrypted(), s.kms_key_id()) {
                (Some(true), Some(k)) => SnapshotKey::Encrypted(k.to_owned()),
                (Some(true), None) => SnapshotKey::Unknown("encrypted, but its key is not shown".into()),
                _ => SnapshotKey::Unencrypted,
            };
            (s.snapshot_id().unwrap_or_default().to_owned(), key)
        })
        .collect())
}

async fn ebs_defaults(account: &Account, region: &str) -> Result<EbsDefaults, Failure> {
    let ec2 = account.ec2(region);
    let by_default = account
        .call(None, "ec2", "GetEbsEncryptionByDefault", &[], ec2.get_ebs_encryption_by_default().send())
        .await
        .map_err(|e| classify("GetEbsEncryptionByDefault", &e))?;
    let key = account
        .call(None, "ec2", "GetEbsDefaultKmsKeyId", &[], ec2.get_ebs_default_kms_key_id().send())
        .await
        .map_err(|e| classify("GetEbsDefaultKmsKeyId", &e))?;
    Ok(EbsDefaults {
        by_default: by_default.ebs_encryption_by_default().unwrap_or(false),
        key: key.kms_key_id().unwrap_or("alias/aws/ebs").to_owned(),
        account: account.id().to_string(),
    })
}

/// The groups of one account and region (all of them, or those named), as plain data.
/// A named group that does not exist is an error naming it.
pub async fn describe_groups(account: &Account, region: &str, names: &[String]) -> Result<Vec<(AsgRef, Asg)>, Failure> {
    let mut out = Vec::new();
    // DescribeAutoScalingGroups takes up to 100 names a call; with none, it pages through all.
    let batches: Vec<Option<Vec<String>>> =
        if names.is_empty() { vec![None] } else { names.chunks(100).map(|c| Some(c.to_vec())).collect() };
    for batch in batches {
        out.extend(list_groups(account, region, batch, None).await?.into_iter().map(|(a, g, _)| (a, g)));
    }
    let missing: Vec<&str> =
        names.iter().filter(|n| !out.iter().any(|(a, _)| &a.name == *n)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Failure::terminal(format!("no Auto Scaling group {} in {region}", missing.join(", "))));
    }
    Ok(out)
}

/// A group as DescribeAutoScalingGroups lists it: its name, its description, its tags.
pub type Listed = (AsgRef, Asg, BTreeMap<String, String>);

/// DescribeAutoScalingGroups of one account and region, 100 a page, page by page: the
/// groups `names` names (none: every group) that `filters` let through (none: all).
pub async fn list_groups(
    account: &Account,
    region: &str,
    names: Option<Vec<String>>,
    filters: Option<Vec<aws_sdk_autoscaling::types::Filter>>,
) -> Result<Vec<Listed>, Failure> {
    let client = account.autoscaling(region);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(names.clone())
            .set_filters(filters.clone())
            .max_records(100)
            .set_next_token(token.take())
            .send();
        let page = account
            .call(None, "autoscaling", "DescribeAutoScalingGroups", &[], request)
            .await
            .map_err(|e| classify("DescribeAutoScalingGroups", &e))?;
        for g in page.auto_scaling_groups() {
            let asg = AsgRef::new(*account.id(), region, g.auto_scaling_group_name().unwrap_or_default());
            let tags = g
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .collect();
            out.push((asg, asg_of(g), tags));
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(out),
        }
    }
}
