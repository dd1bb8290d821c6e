//! `strategy: reencrypt`: what copying images, making launch sources from them and, with
//! `defaults.reencryptCleanup`, deleting unused copies take.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{key_statements, statement};
use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, KeyArn};

/// The keys of other accounts a re-encrypted binding replaces, by key ARN.
pub(super) fn replaced(b: &Binding) -> impl Iterator<Item = &KeyArn> {
    b.reencrypt_from.iter().flat_map(|f| f.iter()).filter(move |k| k.account() != &b.asg.account && !k.is_alias())
}

/// `strategy: reencrypt`: copying images, making launch template versions and launch
/// configurations, and moving groups onto them.
///
/// - `ec2:CopyImage` makes the copy (Service Authorization Reference, Amazon EC2: on the
///   new image, whose id is not known before) and `ec2:CreateTags` tags it, only as part
///   of the copy (`ec2:CreateAction`).
/// - EC2 reads the source snapshots' keys and writes the copy's with the caller's
///   permissions, through EC2 (EC2 User Guide, "Copy an Amazon EC2 AMI"): `kms:Decrypt`
///   and `kms:ReEncryptFrom` on the keys replaced, `kms:GenerateDataKeyWithoutPlaintext`
///   and `kms:ReEncryptTo` on the own keys, and `kms:CreateGrant` for an AWS resource on
///   both, each only via EC2 in the groups' Regions (`kms:ViaService`).
/// - New versions and default versions of the account's launch templates, and launch
///   configurations: their ids and names are not known from the config.
/// - Updating a group with a launch template checks `ec2:RunInstances` with that template,
///   `iam:PassRole` for the template's instance profile, passed to EC2, and, when the
///   template tags what it launches, `ec2:CreateTags` on instances and volumes as part of
///   the launch (EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling API permissions");
///   the roles are the templates', not known from the config, so PassRole is scoped by
///   the service.
pub(super) fn reencrypt_statements(out: &mut Vec<Value>, mine: &[&Binding], account: &AccountId, partition: &str) {
    let re: Vec<&&Binding> = mine.iter().filter(|b| b.reencrypt_from.is_some()).collect();
    if re.is_empty() {
        return;
    }
    let regions: BTreeSet<&str> = re.iter().map(|b| b.asg.region.as_str()).collect();
    let each = |f: &dyn Fn(&str) -> String| -> BTreeSet<String> { regions.iter().map(|r| f(r)).collect() };
    let images = each(&|r| format!("arn:{partition}:ec2:{r}::image/*"));
    let templates = each(&|r| format!("arn:{partition}:ec2:{r}:{account}:launch-template/*"));
    let via: Vec<String> = regions.iter().map(|r| format!("ec2.{r}.amazonaws.com")).collect();
    out.push(statement("CopyImagesForReencryption", &["ec2:CopyImage"], &images, None));
    let copies: BTreeSet<String> =
        images.iter().cloned().chain(each(&|r| format!("arn:{partition}:ec2:{r}::snapshot/*"))).collect();
    out.push(statement(
        "TagImageCopies",
        &["ec2:CreateTags"],
        &copies,
        Some(json!({"StringEquals": {"ec2:CreateAction": "CopyImage"}})),
    ));
    copy_key_statements(out, &re, &via);
    out.push(statement("MakeTemplateVersions", &["ec2:CreateLaunchTemplateVersion"], &templates, None));
    // `reencryptParameter`: the parameter is read and written, and pointing a group at a
    // template whose image resolves through it checks `ssm:GetParameters` on it (EC2 Auto
    // Scaling User Guide, "Use AWS Systems Manager parameters instead of AMI IDs in launch
    // templates"). Its ARN is `parameter` and the name, which begins with `/`.
    let parameters: BTreeSet<String> = re
        .iter()
        .filter_map(|b| {
            let name = b.reencrypt_parameter.as_deref()?;
            Some(format!("arn:{partition}:ssm:{}:{account}:parameter{name}", b.asg.region))
        })
        .collect();
    if !parameters.is_empty() {
        out.push(statement(
            "PublishCopiesToParameters",
            &["ssm:GetParameter", "ssm:PutParameter", "ssm:GetParameters"],
            &parameters,
            None,
        ));
    }
    launch_source_statements(out, &regions, account, partition);
}

/// `defaults.reencryptCleanup`: deregistering the operator's copies and deleting their
/// snapshots, only those it tagged with their source (Service Authorization Reference,
/// Amazon EC2: DeregisterImage on `image*`, DeleteSnapshot on `snapshot*`, each with
/// `aws:ResourceTag/${TagKey}`). The reads of what else launches (every launch template's
/// default and latest version, every launch configuration) are among the reads.
pub(super) fn cleanup_statements(out: &mut Vec<Value>, mine: &[&Binding], account: &AccountId, partition: &str) {
    let regions: BTreeSet<&str> =
        mine.iter().filter(|b| b.reencrypt_from.is_some()).map(|b| b.asg.region.as_str()).collect();
    if regions.is_empty() {
        return;
    }
    let resources: BTreeSet<String> = regions
        .iter()
        .flat_map(|r| [format!("arn:{partition}:ec2:{r}::image/*"), format!("arn:{partition}:ec2:{r}::snapshot/*")])
        .collect();
    let tagged = format!("aws:ResourceTag/{}", crate::core::reencrypt::TAG_SOURCE_IMAGE);
    out.push(statement(
        "CleanUpImageCopies",
        &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
        &resources,
        Some(json!({"Null": {tagged: "false"}})),
    ));
    // The operator's launch configuration copies, named `FROM-ami-…` (launch
    // configurations take no tags to scope by).
    let copies: BTreeSet<String> = regions
        .iter()
        .map(|r| {
            format!("arn:{partition}:autoscaling:{r}:{account}:launchConfiguration:*:launchConfigurationName/*-ami-*")
        })
        .collect();
    out.push(statement("CleanUpLaunchConfigurationCopies", &["autoscaling:DeleteLaunchConfiguration"], &copies, None));
}

/// The copies of launch configurations, and what pointing a group at a launch template
/// checks (see [`reencrypt_statements`]).
fn launch_source_statements(out: &mut Vec<Value>, regions: &BTreeSet<&str>, account: &AccountId, partition: &str) {
    let each = |f: &dyn Fn(&str) -> String| -> BTreeSet<String> { regions.iter().map(|r| f(r)).collect() };
    let templates = each(&|r| format!("arn:{partition}:ec2:{r}:{account}:launch-template/*"));
    out.push(statement(
        "CopyLaunchConfigurations",
        &["autoscaling:CreateLaunchConfiguration"],
        &each(&|r| {
            format!("arn:{partition}:autoscaling:{r}:{account}:launchConfiguration:*:launchConfigurationName/*")
        }),
        None,
    ));
    // What CreateLaunchConfiguration checks besides itself (EC2 Auto Scaling User Guide,
    // "Amazon EC2 Auto Scaling API permissions"); DescribeImages is among the reads.
    // These reads take no resource.
    out.push(statement(
        "ReadWhatALaunchConfigurationNames",
        &[
            "ec2:DescribeInstances",
            "ec2:DescribeInstanceAttribute",
            "ec2:DescribeKeyPairs",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSpotInstanceRequests",
            "ec2:DescribeVpcClassicLink",
        ],
        &BTreeSet::from(["*".to_owned()]),
        None,
    ));
    out.push(statement(
        "LaunchFromTheAccountsTemplates",
        &["ec2:RunInstances"],
        &BTreeSet::from(["*".to_owned()]),
        Some(json!({"ArnLike": {"ec2:LaunchTemplate": templates}})),
    ));
    let launched = each(&|r| format!("arn:{partition}:ec2:{r}:{account}:instance/*"));
    let launched: BTreeSet<String> =
        launched.into_iter().chain(each(&|r| format!("arn:{partition}:ec2:{r}:{account}:volume/*"))).collect();
    out.push(statement(
        "TagWhatTheTemplatesLaunch",
        &["ec2:CreateTags"],
        &launched,
        Some(json!({"StringEquals": {"ec2:CreateAction": "RunInstances"}})),
    ));
    out.push(statement(
        "PassInstanceProfileRolesToEc2",
        &["iam:PassRole"],
        &BTreeSet::from([format!("arn:{partition}:iam::{account}:role/*")]),
        Some(json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})),
    ));
}

/// The keys an image copy reads from (the keys it replaces) and encrypts with (the
/// group's own), used through EC2 only, in `via`'s regions.
fn copy_key_statements(out: &mut Vec<Value>, re: &[&&Binding], via: &[String]) {
    let through_ec2 = json!({"StringEquals": {"kms:ViaService": via}});
    let for_resource = json!({"StringEquals": {"kms:ViaService": via}, "Bool": {"kms:GrantIsForAWSResource": "true"}});
    let from: BTreeSet<&KeyArn> = re.iter().flat_map(|b| replaced(b)).collect();
    let own: BTreeSet<&KeyArn> = re.iter().map(|b| &b.key).collect();
    key_statements(
        out,
        "ReadReplacedKeysThroughEc2",
        &["kms:Decrypt", "kms:ReEncryptFrom"],
        &from,
        Some(through_ec2.clone()),
    );
    key_statements(
        out,
        "EncryptCopiesThroughEc2",
        &["kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptTo"],
        &own,
        Some(through_ec2),
    );
    let both_keys: BTreeSet<&KeyArn> = from.union(&own).copied().collect();
    key_statements(out, "GrantEc2TheCopysKeys", &["kms:CreateGrant"], &both_keys, Some(for_resource));
}
