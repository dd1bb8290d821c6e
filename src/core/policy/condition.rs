//! The conditions of an Allow that the evaluator reads, as AWS evaluates them (IAM User
//! Guide, "IAM JSON policy elements: Condition operators" and "AWS global condition
//! context keys"). Every operator and key of a Condition block must hold (they are
//! ANDed), and any value of a key's list may match (ORed). An operator or key not read
//! here makes the Allow not count: the evaluator never credits access it cannot tell.
//!
//! Read:
//! - `Bool kms:GrantIsForAWSResource true`: holds for the grants AWS services make for
//!   the role (KMS Developer Guide, "kms:GrantIsForAWSResource"), when that is asked;
//! - `StringEquals` / `StringLike` `aws:PrincipalAccount`: the caller's account;
//! - `ArnEquals` / `ArnLike` / `StringEquals` / `StringLike` `aws:PrincipalArn`: the
//!   caller's ARN (a role's ARN, not its session's: "aws:PrincipalArn", IAM User Guide),
//!   or for an account root `arn:…:iam::ACCOUNT:root`;
//! - `StringEquals` / `StringLike` `aws:PrincipalOrgID`: the caller's organization, when
//!   it is known.
//!
//! String and ARN matching is case-sensitive; `*` and `?` are wildcards only in the
//! `…Like` and `Arn…` operators.

use serde_json::Value;

use super::strings;
use crate::core::model::select::wildcard;

/// The caller a condition is evaluated for: its account, its ARN (`aws:PrincipalArn`),
/// its organization when known, and whether the call is a grant an AWS service makes
/// for it (`kms:GrantIsForAWSResource`).
pub(super) struct Caller<'a> {
    pub account: &'a str,
    pub arn: &'a str,
    pub org: Option<&'a str>,
    pub for_aws_resource: bool,
}

/// Whether the Condition block `c` of an Allow holds for `who`.
pub(super) fn holds(c: &Value, who: &Caller) -> bool {
    let Value::Object(ops) = c else { return false };
    ops.iter().all(|(op, keys)| {
        let Value::Object(keys) = keys else { return false };
        !keys.is_empty() && keys.iter().all(|(key, values)| one(op, key, &strings(values), who))
    })
}

fn one(op: &str, key: &str, values: &[String], who: &Caller) -> bool {
    if values.is_empty() {
        return false;
    }
    let op = op.to_ascii_lowercase();
    let matching = |actual: &str, wildcards: bool| {
        values.iter().any(|v| if wildcards { wildcard(v, actual, false) } else { v == actual })
    };
    match key.to_ascii_lowercase().as_str() {
        "kms:grantisforawsresource" => {
            op == "bool" && who.for_aws_resource && values.iter().all(|v| v.eq_ignore_ascii_case("true"))
        }
        "aws:principalaccount" => match op.as_str() {
            "stringequals" => matching(who.account, false),
            "stringlike" => matching(who.account, true),
            _ => false,
        },
        "aws:principalarn" => match op.as_str() {
            "stringequals" => matching(who.arn, false),
            "stringlike" | "arnequals" | "arnlike" => matching(who.arn, true),
            _ => false,
        },
        "aws:principalorgid" => who.org.is_some_and(|org| match op.as_str() {
            "stringequals" => matching(org, false),
            "stringlike" => matching(org, true),
            _ => false,
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::core::model::AccountId;
    use crate::core::policy::{coverage, Conditions, Coverage, PolicyDocument, PrincipalIds};

    const KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const SLR: &str =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_web";

    fn allow(principal: &str, action: &str, condition: &str) -> PolicyDocument {
        PolicyDocument::parse(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{principal},"Action":"{action}","Resource":"*","Condition":{condition}}}]}}"#
        ))
        .unwrap()
    }

    fn root(id: &str) -> PrincipalIds {
        PrincipalIds::account_root(&AccountId::parse(id).unwrap(), "aws")
    }

    fn slr() -> PrincipalIds {
        PrincipalIds::role(SLR, None)
    }

    /// (principal, condition, who, conditions asked, what the evaluator must answer).
    #[test]
    fn each_compact_form_is_read_as_aws_reads_it() {
        use Conditions::{GrantForAwsResource as Grant, None as Plain};
        use Coverage::{Allowed, Missing};
        let accounts = r#"{"StringEquals":{"aws:PrincipalAccount":["111122223333","222233334444"]}}"#;
        let roles = r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_*"}}"#;
        let org = r#"{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}"#;
        let cases: Vec<(&str, String, PrincipalIds, Conditions, Coverage)> = vec![
            // Accounts by aws:PrincipalAccount, for account roots and the roles in them.
            (r#""*""#, accounts.into(), root("111122223333"), Plain, Allowed),
            (r#"{"AWS":"*"}"#, accounts.into(), root("222233334444"), Plain, Allowed),
            (r#""*""#, accounts.into(), root("999988887777"), Plain, Missing),
            (r#""*""#, accounts.into(), slr(), Plain, Allowed),
            (r#""*""#, r#"{"StringLike":{"aws:PrincipalAccount":"1111*"}}"#.into(), root("111122223333"), Plain, Allowed),
            // Roles by aws:PrincipalArn: the role, never the account's root.
            (r#""*""#, roles.into(), slr(), Plain, Allowed),
            (r#""*""#, roles.into(), root("111122223333"), Plain, Missing),
            (r#""*""#, format!(r#"{{"ArnEquals":{{"aws:PrincipalArn":["{SLR}"]}}}}"#), slr(), Plain, Allowed),
            (r#""*""#, format!(r#"{{"StringEquals":{{"aws:PrincipalArn":"{}"}}}}"#, SLR.to_uppercase()), slr(), Plain, Missing),
            (r#""*""#, r#"{"StringEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:root"}}"#.into(), root("111122223333"), Plain, Allowed),
            // The organization, when the principal's is known.
            (r#""*""#, org.into(), root("111122223333"), Plain, Missing),
            (r#""*""#, org.into(), root("111122223333").in_org("o-a1b2c3d4e5"), Plain, Allowed),
            (r#""*""#, org.into(), slr().in_org("o-zzzzzzzzzz"), Plain, Missing),
            // Conditions are ANDed; the grant condition holds only when asked.
            (r#""*""#, r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"},"Bool":{"kms:GrantIsForAWSResource":"true"}}"#.into(), slr(), Grant, Allowed),
            (r#""*""#, r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"},"Bool":{"kms:GrantIsForAWSResource":"true"}}"#.into(), slr(), Plain, Missing),
            (r#""*""#, r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333","aws:PrincipalOrgID":"o-a1b2c3d4e5"}}"#.into(), slr(), Plain, Missing),
            // What is not read does not count.
            (r#""*""#, r#"{"StringNotEquals":{"aws:PrincipalAccount":"999988887777"}}"#.into(), slr(), Plain, Missing),
            (r#""*""#, r#"{"StringEqualsIfExists":{"aws:PrincipalAccount":"111122223333"}}"#.into(), slr(), Plain, Missing),
            (r#""*""#, r#"{"ForAnyValue:StringEquals":{"aws:PrincipalAccount":"111122223333"}}"#.into(), slr(), Plain, Missing),
            (r#""*""#, r#"{"StringEquals":{"kms:ViaService":"ec2.us-west-2.amazonaws.com"}}"#.into(), slr(), Plain, Missing),
            (r#""*""#, r#"{"StringEquals":{}}"#.into(), slr(), Plain, Missing),
        ];
        for (principal, condition, who, asked, want) in cases {
            let d = allow(principal, "kms:*", &condition);
            assert_eq!(coverage(&d, &who, "kms:Decrypt", KEY, asked), want, "{principal} {condition} {who:?}");
        }
    }
}
