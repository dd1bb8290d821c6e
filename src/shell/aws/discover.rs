//! Reads what groups will launch with, and which keys that needs: their launch template
//! versions and launch configurations, the AMIs' snapshots, and the account's EBS
//! encryption defaults (reads only). [`crate::core::launch::keys_used`] decides from that data.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::error::{classify, code};
use super::mapping::mappings;
use super::reads::{asg_of, describe_key_ref};
use super::Account;
use crate::core::launch::{self, EbsDefaults, GroupLaunch, Image, Images, LaunchKey, LaunchSpec, Mapping, SnapshotKey};
use crate::core::model::{Asg, AsgRef, Failure, KeyArn, KeyManager, LaunchSource};

/// DescribeImages and DescribeSnapshots take this many ids a call here.
const BATCH: usize = 100;
/// DescribeLaunchConfigurations takes up to 50 names.
const LC_BATCH: usize = 50;
/// The errors with which DescribeImages refuses a whole list for one id in it (EC2 API
/// Reference, error codes): the ids are then asked one by one.
const IMAGE_ID_ERRORS: [&str; 3] = ["InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"];

/// What each group's launches use, for groups of one account and region. The reads run
/// `limit` at a time. A read that fails fails only what depends on it: a launch template
/// or configuration the groups on it, an AMI the keys of its snapshots (said in the
/// group's notes), a snapshot its key; only the region's EBS defaults fail every group.
pub async fn group_launches(
    account: &Arc<Account>,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
    limit: usize,
) -> Vec<(AsgRef, Result<GroupLaunch, Failure>)> {
    match read_all(account, region, groups, limit).await {
        Ok(out) => out,
        Err(f) => groups.iter().map(|(g, _)| (g.clone(), Err(f.clone()))).collect(),
    }
}

/// Runs `read(item)` for each item, `limit` at a time, through the one bounded spawner;
/// a read whose task panicked answers `Err`.
async fn concurrently<I, T, F, Fut>(items: Vec<I>, limit: usize, read: F) -> Vec<(I, Result<T, Failure>)>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>> + Send + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut lost = Vec::new();
    let start = |(i, item): (usize, I)| {
        let read = read(item);
        async move { (i, read.await) }
    };
    let indexed: Vec<(usize, I)> = items.iter().cloned().enumerate().collect();
    crate::shell::bounded::for_each(indexed, limit, start, |joined| match joined {
        Ok((i, r)) => out.push((i, r)),
        Err(e) => lost.push(e.to_string()),
    })
    .await;
    let mut by_index: BTreeMap<usize, Result<T, Failure>> = out.into_iter().collect();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let r = by_index.remove(&i).unwrap_or_else(|| {
                tracing::error!(errors = ?lost, "a launch read task failed");
                Err(Failure::terminal("the read failed inside the operator"))
            });
            (item, r)
        })
        .collect()
}

async fn read_all(
    account: &Arc<Account>,
    region: &str,
    groups: &[(AsgRef, Vec<LaunchSource>)],
    limit: usize,
) -> Result<Vec<(AsgRef, Result<GroupLaunch, Failure>)>, Failure> {
    let sources: BTreeSet<&LaunchSource> = groups.iter().flat_map(|(_, s)| s).collect();
    if sources.is_empty() {
        return Ok(groups.iter().map(|(g, _)| (g.clone(), Ok(GroupLaunch::default()))).collect());
    }
    let mut specs = configuration_specs(account, region, &sources).await;
    // Each (template, version) is read once, whichever way groups reach it; the specs,
    // which name the way, are made after.
    let wanted: BTreeSet<VersionRef> = sources.iter().filter_map(|s| VersionRef::of(s)).collect();
    let versions = template_versions(account, region, wanted, limit).await;
    let images_now = resolve_images(account, region, &versions, limit).await;
    for source in sources.iter().filter(|s| matches!(s, LaunchSource::Template { .. })) {
        specs.insert((*source).clone(), template_spec(source, &versions, &images_now));
    }

    let images: BTreeSet<String> =
        specs.values().flatten().filter_map(|s| s.image_id.clone()).filter(|id| !id.starts_with("resolve:")).collect();
    let images = image_reads(account, region, images, limit).await;
    let snapshots: BTreeSet<String> = specs
        .values()
        .flatten()
        .flat_map(|s| &s.mappings)
        .chain(images.values().flatten().flat_map(|i| &i.mappings))
        .filter(|m| launch::snapshot_needed(m))
        .filter_map(|m| m.snapshot_id.clone())
        .collect();
    let snapshots = snapshot_keys(account, region, snapshots, limit).await;
    let defaults = ebs_defaults(account, region).await?;

    // What each group uses, then every key named, described once.
    let used = group_uses(groups, &specs, &images, &snapshots, &defaults);
    let described = describe_found(account, region, &used, limit).await;
    Ok(with_keys(used, &described))
}

/// The specs of the launch configurations among `sources`, read in batches.
async fn configuration_specs(
    account: &Account,
    region: &str,
    sources: &BTreeSet<&LaunchSource>,
) -> BTreeMap<LaunchSource, Result<LaunchSpec, Failure>> {
    let mut specs: BTreeMap<LaunchSource, Result<LaunchSpec, Failure>> = BTreeMap::new();
    let configurations: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            LaunchSource::Configuration(n) => Some(n.as_str()),
            LaunchSource::Template { .. } => None,
        })
        .collect();
    let mut by_name = launch_configurations(account, region, &configurations).await;
    for name in configurations {
        let spec = match &mut by_name {
            Ok(found) => {
                found.remove(name).ok_or_else(|| Failure::terminal(format!("launch configuration {name} not found")))
            }
            Err(f) => Err(f.clone()),
        };
        specs.insert(LaunchSource::Configuration(name.to_owned()), spec);
    }
    specs
}

/// Per group: its notes so far and the keys found, before they are described.
type Used = Result<(GroupLaunch, Vec<launch::Found>), Failure>;

/// What each group's sources use, from the specs, images and snapshots read.
fn group_uses(
    groups: &[(AsgRef, Vec<LaunchSource>)],
    specs: &BTreeMap<LaunchSource, Result<LaunchSpec, Failure>>,
    images: &Images,
    snapshots: &BTreeMap<String, SnapshotKey>,
    defaults: &EbsDefaults,
) -> Vec<(AsgRef, Used)> {
    let mut used: Vec<(AsgRef, Used)> = Vec::new();
    for (group, sources) in groups {
        let mut g = GroupLaunch::default();
        let mut found: Vec<launch::Found> = Vec::new();
        let mut failure = None;
        for s in sources {
            let spec = match &specs[s] {
                Ok(spec) => spec,
                Err(f) => {
                    failure = Some(f.clone());
                    break;
                }
            };
            if spec.spot {
                g.spot.push(spec.name.clone());
            }
            g.sources.push(launch::source_read(s, spec, images, snapshots, Some(defaults.account.as_str())));
            let uses = launch::keys_used(spec, images, snapshots, defaults);
            g.unknown.extend(uses.unknown);
            for f in uses.keys {
                if !found.iter().any(|k| k.key_ref == f.key_ref) {
                    found.push(f);
                }
            }
        }
        used.push((group.clone(), failure.map_or(Ok((g, found)), Err)));
    }
    used
}

/// Every key the groups' launches name, described once.
async fn describe_found(
    account: &Arc<Account>,
    region: &str,
    used: &[(AsgRef, Used)],
    limit: usize,
) -> BTreeMap<String, Result<(KeyArn, KeyManager), String>> {
    let key_refs: BTreeSet<String> =
        used.iter().filter_map(|(_, r)| r.as_ref().ok()).flat_map(|(_, f)| f).map(|f| f.key_ref.clone()).collect();
    let describe = |key_ref: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_key_ref(&account, &region, &key_ref).await }
    };
    concurrently(key_refs.into_iter().collect(), limit, describe)
        .await
        .into_iter()
        .map(|(k, r)| (k, r.map(|i| (i.arn, i.manager)).map_err(|f| f.message)))
        .collect()
}

/// Each group's launch with the keys found, as described.
fn with_keys(
    used: Vec<(AsgRef, Used)>,
    described: &BTreeMap<String, Result<(KeyArn, KeyManager), String>>,
) -> Vec<(AsgRef, Result<GroupLaunch, Failure>)> {
    used.into_iter()
        .map(|(group, r)| {
            let r = r.map(|(mut g, found)| {
                g.keys = found
                    .into_iter()
                    .map(|f| {
                        let resolved = described[&f.key_ref].clone();
                        LaunchKey { key_ref: f.key_ref, source: f.source, resolved }
                    })
                    .collect();
                g
            });
            (group, r)
        })
        .collect()
}

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
}

impl TemplateVersion {
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
struct VersionRef {
    template: TemplateRef,
    version: String,
}

impl VersionRef {
    fn of(source: &LaunchSource) -> Option<VersionRef> {
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
async fn template_versions(
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
async fn resolve_images(
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
fn template_spec(
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
    })
}

pub(super) async fn launch_configurations(
    account: &Account,
    region: &str,
    names: &[&str],
) -> Result<BTreeMap<String, LaunchSpec>, Failure> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(LC_BATCH) {
        let request = account
            .autoscaling(region)
            .describe_launch_configurations()
            .set_launch_configuration_names(Some(chunk.iter().map(|n| n.to_string()).collect()))
            .send();
        let page = account
            .call(None, "autoscaling", "DescribeLaunchConfigurations", &[], request)
            .await
            .map_err(|e| classify("DescribeLaunchConfigurations", &e))?;
        for lc in page.launch_configurations() {
            let name = lc.launch_configuration_name().unwrap_or_default().to_owned();
            let spec = LaunchSpec {
                name: format!("launch configuration {name}"),
                image_id: lc.image_id().map(str::to_owned),
                mappings: mappings(lc.block_device_mappings()),
                spot: lc.spot_price().is_some_and(|p| !p.is_empty()),
                template: None,
            };
            out.insert(name, spec);
        }
    }
    Ok(out)
}

/// Each AMI, or why it could not be read. DescribeImages refuses a whole list when one id
/// in it is unknown or malformed, so such a batch is asked again image by image: one
/// deregistered, unshared or malformed image fails only itself.
async fn image_reads(account: &Arc<Account>, region: &str, ids: BTreeSet<String>, limit: usize) -> Images {
    let batches: Vec<Vec<String>> = ids.into_iter().collect::<Vec<_>>().chunks(BATCH).map(<[String]>::to_vec).collect();
    let read = |batch: Vec<String>| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { Ok(describe_images(&account, &region, &batch).await) }
    };
    let mut out = Images::new();
    let mut again: Vec<String> = Vec::new();
    for (batch, answer) in concurrently(batches, limit, read).await {
        match answer {
            Ok(Ok(found)) => collect_images(&mut out, &batch, found),
            Ok(Err((Some(c), _))) if batch.len() > 1 && IMAGE_ID_ERRORS.contains(&c.as_str()) => again.extend(batch),
            Ok(Err((_, f))) | Err(f) => out.extend(batch.into_iter().map(|id| (id, Err(f.message.clone())))),
        }
    }
    let read = |id: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_images(&account, &region, std::slice::from_ref(&id)).await.map_err(|(_, f)| f) }
    };
    for (id, answer) in concurrently(again, limit, read).await {
        match answer {
            Ok(found) => collect_images(&mut out, std::slice::from_ref(&id), found),
            Err(f) => {
                out.insert(id, Err(f.message));
            }
        }
    }
    out
}

/// Files the images of one answer under the ids asked; an id not answered was not found.
fn collect_images(out: &mut Images, asked: &[String], found: Vec<(String, Image)>) {
    let mut found: BTreeMap<String, Image> = found.into_iter().collect();
    for id in asked {
        let image = found.remove(id).ok_or_else(|| {
            "not found: deregistered, or not shared with this account (DescribeImages does not show it)".to_owned()
        });
        out.insert(id.clone(), image);
    }
}

/// One DescribeImages call; on failure, the error code with the failure.
async fn describe_images(
    account: &Account,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, Image)>, (Option<String>, Failure)> {
    let request = account.ec2(region).describe_images().set_image_ids(Some(ids.to_vec())).send();
    let page = match account.call(None, "ec2", "DescribeImages", &IMAGE_ID_ERRORS, request).await {
        Ok(p) => p,
        Err(e) => {
            let failure = match code(&e) {
                Some("InvalidAMIID.NotFound") if ids.len() == 1 => Failure::terminal(
                    "not found: deregistered, or not shared with this account (InvalidAMIID.NotFound)",
                ),
                Some("InvalidAMIID.Malformed") if ids.len() == 1 => {
                    Failure::terminal("not an image id (InvalidAMIID.Malformed)")
                }
                Some("InvalidAMIID.Unavailable") if ids.len() == 1 => {
                    Failure::terminal("no longer available (InvalidAMIID.Unavailable)")
                }
                _ => classify("DescribeImages", &e),
            };
            return Err((code(&e).map(str::to_owned), failure));
        }
    };
    Ok(page
        .images()
        .iter()
        .map(|image| {
            let owner = image.owner_id().map(str::to_owned);
            let mappings = mappings(image.block_device_mappings());
            (image.image_id().unwrap_or_default().to_owned(), Image { owner, mappings })
        })
        .collect())
}

/// Each snapshot's key. A batch that fails (a snapshot not shared with this account fails
/// the whole call) is asked again snapshot by snapshot, so one unreadable snapshot does
/// not hide the others.
async fn snapshot_keys(
    account: &Arc<Account>,
    region: &str,
    ids: BTreeSet<String>,
    limit: usize,
) -> BTreeMap<String, SnapshotKey> {
    let batches: Vec<Vec<String>> = ids.into_iter().collect::<Vec<_>>().chunks(BATCH).map(<[String]>::to_vec).collect();
    let read = |batch: Vec<String>| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_snapshots(&account, &region, &batch).await }
    };
    let mut out = BTreeMap::new();
    let mut again: Vec<String> = Vec::new();
    for (batch, answer) in concurrently(batches, limit, read).await {
        match answer {
            Ok(found) => out.extend(found),
            Err(f) if batch.len() > 1 => {
                tracing::debug!(error = %f, "a snapshot batch failed; asking one by one");
                again.extend(batch);
            }
            Err(f) => {
                out.extend(batch.into_iter().map(|id| (id, SnapshotKey::Unknown(f.message.clone()))));
            }
        }
    }
    let read = |id: String| {
        let (account, region) = (account.clone(), region.to_owned());
        async move { describe_snapshots(&account, &region, std::slice::from_ref(&id)).await }
    };
    for (id, answer) in concurrently(again, limit, read).await {
        match answer {
            Ok(found) => out.extend(found),
            Err(f) => {
                out.insert(id, SnapshotKey::Unknown(f.message));
            }
        }
    }
    out
}

async fn describe_snapshots(
    account: &Account,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, SnapshotKey)>, Failure> {
    let request = account.ec2(region).describe_snapshots().set_snapshot_ids(Some(ids.to_vec())).send();
    let expected = ["InvalidSnapshot.NotFound"];
    let page = match account.call(None, "ec2", "DescribeSnapshots", &expected, request).await {
        Ok(p) => p,
        Err(e) if code(&e) == Some("InvalidSnapshot.NotFound") && ids.len() == 1 => {
            return Ok(vec![(
                ids[0].clone(),
                SnapshotKey::Unknown("not found, or not shared with this account".into()),
            )])
        }
        Err(e) => return Err(classify("DescribeSnapshots", &e)),
    };
    Ok(page
        .snapshots()
        .iter()
        .map(|s| {
            let key = match (s.encrypted(), s.kms_key_id()) {
                (Some(true), Some(k)) => SnapshotKey::Encrypted(k.to_owned()),
                (Some(true), None) => SnapshotKey::Unknown("encrypted, but its key is not shown".into()),
                _ => SnapshotKey::Unencrypted,
            };
            (s.snapshot_id().unwrap_or_default().to_owned(), key)
        })
        .collect())
}

async fn ebs_defaults(account: &Account, region: &str) -> Result<EbsDefaults, Failure> {
    let ec2 = account.ec2(region);
    let by_default = account
        .call(None, "ec2", "GetEbsEncryptionByDefault", &[], ec2.get_ebs_encryption_by_default().send())
        .await
        .map_err(|e| classify("GetEbsEncryptionByDefault", &e))?;
    let key = account
        .call(None, "ec2", "GetEbsDefaultKmsKeyId", &[], ec2.get_ebs_default_kms_key_id().send())
        .await
        .map_err(|e| classify("GetEbsDefaultKmsKeyId", &e))?;
    Ok(EbsDefaults {
        by_default: by_default.ebs_encryption_by_default().unwrap_or(false),
        key: key.kms_key_id().unwrap_or("alias/aws/ebs").to_owned(),
        account: account.id().to_string(),
    })
}

/// The groups of one account and region (all of them, or those named), as plain data.
/// A named group that does not exist is an error naming it.
pub async fn describe_groups(account: &Account, region: &str, names: &[String]) -> Result<Vec<(AsgRef, Asg)>, Failure> {
    let client = account.autoscaling(region);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    // DescribeAutoScalingGroups takes up to 100 names a call; with none, it pages through all.
    let batches: Vec<Option<Vec<String>>> =
        if names.is_empty() { vec![None] } else { names.chunks(100).map(|c| Some(c.to_vec())).collect() };
    for batch in batches {
        loop {
            let request = client
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(batch.clone())
                .max_records(100)
                .set_next_token(token.take())
                .send();
            let page = account
                .call(None, "autoscaling", "DescribeAutoScalingGroups", &[], request)
                .await
                .map_err(|e| classify("DescribeAutoScalingGroups", &e))?;
            for g in page.auto_scaling_groups() {
                let asg = AsgRef::new(*account.id(), region, g.auto_scaling_group_name().unwrap_or_default());
                out.push((asg, asg_of(g)));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    let missing: Vec<&str> =
        names.iter().filter(|n| !out.iter().any(|(a, _)| &a.name == *n)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Failure::terminal(format!("no Auto Scaling group {} in {region}", missing.join(", "))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
