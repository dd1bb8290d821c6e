//! The schema: the fields each section of the file may have. config/schema.json, for
//! editors and check-jsonschema, must list the same (a test in [`super`] checks it).

pub(super) const TOP_LEVEL: [&str; 7] =
    ["version", "instance", "defaults", "accounts", "bindings", "selectors", "events"];
pub(super) const DEFAULTS_FIELDS: [&str; 8] = [
    "region",
    "serviceLinkedRoleSuffix",
    "requireServiceLinkedRoleSuffix",
    "prune",
    "allowMassPrune",
    "selectorSyncInterval",
    "kmsCreateGrantRate",
    "reencryptCleanup",
];
pub(super) const ACCOUNT_FIELDS: [&str; 2] = ["id", "roleArn"];
pub(super) const BINDING_FIELDS: [&str; 9] = [
    "asg",
    "account",
    "key",
    "keys",
    "region",
    "serviceLinkedRoleSuffix",
    "strategy",
    "reencryptWith",
    "reencryptParameter",
];
pub(super) const SELECTOR_FIELDS: [&str; 9] = [
    "name",
    "account",
    "regions",
    "matchTags",
    "matchNames",
    "allowedKeys",
    "serviceLinkedRoleSuffix",
    "strategy",
    "reencryptWith",
];
pub(super) const EVENTS_FIELDS: [&str; 2] = ["queueUrl", "region"];
