//! The daemon's next step for a unit of work, from the verdicts of its bindings: one pure
//! function, as kube-runtime's reconcile returns an `Action` and one `error_policy`
//! decides. The daemon applies it and decides nothing else about when to look again.

use std::time::Duration;

use crate::core::judge::{Retry, Standing, Verdict};
use crate::core::model::observed::Depth;
use crate::core::model::Wait;

/// What to do with a unit after a pass over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Nothing to do until an edit, an event or the next resync.
    Done,
    /// Look again after `after`, reading at `depth` (a full pass also reads the groups'
    /// launches).
    Requeue { after: Duration, depth: Depth },
    /// Something failed that trying again may cure: back off, all the unit's keys
    /// together, on the unit's jittered exponential backoff. A success resets it.
    Backoff,
}

/// How soon a unit that waits for someone is looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// A key whose owner has not yet added what `handoff` prints.
    pub key_owner: Duration,
    /// An image copy EC2 is making.
    pub copy: Duration,
}

impl Intervals {
    fn of(self, wait: Wait) -> Option<(Duration, Depth)> {
        match wait {
            Wait::KeyOwner | Wait::ImageOwner => Some((self.key_owner, Depth::Quick)),
            Wait::Copy => Some((self.copy, Depth::Quick)),
            // A quick pass switched a group without reading its launches: read them now.
            Wait::Launches => Some((Duration::ZERO, Depth::Full)),
            // A contested key's backoff is at least the resync interval: the resync, or
            // the other writer's next event, looks again.
            Wait::Contested => None,
        }
    }
}

/// The next step of a unit whose bindings' verdicts are `verdicts`, when a prune on one of
/// its keys is left undone (`prune_pending`) or not.
///
/// - a failure that trying again may cure, or a prune not done: back off;
/// - else, for each binding that waits, the soonest look again (a full one if any is
///   owed its launches);
/// - else, done: ready, or failed in a way only a resync, a sweep (or an edit) can change.
pub fn next<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>, prune_pending: bool, intervals: Intervals) -> Action {
    let mut soonest: Option<(Duration, Depth)> = None;
    let mut backoff = prune_pending;
    for v in verdicts {
        match v.standing() {
            Standing::Ready | Standing::Failed(_, Retry::Resync | Retry::Sweep) => {}
            // Writes a pass left pending: it says so as a failure, but should one reach
            // here, trying again is what helps.
            Standing::Converging | Standing::Failed(_, Retry::Backoff) => backoff = true,
            Standing::Waiting(wait) => {
                let Some((after, depth)) = intervals.of(wait) else { continue };
                soonest = Some(match soonest {
                    None => (after, depth),
                    Some((a, d)) => {
                        (a.min(after), if d == Depth::Full || depth == Depth::Full { Depth::Full } else { d })
                    }
                });
            }
        }
    }
    match (backoff, soonest) {
        (true, _) => Action::Backoff,
        (false, Some((after, depth))) => Action::Requeue { after, depth },
        (false, None) => Action::Done,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::model::{ErrorClass, Failure, KeyArn};

    const OWNER: Duration = Duration::from_secs(60);
    const COPY: Duration = Duration::from_secs(15);
    const I: Intervals = Intervals { key_owner: OWNER, copy: COPY };

    fn failed(class: ErrorClass, retry: Retry) -> Verdict {
        Verdict::Failed { failure: Failure { class, message: "x".into() }, retry }
    }

    fn waiting(wait: Wait) -> Verdict {
        Verdict::Waiting { wait, message: Arc::from("x") }
    }

    fn blocked_by(holder: Verdict) -> Verdict {
        let by = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111").unwrap();
        Verdict::Blocked { by, holder: Box::new(holder), message: Arc::from("held") }
    }

    #[test]
    fn the_next_step_table() {
        struct Row {
            reason: &'static str,
            verdicts: Vec<Verdict>,
            prune_pending: bool,
            want: Action,
        }
        let quick = |after| Action::Requeue { after, depth: Depth::Quick };
        let rows = vec![
            Row {
                reason: "every binding ready → done",
                verdicts: vec![Verdict::Ready, Verdict::Ready],
                prune_pending: false,
                want: Action::Done,
            },
            Row {
                reason: "no bindings (a departed key pruned) → done",
                verdicts: vec![],
                prune_pending: false,
                want: Action::Done,
            },
            Row {
                reason: "a throttled write → back off",
                verdicts: vec![Verdict::Ready, failed(ErrorClass::Throttled, Retry::Backoff)],
                prune_pending: false,
                want: Action::Backoff,
            },
            Row {
                reason: "a Deny (terminal) → back off, in case someone lifts it",
                verdicts: vec![failed(ErrorClass::Terminal, Retry::Backoff)],
                prune_pending: false,
                want: Action::Backoff,
            },
            Row {
                reason: "launches failing with every permission in place → done until the resync reads them again",
                verdicts: vec![failed(ErrorClass::Terminal, Retry::Resync)],
                prune_pending: false,
                want: Action::Done,
            },
            Row {
                reason: "a prune not done → back off",
                verdicts: vec![Verdict::Ready],
                prune_pending: true,
                want: Action::Backoff,
            },
            Row {
                reason: "a key awaiting its owner → the hand-off interval, not a backoff",
                verdicts: vec![Verdict::Ready, waiting(Wait::KeyOwner)],
                prune_pending: false,
                want: quick(OWNER),
            },
            Row {
                reason: "a copy in progress → the copy interval",
                verdicts: vec![waiting(Wait::Copy)],
                prune_pending: false,
                want: quick(COPY),
            },
            Row {
                reason: "an owner and a copy → the sooner",
                verdicts: vec![waiting(Wait::KeyOwner), waiting(Wait::Copy)],
                prune_pending: false,
                want: quick(COPY),
            },
            Row {
                reason: "launches owed → a full pass at once",
                verdicts: vec![waiting(Wait::KeyOwner), waiting(Wait::Launches)],
                prune_pending: false,
                want: Action::Requeue { after: Duration::ZERO, depth: Depth::Full },
            },
            Row {
                reason: "a failure and a wait → the failure's backoff",
                verdicts: vec![waiting(Wait::KeyOwner), failed(ErrorClass::Retryable, Retry::Backoff)],
                prune_pending: false,
                want: Action::Backoff,
            },
            Row {
                reason: "blocked by a key awaiting its owner → waits as that key does",
                verdicts: vec![blocked_by(waiting(Wait::KeyOwner))],
                prune_pending: false,
                want: quick(OWNER),
            },
            Row {
                reason: "blocked by a key that failed → backs off as that key does",
                verdicts: vec![blocked_by(failed(ErrorClass::Terminal, Retry::Backoff))],
                prune_pending: false,
                want: Action::Backoff,
            },
            Row {
                reason: "writes left pending → back off",
                verdicts: vec![Verdict::Converging],
                prune_pending: false,
                want: Action::Backoff,
            },
        ];
        for row in rows {
            assert_eq!(next(&row.verdicts, row.prune_pending, I), row.want, "{}", row.reason);
        }
    }
}
