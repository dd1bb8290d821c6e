//! Adds what a key policy is missing, in statements the operator owns, and nothing else.
//!
//! The operator owns at most three statements per key, told apart by Sid:
//! - `AsgCmkOperatorUse`: the use actions, for service-linked roles (case 1) and account
//!   roots (case 2);
//! - `AsgCmkOperatorAttachment`: `kms:CreateGrant` when `kms:GrantIsForAWSResource` is
//!   true, for service-linked roles (case 1);
//! - `AsgCmkOperatorCrossAccountGrant`: `kms:CreateGrant` without that condition, for
//!   account roots (case 2).
//!
//! A principal is added only when the policy, read by meaning, does not already allow it
//! what it needs. Principals already in an owned statement stay there, so removing a
//! binding never revokes access another binding may rely on.

use serde_json::{json, Value};

use super::eval::{coverage, Conditions, Coverage, PrincipalIds};
use super::{strings, PolicyDocument, PolicyError, MAX_POLICY_BYTES, SID_PREFIX, USE_ACTIONS, USE_ACTION_PATTERNS};

/// Who needs access, and in which role of the procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedKind {
    /// Case 1: the ASG account's service-linked role, on a key of the same account.
    ServiceLinkedRole,
    /// Case 2: the ASG account's root, on a key owned by another account.
    AccountRoot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub who: PrincipalIds,
    pub kind: NeedKind,
}

/// The outcome of [`ensure`].
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The document to put, or None when nothing is missing.
    pub document: Option<PolicyDocument>,
    /// One line per added permission, for plan output and logs.
    pub added: Vec<String>,
    /// Needs that an unconditional Deny blocks, by index into the needs, with the reason.
    pub denied: Vec<(usize, String)>,
}

#[derive(Clone, Copy)]
enum Slot {
    Use,
    Attachment,
    CrossAccountGrant,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::Use, Slot::Attachment, Slot::CrossAccountGrant];

    fn sid(self) -> String {
        let tail = match self {
            Slot::Use => "Use",
            Slot::Attachment => "Attachment",
            Slot::CrossAccountGrant => "CrossAccountGrant",
        };
        format!("{SID_PREFIX}{tail}")
    }

    fn statement(self, principals: &[String]) -> Value {
        let aws = json!(principals);
        match self {
            Slot::Use => json!({
                "Sid": self.sid(), "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": USE_ACTION_PATTERNS, "Resource": "*"
            }),
            Slot::Attachment => json!({
                "Sid": self.sid(), "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": "kms:CreateGrant", "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}
            }),
            Slot::CrossAccountGrant => json!({
                "Sid": self.sid(), "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": "kms:CreateGrant", "Resource": "*"
            }),
        }
    }
}

/// Works out what `doc` is missing for `needs` on the key `key_arn`, and returns the
/// merged document when something is.
pub fn ensure(doc: &PolicyDocument, key_arn: &str, needs: &[Need]) -> Result<Merge, PolicyError> {
    let mut additions: [Vec<String>; 3] = Default::default();
    let mut added = Vec::new();
    let mut denied = Vec::new();

    'needs: for (i, need) in needs.iter().enumerate() {
        let (grant_slot, grant_conditions, grant_text) = match need.kind {
            NeedKind::ServiceLinkedRole => {
                (Slot::Attachment, Conditions::GrantForAwsResource, "create grants for AWS resources")
            }
            NeedKind::AccountRoot => (Slot::CrossAccountGrant, Conditions::None, "create grants"),
        };
        let mut use_missing = false;
        for action in USE_ACTIONS {
            match coverage(doc, &need.who, action, key_arn, Conditions::None) {
                Coverage::Allowed => {}
                Coverage::Missing => use_missing = true,
                Coverage::Denied(sid) => {
                    denied.push((i, denied_text(&need.who, action, sid)));
                    continue 'needs;
                }
            }
        }
        let grant_missing = match coverage(doc, &need.who, "kms:CreateGrant", key_arn, grant_conditions) {
            Coverage::Allowed => false,
            Coverage::Missing => true,
            Coverage::Denied(sid) => {
                denied.push((i, denied_text(&need.who, "kms:CreateGrant", sid)));
                continue 'needs;
            }
        };
        let who = need.who.canonical().to_owned();
        // Several bindings can share one need (ASGs on the same role and key): say it once.
        let mut add = |slot: Slot, text: String| {
            if !added.contains(&text) {
                additions[slot as usize].push(who.clone());
                added.push(text);
            }
        };
        if use_missing {
            add(Slot::Use, format!("allow {who} to use the key"));
        }
        if grant_missing {
            add(grant_slot, format!("allow {who} to {grant_text}"));
        }
    }

    if additions.iter().all(Vec::is_empty) {
        return Ok(Merge { document: None, added, denied });
    }
    let mut merged = doc.clone();
    for slot in Slot::ALL {
        let extra = &additions[slot as usize];
        if !extra.is_empty() {
            upsert_owned(&mut merged, slot, extra);
        }
    }
    let size = merged.to_json().len();
    if size > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge { size });
    }
    Ok(Merge { document: Some(merged), added, denied })
}

/// Rewrites the owned statement of `slot` in place (or appends it), keeping the principals
/// it already lists and adding `extra`.
fn upsert_owned(doc: &mut PolicyDocument, slot: Slot, extra: &[String]) {
    let sid = slot.sid();
    let statements = doc.statements_mut();
    let at = statements.iter().position(|s| s.get("Sid").and_then(Value::as_str) == Some(sid.as_str()));
    let mut principals: Vec<String> =
        at.and_then(|i| statements[i].get("Principal")).and_then(|p| p.get("AWS")).map(strings).unwrap_or_default();
    principals.extend(extra.iter().cloned());
    principals.sort();
    principals.dedup();
    let statement = slot.statement(&principals);
    match at {
        Some(i) => statements[i] = statement,
        None => statements.push(statement),
    }
}

fn denied_text(who: &PrincipalIds, action: &str, sid: Option<String>) -> String {
    let by = sid.map_or_else(|| "a statement without a Sid".to_owned(), |s| format!("statement {s:?}"));
    format!(
        "key policy {by} denies {action} to {}; the operator does not edit statements it did not write",
        who.canonical()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const SLR: &str =
        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_CMK";

    /// The policy the KMS console writes for a new key, with the AWS doc's Sids.
    const CONSOLE_POLICY: &str = r#"{
      "Id": "key-consolepolicy-3",
      "Version": "2012-10-17",
      "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:role/app"},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:role/app"},
         "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
         "x-unknown-field": {"kept": [1, 2, 3]}}
      ]
    }"#;

    fn slr_need() -> Need {
        Need { who: PrincipalIds::role(SLR, None), kind: NeedKind::ServiceLinkedRole }
    }

    fn root_need(id: &str) -> Need {
        Need { who: PrincipalIds::account_root(&AccountId::parse(id).unwrap(), "aws"), kind: NeedKind::AccountRoot }
    }

    fn parse(s: &str) -> PolicyDocument {
        PolicyDocument::parse(s).unwrap()
    }

    fn sids(d: &PolicyDocument) -> Vec<String> {
        d.statements().iter().map(|s| s["Sid"].as_str().unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn merge_keeps_foreign_statement_with_same_sid() {
        let doc = parse(CONSOLE_POLICY);
        let m = ensure(&doc, KEY, &[slr_need()]).unwrap();
        let merged = m.document.expect("SLR was missing");
        let before = doc.statements();
        let after = merged.statements();
        // The three console statements are unchanged, in place, unknown field included.
        assert_eq!(&after[..3], &before[..]);
        assert_eq!(sids(&merged)[3..], ["AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
        let round: serde_json::Value = serde_json::from_str(&merged.to_json()).unwrap();
        assert_eq!(round["Id"], "key-consolepolicy-3");
        assert_eq!(round["Version"], "2012-10-17");
        assert_eq!(m.added.len(), 2);
    }

    #[test]
    fn merged_policy_satisfies_itself() {
        let doc = parse(CONSOLE_POLICY);
        let merged = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")]).unwrap().document.unwrap();
        let again = ensure(&merged, KEY, &[slr_need(), root_need("444455556666")]).unwrap();
        assert_eq!(again.document, None);
        assert!(again.added.is_empty());
    }

    #[test]
    fn already_allowed_by_foreign_statements_means_no_change() {
        // Split across two statements, with wildcards, a bare account id and string forms.
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Sid":"a","Effect":"Allow","Principal":{{"AWS":["{SLR}"]}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*"],"Resource":"*"}},
              {{"Sid":"b","Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":["kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}},
              {{"Sid":"c","Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}},
              {{"Sid":"d","Effect":"Allow","Principal":{{"AWS":"444455556666"}},"Action":"kms:*","Resource":"*"}}
            ]}}"#
        ));
        let m = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")]).unwrap();
        assert_eq!(m.document, None);
    }

    #[test]
    fn root_with_only_conditional_grant_gets_the_cross_account_grant_statement() {
        let doc = parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"},
               {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:CreateGrant","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}]}"#,
        );
        let m = ensure(&doc, KEY, &[root_need("444455556666")]).unwrap();
        let merged = m.document.unwrap();
        assert_eq!(sids(&merged)[2..], ["AsgCmkOperatorCrossAccountGrant"]);
        assert_eq!(m.added, ["allow arn:aws:iam::444455556666:root to create grants"]);
        assert!(merged.statements()[2].get("Condition").is_none());
    }

    #[test]
    fn owned_statement_gains_principals_and_keeps_existing_ones() {
        let doc = parse(
            r#"{"Statement":[{"Sid":"AsgCmkOperatorUse","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:root"},"Action":"kms:Encrypt","Resource":"*"}]}"#,
        );
        let merged = ensure(&doc, KEY, &[root_need("444455556666")]).unwrap().document.unwrap();
        let st = merged.statements();
        assert_eq!(st.len(), 2, "rewritten in place, not duplicated");
        assert_eq!(
            st[0]["Principal"]["AWS"],
            json!(["arn:aws:iam::444455556666:root", "arn:aws:iam::999988887777:root"])
        );
        assert_eq!(st[0]["Action"], json!(USE_ACTION_PATTERNS));
    }

    #[test]
    fn drifted_owned_statement_is_restored() {
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Sid":"AsgCmkOperatorUse","Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:Encrypt","Resource":"*"}},
              {{"Sid":"AsgCmkOperatorAttachment","Effect":"Allow","Principal":{{"AWS":"{SLR}"}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}}]}}"#
        ));
        let m = ensure(&doc, KEY, &[slr_need()]).unwrap();
        assert_eq!(m.added, [format!("allow {SLR} to use the key")]);
        let merged = m.document.unwrap();
        assert_eq!(merged.statements()[0]["Action"], json!(USE_ACTION_PATTERNS));
        assert_eq!(merged.statements()[1], doc.statements()[1]);
    }

    #[test]
    fn a_need_shared_by_several_bindings_is_added_and_reported_once() {
        let m = ensure(&parse(CONSOLE_POLICY), KEY, &[slr_need(), slr_need(), slr_need()]).unwrap();
        assert_eq!(
            m.added,
            [format!("allow {SLR} to use the key"), format!("allow {SLR} to create grants for AWS resources")]
        );
        let merged = m.document.unwrap();
        assert_eq!(merged.statements()[3]["Principal"]["AWS"], json!([SLR]));
    }

    #[test]
    fn deny_blocks_the_need_and_leaves_the_policy_alone() {
        let doc = parse(&format!(
            r#"{{"Statement":[{{"Sid":"NoSlr","Effect":"Deny","Principal":{{"AWS":"{SLR}"}},"Action":"kms:*","Resource":"*"}}]}}"#
        ));
        let m = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")]).unwrap();
        assert_eq!(m.denied.len(), 1);
        assert_eq!(m.denied[0].0, 0);
        assert!(m.denied[0].1.contains("\"NoSlr\""), "{}", m.denied[0].1);
        // The other need still gets its statements.
        assert_eq!(sids(&m.document.unwrap())[1..], ["AsgCmkOperatorUse", "AsgCmkOperatorCrossAccountGrant"]);
    }

    #[test]
    fn oversized_result_is_refused() {
        let filler = "x".repeat(MAX_POLICY_BYTES);
        let doc = parse(&format!(
            r#"{{"Statement":[{{"Sid":"big","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalTag/x":"{filler}"}}}}}}]}}"#
        ));
        assert!(matches!(ensure(&doc, KEY, &[slr_need()]), Err(PolicyError::TooLarge { .. })));
    }

    #[test]
    fn single_statement_object_document_becomes_an_array_when_extended() {
        let doc = parse(
            r#"{"Statement":{"Sid":"only","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}}"#,
        );
        let merged = ensure(&doc, KEY, &[slr_need()]).unwrap().document.unwrap();
        assert_eq!(sids(&merged), ["only", "AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
    }
}
