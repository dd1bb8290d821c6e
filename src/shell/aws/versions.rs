//! Launch template versions as groups launch them: read once a pass each, numbered ones
//! kept across passes (a version cannot change), and images named by Systems Manager
//! parameters resolved anew every pass.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::error::classify;
use super::mapping::mappings;
use super::Account;
use crate::core::launch::{LaunchSpec, Mapping};
use crate::core::model::{Failure, LaunchSource};
use crate::core::reencrypt;
use crate::shell::bounded::concurrently;

/// How many numbered launch template versions an account keeps, over all its regions. Far
/// fewer distinct versions than groups are in use (groups share templates); past this many,
/// the one kept longest goes first, and a version no longer kept is read again: dearer,
/// never wrong. Each entry is a few strings and mappings, so memory stays flat.
pub(crate) const VERSION_CACHE: usize = 4096;

/// A launch template version as DescribeLaunchTemplateVersions answers it with
/// ResolveAlias=false: what [`launch::keys_used`] needs of it, not the SDK's structure. An
/// image named by a Systems Manager parameter stays `resolve:ssm:...` here. Not
/// ResolveAlias=true: that answers the AMI the parameter holds now, which can change while
/// the version, and so what is kept of it, does not; the parameter is resolved by a read of
/// its own each pass ([`resolve_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateVersion {
    /// The template's id, as answered.
    id: Option<String>,
    /// How to name the template: `lt-0abc (web)`.
    label: String,
    /// The version's number, as answered.
    number: Option<u64>,
    image_id: Option<String>,
    mappings: Vec<Mapping>,
    /// Its description: the operator's versions record what the group followed.
    description: Option<String>,
}

impl TemplateVersion {
    /// Whether the operator made it, as its description says (in any of the forms the
    /// operator has written).
    fn is_operators(&self) -> bool {
        self.description.as_deref().is_some_and(|d| d.starts_with("asg-cmk-operator: version "))
    }

    /// Whether its image is a Systems Manager parameter, whose AMI can change under the
    /// same version: resolved anew each pass, never kept.
    fn image_is_parameter(&self) -> bool {
        self.image_id.as_deref().is_some_and(|i| i.starts_with("resolve:"))
    }

    /// This very version, whatever it was asked as: by its template's id and its number
    /// when the answer gave both (a `$Latest` asked twice may be two versions).
    fn pinned(&self, asked: &VersionRef) -> VersionRef {
        match (&self.id, self.number) {
            (Some(id), Some(n)) => VersionRef { template: TemplateRef::Id(id.clone()), version: n.to_string() },
            _ => asked.clone(),
        }
    }

    /// What launches from it use, named as the group asked for it (`requested`) and where
    /// (`via`); `image_id` is its image, resolved when it is a parameter.
    fn spec(&self, requested: &str, via: &str, image_id: Option<String>) -> LaunchSpec {
        let number = self.number.map_or_else(|| requested.to_owned(), |n| n.to_string());
        let asked = if requested == number { String::new() } else { format!(" ({requested})") };
        LaunchSpec {
            name: format!("launch template {} version {number}{asked}, {via}", self.label),
            image_id,
            mappings: self.mappings.clone(),
            spot: false,
            template: self.id.clone().zip(self.number),
            image_parameter: self.image_id.clone().filter(|_| self.image_is_parameter()),
            made_from: self.description.as_deref().and_then(reencrypt::followed_by).map(|(from, _)| from),
        }
    }
}

/// A launch template, as a group names it: by id when its description gives one.
/// DescribeLaunchTemplateVersions takes the id or the name, not both (EC2 API Reference);
/// DescribeAutoScalingGroups answers both, so the id is used when there is one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TemplateRef {
    Id(String),
    Name(String),
}

/// One launch template version to read: the template and the version as named (`$Default`,
/// `$Latest` or a number). Groups that reach it differently (their own template, a mixed
/// instances policy or one of its overrides) name the same one, read once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct VersionRef {
    template: TemplateRef,
    version: String,
}

impl VersionRef {
    pub(super) fn of(source: &LaunchSource) -> Option<VersionRef> {
        let LaunchSource::Template { id, name, version, .. } = source else { return None };
        let template = match (id, name) {
            (Some(id), _) => TemplateRef::Id(id.clone()),
            (None, Some(name)) => TemplateRef::Name(name.clone()),
            (None, None) => return None,
        };
        Some(VersionRef { template, version: version.clone() })
    }
}

/// The number of a version named by its number (`3`); None for `$Default` and `$Latest`,
/// which move from version to version.
fn numbered(version: &str) -> Option<u64> {
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok()
}

/// Numbered launch template versions kept across passes, by region, template id and
/// number. "You can't modify a launch template version" (EC2 User Guide, launch template
/// versions): what was read stays true. Only answers read with ResolveAlias=false are kept,
/// since a parameter's AMI can change under the same version. A version deleted since
/// (DeleteLaunchTemplateVersions, or its template deleted) is still answered from here;
/// the group then cannot launch from it at all, which the keys do not cure. Bounded: at
/// capacity, the entry kept longest goes.
#[derive(Debug)]
pub(crate) struct VersionCache {
    capacity: usize,
    entries: HashMap<(String, String, u64), TemplateVersion>,
    order: VecDeque<(String, String, u64)>,
}

impl VersionCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub(crate) fn get(&self, region: &str, id: &str, number: u64) -> Option<TemplateVersion> {
        self.entries.get(&(region.to_owned(), id.to_owned(), number)).cloned()
    }

    /// Keeps `version` if its answer named its template's id and its number.
    pub(crate) fn insert(&mut self, region: &str, version: &TemplateVersion) {
        let (Some(id), Some(number)) = (&version.id, version.number) else { return };
        let key = (region.to_owned(), id.clone(), number);
        if self.capacity == 0 || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, version.clone());
    }
}

type Versions = BTreeMap<VersionRef, Result<TemplateVersion, Failure>>;

/// Splits `wanted` into the numbered versions, named by template id, that `cached` holds,
/// and the rest, to read. `$Default` and `$Latest` are always read.
fn split_cached(
    wanted: BTreeSet<VersionRef>,
    cached: impl Fn(&str, u64) -> Option<TemplateVersion>,
) -> (Versions, Vec<VersionRef>) {
    let mut found = Versions::new();
    let mut unread = Vec::new();
    for r in wanted {
        let hit = match (&r.template, numbered(&r.version)) {
            (TemplateRef::Id(id), Some(n)) => cached(id, n),
            _ => None,
        };
        match hit {
            Some(v) => {
                found.insert(r, Ok(v));
            }
            None => unread.push(r),
        }
    }
    (found, unread)
}

/// Every launch template version in `wanted`, each read at most once: a numbered one kept
/// from an earlier pass is not read at all, and every answer that names its template's id
/// and its number (a `$Latest` one too) is kept for later passes.
pub(super) async fn template_versions(
    account: &Arc<Account>,
    region: &str,
    wanted: BTreeSet<VersionRef>,
    limit: usize,
) -> Versions {
    let (mut out, unread) = split_cached(wanted, |id, n| account.cached_version(region, id, n));
    let read = |r: VersionRef| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { read_version(&account, &region, &r, false).await }
    };
    for (r, answer) in concurrently(unread, limit, read).await {
        if let Ok(v) = &answer {
            account.cache_version(region, v);
        }
        out.insert(r, answer);
    }
    out
}

/// The AMI each version whose image is a Systems Manager parameter names now, by the
/// version pinned (see [`TemplateVersion::pinned`]): one read with ResolveAlias=true per
/// version a pass, never kept. A parameter that cannot be resolved is answered as it is.
pub(super) async fn resolve_images(
    account: &Arc<Account>,
    region: &str,
    versions: &Versions,
    limit: usize,
) -> BTreeMap<VersionRef, Result<Option<String>, Failure>> {
    let pinned: BTreeSet<VersionRef> = versions
        .iter()
        .filter_map(|(r, v)| v.as_ref().ok().filter(|v| v.image_is_parameter()).map(|v| v.pinned(r)))
        .collect();
    let read = |r: VersionRef| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { read_version(&account, &region, &r, true).await.map(|v| v.image_id) }
    };
    concurrently(pinned.into_iter().collect(), limit, read).await.into_iter().collect()
}

/// What launches from `source` use: its version as read, with the AMI its parameter names
/// now. A read that failed fails it.
pub(super) fn template_spec(
    source: &LaunchSource,
    versions: &Versions,
    images_now: &BTreeMap<VersionRef, Result<Option<String>, Failure>>,
) -> Result<LaunchSpec, Failure> {
    let LaunchSource::Template { version: requested, via, .. } = source else {
        return Err(Failure::terminal("not a launch template"));
    };
    let r = VersionRef::of(source)
        .ok_or_else(|| Failure::terminal("the group names its launch template by neither id nor name"))?;
    let v = match versions.get(&r) {
        Some(Ok(v)) => v,
        Some(Err(f)) => return Err(f.clone()),
        None => return Err(Failure::terminal("the launch template version was not read")),
    };
    let image_id = match images_now.get(&v.pinned(&r)) {
        Some(Ok(now)) if v.image_is_parameter() => now.clone(),
        Some(Err(f)) if v.image_is_parameter() => return Err(f.clone()),
        _ => v.image_id.clone(),
    };
    Ok(v.spec(requested, via, image_id))
}

/// What the group on a version the operator made followed before, as the version's
/// description records it.
struct Followed {
    /// The source, naming the template by what the group followed (`$Default`, `$Latest`
    /// or a number).
    source: LaunchSource,
    /// What the group followed, when it can move (`$Default`, `$Latest`).
    moving: Option<VersionRef>,
    /// The version the operator's was made from, and its number.
    from: (VersionRef, u64),
    /// The operator's version itself.
    on: Option<u64>,
    /// Its image comes from the operator's parameter: the version it was made from is
    /// read each pass, since what its parameter names can change under it.
    parameter: bool,
}

fn followed(s: &LaunchSource, v: &TemplateVersion) -> Option<Followed> {
    let (from, selector) = reencrypt::followed_by(v.description.as_deref()?)?;
    let (Some(id), LaunchSource::Template { name, via, .. }) = (&v.id, s) else { return None };
    let at = |version: &str| VersionRef { template: TemplateRef::Id(id.clone()), version: version.to_owned() };
    let moving = numbered(selector).is_none().then(|| at(selector));
    let parameter = v.image_is_parameter();
    if moving.is_none() && !parameter {
        return None;
    }
    let source = LaunchSource::Template { id: Some(id.clone()), name: name.clone(), version: selector.to_owned(), via };
    Some(Followed { source, moving, from: (at(&from.to_string()), from), on: v.number, parameter })
}

/// The sources on a version the operator made whose group followed `$Default` or
/// `$Latest` before, where that has moved since to a version that is neither the one the
/// operator's was made from nor one of the operator's; and those whose image comes from
/// the operator's parameter, with the version it was made from. Each with the source
/// that names the template by what the group followed, and what that launches now. One
/// read of each selector a template, a pass (it moves, so it is never kept).
pub(super) async fn moved_sources(
    account: &Arc<Account>,
    region: &str,
    sources: &[&LaunchSource],
    versions: &Versions,
    limit: usize,
) -> BTreeMap<LaunchSource, Result<(LaunchSource, LaunchSpec), Failure>> {
    let mut all: BTreeMap<&LaunchSource, Followed> = BTreeMap::new();
    for s in sources {
        let Some(Ok(v)) = VersionRef::of(s).and_then(|r| versions.get(&r)) else { continue };
        if let Some(f) = followed(s, v) {
            all.insert(s, f);
        }
    }
    let wanted =
        all.values().flat_map(|f| f.moving.iter().cloned().chain(f.parameter.then(|| f.from.0.clone()))).collect();
    let now = template_versions(account, region, wanted, limit).await;
    let images_now = resolve_images(account, region, &now, limit).await;
    let mut out = BTreeMap::new();
    for (s, f) in all {
        let moved = f.moving.filter(|r| match now.get(r) {
            Some(Ok(v)) => v.number != Some(f.from.1) && v.number != f.on && !v.is_operators(),
            _ => true,
        });
        let Some(target) = moved.or(f.parameter.then_some(f.from.0)) else { continue };
        let LaunchSource::Template { id, name, via, .. } = &f.source else { continue };
        let read_as = LaunchSource::Template { id: id.clone(), name: name.clone(), version: target.version, via };
        out.insert(s.clone(), template_spec(&read_as, &now, &images_now).map(|spec| (f.source, spec)));
    }
    out
}

/// One launch template version. With `resolve_alias`, an image named by a Systems Manager
/// parameter (`resolve:ssm:...`) is answered as the AMI id the parameter holds now;
/// without it, as the parameter (EC2 API Reference, DescribeLaunchTemplateVersions,
/// ResolveAlias).
async fn read_version(
    account: &Account,
    region: &str,
    r: &VersionRef,
    resolve_alias: bool,
) -> Result<TemplateVersion, Failure> {
    let (id, name) = match &r.template {
        TemplateRef::Id(id) => (Some(id.clone()), None),
        TemplateRef::Name(name) => (None, Some(name.clone())),
    };
    let request = account
        .ec2(region)
        .describe_launch_template_versions()
        .set_launch_template_id(id)
        .set_launch_template_name(name)
        .versions(&r.version)
        .resolve_alias(resolve_alias)
        .send();
    let out = account
        .call(None, "ec2", "DescribeLaunchTemplateVersions", &[], request)
        .await
        .map_err(|e| classify("DescribeLaunchTemplateVersions", &e))?;
    let v = out.launch_template_versions().first().ok_or_else(|| {
        let (TemplateRef::Id(t) | TemplateRef::Name(t)) = &r.template;
        Failure::terminal(format!("launch template {t} has no version {}", r.version))
    })?;
    let label = match (v.launch_template_id(), v.launch_template_name()) {
        (Some(i), Some(n)) => format!("{i} ({n})"),
        (Some(i), None) => i.to_owned(),
        (None, n) => n.unwrap_or("?").to_owned(),
    };
    let data = v.launch_template_data();
    let mappings = mappings(data.map(|d| d.block_device_mappings()).unwrap_or_default());
    Ok(TemplateVersion {
        id: v.launch_template_id().map(str::to_owned),
        label,
        number: v.version_number().and_then(|n| u64::try_from(n).ok()),
        image_id: data.and_then(|d| d.image_id()).map(str::to_owned),
        mappings,
        description: v.version_description().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::launch::Mapping;

    const LT: &str = "lt-0abc";

    fn source(id: Option<&str>, name: Option<&str>, version: &str, via: &'static str) -> LaunchSource {
        LaunchSource::Template {
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            version: version.into(),
            via,
        }
    }

    fn version(id: Option<&str>, number: Option<u64>, image: &str) -> TemplateVersion {
        TemplateVersion {
            id: id.map(str::to_owned),
            label: format!("{} (web)", id.unwrap_or("?")),
            number,
            image_id: Some(image.to_owned()),
            mappings: vec![Mapping { device: "/dev/sdb".into(), encrypted: Some(true), ..Mapping::default() }],
            description: None,
        }
    }

    fn by_id(id: &str, v: &str) -> VersionRef {
        VersionRef { template: TemplateRef::Id(id.into()), version: v.into() }
    }

    #[test]
    fn a_version_is_named_by_its_template_id_else_its_name_whatever_the_way_to_it() {
        let own = source(Some(LT), Some("web"), "3", "the group's launch template");
        let over = source(Some(LT), Some("web"), "3", "an override of its mixed instances policy");
        assert_ne!(own, over);
        let wanted: BTreeSet<VersionRef> = [&own, &over].into_iter().filter_map(VersionRef::of).collect();
        assert_eq!(wanted.into_iter().collect::<Vec<_>>(), [by_id(LT, "3")]);
        assert_eq!(
            VersionRef::of(&source(None, Some("web"), "$Latest", "x")),
            Some(VersionRef { template: TemplateRef::Name("web".into()), version: "$Latest".into() })
        );
        assert_eq!(VersionRef::of(&source(None, None, "1", "x")), None);
        assert_eq!(VersionRef::of(&LaunchSource::Configuration("lc".into())), None);
    }

    #[test]
    fn only_a_version_given_by_its_number_is_numbered() {
        assert_eq!(numbered("3"), Some(3));
        assert_eq!(numbered("12"), Some(12));
        for moving in ["$Latest", "$Default", "", "+1", "-1", "1.0", " 1"] {
            assert_eq!(numbered(moving), None, "{moving:?}");
        }
    }

    #[test]
    fn the_cache_answers_numbered_versions_by_region_id_and_number_and_drops_the_oldest() {
        let mut cache = VersionCache::new(2);
        cache.insert("us-west-2", &version(Some(LT), Some(1), "ami-1"));
        assert_eq!(cache.get("us-west-2", LT, 1), Some(version(Some(LT), Some(1), "ami-1")));
        assert_eq!(cache.get("us-east-1", LT, 1), None, "another region's template");
        assert_eq!(cache.get("us-west-2", LT, 2), None);
        // An answer without its id or number is not kept.
        cache.insert("us-west-2", &version(None, Some(5), "ami-5"));
        cache.insert("us-west-2", &version(Some(LT), None, "ami-x"));
        assert_eq!(cache.entries.len(), 1);
        // Kept once; at capacity, the oldest goes.
        cache.insert("us-west-2", &version(Some(LT), Some(1), "ami-other"));
        assert_eq!(cache.get("us-west-2", LT, 1).unwrap().image_id.as_deref(), Some("ami-1"));
        cache.insert("us-west-2", &version(Some(LT), Some(2), "ami-2"));
        cache.insert("us-west-2", &version(Some(LT), Some(3), "ami-3"));
        assert_eq!((cache.entries.len(), cache.order.len()), (2, 2));
        assert_eq!(cache.get("us-west-2", LT, 1), None);
        assert!(cache.get("us-west-2", LT, 2).is_some() && cache.get("us-west-2", LT, 3).is_some());
        let mut none = VersionCache::new(0);
        none.insert("us-west-2", &version(Some(LT), Some(1), "ami-1"));
        assert_eq!(none.get("us-west-2", LT, 1), None);
    }

    #[test]
    fn only_numbered_versions_named_by_id_come_from_the_cache() {
        let name = VersionRef { template: TemplateRef::Name("web".into()), version: "1".into() };
        let wanted: BTreeSet<VersionRef> =
            [by_id(LT, "1"), by_id(LT, "2"), by_id(LT, "$Latest"), by_id(LT, "$Default"), name.clone()].into();
        // The cache holds every number: $Latest and $Default are read all the same.
        let (found, unread) = split_cached(wanted, |id, n| Some(version(Some(id), Some(n), "ami-1")));
        assert_eq!(found.keys().cloned().collect::<Vec<_>>(), [by_id(LT, "1"), by_id(LT, "2")]);
        assert_eq!(unread, [by_id(LT, "$Default"), by_id(LT, "$Latest"), name]);
        let (found, unread) = split_cached([by_id(LT, "1")].into(), |_, _| None);
        assert!(found.is_empty());
        assert_eq!(unread, [by_id(LT, "1")]);
    }

    #[test]
    fn each_source_is_named_for_its_way_and_a_parameter_takes_the_ami_it_names_now() {
        let plain = version(Some(LT), Some(3), "ami-1");
        let param = version(Some("lt-0def"), Some(7), "resolve:ssm:/golden/ami");
        let versions: Versions =
            [(by_id(LT, "3"), Ok(plain)), (by_id("lt-0def", "$Latest"), Ok(param.clone()))].into_iter().collect();
        let mut now = BTreeMap::new();
        now.insert(by_id("lt-0def", "7"), Ok(Some("ami-now".to_owned())));

        let own = template_spec(&source(Some(LT), Some("web"), "3", "the group's launch template"), &versions, &now);
        let own = own.unwrap();
        assert_eq!(own.name, "launch template lt-0abc (web) version 3, the group's launch template");
        assert_eq!(own.image_id.as_deref(), Some("ami-1"));
        let over = source(Some(LT), None, "3", "an override of its mixed instances policy");
        let over = template_spec(&over, &versions, &now).unwrap();
        assert_eq!(over.name, "launch template lt-0abc (web) version 3, an override of its mixed instances policy");
        assert_eq!(over.mappings, own.mappings);

        let latest = source(Some("lt-0def"), None, "$Latest", "its mixed instances policy");
        let latest = template_spec(&latest, &versions, &now).unwrap();
        assert_eq!(latest.name, "launch template lt-0def (web) version 7 ($Latest), its mixed instances policy");
        assert_eq!(latest.image_id.as_deref(), Some("ami-now"));
        // The resolving read failed: so does the source.
        now.insert(by_id("lt-0def", "7"), Err(Failure::terminal("throttled")));
        assert_eq!(
            template_spec(&source(Some("lt-0def"), None, "$Latest", "x"), &versions, &now).unwrap_err().message,
            "throttled"
        );
        // The version's read failed, or was never made.
        let failed: Versions = [(by_id(LT, "3"), Err(Failure::terminal("gone")))].into_iter().collect();
        assert_eq!(template_spec(&source(Some(LT), None, "3", "x"), &failed, &now).unwrap_err().message, "gone");
        assert!(template_spec(&source(Some(LT), None, "4", "x"), &versions, &now).is_err());
        assert!(template_spec(&source(None, None, "4", "x"), &versions, &now).is_err());
    }

    #[test]
    fn a_version_is_pinned_by_the_id_and_number_its_answer_gives() {
        let asked = VersionRef { template: TemplateRef::Name("web".into()), version: "$Default".into() };
        assert_eq!(version(Some(LT), Some(4), "x").pinned(&asked), by_id(LT, "4"));
        assert_eq!(version(None, Some(4), "x").pinned(&asked), asked);
        assert_eq!(version(Some(LT), None, "x").pinned(&asked), asked);
    }
}
