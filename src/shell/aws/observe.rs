//! Reads only. Turns AWS state into plain [`Observed`] data; a missing resource is
//! `Ok(None)`, and a failed read is recorded as data rather than aborting the pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::classify;
use super::reads::{asg_of, describe_key_ref, dry_run_grant, get_key_policy, get_role};
use super::{Account, Aws};
use crate::core::activity::{Activity, Sweep};
use crate::core::model::desired::Desired;
use crate::core::model::observed::{Observed, Reads};
use crate::core::model::DryRun;
use crate::core::model::{
    AccountId, Asg, AsgRef, ErrorClass, Failure, Grant, KeyArn, KeyInfo, KeyManager, LaunchActivity, LaunchSource,
    Role, Slr,
};

/// At most this many reads in flight at once, across all accounts and regions.
pub const READ_CONCURRENCY: usize = 16;
/// DescribeAutoScalingGroups accepts up to 100 names per call.
const ASG_BATCH: usize = 100;

enum Job {
    Role(Slr),
    /// DescribeKey, by the key or alias ARN as configured.
    Describe(KeyArn),
    Policy(KeyArn),
    Grants(KeyArn),
    /// Up to 100 ASGs of one account and region.
    Asgs(Vec<AsgRef>),
    /// One sweep of the scaling activities of an account and Region, for these groups.
    Launches(Vec<AsgRef>),
    /// A hand-off key, described with a group account's credentials.
    DescribeAs(KeyArn, AccountId),
    /// The grants on a hand-off key that a group account may retire (its own).
    RetirableGrants(KeyArn, AccountId),
    /// CreateGrant with DryRun on a hand-off key, with the role's account's credentials.
    DryRun(KeyArn, Slr),
}

/// The account whose credentials a job reads with.
fn job_account(job: &Job) -> AccountId {
    match job {
        Job::Role(slr) => slr.account,
        Job::Describe(key) | Job::Policy(key) | Job::Grants(key) => *key.account(),
        Job::Asgs(asgs) => asgs.first().map(|a| a.account).expect("batches are never empty"),
        Job::Launches(asgs) => asgs.first().map(|a| a.account).expect("sweeps are never empty"),
        Job::DescribeAs(_, account) | Job::RetirableGrants(_, account) => *account,
        Job::DryRun(_, slr) => slr.account,
    }
}

async fn run(account: Arc<Account>, job: Job) -> Read {
    match job {
        Job::Role(slr) => {
            let r = get_role(&account, &slr).await;
            Read::Role(slr, r)
        }
        Job::Describe(key) => {
            let r = describe_key(&account, &key).await;
            Read::Described(key, r)
        }
        Job::Policy(key) => {
            let r = get_key_policy(&account, &key).await;
            Read::Policy(key, r)
        }
        Job::Grants(key) => {
            let r = list_grants(&account, &key).await;
            Read::Grants(key, r)
        }
        Job::Asgs(asgs) => Read::Asgs(describe_asgs(&account, asgs).await),
        Job::Launches(asgs) => Read::Launches(last_launches(&account, asgs).await),
        Job::DescribeAs(key, _) => {
            let r = describe_key(&account, &key).await;
            Read::Described(key, r)
        }
        Job::RetirableGrants(key, _) => {
            let r = list_retirable_grants(&account, &key).await;
            Read::MoreGrants(key, r)
        }
        Job::DryRun(key, slr) => {
            let r = dry_run_grant(&account, &key, &slr).await;
            Read::DryRun(key, slr, r)
        }
    }
}

enum Read {
    Role(Slr, Result<Option<Role>, Failure>),
    Described(KeyArn, Result<KeyInfo, Failure>),
    Policy(KeyArn, Result<String, Failure>),
    Grants(KeyArn, Result<Vec<Grant>, Failure>),
    Asgs(Vec<(AsgRef, Result<Option<Asg>, Failure>)>),
    Launches(Vec<(AsgRef, Result<Option<LaunchActivity>, Failure>)>),
    /// Grants to add to the key's (several group accounts list theirs).
    MoreGrants(KeyArn, Result<Vec<Grant>, Failure>),
    DryRun(KeyArn, Slr, Result<DryRun, Failure>),
}

/// Performs every read in `reads`, concurrently and bounded, and returns what was seen.
pub async fn observe(aws: &Arc<Aws>, desired: &Desired, reads: &Reads) -> Observed {
    let mut observed = Observed::default();
    let handles = account_handles(aws, desired, reads, &mut observed).await;
    run_jobs(&handles, first_jobs(reads, &handles), &mut observed).await;
    let resolved = alias_jobs(reads, &observed);
    run_jobs(&handles, resolved, &mut observed).await;
    read_launch_keys(&handles, reads, &mut observed).await;
    super::reencrypt::observe(&handles, desired, reads, &mut observed).await;
    super::cleanup::observe(&handles, desired, reads, &mut observed).await;
    observed
}

/// A handle on every account to be read, its role assumed; the accounts whose
/// credentials could not be had are recorded as such.
async fn account_handles(
    aws: &Arc<Aws>,
    desired: &Desired,
    reads: &Reads,
    observed: &mut Observed,
) -> BTreeMap<AccountId, Arc<Account>> {
    let mut handles: BTreeMap<AccountId, Arc<Account>> = BTreeMap::new();
    let credentials = |account: AccountId| {
        let (aws, role) = (aws.clone(), desired.accounts.get(&account).cloned());
        async move { (account, aws.ensure_account(&account, role.as_deref()).await) }
    };
    crate::shell::bounded::for_each(
        reads.accounts.iter().copied(),
        READ_CONCURRENCY,
        credentials,
        |joined| match joined {
            Ok((account, Ok(handle))) => {
                handles.insert(account, handle);
            }
            Ok((account, Err(f))) => {
                observed.account_errors.insert(account, f);
            }
            // A panicked task leaves its account without a handle: its reads are not made,
            // and the planner blocks the bindings that needed them.
            Err(e) => tracing::error!(error = %e, "credentials task failed"),
        },
    )
    .await;
    handles
}

/// The first round of reads, of every account with a handle.
fn first_jobs(reads: &Reads, handles: &BTreeMap<AccountId, Arc<Account>>) -> Vec<Job> {
    let usable = |a: &AccountId| handles.contains_key(a);
    // The keys are described while everything else is read. A key named by an alias is
    // known only once described, so its policy and grants are read in a second round
    // (alias_jobs).
    let mut jobs: Vec<Job> = Vec::new();
    jobs.extend(reads.roles.iter().filter(|s| usable(&s.account)).cloned().map(Job::Role));
    let keys = reads.keys.iter().filter(|k| usable(k.account()));
    for key in keys {
        jobs.push(Job::Describe(key.clone()));
        if !key.is_alias() {
            jobs.push(Job::Policy(key.clone()));
            if reads.grant_keys.contains(key) {
                jobs.push(Job::Grants(key.clone()));
            }
        }
    }
    for (_, asgs) in reads.asgs.iter().filter(|((a, _), _)| usable(a)) {
        let asgs: Vec<&AsgRef> = asgs.iter().collect();
        for chunk in asgs.chunks(ASG_BATCH) {
            jobs.push(Job::Asgs(chunk.iter().map(|a| (*a).clone()).collect()));
        }
    }
    let mut sweeps: BTreeMap<(AccountId, &str), Vec<AsgRef>> = BTreeMap::new();
    for asg in reads.launches.iter().filter(|a| usable(&a.account)) {
        sweeps.entry((asg.account, asg.region.as_str())).or_default().push(asg.clone());
    }
    jobs.extend(sweeps.into_values().map(Job::Launches));
    for (key, slrs) in &reads.handoff {
        let accounts: std::collections::BTreeSet<AccountId> =
            slrs.iter().map(|s| s.account).filter(|a| usable(a)).collect();
        let Some(first) = accounts.first() else { continue };
        jobs.push(Job::DescribeAs(key.clone(), *first));
        jobs.extend(accounts.iter().map(|a| Job::RetirableGrants(key.clone(), *a)));
        jobs.extend(slrs.iter().filter(|s| usable(&s.account)).map(|s| Job::DryRun(key.clone(), s.clone())));
    }
    jobs
}

/// The second round: the policy and grants of each key named by an alias, now that the
/// first round described it.
fn alias_jobs(reads: &Reads, observed: &Observed) -> Vec<Job> {
    let mut resolved: Vec<Job> = Vec::new();
    for (alias, info) in observed.keys.iter().filter(|(k, _)| k.is_alias()) {
        // A key EBS cannot use, or one AWS manages, is not read any further.
        let Ok(info) = info else { continue };
        if info.manager == KeyManager::Aws || info.state != "Enabled" {
            continue;
        }
        if !observed.key_policies.contains_key(&info.arn)
            && !resolved.iter().any(|j| matches!(j, Job::Policy(k) if *k == info.arn))
        {
            resolved.push(Job::Policy(info.arn.clone()));
        }
        let grants_wanted = reads.grant_keys.contains(alias) && !observed.grants.contains_key(&info.arn);
        if grants_wanted && !resolved.iter().any(|j| matches!(j, Job::Grants(k) if *k == info.arn)) {
            resolved.push(Job::Grants(info.arn.clone()));
        }
    }
    resolved
}

/// On full passes: what the bound groups launch with, per account and region, once their
/// descriptions are in.
async fn read_launch_keys(handles: &BTreeMap<AccountId, Arc<Account>>, reads: &Reads, observed: &mut Observed) {
    type Groups = Vec<(AsgRef, Vec<LaunchSource>)>;
    let mut places: BTreeMap<(AccountId, String), Groups> = BTreeMap::new();
    for asg in reads.launches.union(&reads.reencrypt) {
        if let (Some(Ok(Some(g))), true) = (observed.asgs.get(asg), handles.contains_key(&asg.account)) {
            places.entry((asg.account, asg.region.clone())).or_default().push((asg.clone(), g.sources.clone()));
        }
    }
    // Each place's reads run concurrently too; together at most READ_CONCURRENCY.
    let (at_once, each) = launch_read_limits(places.len());
    let start = |((account, region), groups): ((AccountId, String), Groups)| {
        let handle = handles[&account].clone();
        async move { super::discover::group_launches(&handle, &region, &groups, each).await }
    };
    crate::shell::bounded::for_each(places, at_once, start, |joined| match joined {
        Ok(rows) => observed.launch_keys.extend(rows),
        Err(e) => tracing::error!(error = %e, "launch reads failed"),
    })
    .await;
}

/// How many places' launch reads run at once, and how many reads each runs at once: a
/// split of READ_CONCURRENCY, so that no more than that many are in flight.
fn launch_read_limits(places: usize) -> (usize, usize) {
    let at_once = places.clamp(1, READ_CONCURRENCY);
    (at_once, (READ_CONCURRENCY / at_once).max(1))
}

/// Runs `jobs`, READ_CONCURRENCY at a time, each with its account's credentials, and
/// records what each saw. A job in an account without credentials is not run: it is
/// recorded as failed. That happens when AWS names an account the config does not, as
/// when an alias resolves to a key in another account.
async fn run_jobs(handles: &BTreeMap<AccountId, Arc<Account>>, jobs: Vec<Job>, observed: &mut Observed) {
    let start = |job: Job| {
        let handle = handles.get(&job_account(&job)).cloned();
        async move {
            match handle {
                Some(handle) => run(handle, job).await,
                None => without_credentials(job),
            }
        }
    };
    crate::shell::bounded::for_each(jobs, READ_CONCURRENCY, start, |joined| match joined {
        Ok(Read::Role(slr, r)) => {
            observed.roles.insert((slr.account, slr.name()), r);
        }
        Ok(Read::Described(k, r)) => {
            observed.keys.insert(k, r);
        }
        Ok(Read::Policy(k, r)) => {
            observed.key_policies.insert(k, r);
        }
        Ok(Read::Grants(k, r)) => {
            observed.grants.insert(k, r);
        }
        Ok(Read::Asgs(rows)) => observed.asgs.extend(rows),
        Ok(Read::Launches(rows)) => observed.launches.extend(rows),
        Ok(Read::MoreGrants(k, r)) => {
            // Every group account's list, or the first failure.
            match (observed.grants.entry(k).or_insert_with(|| Ok(Vec::new())), r) {
                (Ok(all), Ok(more)) => all.extend(more),
                (entry @ Ok(_), Err(f)) => *entry = Err(f),
                (Err(_), _) => {}
            }
        }
        Ok(Read::DryRun(k, slr, r)) => {
            observed.handoff.insert((k, slr), r);
        }
        // A panicked read leaves its entries unobserved; the planner blocks the bindings
        // that needed them.
        Err(e) => tracing::error!(error = %e, "read task failed"),
    })
    .await;
}

/// What a job reads when its account has no credentials: a terminal failure for each of
/// its entries, naming the account.
fn without_credentials(job: Job) -> Read {
    let account = job_account(&job);
    let f = Failure::terminal(format!(
        "AWS named account {account}, which has no credentials here: add it under accounts with a role to assume"
    ));
    match job {
        Job::Role(slr) => Read::Role(slr, Err(f)),
        Job::Describe(key) => Read::Described(key, Err(f)),
        Job::Policy(key) => Read::Policy(key, Err(f)),
        Job::Grants(key) => Read::Grants(key, Err(f)),
        Job::Asgs(asgs) => Read::Asgs(asgs.into_iter().map(|a| (a, Err(f.clone()))).collect()),
        Job::Launches(asgs) => Read::Launches(asgs.into_iter().map(|a| (a, Err(f.clone()))).collect()),
        Job::DescribeAs(key, _) => Read::Described(key, Err(f)),
        Job::RetirableGrants(key, _) => Read::MoreGrants(key, Err(f)),
        Job::DryRun(key, slr) => Read::DryRun(key, slr, Err(f)),
    }
}

/// The most recent launch of each of `asgs` (all of one account and Region), from one
/// sweep of the Region's scaling activities that stops where the last one did
/// ([`crate::core::activity`]). A failed page fails every group of the sweep.
async fn last_launches(account: &Account, asgs: Vec<AsgRef>) -> Vec<(AsgRef, Result<Option<LaunchActivity>, Failure>)> {
    let region = asgs[0].region.clone();
    let last = account.swept(&region);
    let mut sweep = Sweep::new(&last, asgs.iter().map(|a| a.name.clone()));
    let mut token: Option<String> = None;
    loop {
        let request = account
            .autoscaling(&region)
            .describe_scaling_activities()
            .max_records(ACTIVITY_PAGE)
            .set_next_token(token.take())
            .send();
        let out = match account.call(None, "autoscaling", "DescribeScalingActivities", &[], request).await {
            Ok(out) => out,
            Err(e) => {
                let f = classify("DescribeScalingActivities", &e);
                return asgs.into_iter().map(|a| (a, Err(f.clone()))).collect();
            }
        };
        let page = out.activities().iter().map(|a| Activity {
            id: a.activity_id().unwrap_or_default().to_owned(),
            group: a.auto_scaling_group_name().unwrap_or_default().to_owned(),
            launch: LaunchActivity {
                status_code: a.status_code().map_or("Unknown", |s| s.as_str()).to_owned(),
                status_message: a.status_message().map(str::to_owned),
                start_time: a.start_time().map(|t| t.to_string()),
                description: a.description().unwrap_or_default().to_owned(),
            },
        });
        token = out.next_token().map(str::to_owned);
        if !sweep.page(page, token.is_some()) {
            break;
        }
    }
    let (mut found, next) = sweep.finish();
    account.set_swept(&region, next);
    asgs.into_iter()
        .map(|a| {
            let launch = found.remove(&a.name).flatten();
            (a, Ok(launch))
        })
        .collect()
}

/// DescribeScalingActivities' MaxRecords: at most 100.
const ACTIVITY_PAGE: i32 = 100;

/// DescribeKey, by key or alias ARN, with the key owner's credentials. It works in every
/// key state (KMS Developer Guide, "Key states of AWS KMS keys").
async fn describe_key(account: &Account, key: &KeyArn) -> Result<KeyInfo, Failure> {
    describe_key_ref(account, key.region(), key.as_str()).await
}

/// Lists grants with the key owner's credentials: the owner may always read its key's
/// grants, while the ASG account would need kms:ListGrants in the owner's key policy,
/// which the procedure does not add.
async fn list_grants(account: &Account, key: &KeyArn) -> Result<Vec<Grant>, Failure> {
    let client = account.kms(key.region());
    let mut grants = Vec::new();
    let mut marker: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let request = client.list_grants().key_id(key.as_str()).limit(100).set_marker(marker.take()).send();
        let out = account.call(None, "kms", "ListGrants", &[], request).await;
        let out = out.map_err(|e| classify("ListGrants", &e))?;
        grants.extend(out.grants().iter().map(grant_of));
        match (out.truncated(), out.next_marker()) {
            // A marker seen before would page forever.
            (true, Some(m)) if !seen.insert(m.to_owned()) => {
                return Err(Failure {
                    class: ErrorClass::Retryable,
                    message: format!("ListGrants on {key} answered marker {m:?} a second time; paging stopped"),
                })
            }
            (true, Some(m)) => marker = Some(m.to_owned()),
            _ => return Ok(grants),
        }
    }
}

/// The grants on a hand-off key whose retiring principal is the group's account, from
/// ListRetirableGrants in that account: it lists grants on other accounts' keys too, with
/// no permission in the key's account (KMS API Reference, ListRetirableGrants). The
/// operator names the group's account as retiring principal on every grant it creates,
/// so its grants are all there, while ListGrants would need the owner's leave.
async fn list_retirable_grants(account: &Account, key: &KeyArn) -> Result<Vec<Grant>, Failure> {
    let client = account.kms(key.region());
    let retiring = account.id().root_arn(key.partition());
    let mut grants = Vec::new();
    let mut marker: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let request =
            client.list_retirable_grants().retiring_principal(&retiring).limit(100).set_marker(marker.take()).send();
        let out = account.call(None, "kms", "ListRetirableGrants", &[], request).await;
        let out = out.map_err(|e| classify("ListRetirableGrants", &e))?;
        grants.extend(out.grants().iter().filter(|g| g.key_id() == Some(key.as_str())).map(grant_of));
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) if !seen.insert(m.to_owned()) => {
                return Err(Failure {
                    class: ErrorClass::Retryable,
                    message: format!("ListRetirableGrants answered marker {m:?} a second time; paging stopped"),
                })
            }
            (true, Some(m)) => marker = Some(m.to_owned()),
            _ => return Ok(grants),
        }
    }
}

fn grant_of(g: &aws_sdk_kms::types::GrantListEntry) -> Grant {
    Grant {
        grant_id: g.grant_id().unwrap_or_default().to_owned(),
        name: g.name().map(str::to_owned),
        grantee_principal: g.grantee_principal().unwrap_or_default().to_owned(),
        operations: g.operations().iter().map(|o| o.as_str().to_owned()).collect(),
        constrained: g.constraints().is_some_and(|c| {
            c.encryption_context_subset().is_some_and(|m| !m.is_empty())
                || c.encryption_context_equals().is_some_and(|m| !m.is_empty())
        }),
    }
}

/// One batch of up to 100 ASGs of one account and region; every one gets an answer.
async fn describe_asgs(account: &Account, asgs: Vec<AsgRef>) -> Vec<(AsgRef, Result<Option<Asg>, Failure>)> {
    let Some(first) = asgs.first() else { return Vec::new() };
    let client = account.autoscaling(&first.region);
    let names: Vec<String> = asgs.iter().map(|a| a.name.clone()).collect();
    let mut found: BTreeMap<String, Asg> = BTreeMap::new();
    let mut token: Option<String> = None;
    let result = loop {
        let request = client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(names.clone()))
            .max_records(ASG_BATCH as i32)
            .set_next_token(token.take())
            .send();
        match account.call(None, "autoscaling", "DescribeAutoScalingGroups", &[], request).await {
            Ok(o) => {
                for g in o.auto_scaling_groups() {
                    found.insert(g.auto_scaling_group_name().unwrap_or_default().to_owned(), asg_of(g));
                }
                match o.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => break Ok(()),
                }
            }
            Err(e) => break Err(classify("DescribeAutoScalingGroups", &e)),
        }
    };
    asgs.into_iter()
        .map(|asg| {
            let r = match &result {
                Ok(()) => Ok(found.remove(&asg.name)),
                Err(f) => Err(f.clone()),
            };
            (asg, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// A KMS that answers every ListGrants with one grant, "more to come", and the same
    /// marker.
    #[derive(Debug, Clone, Default)]
    struct SameMarker(Arc<AtomicU32>);

    impl HttpConnector for SameMarker {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            self.0.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"Grants":[{"GrantId":"g","GranteePrincipal":"p","Operations":["Decrypt"]}],"Truncated":true,"NextMarker":"m"}"#;
            HttpConnectorFuture::ready(Ok(HttpResponse::new(200.try_into().unwrap(), SdkBody::from(body))))
        }
    }

    impl HttpClient for SameMarker {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    #[tokio::test]
    async fn list_grants_stops_on_a_marker_it_has_seen() {
        let kms = SameMarker::default();
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-west-2"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKID", "SECRET", None, None, "t")))
            .http_client(SharedHttpClient::new(kms.clone()))
            .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
            .build();
        let account = Account::new(AccountId::parse("111122223333").unwrap(), config, Arc::default());
        let key = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let listed = tokio::time::timeout(std::time::Duration::from_secs(10), list_grants(&account, &key)).await;
        let f = listed.expect("still paging after 10 s").unwrap_err();
        assert!(f.message.contains("a second time"), "{f}");
        assert_eq!(kms.0.load(Ordering::SeqCst), 2, "the first page, and the one that repeated its marker");
    }

    #[tokio::test]
    async fn reads_in_an_account_without_credentials_fail_rather_than_panic() {
        // An alias in a configured account that DescribeKey resolved to a key in an
        // account with no credentials: its policy and grants are read next.
        let key = KeyArn::parse("arn:aws:kms:us-west-2:777788889999:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let mut observed = Observed::default();
        run_jobs(&BTreeMap::new(), vec![Job::Policy(key.clone()), Job::Grants(key.clone())], &mut observed).await;
        for (what, r) in [
            ("policy", observed.key_policies.get(&key).map(|r| r.clone().map(|_| ()))),
            ("grants", observed.grants.get(&key).map(|r| r.clone().map(|_| ()))),
        ] {
            let f = r.unwrap_or_else(|| panic!("no {what} entry")).unwrap_err();
            assert_eq!(f.class, crate::core::model::ErrorClass::Terminal, "{what}: {f}");
            assert!(f.message.contains("777788889999"), "{what}: {f}");
        }
    }

    #[test]
    fn launch_reads_share_the_read_limit_between_places() {
        assert_eq!(launch_read_limits(0), (1, READ_CONCURRENCY));
        assert_eq!(launch_read_limits(1), (1, READ_CONCURRENCY));
        assert_eq!(launch_read_limits(4), (4, READ_CONCURRENCY / 4));
        assert_eq!(launch_read_limits(1000), (READ_CONCURRENCY, 1));
        for places in 1..40 {
            let (at_once, each) = launch_read_limits(places);
            assert!(at_once * each <= READ_CONCURRENCY, "{places} places");
        }
    }
}
