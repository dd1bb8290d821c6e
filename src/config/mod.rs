//! The desired-state file: parsing and validation.
//!
//! The YAML is first read into a generic value (syntax errors carry line and column), then
//! walked field by field so that every problem is reported at once, each named by its
//! field path (`bindings[1].key`). Serde's derive stops at the first error, which is why
//! the walk is written out here.

pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_norway::{Mapping, Value};

use crate::model::{check_slr_suffix, is_region, AccountId, AsgRef, KeyArn};

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

/// A validated binding: one ASG that must be able to use one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub asg: AsgRef,
    pub key: KeyArn,
    pub slr_suffix: Option<Arc<str>>,
}

impl Binding {
    /// Case 2 of the procedure: the key lives in another account than the ASG.
    pub fn is_cross_account(&self) -> bool {
        self.key.account() != &self.asg.account
    }

    pub fn slr(&self) -> crate::model::Slr {
        crate::model::Slr {
            account: self.asg.account,
            partition: self.key.partition(),
            suffix: self.slr_suffix.clone(),
        }
    }
}

/// The validated desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Accounts other than our own, with the role to assume in each.
    pub accounts: BTreeMap<AccountId, String>,
    pub bindings: Vec<Binding>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Desired, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors {
            source_name: name,
            errors: vec![ConfigError { location: "file".into(), message: format!("cannot read: {e}") }],
        }),
    }
}

/// Parses and validates config text. `source_name` names the text in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Desired, ConfigErrors> {
    let fail = |errors| ConfigErrors { source_name: source_name.to_owned(), errors };
    let value: Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let location = match e.location() {
                Some(l) => format!("line {}, column {}", l.line(), l.column()),
                None => "yaml".into(),
            };
            return Err(fail(vec![ConfigError { location, message: strip_location(&e.to_string()) }]));
        }
    };
    let mut v = Validator::default();
    let desired = v.document(&value);
    if v.errors.is_empty() {
        Ok(desired)
    } else {
        Err(fail(v.errors))
    }
}

/// serde_norway puts " at line L column C" in its messages; the location is reported
/// separately, so drop it from the message.
fn strip_location(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else { return msg.to_owned() };
    let rest = &msg[i + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &msg[..i])
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// Keys parsed so far: bindings that name the same key share one `KeyArn`.
    keys: BTreeMap<String, KeyArn>,
}

/// Default values read from the `defaults` section.
#[derive(Default)]
struct Defaults {
    region: Option<String>,
    suffix: Option<Arc<str>>,
}

impl Validator {
    fn err(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { location: location.into(), message: message.into() });
    }

    /// Returns the mapping at `path`, reporting unknown keys; None (and an error) when the
    /// value is not a mapping.
    fn mapping<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Mapping> {
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
    fn string(&mut self, map: &Mapping, path: &str, field: &str, required: bool) -> Option<String> {
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

    fn document(&mut self, value: &Value) -> Desired {
        let mut desired = Desired::default();
        if matches!(value, Value::Null) {
            self.err("file", "is empty; expected at least `version: 1` and `bindings`");
            return desired;
        }
        let Some(top) = self.mapping(value, "file", &["version", "defaults", "accounts", "bindings"]) else {
            return desired;
        };
        match top.get("version") {
            None => self.err("version", "is required and must be 1"),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(other) => {
                self.err("version", format!("unsupported version {}; this operator reads version 1", show(other)))
            }
        }
        let defaults = match top.get("defaults") {
            None | Some(Value::Null) => Defaults::default(),
            Some(v) => self.defaults(v),
        };
        if let Some(v) = top.get("accounts").filter(|v| !v.is_null()) {
            desired.accounts = self.accounts(v);
        }
        match top.get("bindings") {
            None | Some(Value::Null) => self.err("bindings", "is required"),
            Some(Value::Sequence(items)) => {
                let mut seen: BTreeMap<AsgRef, usize> = BTreeMap::new();
                for (i, item) in items.iter().enumerate() {
                    let path = format!("bindings[{i}]");
                    if let Some(b) = self.binding(item, &path, &defaults) {
                        if let Some(first) = seen.get(&b.asg) {
                            self.err(path, format!("duplicate of bindings[{first}]: ASG {} is already bound", b.asg));
                        } else {
                            seen.insert(b.asg.clone(), i);
                            desired.bindings.push(b);
                        }
                    }
                }
            }
            Some(other) => self.err("bindings", format!("expected a list, found {}", kind(other))),
        }
        desired
    }

    fn defaults(&mut self, value: &Value) -> Defaults {
        let mut d = Defaults::default();
        let Some(map) = self.mapping(value, "defaults", &["region", "serviceLinkedRoleSuffix"]) else {
            return d;
        };
        d.region = self.string(map, "defaults", "region", false);
        if let Some(r) = &d.region {
            if !is_region(r) {
                self.err("defaults.region", format!("{r:?} is not a region name"));
            }
        }
        d.suffix = self.string(map, "defaults", "serviceLinkedRoleSuffix", false).map(Arc::from);
        if let Some(s) = &d.suffix {
            if let Err(e) = check_slr_suffix(s) {
                self.err("defaults.serviceLinkedRoleSuffix", e);
            }
        }
        d
    }

    fn accounts(&mut self, value: &Value) -> BTreeMap<AccountId, String> {
        let mut out = BTreeMap::new();
        let Value::Sequence(items) = value else {
            self.err("accounts", format!("expected a list, found {}", kind(value)));
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("accounts[{i}]");
            let Some(map) = self.mapping(item, &path, &["id", "roleArn"]) else { continue };
            let id = self.string(map, &path, "id", true).and_then(|s| self.account_id(&s, &join(&path, "id")));
            let role = self.string(map, &path, "roleArn", true);
            if let (Some(id), Some(role)) = (&id, &role) {
                if let Err(e) = check_role_arn(role, id) {
                    self.err(join(&path, "roleArn"), e);
                }
            }
            if let (Some(id), Some(role)) = (id, role) {
                match out.entry(id) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        let id = *e.key();
                        self.err(join(&path, "id"), format!("account {id} is listed twice"));
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(role);
                    }
                }
            }
        }
        out
    }

    fn account_id(&mut self, s: &str, at: &str) -> Option<AccountId> {
        let id = AccountId::parse(s);
        if id.is_none() {
            self.err(at, format!("{s:?} is not an account id of exactly 12 digits"));
        }
        id
    }

    fn binding(&mut self, value: &Value, path: &str, defaults: &Defaults) -> Option<Binding> {
        let map = self.mapping(value, path, &["asg", "account", "key", "region", "serviceLinkedRoleSuffix"])?;
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
        let key = self.string(map, path, "key", true).and_then(|s| self.key(s, path));
        let suffix = match self.string(map, path, "serviceLinkedRoleSuffix", false) {
            Some(s) => {
                if let Err(e) = check_slr_suffix(&s) {
                    self.err(join(path, "serviceLinkedRoleSuffix"), e);
                }
                Some(Arc::from(s))
            }
            None => defaults.suffix.clone(),
        };
        // Region: the binding's own, else the default, else the key's.
        let region = region_field.or_else(|| defaults.region.clone());
        if let (Some(region), Some(key)) = (&region, &key) {
            if key.region() != region {
                self.err(
                    join(path, "key"),
                    format!("key is in region {}, but the binding's region is {region}", key.region()),
                );
            }
        }
        if self.errors.len() != before {
            return None;
        }
        let (asg, account, key) = (asg?, account?, key?);
        let region = region.unwrap_or_else(|| key.region().to_owned());
        Some(Binding { asg: AsgRef::new(account, region, asg), key, slr_suffix: suffix })
    }

    fn key(&mut self, text: String, path: &str) -> Option<KeyArn> {
        if let Some(k) = self.keys.get(&text) {
            return Some(k.clone());
        }
        match KeyArn::parse(&text) {
            Ok(k) => {
                self.keys.insert(text, k.clone());
                Some(k)
            }
            Err(e) => {
                self.err(join(path, "key"), e);
                None
            }
        }
    }
}

/// A role ARN to assume in `account`: `arn:<partition>:iam::<account>:role/<path/name>`.
fn check_role_arn(arn: &str, account: &AccountId) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "iam" || !parts[3].is_empty() {
        return Err("must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)".into());
    }
    if parts[4] != account.as_str() {
        return Err(format!("role is in account {}, but the entry's id is {account}", parts[4]));
    }
    match parts[5].strip_prefix("role/") {
        Some(name) if !name.is_empty() => Ok(()),
        _ => Err("must name a role (…:role/<name>)".into()),
    }
}

fn join(path: &str, field: &str) -> String {
    if path == "file" {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn kind(v: &Value) -> &'static str {
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

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| kind(v).to_owned())
}

/// Every account the desired state touches, for callers that need the set.
pub fn accounts_touched(desired: &Desired) -> BTreeSet<AccountId> {
    desired.bindings.iter().flat_map(|b| [b.asg.account, *b.key.account()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const KEY_B: &str = "arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn errors(text: &str) -> Vec<String> {
        parse(text, "test.yaml").unwrap_err().errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn full_example_parses_with_defaults_applied() {
        let d = parse(
            &format!(
                "version: 1\ndefaults:\n  region: us-west-2\n  serviceLinkedRoleSuffix: CMK\naccounts:\n  - id: \"444455556666\"\n    roleArn: arn:aws:iam::444455556666:role/key-admin\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    key: {KEY_A}\n  - asg: b\n    account: \"111122223333\"\n    key: {KEY_B}\n    serviceLinkedRoleSuffix: Other\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings.len(), 2);
        assert_eq!(d.bindings[0].asg.region, "us-west-2");
        assert_eq!(d.bindings[0].slr_suffix.as_deref(), Some("CMK"));
        assert_eq!(d.bindings[1].slr_suffix.as_deref(), Some("Other"));
        assert!(!d.bindings[0].is_cross_account());
        assert!(d.bindings[1].is_cross_account());
        assert_eq!(d.accounts.len(), 1);
    }

    #[test]
    fn region_falls_back_to_the_key_region() {
        let d =
            parse(&format!("version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n"), "t")
                .unwrap();
        assert_eq!(d.bindings[0].asg.region, "us-west-2");
    }

    #[test]
    fn every_error_is_collected_with_its_field_path() {
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - asg: a\n    account: \"1111\"\n    key: {KEY_A}\n  - asg: b\n    account: \"111122223333\"\n    key: arn:aws:kms:eu-west-1:111122223333:alias/x\n    colour: red\n  - account: 111122223333\n    key: {KEY_A}\n    region: eu-west-1\n"
        ));
        let joined = errs.join("\n");
        assert!(joined.contains("bindings[0].account: \"1111\" is not an account id"), "{joined}");
        assert!(joined.contains("bindings[1].key: aliases are not accepted"), "{joined}");
        assert!(joined.contains("bindings[1].colour: unknown field"), "{joined}");
        assert!(joined.contains("bindings[2].asg: is required"), "{joined}");
        assert!(joined.contains("bindings[2].account: expected a quoted string"), "{joined}");
        assert!(
            joined.contains("bindings[2].key: key is in region us-west-2, but the binding's region is eu-west-1"),
            "{joined}"
        );
        assert_eq!(errs.len(), 6, "{joined}");
    }

    #[test]
    fn duplicate_asg_in_same_account_and_region_is_rejected() {
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - {{asg: a, account: \"111122223333\", key: {KEY_B}}}\n"
        ));
        assert_eq!(errs, vec!["bindings[1]: duplicate of bindings[0]: ASG 111122223333/us-west-2/a is already bound"]);
    }

    #[test]
    fn same_asg_name_in_other_account_is_not_a_duplicate() {
        let d = parse(
            &format!("version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - {{asg: a, account: \"444455556666\", key: {KEY_B}}}\n"),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings.len(), 2);
    }

    #[test]
    fn version_other_than_one_is_rejected() {
        assert_eq!(
            errors("version: 2\nbindings: []\n"),
            vec!["version: unsupported version 2; this operator reads version 1"]
        );
        assert_eq!(errors("bindings: []\n"), vec!["version: is required and must be 1"]);
    }

    #[test]
    fn empty_file_is_rejected() {
        assert_eq!(errors(""), vec!["file: is empty; expected at least `version: 1` and `bindings`"]);
        assert_eq!(errors("# only a comment\n"), vec!["file: is empty; expected at least `version: 1` and `bindings`"]);
    }

    #[test]
    fn yaml_syntax_error_carries_line_and_column() {
        let errs = errors("version: 1\nbindings:\n  - asg: [unclosed\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("line "), "{}", errs[0]);
        assert_eq!(
            errs[0],
            "line 4, column 1: did not find expected ',' or ']', while parsing a flow sequence at line 3 column 10"
        );
    }

    #[test]
    fn bad_suffix_and_role_arn_are_located() {
        let errs = errors(&format!(
            "version: 1\ndefaults:\n  serviceLinkedRoleSuffix: \"bad suffix\"\naccounts:\n  - id: \"444455556666\"\n    roleArn: arn:aws:iam::999999999999:role/x\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}, serviceLinkedRoleSuffix: {}}}\n",
            "y".repeat(40)
        ));
        let joined = errs.join("\n");
        assert!(joined.contains("defaults.serviceLinkedRoleSuffix: character ' ' is not allowed"), "{joined}");
        assert!(joined.contains("accounts[0].roleArn: role is in account 999999999999"), "{joined}");
        assert!(joined.contains("bindings[0].serviceLinkedRoleSuffix: role name"), "{joined}");
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        assert_eq!(
            errors("version: 1\nbindings: []\nbindigns: []\n"),
            vec!["bindigns: unknown field; expected one of version, defaults, accounts, bindings"]
        );
    }
}
