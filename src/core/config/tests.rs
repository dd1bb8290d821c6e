use super::schema::{ACCOUNT_FIELDS, BINDING_FIELDS, DEFAULTS_FIELDS, SELECTOR_FIELDS, TOP_LEVEL};
use super::*;
use crate::core::model::{is_region, KeyArn};

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
    let d = parse(&format!("version: 1\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n"), "t")
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
fn reencrypt_parameter_is_a_parameter_path_and_only_with_reencrypt() {
    let with = |extra: &str| {
        format!(
            "version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    keys: [{KEY_A}, {KEY_B}]\n{extra}"
        )
    };
    let reencrypt = format!("    strategy: reencrypt\n    reencryptWith: {KEY_A}\n");
    let d = parse(&with(&format!("{reencrypt}    reencryptParameter: /ops/web-ami\n")), "t").unwrap();
    let parameters: Vec<Option<&str>> = d.bindings.iter().map(|b| b.reencrypt_parameter.as_deref()).collect();
    assert_eq!(parameters, [Some("/ops/web-ami")], "on the re-encrypted binding");
    for bad in ["ops/web", "/aws/x", "/SSM/x", "/a b", "/a//b", "/a/", "/"] {
        let e = parse(&with(&format!("{reencrypt}    reencryptParameter: \"{bad}\"\n")), "t").unwrap_err();
        assert_eq!(e.errors[0].location, "bindings[0].reencryptParameter", "{bad}: {:?}", e.errors);
    }
    let e = parse(&with("    reencryptParameter: /ops/web\n"), "t").unwrap_err();
    assert!(e.errors[0].message.contains("applies only with `strategy: reencrypt`"), "{:?}", e.errors);
    let twice = format!(
        "{}  - asg: b\n    account: \"111122223333\"\n    keys: [{KEY_A}, {KEY_B}]\n{reencrypt}    reencryptParameter: /ops/web-ami\n",
        with(&format!("{reencrypt}    reencryptParameter: /ops/web-ami\n"))
    );
    let e = parse(&twice, "t").unwrap_err();
    assert_eq!(e.errors[0].location, "bindings[1].reencryptParameter", "{:?}", e.errors);
    assert!(e.errors[0].message.contains("bindings[0]'s already"), "{:?}", e.errors);
}

#[test]
fn reencrypt_needs_an_own_key_and_a_key_of_another_account() {
    let entry = |extra: &str, key: &str| {
        errors(&format!("version: 1\nbindings:\n  - asg: a\n    account: \"111122223333\"\n    key: {key}\n{extra}"))
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
    assert!(warnings[0].contains("anyone who can create an Auto Scaling group in the account can use the default one"));
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
    assert!(!d.operator.prune && !d.operator.allow_mass_prune && !d.operator.reencrypt_cleanup);
    assert_eq!(d.operator.config_bindings, 1);
    let defaults = "defaults:\n  prune: true\n  allowMassPrune: true\n  reencryptCleanup: true\n";
    let d = parse(&format!("version: 1\ninstance: team-b\n{defaults}{binding}"), "t").unwrap();
    assert_eq!(d.operator.instance.as_str(), "team-b");
    assert!(d.operator.prune && d.operator.allow_mass_prune && d.operator.reencrypt_cleanup);
    let e = parse(&format!("version: 1\ndefaults:\n  reencryptCleanup: yes please\n{binding}"), "t").unwrap_err();
    assert_eq!(e.errors[0].location, "defaults.reencryptCleanup", "{:?}", e.errors);
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
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../../config/schema.json")).unwrap();
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
    assert_eq!(fields(&props["selectors"]["items"]), sorted(&SELECTOR_FIELDS));
    let sections = [&schema, &props["defaults"], &props["accounts"]["items"], &props["bindings"]["items"]];
    for section in sections.into_iter().chain([&props["selectors"]["items"]]) {
        assert_eq!(section["additionalProperties"], false, "unknown fields are errors");
    }
    let pattern = |name: &str| {
        let p = schema["definitions"][name]["pattern"].as_str().unwrap();
        move |s: &str| schema_regex(p, s)
    };
    let region = pattern("region");
    for r in
        ["us-west-2", "eu-central-1", "us-gov-west-1", "cn-north-1", "x", "us-west", "us-2", "US-WEST-2", "us--west-2"]
    {
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
        assert_eq!(by_schema, crate::core::model::check_slr_suffix(s).is_ok(), "{s}");
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
    assert_eq!(
        errors("version: 1\nbindings:\n"),
        vec!["bindings: is required (or `selectors`, which choose groups by tag)"]
    );
    assert_eq!(errors("version: 1\n7: x\nbindings: []\n"), vec!["file: field names must be strings, found a number"]);
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
    let errs =
        errors(&format!("version: 1\nbindings:\n  - &a {{asg: a, account: \"111122223333\", key: {KEY_A}}}\n  - *a\n"));
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
        vec!["bindigns: unknown field; expected one of version, instance, defaults, accounts, bindings, selectors, events"]
    );
}

#[test]
fn a_config_nested_deeper_than_the_cap_is_refused_where_it_goes_too_deep_and_at_once() {
    // 117 KB of brackets, as a file made to be slow to parse: refused by a linear scan.
    let deep = format!("version: 1\nbindings: {}{}\n", "[".repeat(60_000), "]".repeat(60_000));
    let started = std::time::Instant::now();
    let got = errors(&deep);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(
        got,
        vec![format!("line 2, column 74: nests deeper than {MAX_DEPTH} levels; a config needs only a few")]
    );
    // Blocks count too: a dash per level.
    let mut block = "version: 1\nbindings:\n".to_owned();
    for i in 0..70 {
        block.push_str(&format!("{}- x\n", " ".repeat(2 * i)));
        block.push_str(&format!("{}  - \n", " ".repeat(2 * i)));
    }
    assert!(errors(&block)[0].contains("nests deeper than 64 levels"), "{:?}", errors(&block));
    // A real config is nowhere near: brackets in quoted text do not count.
    let ok = "version: 1\nbindings:\n  - {asg: \"[[[[[[[[\", account: \"111122223333\", key: arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111} # [[[\n";
    assert!(parse(ok, "t").is_ok(), "{:?}", parse(ok, "t").err());
}

#[test]
fn a_byte_order_mark_is_skipped_and_a_quoted_version_is_named_as_such() {
    let text = "\u{feff}version: 1\nbindings: []\n";
    assert!(parse(text, "t").is_ok(), "{:?}", parse(text, "t").err());
    assert_eq!(
        errors("version: \"1\"\nbindings: []\n"),
        vec!["version: is the string \"1\": write the number 1, without quotes"]
    );
}

#[test]
fn a_selector_is_read_with_its_defaults_and_bindings_may_be_left_out() {
    let text = format!(
        "version: 1\ndefaults:\n  region: us-west-2\n  serviceLinkedRoleSuffix: CMK\n  selectorSyncInterval: 30s\nselectors:\n  - name: nodes\n    account: \"111122223333\"\n    matchTags: {{team: data, cmk: \"*\"}}\n    matchNames: [eks-]\n    allowedKeys: [{KEY_A}, {KEY_B}]\n"
    );
    let d = parse(&text, "t").unwrap();
    assert!(d.bindings.is_empty());
    let s = &d.selectors[0];
    assert_eq!(
        (&*s.name, s.regions.as_slice(), s.slr_suffix.as_deref()),
        ("nodes", &["us-west-2".to_owned()][..], Some("CMK"))
    );
    assert_eq!(
        s.match_tags,
        [
            ("cmk".to_owned(), crate::core::model::select::TagValue::Any),
            ("team".to_owned(), crate::core::model::select::TagValue::Is("data".into()))
        ]
    );
    assert_eq!(s.allowed_keys.len(), 2);
    assert_eq!(d.operator.selector_sync, Some(std::time::Duration::from_secs(30)));
    assert_eq!(errors("version: 1\n"), ["bindings: is required (or `selectors`, which choose groups by tag)"]);
}

#[test]
fn selector_errors_are_located() {
    let text = format!(
        "version: 1\ndefaults:\n  selectorSyncInterval: \"5\"\nselectors:\n  - name: \"bad name\"\n    account: \"111122223333\"\n    regions: [us-east-1]\n    matchTags: {{\"\": x}}\n    allowedKeys: [{KEY_A}, {KEY_A}]\n  - name: ok\n    account: \"111122223333\"\n    regions: [us-west-2]\n    matchTags: {{a: b}}\n    allowedKeys: [\"arn:aws:kms:us-west-2:444455556666:alias/theirs\"]\n  - name: ok\n    account: \"111122223333\"\n    regions: [us-west-2]\n    matchTags: {{a: b}}\n    allowedKeys: [{KEY_A}]\n  - name: ok\n    account: \"111122223333\"\n    regions: [us-west-2]\n    matchTags: {{a: b}}\n    allowedKeys: [{KEY_A}]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "defaults.selectorSyncInterval: \"5\" has no unit: write 5s, 5m or 5h",
            "selectors[0].name: must be 1 to 64 letters, digits, '-', '_' or '.'",
            "selectors[0].matchTags.: a tag key is 1 to 128 characters",
            "selectors[0].allowedKeys[0]: key is in region us-west-2, which is not one of the selector's regions",
            "selectors[0].allowedKeys[1]: key is in region us-west-2, which is not one of the selector's regions",
            "selectors[0].allowedKeys[1]: arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab is listed twice",
            "selectors[1].allowedKeys[0]: another account's key must be named by its key ARN: an alias resolves only in its own account",
            "selectors[3].name: \"ok\" is the name of selectors[2] too",
        ]
    );
}

#[test]
fn the_create_grant_rate_is_a_whole_number_within_the_quota() {
    let with = |rate: &str| format!("version: 1\ndefaults:\n  kmsCreateGrantRate: {rate}\nbindings: []\n");
    let d = parse(&with("4"), "t").unwrap();
    assert_eq!((d.operator.kms_create_grant_rate, d.operator.create_grant_rate()), (Some(4), 4));
    let d = parse("version: 1\nbindings: []\n", "t").unwrap();
    assert_eq!(d.operator.create_grant_rate(), crate::core::model::desired::DEFAULT_CREATE_GRANT_RATE);
    for bad in ["0", "51", "2.5", "-1"] {
        let e = errors(&with(bad));
        assert!(
            e.len() == 1 && e[0].starts_with("defaults.kmsCreateGrantRate: ") && e[0].contains("1 to 50"),
            "{bad}: {e:?}"
        );
    }
    assert_eq!(
        errors(&with("\"10\"")),
        ["defaults.kmsCreateGrantRate: expected a number of calls per second, found a string"]
    );
}
