//! Single AWS reads that more than one of observe, discover, execute and reencrypt make.
//! They sit here, below all four, so that none of those imports another to reach them.

use super::error::{classify, code, message, refused_by_identity};
use super::Account;
use crate::core::model::{Asg, DryRun, Failure, KeyArn, KeyInfo, KeyManager, LaunchSource, Role, Slr};

/// DescribeKey by any key reference (id, ARN, alias name, alias ARN) in `region`.
pub(super) async fn describe_key_ref(account: &Account, region: &str, key: &str) -> Result<KeyInfo, Failure> {
    let request = account.kms(region).describe_key().key_id(key).send();
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

/// CreateGrant with `DryRun`, exactly as the grant would be made (grantee, retiring
/// principal, operations), with the role's account's credentials: KMS answers
/// DryRunOperationException when the call would succeed and AccessDeniedException when
/// it would not (KMS Developer Guide, "Testing your permissions"). Nothing is created.
pub(super) async fn dry_run_grant(account: &Account, key: &KeyArn, slr: &Slr) -> Result<DryRun, Failure> {
    use aws_sdk_kms::types::GrantOperation;
    const ANSWERS: &[&str] = &["DryRunOperationException", "AccessDeniedException", "InvalidArnException"];
    let request = account
        .kms(key.region())
        .create_grant()
        .key_id(key.as_str())
        .grantee_principal(slr.arn())
        .retiring_principal(slr.account.root_arn(slr.partition))
        .set_operations(Some(crate::core::policy::GRANT_OPERATIONS.iter().map(|o| GrantOperation::from(*o)).collect()))
        .dry_run(true)
        .send();
    // A dry run counts against the CreateGrant quota as a grant does (KMS Developer
    // Guide, "Request quotas"): it takes the same pace.
    let limits = account.kms_limits(key.region());
    match account.call(Some(&limits.create_grant), "kms", "CreateGrant", ANSWERS, request).await {
        Ok(_) => {
            Err(Failure::terminal(format!("CreateGrant with DryRun on {key} created a grant instead of answering")))
        }
        Err(e) => match code(&e) {
            Some("DryRunOperationException") => Ok(DryRun::Allowed),
            // Only a refusal by the key policy is the owner's to lift; one by the operator's
            // own IAM policy is the operator's gap, said as such.
            Some("AccessDeniedException") => match message(&e).filter(|m| refused_by_identity(m)) {
                Some(m) => Err(Failure::terminal(format!(
                    "the operator's own IAM policy in account {} refused a dry run of CreateGrant on {key} (not the key's policy, so nothing is asked of its owner): {m}. Give the operator's identity kms:CreateGrant on the key (`asg-cmk-operator iam-policy` prints the statement)",
                    slr.account
                ))),
                None => Ok(DryRun::Refused),
            },
            Some("InvalidArnException") => Ok(DryRun::GranteeUnknown),
            _ => Err(classify("CreateGrant (DryRun)", &e)),
        },
    }
}

/// A described group as plain data: its role and where its instances come from.
pub(super) fn asg_of(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Asg {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification as Spec;
    let template = |t: &Spec, via: &'static str| LaunchSource::Template {
        id: t.launch_template_id().map(str::to_owned),
        name: t.launch_template_name().map(str::to_owned),
        version: t.version().unwrap_or("$Default").to_owned(),
        via,
    };
    let mut sources = Vec::new();
    if let Some(t) = g.launch_template() {
        sources.push(template(t, crate::core::model::VIA_GROUP));
    }
    if let Some(lt) = g.mixed_instances_policy().and_then(|p| p.launch_template()) {
        if let Some(t) = lt.launch_template_specification() {
            sources.push(template(t, "its mixed instances policy"));
        }
        for o in lt.overrides() {
            if let Some(t) = o.launch_template_specification() {
                sources.push(template(t, "an override of its mixed instances policy"));
            }
        }
    }
    if let Some(lc) = g.launch_configuration_name() {
        sources.push(LaunchSource::Configuration(lc.to_owned()));
    }
    Asg { service_linked_role_arn: g.service_linked_role_arn().map(str::to_owned), sources }
}
