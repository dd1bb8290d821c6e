//! What the operator names its grants, so that it knows its own by name: per instance,
//! per role, per role's unique id.

use crate::core::model::{AccountId, Instance, Slr};
use crate::core::policy;

/// The operator's name for its grant to one service-linked role: the role's name and
/// unique id, so a role that was deleted and created again (a new principal to KMS) gets
/// a grant of its own. KMS returns the existing grant for a retried CreateGrant with the
/// same name and parameters (KMS API Reference, CreateGrant, `Name`), so a retry after a
/// lost answer makes no second grant.
pub fn grant_name(slr: &Slr, role_id: &str, instance: &Instance) -> String {
    format!("{}{}-{role_id}", instance_prefix(instance), grant_role_part(slr))
}

/// How every grant name of `instance` starts: `asg-cmk-operator-` for the instance
/// `default` (as earlier versions named grants), `asg-cmk-operator:<instance>:` for any
/// other. An instance name has no `:`, and the default's prefix is followed by an account
/// id, never by `:`, so a name belongs to one instance at most.
fn instance_prefix(instance: &Instance) -> String {
    match instance.is_default() {
        true => "asg-cmk-operator-".to_owned(),
        false => format!("asg-cmk-operator:{instance}:"),
    }
}

/// `<account>-<role name>`. Grant names allow `[a-zA-Z0-9:/_-]`; other characters of the
/// role name are replaced and a hash of the original keeps names apart.
fn grant_role_part(slr: &Slr) -> String {
    let name = slr.name();
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-:/".contains(c) { c } else { '-' }).collect();
    let mut out = format!("{}-{clean}", slr.account);
    if clean != name {
        out.push_str(&format!("-{:08x}", fnv1a(name.as_bytes())));
    }
    out
}

/// True when a grant carries the name `instance` gives its grant for `slr`: it is that
/// instance's own, whichever role id it was made for (and with none, as earlier versions
/// named it).
pub fn is_operators_grant(name: Option<&str>, slr: &Slr, instance: &Instance) -> bool {
    let prefix = format!("{}{}", instance_prefix(instance), grant_role_part(slr));
    name.and_then(|n| n.strip_prefix(prefix.as_str()))
        .is_some_and(|rest| rest.is_empty() || rest.strip_prefix('-').is_some_and(policy::is_unique_id))
}

/// The account of a grant that `instance` named, whatever role it is for; None for a
/// grant it did not name.
pub fn operators_grant_account(name: Option<&str>, instance: &Instance) -> Option<AccountId> {
    let rest = name?.strip_prefix(instance_prefix(instance).as_str())?;
    let (account, role) = rest.split_once('-')?;
    role.starts_with(crate::core::model::DEFAULT_SLR_NAME).then_some(())?;
    AccountId::parse(account)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}
