//! Units of work: a key together with every group that uses it, and every other key those
//! groups use (the connected set). Pure.
//!
//! Why the unit is the connected set and not the key:
//! - one writer per key policy: a key is in exactly one unit;
//! - a group's role switch sees every key the group uses: a group's keys are all in the
//!   same unit, so a pass over the unit reads them all, and the planner holds the switch
//!   while any of them is not ready for the new role.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::desired::Desired;
use crate::core::model::{AsgRef, KeyArn};

/// The units of one desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Units {
    /// Each key's unit, as an index into `members`.
    of: BTreeMap<KeyArn, usize>,
    /// Each unit's keys, in order.
    members: Vec<Vec<KeyArn>>,
}

impl Units {
    /// Groups the keys of `desired` into connected sets: two keys are in one unit when a
    /// group is bound to both, directly or through other groups and keys.
    pub fn of(desired: &Desired) -> Self {
        let mut index: BTreeMap<&KeyArn, usize> = BTreeMap::new();
        for b in &desired.bindings {
            let next = index.len();
            index.entry(&b.key).or_insert(next);
        }
        let mut parent: Vec<usize> = (0..index.len()).collect();
        let mut first_key: BTreeMap<&AsgRef, usize> = BTreeMap::new();
        for b in &desired.bindings {
            let k = index[&b.key];
            let g = *first_key.entry(&b.asg).or_insert(k);
            let (a, c) = (root(&mut parent, k), root(&mut parent, g));
            if a != c {
                parent[a.max(c)] = a.min(c);
            }
        }
        let mut by_root: BTreeMap<usize, Vec<KeyArn>> = BTreeMap::new();
        for (key, &i) in &index {
            by_root.entry(root(&mut parent, i)).or_default().push((*key).clone());
        }
        let mut members: Vec<Vec<KeyArn>> = by_root.into_values().collect();
        members.sort();
        let of = members.iter().enumerate().flat_map(|(u, keys)| keys.iter().map(move |k| (k.clone(), u))).collect();
        Units { of, members }
    }

    /// These units, and a unit of its own for each of `keys` that is in none: a key no
    /// binding uses any more, still to be pruned.
    pub fn with_lone<'a>(mut self, keys: impl IntoIterator<Item = &'a KeyArn>) -> Self {
        for k in keys {
            if !self.of.contains_key(k) {
                self.of.insert(k.clone(), self.members.len());
                self.members.push(vec![k.clone()]);
            }
        }
        self
    }

    /// The index of the unit `key` is in.
    pub fn index_of(&self, key: &KeyArn) -> Option<usize> {
        self.of.get(key).copied()
    }

    /// The keys of unit `u` (by index); none for an index out of range.
    pub fn members(&self, u: usize) -> &[KeyArn] {
        self.members.get(u).map_or(&[], Vec::as_slice)
    }

    /// How many units there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The keys of the unit that `key` is in; empty for a key no binding uses.
    pub fn unit_of(&self, key: &KeyArn) -> &[KeyArn] {
        self.of.get(key).map_or(&[], |&u| self.members[u].as_slice())
    }

    /// Every key of every unit that one of `keys` is in: what a pass over those keys must
    /// cover so that no group is planned with only some of its keys.
    pub fn close<'a>(&self, keys: impl IntoIterator<Item = &'a KeyArn>) -> BTreeSet<KeyArn> {
        keys.into_iter().flat_map(|k| self.unit_of(k).iter().cloned()).collect()
    }
}

/// Union-find's root, with path halving.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::desired::Binding;
    use crate::core::model::AccountId;

    fn key(n: u32) -> KeyArn {
        KeyArn::parse(&format!("arn:aws:kms:us-west-2:111122223333:key/{n:08}-0000-0000-0000-000000000000")).unwrap()
    }

    #[test]
    fn a_key_no_binding_uses_gets_a_unit_of_its_own() {
        let d = Desired {
            accounts: Default::default(),
            bindings: vec![Binding {
                asg: group("111122223333", "a"),
                key: key(1),
                slr_suffix: None,
                reencrypt_from: None,
                reencrypt_parameter: None,
                origin: Default::default(),
            }],
            selectors: Vec::new(),
            events: None,
            operator: Default::default(),
        };
        let units = Units::of(&d).with_lone([&key(1), &key(2)]);
        assert_eq!(units.len(), 2);
        assert_eq!(units.unit_of(&key(2)), [key(2)]);
        assert_eq!(units.unit_of(&key(1)), [key(1)], "a bound key keeps its unit");
        assert_eq!(units.close([&key(2)]), BTreeSet::from([key(2)]));
    }

    fn group(account: &str, name: &str) -> AsgRef {
        AsgRef::new(AccountId::parse(account).unwrap(), "us-west-2", name)
    }

    fn bind(asg: &str, k: u32) -> Binding {
        Binding {
            asg: group("111122223333", asg),
            key: key(k),
            slr_suffix: None,
            reencrypt_from: None,
            reencrypt_parameter: None,
            origin: Default::default(),
        }
    }

    fn desired(bindings: Vec<Binding>) -> Desired {
        Desired {
            accounts: Default::default(),
            bindings,
            selectors: Vec::new(),
            events: None,
            operator: Default::default(),
        }
    }

    #[test]
    fn keys_that_share_no_group_are_units_of_their_own() {
        let u = Units::of(&desired(vec![bind("web", 1), bind("api", 1), bind("batch", 2)]));
        assert_eq!(u.len(), 2);
        assert_eq!(u.unit_of(&key(1)), [key(1)]);
        assert_eq!(u.unit_of(&key(2)), [key(2)]);
    }

    #[test]
    fn a_group_with_two_keys_joins_them_and_the_join_is_transitive() {
        // web uses 1 and 2, api uses 2 and 3: 1, 2 and 3 are one unit; 4 stands alone.
        let u = Units::of(&desired(vec![bind("web", 1), bind("web", 2), bind("api", 3), bind("api", 2), bind("x", 4)]));
        assert_eq!(u.len(), 2);
        assert_eq!(u.unit_of(&key(3)), [key(1), key(2), key(3)]);
        assert_eq!(u.close([&key(1)]), [key(1), key(2), key(3)].into_iter().collect());
        assert_eq!(u.close([&key(4)]), [key(4)].into_iter().collect());
        assert_eq!(u.close([&key(4), &key(2)]).len(), 4);
    }

    #[test]
    fn the_same_group_name_in_another_account_is_another_group() {
        let mut other = bind("web", 2);
        other.asg = group("444455556666", "web");
        let u = Units::of(&desired(vec![bind("web", 1), other]));
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn a_key_no_binding_uses_has_no_unit() {
        let u = Units::of(&desired(vec![bind("web", 1)]));
        assert!(u.unit_of(&key(9)).is_empty());
        assert!(u.close([&key(9)]).is_empty());
        assert!(Units::of(&desired(vec![])).is_empty());
    }
}
