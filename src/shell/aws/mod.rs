//! The imperative shell: the only module that imports the AWS SDK.
//!
//! [`Aws`] knows who the operator is and hands out an [`Account`] for each account whose
//! credentials have resolved: our own from the default credential chain, the others
//! through `sts:AssumeRole` with cached credentials. Every client comes from an `Account`,
//! so no call can be made in an account whose credentials were not resolved, and none can
//! fall back to the operator's own credentials. Every call goes through [`Account::call`],
//! which takes the write permit, makes the call and records it.

pub mod adaptive;
mod cleanup;
mod creds;
pub mod discover;
mod error;
pub mod events;
mod execute;
mod mapping;
mod observe;
mod parameters;
mod reads;
mod reencrypt;
pub mod select;
mod versions;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

pub use error::{classify, classify_message};
pub use execute::{execute, ExecSettings, Stop};
pub use observe::{observe, READ_CONCURRENCY};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::core::model::{AccountId, ErrorClass, Failure, Role};
use crate::shell::metrics::CallLabels;
use crate::shell::ratelimit::RateLimiter;
use adaptive::{KmsLimits, PacedClient, Paces};

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
        self.record_outcome(service, operation, if ok { "success" } else { "error" });
    }

    /// Counts a call whose outcome is `success`, `throttled` (it failed, throttled, after
    /// the SDK's retries) or `error`.
    pub fn record_outcome(&self, service: &'static str, operation: &'static str, outcome: &'static str) {
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

/// What every account's calls share: the call counts.
#[derive(Debug, Default)]
pub struct Shared {
    pub stats: Arc<CallStats>,
    /// `defaults.kmsCreateGrantRate`: the ceiling of each account and Region's CreateGrant
    /// pace.
    create_grant_rate: std::sync::atomic::AtomicU32,
}

impl Shared {
    fn create_grant_rate(&self) -> u32 {
        self.create_grant_rate.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One account whose credentials have resolved, and the clients that act in it. Only
/// [`Aws`] makes these, and only after the credentials were had.
pub struct Account {
    id: AccountId,
    config: SdkConfig,
    shared: Arc<Shared>,
    iam: OnceLock<aws_sdk_iam::Client>,
    kms: Mutex<HashMap<String, aws_sdk_kms::Client>>,
    /// KMS write ceilings by region: KMS quotas are per account and region.
    kms_limits: Mutex<HashMap<String, Arc<KmsLimits>>>,
    asg: Mutex<HashMap<String, aws_sdk_autoscaling::Client>>,
    ec2: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
    sqs: Mutex<HashMap<String, aws_sdk_sqs::Client>>,
    ssm: Mutex<HashMap<String, aws_sdk_ssm::Client>>,
    /// By region: where the last sweep of scaling activities stopped, and what it found.
    swept: Mutex<HashMap<String, crate::core::activity::Swept>>,
    /// Numbered launch template versions read in earlier passes (they never change).
    template_versions: Mutex<discover::VersionCache>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Account {
    fn new(id: AccountId, config: SdkConfig, shared: Arc<Shared>) -> Self {
        Self {
            id,
            config,
            shared,
            iam: OnceLock::new(),
            kms: Mutex::default(),
            kms_limits: Mutex::default(),
            asg: Mutex::default(),
            ec2: Mutex::default(),
            sqs: Mutex::default(),
            ssm: Mutex::default(),
            swept: Mutex::default(),
            template_versions: Mutex::new(discover::VersionCache::new(discover::VERSION_CACHE)),
        }
    }

    /// What the last sweep of scaling activities in `region` left.
    pub(crate) fn swept(&self, region: &str) -> crate::core::activity::Swept {
        self.swept.lock().expect("sweep lock").get(region).cloned().unwrap_or_default()
    }

    pub(crate) fn set_swept(&self, region: &str, swept: crate::core::activity::Swept) {
        self.swept.lock().expect("sweep lock").insert(region.to_owned(), swept);
    }

    /// Version `number` of launch template `id` in `region`, when an earlier read kept it.
    pub(crate) fn cached_version(&self, region: &str, id: &str, number: u64) -> Option<discover::TemplateVersion> {
        self.template_versions.lock().expect("version cache lock").get(region, id, number)
    }

    /// Keeps a launch template version read in `region`, if it names its template's id and
    /// its number.
    pub(crate) fn cache_version(&self, region: &str, version: &discover::TemplateVersion) {
        self.template_versions.lock().expect("version cache lock").insert(region, version);
    }

    pub fn id(&self) -> &AccountId {
        &self.id
    }

    /// The KMS write ceilings of this account in `region`.
    pub(crate) fn kms_limits(&self, region: &str) -> Arc<KmsLimits> {
        let rate = self.shared.create_grant_rate();
        let mut limits = self.kms_limits.lock().expect("limits lock");
        limits.entry(region.to_owned()).or_insert_with(|| Arc::new(KmsLimits::new(rate))).clone()
    }

    /// A new CreateGrant ceiling for every Region's pace made so far.
    fn set_create_grant_rate(&self, rate: u32) {
        for l in self.kms_limits.lock().expect("limits lock").values() {
            l.create_grant.set_ceiling(rate);
        }
    }

    /// The HTTP client of a service whose quota is shared with others: every attempt paced
    /// by [`Paces`] of its own (one per service, account and region: one client is built
    /// per service and region here). Auto Scaling, IAM, KMS and EC2.
    fn paced_http(&self) -> Option<PacedClient> {
        let http = self.config.http_client();
        if http.is_none() {
            tracing::warn!("no HTTP client to pace: AWS calls are not paced");
        }
        http.map(|http| PacedClient::new(http, Arc::new(Paces::default())))
    }

    pub(crate) fn iam(&self) -> aws_sdk_iam::Client {
        self.iam
            .get_or_init(|| {
                let mut conf = aws_sdk_iam::config::Builder::from(&self.config)
                    .retry_config(adaptive::retry_config())
                    .retry_partition(adaptive::partition("iam", &self.id, "global"));
                if let Some(http) = self.paced_http() {
                    conf = conf.http_client(http);
                }
                aws_sdk_iam::Client::from_conf(conf.build())
            })
            .clone()
    }

    pub(crate) fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        let mut clients = self.kms.lock().expect("client lock");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut conf = aws_sdk_kms::config::Builder::from(&self.config).region(Region::new(region.to_owned()));
                if let Some(http) = self.paced_http() {
                    conf = conf.http_client(http);
                }
                aws_sdk_kms::Client::from_conf(conf.build())
            })
            .clone()
    }

    /// SQS, for the queue of change events.
    pub(crate) fn sqs(&self, region: &str) -> aws_sdk_sqs::Client {
        let mut clients = self.sqs.lock().expect("client lock");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let conf =
                    aws_sdk_sqs::config::Builder::from(&self.config).region(Region::new(region.to_owned())).build();
                aws_sdk_sqs::Client::from_conf(conf)
            })
            .clone()
    }

    /// Systems Manager, for the parameters re-encrypted groups' copies are published to.
    pub(crate) fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let mut clients = self.ssm.lock().expect("client lock");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let conf =
                    aws_sdk_ssm::config::Builder::from(&self.config).region(Region::new(region.to_owned())).build();
                aws_sdk_ssm::Client::from_conf(conf)
            })
            .clone()
    }

    pub(crate) fn autoscaling(&self, region: &str) -> aws_sdk_autoscaling::Client {
        let mut clients = self.asg.lock().expect("client lock");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut conf = aws_sdk_autoscaling::config::Builder::from(&self.config)
                    .region(Region::new(region.to_owned()))
                    .retry_config(adaptive::retry_config())
                    .retry_partition(adaptive::partition("autoscaling", &self.id, region));
                if let Some(http) = self.paced_http() {
                    conf = conf.http_client(http);
                }
                aws_sdk_autoscaling::Client::from_conf(conf.build())
            })
            .clone()
    }

    pub(crate) fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut clients = self.ec2.lock().expect("client lock");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut conf = aws_sdk_ec2::config::Builder::from(&self.config).region(Region::new(region.to_owned()));
                if let Some(http) = self.paced_http() {
                    conf = conf.http_client(http);
                }
                aws_sdk_ec2::Client::from_conf(conf.build())
            })
            .clone()
    }

    /// One AWS call: waits for a permit from `limit` (KMS writes), makes the call and records
    /// it. An error whose code is in `expected` (a read's "not found") counts as a success.
    pub(crate) async fn call<T, E>(
        &self,
        limit: Option<&RateLimiter>,
        service: &'static str,
        operation: &'static str,
        expected: &[&str],
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata,
    {
        let out = match limit {
            Some(l) => {
                // The permit covers the call only.
                let _permit = l.acquire().await;
                request.await
            }
            None => request.await,
        };
        let outcome = match &out {
            Ok(_) => "success",
            Err(e) if error::code(e).is_some_and(|c| expected.contains(&c)) => "success",
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match error::classify_message(error::code(e), status) {
                    ErrorClass::Throttled => "throttled",
                    _ => "error",
                }
            }
        };
        if let (Some(l), "throttled") = (limit, outcome) {
            l.throttled();
        }
        self.shared.stats.record_outcome(service, operation, outcome);
        out
    }

    /// [`Account::call`] with no rate limit and no expected error, its failure classified.
    pub(crate) async fn send<T, E>(
        &self,
        service: &'static str,
        operation: &'static str,
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.call(None, service, operation, &[], request).await.map_err(|e| classify(operation, &e))
    }
}

/// AWS access for all accounts the operator acts in.
pub struct Aws {
    base: SdkConfig,
    own: Arc<Account>,
    /// Who our own credentials are, as GetCallerIdentity says.
    caller_arn: String,
    shared: Arc<Shared>,
    /// Credential providers by role ARN, kept across passes so each role is assumed once
    /// per session, not once per pass.
    providers: Mutex<HashMap<String, SharedCredentialsProvider>>,
    /// Other accounts whose credentials resolved, with the role they were had through.
    others: Mutex<HashMap<AccountId, (String, Arc<Account>)>>,
}

/// What to say when the default credential chain gives nothing: where it looked, what the
/// last source said (its error chain, without the SDK's debug structures), and how to
/// point the operator at credentials or at a local emulator.
fn credentials_error(e: &aws_credential_types::provider::error::CredentialsError) -> String {
    use aws_credential_types::provider::error::CredentialsError;
    // Nothing found anywhere says no more than the list below; a source that failed
    // (instance metadata refusing, a profile naming a missing role) says why, on one line.
    let said = if matches!(e, CredentialsError::CredentialsNotLoaded(_)) {
        String::new()
    } else {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let one_line: Vec<&str> = chain.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        format!("; the last said: {}", one_line.join(" ").trim_end_matches('.'))
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    format!(
        "no AWS credentials. Looked in, in order: the environment (AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY), the shared config and credentials files (profile {profile:?}), a \
         web identity token (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), ECS container \
         credentials, and EC2 instance metadata{said}. Use a profile with AWS_PROFILE=NAME, or \
         keys in the environment; for a local emulator, set AWS_ENDPOINT_URL=http://HOST:PORT and \
         any key pair (scripts/demo.sh starts one)"
    )
}

/// Failure to start talking to AWS at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot start talking to AWS: {0}")]
pub struct ConnectError(pub Failure);

/// What a change did, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The call was made.
    Applied,
    /// The role exists now (created, or found created by someone else): its identity,
    /// which the later phases of the same pass name.
    Role(Option<Role>),
    /// Nothing was written: what was read just before the write showed it not needed.
    NotNeeded(&'static str),
}

impl Aws {
    /// Loads the default AWS configuration (environment, profile, web identity, container
    /// or instance credentials; `AWS_ENDPOINT_URL` included) and asks STS who we are.
    /// `fallback_region` is used for STS and IAM when the environment names no region.
    pub async fn connect(fallback_region: &str, stats: Arc<CallStats>) -> Result<Self, ConnectError> {
        // The region of STS and IAM: the environment's or the profile's, else the config's.
        // Not EC2 instance metadata, the SDK's last resort: off EC2 it costs a timeout and
        // logs a raw SDK error, and every other call takes its region from the config.
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            aws_config::environment::EnvironmentVariableRegionProvider::new(),
        )
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .or_else(Region::new(fallback_region.to_owned()));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(90))
            .build();
        let base = aws_config::defaults(BehaviorVersion::latest()).region(region).timeout_config(timeouts).load().await;
        Self::with_config(base, stats).await
    }

    /// Like [`Aws::connect`], from a configuration already loaded (a test's, pointing at
    /// an emulator): checks its credentials and asks STS who we are.
    pub async fn with_config(base: SdkConfig, stats: Arc<CallStats>) -> Result<Self, ConnectError> {
        // Name the HTTP client, so that the paced clients can wrap it (the SDK would make
        // a default one per client, out of reach).
        let base = match base.http_client() {
            Some(_) => base,
            None => base.to_builder().http_client(adaptive::default_https_client()).build(),
        };
        if let Some(provider) = base.credentials_provider() {
            use aws_credential_types::provider::ProvideCredentials;
            if let Err(e) = provider.provide_credentials().await {
                return Err(ConnectError(Failure::terminal(credentials_error(&e))));
            }
        }
        let who = aws_sdk_sts::Client::new(&base).get_caller_identity().send().await;
        stats.record("sts", "GetCallerIdentity", who.is_ok());
        let who = who.map_err(|e| ConnectError(classify("GetCallerIdentity", &e)))?;
        let caller = who
            .account()
            .and_then(AccountId::parse)
            .ok_or_else(|| ConnectError(Failure::terminal("GetCallerIdentity returned no account id")))?;
        let caller_arn = who.arn().unwrap_or_default().to_owned();
        let shared = Arc::new(Shared {
            stats,
            create_grant_rate: crate::core::model::desired::DEFAULT_CREATE_GRANT_RATE.into(),
        });
        Ok(Self {
            own: Arc::new(Account::new(caller, base.clone(), shared.clone())),
            caller_arn,
            base,
            shared,
            providers: Mutex::default(),
            others: Mutex::default(),
        })
    }

    /// The ceiling of every account and Region's CreateGrant pace, dry runs included
    /// (`defaults.kmsCreateGrantRate`): paces made later start at it, and those made
    /// already move to it.
    pub fn set_create_grant_rate(&self, rate: u32) {
        let old = self.shared.create_grant_rate.swap(rate, std::sync::atomic::Ordering::Relaxed);
        if old == rate {
            return;
        }
        self.own.set_create_grant_rate(rate);
        for (_, account) in self.others.lock().expect("accounts lock").values() {
            account.set_create_grant_rate(rate);
        }
    }

    /// The account our own credentials act in.
    pub fn caller(&self) -> &AccountId {
        self.own.id()
    }

    /// Our own identity's ARN (an IAM user or role, or an assumed-role session).
    pub fn caller_arn(&self) -> &str {
        &self.caller_arn
    }

    pub fn stats(&self) -> &Arc<CallStats> {
        &self.shared.stats
    }

    /// Resolves the credentials of `account`, assuming `role_arn` when it is not our own,
    /// and returns the handle to act in it. Credentials are cached until shortly before
    /// they expire, so this costs one AssumeRole per account per session, not one per call.
    pub async fn ensure_account(&self, account: &AccountId, role_arn: Option<&str>) -> Result<Arc<Account>, Failure> {
        if account == self.caller() {
            return Ok(self.own.clone());
        }
        let role_arn = role_arn.ok_or_else(|| Failure::terminal(format!("no role to assume in account {account}")))?;
        let known = self.providers.lock().expect("provider lock").get(role_arn).cloned();
        let provider = match known {
            Some(p) => p,
            None => {
                let p = creds::assume_role(&self.base, role_arn, self.shared.stats.clone()).await;
                self.providers.lock().expect("provider lock").entry(role_arn.to_owned()).or_insert(p).clone()
            }
        };
        creds::probe(&provider).await?;
        let mut others = self.others.lock().expect("account lock");
        if let Some((role, handle)) = others.get(account) {
            if role == role_arn {
                return Ok(handle.clone());
            }
        }
        let config = self.base.to_builder().credentials_provider(provider).build();
        let handle = Arc::new(Account::new(*account, config, self.shared.clone()));
        others.insert(*account, (role_arn.to_owned(), handle.clone()));
        Ok(handle)
    }

    /// The handle of an account whose credentials have resolved (our own always has).
    /// Fails, rather than falling back to our own credentials, for any other account.
    pub fn account(&self, account: &AccountId) -> Result<Arc<Account>, Failure> {
        if account == self.caller() {
            return Ok(self.own.clone());
        }
        self.others.lock().expect("account lock").get(account).map(|(_, a)| a.clone()).ok_or_else(|| Failure {
            class: ErrorClass::Retryable,
            message: format!("the credentials of account {account} have not been resolved"),
        })
    }
}
