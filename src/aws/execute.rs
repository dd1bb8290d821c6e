//! Writes: exactly one AWS call per [`Change`] (plus bounded retries of the same call).

use std::time::Duration;

use aws_sdk_kms::types::GrantOperation;

use super::error::{classify, code, message};
use super::Aws;
use crate::model::{ErrorClass, Failure, AUTOSCALING_SERVICE};
use crate::plan::Change;
use crate::policy::GRANT_OPERATIONS;

/// How long to keep retrying a write that fails only because IAM has not yet propagated a
/// role that was just created.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub propagation_delays: Vec<Duration>,
}

impl Default for ExecSettings {
    fn default() -> Self {
        // 1 + 2 + 4 + 8 + 15 = 30 s, the usual bound for IAM propagation to KMS.
        let secs = [1, 2, 4, 8, 15];
        Self { propagation_delays: secs.into_iter().map(Duration::from_secs).collect() }
    }
}

/// Runs one change, with the credentials of the account that makes it. Returns the
/// failure, classified, when it does not succeed.
pub async fn execute(aws: &Aws, change: &Change, settings: &ExecSettings) -> Result<(), Failure> {
    let account = aws.account(change.account())?;
    let limits = account.limits();
    match change {
        Change::CreateServiceLinkedRole { slr } => {
            let request = account
                .iam()
                .create_service_linked_role()
                .aws_service_name(AUTOSCALING_SERVICE)
                .set_custom_suffix(slr.suffix.as_deref().map(str::to_owned))
                .description("Auto Scaling service-linked role managed by asg-cmk-operator")
                .send();
            match account.call(Some(&limits.create_role), "iam", "CreateServiceLinkedRole", &[], request).await {
                Ok(_) => Ok(()),
                // The role exists already (created since we looked): adopt it. Real IAM
                // answers InvalidInput "...has been taken in this account...", moto
                // answers EntityAlreadyExists.
                Err(e)
                    if code(&e) == Some("EntityAlreadyExists")
                        || (code(&e) == Some("InvalidInput")
                            && message(&e).is_some_and(|m| m.contains("has been taken"))) =>
                {
                    tracing::info!(role = %slr.name(), account = %slr.account, "service-linked role already exists; adopting it");
                    Ok(())
                }
                Err(e) => Err(classify("CreateServiceLinkedRole", &e)),
            }
        }
        Change::PutKeyPolicy { key, policy } => {
            let client = account.kms(key.region());
            let mut delays = settings.propagation_delays.iter();
            loop {
                // BypassPolicyLockoutSafetyCheck is never set: KMS keeps its lockout check.
                let request = client.put_key_policy().key_id(key.as_str()).policy_name("default").policy(policy).send();
                match account.call(Some(&limits.put_key_policy), "kms", "PutKeyPolicy", &[], request).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_unpropagated_principal(code(&e), message(&e)) => match delays.next() {
                        Some(d) => {
                            tracing::info!(key = %key, retry_in = ?d, "key policy names a principal IAM has not propagated yet; retrying");
                            tokio::time::sleep(*d).await;
                        }
                        None => {
                            let mut f = classify("PutKeyPolicy", &e);
                            f.class = ErrorClass::Terminal;
                            f.message.push_str(" (still refused after waiting for IAM propagation)");
                            return Err(f);
                        }
                    },
                    Err(e) => return Err(classify("PutKeyPolicy", &e)),
                }
            }
        }
        Change::CreateGrant { key, grantee, name, .. } => {
            let request = account
                .kms(key.region())
                .create_grant()
                .key_id(key.as_str())
                .grantee_principal(grantee)
                .name(name)
                .set_operations(Some(GRANT_OPERATIONS.iter().map(|o| GrantOperation::from(*o)).collect()))
                .send();
            let out = account.call(Some(&limits.create_grant), "kms", "CreateGrant", &[], request).await;
            out.map(|_| ()).map_err(|e| classify("CreateGrant", &e))
        }
        Change::UpdateAutoScalingGroup { asg, service_linked_role_arn } => {
            let request = account
                .autoscaling(&asg.region)
                .update_auto_scaling_group()
                .auto_scaling_group_name(&asg.name)
                .service_linked_role_arn(service_linked_role_arn)
                .send();
            let out =
                account.call(Some(&limits.update_asg), "autoscaling", "UpdateAutoScalingGroup", &[], request).await;
            out.map(|_| ()).map_err(|e| classify("UpdateAutoScalingGroup", &e))
        }
    }
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
