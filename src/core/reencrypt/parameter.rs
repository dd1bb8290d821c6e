//! `reencryptParameter`: a group whose launch template names its image by a Systems
//! Manager parameter (`resolve:ssm:P`) is not frozen onto the copy's literal AMI id. The
//! operator publishes the copy's id to a parameter of its own (R), and the new version
//! names its image `resolve:ssm:R`. When the pipeline publishes a new image to P, the
//! operator copies it and publishes the new copy to R: the group follows the pipeline
//! through R, with no new version.
//!
//! A version whose image is a parameter but whose image uses no other account's key
//! (only a mapping does) keeps the source's parameter as it is.

use super::{copy_name, missing, read_failed, Next, ReencryptReads, SourceRead, Write};
use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, Failure, KeyArn};

/// How a launch template version names an image that comes from a parameter.
pub const RESOLVE: &str = "resolve:ssm:";

/// How the operator's version names its image.
pub(super) enum Through<'a> {
    /// By the image id given (a copy's, or the source's own AMI).
    Id,
    /// Through the operator's parameter, which must hold the copy first.
    Own(&'a str),
    /// Through the source's own parameter, unchanged.
    Source(&'a str),
}

pub(super) fn through<'a>(b: &'a Binding, s: &'a SourceRead, image_foreign: bool) -> Through<'a> {
    match (s.image_parameter.as_deref(), image_foreign, b.reencrypt_parameter.as_deref()) {
        (Some(_), true, Some(own)) => Through::Own(own),
        (Some(source), false, _) => Through::Source(source),
        _ => Through::Id,
    }
}

/// Whether parameter `name` of the group's account holds `copy`, as read.
pub(super) fn holds(b: &Binding, name: &str, copy: &str, reads: &ReencryptReads) -> Result<bool, Failure> {
    match reads.parameters.get(&(b.asg.account, b.asg.region.clone(), name.to_owned())) {
        None => Err(missing(format!("parameter {name}"))),
        Some(Err(f)) => Err(read_failed(&format!("parameter {name}"), f)),
        Some(Ok(held)) => Ok(held.as_deref() == Some(copy)),
    }
}

/// How the new version names its image: `copy` (of `image`) by its id, or through a
/// parameter; or the step that must come first.
pub(super) enum Named {
    Image(String),
    First(Next),
}

pub(super) fn named(
    b: &Binding,
    s: &SourceRead,
    image_foreign: bool,
    copy: String,
    image: &str,
    reads: &ReencryptReads,
) -> Named {
    match through(b, s, image_foreign) {
        Through::Id => Named::Image(copy),
        Through::Source(source) => Named::Image(source.to_owned()),
        Through::Own(name) => match holds(b, name, &copy, reads) {
            Ok(true) => Named::Image(format!("{RESOLVE}{name}")),
            Ok(false) => Named::First(publish(name, &copy, image)),
            Err(f) => Named::First(Next::Stop(f)),
        },
    }
}

/// Without `reencryptParameter`, a group whose image comes from a parameter is not
/// copied: what to do instead.
pub(super) fn refused(what: &str, parameter: &str, image: &str, group: &AccountId) -> Next {
    Next::ImageFromParameter(format!(
        "{what} names its image by the Systems Manager parameter {parameter} (now {image}), whose snapshots use another account's key. A version with the copy's AMI id would stop the group following the parameter, so nothing is copied. Set reencryptParameter to a parameter the operator may publish the copy to, or publish an image encrypted with a key of account {group} to the parameter, or point the template at an AMI id, or bind the key by the procedure's grant (strategy: grant)"
    ))
}

/// The write that publishes `copy` (of `image`) to `name`.
pub(super) fn publish(name: &str, copy: &str, image: &str) -> Next {
    Next::Write {
        write: Write::PutParameter { name: name.to_owned(), image_id: copy.to_owned() },
        why: format!(
            "the group's image comes from a parameter, now image {image}: publish its copy {copy} to parameter {name}, which the group's version resolves"
        ),
    }
}

/// Whether the group, on the operator's version that names its image through the
/// operator's parameter, already launches the copy of what its source (`moved`, the
/// version the operator's was made from, read now) names: that copy exists and the
/// parameter holds it. Nothing more is read or written then.
pub(super) fn current(b: &Binding, own: &KeyArn, s: &SourceRead, moved: &SourceRead, reads: &ReencryptReads) -> bool {
    let Some(name) = b.reencrypt_parameter.as_deref() else { return false };
    let ours = s.image_parameter.as_deref().and_then(|p| p.strip_prefix(RESOLVE)) == Some(name);
    let from_source = moved.template.as_ref().map(|(_, n)| *n) == s.made_from && s.made_from.is_some();
    let (true, true, Some(image)) = (ours, from_source, &moved.image_id) else { return false };
    let place = (b.asg.account, b.asg.region.clone());
    let Some(Ok(Some(c))) = reads.copies.get(&(place.0, place.1.clone(), copy_name(image, own))) else {
        return false;
    };
    let held = reads.parameters.get(&(place.0, place.1, name.to_owned()));
    c.state == "available" && matches!(held, Some(Ok(Some(v))) if *v == c.image_id)
}
