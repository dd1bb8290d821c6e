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

use crate::model::{KeyArn, KeyManager};

/// A key one of a group's launches uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchKey {
    /// As written where it was found (a key id, ARN, alias name or alias ARN).
    pub key_ref: String,
    /// Where: `launch template lt-0abc (web) version 3 ($Default): /dev/xvdb`.
    pub source: String,
    /// The key it names, as DescribeKey answers; why not, when it could not be described.
    pub resolved: Result<(KeyArn, KeyManager), String>,
}

/// What a group's launches use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLaunch {
    pub keys: Vec<LaunchKey>,
    /// Volumes whose key could not be known (a snapshot that could not be read), and why.
    pub unknown: Vec<String>,
    /// Launch configurations that request Spot instances.
    pub spot: Vec<String>,
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
}

/// An encrypted snapshot's key, as DescribeSnapshots (or DescribeImages) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotKey {
    Encrypted(String),
    Unencrypted,
    /// The snapshot could not be read; why.
    Unknown(String),
}

/// The account's EBS encryption defaults in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbsDefaults {
    pub by_default: bool,
    /// The default key as GetEbsDefaultKmsKeyId answers (`alias/aws/ebs` unless set).
    pub key: String,
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

/// The keys a launch from `spec` needs, given the AMIs' mappings, the snapshots' keys and
/// the account's defaults. Each key appears once, with the first place it was found.
pub fn keys_used(
    spec: &LaunchSpec,
    images: &BTreeMap<String, Vec<Mapping>>,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults: &EbsDefaults,
) -> Uses {
    let mut uses = Uses::default();
    let add = |key_ref: &str, source: String, uses: &mut Uses| {
        if !uses.keys.iter().any(|f| f.key_ref == key_ref) {
            uses.keys.push(Found { key_ref: key_ref.to_owned(), source });
        }
    };
    let default_key = |what: &str| format!("{what}, with the account's default EBS key ({})", defaults.key);
    let snapshot = |id: &str, source: String, uses: &mut Uses| -> bool {
        match snapshots.get(id) {
            Some(SnapshotKey::Encrypted(k)) => {
                add(k, source, uses);
                true
            }
            Some(SnapshotKey::Unencrypted) => false,
            Some(SnapshotKey::Unknown(why)) => {
                uses.unknown.push(format!("{source}: {why}"));
                false
            }
            None => {
                uses.unknown.push(format!("{source}: not read"));
                false
            }
        }
    };
    let image = spec.image_id.as_deref().and_then(|id| images.get(id).map(|m| (id, m)));
    // The AMI's volumes, unless the launch template or configuration maps the device anew.
    if let Some((id, mappings)) = image {
        for m in mappings {
            let overridden = spec.mappings.iter().any(|s| s.device == m.device && s.snapshot_id.is_some());
            let here = format!("AMI {id}: {}", m.device);
            let mut encrypted = false;
            if let Some(k) = &m.kms_key_id {
                add(k, format!("{here}, snapshot {}", m.snapshot_id.as_deref().unwrap_or("?")), &mut uses);
                encrypted = true;
            } else if let Some(snap) = m.snapshot_id.as_deref().filter(|_| !overridden) {
                encrypted = snapshot(snap, format!("{here}, snapshot {snap}"), &mut uses);
            }
            let named = spec.mappings.iter().find(|s| s.device == m.device).and_then(|s| s.kms_key_id.as_deref());
            if !encrypted && named.is_none() && defaults.by_default {
                add(&defaults.key, default_key(&format!("{here}, encrypted by default")), &mut uses);
            }
        }
    }
    for m in &spec.mappings {
        let here = format!("{}: {}", spec.name, m.device);
        let mut from_snapshot = false;
        if let Some(snap) = &m.snapshot_id {
            from_snapshot = snapshot(snap, format!("{here}, snapshot {snap}"), &mut uses);
        }
        match &m.kms_key_id {
            Some(k) => add(k, here, &mut uses),
            None if from_snapshot => {}
            None if m.encrypted == Some(true) => {
                add(&defaults.key, default_key(&format!("{here}, encrypted")), &mut uses)
            }
            None if defaults.by_default => {
                add(&defaults.key, default_key(&format!("{here}, encrypted by default")), &mut uses)
            }
            None => {}
        }
    }
    uses
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
        }
    }

    fn defaults(by_default: bool) -> EbsDefaults {
        EbsDefaults { by_default, key: "alias/aws/ebs".into() }
    }

    fn keys(u: &Uses) -> Vec<(&str, &str)> {
        u.keys.iter().map(|f| (f.key_ref.as_str(), f.source.as_str())).collect()
    }

    #[test]
    fn a_data_volume_with_a_key_and_an_ami_snapshot_with_another_need_both() {
        let images = BTreeMap::from([("ami-1".into(), vec![m("/dev/xvda", Some(true), None, Some("snap-1"))])]);
        let snaps = BTreeMap::from([("snap-1".into(), SnapshotKey::Encrypted(S.into()))]);
        let u = keys_used(&spec(vec![m("/dev/xvdb", Some(true), Some(K), None)]), &images, &snaps, &defaults(false));
        assert_eq!(
            keys(&u),
            [(S, "AMI ami-1: /dev/xvda, snapshot snap-1"), (K, "launch template lt-1 (web) version 2: /dev/xvdb"),]
        );
    }

    #[test]
    fn encrypted_without_a_key_or_by_default_uses_the_default_key() {
        let (none, no_snaps) = (BTreeMap::new(), BTreeMap::new());
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
        let images = BTreeMap::from([("ami-1".into(), vec![m("/dev/xvda", Some(true), None, Some("snap-x"))])]);
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
        let images = BTreeMap::from([("ami-1".into(), vec![m("/dev/xvda", Some(true), Some(S), Some("snap-1"))])]);
        let u = keys_used(&spec(vec![]), &images, &BTreeMap::new(), &defaults(false));
        assert_eq!(keys(&u), [(S, "AMI ami-1: /dev/xvda, snapshot snap-1")]);
    }
}

/// The config `discover` prints: one binding per group that launches with a customer
/// managed key, listing under `keys` each such key with a comment saying where it was
/// found; what is left out is said in comments. Valid input to `validate` and the rest.
pub fn render_config(
    account: &crate::model::AccountId,
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
                Err(why) if crate::model::KeyArn::parse(&k.key_ref).is_ok() => {
                    keys.push((k.key_ref.clone(), format!("{} (not described: {why}; check it)", k.source)))
                }
                Err(why) => notes.push(format!("left out: {} ({}) could not be described: {why}", k.key_ref, k.source)),
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
    use crate::model::AccountId;

    const OWN: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";

    fn key(r: &str, source: &str, resolved: Result<(&str, KeyManager), &str>) -> LaunchKey {
        LaunchKey {
            key_ref: r.into(),
            source: source.into(),
            resolved: resolved.map(|(a, m)| (KeyArn::parse(a).unwrap(), m)).map_err(str::to_owned),
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
                }),
            ),
            ("api".to_owned(), Ok(GroupLaunch::default())),
            ("odd #name".to_owned(), Err("AccessDenied".to_owned())),
        ];
        let text = render_config(&acct, "us-west-2", &groups, "2026-11-29T00:00:00Z");
        let d = crate::config::parse(&text, "discovered").unwrap_or_else(|e| panic!("{e}\n{text}"));
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
    fn with_nothing_to_bind_the_config_is_still_valid() {
        let acct = AccountId::parse("111122223333").unwrap();
        let text = render_config(&acct, "us-west-2", &[("api".to_owned(), Ok(GroupLaunch::default()))], "t");
        assert_eq!(crate::config::parse(&text, "t").unwrap().bindings.len(), 0, "{text}");
    }
}
