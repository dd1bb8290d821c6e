//! The streaming parse: the file is read section by section, and each list item as a
//! small value that is validated at once (see [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_norway::Value;

use super::schema::TOP_LEVEL;
use super::validate::{kind, show, Defaults, Validator};
use crate::core::model::desired::{Binding, Desired};
use crate::core::model::{AsgRef, Instance};

/// What a value turned out to be when it was read as a mapping or a list.
pub(super) enum Shape<T> {
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
pub(super) struct Document<'a> {
    pub(super) v: &'a mut Validator,
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

pub(super) struct DocumentVisitor<'a> {
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
        let mut selectors = Selectors::default();
        let mut selectors_shape: Option<Shape<()>> = None;
        let mut events: Option<Value> = None;
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
                "instance" => instance(v, map.next_value()?, &mut desired),
                "defaults" => {
                    let value: Value = map.next_value()?;
                    defaults = Some(if value.is_null() { Defaults::default() } else { v.defaults(&value) });
                }
                "accounts" => {
                    let accounts = &mut desired.accounts;
                    let shape = map.next_value_seed(List(|i, item: Value| v.account(i, &item, accounts)))?;
                    expect_list(v, "accounts", shape);
                }
                "bindings" => {
                    let (defaults, bindings) = (defaults.as_ref(), &mut bindings);
                    let each = |i, item: Value| match defaults {
                        Some(d) => bindings.add(v, i, &item, d),
                        None => bindings.pending.push((i, item)),
                    };
                    bindings_shape = Some(map.next_value_seed(List(each))?);
                }
                "events" => events = Some(map.next_value()?),
                "selectors" => {
                    let (defaults, selectors) = (defaults.as_ref(), &mut selectors);
                    let each = |i, item: Value| match defaults {
                        Some(d) => selectors.add(v, i, &item, d),
                        None => selectors.pending.push((i, item)),
                    };
                    selectors_shape = Some(map.next_value_seed(List(each))?);
                }
                other => {
                    v.err(other, format!("unknown field; expected one of {}", TOP_LEVEL.join(", ")));
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        check_version(v, version.as_ref());
        events_queue(v, &mut desired, events, defaults.as_ref());
        finish(v, &mut desired, defaults, (bindings, bindings_shape), (selectors, selectors_shape));
        Ok(Shape::Expected(desired))
    }
}

/// A list field that turned out to be something else.
fn expect_list(v: &mut Validator, field: &str, shape: Shape<()>) {
    if let Shape::Other(k) = shape {
        v.err(field, format!("expected a list, found {k}"));
    }
}

/// The `events` field, read once `defaults` (its Region) is known: absent or null is off.
fn events_queue(v: &mut Validator, desired: &mut Desired, events: Option<Value>, defaults: Option<&Defaults>) {
    if let Some(value) = events.filter(|e| !e.is_null()) {
        let region = defaults.and_then(|d| d.region.as_deref());
        desired.events = v.events(&value, region);
    }
}

/// The `instance` field: absent or null leaves the default.
fn instance(v: &mut Validator, value: Value, desired: &mut Desired) {
    match value {
        Value::Null => {}
        Value::String(s) => match Instance::parse(&s) {
            Ok(i) => desired.operator.instance = i,
            Err(e) => v.err("instance", e),
        },
        other => v.err("instance", format!("expected a string, found {}", kind(&other))),
    }
}

/// The `version` field: required, and 1.
fn check_version(v: &mut Validator, version: Option<&Value>) {
    match version {
        None => v.err("version", "is required and must be 1"),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(Value::String(s)) if s.trim() == "1" => {
            v.err("version", format!("is the string {s:?}: write the number 1, without quotes"))
        }
        Some(other) => v.err("version", format!("unsupported version {}; this operator reads version 1", show(other))),
    }
}

/// Once the whole file is read: the bindings and selectors that waited for `defaults`,
/// and the operator's settings from `defaults`. `bindings` may be left out (or empty)
/// when `selectors` choose the groups.
fn finish(
    v: &mut Validator,
    desired: &mut Desired,
    defaults: Option<Defaults>,
    (mut bindings, bindings_shape): (Bindings, Option<Shape<()>>),
    (mut selectors, selectors_shape): (Selectors, Option<Shape<()>>),
) {
    let (prune, allow_mass_prune) = defaults.as_ref().map_or((false, false), |d| (d.prune, d.allow_mass_prune));
    let defaults = defaults.unwrap_or_default();
    match selectors_shape {
        None | Some(Shape::Null) => {}
        Some(Shape::Other(k)) => v.err("selectors", format!("expected a list, found {k}")),
        Some(Shape::Expected(())) => {
            for (i, item) in std::mem::take(&mut selectors.pending) {
                selectors.add(v, i, &item, &defaults);
            }
        }
    }
    let has_selectors = !selectors.list.is_empty() || matches!(selectors_shape, Some(Shape::Expected(())));
    match bindings_shape {
        None | Some(Shape::Null) if has_selectors => {}
        None | Some(Shape::Null) => v.err("bindings", "is required (or `selectors`, which choose groups by tag)"),
        Some(Shape::Other(k)) => v.err("bindings", format!("expected a list, found {k}")),
        Some(Shape::Expected(())) => {
            // Bindings read before `defaults` wait for it.
            for (i, item) in std::mem::take(&mut bindings.pending) {
                bindings.add(v, i, &item, &defaults);
            }
        }
    }
    desired.bindings = bindings.list;
    desired.selectors = selectors.list;
    desired.operator.prune = prune;
    desired.operator.allow_mass_prune = allow_mass_prune;
    desired.operator.reencrypt_cleanup = defaults.reencrypt_cleanup;
    desired.operator.config_bindings = desired.bindings.len();
    desired.operator.selector_sync = defaults.selector_sync;
    desired.operator.kms_create_grant_rate = defaults.create_grant_rate;
}

/// The selectors validated so far.
#[derive(Default)]
pub(super) struct Selectors {
    list: Vec<crate::core::model::select::Selector>,
    /// Where each name was first used.
    names: BTreeMap<Arc<str>, usize>,
    /// Selectors that came before `defaults` in the file, by index.
    pending: Vec<(usize, Value)>,
}

impl Selectors {
    fn add(&mut self, v: &mut Validator, i: usize, item: &Value, defaults: &Defaults) {
        let path = format!("selectors[{i}]");
        let Some(s) = v.selector(item, &path, defaults) else { return };
        match self.names.get(&s.name) {
            Some(first) => {
                v.err(format!("{path}.name"), format!("{:?} is the name of selectors[{first}] too", &*s.name))
            }
            None => {
                self.names.insert(s.name.clone(), i);
                self.list.push(s);
            }
        }
    }
}

/// The bindings validated so far.
#[derive(Default)]
pub(super) struct Bindings {
    list: Vec<Binding>,
    /// Where each ASG was first bound.
    first: BTreeMap<AsgRef, usize>,
    /// Where each `reencryptParameter` was first named, by account, Region and name: one
    /// parameter holds one copy, so it serves one group.
    parameters: BTreeMap<(crate::core::model::AccountId, String, String), usize>,
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
        let parameter = bindings
            .iter()
            .find_map(|b| b.reencrypt_parameter.as_deref())
            .map(|p| (asg.account, asg.region.clone(), p.to_owned()));
        if let Some(first) = self.first.get(&asg) {
            let hint = "list all of its keys under `keys` in one binding";
            v.err(path, format!("duplicate of bindings[{first}]: ASG {asg} is already bound; {hint}"));
        } else if let Some(first) = parameter.as_ref().and_then(|p| self.parameters.get(p)) {
            let name = parameter.as_ref().map_or("", |p| p.2.as_str());
            v.err(
                format!("{path}.reencryptParameter"),
                format!(
                    "{name} is bindings[{first}]'s already: a parameter holds one copy, so each group needs its own"
                ),
            );
        } else {
            if let Some(p) = parameter {
                self.parameters.insert(p, i);
            }
            self.first.insert(asg, i);
            self.list.extend(bindings);
        }
    }
}

/// Streams a list: each item is read as a small value and handed, with its index, to the
/// function; anything but a list is reported by its kind.
pub(super) struct List<F>(F);

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
pub(super) fn duplicate_key_at(text: &str, message: &str, line: usize, column: usize) -> Option<(usize, usize)> {
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
pub(super) fn strip_location(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else { return msg.to_owned() };
    let rest = &msg[i + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &msg[..i])
}
