//! Reads what groups will launch with, and which keys that needs: their launch template
//! versions and launch configurations, the AMIs' snapshots, and the account's EBS
//! encryption defaults (reads only). [`crate::launch::keys_used`] decides from that data.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{classify, code};
use super::observe::describe_key_ref;
use super::Account;
use crate::launch::{self, EbsDefaults, GroupLaunch, LaunchKey, LaunchSpec, Mapping, SnapshotKey};
use crate::model::{Asg, AsgRef, Failure, KeyArn, KeyManager, LaunchSource};

/// DescribeImages and DescribeSnapshots take this many ids a call here.
const BATCH: usize = 100;
/// DescribeLaunchConfigurations takes up to 50 names.
const LC_BATCH: usize = 50;

/// What each group's launches use, for groups of one account and region.
pub async fn group_launches(
    account: &Account,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
) -> Vec<(AsgRef, Result<GroupLaunch, Failure>)> {
    match read_all(account, region, groups).await {
        Ok(out) => out,
        Err(f) => groups.iter().map(|(g, _)| (g.clone(), Err(f.clone()))).collect(),
    }
}

async fn read_all(
    account: &Account,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
) -> Result<Vec<(AsgRef, Result<GroupLaunch, Failure>)>, Failure> {
    let sources: BTreeSet<&LaunchSource> = groups.iter().flat_map(|(_, s)| s).collect();
    if sources.is_empty() {
        return Ok(groups.iter().map(|(g, _)| (g.clone(), Ok(GroupLaunch::default()))).collect());
    }
    let mut specs: BTreeMap<&LaunchSource, Result<LaunchSpec, Failure>> = BTreeMap::new();
    let configurations: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            LaunchSource::Configuration(n) => Some(n.as_str()),
            LaunchSource::Template { .. } => None,
        })
        .collect();
    let mut by_name = launch_configurations(account, region, &configurations).await?;
    for s in &sources {
        let spec = match s {
            LaunchSource::Template { .. } => template_version(account, region, s).await,
            LaunchSource::Configuration(n) => {
                by_name.remove(n).ok_or_else(|| Failure::terminal(format!("launch configuration {n} not found")))
            }
        };
        specs.insert(s, spec);
    }
    let images: BTreeSet<&str> = specs.values().flatten().filter_map(|s| s.image_id.as_deref()).collect();
    let images = image_mappings(account, region, &images).await?;
    let snapshots: BTreeSet<&str> = specs
        .values()
        .flatten()
        .flat_map(|s| &s.mappings)
        .chain(images.values().flatten())
        .filter_map(|m| m.snapshot_id.as_deref())
        .collect();
    let snapshots = snapshot_keys(account, region, &snapshots).await?;
    let defaults = ebs_defaults(account, region).await?;

    let mut out = Vec::new();
    let mut described: BTreeMap<String, Result<(KeyArn, KeyManager), String>> = BTreeMap::new();
    for (group, sources) in groups {
        let mut g = GroupLaunch::default();
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
            let uses = launch::keys_used(spec, &images, &snapshots, &defaults);
            g.unknown.extend(uses.unknown);
            for found in uses.keys {
                if g.keys.iter().any(|k| k.key_ref == found.key_ref) {
                    continue;
                }
                if !described.contains_key(&found.key_ref) {
                    let r = describe_key_ref(account, region, &found.key_ref).await;
                    let r = r.map(|i| (i.arn, i.manager)).map_err(|f| f.message);
                    described.insert(found.key_ref.clone(), r);
                }
                let resolved = described[&found.key_ref].clone();
                g.keys.push(LaunchKey { key_ref: found.key_ref, source: found.source, resolved });
            }
        }
        out.push((group.clone(), failure.map_or(Ok(g), Err)));
    }
    Ok(out)
}

/// The launch template version a group names (`$Default`, `$Latest` or a number).
async fn template_version(account: &Account, region: &str, source: &LaunchSource) -> Result<LaunchSpec, Failure> {
    let LaunchSource::Template { id, name, version, via } = source else { unreachable!("templates only") };
    let request = account
        .ec2(region)
        .describe_launch_template_versions()
        .set_launch_template_id(id.clone())
        .set_launch_template_name(name.clone())
        .versions(version)
        .send();
    let out = account
        .call(None, "ec2", "DescribeLaunchTemplateVersions", &[], request)
        .await
        .map_err(|e| classify("DescribeLaunchTemplateVersions", &e))?;
    let v = out.launch_template_versions().first().ok_or_else(|| {
        Failure::terminal(format!(
            "launch template {} has no version {version}",
            id.as_deref().or(name.as_deref()).unwrap_or("?")
        ))
    })?;
    let number = v.version_number().map_or_else(|| version.clone(), |n| n.to_string());
    let label = match (v.launch_template_id(), v.launch_template_name()) {
        (Some(i), Some(n)) => format!("{i} ({n})"),
        (Some(i), None) => i.to_owned(),
        (None, n) => n.unwrap_or("?").to_owned(),
    };
    let requested = if *version == number { String::new() } else { format!(" ({version})") };
    let data = v.launch_template_data();
    let mappings = data
        .map(|d| d.block_device_mappings())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs()?;
            Some(Mapping {
                device: m.device_name().unwrap_or("?").to_owned(),
                encrypted: ebs.encrypted(),
                kms_key_id: ebs.kms_key_id().map(str::to_owned),
                snapshot_id: ebs.snapshot_id().map(str::to_owned),
            })
        })
        .collect();
    Ok(LaunchSpec {
        name: format!("launch template {label} version {number}{requested}, {via}"),
        image_id: data.and_then(|d| d.image_id()).map(str::to_owned),
        mappings,
        spot: false,
    })
}

async fn launch_configurations(
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
            // Launch configurations cannot name a key: an encrypted volume uses the
            // snapshot's key or the account's default.
            let mappings = lc
                .block_device_mappings()
                .iter()
                .filter_map(|m| {
                    let ebs = m.ebs()?;
                    Some(Mapping {
                        device: m.device_name().unwrap_or("?").to_owned(),
                        encrypted: ebs.encrypted(),
                        kms_key_id: None,
                        snapshot_id: ebs.snapshot_id().map(str::to_owned),
                    })
                })
                .collect();
            let spec = LaunchSpec {
                name: format!("launch configuration {name}"),
                image_id: lc.image_id().map(str::to_owned),
                mappings,
                spot: lc.spot_price().is_some_and(|p| !p.is_empty()),
            };
            out.insert(name, spec);
        }
    }
    Ok(out)
}

async fn image_mappings(
    account: &Account,
    region: &str,
    ids: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Vec<Mapping>>, Failure> {
    let mut out = BTreeMap::new();
    let ids: Vec<&str> = ids.iter().copied().collect();
    for chunk in ids.chunks(BATCH) {
        let request = account
            .ec2(region)
            .describe_images()
            .set_image_ids(Some(chunk.iter().map(|s| s.to_string()).collect()))
            .send();
        let page = account
            .call(None, "ec2", "DescribeImages", &[], request)
            .await
            .map_err(|e| classify("DescribeImages", &e))?;
        for image in page.images() {
            let mappings = image
                .block_device_mappings()
                .iter()
                .filter_map(|m| {
                    let ebs = m.ebs()?;
                    Some(Mapping {
                        device: m.device_name().unwrap_or("?").to_owned(),
                        encrypted: ebs.encrypted(),
                        kms_key_id: ebs.kms_key_id().map(str::to_owned),
                        snapshot_id: ebs.snapshot_id().map(str::to_owned),
                    })
                })
                .collect();
            out.insert(image.image_id().unwrap_or_default().to_owned(), mappings);
        }
    }
    Ok(out)
}

/// Each snapshot's key. A batch that fails (a snapshot not shared with this account fails
/// the whole call) is asked again snapshot by snapshot, so one unreadable snapshot does
/// not hide the others.
async fn snapshot_keys(
    account: &Account,
    region: &str,
    ids: &BTreeSet<&str>,
) -> Result<BTreeMap<String, SnapshotKey>, Failure> {
    let mut out = BTreeMap::new();
    let ids: Vec<&str> = ids.iter().copied().collect();
    for chunk in ids.chunks(BATCH) {
        match describe_snapshots(account, region, chunk).await {
            Ok(found) => out.extend(found),
            Err(f) if chunk.len() > 1 => {
                tracing::debug!(error = %f, "a snapshot batch failed; asking one by one");
                for id in chunk {
                    match describe_snapshots(account, region, &[id]).await {
                        Ok(found) => out.extend(found),
                        Err(f) => {
                            out.insert((*id).to_owned(), SnapshotKey::Unknown(f.message));
                        }
                    }
                }
            }
            Err(f) => {
                out.insert(chunk[0].to_owned(), SnapshotKey::Unknown(f.message));
            }
        }
    }
    Ok(out)
}

async fn describe_snapshots(
    account: &Account,
    region: &str,
    ids: &[&str],
) -> Result<Vec<(String, SnapshotKey)>, Failure> {
    let request = account
        .ec2(region)
        .describe_snapshots()
        .set_snapshot_ids(Some(ids.iter().map(|s| s.to_string()).collect()))
        .send();
    let expected = ["InvalidSnapshot.NotFound"];
    let page = match account.call(None, "ec2", "DescribeSnapshots", &expected, request).await {
        Ok(p) => p,
        Err(e) if code(&e) == Some("InvalidSnapshot.NotFound") && ids.len() == 1 => {
            return Ok(vec![(
                ids[0].to_owned(),
                SnapshotKey::Unknown("not found, or not shared with this account".into()),
            )])
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
    })
}

/// The groups of one account and region (all of them, or those named), as plain data.
/// A named group that does not exist is an error naming it.
pub async fn describe_groups(account: &Account, region: &str, names: &[String]) -> Result<Vec<(AsgRef, Asg)>, Failure> {
    let client = account.autoscaling(region);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    // DescribeAutoScalingGroups takes up to 100 names a call; with none, it pages through all.
    let batches: Vec<Option<Vec<String>>> =
        if names.is_empty() { vec![None] } else { names.chunks(100).map(|c| Some(c.to_vec())).collect() };
    for batch in batches {
        loop {
            let request = client
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(batch.clone())
                .max_records(100)
                .set_next_token(token.take())
                .send();
            let page = account
                .call(None, "autoscaling", "DescribeAutoScalingGroups", &[], request)
                .await
                .map_err(|e| classify("DescribeAutoScalingGroups", &e))?;
            for g in page.auto_scaling_groups() {
                let asg = AsgRef::new(*account.id(), region, g.auto_scaling_group_name().unwrap_or_default());
                out.push((asg, super::observe::asg_of(g)));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    let missing: Vec<&str> =
        names.iter().filter(|n| !out.iter().any(|(a, _)| &a.name == *n)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Failure::terminal(format!("no Auto Scaling group {} in {region}", missing.join(", "))));
    }
    Ok(out)
}
