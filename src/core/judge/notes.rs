//! Notes: what is true of a binding's group that is neither a condition nor a failure,
//! for `plan`'s output and the logs. A group that launches with a customer managed key no
//! binding covers, a volume whose key cannot be known, Spot instances requested through a
//! launch configuration, a most recent launch that failed, a key AWS manages.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::desired::{Binding, Desired};
use crate::core::model::observed::Observed;
use crate::core::model::{AsgRef, BindingId, KeyArn, KeyManager};

/// Something true of a binding that is neither a change nor a failure, for `plan`'s
/// output and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub binding: BindingId,
    pub kind: NoteKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The key is AWS managed: nothing to do.
    AwsManaged,
    /// The group's most recent launch failed.
    LaunchFailed,
    /// The group launches with a customer managed key that no binding covers.
    UnboundKey,
    /// The group launches Spot instances through a launch configuration.
    Spot,
    /// A volume's key could not be known.
    UnknownKey,
}

impl NoteKind {
    /// Drift the operator warns of once a pass: a group that will fail to launch, or
    /// might, for a reason outside its bindings.
    pub fn is_drift(self) -> bool {
        matches!(self, NoteKind::UnboundKey | NoteKind::Spot | NoteKind::UnknownKey)
    }
}

/// For each bound group whose launches were read: a note for every customer managed key
/// it launches with that none of its bindings covers (its launches will fail), for a
/// volume whose key could not be known, and for Spot instances requested through a
/// launch configuration, which EC2 launches through `AWSServiceRoleForEC2Spot` (EC2 Auto
/// Scaling User Guide, service-linked roles): that role needs the keys too, and the
/// operator does not manage it.
fn drift(desired: &Desired, observed: &Observed) -> Vec<Note> {
    if observed.launch_keys.is_empty() {
        return Vec::new(); // a quick pass reads no launch sources
    }
    let mut by_group: BTreeMap<&AsgRef, Vec<&Binding>> = BTreeMap::new();
    for b in &desired.bindings {
        by_group.entry(&b.asg).or_default().push(b);
    }
    let mut notes = Vec::new();
    for (asg, bindings) in by_group {
        let Some(Ok(launch)) = observed.launch_keys.get(asg) else { continue };
        // What the bindings cover: each key as configured, and the key it resolves to.
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        for b in &bindings {
            covered.insert(b.key.as_str());
            // The keys being re-encrypted away from are the binding's to replace.
            covered.extend(b.reencrypt_from.iter().flat_map(|f| f.iter()).map(KeyArn::as_str));
            if let Some(Ok(info)) = observed.keys.get(&b.key) {
                covered.insert(info.arn.as_str());
            }
        }
        let first = bindings[0].id();
        let note = |kind, message| Note { binding: first.clone(), kind, message };
        for k in &launch.keys {
            match &k.resolved {
                Ok((_, KeyManager::Aws)) => {}
                Ok((arn, KeyManager::Customer)) if covered.contains(arn.as_str()) => {}
                Ok((arn, KeyManager::Customer)) => notes.push(note(
                    NoteKind::UnboundKey,
                    format!("the group launches with customer managed key {arn} ({}), which no binding covers: its launches will fail until it is bound", k.source),
                )),
                Err(_) if covered.contains(k.key_ref.as_str()) => {}
                Err(why) => notes.push(note(
                    NoteKind::UnknownKey,
                    format!("the group launches with key {} ({}), which could not be described ({why}): bind it if it is customer managed", k.key_ref, k.source),
                )),
            }
        }
        for why in &launch.unknown {
            notes.push(note(NoteKind::UnknownKey, format!("a volume's key could not be known: {why}")));
        }
        for lc in &launch.spot {
            notes.push(note(
                NoteKind::Spot,
                format!("{lc} requests Spot instances, which EC2 launches through AWSServiceRoleForEC2Spot: that role needs the group's keys too, and the operator does not grant it"),
            ));
        }
    }
    notes
}

/// A note for each binding whose group's most recent launch failed (when launches were
/// read): the symptom the operator is there to cure, quoted.
fn failed_launches(desired: &Desired, observed: &Observed) -> Vec<Note> {
    let mut notes = Vec::new();
    if observed.launches.is_empty() {
        return notes; // a quick pass reads no launches
    }
    for b in &desired.bindings {
        if let Some(Ok(Some(a))) = observed.launches.get(&b.asg) {
            if a.failed() {
                let message = a.status_message.as_deref().unwrap_or("no status message");
                notes.push(Note {
                    binding: b.id(),
                    kind: NoteKind::LaunchFailed,
                    message: format!("the group's most recent launch failed: {message}"),
                });
            }
        }
    }
    notes
}

/// Every note about the bindings of `desired`, as of `observed`: an AWS managed key needs
/// nothing; a failed launch; and the drift of each group ([`NoteKind::is_drift`]).
pub fn of(desired: &Desired, observed: &Observed) -> Vec<Note> {
    let mut notes: Vec<Note> = desired
        .bindings
        .iter()
        .filter(|b| matches!(observed.keys.get(&b.key), Some(Ok(i)) if i.manager == KeyManager::Aws && i.arn.account() == &b.asg.account))
        .map(|b| Note {
            binding: b.id(),
            kind: NoteKind::AwsManaged,
            message: format!(
                "{} is an AWS managed key: Auto Scaling may use it with no key policy statement or grant; nothing to do",
                b.key
            ),
        })
        .collect();
    notes.extend(failed_launches(desired, observed));
    notes.extend(drift(desired, observed));
    notes
}
