//! `defaults.reencryptCleanup`: the operator's image copies that nothing launches or may
//! launch any more, deregistered and their snapshots deleted. A copy under a new key is a
//! full copy of every snapshot, billed as such (EC2 User Guide, "Copy an Amazon EC2
//! AMI"), and a group that follows a pipeline leaves its last copy behind.
//!
//! A copy is kept while:
//! - a step of a bound group needs it (by name: one being made, or not yet launched);
//! - a bound group launches it;
//! - any group of its account and Region launches it, or any launch template's default or
//!   latest version, or any launch configuration but the operator's own copies that no
//!   group uses, names it: RunInstances, EC2 Fleet, Spot Fleet and AWS Batch launch a
//!   template's default or latest too;
//! - it is not `available` (a copy still pending, or a failed one, which the binding
//!   names for its owner to deregister).
//!
//! The operator's launch configuration copies of it that no group uses go first (launch
//! configurations cannot be changed, so re-encryption copies them: `{FROM}-{COPY}`).
//!
//! The first two are known from the pass; the place's launches are read whole only when a
//! copy passes them, so a converged fleet reads one list of copies a place, no more.

use std::collections::BTreeSet;

use super::{configuration_name, OwnCopy};

/// What launches, or may launch, in a place, as read whole for clean-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launches {
    /// The images of every group's launch template versions, and of every launch
    /// template's default and latest version.
    pub images: BTreeSet<String>,
    /// Every launch configuration, by name, with its image.
    pub configurations: Vec<(String, String)>,
    /// The launch configurations some group uses.
    pub used: BTreeSet<String>,
}

/// What the bound groups of a place keep, as one pass knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// The copies their steps need, by name.
    pub needed: BTreeSet<String>,
    /// The images they launch.
    pub launched: BTreeSet<String>,
    /// The key ids of the keys (`reencryptWith`) whose every binding this pass read:
    /// their copies' needs are known.
    pub read: BTreeSet<String>,
    /// The key ids of every re-encrypted binding's key in the place, in the config.
    pub bound: BTreeSet<String>,
    /// Whether `bound` is every such key: none is named by an alias, whose key id the
    /// config does not say. Only then is a copy of a key outside it an orphan.
    pub orphans_known: bool,
}

/// The copies that no bound group's step needs and no bound group launches: those whose
/// place is read further. Only the copies of keys this pass read whole, or of keys no
/// binding names any more: a copy made for another unit's group, not yet in its version,
/// is needed by a step this pass did not look at, and is left to that unit's pass. An
/// orphan is told only when every bound key is known by its id.
pub fn candidates<'a>(copies: &'a [OwnCopy], kept: &Kept) -> Vec<&'a OwnCopy> {
    copies
        .iter()
        .filter(|c| {
            // asg-cmk-operator/SOURCE/KEY-ID (see `copy_name`).
            let key = c.name.rsplit('/').next().unwrap_or_default();
            (kept.read.contains(key) || (kept.orphans_known && !kept.bound.contains(key)))
                && c.state == "available"
                && !kept.needed.contains(&c.name)
                && !kept.launched.contains(&c.image_id)
        })
        .collect()
}

/// Of `candidates`, those that nothing in their place launches or may launch, each with
/// the operator's launch configuration copies of it that go first.
pub fn unused(candidates: Vec<&OwnCopy>, launches: &Launches) -> Vec<OwnCopy> {
    let mut out = Vec::new();
    for c in candidates.into_iter().filter(|c| !launches.images.contains(&c.image_id)) {
        let naming: Vec<&String> =
            launches.configurations.iter().filter(|(_, image)| *image == c.image_id).map(|(n, _)| n).collect();
        // The operator's copy of a configuration is named for the image it was made with.
        let ours = |n: &String| {
            n.strip_suffix(&c.image_id)
                .and_then(|from| from.strip_suffix('-'))
                .is_some_and(|from| configuration_name(from, &c.image_id) == **n)
        };
        if naming.iter().any(|n| !ours(n) || launches.used.contains(*n)) {
            continue;
        }
        let mut c = c.clone();
        c.configurations = naming.into_iter().cloned().collect();
        out.push(c);
    }
    out
}

/// Why a copy goes, as the plan says it.
pub fn reason(c: &OwnCopy) -> String {
    format!(
        "copy {} ({}) is launched by no group, and named by no launch template's default or latest version and no launch configuration in use: {}deregister it and delete its snapshots ({})",
        c.image_id,
        c.name,
        if c.configurations.is_empty() {
            String::new()
        } else {
            format!("delete the operator's launch configuration copies {}, ", c.configurations.join(", "))
        },
        if c.snapshots.is_empty() { "none".to_owned() } else { c.snapshots.join(", ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_copies_of_keys_the_pass_read_whole_or_no_binding_names_are_looked_at() {
        let of = |source: &str, key: &str| OwnCopy {
            name: format!("asg-cmk-operator/{source}/{key}"),
            ..copy(&format!("ami-copy-of-{source}"), "available")
        };
        let copies = [of("ami-a", "key-read"), of("ami-b", "key-other-unit"), of("ami-c", "key-gone")];
        let kept = Kept {
            read: BTreeSet::from(["key-read".to_owned()]),
            bound: BTreeSet::from(["key-read".to_owned(), "key-other-unit".to_owned()]),
            orphans_known: true,
            ..Kept::default()
        };
        let names: Vec<&str> = candidates(&copies, &kept).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["asg-cmk-operator/ami-a/key-read", "asg-cmk-operator/ami-c/key-gone"]);
        // A key named by an alias: an unknown key id may be its, so no orphan is told.
        let kept = Kept { orphans_known: false, ..kept };
        let names: Vec<&str> = candidates(&copies, &kept).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["asg-cmk-operator/ami-a/key-read"]);
    }

    fn copy(id: &str, state: &str) -> OwnCopy {
        OwnCopy {
            image_id: id.into(),
            name: format!("asg-cmk-operator/{id}"),
            state: state.into(),
            snapshots: vec![format!("snap-{id}")],
            configurations: vec![],
        }
    }

    #[test]
    fn only_an_available_copy_that_nothing_needs_launches_or_names_goes() {
        let copies = [
            copy("ami-1", "available"),
            copy("ami-2", "available"),
            copy("ami-3", "available"),
            copy("ami-4", "pending"),
            copy("ami-5", "failed"),
            copy("ami-6", "available"),
        ];
        let kept = Kept {
            needed: BTreeSet::from(["asg-cmk-operator/ami-1".to_owned()]),
            launched: BTreeSet::from(["ami-2".to_owned()]),
            orphans_known: true,
            ..Kept::default()
        };
        let c = candidates(&copies, &kept);
        let ids: Vec<&str> = c.iter().map(|c| c.image_id.as_str()).collect();
        assert_eq!(ids, ["ami-3", "ami-6"], "needed, launched, pending and failed copies are kept");
        let launches = Launches { images: BTreeSet::from(["ami-3".to_owned()]), ..Launches::default() };
        let gone = unused(c, &launches);
        assert_eq!(gone, [copy("ami-6", "available")], "a copy a template's default or a group names is kept");
        assert!(reason(&gone[0]).contains("ami-6") && reason(&gone[0]).contains("snap-ami-6"));
    }

    #[test]
    fn the_operators_unused_configuration_copies_go_first_and_any_other_keeps_the_copy() {
        let copies = [copy("ami-1", "available"), copy("ami-2", "available"), copy("ami-3", "available")];
        let c = candidates(&copies, &Kept { orphans_known: true, ..Kept::default() });
        let launches = Launches {
            images: BTreeSet::new(),
            configurations: vec![
                ("web-lc-ami-1".into(), "ami-1".into()),
                ("api-lc-ami-2".into(), "ami-2".into()),
                ("hand-made".into(), "ami-3".into()),
            ],
            used: BTreeSet::from(["api-lc-ami-2".to_owned()]),
        };
        let gone = unused(c, &launches);
        assert_eq!(gone.len(), 1, "a used copy and another's configuration keep theirs: {gone:?}");
        assert_eq!(
            (gone[0].image_id.as_str(), gone[0].configurations.as_slice()),
            ("ami-1", &["web-lc-ami-1".to_owned()][..])
        );
        assert!(reason(&gone[0]).contains("launch configuration copies web-lc-ami-1"), "{}", reason(&gone[0]));
    }
}
