//! Reads only. Turns AWS state into plain [`Observed`] data; a missing resource is
//! `Ok(None)`, and a failed read is recorded as data rather than aborting the pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{classify, code};
use super::{Account, Aws};
use crate::config::Desired;
use crate::model::{AccountId, Asg, AsgRef, Failure, Grant, KeyArn, KeyInfo, KeyManager, Role, Slr};
use crate::plan::{Observed, Reads};

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
}

/// The account whose credentials a job reads with.
fn job_account(job: &Job) -> AccountId {
    match job {
        Job::Role(slr) => slr.account,
        Job::Describe(key) | Job::Policy(key) | Job::Grants(key) => *key.account(),
        Job::Asgs(asgs) => asgs.first().map(|a| a.account).expect("batches are never empty"),
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
    }
}

enum Read {
    Role(Slr, Result<Option<Role>, Failure>),
    Described(KeyArn, Result<KeyInfo, Failure>),
    Policy(KeyArn, Result<String, Failure>),
    Grants(KeyArn, Result<Vec<Grant>, Failure>),
    Asgs(Vec<(AsgRef, Result<Option<Asg>, Failure>)>),
}

/// Performs every read in `reads`, concurrently and bounded, and returns what was seen.
pub async fn observe(aws: &Arc<Aws>, desired: &Desired, reads: &Reads) -> Observed {
    let mut observed = Observed::default();
    let mut handles: BTreeMap<AccountId, Arc<Account>> = BTreeMap::new();
    let credentials = |account: AccountId| {
        let (aws, role) = (aws.clone(), desired.accounts.get(&account).cloned());
        async move { (account, aws.ensure_account(&account, role.as_deref()).await) }
    };
    crate::bounded::for_each(reads.accounts.iter().copied(), READ_CONCURRENCY, credentials, |joined| match joined {
        Ok((account, Ok(handle))) => {
            handles.insert(account, handle);
        }
        Ok((account, Err(f))) => {
            observed.account_errors.insert(account, f);
        }
        // A panicked task leaves its account without a handle: its reads are not made,
        // and the planner blocks the bindings that needed them.
        Err(e) => tracing::error!(error = %e, "credentials task failed"),
    })
    .await;
    let usable = |a: &AccountId| handles.contains_key(a);

    // The keys are described while everything else is read. A key named by an alias is
    // known only once described, so its policy and grants are read in a second round.
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
    run_jobs(&handles, jobs, &mut observed).await;

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
    run_jobs(&handles, resolved, &mut observed).await;
    observed
}

/// Runs `jobs`, READ_CONCURRENCY at a time, each with its account's credentials, and
/// records what each saw.
async fn run_jobs(handles: &BTreeMap<AccountId, Arc<Account>>, jobs: Vec<Job>, observed: &mut Observed) {
    let start = |job: Job| run(handles[&job_account(&job)].clone(), job);
    crate::bounded::for_each(jobs, READ_CONCURRENCY, start, |joined| match joined {
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
        // A panicked read leaves its entries unobserved; the planner blocks the bindings
        // that needed them.
        Err(e) => tracing::error!(error = %e, "read task failed"),
    })
    .await;
}

/// DescribeKey, by key or alias ARN, with the key owner's credentials. It works in every
/// key state (KMS Developer Guide, "Key states of AWS KMS keys").
async fn describe_key(account: &Account, key: &KeyArn) -> Result<KeyInfo, Failure> {
    let request = account.kms(key.region()).describe_key().key_id(key.as_str()).send();
    let out = account.call(None, "kms", "DescribeKey", &[], request).await.map_err(|e| classify("DescribeKey", &e))?;
    let meta = out.key_metadata().ok_or_else(|| Failure::terminal("DescribeKey returned no key metadata"))?;
    let arn = meta.arn().ok_or_else(|| Failure::terminal("DescribeKey returned no key ARN"))?;
    let arn = KeyArn::parse(arn).map_err(|e| Failure::terminal(format!("DescribeKey returned {arn:?}: {e}")))?;
    Ok(KeyInfo {
        arn,
        state: meta.key_state().map_or("Unknown", |s| s.as_str()).to_owned(),
        spec: meta.key_spec().map_or("Unknown", |s| s.as_str()).to_owned(),
        manager: match meta.key_manager() {
            Some(aws_sdk_kms::types::KeyManagerType::Aws) => KeyManager::Aws,
            _ => KeyManager::Customer,
        },
    })
}

pub(super) async fn get_role(account: &Account, slr: &Slr) -> Result<Option<Role>, Failure> {
    let request = account.iam().get_role().role_name(slr.name()).send();
    match account.call(None, "iam", "GetRole", &["NoSuchEntity"], request).await {
        Ok(o) => Ok(o.role().map(|r| Role { role_id: r.role_id().to_owned() })),
        Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
        Err(e) => Err(classify("GetRole", &e)),
    }
}

pub(super) async fn get_key_policy(account: &Account, key: &KeyArn) -> Result<String, Failure> {
    let request = account.kms(key.region()).get_key_policy().key_id(key.as_str()).policy_name("default").send();
    match account.call(None, "kms", "GetKeyPolicy", &[], request).await {
        Ok(o) => o.policy.ok_or_else(|| Failure::terminal("GetKeyPolicy returned no policy")),
        Err(e) => Err(classify("GetKeyPolicy", &e)),
    }
}

/// Lists grants with the key owner's credentials: the owner may always read its key's
/// grants, while the ASG account would need kms:ListGrants in the owner's key policy,
/// which the procedure does not add.
async fn list_grants(account: &Account, key: &KeyArn) -> Result<Vec<Grant>, Failure> {
    let client = account.kms(key.region());
    let mut grants = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let request = client.list_grants().key_id(key.as_str()).limit(100).set_marker(marker.take()).send();
        let out = account.call(None, "kms", "ListGrants", &[], request).await;
        let out = out.map_err(|e| classify("ListGrants", &e))?;
        grants.extend(out.grants().iter().map(|g| Grant {
            grant_id: g.grant_id().unwrap_or_default().to_owned(),
            name: g.name().map(str::to_owned),
            grantee_principal: g.grantee_principal().unwrap_or_default().to_owned(),
            operations: g.operations().iter().map(|o| o.as_str().to_owned()).collect(),
            constrained: g.constraints().is_some_and(|c| {
                c.encryption_context_subset().is_some_and(|m| !m.is_empty())
                    || c.encryption_context_equals().is_some_and(|m| !m.is_empty())
            }),
        }));
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_owned()),
            _ => return Ok(grants),
        }
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
                    let arn = g.service_linked_role_arn().map(str::to_owned);
                    found.insert(
                        g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                        Asg { service_linked_role_arn: arn },
                    );
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
