//! Writes: one AWS write per [`Change`], with the bounded retries each one needs.
//!
//! Two kinds of retry live here, both bounded. IAM propagates a role created moments ago
//! to KMS and Auto Scaling with a delay, and until then they refuse to name it; those
//! refusals are retried over [`ExecSettings::propagation_delays`]. And PutKeyPolicy, which
//! has no condition, re-reads the policy before every attempt (so it runs with the SDK's
//! own retries off and retries transient errors itself).

use std::future::Future;
use std::time::Duration;

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_kms::types::GrantOperation;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::retry::RetryConfig;

use super::error::{classify, code, message};
use super::reads::{get_key_policy, get_role};
use super::{Account, Aws, Done};
use crate::core::model::{AsgRef, ErrorClass, Failure, Instance, KeyArn, Role, Slr, AUTOSCALING_SERVICE};
use crate::core::naming::grant_name;
use crate::core::plan::Change;
use crate::core::policy::{self, Need, PolicyDocument, GRANT_OPERATIONS};
use crate::shell::scheduler::Backoff;

#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Waits between attempts of a write that fails only because IAM has not yet
    /// propagated a role created moments ago.
    pub propagation_delays: Vec<Duration>,
    /// What a refusal for propagation is once those waits are spent: terminal for a
    /// one-shot command that has waited them out, retryable for the daemon, which waits
    /// by queueing the unit again rather than by sleeping in its pass.
    pub unpropagated: ErrorClass,
    /// Waits between attempts of a PutKeyPolicy refused for a transient reason
    /// (throttling, a 5xx, a lost answer).
    pub transient_delays: Vec<Duration>,
    /// What `apply` does after a round with transient failures: `Some`, wait this backoff
    /// and go on (a one-shot command); `None`, read once more at once, to report where
    /// things stand, and end the pass, so the caller queues the work again when it is due
    /// (the daemon, whose passes never sleep).
    pub round_backoff: Option<Backoff>,
    /// Set when the pass must stop (a signal to `apply`): the writes in flight finish,
    /// no other starts, and no other round runs.
    pub stop: Stop,
}

/// A flag that asks a pass to stop, shared with whoever asks.
#[derive(Debug, Clone, Default)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for ExecSettings {
    fn default() -> Self {
        // 1 + 2 + 4 + 8 + 15 = 30 s, the usual bound for IAM propagation to KMS.
        let secs = [1, 2, 4, 8, 15];
        Self {
            propagation_delays: secs.into_iter().map(Duration::from_secs).collect(),
            unpropagated: ErrorClass::Terminal,
            transient_delays: [200, 800].into_iter().map(Duration::from_millis).collect(),
            round_backoff: Some(Backoff { base: Duration::from_secs(1), max: Duration::from_secs(10) }),
            stop: Stop::default(),
        }
    }
}

/// Runs one change, with the credentials of the account that makes it. Returns the
/// failure, classified, when it does not succeed.
pub async fn execute(aws: &Aws, change: &Change, settings: &ExecSettings) -> Result<Done, Failure> {
    let account = aws.account(change.account())?;
    match change {
        Change::CreateServiceLinkedRole { slr } => create_service_linked_role(&account, slr).await,
        Change::PutKeyPolicy { key, needs, prune, instance, .. } => {
            put_key_policy(&account, key, (needs, prune, instance), settings).await
        }
        Change::CreateGrant { key, slr, role_id, instance } => {
            create_grant(&account, key, slr, role_id, instance, settings).await
        }
        Change::RetireGrant { key, grant_id, .. } => retire_grant(&account, key, grant_id).await,
        Change::UpdateAutoScalingGroup { asg, service_linked_role_arn } => {
            update_group_role(&account, asg, service_linked_role_arn, settings).await
        }
        Change::Reencrypt { asg, key, write } => super::reencrypt::execute(&account, asg, key, write).await,
        Change::DeleteCopy { region, copy, .. } => super::cleanup::delete_copy(&account, region, copy).await,
    }
}

/// Creates the group's service-linked role; one created since it was read is adopted.
async fn create_service_linked_role(account: &Account, slr: &Slr) -> Result<Done, Failure> {
    let request = account
        .iam()
        .create_service_linked_role()
        .aws_service_name(AUTOSCALING_SERVICE)
        .set_custom_suffix(slr.suffix.as_deref().map(str::to_owned))
        .description("Auto Scaling service-linked role managed by asg-cmk-operator")
        .send();
    match account.call(None, "iam", "CreateServiceLinkedRole", &[], request).await {
        Ok(out) => Ok(Done::Role(out.role().map(|r| Role { role_id: r.role_id().to_owned() }))),
        // The role exists already (created since we looked): adopt it. Real IAM
        // answers InvalidInput "...has been taken in this account...", moto
        // answers EntityAlreadyExists.
        Err(e)
            if code(&e) == Some("EntityAlreadyExists")
                || (code(&e) == Some("InvalidInput") && message(&e).is_some_and(|m| m.contains("has been taken"))) =>
        {
            tracing::info!(role = %slr.name(), account = %slr.account, "service-linked role already exists; adopting it");
            Ok(Done::Role(get_role(account, slr).await.ok().flatten()))
        }
        Err(e) => Err(classify("CreateServiceLinkedRole", &e)),
    }
}

/// Creates the role's grant on the key, named after the role's unique id.
async fn create_grant(
    account: &Account,
    key: &KeyArn,
    slr: &Slr,
    role_id: &Option<String>,
    instance: &Instance,
    settings: &ExecSettings,
) -> Result<Done, Failure> {
    let Some(role_id) = role_id else {
        return Err(Failure {
            class: ErrorClass::Retryable,
            message: format!("the unique id of {} is not known yet; the grant is named after it", slr.name()),
        });
    };
    let (client, name, grantee) = (account.kms(key.region()), grant_name(slr, role_id, instance), slr.arn());
    // The group's account may retire the grant: KMS lets the retiring principal's
    // account delegate that to the operator through kms:RetireGrant (KMS Developer
    // Guide, "Retiring and revoking grants").
    let retiring = slr.account.root_arn(slr.partition);
    let limits = account.kms_limits(key.region());
    // A role created moments ago is refused as grantee with InvalidArnException
    // until IAM has propagated it; terraform-provider-aws retries kms_grant on it
    // for the same reason.
    let unpropagated = |e: &SdkError<_, _>| code(e) == Some("InvalidArnException");
    let out = retry_propagation(settings, "CreateGrant", key.as_str(), unpropagated, || {
        let request = client
            .create_grant()
            .key_id(key.as_str())
            .grantee_principal(&grantee)
            .retiring_principal(&retiring)
            .name(&name)
            .set_operations(Some(GRANT_OPERATIONS.iter().map(|o| GrantOperation::from(*o)).collect()))
            .send();
        account.call(Some(&limits.create_grant), "kms", "CreateGrant", &[], request)
    })
    .await;
    out.map(|_| Done::Applied)
}

/// Retires a grant; one gone already needs nothing.
async fn retire_grant(account: &Account, key: &KeyArn, grant_id: &str) -> Result<Done, Failure> {
    // The account that created a grant may retire it, also on a key of another
    // account (KMS API Reference, RetireGrant).
    let request = account.kms(key.region()).retire_grant().key_id(key.as_str()).grant_id(grant_id).send();
    let limits = account.kms_limits(key.region());
    match account.call(Some(&limits.retire_grant), "kms", "RetireGrant", &["NotFoundException"], request).await {
        Ok(_) => Ok(Done::Applied),
        Err(e) if code(&e) == Some("NotFoundException") => Ok(Done::NotNeeded("the grant is gone already")),
        Err(e) => Err(classify("RetireGrant", &e)),
    }
}

/// Points the group at its service-linked role.
async fn update_group_role(
    account: &Account,
    asg: &AsgRef,
    service_linked_role_arn: &str,
    settings: &ExecSettings,
) -> Result<Done, Failure> {
    let client = account.autoscaling(&asg.region);
    // Auto Scaling answers "ValidationError: ARN specified for Service-Linked Role
    // does not exist." for a role IAM has not propagated yet (as recorded in
    // terraform-aws-autoscaling's examples). The role exists, or we would not get
    // here: GetRole saw it, or this pass created it.
    let unpropagated = |e: &SdkError<_, _>| {
        code(e) == Some("ValidationError") && message(e).is_some_and(|m| m.contains("Service-Linked Role"))
    };
    let out = retry_propagation(settings, "UpdateAutoScalingGroup", &asg.name, unpropagated, || {
        let request = client
            .update_auto_scaling_group()
            .auto_scaling_group_name(&asg.name)
            .service_linked_role_arn(service_linked_role_arn)
            .send();
        account.call(None, "autoscaling", "UpdateAutoScalingGroup", &[], request)
    })
    .await;
    out.map(|_| Done::Applied)
}

/// Re-reads the key policy, removes `prune` from the statements of `instance` and merges
/// `needs` into what it reads, and writes that; again on each retry. Someone's edit made
/// after the pass observed the key survives: the window in which a concurrent edit can be
/// lost shrinks to one round trip. The PutKeyPolicy permit is held from before the read to
/// after the write.
async fn put_key_policy(
    account: &Account,
    key: &KeyArn,
    (needs, prune, instance): (&[Need], &[String], &Instance),
    settings: &ExecSettings,
) -> Result<Done, Failure> {
    let client = account.kms(key.region());
    let mut propagation = settings.propagation_delays.iter();
    let mut transient = settings.transient_delays.iter();
    // The SDK would retry the same document; each attempt here merges into a fresh read.
    let one_attempt = aws_sdk_kms::config::Builder::default().retry_config(RetryConfig::disabled());
    let limits = account.kms_limits(key.region());
    loop {
        // The permit comes before the fresh read: a write held back by the rate limit waits
        // here, not between the read and the write, which stay one round trip apart.
        let permit = limits.put_key_policy.acquire().await;
        let text = get_key_policy(account, key).await?;
        let Some(merged) = merged_policy(&text, key, (needs, prune, instance))? else {
            return Ok(Done::NotNeeded("the key policy allows it already, and names nothing to prune"));
        };
        // BypassPolicyLockoutSafetyCheck is never set: KMS keeps its lockout check.
        let request = client
            .put_key_policy()
            .key_id(key.as_str())
            .policy_name("default")
            .policy(merged)
            .customize()
            .config_override(one_attempt.clone())
            .send();
        let e = match account.call(None, "kms", "PutKeyPolicy", &[], request).await {
            Ok(_) => return Ok(Done::Applied),
            Err(e) => e,
        };
        drop(permit);
        if super::error::classify_message(code(&e), e.raw_response().map(|r| r.status().as_u16()))
            == ErrorClass::Throttled
        {
            limits.put_key_policy.throttled();
        }
        let wait = if is_unpropagated_principal(code(&e), message(&e)) {
            let Some(d) = propagation.next() else { return Err(still_refused(settings, "PutKeyPolicy", &e)) };
            tracing::info!(key = %key, retry_in = ?d, "key policy names a principal IAM has not propagated yet; retrying");
            d
        } else {
            let f = classify("PutKeyPolicy", &e);
            match transient.next() {
                Some(d) if f.class != ErrorClass::Terminal => {
                    tracing::info!(key = %key, retry_in = ?d, error = %f, "PutKeyPolicy failed for a transient reason; reading the policy again and retrying");
                    d
                }
                _ => return Err(f),
            }
        };
        tokio::time::sleep(*wait).await;
    }
}

/// The key policy `text` with `prune` removed and the needs merged in, as JSON; None when
/// it allows them already and names nothing to prune.
fn merged_policy(
    text: &str,
    key: &KeyArn,
    (needs, prune, instance): (&[Need], &[String], &Instance),
) -> Result<Option<String>, Failure> {
    let mut doc = PolicyDocument::parse(text).map_err(|e| Failure::terminal(format!("key policy of {key}: {e}")))?;
    let removed = policy::prune(&mut doc, instance, prune);
    let m = policy::ensure(&doc, key.as_str(), needs, instance)
        .map_err(|e| Failure::terminal(format!("key policy of {key}: {e}")))?;
    if let Some((_, why)) = m.denied.first() {
        // A Deny appeared since the pass observed the key: plan again from a new read.
        return Err(Failure {
            class: ErrorClass::Retryable,
            message: format!("key policy of {key} changed since it was observed: {why}"),
        });
    }
    let merged = match (m.document.as_ref(), removed.is_empty()) {
        (Some(merged), _) => merged,
        (None, false) => &doc,
        (None, true) => return Ok(None),
    };
    if let Some(why) = m.refusal() {
        return Err(Failure::terminal(format!("key policy of {key}: {why}")));
    }
    Ok(Some(merged.to_json()))
}

/// Makes `attempt` until it succeeds, fails otherwise than by `unpropagated`, or the
/// propagation delays run out.
async fn retry_propagation<T, E, Fut>(
    settings: &ExecSettings,
    operation: &'static str,
    target: &str,
    unpropagated: impl Fn(&SdkError<E, HttpResponse>) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, Failure>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut delays = settings.propagation_delays.iter();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if unpropagated(&e) => match delays.next() {
                Some(d) => {
                    tracing::info!(operation, target, retry_in = ?d, "the role is not visible yet (IAM propagation); retrying");
                    tokio::time::sleep(*d).await;
                }
                None => return Err(still_refused(settings, operation, &e)),
            },
            Err(e) => return Err(classify(operation, &e)),
        }
    }
}

/// The failure once the propagation waits are spent: terminal where they were waited
/// out, since waiting longer has not helped; retryable where the daemon waits by
/// queueing the unit again.
fn still_refused<E>(settings: &ExecSettings, operation: &str, e: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut f = classify(operation, e);
    f.class = settings.unpropagated;
    f.message.push_str(match settings.unpropagated {
        ErrorClass::Terminal => " (still refused after waiting for IAM propagation)",
        _ => " (IAM has not propagated the role yet; tried again in a later pass)",
    });
    f
}

/// KMS refuses a policy naming a principal it cannot resolve yet with
/// MalformedPolicyDocumentException "... invalid principals ...".
fn is_unpropagated_principal(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("MalformedPolicyDocumentException")
        && message.is_some_and(|m| m.to_ascii_lowercase().contains("principal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_principal_errors_wait_for_propagation() {
        let invalid = Some("Policy contains a statement with one or more invalid principals.");
        assert!(is_unpropagated_principal(Some("MalformedPolicyDocumentException"), invalid));
        assert!(!is_unpropagated_principal(
            Some("MalformedPolicyDocumentException"),
            Some("The new key policy will not allow you to update the key policy in the future.")
        ));
        assert!(!is_unpropagated_principal(Some("AccessDeniedException"), invalid));
    }
}
