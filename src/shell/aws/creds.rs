//! Credentials for accounts other than our own: `sts:AssumeRole`, cached until shortly
//! before expiry so a long-running operator assumes each role once per session.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_config::SdkConfig;
use aws_credential_types::provider::{self, future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use super::CallStats;
use crate::core::model::{ErrorClass, Failure};

/// Refresh this long before the credentials expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Cached {
    inner: AssumeRoleProvider,
    role_arn: String,
    current: tokio::sync::Mutex<Option<Credentials>>,
    stats: Arc<CallStats>,
}

impl ProvideCredentials for Cached {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut current = self.current.lock().await;
            if let Some(c) = current.as_ref() {
                let fresh = c.expiry().is_none_or(|e| e > SystemTime::now() + REFRESH_MARGIN);
                if fresh {
                    return Ok(c.clone());
                }
            }
            let got = self.inner.provide_credentials().await;
            self.stats.record("sts", "AssumeRole", got.is_ok());
            let c = got?;
            tracing::debug!(role_arn = %self.role_arn, expiry = ?c.expiry(), "assumed role");
            *current = Some(c.clone());
            Ok(c)
        })
    }
}

/// A provider that assumes `role_arn` with the base configuration's credentials.
pub(super) async fn assume_role(base: &SdkConfig, role_arn: &str, stats: Arc<CallStats>) -> SharedCredentialsProvider {
    let inner = AssumeRoleProvider::builder(role_arn).session_name("asg-cmk-operator").configure(base).build().await;
    SharedCredentialsProvider::new(Cached {
        inner,
        role_arn: role_arn.to_owned(),
        current: tokio::sync::Mutex::new(None),
        stats,
    })
}

/// Fetches credentials once (filling the cache), turning a failure into plain data.
pub(super) async fn probe(p: &SharedCredentialsProvider) -> Result<(), Failure> {
    p.provide_credentials().await.map(|_| ()).map_err(|e| Failure {
        class: class_of(&e),
        message: format!("failed to assume role: {}", super::error::chain(&e)),
    })
}

/// How a failure to assume a role is handled. STS's own answer, when there is one, is
/// classified like any other AWS error: `AccessDenied` (no permission, or a trust policy
/// that does not name us) is terminal, throttling is throttled, a 5xx retryable. A
/// timeout, or a provider error without an answer from STS (the connection failed), is
/// retryable; what aws-config calls an invalid configuration is terminal.
fn class_of(e: &provider::error::CredentialsError) -> ErrorClass {
    use provider::error::CredentialsError;
    match e {
        CredentialsError::ProviderTimedOut(_) => ErrorClass::Retryable,
        CredentialsError::ProviderError(_) => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>())
            .map_or(ErrorClass::Retryable, |sts| super::error::classify("AssumeRole", sts).class),
        _ => ErrorClass::Terminal,
    }
}
