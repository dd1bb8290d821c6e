//! The imperative shell: the only module that imports the AWS SDK.
//!
//! [`Aws`] holds one SDK configuration per account (ours from the default credential
//! chain, the others through `sts:AssumeRole` with cached credentials), builds clients per
//! account and region on first use, and records every call it makes.

mod creds;
mod error;
mod execute;
mod observe;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

pub use error::{classify, classify_message};
pub use execute::{execute, ExecSettings};
pub use observe::observe;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::CallLabels;
use crate::model::{AccountId, Failure};
use crate::ratelimit::RateLimiter;

/// Counts of AWS calls by (service, operation, outcome), kept for the command line and
/// fed to the Prometheus counter.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    family: Family<CallLabels, Counter>,
}

impl CallStats {
    /// Stats that also count into `family`.
    pub fn with_family(family: Family<CallLabels, Counter>) -> Self {
        Self { counts: Mutex::default(), family }
    }

    pub fn record(&self, service: &'static str, operation: &'static str, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        *self.counts.lock().expect("stats lock").entry((service, operation, outcome)).or_default() += 1;
        self.family
            .get_or_create(&CallLabels {
                service: service.into(),
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str, &'static str), u64> {
        self.counts.lock().expect("stats lock").clone()
    }
}

/// Write rates per one-second window, kept below the AWS quotas (KMS: PutKeyPolicy 15/s,
/// CreateGrant 50/s; IAM and Auto Scaling publish none, so those stay modest).
#[derive(Debug)]
pub struct WriteLimits {
    pub create_role: RateLimiter,
    pub put_key_policy: RateLimiter,
    pub create_grant: RateLimiter,
    pub update_asg: RateLimiter,
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            create_role: RateLimiter::per_second(5),
            put_key_policy: RateLimiter::per_second(12),
            create_grant: RateLimiter::per_second(40),
            update_asg: RateLimiter::per_second(40),
        }
    }
}

/// AWS access for all accounts the operator acts in.
pub struct Aws {
    base: SdkConfig,
    caller: AccountId,
    partition: String,
    /// Per other account: the role assumed and the configuration using its credentials.
    assumed: Mutex<HashMap<AccountId, (String, SdkConfig, SharedCredentialsProvider)>>,
    iam: Mutex<HashMap<AccountId, aws_sdk_iam::Client>>,
    kms: Mutex<HashMap<(AccountId, String), aws_sdk_kms::Client>>,
    asg: Mutex<HashMap<(AccountId, String), aws_sdk_autoscaling::Client>>,
    pub stats: Arc<CallStats>,
    pub limits: WriteLimits,
}

/// Failure to start talking to AWS at all.
#[derive(Debug, thiserror::Error)]
#[error("failed to identify the operator's AWS account: {0}")]
pub struct ConnectError(pub Failure);

impl Aws {
    /// Loads the default AWS configuration (environment, profile, web identity, container
    /// or instance credentials; `AWS_ENDPOINT_URL` included) and asks STS who we are.
    /// `fallback_region` is used for STS and IAM when the environment names no region.
    pub async fn connect(fallback_region: &str, stats: Arc<CallStats>) -> Result<Self, ConnectError> {
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(Region::new(fallback_region.to_owned()));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(90))
            .build();
        let base = aws_config::defaults(BehaviorVersion::latest()).region(region).timeout_config(timeouts).load().await;
        let sts = aws_sdk_sts::Client::new(&base);
        let who = sts.get_caller_identity().send().await;
        stats.record("sts", "GetCallerIdentity", who.is_ok());
        let who = who.map_err(|e| ConnectError(classify("GetCallerIdentity", &e)))?;
        let caller = who
            .account()
            .and_then(AccountId::parse)
            .ok_or_else(|| ConnectError(Failure::terminal("GetCallerIdentity returned no account id")))?;
        let partition = who.arn().and_then(|a| a.split(':').nth(1)).unwrap_or("aws").to_owned();
        Ok(Self {
            base,
            caller,
            partition,
            assumed: Mutex::default(),
            iam: Mutex::default(),
            kms: Mutex::default(),
            asg: Mutex::default(),
            stats,
            limits: WriteLimits::default(),
        })
    }

    /// The account our own credentials act in.
    pub fn caller(&self) -> &AccountId {
        &self.caller
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// Makes sure the credentials of `account` can be had, assuming its role if needed.
    /// Credentials are cached until shortly before they expire, so this costs one
    /// AssumeRole per account per session, not one per call.
    pub async fn ensure_account(&self, account: &AccountId, role_arn: Option<&str>) -> Result<(), Failure> {
        if account == &self.caller {
            return Ok(());
        }
        let role_arn = role_arn.ok_or_else(|| Failure::terminal(format!("no role to assume in account {account}")))?;
        let known = self
            .assumed
            .lock()
            .expect("account lock")
            .get(account)
            .filter(|(arn, ..)| arn == role_arn)
            .map(|(.., p)| p.clone());
        let provider = match known {
            Some(p) => p,
            None => {
                let provider = creds::assume_role(&self.base, role_arn, self.stats.clone()).await;
                let config = self.base.to_builder().credentials_provider(provider.clone()).build();
                self.assumed
                    .lock()
                    .expect("account lock")
                    .insert(*account, (role_arn.to_owned(), config, provider.clone()));
                self.iam.lock().expect("client lock").remove(account);
                self.kms.lock().expect("client lock").retain(|(a, _), _| a != account);
                self.asg.lock().expect("client lock").retain(|(a, _), _| a != account);
                provider
            }
        };
        creds::probe(&provider).await
    }

    fn config(&self, account: &AccountId) -> SdkConfig {
        if account == &self.caller {
            return self.base.clone();
        }
        match self.assumed.lock().expect("account lock").get(account) {
            Some((_, config, _)) => config.clone(),
            // ensure_account runs first for every account; fall back to our own
            // credentials, which AWS will refuse with a clear error.
            None => self.base.clone(),
        }
    }

    pub(crate) fn iam(&self, account: &AccountId) -> aws_sdk_iam::Client {
        if let Some(c) = self.iam.lock().expect("client lock").get(account) {
            return c.clone();
        }
        // Built outside the lock: config() takes the account lock.
        let client = aws_sdk_iam::Client::new(&self.config(account));
        self.iam.lock().expect("client lock").entry(*account).or_insert(client).clone()
    }

    pub(crate) fn kms(&self, account: &AccountId, region: &str) -> aws_sdk_kms::Client {
        let k = (*account, region.to_owned());
        if let Some(c) = self.kms.lock().expect("client lock").get(&k) {
            return c.clone();
        }
        let conf =
            aws_sdk_kms::config::Builder::from(&self.config(account)).region(Region::new(region.to_owned())).build();
        let client = aws_sdk_kms::Client::from_conf(conf);
        self.kms.lock().expect("client lock").entry(k).or_insert(client).clone()
    }

    pub(crate) fn autoscaling(&self, account: &AccountId, region: &str) -> aws_sdk_autoscaling::Client {
        let k = (*account, region.to_owned());
        if let Some(c) = self.asg.lock().expect("client lock").get(&k) {
            return c.clone();
        }
        let conf = aws_sdk_autoscaling::config::Builder::from(&self.config(account))
            .region(Region::new(region.to_owned()))
            .build();
        let client = aws_sdk_autoscaling::Client::from_conf(conf);
        self.asg.lock().expect("client lock").entry(k).or_insert(client).clone()
    }
}
