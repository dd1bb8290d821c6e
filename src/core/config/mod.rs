//! The desired-state file: parsing and validation.
//!
//! One path: the file is streamed section by section (`stream.rs`), and every value is
//! read as a small generic value and walked field by field by one `Validator`
//! (`validate.rs`), so that every problem is reported at once, each named by its field
//! path (`bindings[1].key`), or, for YAML syntax, by line and column. Serde's derive stops at the first error, which is why the
//! walk is written out here.
//!
//! The list sections (`accounts`, `bindings`) are streamed through one `List` seed:
//! each item is read as a small value and validated at once, so a config of ten thousand
//! bindings never exists as one value tree. A generic tree costs about 2 KB a binding,
//! many times the validated `Binding`.

pub mod duration;
mod schema;
mod selectors;
mod stream;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::DeserializeSeed;

use crate::core::model::desired::Desired;
use crate::core::model::is_known_region;
use stream::{duplicate_key_at, strip_location, Document};
use validate::Validator;

/// One located problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A field path such as `bindings[1].key`, or `line 3, column 7` for YAML syntax.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{} has {n} error{}", self.source_name, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Why a group on the default service-linked role is worth a warning. The EC2 Auto Scaling
/// User Guide ("Service-linked roles for Amazon EC2 Auto Scaling", and "Required AWS KMS
/// key policy for use with encrypted volumes") advises a role with a custom suffix for
/// granular access to a customer managed key: the default role is the one every group
/// that names no role uses, so anyone who may create a group in the account can use the
/// key through it.
pub const DEFAULT_ROLE_REASON: &str = "AWS advises a service-linked role with a custom suffix for granular access to a customer managed key, because anyone who can create an Auto Scaling group in the account can use the default one (and with it this key)";

/// One warning per group that uses the default service-linked role, in config order.
pub fn default_role_warnings(desired: &Desired) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    desired
        .bindings
        .iter()
        .filter(|b| b.slr_suffix.is_none() && seen.insert(&b.asg))
        .map(|b| default_role_warning(&b.asg))
        .collect()
}

pub fn default_role_warning(asg: &crate::core::model::AsgRef) -> String {
    format!(
        "ASG {asg} uses the default service-linked role AWSServiceRoleForAutoScaling: {DEFAULT_ROLE_REASON}. Set serviceLinkedRoleSuffix (or defaults.serviceLinkedRoleSuffix); defaults.requireServiceLinkedRoleSuffix: true makes this an error"
    )
}

/// One warning per region of the bindings that the SDK does not know: a misspelling such
/// as `us-wset-2`, or a region AWS opened after this build. Not an error, for the latter.
pub fn unknown_region_warnings(desired: &Desired) -> Vec<String> {
    let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for b in desired.bindings.iter().filter(|b| !is_known_region(&b.asg.region)) {
        groups.entry(&b.asg.region).or_default().insert(&b.asg.name);
    }
    groups
        .into_iter()
        .map(|(region, names)| {
            let names: Vec<&str> = names.into_iter().collect();
            format!(
                "region {region:?} (ASG {}) is not a region the AWS SDK knows: check its spelling (a region opened after this build works, and then this warning can be ignored)",
                names.join(", ")
            )
        })
        .collect()
}

/// How deep a config may nest: the deepest it needs is a handful of levels (a binding's
/// `keys` list), so anything deeper is a mistake, or a file made to be slow to parse (the
/// YAML parser's time grows with the square of the depth).
pub const MAX_DEPTH: usize = 64;

/// Parses and validates config text. `source_name` names the text in errors. A UTF-8 byte
/// order mark before the text is skipped, as YAML allows.
pub fn parse(text: &str, source_name: &str) -> Result<Desired, ConfigErrors> {
    let fail = |errors| ConfigErrors { source_name: source_name.to_owned(), errors };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(e) = too_deep(text, MAX_DEPTH) {
        return Err(fail(vec![e]));
    }
    let mut v = Validator::default();
    let desired = match (Document { v: &mut v }).deserialize(serde_norway::Deserializer::from_str(text)) {
        Ok(d) => d,
        Err(e) => {
            let message = e.to_string();
            let location = match e.location() {
                Some(l) => {
                    let (line, column) =
                        duplicate_key_at(text, &message, l.line(), l.column()).unwrap_or((l.line(), l.column()));
                    format!("line {line}, column {column}")
                }
                None => "yaml".into(),
            };
            return Err(fail(vec![ConfigError { location, message: strip_location(&message) }]));
        }
    };
    if v.errors.is_empty() {
        Ok(desired)
    } else {
        Err(fail(v.errors))
    }
}

/// Where `text` first nests deeper than `max` levels, if it does: blocks by indentation
/// and sequence dashes, and flow collections by brackets, quoted scalars and comments
/// skipped. Linear in the text, so a file made to be slow to parse is refused at once.
fn too_deep(text: &str, max: usize) -> Option<ConfigError> {
    let mut flow = 0usize;
    let mut blocks: Vec<usize> = Vec::new();
    let breach = |line: usize, column: usize| ConfigError {
        location: format!("line {line}, column {column}"),
        message: format!("nests deeper than {max} levels; a config needs only a few"),
    };
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        if flow == 0 && !content.is_empty() && !content.starts_with('#') {
            while blocks.last().is_some_and(|&b| b >= indent) {
                blocks.pop();
            }
            blocks.push(indent);
            // "- - x": each dash opens a sequence inside the one before it.
            let mut col = indent;
            let mut rest = content;
            while let Some(after) = rest.strip_prefix("- ").or_else(|| (rest == "-").then_some("")) {
                let skipped = rest.len() - after.trim_start_matches(' ').len();
                col += skipped;
                rest = &rest[skipped..];
                blocks.push(col);
            }
            if blocks.len() > max {
                return Some(breach(n + 1, col + 1));
            }
        }
        let (mut quote, mut prev) = (None, ' ');
        for (i, c) in content.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '"' | '\'') if matches!(prev, ' ' | ':' | '[' | '{' | ',') => quote = Some(c),
                (None, '[' | '{') => {
                    flow += 1;
                    if blocks.len() + flow > max {
                        return Some(breach(n + 1, indent + i + 1));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    None
}

#[cfg(test)]
mod tests;
