//! Which units of work may start now: passes run concurrently up to a bound, and a unit is
//! never in two passes at once. Pure bookkeeping, driven by the daemon's loop; as in
//! kube-runtime's runner, a unit asked for while its pass runs is held, and queued again
//! when that pass ends.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::core::model::KeyArn;
use crate::core::units::Units;

/// A pass in flight, by the id [`Runner::start`] gave it.
pub type PassId = u64;

/// A pass that ended: its keys, what the caller kept with it, and the held keys it frees
/// (no pass in flight covers their unit any more), with the time each fell due.
#[derive(Debug)]
pub struct Ended<T> {
    pub keys: Vec<KeyArn>,
    pub pass: T,
    pub freed: Vec<(KeyArn, Instant)>,
}

/// The passes in flight, each with its keys and the caller's `T` about it.
#[derive(Debug)]
pub struct Runner<T> {
    limit: usize,
    running: BTreeMap<PassId, (Vec<KeyArn>, T)>,
    /// Every key in a pass in flight.
    busy: BTreeSet<KeyArn>,
    /// Keys that fell due while their unit was in flight, and when.
    held: BTreeMap<KeyArn, Instant>,
    next_id: PassId,
}

impl<T> Runner<T> {
    /// At most `limit` passes in flight at once (at least one).
    pub fn new(limit: usize) -> Self {
        Runner {
            limit: limit.max(1),
            running: BTreeMap::new(),
            busy: BTreeSet::new(),
            held: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Whether another pass may start.
    pub fn has_room(&self) -> bool {
        self.running.len() < self.limit
    }

    /// How many passes are in flight.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Of the keys due at `at` (whole units), those a new pass may take now. The keys of a
    /// unit that is in flight (any of its keys, as the units are now) are held until that
    /// pass ends.
    pub fn admit(&mut self, due: impl IntoIterator<Item = KeyArn>, units: &Units, at: Instant) -> Vec<KeyArn> {
        let mut free = Vec::new();
        for key in due {
            if units.unit_of(&key).iter().any(|k| self.busy.contains(k)) {
                let t = self.held.entry(key).or_insert(at);
                *t = (*t).min(at);
            } else {
                free.push(key);
            }
        }
        free
    }

    /// Records a pass over `keys` as started, with `pass` kept for when it ends.
    pub fn start(&mut self, keys: Vec<KeyArn>, pass: T) -> PassId {
        self.next_id += 1;
        self.busy.extend(keys.iter().cloned());
        self.running.insert(self.next_id, (keys, pass));
        self.next_id
    }

    /// Records a pass as ended; `None` for an id not in flight.
    pub fn finish(&mut self, id: PassId, units: &Units) -> Option<Ended<T>> {
        let (keys, pass) = self.running.remove(&id)?;
        for k in &keys {
            self.busy.remove(k);
        }
        let busy = &self.busy;
        let freed: Vec<KeyArn> = self
            .held
            .keys()
            .filter(|k| !units.unit_of(k).iter().chain(std::iter::once(*k)).any(|u| busy.contains(u)))
            .cloned()
            .collect();
        let freed = freed.into_iter().filter_map(|k| self.held.remove_entry(&k)).collect();
        Some(Ended { keys, pass, freed })
    }

    /// Forgets held keys that are no longer wanted.
    pub fn retain(&mut self, keep: impl Fn(&KeyArn) -> bool) {
        self.held.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::desired::{Binding, Desired};
    use crate::core::model::{AccountId, AsgRef};

    fn key(n: u32) -> KeyArn {
        KeyArn::parse(&format!("arn:aws:kms:us-west-2:111122223333:key/{n:08}-0000-0000-0000-000000000000")).unwrap()
    }

    /// Groups `g<i>` with their keys.
    fn units(groups: &[&[u32]]) -> Units {
        let account = AccountId::parse("111122223333").unwrap();
        let bindings = groups
            .iter()
            .enumerate()
            .flat_map(|(i, keys)| {
                keys.iter().map(move |k| Binding {
                    asg: AsgRef::new(account, "us-west-2", format!("g{i}")),
                    key: key(*k),
                    slr_suffix: None,
                    reencrypt_from: None,
                    reencrypt_parameter: None,
                    origin: Default::default(),
                })
            })
            .collect();
        Units::of(&Desired {
            accounts: Default::default(),
            bindings,
            selectors: Vec::new(),
            events: None,
            operator: Default::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_in_flight_is_held_and_freed_when_its_pass_ends() {
        let u = units(&[&[1, 2], &[3]]);
        let mut r = Runner::new(4);
        let now = Instant::now();
        let free = r.admit([key(1), key(2)], &u, now);
        let first = r.start(free, "first");
        // Key 2 falls due again while its unit runs; key 3 is another unit.
        assert_eq!(r.admit([key(2), key(3)], &u, now), [key(3)]);
        let second = r.start(vec![key(3)], "second");
        assert_eq!(r.in_flight(), 2, "two units at once");
        let ended = r.finish(second, &u).unwrap();
        assert_eq!((ended.keys, ended.pass), (vec![key(3)], "second"));
        assert!(ended.freed.is_empty(), "key 2's unit is still in flight");
        assert_eq!(r.finish(first, &u).unwrap().freed, [(key(2), now)]);
        assert!(r.finish(first, &u).is_none(), "ended once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_joined_while_in_flight_waits_for_the_whole_of_it() {
        // Key 1 runs as a unit of its own; then an edit joins keys 1 and 5.
        let before = units(&[&[1], &[5]]);
        let mut r = Runner::new(4);
        let now = Instant::now();
        let free = r.admit([key(1)], &before, now);
        let pass = r.start(free, ());
        let after = units(&[&[1, 5]]);
        assert!(r.admit([key(1), key(5)], &after, now).is_empty(), "key 5's unit now holds key 1");
        let mut freed = r.finish(pass, &after).unwrap().freed;
        freed.sort();
        assert_eq!(freed, [(key(1), now), (key(5), now)]);
    }

    #[test]
    fn the_bound_is_kept() {
        let mut r = Runner::new(2);
        assert!(r.has_room());
        r.start(vec![key(1)], ());
        r.start(vec![key(2)], ());
        assert!(!r.has_room());
        assert!(Runner::<()>::new(0).has_room(), "at least one pass");
    }
}
