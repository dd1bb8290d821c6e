//! Before a copy: what AWS would refuse, told before CopyImage is asked. A copy reads the
//! source image's snapshots, so they must be shared with the group's account, and uses
//! their key through EC2 with the caller's permissions (EC2 User Guide, "Copy an Amazon
//! EC2 AMI"); and an image with a billing code shared from another account is not copied
//! at all (same page). Where the image's or the key's owner must act, the exact request.

use super::{missing, read_failed, Next};
use crate::core::launch::{GroupLaunch, SourceRead};
use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, DryRun, Failure, KeyArn, Wait};
use crate::core::reencrypt::ReencryptReads;

/// The keys a binding replaces that the group's account must be allowed to use for a
/// copy: another account's, by key ARN (an alias of another account cannot be checked).
pub(super) fn replaced(b: &Binding) -> impl Iterator<Item = &KeyArn> {
    b.reencrypt_from.iter().flat_map(|f| f.iter()).filter(move |k| k.account() != &b.asg.account && !k.is_alias())
}

/// Why no copy of `image` (source `s`'s) is asked for, if AWS would refuse it: the image
/// has a billing code, its snapshots are not shared, or the key's owner has not let the
/// group's account use the key.
pub(super) fn refused(
    b: &Binding,
    (image, s, launch): (&str, &SourceRead, &GroupLaunch),
    reads: &ReencryptReads,
) -> Option<Next> {
    if let Some(billed) = &s.billed {
        return Some(Next::Stop(Failure::terminal(format!(
            "image {image} is another account's and has a {billed}: EC2 does not copy such an image shared from another account (EC2 User Guide, \"Copy an Amazon EC2 AMI\"), so nothing is copied. Launch an instance from it in account {account}, make an image of that instance, and point the template at it; or keep the key and bind it by the procedure's grant (strategy: grant)",
            account = b.asg.account,
        ))));
    }
    unshared(b, image, &s.unshared_snapshots).or_else(|| copy_refused(b, reads, launch))
}

/// Why a copy cannot be made yet, if the owner of a key being replaced has not let the
/// group's account use it: the statements to ask for, as the hand-off prints them.
///
/// Where the owner's policy cannot be read (hand-off), a dry run of CreateGrant is all
/// the account can judge by, and it tests a plain grant, while the copy's grants are for
/// an AWS resource. A refused dry run is no block when the group's account could
/// describe the key (`launch`'s keys, described with its credentials): its policy shares
/// the key with the account, as the KMS console shares keys (use, and grants only for AWS
/// resources), and the copy is tried. A copy the policy does not allow after all ends
/// `failed`, with EC2's reason, and the binding says so.
fn copy_refused(b: &Binding, reads: &ReencryptReads, launch: &GroupLaunch) -> Option<Next> {
    let described = |key: &KeyArn| launch.keys.iter().any(|k| matches!(&k.resolved, Ok((arn, _)) if arn == key));
    for key in replaced(b) {
        if let Some(policy) = reads.source_policies.get(key) {
            match policy {
                Err(f) => return Some(Next::Stop(read_failed(&format!("the key policy of {key}"), f))),
                Ok(text) => match copy_allowed(text, key, &b.asg.account) {
                    Ok(()) => continue,
                    Err(why) => return Some(copy_wait(b, key, &why)),
                },
            }
        }
        match reads.access.get(&(key.clone(), b.slr())) {
            None => return Some(Next::Stop(missing(format!("a dry run of CreateGrant on {key}")))),
            Some(Err(f)) => return Some(Next::Stop(read_failed(&format!("a dry run of CreateGrant on {key}"), f))),
            Some(Ok(DryRun::Refused)) if described(key) => {}
            Some(Ok(DryRun::Refused)) => {
                let statements = crate::core::policy::case2_statements(&[b.asg.account.root_arn(key.partition())]);
                return Some(Next::Wait(
                    Wait::KeyOwner,
                    format!(
                        "awaiting key owner: the group's images are copied with key {key}, which account {owner} owns, and a dry run of CreateGrant by account {account} was refused. Ask the key's administrators to add these statements to its key policy (no grant for the service-linked role is needed): {json}",
                        owner = key.account(),
                        account = b.asg.account,
                        json = serde_json::Value::Array(statements),
                    ),
                ));
            }
            Some(Ok(DryRun::Allowed | DryRun::GranteeUnknown)) => {}
        }
    }
    None
}

/// What a copy does with a key being replaced, through EC2 with the caller's permissions
/// (EC2 User Guide, "Copy an Amazon EC2 AMI"): reads the snapshots (Decrypt,
/// ReEncryptFrom, DescribeKey), and makes grants for an AWS resource (CreateGrant with
/// `kms:GrantIsForAWSResource` true). Judged on the key's policy for the group's account:
/// `Err` says what it lacks, or the Deny.
fn copy_allowed(text: &str, key: &KeyArn, account: &AccountId) -> Result<(), String> {
    use crate::core::policy::{coverage, Conditions, Coverage, PolicyDocument, PrincipalIds};
    let doc = PolicyDocument::parse(text).map_err(|e| format!("its policy cannot be read: {e}"))?;
    let who = PrincipalIds::account_root(account, key.partition());
    let needed = [
        ("kms:Decrypt", Conditions::None),
        ("kms:ReEncryptFrom", Conditions::None),
        ("kms:DescribeKey", Conditions::None),
        ("kms:CreateGrant", Conditions::GrantForAwsResource),
    ];
    let mut lacks = Vec::new();
    for (action, ok) in needed {
        match coverage(&doc, &who, action, key.as_str(), ok) {
            Coverage::Denied(sid) => {
                let which = sid.map_or("a statement with no Sid".to_owned(), |s| format!("the statement {s}"));
                return Err(format!("{which} denies {action} to account {account}"));
            }
            Coverage::Allowed => {}
            Coverage::Missing => lacks.push(action),
        }
    }
    match lacks.is_empty() {
        true => Ok(()),
        false => Err(format!("it does not allow account {account} {}", lacks.join(", "))),
    }
}

/// A copy that waits for the key's owner: what the policy lacks, and the statements that
/// give a copy what it needs (with no grant for the service-linked role).
fn copy_wait(b: &Binding, key: &KeyArn, why: &str) -> Next {
    let root = b.asg.account.root_arn(key.partition());
    let statements = serde_json::json!([
        {"Sid": "AllowCopiesByAccount", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": ["kms:Decrypt", "kms:ReEncryptFrom", "kms:DescribeKey"], "Resource": "*"},
        {"Sid": "AllowCopyGrantsByAccount", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": "kms:CreateGrant", "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}
    ]);
    Next::Wait(
        Wait::KeyOwner,
        format!(
            "awaiting key owner: the group's images are copied with key {key}, which account {owner} owns, and its key policy, read with that account's credentials: {why}. Ask the key's administrators to add these statements to it: {statements}",
            owner = key.account(),
        ),
    )
}

/// Why a copy of `image` cannot be made yet, if some of its snapshots are not shared with
/// the group's account: the exact request for the image's owner.
fn unshared(b: &Binding, image: &str, snapshots: &[String]) -> Option<Next> {
    if snapshots.is_empty() {
        return None;
    }
    let account = b.asg.account;
    let commands: Vec<String> = snapshots
        .iter()
        .map(|s| format!("aws ec2 modify-snapshot-attribute --snapshot-id {s} --attribute createVolumePermission --operation-type add --user-ids {account}"))
        .collect();
    Some(Next::Wait(
        Wait::ImageOwner,
        format!(
            "awaiting image owner: image {image} is shared with account {account}, but its snapshot{} {} {} not, and a copy reads them. Ask the image's owner to share {}: {}",
            if snapshots.len() == 1 { "" } else { "s" },
            snapshots.join(", "),
            if snapshots.len() == 1 { "is" } else { "are" },
            if snapshots.len() == 1 { "it" } else { "them" },
            commands.join("; "),
        ),
    ))
}
