//! Prune spares what still launches: an access is pruned only when no group of its
//! account and Region still launches with that key on a role that access lets in. The
//! config says which bindings are gone; only AWS says whether their groups are.

use std::collections::BTreeMap;
use std::fmt;

use crate::core::model::observed::{Observed, RoleUser, UsersWanted};
use crate::core::model::{AccountId, AsgRef, KeyArn};
use crate::core::policy;

/// An access that prune would remove but keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spared {
    pub key: KeyArn,
    /// The principal in the operator's statement, or the grantee of its grant.
    pub principal: String,
    /// `grant <id>` when the access is a grant, else None (a key-policy principal).
    pub grant: Option<String>,
    pub why: SparedBy,
}

/// Why an access is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparedBy {
    /// These groups, on these roles, still launch with the key.
    Groups(Vec<(AsgRef, String)>),
    /// Whether a group still does could not be read.
    Unknown(String),
}

impl Spared {
    /// The groups that hold it, if any.
    pub fn groups(&self) -> &[(AsgRef, String)] {
        match &self.why {
            SparedBy::Groups(g) => g,
            SparedBy::Unknown(_) => &[],
        }
    }
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.grant {
            Some(id) => format!("grant {id} for {} on {}", self.principal, self.key),
            None => format!("{} in the policy of {}", self.principal, self.key),
        };
        match &self.why {
            SparedBy::Groups(groups) => {
                let named: Vec<String> = groups.iter().map(|(asg, role)| format!("{asg} (role {role})")).collect();
                write!(
                    f,
                    "prune of {what} held: no binding needs it, but group{} {} still launch{} with this key through it; it is pruned once {} deleted, moved to another role, or launching with another key (--allow-mass-prune does not override this)",
                    if named.len() == 1 { "" } else { "s" },
                    named.join(", "),
                    if named.len() == 1 { "es" } else { "" },
                    if named.len() == 1 { "the group is" } else { "they are" },
                )
            }
            SparedBy::Unknown(why) => write!(
                f,
                "prune of {what} held: no binding needs it, but whether a group still launches with this key through it could not be read ({why})"
            ),
        }
    }
}

/// The answer for one access.
enum Use {
    /// No group uses it: prune.
    Free,
    /// Keep it.
    Kept(SparedBy),
    /// Not known before the groups of its place are read.
    Unread,
}

/// The sparing of one plan's prunes: what is kept, and which places' groups must be read
/// before the rest can be decided.
#[derive(Debug, Default)]
pub(super) struct Sparing {
    pub spared: Vec<Spared>,
    pub need: BTreeMap<(AccountId, String), UsersWanted>,
}

impl Sparing {
    /// Whether `principal` (a key-policy principal of the operator's, or a grantee) may
    /// go from `key`: true to prune it. Otherwise it is recorded as spared, or its place
    /// as to be read.
    pub fn may_prune(&mut self, observed: &Observed, key: &KeyArn, principal: &str, grant: Option<&str>) -> bool {
        // A unique id is a deleted role's or user's: no group launches through it.
        let Some((place, wanted)) = reach(key, principal) else { return true };
        match users(observed, &place, &wanted, key) {
            Use::Free => true,
            Use::Kept(why) => {
                let grant = grant.map(|id| id.to_owned());
                self.spared.push(Spared { key: key.clone(), principal: principal.to_owned(), grant, why });
                false
            }
            Use::Unread => {
                self.need.entry(place).or_default().merge(&wanted);
                false
            }
        }
    }
}

/// The place (account, Region) of the groups that reach `key` through `principal`, and
/// which of them: the role's own groups, or every group of an account whose root it is.
/// None for a principal no group launches through (a deleted one's unique id).
fn reach(key: &KeyArn, principal: &str) -> Option<((AccountId, String), UsersWanted)> {
    if policy::is_unique_id(principal) {
        return None;
    }
    let mut parts = principal.splitn(6, ':');
    let (arn, _partition, service, _region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if arn != "arn" || service != "iam" {
        return None;
    }
    let account = AccountId::parse(account)?;
    let place = (account, key.region().to_owned());
    let wanted = match resource {
        "root" => UsersWanted { any_role: true, ..UsersWanted::default() },
        _ => UsersWanted { any_role: false, roles: [principal.to_owned()].into() },
    };
    Some((place, wanted))
}

/// Whether a group of `place` that `wanted` covers still launches with `key`.
fn users(observed: &Observed, place: &(AccountId, String), wanted: &UsersWanted, key: &KeyArn) -> Use {
    let groups = match observed.role_users.get(place) {
        None => return Use::Unread,
        Some(Err(f)) => {
            return Use::Kept(SparedBy::Unknown(format!("the groups of {} in {}: {}", place.0, place.1, f.message)))
        }
        Some(Ok(groups)) => groups,
    };
    let mut holding = Vec::new();
    for g in groups.iter().filter(|g| on_role(g, wanted)) {
        match &g.launch {
            None => return Use::Unread,
            Some(Err(f)) => {
                return Use::Kept(SparedBy::Unknown(format!("what group {} launches with: {}", g.asg, f.message)));
            }
            Some(Ok(launch)) => {
                if let Some(why) = launch.unknown.first() {
                    return Use::Kept(SparedBy::Unknown(format!("a volume of group {}: {why}", g.asg)));
                }
                if launch.keys.iter().any(|k| names(k, key)) {
                    holding.push((g.asg.clone(), g.role_arn.clone()));
                }
            }
        }
    }
    match holding.is_empty() {
        true => Use::Free,
        false => Use::Kept(SparedBy::Groups(holding)),
    }
}

fn on_role(g: &RoleUser, wanted: &UsersWanted) -> bool {
    wanted.any_role || wanted.roles.iter().any(|r| r.eq_ignore_ascii_case(&g.role_arn))
}

/// Whether a key a group launches with is `key`: as DescribeKey resolved it, or, when it
/// could not be described, when it names the key's id or is an alias (which may name it).
fn names(k: &crate::core::model::launch::LaunchKey, key: &KeyArn) -> bool {
    match &k.resolved {
        Ok((arn, _)) => arn == key,
        Err(_) => k.key_ref.contains(key.key_id()) || k.key_ref.contains("alias/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::launch::{GroupLaunch, LaunchKey};
    use crate::core::model::{Failure, KeyManager};

    const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const OTHER_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab";
    const ROLE: &str =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK";
    const DEFAULT_ROLE: &str =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

    fn acct() -> AccountId {
        AccountId::parse("111122223333").unwrap()
    }

    fn group(name: &str, role: &str, keys: &[&str]) -> RoleUser {
        let keys = keys
            .iter()
            .map(|k| LaunchKey {
                key_ref: (*k).to_owned(),
                source: "launch template lt-1 version 1: /dev/xvdb".into(),
                resolved: Ok((KeyArn::parse(k).unwrap(), KeyManager::Customer)),
            })
            .collect();
        RoleUser {
            asg: AsgRef::new(acct(), "us-west-2", name),
            role_arn: role.into(),
            launch: Some(Ok(GroupLaunch { keys, ..GroupLaunch::default() })),
        }
    }

    fn observed(groups: Vec<RoleUser>) -> Observed {
        let mut o = Observed::default();
        o.role_users.insert((acct(), "us-west-2".into()), Ok(groups));
        o
    }

    fn decide(o: &Observed, principal: &str) -> (bool, Sparing) {
        let mut s = Sparing::default();
        let key = KeyArn::parse(KEY).unwrap();
        (s.may_prune(o, &key, principal, None), s)
    }

    #[test]
    fn a_role_is_pruned_only_when_no_group_on_it_launches_with_the_key() {
        // Before its place is read: neither pruned nor spared, and the read is asked for.
        let (prune, s) = decide(&Observed::default(), ROLE);
        assert!(!prune && s.spared.is_empty());
        assert!(s.need[&(acct(), "us-west-2".into())].wants(ROLE));
        // A group on the role launching with the key keeps it, and is named.
        let (prune, s) = decide(&observed(vec![group("web", ROLE, &[KEY])]), ROLE);
        assert!(!prune);
        assert_eq!(s.spared[0].groups()[0].0.name, "web");
        assert!(s.spared[0].to_string().contains("111122223333/us-west-2/web (role"), "{}", s.spared[0]);
        // Moved to another role, launching another key, or gone: pruned.
        assert!(decide(&observed(vec![group("web", DEFAULT_ROLE, &[KEY])]), ROLE).0);
        assert!(decide(&observed(vec![group("web", ROLE, &[OTHER_KEY])]), ROLE).0);
        assert!(decide(&observed(vec![]), ROLE).0);
    }

    #[test]
    fn an_account_root_is_kept_by_a_group_on_any_role() {
        let root = "arn:aws:iam::111122223333:root";
        let (prune, s) = decide(&Observed::default(), root);
        assert!(!prune && s.need[&(acct(), "us-west-2".into())].any_role);
        assert!(!decide(&observed(vec![group("web", DEFAULT_ROLE, &[KEY])]), root).0);
        assert!(decide(&observed(vec![group("web", DEFAULT_ROLE, &[OTHER_KEY])]), root).0);
    }

    #[test]
    fn what_cannot_be_read_keeps_the_access_and_says_why() {
        let mut o = Observed::default();
        o.role_users.insert((acct(), "us-west-2".into()), Err(Failure::terminal("AccessDenied")));
        let (prune, s) = decide(&o, ROLE);
        assert!(!prune);
        assert!(
            s.spared[0].to_string().contains("could not be read") && s.spared[0].to_string().contains("AccessDenied")
        );
        // A group on the role whose launches were not read (another role was in question).
        let mut unread = group("web", ROLE, &[KEY]);
        unread.launch = None;
        let (prune, s) = decide(&observed(vec![unread]), ROLE);
        assert!(!prune && s.spared.is_empty() && !s.need.is_empty());
        // A deleted role's unique id: no group launches through it.
        assert!(decide(&Observed::default(), "AROAEXAMPLEID1234567").0);
    }
}
