//! `defaults.reencryptCleanup`: reads which of the operator's image copies nothing
//! launches or may launch any more, and deletes them (the decision is
//! [`crate::core::reencrypt::cleanup`]'s).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_ec2::types::Filter;

use super::error::{classify, code};
use super::reencrypt::TAG_SOURCE_IMAGE;
use super::versions::{resolve_images, template_spec, template_versions, VersionRef};
use super::{Account, Done, READ_CONCURRENCY};
use crate::core::model::desired::Desired;
use crate::core::model::observed::{Observed, Reads};
use crate::core::model::{AccountId, Failure, LaunchSource};
use crate::core::reencrypt::cleanup::{self, Kept, Launches};

/// An account and Region.
type Place = (AccountId, String);
use crate::core::reencrypt::{self, OwnCopy};

/// Finds, in each place of a re-encrypted binding this pass, the copies nothing uses:
/// one DescribeImages a place, and the place's launches read whole only when a copy is
/// neither needed nor launched by a bound group.
pub async fn observe(
    handles: &BTreeMap<AccountId, Arc<Account>>,
    desired: &Desired,
    reads: &Reads,
    observed: &mut Observed,
) {
    if !desired.operator.reencrypt_cleanup {
        return;
    }
    let (places, unknown) = kept(desired, reads, observed);
    for ((account, region), kept) in places {
        let Some(handle) = handles.get(&account).filter(|_| !unknown.contains(&(account, region.clone()))) else {
            continue;
        };
        let copies = match own_copies(handle, &region).await {
            Ok(c) => c,
            Err(f) => {
                tracing::warn!(%account, region, error = %f, "the operator's image copies could not be listed; none is cleaned up this pass");
                continue;
            }
        };
        let candidates = cleanup::candidates(&copies, &kept);
        if candidates.is_empty() {
            continue;
        }
        match in_use(handle, &region).await {
            Ok(launches) => {
                observed.reencrypt.unused.insert((account, region), cleanup::unused(candidates, &launches));
            }
            Err(f) => {
                tracing::warn!(%account, region, error = %f, "what launches in the place could not be read; no copy is cleaned up this pass");
            }
        }
    }
}

/// By place, what its bound re-encrypted groups keep, and the places where a group this
/// pass reads had its launches unread: nothing there is known to be unused.
fn kept(desired: &Desired, reads: &Reads, observed: &Observed) -> (BTreeMap<Place, Kept>, BTreeSet<Place>) {
    let mut out: BTreeMap<Place, Kept> = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    let re = desired.bindings.iter().filter(|b| b.reencrypt_from.is_some());
    // The config's keys by key id; one named by an alias cannot be told from an orphan.
    let mut bound: BTreeMap<Place, (BTreeSet<String>, bool)> = BTreeMap::new();
    for b in re.clone() {
        let (ids, aliased) = bound.entry((b.asg.account, b.asg.region.clone())).or_default();
        match b.key.is_alias() {
            true => *aliased = true,
            false => {
                ids.insert(b.key.key_id().to_owned());
            }
        }
    }
    for b in re.filter(|b| reads.reencrypt.contains(&b.asg)) {
        let place = (b.asg.account, b.asg.region.clone());
        let kept = out.entry(place.clone()).or_default();
        let (ids, aliased) = bound.get(&place).cloned().unwrap_or_default();
        (kept.bound, kept.orphans_known) = (ids, !aliased);
        let (Some(Ok(launch)), Some(Ok(info))) = (observed.launch_keys.get(&b.asg), observed.keys.get(&b.key)) else {
            unknown.insert(place);
            continue;
        };
        kept.read.insert(info.arn.key_id().to_owned());
        for s in &launch.sources {
            kept.launched.extend(s.image_id.clone());
            if let Some(Ok(moved)) = s.moved.as_deref() {
                kept.launched.extend(moved.image_id.clone());
            }
            kept.needed.extend(reencrypt::needs(b, &info.arn, launch, s, &observed.reencrypt).copies);
        }
    }
    (out, unknown)
}

/// The operator's copies among the account's images: those it tagged with their source.
async fn own_copies(account: &Account, region: &str) -> Result<Vec<OwnCopy>, Failure> {
    let request = account
        .ec2(region)
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("tag-key").values(TAG_SOURCE_IMAGE).build())
        .send();
    let out = account.send("ec2", "DescribeImages", request).await?;
    Ok(out
        .images()
        .iter()
        .filter_map(|i| {
            let name = i.name().filter(|n| n.starts_with("asg-cmk-operator/"))?;
            Some(OwnCopy {
                image_id: i.image_id()?.to_owned(),
                name: name.to_owned(),
                state: i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                snapshots: i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
                    .collect(),
                configurations: Vec::new(),
            })
        })
        .collect())
}

/// What launches or may launch in the place: each group's launch sources, each launch
/// template's default and latest version, each launch configuration. A read that fails
/// fails it: nothing is deleted on a guess.
async fn in_use(account: &Arc<Account>, region: &str) -> Result<Launches, Failure> {
    let mut out = Launches::default();
    let groups = super::discover::describe_groups(account, region, &[]).await?;
    let sources: BTreeSet<LaunchSource> = groups.into_iter().flat_map(|(_, g)| g.sources).collect();
    let wanted = sources.iter().filter_map(VersionRef::of).collect();
    let versions = template_versions(account, region, wanted, READ_CONCURRENCY).await;
    let images_now = resolve_images(account, region, &versions, READ_CONCURRENCY).await;
    for s in &sources {
        match s {
            LaunchSource::Template { .. } => out.images.extend(template_spec(s, &versions, &images_now)?.image_id),
            LaunchSource::Configuration(name) => {
                out.used.insert(name.clone());
            }
        }
    }
    out.images.extend(defaults_and_latest(account, region).await?);
    out.configurations = configurations(account, region).await?;
    Ok(out)
}

/// The images of every launch template's default and latest version: one call, the
/// template omitted (EC2 API Reference, DescribeLaunchTemplateVersions: "To describe all
/// the latest or default launch template versions in your account"), parameters resolved.
async fn defaults_and_latest(account: &Account, region: &str) -> Result<BTreeSet<String>, Failure> {
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let request = account
            .ec2(region)
            .describe_launch_template_versions()
            .versions("$Default")
            .versions("$Latest")
            .resolve_alias(true)
            .max_results(200)
            .set_next_token(token.take())
            .send();
        let page = account.send("ec2", "DescribeLaunchTemplateVersions", request).await?;
        out.extend(
            page.launch_template_versions()
                .iter()
                .filter_map(|v| v.launch_template_data().and_then(|d| d.image_id()).map(str::to_owned)),
        );
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Every launch configuration of the place, in use or not, with its image.
async fn configurations(account: &Account, region: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let request = account.autoscaling(region).describe_launch_configurations().set_next_token(token.take()).send();
        let page = account.send("autoscaling", "DescribeLaunchConfigurations", request).await?;
        out.extend(
            page.launch_configurations()
                .iter()
                .filter_map(|c| Some((c.launch_configuration_name()?.to_owned(), c.image_id()?.to_owned()))),
        );
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Deletes the operator's launch configuration copies made with `copy`, deregisters it,
/// then deletes its snapshots (DeregisterImage leaves them: EC2 User Guide, "Deregister
/// an AMI"). A configuration, copy or snapshot gone already is no failure; a snapshot
/// another image uses (`InvalidSnapshot.InUse`) is left. A configuration a group has come
/// to use since (`ResourceInUse`) stops it all.
pub async fn delete_copy(account: &Account, region: &str, copy: &OwnCopy) -> Result<Done, Failure> {
    for name in &copy.configurations {
        const GONE: [&str; 1] = ["ValidationError"];
        let request = account.autoscaling(region).delete_launch_configuration().launch_configuration_name(name).send();
        match account.call(None, "autoscaling", "DeleteLaunchConfiguration", &GONE, request).await {
            Ok(_) => {}
            Err(e) if code(&e).is_some_and(|c| GONE.contains(&c)) => {}
            Err(e) => return Err(classify("DeleteLaunchConfiguration", &e)),
        }
    }
    let ec2 = account.ec2(region);
    const GONE: [&str; 2] = ["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];
    let request = ec2.deregister_image().image_id(&copy.image_id).send();
    let deregistered = match account.call(None, "ec2", "DeregisterImage", &GONE, request).await {
        Ok(_) => true,
        Err(e) if code(&e).is_some_and(|c| GONE.contains(&c)) => false,
        Err(e) => return Err(classify("DeregisterImage", &e)),
    };
    const LEFT: [&str; 2] = ["InvalidSnapshot.NotFound", "InvalidSnapshot.InUse"];
    for snapshot in &copy.snapshots {
        let request = ec2.delete_snapshot().snapshot_id(snapshot).send();
        match account.call(None, "ec2", "DeleteSnapshot", &LEFT, request).await {
            Ok(_) => {}
            Err(e) if code(&e).is_some_and(|c| LEFT.contains(&c)) => {}
            Err(e) => return Err(classify("DeleteSnapshot", &e)),
        }
    }
    Ok(if deregistered { Done::Applied } else { Done::NotNeeded("the copy was deregistered already") })
}
