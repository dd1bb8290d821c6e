//! Re-encryption's reads and writes (`strategy: reencrypt`): the copies of images, the
//! latest versions of launch templates and who else launches them; then CopyImage,
//! CreateLaunchTemplateVersion and UpdateAutoScalingGroup.
//! [`crate::core::reencrypt`] decides from the reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateBlockDeviceMappingRequest, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};

use super::error::{classify, code};
use super::mapping::with_key;
use super::{Account, Done};
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::observed::{Observed, Reads};
use crate::core::model::{AccountId, AsgRef, Failure, KeyArn, Slr};
use crate::core::reencrypt::{self, Copy, VersionSeen, Write};

/// EC2 takes up to 200 values a filter; fewer are asked at a time here.
const NAMES_A_CALL: usize = 100;

pub use crate::core::reencrypt::{TAG_KEY, TAG_SOURCE_IMAGE};

/// Reads what the re-encrypted groups' next steps need, once their launches are read:
/// first the copies of their images, then, for sources whose copy is available (or that
/// need none), their templates' latest versions and every group of the place. Nothing is
/// read for a group that launches no other account's key.
pub async fn observe(
    handles: &BTreeMap<AccountId, Arc<Account>>,
    desired: &Desired,
    reads: &Reads,
    observed: &mut Observed,
) {
    read_copies(handles, desired, reads, observed).await;
    read_parameters(handles, desired, reads, observed).await;
    let mut access: BTreeSet<(KeyArn, Slr)> = BTreeSet::new();
    each_need_of(desired, reads, observed, |b, needs| {
        access.extend(needs.access.iter().map(|k| (k.clone(), b.slr())));
    });
    for (key, slr) in access {
        // The owner's policy, where the operator acts in the owner's account: read and
        // judged. Else (hand-off) a dry run by the group's account is all there is.
        if let Some(owner) = handles.get(key.account()).filter(|_| desired.accounts.contains_key(key.account())) {
            if !observed.reencrypt.source_policies.contains_key(&key) {
                let r = super::reads::get_key_policy(owner, &key).await;
                observed.reencrypt.source_policies.insert(key.clone(), r);
            }
            continue;
        }
        let Some(handle) = handles.get(&slr.account) else { continue };
        let r = super::reads::dry_run_grant(handle, &key, &slr).await;
        observed.reencrypt.access.insert((key, slr), r);
    }
    let mut templates: BTreeMap<(AccountId, String), BTreeSet<(String, String)>> = BTreeMap::new();
    let mut configurations: BTreeMap<(AccountId, String), BTreeSet<String>> = BTreeMap::new();
    each_need(desired, reads, observed, |asg, needs| {
        let place = (asg.account, asg.region.clone());
        if let Some(t) = &needs.template {
            templates.entry(place.clone()).or_default().insert(t.clone());
        }
        if let Some(c) = &needs.configuration {
            configurations.entry(place).or_default().insert(c.clone());
        }
    });
    for ((account, region), names) in configurations {
        let Some(handle) = handles.get(&account) else { continue };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let found = super::discover::launch_configurations(handle, &region, &names).await;
        for name in names {
            let r = found.as_ref().map(|f| f.contains_key(name)).map_err(Failure::clone);
            observed.reencrypt.configurations.insert((account, region.clone(), name.to_owned()), r);
        }
    }
    for ((account, region), ids) in templates {
        let Some(handle) = handles.get(&account) else { continue };
        for (id, image) in ids {
            let r = versions_with_image(handle, &region, &id, &image).await;
            observed.reencrypt.by_image.insert((account, region.clone(), id, image), r);
        }
        let groups = super::discover::describe_groups(handle, &region, &[])
            .await
            .map(|all| all.into_iter().map(|(a, g)| (a.name.clone(), g.sources)).collect());
        observed.reencrypt.groups.insert((account, region), groups);
    }
}

/// The copies the operator made that the groups' next steps look for, by name.
async fn read_copies(
    handles: &BTreeMap<AccountId, Arc<Account>>,
    desired: &Desired,
    reads: &Reads,
    observed: &mut Observed,
) {
    let mut names: BTreeMap<(AccountId, String), BTreeSet<String>> = BTreeMap::new();
    each_need(desired, reads, observed, |asg, needs| {
        names.entry((asg.account, asg.region.clone())).or_default().extend(needs.copies.iter().cloned());
    });
    for ((account, region), names) in names.into_iter().filter(|(_, n)| !n.is_empty()) {
        let Some(handle) = handles.get(&account) else { continue };
        let found = copies(handle, &region, &names).await;
        for name in names {
            let r = match &found {
                Ok(by_name) => Ok(by_name.get(&name).cloned()),
                Err(f) => Err(f.clone()),
            };
            observed.reencrypt.copies.insert((account, region.clone(), name), r);
        }
    }
}

/// The operator's parameters the groups' next steps need, each read once.
async fn read_parameters(
    handles: &BTreeMap<AccountId, Arc<Account>>,
    desired: &Desired,
    reads: &Reads,
    observed: &mut Observed,
) {
    let mut names: BTreeSet<(AccountId, String, String)> = BTreeSet::new();
    each_need(desired, reads, observed, |asg, needs| {
        names.extend(needs.parameter.map(|p| (asg.account, asg.region.clone(), p)));
    });
    for at in names {
        let Some(handle) = handles.get(&at.0) else { continue };
        let r = super::parameters::get(handle, &at.1, &at.2).await;
        observed.reencrypt.parameters.insert(at, r);
    }
}

/// Calls `f` with what each re-encrypted group's sources need read now.
fn each_need(desired: &Desired, reads: &Reads, observed: &Observed, mut f: impl FnMut(&AsgRef, reencrypt::Needs)) {
    each_need_of(desired, reads, observed, |b, needs| f(&b.asg, needs));
}

/// [`each_need`], with the binding.
fn each_need_of(desired: &Desired, reads: &Reads, observed: &Observed, mut f: impl FnMut(&Binding, reencrypt::Needs)) {
    for b in desired.bindings.iter().filter(|b| b.reencrypt_from.is_some() && reads.reencrypt.contains(&b.asg)) {
        let (Some(Ok(launch)), Some(Ok(info))) = (observed.launch_keys.get(&b.asg), observed.keys.get(&b.key)) else {
            continue;
        };
        for s in &launch.sources {
            f(b, reencrypt::needs(b, &info.arn, launch, s, &observed.reencrypt));
        }
    }
}

/// The operator's copies among the account's own images, by name.
async fn copies(account: &Account, region: &str, names: &BTreeSet<String>) -> Result<BTreeMap<String, Copy>, Failure> {
    let mut out = BTreeMap::new();
    let names: Vec<String> = names.iter().cloned().collect();
    for chunk in names.chunks(NAMES_A_CALL) {
        let request = account
            .ec2(region)
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name("name").set_values(Some(chunk.to_vec())).build())
            .send();
        let page = account.send("ec2", "DescribeImages", request).await?;
        for image in page.images() {
            let (Some(name), Some(id)) = (image.name(), image.image_id()) else { continue };
            let state = image.state().map(|s| s.as_str().to_owned()).unwrap_or_default();
            let snapshots: Vec<String> = image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
                .collect();
            // How far a pending copy has come: its snapshots' progress. A copy's progress
            // is not a reason to fail the read of the copy itself.
            let progress = match state.as_str() {
                "pending" if !snapshots.is_empty() => progress(account, region, snapshots).await.ok().flatten(),
                _ => None,
            };
            let copy = Copy {
                image_id: id.to_owned(),
                state,
                reason: image.state_reason().and_then(|r| r.message()).map(str::to_owned),
                progress,
            };
            // A failed copy and a later good one may share the name: the good one wins.
            let better = out.get(name).is_none_or(|c: &Copy| c.state != "available");
            if better {
                out.insert(name.to_owned(), copy);
            }
        }
    }
    Ok(out)
}

/// The least progress among `snapshots` (DescribeSnapshots, `Progress`: "The progress of
/// the snapshot, as a percentage"), as EC2 writes it.
async fn progress(account: &Account, region: &str, snapshots: Vec<String>) -> Result<Option<String>, Failure> {
    let request = account.ec2(region).describe_snapshots().set_snapshot_ids(Some(snapshots)).send();
    let out = account.send("ec2", "DescribeSnapshots", request).await?;
    let least = out
        .snapshots()
        .iter()
        .filter_map(|s| s.progress())
        .min_by_key(|p| p.trim_end_matches('%').parse::<u32>().unwrap_or(0));
    Ok(least.map(str::to_owned))
}

/// The versions of `template` that launch `image` (DescribeLaunchTemplateVersions,
/// filter `image-id`: EC2 API Reference), every page. An image named through a parameter
/// (`resolve:ssm:…`) is matched as written, over every version: the reference documents
/// the filter for AMI ids only.
async fn versions_with_image(
    account: &Account,
    region: &str,
    template: &str,
    image: &str,
) -> Result<Vec<VersionSeen>, Failure> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let by_filter = !image.starts_with(reencrypt::RESOLVE);
    loop {
        let request = account
            .ec2(region)
            .describe_launch_template_versions()
            .launch_template_id(template)
            .set_filters(by_filter.then(|| vec![Filter::builder().name("image-id").values(image).build()]))
            .max_results(200)
            .set_next_token(token.take())
            .send();
        let page = account.send("ec2", "DescribeLaunchTemplateVersions", request).await?;
        for v in page.launch_template_versions() {
            // The filter is EC2's; a version with another image is never the operator's.
            if v.launch_template_data().and_then(|d| d.image_id()) != Some(image) {
                continue;
            }
            let Some(number) = v.version_number().and_then(|n| u64::try_from(n).ok()) else { continue };
            out.push(VersionSeen { number, description: v.version_description().map(str::to_owned) });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// A client token for a write that must happen once: EC2 answers a retried call with the
/// same token with the first call's result (EC2 API Reference, "Ensuring idempotency").
/// At most 64 ASCII characters.
fn client_token(what: &str) -> String {
    let hash = what.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("asg-cmk-operator-{hash:016x}")
}

/// Makes one re-encryption write for `asg`, with its account's credentials.
pub async fn execute(account: &Account, asg: &AsgRef, key: &KeyArn, write: &Write) -> Result<Done, Failure> {
    let region = asg.region.as_str();
    match write {
        Write::CopyImage { source_image, name } => copy_image(account, region, key, source_image, name).await,
        Write::CreateVersion { template_id, source_version, image_id, devices, description } => {
            let version = (*source_version, image_id.as_str(), devices.as_slice(), description.as_str());
            create_version(account, region, key, template_id, version).await
        }
        Write::CopyConfiguration { from, name, image_id } => {
            copy_configuration(account, region, from, name, image_id).await
        }
        Write::UseConfiguration { name } => {
            let request = account
                .autoscaling(region)
                .update_auto_scaling_group()
                .auto_scaling_group_name(&asg.name)
                .launch_configuration_name(name)
                .send();
            account.send("autoscaling", "UpdateAutoScalingGroup", request).await?;
            Ok(Done::Applied)
        }
        Write::PointGroup { template_id, name, version } => {
            point_group(account, asg, template_id, name.as_deref(), version).await
        }
        Write::PutParameter { name, image_id } => super::parameters::put(account, region, name, image_id).await,
    }
}

/// How many times a copy is asked for again after EC2 answers its token with an image
/// that is gone.
const COPY_ATTEMPTS: usize = 3;

/// CopyImage: the source image copied under `key`, the image and its snapshots tagged with
/// what it copies and the key.
///
/// The client token is made from the copy's name, so a lost answer or a restart finds
/// the copy instead of copying twice. But EC2 answers a repeated token with the first
/// call's image even once that image is deregistered (a failed copy, removed to have it
/// made again), and nothing would be copied: so the image answered is looked up, and when
/// it is gone the copy is asked for again under a token that names it (EC2 API
/// Reference, "Ensuring idempotency").
async fn copy_image(
    account: &Account,
    region: &str,
    key: &KeyArn,
    source_image: &str,
    name: &str,
) -> Result<Done, Failure> {
    let mut token = client_token(name);
    for _ in 0..COPY_ATTEMPTS {
        let id = request_copy(account, region, key, source_image, name, &token).await?;
        if image_exists(account, region, &id).await? {
            return Ok(Done::Applied);
        }
        tracing::info!(copy = name, gone = %id, "the copy's token answered an image that is gone; copying again");
        token = client_token(&format!("{name} after {id}"));
    }
    Err(Failure::terminal(format!("CopyImage {name}: EC2 answered {COPY_ATTEMPTS} times with images that are gone")))
}

/// Whether image `id` exists (in any state but deregistered).
async fn image_exists(account: &Account, region: &str, id: &str) -> Result<bool, Failure> {
    const GONE: &[&str] = &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];
    let request = account.ec2(region).describe_images().image_ids(id).send();
    match account.call(None, "ec2", "DescribeImages", GONE, request).await {
        Ok(out) => Ok(out.images().iter().any(|i| i.state().is_none_or(|s| s.as_str() != "deregistered"))),
        Err(e) if code(&e).is_some_and(|c| GONE.contains(&c)) => Ok(false),
        Err(e) => Err(classify("DescribeImages", &e)),
    }
}

/// `ResourceLimitExceeded` from CopyImage: too many snapshot copies in progress in the
/// account and Region (EC2 API Reference, "Error codes": "For example, you might have too
/// many snapshot copies in progress"). Those copies end by themselves: the copy is tried
/// again with the unit's backoff, not given up.
fn copy_limit(code: Option<&str>, f: Failure) -> Failure {
    match code == Some("ResourceLimitExceeded") {
        true => Failure {
            class: crate::core::model::ErrorClass::Retryable,
            message: format!(
                "{}; the copy is tried again once some of the copies in progress have finished",
                f.message
            ),
        },
        false => f,
    }
}

/// One CopyImage call under `token`; the image id EC2 answers.
async fn request_copy(
    account: &Account,
    region: &str,
    key: &KeyArn,
    source_image: &str,
    name: &str,
    token: &str,
) -> Result<String, Failure> {
    // The image and its new snapshots, which are what a copy costs (EC2 API Reference,
    // CopyImage, TagSpecifications: "You can tag the AMI, the snapshots, or both").
    let tags = |kind: ResourceType| {
        TagSpecification::builder()
            .resource_type(kind)
            .tags(Tag::builder().key(TAG_SOURCE_IMAGE).value(source_image).build())
            .tags(Tag::builder().key(TAG_KEY).value(key.as_str()).build())
            .build()
    };
    let request = account
        .ec2(region)
        .copy_image()
        .source_image_id(source_image)
        .source_region(region)
        .name(name)
        .description(format!("{source_image} re-encrypted with {key} by asg-cmk-operator"))
        .encrypted(true)
        .kms_key_id(key.as_str())
        .client_token(token)
        .tag_specifications(tags(ResourceType::Image))
        .tag_specifications(tags(ResourceType::Snapshot))
        .send();
    let out = account
        .call(None, "ec2", "CopyImage", &[], request)
        .await
        .map_err(|e| copy_limit(code(&e), classify("CopyImage", &e)))?;
    out.image_id().map(str::to_owned).ok_or_else(|| Failure::terminal(format!("CopyImage {name} answered no image id")))
}

/// CreateLaunchTemplateVersion: a version of the template from `source_version` that
/// launches `image_id`, with `key` for `devices`.
async fn create_version(
    account: &Account,
    region: &str,
    key: &KeyArn,
    template_id: &str,
    (source_version, image_id, devices, description): (u64, &str, &[String], &str),
) -> Result<Done, Failure> {
    let mut data = RequestLaunchTemplateData::builder().image_id(image_id);
    if !devices.is_empty() {
        // The mappings are one parameter: given, they replace the source's, so
        // every one is given, as read, with the key replaced where it must be.
        data = data.set_block_device_mappings(Some(
            mappings_with_key(account, region, template_id, source_version, devices, key).await?,
        ));
    }
    let request = account
        .ec2(region)
        .create_launch_template_version()
        .launch_template_id(template_id)
        .source_version(source_version.to_string())
        .version_description(description)
        .client_token(client_token(description))
        .launch_template_data(data.build())
        .send();
    account.send("ec2", "CreateLaunchTemplateVersion", request).await?;
    Ok(Done::Applied)
}

/// Points group `asg` at version `version` of `template` wherever it names the template:
/// its own launch template, or its mixed instances policy and the overrides in it. The
/// policy is read now and given back whole, with only those versions changed, so instance
/// types, weights and the distribution stay as they are whether Auto Scaling merges the
/// policy given into the group's or replaces it (EC2 Auto Scaling API Reference,
/// UpdateAutoScalingGroup, `MixedInstancesPolicy`).
async fn point_group(
    account: &Account,
    asg: &AsgRef,
    template: &str,
    name: Option<&str>,
    version: &str,
) -> Result<Done, Failure> {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification as Spec;
    let client = account.autoscaling(&asg.region);
    let request = client.describe_auto_scaling_groups().auto_scaling_group_names(&asg.name).send();
    let out = account.send("autoscaling", "DescribeAutoScalingGroups", request).await?;
    let group = out
        .auto_scaling_groups()
        .first()
        .ok_or_else(|| Failure::terminal(format!("Auto Scaling group {} not found", asg.name)))?;
    // A specification names the template by id, or by name only.
    let names_it = |spec: &Spec| match spec.launch_template_id() {
        Some(id) => id == template,
        None => name.is_some() && spec.launch_template_name() == name,
    };
    let pinned = || Spec::builder().launch_template_id(template).version(version).build();
    let mut update = client.update_auto_scaling_group().auto_scaling_group_name(&asg.name);
    let mut changed = false;
    if let Some(spec) = group.launch_template() {
        if names_it(spec) {
            update = update.launch_template(pinned());
            changed = true;
        }
    }
    if let Some(policy) = group.mixed_instances_policy() {
        let mut policy = policy.clone();
        let mut touched = false;
        if let Some(lt) = policy.launch_template.as_mut() {
            if let Some(spec) = lt.launch_template_specification.as_ref() {
                if names_it(spec) {
                    lt.launch_template_specification = Some(pinned());
                    touched = true;
                }
            }
            for o in lt.overrides.iter_mut().flatten() {
                if let Some(spec) = o.launch_template_specification.as_ref() {
                    if names_it(spec) {
                        o.launch_template_specification = Some(pinned());
                        touched = true;
                    }
                }
            }
        }
        if touched {
            update = update.mixed_instances_policy(policy);
            changed = true;
        }
    }
    if !changed {
        return Ok(Done::NotNeeded("the group no longer names the template"));
    }
    account.send("autoscaling", "UpdateAutoScalingGroup", update.send()).await?;
    Ok(Done::Applied)
}

/// Creates launch configuration `name`: `from` as read now, with image `image`. A
/// configuration of that name made before (a lost answer) is taken as this one.
async fn copy_configuration(
    account: &Account,
    region: &str,
    from: &str,
    name: &str,
    image: &str,
) -> Result<Done, Failure> {
    let client = account.autoscaling(region);
    let request = client.describe_launch_configurations().launch_configuration_names(from).send();
    let out = account.send("autoscaling", "DescribeLaunchConfigurations", request).await?;
    let lc = out
        .launch_configurations()
        .first()
        .ok_or_else(|| Failure::terminal(format!("launch configuration {from} not found")))?;
    let given = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    let request = client
        .create_launch_configuration()
        .launch_configuration_name(name)
        .image_id(image)
        .set_key_name(given(lc.key_name()))
        .set_security_groups(Some(lc.security_groups().to_vec()).filter(|g| !g.is_empty()))
        .set_user_data(given(lc.user_data()))
        .set_instance_type(given(lc.instance_type()))
        .set_kernel_id(given(lc.kernel_id()))
        .set_ramdisk_id(given(lc.ramdisk_id()))
        .set_block_device_mappings(Some(lc.block_device_mappings().to_vec()).filter(|m| !m.is_empty()))
        .set_instance_monitoring(lc.instance_monitoring().cloned())
        .set_spot_price(given(lc.spot_price()))
        .set_iam_instance_profile(given(lc.iam_instance_profile()))
        .set_ebs_optimized(lc.ebs_optimized())
        .set_associate_public_ip_address(lc.associate_public_ip_address())
        .set_placement_tenancy(given(lc.placement_tenancy()))
        .set_metadata_options(lc.metadata_options().cloned())
        .send();
    match account.call(None, "autoscaling", "CreateLaunchConfiguration", &["AlreadyExists"], request).await {
        Ok(_) => Ok(Done::Applied),
        Err(e) if super::error::code(&e) == Some("AlreadyExists") => Ok(Done::NotNeeded("the copy exists already")),
        // Accounts created on or after 1 October 2024 cannot create launch configurations
        // (EC2 Auto Scaling User Guide, "Auto Scaling launch configurations").
        Err(e) if super::error::code(&e) == Some("UnsupportedOperation") => Err(Failure::terminal(format!(
            "{}: this account cannot create launch configurations (accounts created on or after 1 October 2024 cannot), so the group's launch configuration {from} cannot be copied with the new image. Move the group to a launch template; re-encryption then makes a version of it",
            classify("CreateLaunchConfiguration", &e).message
        ))),
        Err(e) => Err(classify("CreateLaunchConfiguration", &e)),
    }
}

/// The block device mappings of a template version as read, with `key` for `devices`.
async fn mappings_with_key(
    account: &Account,
    region: &str,
    template: &str,
    version: u64,
    devices: &[String],
    key: &KeyArn,
) -> Result<Vec<LaunchTemplateBlockDeviceMappingRequest>, Failure> {
    let request = account
        .ec2(region)
        .describe_launch_template_versions()
        .launch_template_id(template)
        .versions(version.to_string())
        .send();
    let out = account.send("ec2", "DescribeLaunchTemplateVersions", request).await?;
    let v = out
        .launch_template_versions()
        .first()
        .ok_or_else(|| Failure::terminal(format!("launch template {template} has no version {version}")))?;
    Ok(with_key(v.launch_template_data().map(|d| d.block_device_mappings()).unwrap_or_default(), devices, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::ErrorClass;

    #[test]
    fn too_many_copies_in_progress_is_waited_out_and_other_errors_stand() {
        let limit = Failure::terminal("CopyImage: ResourceLimitExceeded: too many snapshot copies in progress");
        let f = copy_limit(Some("ResourceLimitExceeded"), limit);
        assert_eq!(f.class, ErrorClass::Retryable);
        assert!(f.message.starts_with("CopyImage: ResourceLimitExceeded") && f.message.contains("tried again"));
        let other = Failure::terminal("CopyImage: InvalidAMIID.NotFound: no such image");
        assert_eq!(copy_limit(Some("InvalidAMIID.NotFound"), other.clone()), other);
        let quoted = Failure::terminal("CopyImage: InvalidParameter: name mentions ResourceLimitExceeded");
        assert_eq!(copy_limit(Some("InvalidParameter"), quoted.clone()), quoted, "by its code, not its text");
    }
}
