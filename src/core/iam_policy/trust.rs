//! The trust policies of the roles the operator runs as: who may assume its role (EKS
//! IRSA, EKS Pod Identity, an ECS task), and, in a key owner's account, the role listed
//! under `accounts`, which the operator's identity assumes.

use serde_json::{json, Value};

use crate::core::model::AccountId;

/// EKS IAM roles for service accounts: the cluster's OIDC provider, for one service
/// account (EKS User Guide, "Assign IAM roles to Kubernetes service accounts").
pub fn irsa(oidc_provider_arn: &str, namespace: &str, service_account: &str) -> Result<Value, String> {
    let issuer = oidc_provider_arn
        .split_once(":oidc-provider/")
        .map(|(_, issuer)| issuer)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            format!("{oidc_provider_arn:?} is not an OIDC provider ARN (arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID)")
        })?;
    Ok(json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": oidc_provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            format!("{issuer}:sub"): format!("system:serviceaccount:{namespace}:{service_account}"),
            format!("{issuer}:aud"): "sts.amazonaws.com",
        }},
    }]}))
}

/// EKS Pod Identity: the Pod Identity service, which tags the session (EKS User Guide,
/// "Learn how EKS Pod Identity grants pods access to AWS services").
pub fn pod_identity(account: &AccountId) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:SourceAccount": account.as_str()}},
    }]})
}

/// An ECS task role: the ECS tasks service, for tasks of this account only (ECS
/// Developer Guide, "Amazon ECS task IAM role": the confused deputy condition).
pub fn ecs_task(account: &AccountId) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account.as_str()}},
    }]})
}

/// The role under `accounts` in a key owner's (or group's) account: the operator's own
/// role may assume it, and nothing else.
pub fn assumed_by(operator_role_arn: &str) -> Result<Value, String> {
    let ok = operator_role_arn.starts_with("arn:")
        && operator_role_arn.contains(":iam::")
        && operator_role_arn.contains(":role/");
    if !ok {
        return Err(format!("{operator_role_arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"));
    }
    Ok(json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": operator_role_arn},
        "Action": "sts:AssumeRole",
    }]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irsa_trusts_one_service_account_of_the_clusters_provider() {
        let arn = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/ABC";
        let t = irsa(arn, "asg-cmk-operator", "asg-cmk-operator").unwrap();
        let c = &t["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(
            c["oidc.eks.us-west-2.amazonaws.com/id/ABC:sub"],
            "system:serviceaccount:asg-cmk-operator:asg-cmk-operator"
        );
        assert_eq!(c["oidc.eks.us-west-2.amazonaws.com/id/ABC:aud"], "sts.amazonaws.com");
        assert!(irsa("arn:aws:iam::111122223333:role/x", "n", "s").is_err());
        assert!(assumed_by("arn:aws:iam::111122223333:role/asg-cmk-operator").is_ok());
        assert!(assumed_by("asg-cmk-operator").is_err());
    }
}
