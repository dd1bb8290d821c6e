//! The desired-state file: parsing and validation.
//!
//! One path: the file is streamed section by section, and every value is read as a small
//! generic value and walked field by field by one [`Validator`], so that every problem is
//! reported at once, each named by its field path (`bindings[1].key`), or, for YAML
//! syntax, by line and column. Serde's derive stops at the first error, which is why the
//! walk is written out here.
//!
//! The list sections (`accounts`, `bindings`) are streamed through one [`List`] seed:
//! each item is read as a small value and validated at once, so a config of ten thousand
//! bindings never exists as one value tree. A generic tree costs about 2 KB a binding,
//! many times the validated `Binding`.

pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_norway::{Mapping, Value};

use crate::model::{check_slr_suffix, is_known_region, is_region, AccountId, AsgRef, BindingId, Instance, KeyArn};

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

/// A validated binding: one ASG that must be able to use one key. A config entry with
/// `keys:` makes one per key, all with the same group and role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub asg: AsgRef,
    /// The key the group launches with once the binding is converged: for a binding with
    /// `strategy: reencrypt`, the `reencryptWith` key in the group's own account.
    pub key: KeyArn,
    pub slr_suffix: Option<Arc<str>>,
    /// `strategy: reencrypt`: the other accounts' keys the group's images (and mappings)
    /// use now, which the operator replaces with copies under `key` (procedure case 2,
    /// solution 1). None for the default strategy, a grant on each key.
    pub reencrypt_from: Option<Arc<[KeyArn]>>,
}

impl Binding {
    pub fn id(&self) -> BindingId {
        BindingId { asg: self.asg.clone(), key: self.key.clone() }
    }

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
    /// Which instance this is, and whether it prunes.
    pub operator: Operator,
}

/// Settings of the operator itself, from the config (and the command line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operator {
    /// `instance`: whose statements and grants these are.
    pub instance: Instance,
    /// `defaults.prune` (or `--prune`): remove what this instance wrote that no current
    /// binding explains.
    pub prune: bool,
    /// `defaults.allowMassPrune` (or `--allow-mass-prune`): prune even when the guard
    /// would hold it (more than half of the bindings removed at once, or all of them).
    pub allow_mass_prune: bool,
    /// How many bindings the whole config has. A pass over part of it (one unit of work)
    /// weighs a prune against all of them, not against its part.
    pub config_bindings: usize,
    /// Set by the daemon when the config edit that led here removes more than half of the
    /// bindings (see [`crate::plan::edit_prune_hold`]): why nothing is pruned until that is
    /// confirmed. It stands until an edit brings the removals back under half.
    pub prune_held: Option<String>,
    /// Keys no binding names any more, which the daemon saw leave the config while
    /// pruning: read, with pruning on, to prune what this instance wrote there, until
    /// nothing of it is left. Only the daemon sees an edit, so only it fills this.
    pub departed: std::collections::BTreeSet<KeyArn>,
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

pub fn default_role_warning(asg: &crate::model::AsgRef) -> String {
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

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Desired, ConfigErrors> {
    load_with_text(path).map(|(desired, _)| desired)
}

/// Reads the file once, and returns what that text parses to, with the text: a caller
/// that watches the file compares later reads with exactly what it parsed.
pub fn load_with_text(path: &Path) -> Result<(Desired, String), ConfigErrors> {
    let name = path.display().to_string();
    match read_text(path) {
        Ok(text) => parse(&text, &name).map(|d| (d, text)),
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::FileTooLarge => e.to_string(),
                _ => format!("cannot read: {e}"),
            };
            Err(ConfigErrors { source_name: name, errors: vec![ConfigError { location: "file".into(), message }] })
        }
    }
}

/// The most a config file may hold. Ten thousand bindings, each with a suffix, take about 1.6 MB.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a config file of at most [`MAX_FILE_BYTES`]: a larger one is refused (error kind
/// `FileTooLarge`) from its size before it is read, and a file that grows past the cap
/// while being read (or a device with no size) is cut off there and refused too.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("is larger than {} MiB, the most a config file may hold", MAX_FILE_BYTES >> 20),
        )
    };
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// Parses and validates config text. `source_name` names the text in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Desired, ConfigErrors> {
    let fail = |errors| ConfigErrors { source_name: source_name.to_owned(), errors };
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

/// What a value turned out to be when it was read as a mapping or a list.
enum Shape<T> {
    Expected(T),
    Null,
    Other(&'static str),
}

/// Visitor methods for every shape other than the expected one. Each consumes the value
/// and names its kind, in the words of [`kind`].
macro_rules! other_shapes {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Shape::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Shape::Null)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Shape::Other("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Shape::Other("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Shape::Other("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Shape::Other("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Shape::Other("a string"))
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
            variant.newtype_variant::<IgnoredAny>()?;
            Ok(Shape::Other("a tagged value"))
        }
    };
}

/// Reads the whole file: the top-level mapping, its sections, and the bindings streamed.
struct Document<'a> {
    v: &'a mut Validator,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = Desired;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Desired, D::Error> {
        let v = &mut *self.v;
        match deserializer.deserialize_any(DocumentVisitor { v: &mut *v })? {
            Shape::Expected(d) => Ok(d),
            Shape::Null => {
                v.err("file", "is empty; expected at least `version: 1` and `bindings`");
                Ok(Desired::default())
            }
            Shape::Other(k) => {
                v.err("file", format!("expected a mapping, found {k}"));
                Ok(Desired::default())
            }
        }
    }
}

// The fields of each section; config/schema.json must list the same (a test checks it).
const TOP_LEVEL: [&str; 5] = ["version", "instance", "defaults", "accounts", "bindings"];
const DEFAULTS_FIELDS: [&str; 5] =
    ["region", "serviceLinkedRoleSuffix", "requireServiceLinkedRoleSuffix", "prune", "allowMassPrune"];
const ACCOUNT_FIELDS: [&str; 2] = ["id", "roleArn"];
const BINDING_FIELDS: [&str; 8] =
    ["asg", "account", "key", "keys", "region", "serviceLinkedRoleSuffix", "strategy", "reencryptWith"];

struct DocumentVisitor<'a> {
    v: &'a mut Validator,
}

impl<'de> Visitor<'de> for DocumentVisitor<'_> {
    type Value = Shape<Desired>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    other_shapes!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let v = self.v;
        let mut desired = Desired::default();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut version: Option<Value> = None;
        let mut defaults: Option<Defaults> = None;
        let mut bindings = Bindings::default();
        let mut bindings_shape: Option<Shape<()>> = None;
        while let Some(key) = map.next_key::<Value>()? {
            let Some(name) = key.as_str() else {
                v.err("file", format!("field names must be strings, found {}", kind(&key)));
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if !seen.insert(name.to_owned()) {
                return Err(de::Error::custom(format!("duplicate entry with key \"{name}\"")));
            }
            match name {
                "version" => version = Some(map.next_value()?),
                "instance" => {
                    let value: Value = map.next_value()?;
                    match value {
                        Value::Null => {}
                        Value::String(s) => match Instance::parse(&s) {
                            Ok(i) => desired.operator.instance = i,
                            Err(e) => v.err("instance", e),
                        },
                        other => v.err("instance", format!("expected a string, found {}", kind(&other))),
                    }
                }
                "defaults" => {
                    let value: Value = map.next_value()?;
                    defaults = Some(if value.is_null() { Defaults::default() } else { v.defaults(&value) });
                }
                "accounts" => {
                    let accounts = &mut desired.accounts;
                    match map.next_value_seed(List(|i, item: Value| v.account(i, &item, accounts)))? {
                        Shape::Expected(()) | Shape::Null => {}
                        Shape::Other(k) => v.err("accounts", format!("expected a list, found {k}")),
                    }
                }
                "bindings" => {
                    let (defaults, bindings) = (defaults.as_ref(), &mut bindings);
                    let each = |i, item: Value| match defaults {
                        Some(d) => bindings.add(v, i, &item, d),
                        None => bindings.pending.push((i, item)),
                    };
                    bindings_shape = Some(map.next_value_seed(List(each))?);
                }
                other => {
                    v.err(other, format!("unknown field; expected one of {}", TOP_LEVEL.join(", ")));
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match &version {
            None => v.err("version", "is required and must be 1"),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(other) => {
                v.err("version", format!("unsupported version {}; this operator reads version 1", show(other)))
            }
        }
        let (prune, allow_mass_prune) = defaults.as_ref().map_or((false, false), |d| (d.prune, d.allow_mass_prune));
        match bindings_shape {
            None | Some(Shape::Null) => v.err("bindings", "is required"),
            Some(Shape::Other(k)) => v.err("bindings", format!("expected a list, found {k}")),
            Some(Shape::Expected(())) => {
                // Bindings read before `defaults` wait for it.
                let defaults = defaults.unwrap_or_default();
                for (i, item) in std::mem::take(&mut bindings.pending) {
                    bindings.add(v, i, &item, &defaults);
                }
            }
        }
        desired.bindings = bindings.list;
        desired.operator.prune = prune;
        desired.operator.allow_mass_prune = allow_mass_prune;
        desired.operator.config_bindings = desired.bindings.len();
        Ok(Shape::Expected(desired))
    }
}

/// The bindings validated so far.
#[derive(Default)]
struct Bindings {
    list: Vec<Binding>,
    /// Where each ASG was first bound.
    first: BTreeMap<AsgRef, usize>,
    /// Bindings that came before `defaults` in the file, by index.
    pending: Vec<(usize, Value)>,
}

impl Bindings {
    /// One entry of `bindings`: a binding per key it lists. A group is bound in one entry
    /// only, so that all its keys share one service-linked role.
    fn add(&mut self, v: &mut Validator, i: usize, item: &Value, defaults: &Defaults) {
        let path = format!("bindings[{i}]");
        let Some(bindings) = v.binding(item, &path, defaults) else { return };
        let Some(asg) = bindings.first().map(|b| b.asg.clone()) else { return };
        if let Some(first) = self.first.get(&asg) {
            let hint = "list all of its keys under `keys` in one binding";
            v.err(path, format!("duplicate of bindings[{first}]: ASG {asg} is already bound; {hint}"));
        } else {
            self.first.insert(asg, i);
            self.list.extend(bindings);
        }
    }
}

/// Streams a list: each item is read as a small value and handed, with its index, to the
/// function; anything but a list is reported by its kind.
struct List<F>(F);

impl<'de, F: FnMut(usize, Value)> DeserializeSeed<'de> for List<F> {
    type Value = Shape<()>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape<()>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(usize, Value)> Visitor<'de> for List<F> {
    type Value = Shape<()>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    other_shapes!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shape::Other("a mapping"))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            (self.0)(i, item);
            i += 1;
        }
        Ok(Shape::Expected(()))
    }
}

/// Where a duplicate key is: the YAML parser reports the line and column of the mapping
/// that holds it. In a block mapping every key starts at the mapping's column, so the
/// second line that starts with the key there, before the mapping ends (a line indented
/// less), is the duplicate. None for anything else, a flow mapping (`{a: 1, a: 2}`) say.
fn duplicate_key_at(text: &str, message: &str, line: usize, column: usize) -> Option<(usize, usize)> {
    let start = message.find("duplicate entry with key \"")? + "duplicate entry with key \"".len();
    let name = &message[start..start + message[start..].find('"')?];
    let forms = [format!("{name}:"), format!("\"{name}\":"), format!("'{name}':")];
    let mut seen = 0;
    for (n, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let here = n + 1;
        let indent = l.len() - l.trim_start().len();
        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
        if here > line && !blank && indent + 1 < column {
            break;
        }
        let at = l.get(column - 1..).unwrap_or("");
        if forms.iter().any(|f| at.starts_with(f.as_str())) {
            seen += 1;
            if seen == 2 {
                return Some((here, column));
            }
        }
    }
    None
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
    /// `requireServiceLinkedRoleSuffix`: a binding without a suffix is an error, not a
    /// warning.
    require_suffix: bool,
    /// `prune`: offboard what no binding explains any more.
    prune: bool,
    /// `allowMassPrune`: confirm a prune the guard would hold.
    allow_mass_prune: bool,
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

    fn defaults(&mut self, value: &Value) -> Defaults {
        let mut d = Defaults::default();
        let Some(map) = self.mapping(value, "defaults", &DEFAULTS_FIELDS) else {
            return d;
        };
        for (field, out) in [
            ("requireServiceLinkedRoleSuffix", &mut d.require_suffix),
            ("prune", &mut d.prune),
            ("allowMassPrune", &mut d.allow_mass_prune),
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
        d.suffix = self.string(map, "defaults", "serviceLinkedRoleSuffix", false).map(Arc::from);
        if let Some(s) = &d.suffix {
            if let Err(e) = check_slr_suffix(s) {
                self.err("defaults.serviceLinkedRoleSuffix", e);
            }
        }
        d
    }

    /// One entry of `accounts`, added to `out` when valid.
    fn account(&mut self, i: usize, item: &Value, out: &mut BTreeMap<AccountId, String>) {
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

    fn account_id(&mut self, s: &str, at: &str) -> Option<AccountId> {
        let id = AccountId::parse(s);
        if id.is_none() {
            self.err(at, format!("{s:?} is not an account id of exactly 12 digits"));
        }
        id
    }

    /// One entry of `bindings`, as a binding per key (`key`, or each of `keys`).
    fn binding(&mut self, value: &Value, path: &str, defaults: &Defaults) -> Option<Vec<Binding>> {
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
        if self.errors.len() != before {
            return None;
        }
        let asg = AsgRef::new(account?, region?, asg?);
        let binding =
            |key, reencrypt_from| Binding { asg: asg.clone(), key, slr_suffix: suffix.clone(), reencrypt_from };
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

    /// `strategy` and `reencryptWith`: the key to re-encrypt with, for `strategy:
    /// reencrypt`. It must be in the group's account and region, and at least one of the
    /// entry's keys must be another account's (that is what is re-encrypted).
    fn strategy(
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
    fn keys_of(&mut self, map: &Mapping, path: &str) -> Vec<(String, KeyArn)> {
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
    fn key(&mut self, text: String, at: &str) -> Option<KeyArn> {
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
fn check_role_arn(arn: &str, account: Option<&AccountId>) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const KEY_B: &str = "arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn errors(text: &str) -> Vec<String> {
        parse(text, "test.yaml").unwrap_err().errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn an_unknown_region_is_warned_about_naming_its_groups() {
        let key = "arn:aws:kms:us-wset-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let text = format!(
            "version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    key: {key}\n  - asg: b\n    account: \"111122223333\"\n    key: {key}\n  - asg: c\n    account: \"111122223333\"\n    key: {KEY_A}\n"
        );
        let w = unknown_region_warnings(&parse(&text, "t").unwrap());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("region \"us-wset-2\" (ASG a, b) is not a region the AWS SDK knows"), "{w:?}");
        let known = format!("version: 1\nbindings:\n  - asg: c\n    account: \"111122223333\"\n    key: {KEY_A}\n");
        assert!(unknown_region_warnings(&parse(&known, "t").unwrap()).is_empty());
    }

    #[test]
    fn an_accounts_entry_reports_every_error() {
        let e = errors(&format!(
            "version: 1\naccounts:\n  - id: 444455556666\n    roleArn: nope\n  - id: \"444455556666\"\n    roleArn: arn:aws:iam::111122223333:role/x\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n"
        ));
        assert_eq!(
            e,
            [
                "accounts[0].id: expected a quoted string, found the number 444455556666; write \"444455556666\"",
                "accounts[0].roleArn: must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                "accounts[1].roleArn: role is in account 111122223333, but the entry's id is 444455556666",
            ]
        );
    }

    #[test]
    fn a_duplicate_key_is_located_at_its_own_line() {
        let binding = format!("  - asg: a\n    account: \"111122223333\"\n    key: {KEY_A}\n");
        // At the top level, in a list item, in a nested mapping, after a blank and a
        // comment line, and quoted.
        for (text, want) in [
            (format!("version: 1\nbindings:\n{binding}version: 1\n"), "line 6, column 1: duplicate entry with key \"version\""),
            (format!("version: 1\nbindings:\n{binding}    asg: b\n"), "line 6, column 5: bindings[0]: duplicate entry with key \"asg\""),
            (
                format!("version: 1\ndefaults:\n  region: us-west-2\n\n  # the other one\n  \"region\": us-east-1\nbindings:\n{binding}"),
                "line 6, column 3: defaults: duplicate entry with key \"region\"",
            ),
        ] {
            assert_eq!(errors(&text), [want], "{text}");
        }
        // A flow mapping keeps the parser's location.
        let flow = format!("version: 1\nbindings:\n  - {{asg: a, asg: b, account: \"111122223333\", key: {KEY_A}}}\n");
        assert_eq!(errors(&flow).len(), 1);
    }

    #[test]
    fn a_list_under_key_says_to_use_keys() {
        let e = errors(&format!(
            "version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    key: [{KEY_A}, {KEY_B}]\n"
        ));
        assert_eq!(e, ["bindings[0].key: expected one key ARN, found a list; use `keys` to list several"]);
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
            "version: 1\nbindings:\n  - asg: a\n    account: \"1111\"\n    key: {KEY_A}\n  - asg: b\n    account: \"111122223333\"\n    key: alias/x\n    colour: red\n  - account: 111122223333\n    key: {KEY_A}\n    region: eu-west-1\n"
        ));
        let joined = errs.join("\n");
        assert!(joined.contains("bindings[0].account: \"1111\" is not an account id"), "{joined}");
        assert!(joined.contains("bindings[1].key: must be a full KMS key ARN"), "{joined}");
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
    fn reencrypt_binds_the_group_to_its_own_key_and_remembers_the_keys_it_replaces() {
        let d = parse(
            &format!("version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    strategy: reencrypt\n    reencryptWith: {KEY_A}\n    keys: [{KEY_A}, {KEY_B}]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings.len(), 1, "the own key, listed too, is the one binding");
        assert_eq!(d.bindings[0].key.as_str(), KEY_A);
        let from: Vec<&str> = d.bindings[0].reencrypt_from.as_deref().unwrap().iter().map(KeyArn::as_str).collect();
        assert_eq!(from, [KEY_B]);
    }

    #[test]
    fn reencrypt_needs_an_own_key_and_a_key_of_another_account() {
        let entry = |extra: &str, key: &str| {
            errors(&format!(
                "version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    key: {key}\n{extra}"
            ))
            .join("\n")
        };
        let e = entry("    strategy: reencrypt\n", KEY_B);
        assert!(e.contains("bindings[0].reencryptWith: is required with `strategy: reencrypt`"), "{e}");
        let e = entry(&format!("    strategy: reencrypt\n    reencryptWith: {KEY_B}\n"), KEY_B);
        assert!(
            e.contains(
                "bindings[0].reencryptWith: key is in account 444455556666, but the group is in account 111122223333"
            ),
            "{e}"
        );
        let e = entry(&format!("    strategy: reencrypt\n    reencryptWith: {KEY_A}\n"), KEY_A);
        assert!(e.contains("bindings[0].strategy: `reencrypt` replaces keys of other accounts"), "{e}");
        let e = entry(&format!("    reencryptWith: {KEY_A}\n"), KEY_B);
        assert!(e.contains("bindings[0].reencryptWith: applies only with `strategy: reencrypt`"), "{e}");
        let e = entry("    strategy: copy\n", KEY_B);
        assert!(e.contains("bindings[0].strategy: \"copy\" is not a strategy"), "{e}");
        let e = entry("    strategy: reencrypt\n    reencryptWith: alias/mine\n", KEY_B);
        assert!(e.contains("bindings[0].reencryptWith: must be a full KMS key ARN"), "{e}");
    }

    #[test]
    fn a_group_that_needs_several_keys_lists_them_under_keys() {
        let d = parse(
            &format!("version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    serviceLinkedRoleSuffix: CMK\n    keys:\n      - {KEY_A}\n      - {KEY_B}\n"),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings.len(), 2);
        assert_eq!(d.bindings[0].asg, d.bindings[1].asg);
        assert_eq!([d.bindings[0].key.as_str(), d.bindings[1].key.as_str()], [KEY_A, KEY_B]);
        assert!(d.bindings.iter().all(|b| b.slr_suffix.as_deref() == Some("CMK")));
        assert_ne!(d.bindings[0].id(), d.bindings[1].id());
    }

    #[test]
    fn keys_errors_are_located_in_the_list() {
        let other_region = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", keys: [{KEY_A}, 7, {KEY_A}, {other_region}]}}\n  - {{asg: b, account: \"111122223333\", key: {KEY_A}, keys: [{KEY_B}]}}\n  - {{asg: c, account: \"111122223333\", keys: []}}\n  - {{asg: d, account: \"111122223333\", keys: {KEY_A}}}\n  - {{asg: e, account: \"111122223333\"}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "bindings[0].keys[1]: expected a key ARN, found a number".to_owned(),
                format!("bindings[0].keys[2]: {KEY_A} is listed twice"),
                "bindings[0].keys[3]: key is in region eu-west-1, but the binding's region is us-west-2".to_owned(),
                "bindings[1]: has both `key` and `keys`; use `keys` to list several".to_owned(),
                "bindings[2].keys: must list at least one key ARN".to_owned(),
                "bindings[3].keys: expected a list of key ARNs, found a string".to_owned(),
                "bindings[4].key: is required (or `keys`, a list, for a group that needs several keys)".to_owned(),
            ]
        );
    }

    #[test]
    fn an_alias_arn_is_a_key() {
        let d = parse(
            "version: 1\nbindings:\n  - {asg: a, account: \"111122223333\", key: arn:aws:kms:us-west-2:111122223333:alias/ebs}\n",
            "t",
        )
        .unwrap();
        assert!(d.bindings[0].key.is_alias());
        assert_eq!(d.bindings[0].asg.region, "us-west-2");
    }

    #[test]
    fn duplicate_asg_in_same_account_and_region_is_rejected() {
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - {{asg: a, account: \"111122223333\", key: {KEY_B}}}\n"
        ));
        assert_eq!(errs, vec!["bindings[1]: duplicate of bindings[0]: ASG 111122223333/us-west-2/a is already bound; list all of its keys under `keys` in one binding"]);
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
    fn defaults_after_the_bindings_still_apply_to_them() {
        let d = parse(
            &format!("version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\ndefaults:\n  serviceLinkedRoleSuffix: Late\n"),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings[0].slr_suffix.as_deref(), Some("Late"));
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\ndefaults:\n  region: eu-west-1\n"
        ));
        assert_eq!(errs, vec!["bindings[0].key: key is in region us-west-2, but the binding's region is eu-west-1"]);
    }

    #[test]
    fn a_required_suffix_turns_the_default_role_warning_into_a_located_error() {
        let text = |require: &str| {
            format!(
                "version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", keys: [{KEY_A}, {KEY_B}]}}\n  - {{asg: b, account: \"111122223333\", key: {KEY_A}, serviceLinkedRoleSuffix: CMK}}\ndefaults:\n  requireServiceLinkedRoleSuffix: {require}\n"
            )
        };
        // Off: valid, and one warning for the group on the default role (not one per key).
        let d = parse(&text("false"), "t").unwrap();
        let warnings = default_role_warnings(&d);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("ASG 111122223333/us-west-2/a uses the default service-linked role"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].contains("anyone who can create an Auto Scaling group in the account can use the default one")
        );
        // On: the same binding is an error where the suffix belongs; b is fine.
        assert_eq!(
            errors(&text("true")),
            vec!["bindings[0].serviceLinkedRoleSuffix: is required (defaults.requireServiceLinkedRoleSuffix is true): the group would use the default service-linked role"]
        );
        assert_eq!(
            errors(&text("\"yes\"")),
            vec!["defaults.requireServiceLinkedRoleSuffix: expected true or false, found a string"]
        );
        let with_default = format!(
            "version: 1\ndefaults:\n  requireServiceLinkedRoleSuffix: true\n  serviceLinkedRoleSuffix: CMK\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n"
        );
        assert!(default_role_warnings(&parse(&with_default, "t").unwrap()).is_empty());
    }

    #[test]
    fn instance_and_prune_are_read_and_checked() {
        let binding = format!("bindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n");
        let d = parse(&format!("version: 1\n{binding}"), "t").unwrap();
        assert_eq!(d.operator.instance.as_str(), "default");
        assert!(!d.operator.prune && !d.operator.allow_mass_prune);
        assert_eq!(d.operator.config_bindings, 1);
        let d = parse(
            &format!("version: 1\ninstance: team-b\ndefaults:\n  prune: true\n  allowMassPrune: true\n{binding}"),
            "t",
        )
        .unwrap();
        assert_eq!(d.operator.instance.as_str(), "team-b");
        assert!(d.operator.prune && d.operator.allow_mass_prune);
        for bad in ["Team", "-a", "a_b", "a:b", ""] {
            let e = parse(&format!("version: 1\ninstance: \"{bad}\"\n{binding}"), "t").unwrap_err();
            assert_eq!(e.errors[0].location, "instance", "{bad}: {:?}", e.errors);
        }
        let e = parse(&format!("version: 1\ndefaults:\n  prune: yes please\n{binding}"), "t").unwrap_err();
        assert_eq!(e.errors[0].message, "expected true or false, found a string");
    }

    /// config/schema.json (for editors and check-jsonschema) says what the validator says:
    /// the same fields in each section, and patterns that accept and refuse what it does.
    #[test]
    fn the_json_schema_matches_the_validator() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../config/schema.json")).unwrap();
        let fields = |v: &serde_json::Value| -> Vec<String> {
            let mut f: Vec<String> = v["properties"].as_object().unwrap().keys().cloned().collect();
            f.sort();
            f
        };
        let sorted = |a: &[&str]| -> Vec<String> {
            let mut f: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            f.sort();
            f
        };
        let props = &schema["properties"];
        assert_eq!(fields(&schema), sorted(&TOP_LEVEL));
        assert_eq!(fields(&props["defaults"]), sorted(&DEFAULTS_FIELDS));
        assert_eq!(fields(&props["accounts"]["items"]), sorted(&ACCOUNT_FIELDS));
        assert_eq!(fields(&props["bindings"]["items"]), sorted(&BINDING_FIELDS));
        for section in [&schema, &props["defaults"], &props["accounts"]["items"], &props["bindings"]["items"]] {
            assert_eq!(section["additionalProperties"], false, "unknown fields are errors");
        }
        let pattern = |name: &str| {
            let p = schema["definitions"][name]["pattern"].as_str().unwrap();
            move |s: &str| schema_regex(p, s)
        };
        let region = pattern("region");
        for r in [
            "us-west-2",
            "eu-central-1",
            "us-gov-west-1",
            "cn-north-1",
            "x",
            "us-west",
            "us-2",
            "US-WEST-2",
            "us--west-2",
        ] {
            assert_eq!(region(r), is_region(r), "{r}");
        }
        let key = pattern("key");
        for k in [
            KEY_A,
            "arn:aws:kms:us-west-2:111122223333:alias/ebs-data",
            "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-west-2:111122223333:key/not-a-uuid",
            "arn:aws:kms:us-west-2:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-west-2:111122223333:alias/",
            "arn:aws:s3:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/ebs-data",
        ] {
            assert_eq!(key(k), KeyArn::parse(k).is_ok(), "{k}");
        }
        let suffix = pattern("suffix");
        let max = schema["definitions"]["suffix"]["maxLength"].as_u64().unwrap() as usize;
        for s in ["CMK", "a_b+c=d,e.f@g-h", "bad suffix", "ü", &"s".repeat(max), &"s".repeat(max + 1)] {
            let by_schema = suffix(s) && s.chars().count() <= max;
            assert_eq!(by_schema, crate::model::check_slr_suffix(s).is_ok(), "{s}");
        }
    }

    /// Whether `s` matches a pattern of config/schema.json (ECMA-262 there; these simple
    /// ones mean the same to the regex crate).
    fn schema_regex(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn sections_of_the_wrong_shape_are_named() {
        assert_eq!(errors("- a\n- b\n"), vec!["file: expected a mapping, found a list"]);
        assert_eq!(errors("just text\n"), vec!["file: expected a mapping, found a string"]);
        assert_eq!(errors("version: 1\nbindings: x\n"), vec!["bindings: expected a list, found a string"]);
        assert_eq!(errors("version: 1\nbindings: {a: 1}\n"), vec!["bindings: expected a list, found a mapping"]);
        assert_eq!(errors("version: 1\nbindings: !t [1]\n"), vec!["bindings: expected a list, found a tagged value"]);
        assert_eq!(errors("version: 1\nbindings:\n"), vec!["bindings: is required"]);
        assert_eq!(
            errors("version: 1\n7: x\nbindings: []\n"),
            vec!["file: field names must be strings, found a number"]
        );
        let dup = errors("version: 1\nbindings: []\nbindings: []\n");
        assert_eq!(dup.len(), 1);
        assert!(dup[0].ends_with("duplicate entry with key \"bindings\""), "{}", dup[0]);
    }

    #[test]
    fn anchors_and_aliases_are_followed() {
        let d = parse(
            &format!("version: 1\nbindings:\n  - &a {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - {{asg: b, account: \"111122223333\", key: {KEY_A}}}\n"),
            "t",
        )
        .unwrap();
        assert_eq!(d.bindings.len(), 2);
        // An alias of a binding is the same ASG bound twice.
        let errs = errors(&format!(
            "version: 1\nbindings:\n  - &a {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - *a\n"
        ));
        assert_eq!(errs, vec!["bindings[1]: duplicate of bindings[0]: ASG 111122223333/us-west-2/a is already bound; list all of its keys under `keys` in one binding"]);
    }

    #[test]
    fn accounts_are_streamed_like_bindings_and_located_the_same_way() {
        let bindings = format!("bindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n");
        assert_eq!(
            errors(&format!("version: 1\naccounts: {{a: 1}}\n{bindings}")),
            vec!["accounts: expected a list, found a mapping"]
        );
        assert_eq!(
            errors(&format!("version: 1\naccounts: 7\n{bindings}")),
            vec!["accounts: expected a list, found a number"]
        );
        assert!(parse(&format!("version: 1\naccounts:\n{bindings}"), "t").unwrap().accounts.is_empty());
        let errs = errors(&format!(
            "version: 1\naccounts:\n  - {{id: \"444455556666\", roleArn: arn:aws:iam::444455556666:role/a}}\n  - [not, a, mapping]\n  - {{id: \"444455556666\", roleArn: arn:aws:iam::444455556666:role/b}}\n  - {{id: \"999988887777\"}}\n{bindings}"
        ));
        assert_eq!(
            errs,
            vec![
                "accounts[1]: expected a mapping, found a list",
                "accounts[2].id: account 444455556666 is listed twice",
                "accounts[3].roleArn: is required",
            ]
        );
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        assert_eq!(
            errors("version: 1\nbindings: []\nbindigns: []\n"),
            vec!["bindigns: unknown field; expected one of version, instance, defaults, accounts, bindings"]
        );
    }
}
