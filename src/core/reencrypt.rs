//! Re-encryption (`strategy: reencrypt`; procedure case 2, solution 1): a group whose
//! images' snapshots use another account's key is moved onto copies of those images
//! encrypted with a key of its own account, and then needs only case 1 for that key.
//! Pure: what the next step is for a group, from what was read.
//!
//! For each launch source of the group that still uses another account's key:
//! 1. its image is copied into the group's account and Region, encrypted with the own key
//!    (CopyImage), under a name made of the source image and the key, so that a retry or
//!    a restart finds the copy instead of copying again;
//! 2. once the copy is `available`, a new version of the group's launch template is made
//!    from the version the group launches, with the copy as its image and any mapping that
//!    names another account's key naming the own key;
//! 3. the group launches that version: this group alone is pointed at its number (in its
//!    own launch template, or in its mixed instances policy and the overrides that name
//!    the template), and the version records what the group followed before. The
//!    template's default version is never changed. A template another group launches at
//!    `$Latest` is left alone: a new version would change what that group launches.
//! 4. when what the group followed before (`$Default`, `$Latest`) moves to another
//!    writer's version, the group follows it: onto a version of the operator's made from
//!    it, or back to the selector itself once it uses only the group's account's keys.
//!
//! A launch configuration, which cannot be changed, is copied with the new image, and the
//! group moved to the copy.
//!
//! Old versions and the source image are never changed.

use crate::core::launch::{GroupLaunch, SourceRead};
use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, AsgRef, ErrorClass, Failure, KeyArn, LaunchSource, Wait};

mod before_copy;
pub mod cleanup;
mod parameter;

pub use crate::core::model::launch::{
    Copy, CopyAt, Groups, GroupsAt, OwnCopy, ReencryptReads, TemplateAt, VersionSeen,
};
use before_copy::replaced;
use parameter::Through;
pub use parameter::RESOLVE;

/// The next write for one launch source of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Write {
    CopyImage {
        source_image: String,
        name: String,
    },
    CreateVersion {
        template_id: String,
        source_version: u64,
        image_id: String,
        devices: Vec<String>,
        description: String,
    },
    PointGroup {
        template_id: String,
        /// The template's name, as the group's description gave it.
        name: Option<String>,
        /// A number, or `$Default` / `$Latest` when the group goes back to following it.
        version: String,
    },
    CopyConfiguration {
        from: String,
        name: String,
        image_id: String,
    },
    UseConfiguration {
        name: String,
    },
    /// `reencryptParameter`: the copy's AMI id published to the operator's parameter
    /// (PutParameter, `aws:ec2:image`, overwriting).
    PutParameter {
        name: String,
        image_id: String,
    },
}

/// Where one launch source of a group stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// It uses no other account's key.
    Done,
    /// This write is next; `why` says what it is for.
    Write { write: Write, why: String },
    /// Nothing can be written now: someone else's work comes first (the key's owner must
    /// allow the copy; EC2 is making it), as the message says.
    Wait(Wait, String),
    /// Nothing can be written: a read missing or failed, or a state the operator cannot
    /// change (the failure says which).
    Stop(Failure),
    /// Nothing is done: the group's image comes from a Systems Manager parameter, which a
    /// copy's literal AMI id would freeze (the message says what to do).
    ImageFromParameter(String),
}

/// What the reads needed for one source are: the copy's name to look up, and whether the
/// template's latest version and the place's groups are needed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    pub copies: Vec<String>,
    /// Keys whose use by the group's account is checked before a copy is made.
    pub access: Vec<KeyArn>,
    /// The template, and the image whose versions of it to read.
    pub template: Option<(String, String)>,
    /// The launch configuration copy to look for.
    pub configuration: Option<String>,
    /// The parameter of the operator's to read (`reencryptParameter`).
    pub parameter: Option<String>,
}

/// The tag keys the operator puts on its copies and their snapshots: what clean-up, and
/// the IAM policy that allows it, know them by.
pub const TAG_SOURCE_IMAGE: &str = "asg-cmk-operator:source-image";
pub const TAG_KEY: &str = "asg-cmk-operator:kms-key";

/// The name of the copy of `image` encrypted with `key`: AMI names allow letters, digits
/// and `()[]./-'@_` and spaces, 3 to 128 characters (EC2 API Reference, CopyImage, Name);
/// an image id and a key id fit well within that.
pub fn copy_name(image: &str, key: &KeyArn) -> String {
    format!("asg-cmk-operator/{image}/{}", key.key_id())
}

/// The description the operator gives a version it makes: the source version, what the
/// group followed to it (`$Default`, `$Latest` or a number), the image and the key, so a
/// version made before a lost answer or a restart is recognised, and what the group
/// followed before it was pointed at the version is on record.
pub fn version_description(source_version: u64, followed: &str, image: &str, key: &KeyArn) -> String {
    let followed = if followed.is_empty() { "$Default" } else { followed };
    format!("asg-cmk-operator: version {source_version} ({followed}) with image {image} and key {}", key.key_id())
}

/// Whether `description` is the operator's for a version made from `source_version` with
/// `image` and `key`: as [`version_description`] writes it, whatever the group followed,
/// or as earlier versions of the operator wrote it (without what it followed).
pub fn is_operators_version(description: &str, source_version: u64, image: &str, key: &KeyArn) -> bool {
    let head = format!("asg-cmk-operator: version {source_version} ");
    let tail = format!("with image {image} and key {}", key.key_id());
    description.strip_prefix(&head).and_then(|rest| rest.strip_suffix(&tail)).is_some_and(|mid| {
        mid.is_empty() || (mid.starts_with('(') && mid.ends_with(") ") && !mid[1..mid.len() - 2].contains(')'))
    })
}

/// What a version the operator made records: the version it was made from, and what the
/// group followed to it (`$Default`, `$Latest` or a number). None for any other
/// description, and for one written by an earlier version of the operator, which did not
/// record what the group followed.
pub fn followed_by(description: &str) -> Option<(u64, &str)> {
    let rest = description.strip_prefix("asg-cmk-operator: version ")?;
    let (number, rest) = rest.split_once(' ')?;
    let number = number.parse().ok()?;
    let (followed, rest) = rest.strip_prefix('(')?.split_once(") ")?;
    rest.starts_with("with image ").then_some((number, followed))
}

/// Which of a source's keys are another account's than `group`'s: each key as found, its
/// account from its ARN, or from DescribeKey when it was named another way. A key that
/// could not be described is not counted: `discover` and the drift notes report it.
fn foreign<'a>(keys: impl Iterator<Item = &'a String>, launch: &GroupLaunch, group: &AccountId) -> Vec<&'a String> {
    keys.filter(|k| {
        let account = KeyArn::parse(k).ok().map(|a| *a.account()).or_else(|| {
            launch
                .keys
                .iter()
                .find(|l| &l.key_ref == *k)
                .and_then(|l| l.resolved.as_ref().ok())
                .map(|(a, _)| *a.account())
        });
        account.is_some_and(|a| a != *group)
    })
    .collect()
}

fn missing(what: String) -> Failure {
    Failure { class: ErrorClass::Retryable, message: format!("{what}: not observed") }
}

fn read_failed(what: &str, f: &Failure) -> Failure {
    Failure { class: f.class, message: format!("{what}: {}", f.message) }
}

/// What of a launch source uses another account's key: the image's keys that do, whether
/// the image does (those, or a shared image's unreadable encrypted snapshot), and the
/// source's own mappings that name such a key. One reading for [`needs`] and [`next`].
struct Foreign<'a> {
    image_keys: Vec<&'a String>,
    image_foreign: bool,
    devices: Vec<String>,
}

impl<'a> Foreign<'a> {
    fn of(b: &Binding, launch: &GroupLaunch, s: &'a SourceRead) -> Self {
        let group = &b.asg.account;
        let image_keys = foreign(s.image_keys.iter(), launch, group);
        let devices = s
            .mapping_keys
            .iter()
            .filter(|(_, k)| !foreign(std::iter::once(k), launch, group).is_empty())
            .map(|(d, _)| d.clone())
            .collect();
        Foreign { image_foreign: s.shared_encrypted || !image_keys.is_empty(), image_keys, devices }
    }
}

/// The reads the next step of source `s` of binding `b`'s group needs: the copy of its
/// image, looked up by name, and, once that copy is available (or no image needs one),
/// its template's latest version and the place's groups.
pub fn needs(b: &Binding, own: &KeyArn, launch: &GroupLaunch, s: &SourceRead, copies: &ReencryptReads) -> Needs {
    match s.moved.as_deref() {
        Some(Ok(moved)) => {
            let mut out = needs(b, own, launch, moved, copies);
            if parameter::current(b, own, s, moved, copies) {
                out.template = None;
            }
            return out;
        }
        Some(Err(_)) => return Needs::default(),
        None => {}
    }
    let Foreign { image_foreign, devices, .. } = Foreign::of(b, launch, s);
    let mut out = Needs::default();
    if !image_foreign && devices.is_empty() {
        return out;
    }
    let Some(image) = &s.image_id else { return out };
    let mut image_now = image.clone();
    if image_foreign {
        let name = copy_name(image, own);
        let at = (b.asg.account, b.asg.region.clone(), name.clone());
        out.copies.push(name);
        match copies.copies.get(&at) {
            Some(Ok(Some(c))) if c.state == "available" => image_now = c.image_id.clone(),
            Some(Ok(None)) => {
                out.access = replaced(b).cloned().collect();
                return out;
            }
            _ => return out,
        }
    }
    match parameter::through(b, s, image_foreign) {
        Through::Id => {}
        Through::Source(source) => image_now = source.to_owned(),
        Through::Own(name) => {
            out.parameter = Some(name.to_owned());
            if !matches!(parameter::holds(b, name, &image_now, copies), Ok(true)) {
                return out;
            }
            image_now = format!("{RESOLVE}{name}");
        }
    }
    match (&s.source, &s.template) {
        (LaunchSource::Configuration(from), _) => out.configuration = Some(configuration_name(from, &image_now)),
        (LaunchSource::Template { .. }, Some((template, _))) => out.template = Some((template.clone(), image_now)),
        (LaunchSource::Template { .. }, None) => {}
    }
    out
}

/// The next step for source `s` of binding `b`'s group, re-encrypting with `own` (the
/// binding's key, resolved).
pub fn next(b: &Binding, own: &KeyArn, launch: &GroupLaunch, s: &SourceRead, reads: &ReencryptReads) -> Next {
    match s.moved.as_deref() {
        Some(Ok(moved)) => return follow(b, own, launch, (s, moved), reads),
        Some(Err(f)) => return Next::Stop(read_failed("what the group followed before the operator's version", f)),
        None => {}
    }
    let group = &b.asg.account;
    let Foreign { image_keys, image_foreign, devices } = Foreign::of(b, launch, s);
    if let Some(unread) = unreadable(s, group) {
        return Next::Stop(unread);
    }
    if !image_foreign && devices.is_empty() {
        return Next::Done;
    }
    let what = match label(s) {
        Ok(what) => what,
        Err(f) => return Next::Stop(f),
    };
    let Some(image) = s.image_id.clone() else {
        return Next::Stop(Failure::terminal(format!("{what} names no image")));
    };
    if let (true, Some(parameter), None) = (image_foreign, &s.image_parameter, &b.reencrypt_parameter) {
        return parameter::refused(&what, parameter, &image, group);
    }
    // 1. The copy of the image, encrypted with the own key.
    let image_now = if image_foreign {
        let mut keys: Vec<&str> = image_keys.iter().map(|k| k.as_str()).collect();
        if s.shared_encrypted {
            keys.push("a key of the image's owner");
        }
        let why = || {
            format!("image {image} of {what} has snapshots encrypted with another account's key ({}): copy it encrypted with {own}", keys.join(", "))
        };
        match copied(b, own, (&image, s, launch), reads, why) {
            Copied::Available(id) => id,
            Copied::Not(next) => return next,
        }
    } else {
        image.clone()
    };
    // With a parameter: the version names the image through it.
    let image_now = match parameter::named(b, s, image_foreign, image_now, &image, reads) {
        parameter::Named::Image(named) => named,
        parameter::Named::First(next) => return next,
    };
    // 2. A launch source with it, and 3. the group on that source.
    match (&s.source, &s.template) {
        (LaunchSource::Configuration(name), _) => configuration_step(b, name, &image_now, reads),
        (LaunchSource::Template { version, name, .. }, Some((template, launched))) => {
            let name = name.as_deref();
            let at = TemplateStep { template, name, launched: *launched, selector: version, image: image_now, devices };
            template_step(b, own, at, reads)
        }
        (LaunchSource::Template { .. }, None) => unreachable!("a template source without its id was answered above"),
    }
}

/// Why the image of source `s` cannot be copied, if the group's account cannot read it. A
/// parameter not resolved to an AMI is said by `discover`; nothing to copy yet.
fn unreadable(s: &SourceRead, group: &AccountId) -> Option<Failure> {
    let (Some(why), Some(image)) = (&s.image_unread, &s.image_id) else { return None };
    (!image.starts_with("resolve:")).then(|| {
        Failure::terminal(format!(
            "image {image} cannot be read by account {group}: {why}. Re-encryption copies it, so it must be owned by the account or shared with it (a launch permission)"
        ))
    })
}

/// How to name source `s` in a message: its launch configuration, or its template and
/// version, which must have been read with its id and number.
fn label(s: &SourceRead) -> Result<String, Failure> {
    match (&s.source, &s.template) {
        (LaunchSource::Configuration(name), _) => Ok(format!("launch configuration {name}")),
        (LaunchSource::Template { .. }, Some((id, n))) => Ok(format!("launch template {id} version {n}")),
        (LaunchSource::Template { .. }, None) => {
            Err(Failure::terminal("the group's launch template version was read without its id and number"))
        }
    }
}

/// The group is on a version the operator made, and what it followed before (`moved`,
/// named by that selector) has since moved to another writer's version: a pipeline's new
/// default or latest. The group follows it: back to the selector itself when the new
/// version uses no other account's key, else onto a version of the operator's made from
/// it, so the pipeline's change is kept (a copy of the same image is reused: it is found
/// by name).
fn follow(
    b: &Binding,
    own: &KeyArn,
    launch: &GroupLaunch,
    (s, moved): (&SourceRead, &SourceRead),
    reads: &ReencryptReads,
) -> Next {
    let Foreign { image_foreign, devices, .. } = Foreign::of(b, launch, moved);
    if image_foreign || !devices.is_empty() || moved.image_unread.is_some() {
        if parameter::current(b, own, s, moved, reads) {
            return Next::Done;
        }
        return next(b, own, launch, moved, reads);
    }
    let (LaunchSource::Template { version, name, .. }, Some((template, number))) = (&moved.source, &moved.template)
    else {
        return Next::Stop(Failure::terminal("what the group followed was read without its template and number"));
    };
    let followed = if version.is_empty() { "$Default" } else { version.as_str() };
    // The group goes back only onto keys this binding makes ready for its role: the
    // pipeline may have moved to another key of the account, which no binding may cover.
    let others: Vec<&str> = moved
        .image_keys
        .iter()
        .chain(moved.mapping_keys.iter().map(|(_, k)| k))
        .map(String::as_str)
        .filter(|k| *k != own.as_str() && *k != own.key_id())
        .collect();
    if !others.is_empty() {
        return Next::Stop(Failure::terminal(format!(
            "launch template {template} {followed}, which the group followed before the operator's version, is now version {number}, which launches with {}: not the key this binding makes ready ({own}), so the group stays on the operator's version. Bind the group to that key, then point it at {followed} yourself",
            others.join(", ")
        )));
    }
    Next::Write {
        write: Write::PointGroup { template_id: template.clone(), name: name.clone(), version: followed.to_owned() },
        why: format!(
            "launch template {template} {followed}, which the group followed before the operator's version, is now version {number}, which uses no other account's key: the group follows {followed} again"
        ),
    }
}

/// Where the copy of an image stands.
enum Copied {
    Available(String),
    Not(Next),
}

/// The copy of `image` under `own`: its id once available, else the next step.
fn copied(
    b: &Binding,
    own: &KeyArn,
    (image, s, launch): (&str, &SourceRead, &GroupLaunch),
    reads: &ReencryptReads,
    why: impl Fn() -> String,
) -> Copied {
    let name = copy_name(image, own);
    let copy = match reads.copies.get(&(b.asg.account, b.asg.region.clone(), name.clone())) {
        None => return Copied::Not(Next::Stop(missing(format!("copy {name}")))),
        Some(Err(f)) => return Copied::Not(Next::Stop(read_failed(&format!("copy {name}"), f))),
        Some(Ok(None)) => {
            if let Some(next) = before_copy::refused(b, (image, s, launch), reads) {
                return Copied::Not(next);
            }
            let write = Write::CopyImage { source_image: image.to_owned(), name };
            return Copied::Not(Next::Write { write, why: why() });
        }
        Some(Ok(Some(c))) => c,
    };
    match copy.state.as_str() {
        "available" => Copied::Available(copy.image_id.clone()),
        "pending" => Copied::Not(Next::Wait(
            Wait::Copy,
            format!(
                "copying image {image} as {} ({name}), encrypted with {own}: pending{}",
                copy.image_id,
                copy.progress.as_deref().map(|p| format!(", snapshots at {p}")).unwrap_or_default()
            ),
        )),
        state => {
            let reason = copy.reason.as_deref().unwrap_or("EC2 gave no reason");
            Copied::Not(Next::Stop(Failure::terminal(format!(
                "the copy {} ({name}) of image {image} is {state}: {reason}. Deregister it to have the operator copy again; a copy needs the source key's owner to let this account use the key (kms:Decrypt, kms:ReEncrypt*, kms:DescribeKey, kms:CreateGrant)",
                copy.image_id
            ))))
        }
    }
}

/// The name of the copy of launch configuration `from` with image `image`: launch
/// configurations cannot be changed (EC2 Auto Scaling User Guide, "Launch
/// configurations"), so the group moves to a copy. Up to 255 characters.
pub fn configuration_name(from: &str, image: &str) -> String {
    let keep = 255 - image.len() - 1;
    let from: String = from.chars().take(keep).collect();
    format!("{from}-{image}")
}

/// A launch configuration: a copy of it with the image, then the group on the copy. A
/// configuration other groups use is left to them.
fn configuration_step(b: &Binding, from: &str, image: &str, reads: &ReencryptReads) -> Next {
    let name = configuration_name(from, image);
    match reads.configurations.get(&(b.asg.account, b.asg.region.clone(), name.clone())) {
        None => Next::Stop(missing(format!("launch configuration {name}"))),
        Some(Err(f)) => Next::Stop(read_failed(&format!("launch configuration {name}"), f)),
        Some(Ok(false)) => Next::Write {
            write: Write::CopyConfiguration { from: from.to_owned(), name, image_id: image.to_owned() },
            why: format!("launch configuration {from} launches with another account's key and cannot be changed: a copy of it with image {image}"),
        },
        Some(Ok(true)) => Next::Write {
            write: Write::UseConfiguration { name: name.clone() },
            why: format!("the group launches from launch configuration {from}: move it to {name}"),
        },
    }
}

/// The launch template version a group launches, and what its new version is made of.
struct TemplateStep<'a> {
    template: &'a str,
    /// The template's name, when the group's description gave it.
    name: Option<&'a str>,
    launched: u64,
    /// The version as the group names it: `$Latest`, `$Default` or a number.
    selector: &'a str,
    image: String,
    /// Mappings that name another account's key.
    devices: Vec<String>,
}

/// A launch template: a new version from the one the group launches, then the group
/// pointed at it by number. The template's default version is never changed: EC2 Fleet,
/// Spot Fleet, AWS Batch and plain RunInstances may launch it too, and the IaC that
/// manages it would revert it. The operator's version is found among the versions that
/// launch the copy, by its description, so another writer's later version is no
/// confusion.
fn template_step(b: &Binding, own: &KeyArn, t: TemplateStep, reads: &ReencryptReads) -> Next {
    let TemplateStep { template, name: t_name, launched, selector, image, devices } = t;
    let template_id = template.to_owned();
    let place = (b.asg.account, b.asg.region.clone());
    let at = (place.0, place.1.clone(), template_id.clone(), image.clone());
    let what = format!("the versions of launch template {template_id} with image {image}");
    let seen = match reads.by_image.get(&at) {
        None => return Next::Stop(missing(what)),
        Some(Err(f)) => return Next::Stop(read_failed(&what, f)),
        Some(Ok(seen)) => seen,
    };
    let others = match reads.groups.get(&place) {
        None => return Next::Stop(missing(format!("the groups of {}", b.asg.region))),
        Some(Err(f)) => return Next::Stop(read_failed(&format!("the groups of {}", b.asg.region), f)),
        Some(Ok(groups)) => users(groups, &b.asg, &template_id, t_name),
    };
    let ours = seen
        .iter()
        .filter(|v| v.description.as_deref().is_some_and(|d| is_operators_version(d, launched, &image, own)))
        .map(|v| v.number)
        .max();
    let Some(ours) = ours else {
        if let Some((other, _)) = others.iter().find(|(_, v)| v == "$Latest") {
            return Next::Stop(Failure::terminal(format!(
                "launch template {template_id} is shared with group {other}, which launches its $Latest version: a new version would change what {other} launches. Pin {other} to a version number, or give this group a template of its own"
            )));
        }
        let why = format!(
            "launch template {template_id} version {launched} launches with another account's key: a new version from it with image {image}{}",
            if devices.is_empty() { String::new() } else { format!(" and {own} for {}", devices.join(", ")) }
        );
        let description = version_description(launched, selector, &image, own);
        let write =
            Write::CreateVersion { template_id, source_version: launched, image_id: image, devices, description };
        return Next::Write { write, why };
    };
    if ours == launched {
        return Next::Stop(Failure::terminal(format!(
            "launch template {template_id} version {ours}, made by the operator with image {image}, still uses another account's key: a mapping's own snapshot, which re-encryption does not replace"
        )));
    }
    let shared = if others.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = others.iter().map(|(n, _)| n.as_str()).collect();
        format!("; the template is shared with {}, which keep their versions", names.join(", "))
    };
    let followed = if selector.is_empty() { "$Default" } else { selector };
    Next::Write {
        write: Write::PointGroup { template_id, name: t_name.map(str::to_owned), version: ours.to_string() },
        why: format!(
            "the group follows version {launched} ({followed}): point it at version {ours}; the template's default version stays as it is{shared}"
        ),
    }
}

/// The other groups that launch template `template_id` (by id, or by the name their
/// description gives with it), each with the version it names.
fn users(
    groups: &[(String, Vec<LaunchSource>)],
    me: &AsgRef,
    template_id: &str,
    name: Option<&str>,
) -> Vec<(String, String)> {
    groups
        .iter()
        .filter(|(group, _)| *group != me.name)
        .flat_map(|(group, sources)| {
            sources.iter().filter_map(move |s| match s {
                LaunchSource::Template { id, name: named, version, .. }
                    if id.as_deref() == Some(template_id) || (named.is_some() && named.as_deref() == name) =>
                {
                    Some((group.clone(), if version.is_empty() { "$Default".to_owned() } else { version.clone() }))
                }
                _ => None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::launch::LaunchKey;
    use crate::core::model::DryRun;

    const GROUP: &str = "111122223333";
    const OWN: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
    const FOREIGN: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";
    const LT: &str = "lt-0abc";

    fn key(s: &str) -> KeyArn {
        KeyArn::parse(s).unwrap()
    }

    fn binding() -> Binding {
        Binding {
            asg: AsgRef::new(AccountId::parse(GROUP).unwrap(), "us-west-2", "web"),
            key: key(OWN),
            slr_suffix: None,
            reencrypt_from: Some(Arc::from([key(FOREIGN)])),
            reencrypt_parameter: None,
            origin: Default::default(),
        }
    }

    fn source(selector: &str, image_keys: &[&str]) -> SourceRead {
        SourceRead {
            source: LaunchSource::Template {
                id: Some(LT.into()),
                name: Some("web".into()),
                version: selector.into(),
                via: crate::core::model::VIA_GROUP,
            },
            template: Some((LT.into(), 1)),
            image_id: Some("ami-src".into()),
            image_keys: image_keys.iter().map(|k| k.to_string()).collect(),
            mapping_keys: vec![],
            shared_encrypted: false,
            image_unread: None,
            image_parameter: None,
            unshared_snapshots: vec![],
            billed: None,
            made_from: None,
            moved: None,
        }
    }

    fn launch() -> GroupLaunch {
        let keys = [OWN, FOREIGN]
            .iter()
            .map(|k| LaunchKey {
                key_ref: k.to_string(),
                source: "AMI".into(),
                resolved: Ok((key(k), crate::core::model::KeyManager::Customer)),
            })
            .collect();
        GroupLaunch { keys, ..GroupLaunch::default() }
    }

    fn at(name: &str) -> CopyAt {
        (AccountId::parse(GROUP).unwrap(), "us-west-2".into(), name.into())
    }

    fn versions_at() -> TemplateAt {
        (AccountId::parse(GROUP).unwrap(), "us-west-2".into(), LT.into(), "ami-copy".into())
    }

    fn copy_at() -> CopyAt {
        at(&copy_name("ami-src", &key(OWN)))
    }

    /// Reads in which the copy is `state` (None: absent), the dry run answered `access`,
    /// the template's latest version is `latest` (ours when `ours`), and `others` use it.
    fn reads(state: Option<&str>, access: DryRun, latest: u64, ours: bool, others: &[(&str, &str)]) -> ReencryptReads {
        let mut r = ReencryptReads::default();
        let copy = state.map(|s| Copy {
            image_id: "ami-copy".into(),
            state: s.into(),
            reason: Some("why".into()),
            progress: Some("45%".into()),
        });
        r.copies.insert(copy_at(), Ok(copy));
        r.access.insert((key(FOREIGN), binding().slr()), Ok(access));
        let description = Some(version_description(1, "$Default", "ami-copy", &key(OWN)));
        let seen: Vec<VersionSeen> = ours.then_some(VersionSeen { number: latest, description }).into_iter().collect();
        r.by_image.insert(versions_at(), Ok(seen));
        let mut groups: Groups = vec![("web".into(), vec![source("$Default", &[]).source])];
        for (name, version) in others {
            let s = LaunchSource::Template { id: Some(LT.into()), name: None, version: version.to_string(), via: "x" };
            groups.push((name.to_string(), vec![s]));
        }
        r.groups.insert((AccountId::parse(GROUP).unwrap(), "us-west-2".into()), Ok(groups));
        r
    }

    fn next_of(s: &SourceRead, r: &ReencryptReads) -> Next {
        next(&binding(), &key(OWN), &launch(), s, r)
    }

    fn write(n: Next) -> Write {
        match n {
            Next::Write { write, .. } => write,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    /// What stops a source: the failure, or, for a wait, a failure whose message is the
    /// wait's (and `waited` says which wait).
    fn waits(n: Next) -> Failure {
        match n {
            Next::Stop(f) => f,
            Next::Wait(_, message) => Failure { class: ErrorClass::Retryable, message },
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    fn waited(n: &Next) -> Option<Wait> {
        match n {
            Next::Wait(w, _) => Some(*w),
            _ => None,
        }
    }

    #[test]
    fn a_source_on_own_keys_only_is_done() {
        let r = reads(None, DryRun::Allowed, 1, false, &[]);
        assert_eq!(next_of(&source("$Default", &[OWN]), &r), Next::Done);
    }

    #[test]
    fn an_image_on_another_accounts_key_is_copied_once_the_owner_allows_it() {
        let s = source("$Default", &[FOREIGN]);
        let w = write(next_of(&s, &reads(None, DryRun::Allowed, 1, false, &[])));
        assert_eq!(w, Write::CopyImage { source_image: "ami-src".into(), name: copy_name("ami-src", &key(OWN)) });
        // A refused dry run holds the copy while the account cannot describe the key.
        let mut undescribed = launch();
        undescribed.keys.retain(|k| k.key_ref != FOREIGN);
        let n = next(&binding(), &key(OWN), &undescribed, &s, &reads(None, DryRun::Refused, 1, false, &[]));
        assert_eq!(waited(&n), Some(Wait::KeyOwner));
        let f = waits(n);
        assert!(f.message.contains("arn:aws:iam::111122223333:root") && f.message.contains("kms:CreateGrant"), "{f}");
        // Described, it is shared with the account: the copy's grants are for an AWS
        // resource, which a dry run cannot test, so the copy is tried.
        let w = write(next_of(&s, &reads(None, DryRun::Refused, 1, false, &[])));
        assert!(matches!(w, Write::CopyImage { .. }), "{w:?}");
        let n = next_of(&s, &reads(Some("pending"), DryRun::Allowed, 1, false, &[]));
        assert_eq!(waited(&n), Some(Wait::Copy));
        let f = waits(n);
        assert!(f.message.ends_with("pending, snapshots at 45%"), "{f}");
        let f = waits(next_of(&s, &reads(Some("failed"), DryRun::Allowed, 1, false, &[])));
        assert_eq!(f.class, ErrorClass::Terminal);
        assert!(f.message.contains("is failed: why"), "{f}");
    }

    #[test]
    fn a_copy_gets_a_version_and_the_group_is_pointed_at_it_the_default_left_alone() {
        let s = source("$Default", &[FOREIGN]);
        let w = write(next_of(&s, &reads(Some("available"), DryRun::Allowed, 1, false, &[])));
        let description = version_description(1, "$Default", "ami-copy", &key(OWN));
        assert!(description.contains("version 1 ($Default) with image ami-copy"), "{description}");
        let want = Write::CreateVersion {
            template_id: LT.into(),
            source_version: 1,
            image_id: "ami-copy".into(),
            devices: vec![],
            description,
        };
        assert_eq!(w, want);
        let n = next_of(&s, &reads(Some("available"), DryRun::Allowed, 2, true, &[]));
        let Next::Write { write, why } = n else { panic!("{n:?}") };
        assert_eq!(write, Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "2".into() });
        assert!(why.contains("default version stays as it is"), "{why}");
    }

    #[test]
    fn the_operators_version_is_found_by_its_image_whatever_another_writer_adds() {
        let s = source("$Default", &[FOREIGN]);
        let mut r = reads(Some("available"), DryRun::Allowed, 2, true, &[]);
        let ours = version_description(1, "$Default", "ami-copy", &key(OWN));
        let pipeline = VersionSeen { number: 3, description: Some("pipeline build 812".into()) };
        let seen = vec![VersionSeen { number: 2, description: Some(ours) }, pipeline.clone()];
        r.by_image.insert(versions_at(), Ok(seen));
        let point = Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "2".into() };
        assert_eq!(write(next_of(&s, &r)), point, "the pipeline's later version is not the operator's");
        r.by_image.insert(versions_at(), Ok(vec![pipeline]));
        assert!(matches!(write(next_of(&s, &r)), Write::CreateVersion { .. }), "only the pipeline's: make ours");
        // A version an earlier operator described, without what the group followed.
        let legacy = format!("asg-cmk-operator: version 1 with image ami-copy and key {}", key(OWN).key_id());
        r.by_image.insert(versions_at(), Ok(vec![VersionSeen { number: 4, description: Some(legacy) }]));
        let point = Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "4".into() };
        assert_eq!(write(next_of(&s, &r)), point);
    }

    #[test]
    fn the_operators_descriptions_are_told_from_others() {
        let k = key(OWN);
        for followed in ["$Default", "$Latest", "7", ""] {
            assert!(is_operators_version(&version_description(3, followed, "ami-1", &k), 3, "ami-1", &k));
        }
        let d = version_description(3, "$Latest", "ami-1", &k);
        assert!(!is_operators_version(&d, 4, "ami-1", &k), "another source version");
        assert!(!is_operators_version(&d, 3, "ami-2", &k), "another image");
        assert!(!is_operators_version(&d, 3, "ami-1", &key(FOREIGN)), "another key");
        let forged = format!("asg-cmk-operator: version 3 (x) (y) with image ami-1 and key {}", k.key_id());
        assert!(!is_operators_version(&forged, 3, "ami-1", &k));
    }

    #[test]
    fn a_shared_template_pins_this_group_and_one_on_latest_is_left_alone() {
        let s = source("$Default", &[FOREIGN]);
        let r = reads(Some("available"), DryRun::Allowed, 2, true, &[("api", "$Default")]);
        let w = write(next_of(&s, &r));
        assert_eq!(w, Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "2".into() });
        let r = reads(Some("available"), DryRun::Allowed, 1, false, &[("api", "$Latest")]);
        let f = waits(next_of(&s, &r));
        assert_eq!(f.class, ErrorClass::Terminal);
        assert!(f.message.contains("shared with group api, which launches its $Latest version"), "{f}");
    }

    #[test]
    fn a_version_of_the_operators_that_still_uses_the_key_is_not_made_again() {
        let mut s = source("$Default", &[FOREIGN]);
        s.template = Some((LT.into(), 2));
        let mut r = reads(Some("available"), DryRun::Allowed, 2, false, &[]);
        let description = version_description(2, "$Default", "ami-copy", &key(OWN));
        r.by_image.insert(versions_at(), Ok(vec![VersionSeen { number: 2, description: Some(description) }]));
        let f = waits(next_of(&s, &r));
        assert_eq!(f.class, ErrorClass::Terminal, "{f}");
    }

    #[test]
    fn an_image_the_account_cannot_read_is_said_not_taken_for_converged() {
        let mut s = source("$Default", &[]);
        s.image_unread = Some("not found, or not shared with this account".into());
        let f = waits(next_of(&s, &reads(None, DryRun::Allowed, 1, false, &[])));
        assert_eq!(f.class, ErrorClass::Terminal);
        assert!(f.message.contains("must be owned by the account or shared with it"), "{f}");
    }

    #[test]
    fn a_launch_configuration_is_copied_then_used() {
        let mut s = source("", &[FOREIGN]);
        s.source = LaunchSource::Configuration("web-lc".into());
        s.template = None;
        let mut r = reads(Some("available"), DryRun::Allowed, 1, false, &[]);
        let name = configuration_name("web-lc", "ami-copy");
        r.configurations.insert(at(&name), Ok(false));
        let w = write(next_of(&s, &r));
        assert_eq!(
            w,
            Write::CopyConfiguration { from: "web-lc".into(), name: name.clone(), image_id: "ami-copy".into() }
        );
        r.configurations.insert(at(&name), Ok(true));
        assert_eq!(write(next_of(&s, &r)), Write::UseConfiguration { name });
    }

    #[test]
    fn an_image_from_a_parameter_is_never_frozen_into_a_copy() {
        let mut s = source("$Default", &[FOREIGN]);
        s.image_parameter = Some("resolve:ssm:/golden/ami".into());
        let r = reads(None, DryRun::Allowed, 1, false, &[]);
        let Next::ImageFromParameter(why) = next(&binding(), &key(OWN), &launch(), &s, &r) else {
            panic!("{:?}", next(&binding(), &key(OWN), &launch(), &s, &r))
        };
        assert!(why.contains("resolve:ssm:/golden/ami") && why.contains("ami-src"), "{why}");
        // An image of the group's own account through a parameter needs nothing.
        let mut own = source("$Default", &[OWN]);
        own.image_parameter = s.image_parameter.clone();
        assert_eq!(next(&binding(), &key(OWN), &launch(), &own, &r), Next::Done);
    }

    #[test]
    fn an_image_whose_snapshots_are_not_shared_waits_for_its_owner_with_the_exact_request() {
        let mut s = source("$Default", &[FOREIGN]);
        s.unshared_snapshots = vec!["snap-1".into()];
        let n = next_of(&s, &reads(None, DryRun::Allowed, 1, false, &[]));
        assert_eq!(waited(&n), Some(Wait::ImageOwner));
        let f = waits(n);
        assert!(
            f.message.contains(
                "--snapshot-id snap-1 --attribute createVolumePermission --operation-type add --user-ids 111122223333"
            ),
            "{f}"
        );
        // A copy made before (its snapshots shared then) is followed, not held.
        let n = next_of(&s, &reads(Some("pending"), DryRun::Allowed, 1, false, &[]));
        assert_eq!(waited(&n), Some(Wait::Copy));
    }

    #[test]
    fn a_readable_source_policy_is_judged_for_what_a_copy_needs_not_for_a_grant() {
        let s = source("$Default", &[FOREIGN]);
        // A key shared the console's way: use, and grants only for AWS resources. The dry
        // run of an unconditioned grant would be refused; the copy needs no such grant.
        let console = r#"{"Statement":[
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"},
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}]}"#;
        let mut r = reads(None, DryRun::Refused, 1, false, &[]);
        r.source_policies.insert(key(FOREIGN), Ok(console.into()));
        assert!(matches!(write(next_of(&s, &r)), Write::CopyImage { .. }));
        // One that lets the account describe the key only: what it lacks, and what to add.
        let describe = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:DescribeKey","Resource":"*"}]}"#;
        r.source_policies.insert(key(FOREIGN), Ok(describe.into()));
        let n = next_of(&s, &r);
        assert_eq!(waited(&n), Some(Wait::KeyOwner));
        let f = waits(n);
        assert!(
            f.message.contains("does not allow account 111122223333 kms:Decrypt, kms:ReEncryptFrom, kms:CreateGrant"),
            "{f}"
        );
        assert!(f.message.contains("kms:GrantIsForAWSResource"), "{f}");
        // A Deny is named.
        let deny = r#"{"Statement":[{"Sid":"NoCopies","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}"#;
        r.source_policies.insert(key(FOREIGN), Ok(deny.into()));
        let f = waits(next_of(&s, &r));
        assert!(f.message.contains("the statement NoCopies denies kms:Decrypt"), "{f}");
    }
    #[test]
    fn what_the_group_followed_is_read_from_the_operators_description_only() {
        let k = key(OWN);
        assert_eq!(followed_by(&version_description(3, "$Latest", "ami-1", &k)), Some((3, "$Latest")));
        assert_eq!(followed_by(&version_description(3, "", "ami-1", &k)), Some((3, "$Default")));
        assert_eq!(followed_by(&version_description(3, "7", "ami-1", &k)), Some((3, "7")));
        let legacy = format!("asg-cmk-operator: version 3 with image ami-1 and key {}", k.key_id());
        assert_eq!(followed_by(&legacy), None, "an earlier operator's: what the group followed is unknown");
        assert_eq!(followed_by("pipeline build 812"), None);
        assert_eq!(followed_by("asg-cmk-operator: version x ($Default) with image ami-1"), None);
    }

    /// Group `web` on the operator's version 2 (made from 1, following `$Default`), whose
    /// `$Default` has moved to the pipeline's version 3, with `image_keys`.
    fn moved_to(image_keys: &[&str]) -> SourceRead {
        let mut on = source("2", &[OWN]);
        on.template = Some((LT.into(), 2));
        on.image_id = Some("ami-copy".into());
        let mut now = source("$Default", image_keys);
        now.template = Some((LT.into(), 3));
        on.moved = Some(Box::new(Ok(now)));
        on
    }

    #[test]
    fn a_moved_default_with_an_own_image_is_followed_again() {
        let r = reads(Some("available"), DryRun::Allowed, 2, true, &[]);
        let n = next_of(&moved_to(&[OWN]), &r);
        let Next::Write { write, why } = n else { panic!("{n:?}") };
        assert_eq!(
            write,
            Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "$Default".into() }
        );
        assert!(why.contains("is now version 3") && why.contains("follows $Default again"), "{why}");
        assert!(needs(&binding(), &key(OWN), &launch(), &moved_to(&[OWN]), &r).copies.is_empty());
    }

    #[test]
    fn a_moved_default_on_another_own_account_key_is_not_followed_onto_an_unready_key() {
        let other_own = "arn:aws:kms:us-west-2:111122223333:key/33333333-3333-3333-3333-333333333333";
        let mut s = moved_to(&[OWN]);
        let Some(Ok(moved)) = s.moved.as_deref_mut() else { unreachable!() };
        moved.image_keys = vec![other_own.to_owned()];
        let mut launch = launch();
        launch.keys.push(LaunchKey {
            key_ref: other_own.into(),
            source: "AMI".into(),
            resolved: Ok((key(other_own), crate::core::model::KeyManager::Customer)),
        });
        let r = reads(Some("available"), DryRun::Allowed, 2, true, &[]);
        let f = waits(next(&binding(), &key(OWN), &launch, &s, &r));
        assert_eq!(f.class, ErrorClass::Terminal);
        assert!(f.message.contains(other_own) && f.message.contains("stays on the operator's version"), "{f}");
    }

    #[test]
    fn a_moved_default_on_the_foreign_key_gets_a_version_of_its_own_from_the_same_copy() {
        let s = moved_to(&[FOREIGN]);
        let mut r = reads(Some("available"), DryRun::Allowed, 2, true, &[]);
        // The copy is found by name: no CopyImage; the version is made from the pipeline's 3.
        assert_eq!(needs(&binding(), &key(OWN), &launch(), &s, &r).copies, [copy_name("ami-src", &key(OWN))]);
        let description = version_description(3, "$Default", "ami-copy", &key(OWN));
        let want = Write::CreateVersion {
            template_id: LT.into(),
            source_version: 3,
            image_id: "ami-copy".into(),
            devices: vec![],
            description: description.clone(),
        };
        assert_eq!(write(next_of(&s, &r)), want);
        let ours = VersionSeen { number: 4, description: Some(description) };
        let old =
            VersionSeen { number: 2, description: Some(version_description(1, "$Default", "ami-copy", &key(OWN))) };
        r.by_image.insert(versions_at(), Ok(vec![old, ours]));
        let point = Write::PointGroup { template_id: LT.into(), name: Some("web".into()), version: "4".into() };
        assert_eq!(write(next_of(&s, &r)), point);
        // A failed read of what the group followed stops it, to be tried again.
        let mut failed = s.clone();
        failed.moved = Some(Box::new(Err(Failure::terminal("throttled"))));
        let f = waits(next_of(&failed, &r));
        assert!(f.message.contains("throttled"), "{f}");
    }

    #[test]
    fn an_image_with_a_billing_code_shared_from_another_account_is_not_copied() {
        let mut s = source("$Default", &[FOREIGN]);
        s.billed = Some("billing code RunInstances:0002 (Windows)".into());
        let f = waits(next_of(&s, &reads(None, DryRun::Allowed, 1, false, &[])));
        assert_eq!(f.class, ErrorClass::Terminal);
        assert!(f.message.contains("has a billing code RunInstances:0002 (Windows)"), "{f}");
        assert!(f.message.contains("strategy: grant"), "{f}");
        // A copy made before is followed as any other.
        let n = next_of(&s, &reads(Some("pending"), DryRun::Allowed, 1, false, &[]));
        assert_eq!(waited(&n), Some(Wait::Copy));
    }

    const OWN_PARAMETER: &str = "/asg-cmk-operator/web";

    /// A group whose template's image comes from the pipeline's parameter, the binding
    /// publishing copies to [`OWN_PARAMETER`].
    fn through_parameter() -> (Binding, SourceRead) {
        let mut b = binding();
        b.reencrypt_parameter = Some(Arc::from(OWN_PARAMETER));
        let mut s = source("$Default", &[FOREIGN]);
        s.image_parameter = Some("resolve:ssm:/golden/ami".into());
        (b, s)
    }

    #[test]
    fn a_parameter_image_is_copied_published_to_the_operators_parameter_and_resolved_through_it() {
        let (b, s) = through_parameter();
        let next = |r: &ReencryptReads| next(&b, &key(OWN), &launch(), &s, r);
        let mut r = reads(None, DryRun::Allowed, 1, false, &[]);
        assert!(matches!(write(next(&r)), Write::CopyImage { .. }), "copied, not refused");
        r = reads(Some("available"), DryRun::Allowed, 1, false, &[]);
        let at = (AccountId::parse(GROUP).unwrap(), "us-west-2".to_owned(), OWN_PARAMETER.to_owned());
        assert_eq!(needs(&b, &key(OWN), &launch(), &s, &r).parameter.as_deref(), Some(OWN_PARAMETER));
        assert!(matches!(waits(next(&r)).class, ErrorClass::Retryable), "the parameter is read first");
        r.parameters.insert(at.clone(), Ok(None));
        let put = Write::PutParameter { name: OWN_PARAMETER.into(), image_id: "ami-copy".into() };
        assert_eq!(write(next(&r)), put);
        r.parameters.insert(at.clone(), Ok(Some("ami-older".into())));
        assert_eq!(write(next(&r)), put, "a parameter holding another image is overwritten");
        r.parameters.insert(at, Ok(Some("ami-copy".into())));
        let through = format!("resolve:ssm:{OWN_PARAMETER}");
        let n = needs(&b, &key(OWN), &launch(), &s, &r);
        assert_eq!(n.template, Some((LT.to_owned(), through.clone())));
        let versions_at = (AccountId::parse(GROUP).unwrap(), "us-west-2".into(), LT.into(), through.clone());
        r.by_image.insert(versions_at, Ok(vec![]));
        let Write::CreateVersion { image_id, description, .. } = write(next(&r)) else { panic!() };
        assert_eq!(image_id, through);
        assert!(description.contains(&through), "{description}");
    }

    #[test]
    fn a_group_on_the_operators_parameter_follows_the_pipelines_parameter_with_no_new_version() {
        let (b, source_version) = through_parameter();
        // On the operator's version 2, made from 1, which resolves the own parameter.
        let mut on = source("2", &[OWN]);
        on.template = Some((LT.into(), 2));
        on.image_id = Some("ami-copy".into());
        on.image_parameter = Some(format!("resolve:ssm:{OWN_PARAMETER}"));
        on.made_from = Some(1);
        on.moved = Some(Box::new(Ok(source_version)));
        let at = (AccountId::parse(GROUP).unwrap(), "us-west-2".to_owned(), OWN_PARAMETER.to_owned());
        let mut r = reads(Some("available"), DryRun::Allowed, 2, true, &[]);
        r.parameters.insert(at.clone(), Ok(Some("ami-copy".into())));
        assert_eq!(next(&b, &key(OWN), &launch(), &on, &r), Next::Done);
        let n = needs(&b, &key(OWN), &launch(), &on, &r);
        assert_eq!((n.template, n.parameter.as_deref()), (None, Some(OWN_PARAMETER)), "no template read");
        // The pipeline publishes another image (its copy is made): it is published again.
        r.parameters.insert(at, Ok(Some("ami-before".into())));
        let put = Write::PutParameter { name: OWN_PARAMETER.into(), image_id: "ami-copy".into() };
        assert_eq!(write(next(&b, &key(OWN), &launch(), &on, &r)), put);
    }
}
