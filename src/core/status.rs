//! "Can the group launch?" per binding, rendered from the judgement
//! ([`crate::core::judge`]): `status` prints it as text or JSON, and the daemon serves the
//! same document on `/status`. Nothing here decides anything about a binding.
//!
//! The conditions, in the order a launch needs them:
//! - `KeyUsable`: the key is Enabled and symmetric (or AWS managed);
//! - `RoleReady`: the group's service-linked role exists;
//! - `KeyPolicyReady`: the key policy lets the role (case 1) or the group's account (case
//!   2) use the key and create grants, and no Deny stops it;
//! - `GrantReady` (case 2 only): a complete grant for the role is on the key;
//! - `AsgUsesRole`: the group's `ServiceLinkedRoleARN` is that role;
//! - `LaunchesHealthy`: the group's most recent launch did not fail for a reason the
//!   bindings can cure. A launch that failed (or was cancelled) over KMS or a permission
//!   is `False`, reason `LaunchFailedKms`. One that failed for capacity, a quota, a subnet
//!   or any other reason is shown but is `True`, reason `LaunchFailedOther`: the operator
//!   cannot fix it, so it does not make the binding not ready.
//! - `ImagesReencrypted` (`strategy: reencrypt` only): the group launches no image or
//!   volume encrypted with another account's key; while it does, the step under way
//!   (`CopyInProgress`, `ReencryptPending`) or what stops it (`ReencryptBlocked`).

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

pub use crate::core::judge::{Condition, Judged, Kind, Reason, State, Verdict};
use crate::core::model::BindingId;

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_struct("Condition", 5)?;
        m.serialize_field("type", self.kind.as_str())?;
        m.serialize_field("status", self.status.as_str())?;
        m.serialize_field("reason", self.reason.as_str())?;
        m.serialize_field("message", &*self.message)?;
        m.serialize_field("lastTransitionTime", &rfc3339(self.since))?;
        m.end()
    }
}

/// The verdict as `/status` shows it: its name, and for one that is not ready, what it
/// waits for or why it failed.
struct VerdictDoc<'a>(&'a Verdict);

impl Serialize for VerdictDoc<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let name = match v {
            Verdict::Ready => "Ready",
            Verdict::Converging => "Converging",
            Verdict::Waiting { .. } => "Waiting",
            Verdict::Blocked { .. } => "Blocked",
            Verdict::Failed { .. } => "Failed",
        };
        let mut m = ser.serialize_struct("Verdict", 3)?;
        m.serialize_field("type", name)?;
        m.serialize_field("class", v.class())?;
        m.serialize_field("message", v.message())?;
        m.end()
    }
}

impl Serialize for Judged {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_struct("BindingStatus", 8)?;
        m.serialize_field("asg", &self.binding.asg.name)?;
        m.serialize_field("account", self.binding.asg.account.as_str())?;
        m.serialize_field("region", &self.binding.asg.region)?;
        m.serialize_field("key", self.binding.key.as_str())?;
        if let Some(selector) = &self.selector {
            m.serialize_field("selector", &**selector)?;
        }
        m.serialize_field("ready", &self.ready())?;
        m.serialize_field("verdict", &VerdictDoc(&self.verdict))?;
        m.serialize_field("conditions", &self.conditions)?;
        m.end()
    }
}

/// The document `status` prints and the daemon serves on /status, written straight from
/// the judgements (no intermediate JSON tree: with thousands of bindings that tree cost
/// more memory than everything else the daemon keeps).
pub fn document<'a, I>(judged: I) -> String
where
    I: IntoIterator<Item = &'a Judged>,
    I::IntoIter: Clone,
{
    struct Doc<I>(I);
    impl<'a, I: Iterator<Item = &'a Judged> + Clone> Serialize for Doc<I> {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            let mut m = ser.serialize_struct("Status", 2)?;
            m.serialize_field("ready", &self.0.clone().all(Judged::ready))?;
            m.serialize_field("bindings", &Seq(self.0.clone()))?;
            m.end()
        }
    }
    struct Seq<I>(I);
    impl<'a, I: Iterator<Item = &'a Judged> + Clone> Serialize for Seq<I> {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            ser.collect_seq(self.0.clone())
        }
    }
    serde_json::to_string_pretty(&Doc(judged.into_iter())).expect("statuses serialise: every key is a string")
}

/// One line per binding and one per condition that is not `True` or is
/// [notable](Condition::notable).
pub fn text(judged: &[Judged]) -> String {
    let mut s = String::new();
    for b in judged {
        let by = b.selector.as_ref().map(|s| format!(" (selector {s})")).unwrap_or_default();
        s.push_str(&format!("{} {}{by}\n", if b.ready() { "ready    " } else { "NOT READY" }, b.binding));
        for c in b.conditions.iter().filter(|c| c.notable()) {
            s.push_str(&format!("    {} {} ({}): {}\n", c.kind.as_str(), c.status.as_str(), c.reason, c.message));
        }
    }
    let ready = judged.iter().filter(|s| s.ready()).count();
    s.push_str(&format!("\n{ready} of {} binding{} ready.\n", judged.len(), if judged.len() == 1 { "" } else { "s" }));
    s
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC; the civil-from-days algorithm of Howard
/// Hinnant's date library).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The judgements in `judged`, by binding.
pub fn by_binding(judged: Vec<Judged>) -> BTreeMap<BindingId, Judged> {
    judged.into_iter().map(|s| (s.binding.clone(), s)).collect()
}

pub mod board;

#[cfg(test)]
mod tests;
