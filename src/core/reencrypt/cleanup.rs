//! `defaults.reencryptCleanup`: the operator's image copies that nothing launches or may
//! launch any more, deregistered and their snapshots deleted. A copy under a new key is a
//! full copy of every snapshot, billed as such (EC2 User Guide, "Copy an Amazon EC2
//! AMI"), and a group that follows a pipeline leaves its last copy behind.
//!
//! A copy is kept while:
//! - a step of a bound group needs it (by name: one being made, or not yet launched);
//! - a bound group launches it;
//! - any group of its account and Region launches it, or any launch template's default or
//!   latest version, or any launch configuration, names it: RunInstances, EC2 Fleet,
//!   Spot Fleet and AWS Batch launch a template's default or latest too;
//! - it is not `available` (a copy still pending, or a failed one, which the binding
//!   names for its owner to deregister).
//!
//! The first two are known from the pass; the place's launches are read whole only when a
//! copy passes them, so a converged fleet reads one list of copies a place, no more.

use std::collections::BTreeSet;

use super::OwnCopy;

/// The copies that no bound group's step needs (`needed`, by name) and no bound group
/// launches (`launched`, by image id): those whose place is read further.
pub fn candidates<'a>(
    copies: &'a [OwnCopy],
    needed: &BTreeSet<String>,
    launched: &BTreeSet<String>,
) -> Vec<&'a OwnCopy> {
    copies
        .iter()
        .filter(|c| c.state == "available" && !needed.contains(&c.name) && !launched.contains(&c.image_id))
        .collect()
}

/// Of `candidates`, those that nothing in their place launches or may launch: `in_use`
/// holds the images of every group's launch sources, of every launch template's default
/// and latest version, and of every launch configuration there.
pub fn unused(candidates: Vec<&OwnCopy>, in_use: &BTreeSet<String>) -> Vec<OwnCopy> {
    candidates.into_iter().filter(|c| !in_use.contains(&c.image_id)).cloned().collect()
}

/// Why a copy goes, as the plan says it.
pub fn reason(c: &OwnCopy) -> String {
    format!(
        "copy {} ({}) is launched by no group, and named by no launch template's default or latest version and no launch configuration: deregister it and delete its snapshots ({})",
        c.image_id,
        c.name,
        if c.snapshots.is_empty() { "none".to_owned() } else { c.snapshots.join(", ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: &str, state: &str) -> OwnCopy {
        OwnCopy {
            image_id: id.into(),
            name: format!("asg-cmk-operator/{id}"),
            state: state.into(),
            snapshots: vec![format!("snap-{id}")],
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
        let needed = BTreeSet::from(["asg-cmk-operator/ami-1".to_owned()]);
        let launched = BTreeSet::from(["ami-2".to_owned()]);
        let c = candidates(&copies, &needed, &launched);
        let ids: Vec<&str> = c.iter().map(|c| c.image_id.as_str()).collect();
        assert_eq!(ids, ["ami-3", "ami-6"], "needed, launched, pending and failed copies are kept");
        let in_use = BTreeSet::from(["ami-3".to_owned()]);
        let gone = unused(c, &in_use);
        assert_eq!(gone, [copy("ami-6", "available")], "a copy a template's default or a configuration names is kept");
        assert!(reason(&gone[0]).contains("ami-6") && reason(&gone[0]).contains("snap-ami-6"));
    }
}
