//! Answers "does this key policy let principal P call action A on this key", by meaning.
//!
//! The evaluation is deliberately conservative where the operator cannot know the answer:
//! an Allow with a condition it does not understand does not count as allowing, and a
//! NotPrincipal Allow does not count either. An unconditional Deny that matches is reported
//! so the binding can fail with a clear reason instead of being "fixed" by a statement
//! that cannot help.

use serde_json::Value;

use super::condition::{self, Caller};
use super::PolicyDocument;

/// Every spelling under which one principal can appear in a key policy, and the wider
/// principals whose Deny also reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalIds {
    /// Spellings that name exactly this principal; the first is the one the operator
    /// writes. Only these count for an Allow.
    forms: Vec<String>,
    /// The principal's account, as its root ARN and its bare id. A Deny on the account
    /// covers every identity in it (IAM User Guide, "AWS JSON policy elements:
    /// Principal" and "NotPrincipal").
    account: [String; 2],
    /// For a role, the prefix of its sessions' ARNs (`arn:…:sts::ACCOUNT:assumed-role/NAME/`):
    /// a service acts through such a session, so a Deny on one reaches the role's use.
    session_prefix: Option<String>,
    /// The organization of the principal's account (`o-…`), when known: what
    /// `aws:PrincipalOrgID` is compared with.
    org: Option<String>,
}

impl PrincipalIds {
    /// A role, by ARN and, when known, by its unique id (`AROA...`), which KMS shows in
    /// place of the ARN when a role was deleted and created again.
    pub fn role(arn: &str, role_id: Option<&str>) -> Self {
        let mut forms = vec![arn.to_owned()];
        forms.extend(role_id.map(str::to_owned));
        // arn:<partition>:iam::<account>:role/<path/>name
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let (partition, account) = match parts[..] {
            [_, p, _, _, a, _] => (p, a),
            _ => ("aws", ""),
        };
        let name = arn.rsplit('/').next().unwrap_or(arn);
        Self {
            forms,
            account: [format!("arn:{partition}:iam::{account}:root"), account.to_owned()],
            session_prefix: Some(format!("arn:{partition}:sts::{account}:assumed-role/{name}/")),
            org: None,
        }
    }

    /// An account's root principal: `arn:<partition>:iam::<id>:root` or the bare id.
    pub fn account_root(account: &crate::core::model::AccountId, partition: &str) -> Self {
        let forms = vec![account.root_arn(partition), account.as_str().to_owned()];
        Self { account: [forms[0].clone(), forms[1].clone()], forms, session_prefix: None, org: None }
    }

    /// The same principal, its account a member of organization `org`.
    pub fn in_org(mut self, org: &str) -> Self {
        self.org = Some(org.to_owned());
        self
    }

    /// It as the caller a condition is evaluated for: its account (`aws:PrincipalAccount`),
    /// its ARN (`aws:PrincipalArn`: the role's, or the account root's) and organization.
    fn caller(&self, ok: Conditions) -> Caller<'_> {
        Caller {
            account: &self.account[1],
            arn: &self.forms[0],
            org: self.org.as_deref(),
            for_aws_resource: ok == Conditions::GrantForAwsResource,
        }
    }

    /// The canonical spelling, the one the operator writes.
    pub fn canonical(&self) -> &str {
        &self.forms[0]
    }

    /// The role's unique id, when it is a role and the id is known.
    pub fn unique_id(&self) -> Option<&str> {
        self.session_prefix.as_ref().and(self.forms.get(1)).map(String::as_str)
    }

    /// True when `s` names exactly this principal.
    pub fn matches(&self, s: &str) -> bool {
        self.forms.iter().any(|f| f == s)
    }

    /// True when `s` names this principal, one of its sessions, or its account: what a
    /// Deny's Principal must name to reach it.
    fn reached_by(&self, s: &str) -> bool {
        self.matches(s) || self.in_account(s) || self.is_session(s)
    }

    fn in_account(&self, s: &str) -> bool {
        self.account.iter().any(|a| a == s)
    }

    fn is_session(&self, s: &str) -> bool {
        self.session_prefix.as_deref().is_some_and(|p| s.starts_with(p))
    }
}

/// The answer for one (principal, action) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    Allowed,
    Missing,
    /// An unconditional Deny statement matches; its Sid, if it has one.
    Denied(Option<String>),
}

/// Which Allow conditions count as satisfied for this question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditions {
    /// Only unconditional Allow statements count.
    None,
    /// Also `{"Bool": {"kms:GrantIsForAWSResource": true}}`, which holds for the grants
    /// EC2 creates for EBS on behalf of the service-linked role.
    GrantForAwsResource,
}

pub fn coverage(doc: &PolicyDocument, who: &PrincipalIds, action: &str, key_arn: &str, ok: Conditions) -> Coverage {
    let mut allowed = false;
    for st in doc.statements() {
        let Value::Object(m) = st else { continue };
        let effect = m.get("Effect").and_then(Value::as_str).unwrap_or("");
        let is_deny = effect.eq_ignore_ascii_case("Deny");
        if !is_deny && !effect.eq_ignore_ascii_case("Allow") {
            continue;
        }
        if !principal_matches(m, who, is_deny) || !action_matches(m, action) || !resource_matches(m, key_arn, is_deny) {
            continue;
        }
        match (is_deny, m.get("Condition")) {
            (true, None) => return Coverage::Denied(m.get("Sid").and_then(Value::as_str).map(str::to_owned)),
            // A conditional Deny cannot be evaluated here; it is left to KMS.
            (true, Some(_)) => {}
            (false, None) => allowed = true,
            (false, Some(c)) => allowed |= condition::holds(c, &who.caller(ok)),
        }
    }
    if allowed {
        Coverage::Allowed
    } else {
        Coverage::Missing
    }
}

fn principal_matches(m: &serde_json::Map<String, Value>, who: &PrincipalIds, is_deny: bool) -> bool {
    if let Some(p) = m.get("Principal") {
        return match p {
            Value::String(s) => s == "*",
            Value::Object(map) => map.get("AWS").is_some_and(|aws| {
                items(aws).any(|s| s == "*" || if is_deny { who.reached_by(s) } else { who.matches(s) })
            }),
            _ => false,
        };
    }
    if let Some(np) = m.get("NotPrincipal") {
        // "Everyone but these" never counts for an Allow. A Deny reaches the principal
        // unless it is excluded, and AWS checks the account first, then the role, then
        // the session: a role is excluded only when its account is listed too (IAM User
        // Guide, "AWS JSON policy elements: NotPrincipal").
        return is_deny && !not_principal_excludes(np, who);
    }
    false
}

fn not_principal_excludes(np: &Value, who: &PrincipalIds) -> bool {
    let listed: Vec<&str> = match np {
        Value::String(s) => vec![s.as_str()],
        Value::Object(map) => map.get("AWS").map(|aws| items(aws).collect()).unwrap_or_default(),
        _ => Vec::new(),
    };
    if listed.contains(&"*") {
        return true;
    }
    let account = listed.iter().any(|s| who.in_account(s));
    match &who.session_prefix {
        // An account root: listing the account is enough.
        None => account,
        Some(_) => account && listed.iter().any(|s| who.matches(s) || who.is_session(s)),
    }
}

fn action_matches(m: &serde_json::Map<String, Value>, action: &str) -> bool {
    if let Some(a) = m.get("Action") {
        return items(a).any(|p| glob(p, action));
    }
    if let Some(na) = m.get("NotAction") {
        return !items(na).any(|p| glob(p, action));
    }
    false
}

fn resource_matches(m: &serde_json::Map<String, Value>, key_arn: &str, is_deny: bool) -> bool {
    if let Some(r) = m.get("Resource") {
        return items(r).any(|p| glob(p, key_arn));
    }
    if let Some(nr) = m.get("NotResource") {
        return !items(nr).any(|p| glob(p, key_arn));
    }
    // No resource at all: KMS would reject it; assume the worst in each direction.
    is_deny
}

/// IAM-style wildcard match of policy actions and resources: ASCII case-insensitive.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    crate::core::model::select::wildcard(pattern, text, true)
}

/// The strings of a string-or-array field, without copying them.
fn items(v: &Value) -> impl Iterator<Item = &str> {
    let (one, many) = match v {
        Value::String(s) => (Some(s.as_str()), None),
        Value::Array(a) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::AccountId;

    const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const SLR: &str =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

    fn doc(statements: &str) -> PolicyDocument {
        PolicyDocument::parse(&format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)).unwrap()
    }

    fn slr() -> PrincipalIds {
        PrincipalIds::role(SLR, Some("AROAEXAMPLEID"))
    }

    #[test]
    fn glob_matches_like_iam() {
        assert!(glob("kms:ReEncrypt*", "kms:ReEncryptFrom"));
        assert!(glob("KMS:reencrypt*", "kms:ReEncryptTo"));
        assert!(glob("kms:*", "kms:Decrypt"));
        assert!(glob("*", "kms:Decrypt"));
        assert!(glob("kms:Gen?rateDataKey", "kms:GenerateDataKey"));
        assert!(!glob("kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"));
        assert!(glob("kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext"));
        assert!(!glob("kms:Encrypt", "kms:Decrypt"));
        assert!(glob("arn:aws:kms:*:111122223333:key/*", KEY));
    }

    #[test]
    fn root_allow_does_not_count_for_the_service_linked_role() {
        let d = doc(
            r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#,
        );
        assert_eq!(coverage(&d, &slr(), "kms:Decrypt", KEY, Conditions::None), Coverage::Missing);
        let root = PrincipalIds::account_root(&AccountId::parse("111122223333").unwrap(), "aws");
        assert_eq!(coverage(&d, &root, "kms:Decrypt", KEY, Conditions::None), Coverage::Allowed);
    }

    #[test]
    fn bare_account_id_principal_means_root() {
        let d = doc(r#"{"Effect":"Allow","Principal":{"AWS":["111122223333"]},"Action":"kms:Encrypt","Resource":"*"}"#);
        let root = PrincipalIds::account_root(&AccountId::parse("111122223333").unwrap(), "aws");
        assert_eq!(coverage(&d, &root, "kms:Encrypt", KEY, Conditions::None), Coverage::Allowed);
    }

    #[test]
    fn role_unique_id_principal_matches_the_role() {
        let d = doc(r#"{"Effect":"Allow","Principal":{"AWS":"AROAEXAMPLEID"},"Action":"kms:Encrypt","Resource":"*"}"#);
        assert_eq!(coverage(&d, &slr(), "kms:Encrypt", KEY, Conditions::None), Coverage::Allowed);
    }

    #[test]
    fn conditional_allow_counts_only_for_the_grant_condition() {
        let d = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":"true"}}}}}},
               {{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Decrypt","Resource":"*","Condition":{{"StringEquals":{{"kms:ViaService":"ec2.us-west-2.amazonaws.com"}}}}}}"#
        ));
        assert_eq!(coverage(&d, &slr(), "kms:CreateGrant", KEY, Conditions::GrantForAwsResource), Coverage::Allowed);
        assert_eq!(coverage(&d, &slr(), "kms:CreateGrant", KEY, Conditions::None), Coverage::Missing);
        assert_eq!(coverage(&d, &slr(), "kms:Decrypt", KEY, Conditions::GrantForAwsResource), Coverage::Missing);
    }

    #[test]
    fn unconditional_deny_wins_and_is_named() {
        let d = doc(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
               {{"Sid":"NoDecrypt","Effect":"Deny","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Decrypt","Resource":"*"}}"#
        ));
        assert_eq!(
            coverage(&d, &slr(), "kms:Decrypt", KEY, Conditions::None),
            Coverage::Denied(Some("NoDecrypt".into()))
        );
        assert_eq!(coverage(&d, &slr(), "kms:Encrypt", KEY, Conditions::None), Coverage::Allowed);
    }

    #[test]
    fn not_action_and_not_principal_are_read_conservatively() {
        let d = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"NotAction":["kms:ScheduleKeyDeletion","kms:Sign"],"Resource":"*"}},
               {{"Effect":"Allow","NotPrincipal":{{"AWS":"arn:aws:iam::1:root"}},"Action":"kms:Sign","Resource":"*"}}"#
        ));
        assert_eq!(coverage(&d, &slr(), "kms:Encrypt", KEY, Conditions::None), Coverage::Allowed);
        assert_eq!(coverage(&d, &slr(), "kms:ScheduleKeyDeletion", KEY, Conditions::None), Coverage::Missing);
        assert_eq!(coverage(&d, &slr(), "kms:Sign", KEY, Conditions::None), Coverage::Missing);
    }

    #[test]
    fn resource_for_another_key_does_not_count() {
        let d = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Encrypt","Resource":"arn:aws:kms:us-west-2:111122223333:key/other"}}"#
        ));
        assert_eq!(coverage(&d, &slr(), "kms:Encrypt", KEY, Conditions::None), Coverage::Missing);
    }

    fn deny(principal: &str) -> PolicyDocument {
        doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:*","Resource":"*"}},
               {{"Sid":"Fence","Effect":"Deny",{principal},"Action":"kms:Decrypt","Resource":"*"}}"#
        ))
    }

    #[test]
    fn a_deny_on_the_account_reaches_its_roles_as_aws_reads_it() {
        let denied = Coverage::Denied(Some("Fence".into()));
        for (principal, want) in [
            (r#""Principal":{"AWS":"arn:aws:iam::111122223333:root"}"#, &denied),
            (r#""Principal":{"AWS":["111122223333"]}"#, &denied),
            (
                r#""Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling"}"#,
                &denied,
            ),
            (r#""Principal":{"AWS":"arn:aws:iam::999988887777:root"}"#, &Coverage::Allowed),
            (r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/someone-else"}"#, &Coverage::Allowed),
        ] {
            assert_eq!(&coverage(&deny(principal), &slr(), "kms:Decrypt", KEY, Conditions::None), want, "{principal}");
        }
    }

    #[test]
    fn a_not_principal_deny_reaches_the_role_unless_it_excludes_the_role_and_its_account() {
        let denied = Coverage::Denied(Some("Fence".into()));
        for (listed, want) in [
            // Some other principal only: everyone else, the role included, is denied.
            (r#"["arn:aws:iam::111122223333:role/admin"]"#.to_owned(), &denied),
            // The role without its account: AWS checks the account first, so still denied.
            (format!(r#"["{SLR}"]"#), &denied),
            // The account without the role: the role is checked next, and denied.
            (r#"["arn:aws:iam::111122223333:root"]"#.to_owned(), &denied),
            // Both: excluded.
            (format!(r#"["{SLR}","arn:aws:iam::111122223333:root"]"#), &Coverage::Allowed),
            (r#"["AROAEXAMPLEID","111122223333"]"#.to_owned(), &Coverage::Allowed),
        ] {
            let d = deny(&format!(r#""NotPrincipal":{{"AWS":{listed}}}"#));
            assert_eq!(&coverage(&d, &slr(), "kms:Decrypt", KEY, Conditions::None), want, "{listed}");
        }
        // For an account root, listing the account is enough.
        let root = PrincipalIds::account_root(&AccountId::parse("111122223333").unwrap(), "aws");
        let d = deny(r#""NotPrincipal":{"AWS":"111122223333"}"#);
        assert_eq!(coverage(&d, &root, "kms:Decrypt", KEY, Conditions::None), Coverage::Missing);
    }

    #[test]
    fn an_allow_for_the_account_or_a_session_does_not_count_for_the_role() {
        let d = doc(
            r#"{"Effect":"Allow","Principal":{"AWS":["111122223333","arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling"]},"Action":"kms:*","Resource":"*"}"#,
        );
        assert_eq!(coverage(&d, &slr(), "kms:Decrypt", KEY, Conditions::None), Coverage::Missing);
    }
}
