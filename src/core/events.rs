//! Events: what an EventBridge event delivered through SQS says changed, and which units
//! of work it touches. Pure.
//!
//! The events are EventBridge's envelope (`id`, `detail-type`, `source`, `account`,
//! `region`, `time`, `detail`) around either a CloudTrail management event ("AWS API Call
//! via CloudTrail": `eventSource`, `eventName`, `requestParameters`, `resources`,
//! `recipientAccountId`, `awsRegion`) or Auto Scaling's own "EC2 Instance Launch
//! Unsuccessful" (EventBridge User Guide, "AWS service events delivered via AWS
//! CloudTrail"; EventBridge Events Reference, Amazon EC2 Auto Scaling). The envelope is a
//! small serde type of this crate's, and the detail is read as JSON by the few fields it
//! needs: `aws_lambda_events` types these shapes too, but brings `chrono`, `http` and a
//! type for every service, for six fields read here.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::core::model::desired::Desired;
use crate::core::model::{AccountId, AsgRef, KeyArn, LaunchActivity, LaunchSource};

/// One event, as far as the operator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// EventBridge's id of the event, for the logs.
    pub id: String,
    pub account: AccountId,
    pub region: String,
    pub what: Touched,
    /// Who wrote a key policy (CloudTrail's `userIdentity.arn`), for a `PutKeyPolicy`.
    pub policy_writer: Option<String>,
}

/// What an event says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// A key's policy, grants or state (by ARN, id or alias name).
    Key(String),
    /// A group, by name: updated or created.
    Group(String),
    /// Tags of these groups: what selectors select may have changed.
    Tags(Vec<String>),
    /// A launch template's versions or default version (its id, or its name).
    Template { id: Option<String>, name: Option<String> },
    /// A service-linked role deleted, by name.
    Role(String),
    /// A launch that failed, from Auto Scaling's own event.
    LaunchFailed { group: String, activity: LaunchActivity },
}

/// Why a message is dropped (the `reason` label of `events_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    NotJson,
    UnknownEvent,
    MissingField,
    NotCovered,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::NotJson => "not_json",
            Dropped::UnknownEvent => "unknown_event",
            Dropped::MissingField => "missing_field",
            Dropped::NotCovered => "not_covered",
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    source: String,
    account: Option<String>,
    region: Option<String>,
    #[serde(default)]
    detail: Value,
}

/// The event a message body holds; why it is dropped when it holds none the operator
/// reads. Each is said with the event's id when it has one.
pub fn parse(body: &str) -> Result<Event, (Dropped, String)> {
    let env: Envelope = serde_json::from_str(body).map_err(|_| (Dropped::NotJson, String::new()))?;
    let id = env.id.clone();
    let fail = |d: Dropped| (d, id.clone());
    let d = &env.detail;
    let text = |v: &Value, path: &[&str]| -> Option<String> {
        path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str).map(str::to_owned)
    };
    // The CloudTrail record names the account and Region acted in; the envelope, where
    // the event was delivered (the same, unless it was forwarded from another account).
    let account = text(d, &["recipientAccountId"]).or(env.account.clone()).ok_or(fail(Dropped::MissingField))?;
    let account = AccountId::parse(&account).ok_or(fail(Dropped::MissingField))?;
    let region = text(d, &["awsRegion"]).or(env.region.clone()).ok_or(fail(Dropped::MissingField))?;
    let what = match (env.source.as_str(), env.detail_type.as_str()) {
        ("aws.autoscaling", "EC2 Instance Launch Unsuccessful") => {
            launch_failed(d).ok_or(fail(Dropped::MissingField))?
        }
        (_, "AWS API Call via CloudTrail") => api_call(d).map_err(fail)?,
        _ => return Err(fail(Dropped::UnknownEvent)),
    };
    let put_policy = text(d, &["eventName"]).is_some_and(|n| n == "PutKeyPolicy");
    let policy_writer = put_policy.then(|| text(d, &["userIdentity", "arn"])).flatten();
    Ok(Event { id, account, region, what, policy_writer })
}

/// Whether `writer` (an event's `userIdentity.arn`) is the identity `own` names: the same
/// ARN, or a session of the same role (`arn:aws:sts::A:assumed-role/R/S` is a session of
/// `arn:aws:iam::A:role/path/R`, and of any other session of `R`).
pub fn same_identity(own: &str, writer: &str) -> bool {
    fn role(arn: &str) -> Option<(&str, &str)> {
        let mut parts = arn.splitn(6, ':');
        let (_, _, service, _, account, resource) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let name = match service {
            "sts" => resource.strip_prefix("assumed-role/")?.split('/').next()?,
            "iam" => resource.strip_prefix("role/")?.rsplit('/').next()?,
            _ => return None,
        };
        Some((account, name))
    }
    own == writer || role(own).is_some_and(|r| role(writer) == Some(r))
}

/// The CloudTrail management events the operator listens to.
fn api_call(d: &Value) -> Result<Touched, Dropped> {
    let field = |path: &[&str]| path.iter().try_fold(d, |v, k| v.get(*k)).and_then(Value::as_str).map(str::to_owned);
    let source = field(&["eventSource"]).ok_or(Dropped::MissingField)?;
    let name = field(&["eventName"]).ok_or(Dropped::MissingField)?;
    let params = |k: &str| field(&["requestParameters", k]);
    let need = |v: Option<String>| v.ok_or(Dropped::MissingField);
    Ok(match (source.as_str(), name.as_str()) {
        (
            "kms.amazonaws.com",
            "PutKeyPolicy" | "CreateGrant" | "RetireGrant" | "RevokeGrant" | "DisableKey" | "ScheduleKeyDeletion",
        ) => {
            // The key as the call named it, else as CloudTrail's resources name it.
            let by_resource = d
                .get("resources")
                .and_then(Value::as_array)
                .and_then(|rs| rs.iter().find_map(|r| r.get("ARN").and_then(Value::as_str).map(str::to_owned)));
            Touched::Key(need(params("keyId").or(by_resource))?)
        }
        ("autoscaling.amazonaws.com", "UpdateAutoScalingGroup" | "CreateAutoScalingGroup") => {
            Touched::Group(need(params("autoScalingGroupName"))?)
        }
        ("autoscaling.amazonaws.com", "CreateOrUpdateTags" | "DeleteTags") => {
            let tags = d.pointer("/requestParameters/tags").and_then(Value::as_array).ok_or(Dropped::MissingField)?;
            let groups: BTreeSet<String> =
                tags.iter().filter_map(|t| t.get("resourceId").and_then(Value::as_str).map(str::to_owned)).collect();
            if groups.is_empty() {
                return Err(Dropped::MissingField);
            }
            Touched::Tags(groups.into_iter().collect())
        }
        ("ec2.amazonaws.com", "CreateLaunchTemplateVersion" | "ModifyLaunchTemplate") => {
            // EC2 records the request under its own name (`CreateLaunchTemplateVersionRequest`).
            let request = d.get("requestParameters").and_then(|p| p.as_object()).and_then(|o| o.values().next());
            let of = |k: &str| request.and_then(|r| r.get(k)).and_then(Value::as_str).map(str::to_owned);
            let (id, name) = (of("LaunchTemplateId"), of("LaunchTemplateName"));
            if id.is_none() && name.is_none() {
                return Err(Dropped::MissingField);
            }
            Touched::Template { id, name }
        }
        ("iam.amazonaws.com", "DeleteServiceLinkedRole") => Touched::Role(need(params("roleName"))?),
        _ => return Err(Dropped::UnknownEvent),
    })
}

/// Auto Scaling's "EC2 Instance Launch Unsuccessful": the group, and the launch as a
/// scaling activity would show it.
fn launch_failed(d: &Value) -> Option<Touched> {
    let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
    let group = s("AutoScalingGroupName")?;
    let activity = LaunchActivity {
        status_code: s("StatusCode").unwrap_or_else(|| "Failed".to_owned()),
        status_message: s("StatusMessage"),
        start_time: s("StartTime"),
        description: s("Description").or_else(|| s("Cause")).unwrap_or_default(),
    };
    Some(Touched::LaunchFailed { group, activity })
}

/// The keys whose units an event touches, whether the selectors are to be swept, and a
/// launch it reports; `NotCovered` when it touches nothing of `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touch {
    pub keys: BTreeSet<KeyArn>,
    pub sweep: bool,
    pub launch: Option<(AsgRef, LaunchActivity)>,
}

/// Where each bound group launches from, by template id and name: what a template's event
/// touches (from the last passes that read the groups).
pub type Templates = BTreeMap<String, BTreeSet<AsgRef>>;

/// The template keys of a group's sources in [`Templates`]: `id:lt-…` and `name:…`.
pub fn template_keys(sources: &[LaunchSource]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        if let LaunchSource::Template { id, name, .. } = s {
            out.extend(id.iter().map(|i| format!("id:{i}")));
            out.extend(name.iter().map(|n| format!("name:{n}")));
        }
    }
    out
}

/// What `e` touches of `desired`.
pub fn touches(e: &Event, desired: &Desired, templates: &Templates) -> Result<Touch, Dropped> {
    let mut t = Touch::default();
    let in_place = |a: &AsgRef| a.account == e.account && a.region == e.region;
    let group_keys = |t: &mut Touch, name: &str| {
        let keys = desired.bindings.iter().filter(|b| in_place(&b.asg) && b.asg.name == name).map(|b| b.key.clone());
        t.keys.extend(keys);
    };
    let selecting = desired.selectors.iter().any(|s| s.account == e.account && s.regions.contains(&e.region));
    match &e.what {
        Touched::Key(k) => {
            let arn = key_arn(k, e);
            let alias = k.strip_prefix("alias/").or_else(|| k.split_once(":alias/").map(|(_, a)| a));
            for b in &desired.bindings {
                let same = match (&arn, alias) {
                    (_, Some(a)) => b.key.is_alias() && b.key.key_id() == format!("alias/{a}"),
                    (Some(arn), None) => b.key == *arn,
                    (None, None) => false,
                };
                // A binding that names its key by an alias is touched by any key event of
                // that account and Region: which key the alias names is known to AWS.
                let aliased = b.key.is_alias() && b.key.account() == &e.account && b.key.region() == e.region;
                if same || aliased || b.reencrypt_from.iter().flat_map(|f| f.iter()).any(|f| Some(f) == arn.as_ref()) {
                    t.keys.insert(b.key.clone());
                }
            }
        }
        Touched::Group(name) => {
            group_keys(&mut t, name);
            t.sweep = selecting;
        }
        Touched::Tags(groups) => {
            for g in groups {
                group_keys(&mut t, g);
            }
            t.sweep = selecting;
        }
        Touched::Template { id, name } => {
            let refs = id.iter().map(|i| format!("id:{i}")).chain(name.iter().map(|n| format!("name:{n}")));
            for r in refs {
                for g in templates.get(&r).into_iter().flatten().filter(|g| in_place(g)) {
                    group_keys(&mut t, &g.name);
                }
            }
        }
        Touched::Role(role) => {
            let keys = desired.bindings.iter().filter(|b| b.asg.account == e.account && b.slr().name() == *role);
            t.keys.extend(keys.map(|b| b.key.clone()));
        }
        Touched::LaunchFailed { group, activity } => {
            group_keys(&mut t, group);
            if let Some(b) = desired.bindings.iter().find(|b| in_place(&b.asg) && b.asg.name == *group) {
                t.launch = Some((b.asg.clone(), activity.clone()));
            }
        }
    }
    if t.keys.is_empty() && !t.sweep {
        return Err(Dropped::NotCovered);
    }
    Ok(t)
}

/// A key reference of an event as an ARN: itself, or a bare id in the event's account and
/// Region. None for an alias.
fn key_arn(k: &str, e: &Event) -> Option<KeyArn> {
    if k.starts_with("arn:") {
        return KeyArn::parse(k).ok().filter(|a| !a.is_alias());
    }
    if k.starts_with("alias/") {
        return None;
    }
    let partition = if e.region.starts_with("cn-") {
        "aws-cn"
    } else if e.region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    KeyArn::parse(&format!("arn:{partition}:kms:{}:{}:key/{k}", e.region, e.account)).ok()
}

#[cfg(test)]
mod tests;
