//! One verdict per binding: what its conditions add up to, and so what is done about it.

use std::sync::Arc;

use crate::core::model::{ErrorClass, Failure, KeyArn, Wait};

/// How a failed binding is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// With its unit's backoff: a read or write that failed, or a state someone may fix
    /// (a Deny, a missing group).
    Backoff,
    /// At the next full resync: nothing the operator writes can change it (the group's
    /// launches fail although its permissions are in place), and only a full pass reads
    /// launches again.
    Resync,
    /// When the selectors are next swept, or the config edited: nothing is done for the
    /// binding (a selector's group that launches with a key it may not grant, say), and
    /// only a change of the config, the group's tags or what it launches with changes
    /// that. Not converged: it is a failure the user has to see.
    Sweep,
}

/// What one binding's conditions add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The group can launch with the key.
    Ready,
    /// Not ready, and writes the plan makes will move it on.
    Converging,
    /// Not ready, waiting for work that is not the operator's (the key's owner, an image
    /// copy) or for a read it owes (the group's launches). Not a failure.
    Waiting { wait: Wait, message: Arc<str> },
    /// The group's switch to its role is held by another key it uses, which is not ready
    /// for the role (`holder` says why). The binding's own key is made ready meanwhile.
    Blocked { by: KeyArn, holder: Box<Verdict>, message: Arc<str> },
    /// Not ready for a reason the operator cannot write away now.
    Failed { failure: Failure, retry: Retry },
}

/// Where a verdict leaves a binding, for the gauge, the exit codes and the next step:
/// a blocked binding stands where the binding that holds it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Ready,
    Converging,
    Waiting(Wait),
    Failed(ErrorClass, Retry),
}

impl Verdict {
    pub fn is_ready(&self) -> bool {
        matches!(self, Verdict::Ready)
    }

    pub fn standing(&self) -> Standing {
        match self {
            Verdict::Ready => Standing::Ready,
            Verdict::Converging => Standing::Converging,
            Verdict::Waiting { wait, .. } => Standing::Waiting(*wait),
            Verdict::Blocked { holder, .. } => holder.standing(),
            Verdict::Failed { failure, retry } => Standing::Failed(failure.class, *retry),
        }
    }

    /// Why it is not ready; empty when it is, or when writes are under way.
    pub fn message(&self) -> &str {
        match self {
            Verdict::Ready | Verdict::Converging => "",
            Verdict::Waiting { message, .. } | Verdict::Blocked { message, .. } => message,
            Verdict::Failed { failure, .. } => &failure.message,
        }
    }

    /// A short name of what holds it back, as `plan --output json` and the logs give it:
    /// a failure's class, or what it waits for.
    pub fn class(&self) -> &'static str {
        match self.standing() {
            Standing::Ready => "ready",
            Standing::Converging => "pending",
            Standing::Waiting(w) => w.as_str(),
            Standing::Failed(class, _) => class.as_str(),
        }
    }

    /// Whether what the operator writes for the binding is all in place: it is ready, or
    /// only its group's launches fail (which no write of the operator's can change).
    pub fn converged(&self) -> bool {
        matches!(self, Verdict::Ready | Verdict::Failed { retry: Retry::Resync, .. })
    }

    /// Whether the binding waits for someone else (not a failure of the operator's).
    pub fn is_waiting(&self) -> bool {
        matches!(self.standing(), Standing::Waiting(_))
    }

    /// Whether it failed, directly or through the key that holds it.
    pub fn is_failed(&self) -> bool {
        matches!(self.standing(), Standing::Failed(..))
    }

    /// The failure as a [`Failure`]: its class and message, for a failed or blocked
    /// binding.
    pub fn failure(&self) -> Option<Failure> {
        match self.standing() {
            Standing::Failed(class, _) => Some(Failure { class, message: self.message().to_owned() }),
            _ => None,
        }
    }
}
