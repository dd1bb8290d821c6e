//! Which KMS keys a group's launches use, worked out from plain data: its launch template
//! versions or launch configuration, its AMI's snapshots, and the account's EBS
//! encryption defaults. Pure; `aws::discover` reads the data.
//!
//! A launch needs a key for every encrypted volume it makes (EC2 User Guide, "Amazon EBS
//! encryption"):
//! - a block device mapping with a `KmsKeyId` (launch templates only: launch
//!   configurations cannot name a key) uses that key;
//! - a volume made from an encrypted snapshot (the AMI's, or a mapping's own) needs the
//!   snapshot's key to read it, whatever key the new volume is encrypted with;
//! - a volume encrypted with no key named, or any new volume when the account encrypts
//!   by default, uses the account's default EBS key (often the AWS managed `aws/ebs`).

use std::collections::BTreeMap;

use crate::core::model::{KeyManager, LaunchSource};

pub use crate::core::model::launch::{GroupLaunch, LaunchKey, SourceRead};

/// `source`, launched as `spec`: its image's snapshot keys and its mappings' keys.
pub fn source_read(
    source: &LaunchSource,
    spec: &LaunchSpec,
    images: &Images,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults_account: Option<&str>,
) -> SourceRead {
    let mut image_keys: Vec<String> = Vec::new();
    let mut shared_encrypted = false;
    let mut unshared_snapshots = Vec::new();
    let mut billed = None;
    let image_unread = match spec.image_id.as_ref().map(|id| images.get(id)) {
        Some(Some(Err(why))) => Some(why.clone()),
        Some(None) => Some("not read".to_owned()),
        _ => None,
    };
    if let Some(Some(Ok(image))) = spec.image_id.as_ref().map(|id| images.get(id)) {
        let shared = image.owner.as_deref().is_some_and(|o| Some(o) != defaults_account);
        if shared {
            billed = image.billing.clone();
        }
        for m in &image.mappings {
            let overridden = spec.mappings.iter().any(|s| s.device == m.device && s.snapshot_id.is_some());
            if overridden || m.encrypted == Some(false) {
                continue;
            }
            let key = m.kms_key_id.clone().or_else(|| match m.snapshot_id.as_ref().map(|s| snapshots.get(s)) {
                Some(Some(SnapshotKey::Encrypted(k))) => Some(k.clone()),
                _ => None,
            });
            let not_found =
                matches!(m.snapshot_id.as_ref().map(|s| snapshots.get(s)), Some(Some(SnapshotKey::NotFound)));
            if shared && not_found {
                unshared_snapshots.extend(m.snapshot_id.clone());
            }
            match key {
                Some(k) if !image_keys.contains(&k) => image_keys.push(k),
                Some(_) => {}
                None => shared_encrypted |= shared && m.encrypted == Some(true),
            }
        }
    }
    SourceRead {
        source: source.clone(),
        template: spec.template.clone(),
        image_id: spec.image_id.clone(),
        image_keys,
        mapping_keys: spec.mappings.iter().filter_map(|m| Some((m.device.clone(), m.kms_key_id.clone()?))).collect(),
        shared_encrypted,
        image_unread,
        image_parameter: spec.image_parameter.clone(),
        unshared_snapshots,
        billed,
        made_from: spec.made_from,
        moved: None,
    }
}

/// One EBS block device mapping, from a launch template, a launch configuration or an AMI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub device: String,
    pub encrypted: Option<bool>,
    /// A key id, key ARN, alias name or alias ARN, as written.
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
}

/// What one launch template version or launch configuration launches with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchSpec {
    /// How to name it in a comment: `launch template lt-0abc (web) version 3 ($Default)`.
    pub name: String,
    pub image_id: Option<String>,
    pub mappings: Vec<Mapping>,
    /// A launch configuration with a SpotPrice: EC2 launches its Spot instances through
    /// `AWSServiceRoleForEC2Spot` (EC2 Auto Scaling User Guide, service-linked roles).
    pub spot: bool,
    /// A launch template version's template id and number, as read.
    pub template: Option<(String, u64)>,
    /// The Systems Manager parameter the version names its image by (`resolve:ssm:…`),
    /// when it does: `image_id` is then the AMI the parameter holds now.
    pub image_parameter: Option<String>,
    /// For a version the operator made: the version it was made from, as its description
    /// records it.
    pub made_from: Option<u64>,
}

/// An AMI as DescribeImages shows it: its owner and its block device mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub owner: Option<String>,
    pub mappings: Vec<Mapping>,
    /// What bills its launches beyond the instance, when something does: a billing code
    /// (`UsageOperation` other than `RunInstances`: Windows, RHEL, ...) or a product code
    /// (AWS Marketplace). EC2 does not copy such an image shared from another account.
    pub billing: Option<String>,
}

/// Each AMI read, by id: the image, or why it could not be read.
pub type Images = BTreeMap<String, Result<Image, String>>;

/// An encrypted snapshot's key, as DescribeSnapshots (or DescribeImages) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotKey {
    Encrypted(String),
    Unencrypted,
    /// EC2 says the account has no such snapshot: another account's that is not shared
    /// with it (or one deleted).
    NotFound,
    /// The snapshot could not be read, or its key is not shown; why.
    Unknown(String),
}

/// What is said of a snapshot EC2 did not find.
pub const SNAPSHOT_NOT_FOUND: &str = "not found, or not shared with this account";

/// The account's EBS encryption defaults in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbsDefaults {
    pub by_default: bool,
    /// The default key as GetEbsDefaultKmsKeyId answers (`alias/aws/ebs` unless set).
    pub key: String,
    /// The account the launches are in: an AMI another account owns is a shared one.
    pub account: String,
}

/// A key a launch uses, as written where it was found, and where that was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub key_ref: String,
    pub source: String,
}

/// What a launch from `spec` uses: the keys, and the snapshots whose key is unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uses {
    pub keys: Vec<Found>,
    pub unknown: Vec<String>,
}

/// Whether a snapshot of this mapping must be read for its key: a mapping that says it
/// is not encrypted needs no key from its snapshot (the snapshots of public and shared
/// AMIs are usually not readable, and need not be).
pub fn snapshot_needed(m: &Mapping) -> bool {
    m.snapshot_id.is_some() && m.encrypted != Some(false)
}

/// The keys a launch from `spec` needs, given the AMIs read, the snapshots' keys and the
/// account's defaults. Each key appears once, with the first place it was found.
pub fn keys_used(
    spec: &LaunchSpec,
    images: &Images,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults: &EbsDefaults,
) -> Uses {
    let mut uses = Uses::default();
    match spec.image_id.as_deref() {
        None => {}
        // EC2 answers the AMI id when asked with ResolveAlias; a parameter it could not
        // resolve leaves the image unknown.
        Some(id) if id.starts_with("resolve:") => uses
            .unknown
            .push(format!("{}: image {id} was not resolved to an AMI; its snapshots' keys are unknown", spec.name)),
        Some(id) => match images.get(id) {
            None => uses.unknown.push(format!("AMI {id}: not read; its snapshots' keys are unknown")),
            Some(Err(why)) => {
                uses.unknown.push(format!("AMI {id}: could not be read: {why}; its snapshots' keys are unknown"))
            }
            Some(Ok(image)) => uses.image(spec, id, image, snapshots, defaults),
        },
    }
    for m in &spec.mappings {
        let here = format!("{}: {}", spec.name, m.device);
        let mut from_snapshot = false;
        if let Some(snap) = &m.snapshot_id {
            from_snapshot = uses.snapshot(snapshots, m, snap, format!("{here}, snapshot {snap}"));
        }
        match &m.kms_key_id {
            Some(k) => uses.add(k, here),
            None if from_snapshot => {}
            None if m.encrypted == Some(true) => {
                uses.add(&defaults.key, default_key(defaults, &format!("{here}, encrypted")))
            }
            None if defaults.by_default => {
                uses.add(&defaults.key, default_key(defaults, &format!("{here}, encrypted by default")))
            }
            None => {}
        }
    }
    uses
}

fn default_key(defaults: &EbsDefaults, what: &str) -> String {
    format!("{what}, with the account's default EBS key ({})", defaults.key)
}

impl Uses {
    fn add(&mut self, key_ref: &str, source: String) {
        if !self.keys.iter().any(|f| f.key_ref == key_ref) {
            self.keys.push(Found { key_ref: key_ref.to_owned(), source });
        }
    }

    /// Whether snapshot `id` of mapping `m` is encrypted (its key counted). A mapping
    /// that says it is not encrypted gives no warning when its snapshot was not read.
    fn snapshot(&mut self, snapshots: &BTreeMap<String, SnapshotKey>, m: &Mapping, id: &str, source: String) -> bool {
        match snapshots.get(id) {
            Some(SnapshotKey::Encrypted(k)) => {
                self.add(k, source);
                true
            }
            Some(SnapshotKey::Unencrypted) => false,
            _ if m.encrypted == Some(false) => false,
            Some(SnapshotKey::Unknown(why)) => {
                self.unknown.push(format!("{source}: {why}"));
                false
            }
            Some(SnapshotKey::NotFound) => {
                self.unknown.push(format!("{source}: {SNAPSHOT_NOT_FOUND}"));
                false
            }
            None => {
                self.unknown.push(format!("{source}: not read"));
                false
            }
        }
    }

    /// The keys of an AMI's volumes, unless the launch template or configuration maps
    /// the device anew.
    fn image(
        &mut self,
        spec: &LaunchSpec,
        id: &str,
        image: &Image,
        snapshots: &BTreeMap<String, SnapshotKey>,
        defaults: &EbsDefaults,
    ) {
        let shared = image.owner.as_deref().filter(|o| *o != defaults.account);
        for m in &image.mappings {
            let overridden = spec.mappings.iter().any(|s| s.device == m.device && s.snapshot_id.is_some());
            let named = spec.mappings.iter().find(|s| s.device == m.device).and_then(|s| s.kms_key_id.as_deref());
            let here = match shared {
                Some(owner) => format!("AMI {id} (owned by {owner}): {}", m.device),
                None => format!("AMI {id}: {}", m.device),
            };
            let mut encrypted = false;
            if overridden || m.encrypted == Some(false) {
                // Mapped anew, or not encrypted: no key of its snapshot.
            } else if let Some(k) = &m.kms_key_id {
                self.add(k, format!("{here}, snapshot {}", m.snapshot_id.as_deref().unwrap_or("?")));
                encrypted = true;
            } else if let Some(snap) = m.snapshot_id.as_deref() {
                encrypted = self.snapshot(snapshots, m, snap, format!("{here}, snapshot {snap}"));
            }
            // EC2 User Guide, "Use encryption with EBS-backed AMIs": a volume made from an
            // encrypted snapshot another account owns is encrypted with the launching
            // account's default EBS key, unless the launch names a key.
            if shared.is_some() && !overridden && m.encrypted == Some(true) && named.is_none() {
                let what = format!("{here}, an encrypted snapshot of another account, re-encrypted");
                self.add(&defaults.key, default_key(defaults, &what));
                encrypted = true;
            }
            if !encrypted && named.is_none() && defaults.by_default {
                self.add(&defaults.key, default_key(defaults, &format!("{here}, encrypted by default")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
    const S: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";

    fn m(device: &str, encrypted: Option<bool>, key: Option<&str>, snap: Option<&str>) -> Mapping {
        Mapping {
            device: device.into(),
            encrypted,
            kms_key_id: key.map(str::to_owned),
            snapshot_id: snap.map(str::to_owned),
        }
    }

    fn spec(mappings: Vec<Mapping>) -> LaunchSpec {
        LaunchSpec {
            name: "launch template lt-1 (web) version 2".into(),
            image_id: Some("ami-1".into()),
            mappings,
            spot: false,
            template: None,
            image_parameter: None,
            made_from: None,
        }
    }

    fn defaults(by_default: bool) -> EbsDefaults {
        EbsDefaults { by_default, key: "alias/aws/ebs".into(), account: "111122223333".into() }
    }

    /// An AMI of `owner` with `mappings`, read.
    fn image(owner: &str, mappings: Vec<Mapping>) -> Images {
        BTreeMap::from([("ami-1".into(), Ok(Image { owner: Some(owner.into()), mappings, billing: None }))])
    }

    const OWN: &str = "111122223333";
    const FOREIGN: &str = "999988887777";

    fn keys(u: &Uses) -> Vec<(&str, &str)> {
        u.keys.iter().map(|f| (f.key_ref.as_str(), f.source.as_str())).collect()
    }

    #[test]
    fn only_a_shared_images_snapshots_ec2_did_not_find_are_unshared() {
        let mappings = vec![
            m("/dev/xvda", Some(true), None, Some("snap-gone")),
            m("/dev/xvdb", Some(true), None, Some("snap-failed")),
            m("/dev/xvdc", Some(true), None, Some("snap-keyless")),
        ];
        let snaps = BTreeMap::from([
            ("snap-gone".into(), SnapshotKey::NotFound),
            ("snap-failed".into(), SnapshotKey::Unknown("DescribeSnapshots: Throttling".into())),
            ("snap-keyless".into(), SnapshotKey::Unknown("encrypted, but its key is not shown".into())),
        ]);
        let source = LaunchSource::Configuration("lc".into());
        let read = source_read(&source, &spec(vec![]), &image(FOREIGN, mappings.clone()), &snaps, Some(OWN));
        assert_eq!(read.unshared_snapshots, ["snap-gone"], "a failed read or a hidden key is no proof");
        let own = source_read(&source, &spec(vec![]), &image(OWN, mappings), &snaps, Some(OWN));
        assert!(own.unshared_snapshots.is_empty(), "the account's own image");
    }

    #[test]
    fn a_data_volume_with_a_key_and_an_ami_snapshot_with_another_need_both() {
        let images = image(OWN, vec![m("/dev/xvda", Some(true), None, Some("snap-1"))]);
        let snaps = BTreeMap::from([("snap-1".into(), SnapshotKey::Encrypted(S.into()))]);
        let u = keys_used(&spec(vec![m("/dev/xvdb", Some(true), Some(K), None)]), &images, &snaps, &defaults(false));
        assert_eq!(
            keys(&u),
            [(S, "AMI ami-1: /dev/xvda, snapshot snap-1"), (K, "launch template lt-1 (web) version 2: /dev/xvdb"),]
        );
    }

    #[test]
    fn encrypted_without_a_key_or_by_default_uses_the_default_key() {
        let (none, no_snaps): (Images, _) = (BTreeMap::new(), BTreeMap::new());
        let u = keys_used(&spec(vec![m("/dev/xvdb", Some(true), None, None)]), &none, &no_snaps, &defaults(false));
        assert_eq!(keys(&u), [("alias/aws/ebs", "launch template lt-1 (web) version 2: /dev/xvdb, encrypted, with the account's default EBS key (alias/aws/ebs)")]);
        let plain = keys_used(&spec(vec![m("/dev/xvdb", None, None, None)]), &none, &no_snaps, &defaults(false));
        assert!(plain.keys.is_empty(), "unencrypted and no encryption by default: no key");
        let by_default = keys_used(&spec(vec![m("/dev/xvdb", None, None, None)]), &none, &no_snaps, &defaults(true));
        assert_eq!(by_default.keys.len(), 1);
        assert!(by_default.keys[0].source.contains("encrypted by default"), "{:?}", by_default.keys);
    }

    #[test]
    fn a_snapshot_that_cannot_be_read_is_reported_not_guessed() {
        let images = image(OWN, vec![m("/dev/xvda", Some(true), None, Some("snap-x"))]);
        let snaps = BTreeMap::from([("snap-x".into(), SnapshotKey::Unknown("InvalidSnapshot.NotFound".into()))]);
        let u = keys_used(&spec(vec![]), &images, &snaps, &defaults(false));
        assert!(u.keys.is_empty());
        assert_eq!(u.unknown, ["AMI ami-1: /dev/xvda, snapshot snap-x: InvalidSnapshot.NotFound"]);
    }

    #[test]
    fn a_key_used_twice_is_listed_once_where_first_found() {
        let u = keys_used(
            &spec(vec![m("/dev/xvdb", Some(true), Some(K), None), m("/dev/xvdc", Some(true), Some(K), None)]),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &defaults(false),
        );
        assert_eq!(keys(&u), [(K, "launch template lt-1 (web) version 2: /dev/xvdb")]);
    }

    #[test]
    fn a_key_on_the_ami_mapping_itself_is_taken_as_the_snapshots() {
        let images = image(OWN, vec![m("/dev/xvda", Some(true), Some(S), Some("snap-1"))]);
        let u = keys_used(&spec(vec![]), &images, &BTreeMap::new(), &defaults(false));
        assert_eq!(keys(&u), [(S, "AMI ami-1: /dev/xvda, snapshot snap-1")]);
    }

    #[test]
    fn an_image_that_cannot_be_read_loses_only_its_own_keys_and_says_why() {
        let images = BTreeMap::from([("ami-1".into(), Err("not found, or not shared with this account".into()))]);
        let u = keys_used(
            &spec(vec![m("/dev/xvdb", Some(true), Some(K), None)]),
            &images,
            &BTreeMap::new(),
            &defaults(false),
        );
        assert_eq!(keys(&u), [(K, "launch template lt-1 (web) version 2: /dev/xvdb")], "the template's own key stays");
        assert_eq!(
            u.unknown,
            ["AMI ami-1: could not be read: not found, or not shared with this account; its snapshots' keys are unknown"]
        );
    }

    #[test]
    fn an_image_named_by_a_parameter_ec2_did_not_resolve_is_reported() {
        let mut s = spec(vec![]);
        s.image_id = Some("resolve:ssm:/golden/ami".into());
        let u = keys_used(&s, &BTreeMap::new(), &BTreeMap::new(), &defaults(false));
        assert!(u.keys.is_empty());
        assert_eq!(
            u.unknown,
            ["launch template lt-1 (web) version 2: image resolve:ssm:/golden/ami was not resolved to an AMI; its snapshots' keys are unknown"]
        );
    }

    #[test]
    fn a_mapping_that_is_not_encrypted_needs_no_snapshot_key_and_warns_of_none() {
        let unread = BTreeMap::from([("snap-x".into(), SnapshotKey::Unknown("InvalidSnapshot.NotFound".into()))]);
        // An AMI (public, say) whose mapping says it is not encrypted: its snapshot is
        // neither needed nor read.
        let images = image(FOREIGN, vec![m("/dev/xvda", Some(false), None, Some("snap-x"))]);
        let u = keys_used(&spec(vec![]), &images, &unread, &defaults(false));
        assert_eq!(u, Uses::default());
        let u = keys_used(&spec(vec![]), &images, &BTreeMap::new(), &defaults(false));
        assert_eq!(u, Uses::default(), "not even read");
        assert!(!snapshot_needed(&m("/dev/xvda", Some(false), None, Some("snap-x"))));
        assert!(snapshot_needed(&m("/dev/xvda", None, None, Some("snap-x"))));
        // A template mapping that says Encrypted: false, on a snapshot that cannot be read.
        let mut no_image = spec(vec![m("/dev/xvdb", Some(false), None, Some("snap-x"))]);
        no_image.image_id = None;
        assert_eq!(keys_used(&no_image, &BTreeMap::new(), &unread, &defaults(false)), Uses::default());
        // A snapshot that is not encrypted needs no key either.
        let plain = BTreeMap::from([("snap-p".into(), SnapshotKey::Unencrypted)]);
        let images = image(OWN, vec![m("/dev/xvda", None, None, Some("snap-p"))]);
        assert_eq!(keys_used(&spec(vec![]), &images, &plain, &defaults(false)), Uses::default());
        // Encryption by default still encrypts the new volume.
        let u = keys_used(&spec(vec![]), &images, &plain, &defaults(true));
        assert_eq!(
            keys(&u),
            [(
                "alias/aws/ebs",
                "AMI ami-1: /dev/xvda, encrypted by default, with the account's default EBS key (alias/aws/ebs)"
            )]
        );
    }

    #[test]
    fn a_shared_amis_encrypted_snapshot_is_re_encrypted_with_the_default_key_unless_a_key_is_named() {
        let mut d = defaults(false);
        d.key = K.into();
        let unread = BTreeMap::from([("snap-f".into(), SnapshotKey::NotFound)]);
        let images = image(FOREIGN, vec![m("/dev/xvda", Some(true), None, Some("snap-f"))]);
        let u = keys_used(&spec(vec![]), &images, &unread, &d);
        assert_eq!(
            keys(&u),
            [(K, "AMI ami-1 (owned by 999988887777): /dev/xvda, an encrypted snapshot of another account, re-encrypted, with the account's default EBS key (arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111)")]
        );
        assert_eq!(
            u.unknown,
            ["AMI ami-1 (owned by 999988887777): /dev/xvda, snapshot snap-f: not found, or not shared with this account"],
            "the owner's key is still needed to read the snapshot, and cannot be known"
        );
        // A snapshot shared with the account shows its key: both are used.
        let shared = BTreeMap::from([("snap-f".into(), SnapshotKey::Encrypted(S.into()))]);
        let u = keys_used(&spec(vec![]), &images, &shared, &d);
        assert_eq!(u.keys.iter().map(|f| f.key_ref.as_str()).collect::<Vec<_>>(), [S, K]);
        // The launch names a key for the device: that key, not the default.
        let named = spec(vec![m("/dev/xvda", Some(true), Some("alias/root"), None)]);
        let u = keys_used(&named, &images, &shared, &d);
        assert_eq!(u.keys.iter().map(|f| f.key_ref.as_str()).collect::<Vec<_>>(), [S, "alias/root"]);
        // The account's own AMI: its snapshot's key only.
        let own = image(OWN, vec![m("/dev/xvda", Some(true), None, Some("snap-f"))]);
        assert_eq!(keys(&keys_used(&spec(vec![]), &own, &shared, &d)), [(S, "AMI ami-1: /dev/xvda, snapshot snap-f")]);
    }
}

/// The config `discover` prints: one binding per group that launches with a customer
/// managed key, listing under `keys` each such key with a comment saying where it was
/// found; what is left out is said in comments. Valid input to `validate` and the rest.
pub fn render_config(
    account: &crate::core::model::AccountId,
    region: &str,
    groups: &[(String, Result<GroupLaunch, String>)],
    written: &str,
) -> String {
    let mut s = format!(
        "# Written by `asg-cmk-operator discover` for account {account}, region {region}, at {written}.\n\
         # Each group lists the customer managed keys its launches use, with where each was\n\
         # found. Check it, then use it with validate, plan, apply or run.\n\
         version: 1\ndefaults:\n  region: {region}\n"
    );
    let mut other_accounts: std::collections::BTreeSet<String> = Default::default();
    let mut body = String::new();
    let mut bound = 0;
    for (name, launch) in groups {
        let launch = match launch {
            Ok(l) => l,
            Err(why) => {
                body.push_str(&format!("  # {}: not read: {}\n", comment(name), comment(why)));
                continue;
            }
        };
        let mut keys = Vec::new();
        let mut notes = Vec::new();
        for k in &launch.keys {
            match &k.resolved {
                Ok((_, KeyManager::Aws)) => {
                    notes.push(format!("left out: {} is AWS managed and needs nothing ({})", k.key_ref, k.source))
                }
                Ok((arn, KeyManager::Customer)) => {
                    if arn.account() != account {
                        other_accounts.insert(arn.account().to_string());
                    }
                    if !keys.iter().any(|(a, _): &(String, String)| a == arn.as_str()) {
                        keys.push((arn.to_string(), k.source.clone()));
                    }
                }
                // A key named by ARN is listed even when it could not be described;
                // any other reference cannot be turned into an ARN here.
                Err(why) => match crate::core::model::KeyArn::parse(&k.key_ref) {
                    Ok(arn) => {
                        // Another account's key is described only once its policy lets
                        // this account: its ARN still says whose it is.
                        if arn.account() != account {
                            other_accounts.insert(arn.account().to_string());
                        }
                        keys.push((k.key_ref.clone(), format!("{} (not described: {why}; check it)", k.source)))
                    }
                    Err(_) => {
                        notes.push(format!("left out: {} ({}) could not be described: {why}", k.key_ref, k.source))
                    }
                },
            }
        }
        notes.extend(launch.unknown.iter().map(|u| format!("a volume's key could not be known: {u}")));
        notes.extend(launch.spot.iter().map(|lc| {
            format!("{lc} requests Spot instances, which EC2 launches through AWSServiceRoleForEC2Spot: that role needs these keys too, and the operator does not grant it")
        }));
        if keys.is_empty() {
            body.push_str(&format!("  # {}: launches with no customer managed key; nothing to bind.\n", comment(name)));
            for n in &notes {
                body.push_str(&format!("  #   {}\n", comment(n)));
            }
            continue;
        }
        bound += 1;
        body.push_str(&format!("  - asg: {}\n    account: \"{account}\"\n    keys:\n", quote(name)));
        for (arn, source) in &keys {
            body.push_str(&format!("      - {arn}  # {}\n", comment(source)));
        }
        for n in &notes {
            body.push_str(&format!("    # {}\n", comment(n)));
        }
    }
    if !other_accounts.is_empty() {
        s.push_str("# Keys of other accounts need a role there that the operator may assume (case 2):\n# accounts:\n");
        for a in &other_accounts {
            s.push_str(&format!("#   - id: \"{a}\"\n#     roleArn: arn:aws:iam::{a}:role/NAME\n"));
        }
    }
    s.push_str(if bound == 0 { "bindings: []\n" } else { "bindings:\n" });
    s.push_str(&body);
    s
}

/// A YAML double-quoted string.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Text for a YAML comment: one line.
fn comment(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::core::model::AccountId;

    const OWN: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";

    fn key(r: &str, source: &str, resolved: Result<(&str, KeyManager), &str>) -> LaunchKey {
        LaunchKey {
            key_ref: r.into(),
            source: source.into(),
            resolved: resolved.map(|(a, m)| (crate::core::model::KeyArn::parse(a).unwrap(), m)).map_err(str::to_owned),
        }
    }

    #[test]
    fn the_printed_config_is_valid_and_says_where_each_key_came_from() {
        let acct = AccountId::parse("111122223333").unwrap();
        let groups = vec![
            (
                "web".to_owned(),
                Ok(GroupLaunch {
                    keys: vec![
                        key(
                            "alias/data",
                            "launch template lt-1 (web) version 2: /dev/xvdb",
                            Ok((OWN, KeyManager::Customer)),
                        ),
                        key(OTHER, "AMI ami-1: /dev/xvda, snapshot snap-1", Ok((OTHER, KeyManager::Customer))),
                        key(
                            "alias/aws/ebs",
                            "default",
                            Ok((
                                "arn:aws:kms:us-west-2:111122223333:key/33333333-3333-3333-3333-333333333333",
                                KeyManager::Aws,
                            )),
                        ),
                    ],
                    unknown: vec![],
                    spot: vec!["launch configuration old".into()],
                    sources: vec![],
                }),
            ),
            ("api".to_owned(), Ok(GroupLaunch::default())),
            ("odd #name".to_owned(), Err("AccessDenied".to_owned())),
        ];
        let text = render_config(&acct, "us-west-2", &groups, "2026-11-29T00:00:00Z");
        let d = crate::core::config::parse(&text, "discovered").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(d.bindings.len(), 2, "{text}");
        assert_eq!(d.bindings[0].asg.name, "web");
        assert_eq!([d.bindings[0].key.as_str(), d.bindings[1].key.as_str()], [OWN, OTHER]);
        assert!(
            text.contains(&format!("      - {OWN}  # launch template lt-1 (web) version 2: /dev/xvdb\n")),
            "{text}"
        );
        assert!(text.contains("left out: alias/aws/ebs is AWS managed"), "{text}");
        assert!(text.contains("AWSServiceRoleForEC2Spot"), "{text}");
        assert!(text.contains("# api: launches with no customer managed key"), "{text}");
        assert!(text.contains("# odd #name: not read: AccessDenied"), "{text}");
        assert!(text.contains("#   - id: \"444455556666\""), "the other account's role is asked for: {text}");
    }

    #[test]
    fn another_accounts_key_not_described_still_asks_for_its_accounts_role() {
        // Its policy does not let this account describe it yet: the ARN says whose it is.
        let acct = AccountId::parse("111122223333").unwrap();
        let launch = GroupLaunch {
            keys: vec![key(OTHER, "AMI ami-1: /dev/xvda, snapshot snap-1", Err("AccessDeniedException"))],
            ..GroupLaunch::default()
        };
        let text = render_config(&acct, "us-west-2", &[("web".to_owned(), Ok(launch))], "t");
        assert!(text.contains("#   - id: \"444455556666\""), "{text}");
        assert!(text.contains("(not described: AccessDeniedException; check it)"), "{text}");
        assert_eq!(crate::core::config::parse(&text, "t").unwrap().bindings.len(), 1, "{text}");
    }

    #[test]
    fn with_nothing_to_bind_the_config_is_still_valid() {
        let acct = AccountId::parse("111122223333").unwrap();
        let text = render_config(&acct, "us-west-2", &[("api".to_owned(), Ok(GroupLaunch::default()))], "t");
        assert_eq!(crate::core::config::parse(&text, "t").unwrap().bindings.len(), 0, "{text}");
    }
}
