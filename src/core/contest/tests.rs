use std::sync::Arc;

use super::*;
use crate::core::judge::{Condition, Judged, Kind, Reason, State, Verdict};
use crate::core::model::{AccountId, AsgRef};

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111";

fn binding(name: &str) -> BindingId {
    let asg = AsgRef::new(AccountId::parse("111122223333").unwrap(), "us-east-1", name);
    BindingId { asg, key: KeyArn::parse(KEY).unwrap() }
}

fn judged(b: &BindingId, status: State, reason: Reason) -> Judged {
    let c = Condition { kind: Kind::KeyPolicyReady, status, reason, message: Arc::from(""), since: 0 };
    Judged { binding: b.clone(), selector: None, conditions: vec![c], verdict: Verdict::Converging }
}

fn missing(b: &BindingId) -> Judged {
    judged(b, State::False, Reason::Missing)
}

fn allows(b: &BindingId) -> Judged {
    judged(b, State::True, Reason::Allows)
}

fn seen(judged: &[Judged]) -> impl Iterator<Item = Seen<'_>> {
    crate::core::judge::policy_seen(judged)
}

/// Binding `a`'s key, contested: written at 0 and 2, reverted each time a second later.
fn contested_twice() -> (BindingId, Contests) {
    let (a, mut c) = (binding("a"), Contests::new(2));
    for t in [0, 2] {
        c.wrote([&a], t);
        c.take_in(seen(&[missing(&a)]), t + 1);
    }
    (a, c)
}

fn key() -> KeyArn {
    KeyArn::parse(KEY).unwrap()
}

#[test]
fn the_second_revert_within_the_hour_contests_the_key() {
    let (a, mut c) = (binding("a"), Contests::new(2));
    c.wrote([&a], 0);
    assert!(c.take_in(seen(&[allows(&a)]), 1).is_empty(), "the write stuck");
    assert!(c.take_in(seen(&[missing(&a)]), 3).is_empty(), "one revert is not a contest");
    assert!(c.contested(&key()).is_none());
    c.wrote([&a], 3);
    assert_eq!(c.take_in(seen(&[missing(&a)]), 5), vec![key()], "the second revert is");
    assert!(c.contested(&key()).is_some());
    assert!(c.take_in(seen(&[missing(&a)]), 6).is_empty(), "the same revert counts once");
    assert_eq!(c.get(&key()).unwrap().reverts(), 2);
}

#[test]
fn reverts_an_hour_apart_are_no_contest() {
    let (a, mut c) = (binding("a"), Contests::new(2));
    c.wrote([&a], 0);
    c.take_in(seen(&[missing(&a)]), 10);
    c.wrote([&a], 10);
    c.take_in(seen(&[missing(&a)]), 10 + WINDOW);
    assert!(c.contested(&key()).is_none());
}

#[test]
fn a_new_binding_missing_beside_a_write_that_stuck_is_no_revert() {
    let (a, b, mut c) = (binding("a"), binding("b"), Contests::new(2));
    c.wrote([&a], 0);
    c.take_in(seen(&[allows(&a), missing(&b)]), 1);
    c.wrote([&b], 1);
    c.take_in(seen(&[allows(&a), allows(&b)]), 2);
    assert_eq!(c.get(&key()).unwrap().reverts(), 0);
}

#[test]
fn writes_back_off_from_the_base_to_an_hour() {
    let (a, mut c) = (binding("a"), Contests::new(2));
    let mut waits = Vec::new();
    let mut now = 0;
    for _ in 0..16 {
        c.wrote([&a], now);
        now += 1;
        c.take_in(seen(&[missing(&a)]), now);
        let at = c.get(&key()).unwrap().write_at(now, c.base);
        waits.push(at - (now - 1));
        now = at.max(now);
    }
    // One revert: at once. Then the base, doubling, and at most an hour.
    assert_eq!(&waits[..6], &[1, 2, 4, 8, 16, 32]);
    assert_eq!(&waits[12..], &[MAX_BACKOFF; 4], "an hour at most, however long it lasts");
}

#[test]
fn the_writers_own_statements_end_the_contest() {
    let (a, mut c) = contested_twice();
    assert!(c.contested(&key()).is_some());
    c.take_in(seen(&[allows(&a)]), 4);
    assert!(c.contested(&key()).is_none(), "allowed with nothing written since the revert");
}

#[test]
fn a_write_of_its_own_that_stuck_does_not_end_the_contest() {
    let (a, mut c) = contested_twice();
    c.wrote([&a], 10);
    c.take_in(seen(&[allows(&a)]), 11);
    assert!(c.contested(&key()).is_some(), "the writer may revert it again");
    c.take_in(seen(&[missing(&a)]), 20);
    assert_eq!(c.get(&key()).unwrap().reverts(), 3);
    assert_eq!(c.get(&key()).unwrap().backoff(2), Some(4));
}

#[test]
fn a_write_that_stands_an_hour_ends_the_contest() {
    let (a, mut c) = contested_twice();
    c.wrote([&a], 10);
    c.take_in(seen(&[allows(&a)]), 10 + WINDOW - 1);
    assert!(c.contested(&key()).is_some());
    c.take_in(seen(&[allows(&a)]), 10 + WINDOW);
    assert!(c.contested(&key()).is_none());
    assert_eq!(c.get(&key()).unwrap().reverts(), 0);
}
