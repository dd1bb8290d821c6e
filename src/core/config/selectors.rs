//! The `selectors` section: groups chosen by tag, each with the keys it may grant.
//! Validated as `bindings` are, every problem located by its field path.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_norway::{Mapping, Value};

use super::schema::{EVENTS_FIELDS, SELECTOR_FIELDS};
use super::validate::{join, kind, Defaults, Validator};
use crate::core::model::is_region;
use crate::core::model::select::{Selector, TagValue};
use crate::core::model::KeyArn;

/// AWS tag limits (EC2 Auto Scaling User Guide, "Tag Auto Scaling groups and instances":
/// keys up to 128 characters, values up to 256).
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;

impl Validator {
    /// One entry of `selectors`, when valid.
    pub(super) fn selector(&mut self, value: &Value, path: &str, defaults: &Defaults) -> Option<Selector> {
        let map = self.mapping(value, path, &SELECTOR_FIELDS)?;
        let before = self.errors.len();
        let name = self.string(map, path, "name", true);
        if let Some(n) = &name {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                self.err(join(path, "name"), "must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        let account = self.string(map, path, "account", true).and_then(|s| self.account_id(&s, &join(path, "account")));
        let regions = self.regions(map, path, defaults);
        let match_tags = self.match_tags(map, path);
        let match_names = self.strings(map, path, "matchNames", false);
        for (i, n) in match_names.iter().enumerate() {
            if n.is_empty() || n.len() > 255 {
                self.err(format!("{}[{i}]", join(path, "matchNames")), "must be 1 to 255 characters");
            }
        }
        let allowed = self.allowed_keys(map, path, account.as_ref(), &regions);
        let suffix = self.suffix(map, path, defaults);
        let keyed: Vec<(String, KeyArn)> = allowed.iter().map(|k| (join(path, "allowedKeys"), k.clone())).collect();
        let region = (regions.len() == 1).then(|| regions[0].as_str());
        let reencrypt_with = self.strategy(map, path, account.as_ref(), region, &keyed);
        if self.errors.len() != before {
            return None;
        }
        Some(Selector {
            name: Arc::from(name?),
            account: account?,
            regions,
            match_tags,
            match_names,
            allowed_keys: allowed,
            slr_suffix: suffix,
            reencrypt_with,
        })
    }

    /// `events`: the queue of change events, by URL, and its Region (else the URL's, else
    /// `defaults.region`).
    pub(super) fn events(
        &mut self,
        value: &Value,
        default_region: Option<&str>,
    ) -> Option<crate::core::model::desired::Events> {
        let map = self.mapping(value, "events", &EVENTS_FIELDS)?;
        let url = self.string(map, "events", "queueUrl", true)?;
        let region = self.string(map, "events", "region", false);
        if let Some(r) = region.as_deref().filter(|r| !is_region(r)) {
            self.err("events.region", format!("{r:?} is not a region name"));
            return None;
        }
        let parsed =
            crate::core::model::desired::Events::parse(&url, region.as_deref()).or_else(|e| match default_region {
                Some(d) if region.is_none() => crate::core::model::desired::Events::parse(&url, Some(d)),
                _ => Err(e),
            });
        match parsed {
            Ok(e) => Some(e),
            Err(e) => {
                self.err("events.queueUrl", e);
                None
            }
        }
    }

    /// `regions`: a list of region names; `defaults.region` when absent.
    fn regions(&mut self, map: &Mapping, path: &str, defaults: &Defaults) -> Vec<String> {
        let at = join(path, "regions");
        let listed = self.strings(map, path, "regions", false);
        for (i, r) in listed.iter().enumerate() {
            if !is_region(r) {
                self.err(format!("{at}[{i}]"), format!("{r:?} is not a region name"));
            }
        }
        if !listed.is_empty() {
            let mut seen = BTreeSet::new();
            return listed.into_iter().filter(|r| seen.insert(r.clone())).collect();
        }
        match &defaults.region {
            Some(r) => vec![r.clone()],
            None => {
                self.err(at, "is required (or defaults.region): the Regions whose groups the selector lists");
                Vec::new()
            }
        }
    }

    /// `matchTags`: a mapping of tag keys to values, `"*"` for any value; at least one.
    fn match_tags(&mut self, map: &Mapping, path: &str) -> Vec<(String, TagValue)> {
        let at = join(path, "matchTags");
        let tags = match map.get("matchTags") {
            None | Some(Value::Null) => {
                self.err(at, "is required: the tags a group must carry to be selected");
                return Vec::new();
            }
            Some(Value::Mapping(m)) if m.is_empty() => {
                self.err(at, "must name at least one tag");
                return Vec::new();
            }
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                self.err(at, format!("expected a mapping of tag keys to values, found {}", kind(other)));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (k, v) in tags {
            let Some(key) = k.as_str() else {
                self.err(&at, format!("tag keys must be strings, found {}", kind(k)));
                continue;
            };
            let here = join(&at, key);
            if key.is_empty() || key.chars().count() > TAG_KEY_MAX {
                self.err(&here, format!("a tag key is 1 to {TAG_KEY_MAX} characters"));
            }
            match v {
                Value::String(s) if s == "*" => out.push((key.to_owned(), TagValue::Any)),
                Value::String(s) if s.chars().count() > TAG_VALUE_MAX => {
                    self.err(here, format!("a tag value is at most {TAG_VALUE_MAX} characters"))
                }
                Value::String(s) => out.push((key.to_owned(), TagValue::Is(s.clone()))),
                other => self.err(
                    here,
                    format!("expected the tag's value as a string (\"*\" for any value), found {}", kind(other)),
                ),
            }
        }
        out.sort();
        out
    }

    /// `allowedKeys`: required, at least one key or alias ARN, in the selector's account's
    /// partition and one of its Regions; no wildcards.
    fn allowed_keys(
        &mut self,
        map: &Mapping,
        path: &str,
        account: Option<&crate::core::model::AccountId>,
        regions: &[String],
    ) -> Vec<KeyArn> {
        let at = join(path, "allowedKeys");
        if matches!(map.get("allowedKeys"), None | Some(Value::Null)) {
            self.err(at, "is required: the keys the selected groups may be granted (a tag alone grants nothing)");
            return Vec::new();
        }
        let texts = self.strings(map, path, "allowedKeys", false);
        if texts.is_empty() {
            self.err(&at, "must list at least one key ARN");
        }
        let mut keys: Vec<KeyArn> = Vec::new();
        for (i, text) in texts.into_iter().enumerate() {
            let here = format!("{at}[{i}]");
            if text.contains(['*', '?']) {
                self.err(here, "must name one key or alias (no wildcards): a tag must never grant a key no one chose");
                continue;
            }
            let Some(key) = self.key(text, &here) else { continue };
            if !regions.is_empty() && !regions.iter().any(|r| r == key.region()) {
                self.err(
                    &here,
                    format!("key is in region {}, which is not one of the selector's regions", key.region()),
                );
            }
            if key.is_alias() && account.is_some_and(|a| a != key.account()) {
                self.err(
                    &here,
                    "another account's key must be named by its key ARN: an alias resolves only in its own account",
                );
            }
            if keys.contains(&key) {
                self.err(here, format!("{key} is listed twice"));
            } else {
                keys.push(key);
            }
        }
        keys
    }

    /// A list of strings at `field`; empty when absent.
    fn strings(&mut self, map: &Mapping, path: &str, field: &str, required: bool) -> Vec<String> {
        let at = join(path, field);
        match map.get(field) {
            None | Some(Value::Null) if required => {
                self.err(at, "is required");
                Vec::new()
            }
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.err(format!("{at}[{i}]"), format!("expected a string, found {}", kind(other))),
                    }
                }
                out
            }
            Some(other) => {
                self.err(at, format!("expected a list, found {}", kind(other)));
                Vec::new()
            }
        }
    }
}
