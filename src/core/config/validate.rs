//! The validation rules: one [`Validator`] walks each section's value field by field and
//! collects every problem, each named by its field path.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_norway::{Mapping, Value};

use super::schema::{ACCOUNT_FIELDS, BINDING_FIELDS, DEFAULTS_FIELDS};
use super::ConfigError;
use crate::core::model::desired::Binding;
use crate::core::model::{check_slr_suffix, is_region, AccountId, AsgRef, KeyArn};

#[derive(Default)]
pub(super) struct Validator {
    pub(super) errors: Vec<ConfigError>,
    /// Keys parsed so far: bindings that name the same key share one `KeyArn`.
    pub(super) keys: BTreeMap<String, KeyArn>,
}

/// Default values read from the `defaults` section.
#[derive(Default)]
pub(super) struct Defaults {
    pub(super) region: Option<String>,
    pub(super) suffix: Option<Arc<str>>,
    /// `requireServiceLinkedRoleSuffix`: a binding without a suffix is an error, not a
    /// warning.
    pub(super) require_suffix: bool,
    /// `prune`: offboard what no binding explains any more.
    pub(super) prune: bool,
    /// `allowMassPrune`: confirm a prune the guard would hold.
    pub(super) allow_mass_prune: bool,
    /// `reencryptCleanup`: remove the operator's image copies that nothing uses any more.
    pub(super) reencrypt_cleanup: bool,
    /// `selectorSyncInterval`: how often the daemon sweeps the selectors.
    pub(super) selector_sync: Option<std::time::Duration>,
    /// `kmsCreateGrantRate`: the ceiling of the operator's CreateGrant calls per second.
    pub(super) create_grant_rate: Option<u32>,
}

impl Validator {
    pub(super) fn err(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { location: location.into(), message: message.into() });
    }

    /// Returns the mapping at `path`, reporting unknown keys; None (and an error) when the
    /// value is not a mapping.
    pub(super) fn mapping<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.err(path, format!("expected a mapping, found {}", kind(value)));
            return None;
        };
        for k in map.keys() {
            match k.as_str() {
                Some(name) if allowed.contains(&name) => {}
                Some(name) => {
                    self.err(join(path, name), format!("unknown field; expected one of {}", allowed.join(", ")))
                }
                None => self.err(path, format!("field names must be strings, found {}", kind(k))),
            }
        }
        Some(map)
    }

    /// A string field; integers are refused with a hint, since account ids lose leading
    /// zeros when YAML reads them as numbers.
    pub(super) fn string(&mut self, map: &Mapping, path: &str, field: &str, required: bool) -> Option<String> {
        let at = join(path, field);
        match map.get(field) {
            None | Some(Value::Null) if required => {
                self.err(at, "is required");
                None
            }
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => {
                self.err(at, format!("expected a quoted string, found the number {n}; write \"{n}\""));
                None
            }
            Some(other) => {
                self.err(at, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn defaults(&mut self, value: &Value) -> Defaults {
        let mut d = Defaults::default();
        let Some(map) = self.mapping(value, "defaults", &DEFAULTS_FIELDS) else {
            return d;
        };
        for (field, out) in [
            ("requireServiceLinkedRoleSuffix", &mut d.require_suffix),
            ("prune", &mut d.prune),
            ("allowMassPrune", &mut d.allow_mass_prune),
            ("reencryptCleanup", &mut d.reencrypt_cleanup),
        ] {
            match map.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => *out = *b,
                Some(other) => {
                    self.err(format!("defaults.{field}"), format!("expected true or false, found {}", kind(other)))
                }
            }
        }
        d.region = self.string(map, "defaults", "region", false);
        if let Some(r) = &d.region {
            if !is_region(r) {
                self.err("defaults.region", format!("{r:?} is not a region name"));
            }
        }
        if let Some(text) = self.string(map, "defaults", "selectorSyncInterval", false) {
            match super::duration::parse_duration(&text) {
                Ok(t) if t >= std::time::Duration::from_secs(1) => d.selector_sync = Some(t),
                Ok(_) => self.err("defaults.selectorSyncInterval", "must be at least 1s"),
                Err(e) => self.err("defaults.selectorSyncInterval", e),
            }
        }
        d.create_grant_rate = self.create_grant_rate(map);
        d.suffix = self.string(map, "defaults", "serviceLinkedRoleSuffix", false).map(Arc::from);
        if let Some(s) = &d.suffix {
            if let Err(e) = check_slr_suffix(s) {
                self.err("defaults.serviceLinkedRoleSuffix", e);
            }
        }
        d
    }

    /// `defaults.kmsCreateGrantRate`: a whole number of calls per second within KMS's
    /// quota (50 per account and Region, shared with AWS's own grants).
    fn create_grant_rate(&mut self, map: &Mapping) -> Option<u32> {
        let at = "defaults.kmsCreateGrantRate";
        match map.get("kmsCreateGrantRate") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(r @ 1..=50) => Some(r as u32),
                _ => {
                    self.err(at, format!("{n} is not a whole number from 1 to 50 (KMS allows CreateGrant at 50/s per account and Region, AWS's own grants included)"));
                    None
                }
            },
            Some(other) => {
                self.err(at, format!("expected a number of calls per second, found {}", kind(other)));
                None
            }
        }
    }

    /// One entry of `accounts`, added to `out` when valid.
    pub(super) fn account(&mut self, i: usize, item: &Value, out: &mut BTreeMap<AccountId, String>) {
        let path = format!("accounts[{i}]");
        let Some(map) = self.mapping(item, &path, &ACCOUNT_FIELDS) else { return };
        let id = self.string(map, &path, "id", true).and_then(|s| self.account_id(&s, &join(&path, "id")));
        let role = self.string(map, &path, "roleArn", true);
        // The role is checked even when the id is wrong, so that every error is reported.
        if let Some(Err(e)) = role.as_deref().map(|r| check_role_arn(r, id.as_ref())) {
            return self.err(join(&path, "roleArn"), e);
        }
        let (Some(id), Some(role)) = (id, role) else { return };
        match out.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.err(join(&path, "id"), format!("account {id} is listed twice"))
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(role);
            }
        }
    }

    pub(super) fn account_id(&mut self, s: &str, at: &str) -> Option<AccountId> {
        let id = AccountId::parse(s);
        if id.is_none() {
            self.err(at, format!("{s:?} is not an account id of exactly 12 digits"));
        }
        id
    }

    /// One entry of `bindings`, as a binding per key (`key`, or each of `keys`).
    pub(super) fn binding(&mut self, value: &Value, path: &str, defaults: &Defaults) -> Option<Vec<Binding>> {
        let map = self.mapping(value, path, &BINDING_FIELDS)?;
        let before = self.errors.len();
        let asg = self.string(map, path, "asg", true);
        if let Some(a) = &asg {
            if a.is_empty() || a.chars().count() > 255 || a.chars().any(|c| c.is_control()) {
                self.err(join(path, "asg"), "must be an Auto Scaling group name of 1 to 255 characters");
            }
        }
        let account = self.string(map, path, "account", true).and_then(|s| self.account_id(&s, &join(path, "account")));
        let region_field = self.string(map, path, "region", false);
        if let Some(r) = &region_field {
            if !is_region(r) {
                self.err(join(path, "region"), format!("{r:?} is not a region name"));
            }
        }
        let keys = self.keys_of(map, path);
        let suffix = self.suffix(map, path, defaults);
        // Region: the binding's own, else the default, else the (first) key's.
        let region = region_field.or_else(|| defaults.region.clone());
        let region = region.or_else(|| keys.first().map(|(_, k)| k.region().to_owned()));
        for (at, key) in &keys {
            if let Some(region) = region.as_deref().filter(|r| *r != key.region()) {
                self.err(
                    at.clone(),
                    format!("key is in region {}, but the binding's region is {region}", key.region()),
                );
            }
        }
        let reencrypt = self.strategy(map, path, account.as_ref(), region.as_deref(), &keys);
        let reencrypt_parameter = self.reencrypt_parameter(map, path, reencrypt.is_some());
        if self.errors.len() != before {
            return None;
        }
        let asg = AsgRef::new(account?, region?, asg?);
        let binding = |key, reencrypt_from: Option<Arc<[KeyArn]>>| Binding {
            asg: asg.clone(),
            key,
            slr_suffix: suffix.clone(),
            reencrypt_parameter: reencrypt_parameter.clone().filter(|_: &Arc<str>| reencrypt_from.is_some()),
            reencrypt_from,
            origin: Default::default(),
        };
        let Some(with) = reencrypt else {
            return Some(keys.into_iter().map(|(_, key)| binding(key, None)).collect());
        };
        // Another account's keys are replaced by `with`; the group's own keys stay bound
        // as they are, and `with`, if listed too, is the one binding.
        let (foreign, own): (Vec<KeyArn>, Vec<KeyArn>) =
            keys.into_iter().map(|(_, k)| k).partition(|k| k.account() != &asg.account);
        let mut bindings: Vec<Binding> = own.into_iter().filter(|k| *k != with).map(|k| binding(k, None)).collect();
        bindings.push(binding(with, Some(Arc::from(foreign))));
        Some(bindings)
    }

    /// `serviceLinkedRoleSuffix`: the binding's own, else the default; required when the
    /// defaults say so.
    pub(super) fn suffix(&mut self, map: &Mapping, path: &str, defaults: &Defaults) -> Option<Arc<str>> {
        let suffix = match self.string(map, path, "serviceLinkedRoleSuffix", false) {
            Some(s) => {
                if let Err(e) = check_slr_suffix(&s) {
                    self.err(join(path, "serviceLinkedRoleSuffix"), e);
                }
                Some(Arc::from(s))
            }
            None => defaults.suffix.clone(),
        };
        if suffix.is_none() && defaults.require_suffix {
            self.err(
            join(path, "serviceLinkedRoleSuffix"),
            "is required (defaults.requireServiceLinkedRoleSuffix is true): the group would use the default service-linked role",
        );
        }
        suffix
    }

    /// `reencryptParameter`: the Systems Manager parameter a re-encrypted group's copy is
    /// published to, for groups whose image comes from a parameter. A name of the
    /// parameter hierarchy (SSM API Reference, PutParameter, Name: up to 1011 characters of
    /// `a-zA-Z0-9_.-/`, not beginning with `aws` or `ssm`), here starting with `/`, so that
    /// its ARN is `…:parameter/NAME-WITHOUT-THE-SLASH`.
    pub(super) fn reencrypt_parameter(&mut self, map: &Mapping, path: &str, reencrypt: bool) -> Option<Arc<str>> {
        let name = self.string(map, path, "reencryptParameter", false)?;
        let at = join(path, "reencryptParameter");
        if !reencrypt {
            self.err(at, "applies only with `strategy: reencrypt`");
            return None;
        }
        let valid = name.len() <= 1011
            && name.starts_with('/')
            && name.len() > 1
            && !name.ends_with('/')
            && !name.contains("//")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        let head = name.trim_start_matches('/').to_ascii_lowercase();
        if !valid || head.starts_with("aws") || head.starts_with("ssm") {
            self.err(
                at,
                format!("{name:?} is not a parameter name: `/` and then up to 1010 characters of a-z, A-Z, 0-9, `_.-/`, not beginning with `aws` or `ssm`"),
            );
            return None;
        }
        Some(Arc::from(name))
    }

    /// `strategy` and `reencryptWith`: the key to re-encrypt with, for `strategy:
    /// reencrypt`. It must be in the group's account and region, and at least one of the
    /// entry's keys must be another account's (that is what is re-encrypted).
    pub(super) fn strategy(
        &mut self,
        map: &Mapping,
        path: &str,
        account: Option<&AccountId>,
        region: Option<&str>,
        keys: &[(String, KeyArn)],
    ) -> Option<KeyArn> {
        let strategy = self.string(map, path, "strategy", false);
        let with = self.string(map, path, "reencryptWith", false);
        let at = join(path, "reencryptWith");
        match strategy.as_deref() {
            None | Some("grant") => {
                if with.is_some() {
                    self.err(at, "applies only with `strategy: reencrypt`");
                }
                return None;
            }
            Some("reencrypt") => {}
            Some(other) => {
                self.err(
                    join(path, "strategy"),
                    format!("{other:?} is not a strategy; use `grant` (the default) or `reencrypt`"),
                );
                return None;
            }
        }
        let Some(text) = with else {
            self.err(
                at,
                "is required with `strategy: reencrypt`: the key in the group's account to re-encrypt its images with",
            );
            return None;
        };
        let key = self.key(text, &at)?;
        if let Some(account) = account.filter(|a| *a != key.account()) {
            self.err(&at, format!("key is in account {}, but the group is in account {account}; re-encryption is with a key of the group's own account", key.account()));
        }
        if let Some(region) = region.filter(|r| *r != key.region()) {
            self.err(&at, format!("key is in region {}, but the binding's region is {region}", key.region()));
        }
        if let Some(account) = account.filter(|a| keys.iter().all(|(_, k)| k.account() == *a)) {
            self.err(
                join(path, "strategy"),
                format!("`reencrypt` replaces keys of other accounts, and every key of this binding is in the group's account {account}"),
            );
        }
        Some(key)
    }

    /// The keys of a binding entry, each with its field path: exactly one of `key` (one
    /// ARN) and `keys` (a list of them, for a group that needs several).
    pub(super) fn keys_of(&mut self, map: &Mapping, path: &str) -> Vec<(String, KeyArn)> {
        if let Some(Value::Sequence(_)) = map.get("key") {
            self.err(join(path, "key"), "expected one key ARN, found a list; use `keys` to list several");
            return Vec::new();
        }
        let one = self.string(map, path, "key", false);
        let at = join(path, "keys");
        let many = match map.get("keys") {
            None | Some(Value::Null) => None,
            Some(Value::Sequence(items)) => Some(items),
            Some(other) => {
                self.err(at, format!("expected a list of key ARNs, found {}", kind(other)));
                return Vec::new();
            }
        };
        let texts: Vec<(String, String)> = match (one, many) {
            (Some(_), Some(_)) => {
                self.err(path, "has both `key` and `keys`; use `keys` to list several");
                return Vec::new();
            }
            (None, None) => {
                self.err(join(path, "key"), "is required (or `keys`, a list, for a group that needs several keys)");
                return Vec::new();
            }
            (Some(k), None) => vec![(join(path, "key"), k)],
            (None, Some(items)) if items.is_empty() => {
                self.err(at, "must list at least one key ARN");
                return Vec::new();
            }
            (None, Some(items)) => {
                let mut out = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let here = format!("{at}[{j}]");
                    match item {
                        Value::String(k) => out.push((here, k.clone())),
                        other => self.err(here, format!("expected a key ARN, found {}", kind(other))),
                    }
                }
                out
            }
        };
        let mut keys: Vec<(String, KeyArn)> = Vec::new();
        for (here, text) in texts {
            let Some(key) = self.key(text, &here) else { continue };
            if keys.iter().any(|(_, k)| *k == key) {
                self.err(here, format!("{key} is listed twice"));
            } else {
                keys.push((here, key));
            }
        }
        keys
    }

    /// A key ARN at field path `at`, shared with every binding that names the same text.
    pub(super) fn key(&mut self, text: String, at: &str) -> Option<KeyArn> {
        if let Some(k) = self.keys.get(&text) {
            return Some(k.clone());
        }
        match KeyArn::parse(&text) {
            Ok(k) => {
                self.keys.insert(text, k.clone());
                Some(k)
            }
            Err(e) => {
                self.err(at, e);
                None
            }
        }
    }
}

/// A role ARN to assume in `account`: `arn:<partition>:iam::<account>:role/<path/name>`.
/// Without a valid `account` (the entry's id is wrong, and reported), only its shape.
pub(super) fn check_role_arn(arn: &str, account: Option<&AccountId>) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "iam" || !parts[3].is_empty() {
        return Err("must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)".into());
    }
    if let Some(account) = account.filter(|a| parts[4] != a.as_str()) {
        return Err(format!("role is in account {}, but the entry's id is {account}", parts[4]));
    }
    match parts[5].strip_prefix("role/") {
        Some(name) if !name.is_empty() => Ok(()),
        _ => Err("must name a role (…:role/<name>)".into()),
    }
}

pub(super) fn join(path: &str, field: &str) -> String {
    if path == "file" {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(super) fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| kind(v).to_owned())
}
