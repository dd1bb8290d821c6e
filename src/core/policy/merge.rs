//! Adds what a key policy is missing, in statements the operator owns, and nothing else.
//!
//! Each operator instance owns at most three statements per key, told apart by Sid (with
//! `-<instance>` after it for an instance other than `default`):
//! - `AsgCmkOperatorUse`: the use actions, for service-linked roles (case 1) and account
//!   roots (case 2);
//! - `AsgCmkOperatorAttachment`: `kms:CreateGrant` when `kms:GrantIsForAWSResource` is
//!   true, for service-linked roles (case 1);
//! - `AsgCmkOperatorCrossAccountGrant`: `kms:CreateGrant` without that condition, for
//!   account roots (case 2).
//!
//! A principal is added only when the policy, read by meaning, does not already allow it
//! what it needs. Principals already in an owned statement stay there (unless pruning,
//! see [`prune`], removes those no binding explains), with one exception: when
//! the operator writes, it drops from its own statements the unique ids (`AROA…`) that
//! KMS shows in place of deleted principals. KMS refuses every PutKeyPolicy while a
//! policy names one (AWS Knowledge Center, "kms-policy-error-invalid-principals"), and
//! a deleted principal grants nothing.

use serde_json::{json, Value};

use crate::core::model::Instance;

use super::eval::{coverage, Conditions, Coverage, PrincipalIds};
use super::{
    is_unique_id, strings, PolicyDocument, PolicyError, MAX_POLICY_BYTES, SID_PREFIX, USE_ACTIONS, USE_ACTION_PATTERNS,
};

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
    /// Needs that were missing something, by index: the ones the document is for.
    pub missing: Vec<usize>,
    /// Unique ids of deleted principals in statements the operator did not write, as
    /// (statement, id). While any is there KMS refuses every write of this policy.
    pub foreign_orphans: Vec<(String, String)>,
}

impl Merge {
    /// Why the document cannot be written, when a statement the operator may not edit
    /// names a deleted principal.
    pub fn unwritable(&self) -> Option<String> {
        self.document.as_ref().and_then(|_| self.refusal())
    }

    /// Why KMS would refuse any write of this policy, whatever is written: a statement the
    /// operator may not edit names a deleted principal.
    pub fn refusal(&self) -> Option<String> {
        refusal(&self.foreign_orphans)
    }
}

/// Why KMS would refuse any write of a policy whose statements the operator may not edit
/// name the deleted principals `orphans` (as (statement, id); see [`foreign_orphans`]).
pub fn refusal(orphans: &[(String, String)]) -> Option<String> {
    if orphans.is_empty() {
        return None;
    }
    let named: Vec<String> = orphans.iter().map(|(st, id)| format!("{st} names {id}")).collect();
    Some(format!(
        "{}: the unique id of a deleted IAM principal. KMS refuses every PutKeyPolicy on this key until it is \
         removed (\"Policy contains a statement with one or more invalid principals\"). The operator does not \
         edit statements it did not write: ask the key's administrators to remove that principal from the \
         statement, or put back the principal it stood for",
        named.join("; ")
    ))
}

#[derive(Clone, Copy)]
enum Slot {
    Use,
    Attachment,
    CrossAccountGrant,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::Use, Slot::Attachment, Slot::CrossAccountGrant];

    /// `AsgCmkOperator<Slot>` for the instance `default` (the Sids earlier versions
    /// wrote), `AsgCmkOperator<Slot>-<instance>` for any other. No slot name is a prefix
    /// of another and an instance name has no character a slot name has at its end, so
    /// a Sid names at most one (slot, instance).
    fn sid(self, instance: &Instance) -> String {
        let tail = match self {
            Slot::Use => "Use",
            Slot::Attachment => "Attachment",
            Slot::CrossAccountGrant => "CrossAccountGrant",
        };
        match instance.is_default() {
            true => format!("{SID_PREFIX}{tail}"),
            false => format!("{SID_PREFIX}{tail}-{instance}"),
        }
    }

    fn statement(self, instance: &Instance, principals: &[String]) -> Value {
        let aws = json!(principals);
        let sid = self.sid(instance);
        match self {
            Slot::Use => json!({
                "Sid": sid, "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": USE_ACTION_PATTERNS, "Resource": "*"
            }),
            Slot::Attachment => json!({
                "Sid": sid, "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": "kms:CreateGrant", "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}
            }),
            Slot::CrossAccountGrant => json!({
                "Sid": sid, "Effect": "Allow", "Principal": {"AWS": aws},
                "Action": "kms:CreateGrant", "Resource": "*"
            }),
        }
    }
}

/// True when `st` is one of the statements `instance` writes. Another instance's
/// statements, whatever their Sid, are foreign to it: never edited, reordered or dropped.
pub fn is_owned(st: &Value, instance: &Instance) -> bool {
    let sid = st.get("Sid").and_then(Value::as_str);
    sid.is_some_and(|sid| Slot::ALL.iter().any(|slot| slot.sid(instance) == sid))
}

/// Every principal the statements of `instance` name, as written, each once.
pub fn owned_principals(doc: &PolicyDocument, instance: &Instance) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for st in doc.statements().into_iter().filter(|s| is_owned(s, instance)) {
        let Some(aws) = st.get("Principal").and_then(|p| p.get("AWS")) else { continue };
        for p in strings(aws) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Removes `principals` from the statements of `instance`, and drops a statement of its
/// left with none. Statements of anyone else are left as they are. Returns the principals
/// that were there.
pub fn prune(doc: &mut PolicyDocument, instance: &Instance, principals: &[String]) -> Vec<String> {
    let mut removed: Vec<String> = Vec::new();
    let statements = doc.statements_mut();
    for st in statements.iter_mut().filter(|s| is_owned(s, instance)) {
        let Some(aws) = st.get_mut("Principal").and_then(|p| p.get_mut("AWS")) else { continue };
        let before = strings(aws);
        let kept: Vec<String> = before.iter().filter(|p| !principals.contains(p)).cloned().collect();
        if kept.len() != before.len() {
            for p in before.iter().filter(|p| principals.contains(p)) {
                if !removed.contains(p) {
                    removed.push(p.clone());
                }
            }
            *aws = json!(kept);
        }
    }
    statements.retain(|s| {
        !is_owned(s, instance)
            || s.get("Principal").and_then(|p| p.get("AWS")).is_none_or(|aws| !strings(aws).is_empty())
    });
    removed
}

/// The statements the operator writes in case 2 for the group accounts' roots: the use
/// actions, and `kms:CreateGrant` (without `kms:GrantIsForAWSResource`: the operator, not
/// an AWS service, creates the role's grant). What a hand-off key's owner is asked to add.
pub fn case2_statements(roots: &[String]) -> Vec<Value> {
    let instance = Instance::default();
    vec![Slot::Use.statement(&instance, roots), Slot::CrossAccountGrant.statement(&instance, roots)]
}

/// The statements `instance` writes for `needs` whole, as they stand alone: what the
/// writer of a contested key is asked to put into its own policy. Empty past KMS's size
/// limit.
pub fn statements_for(needs: &[&Need], instance: &Instance) -> Vec<Value> {
    let Ok(empty) = PolicyDocument::parse(r#"{"Version":"2012-10-17","Statement":[]}"#) else { return Vec::new() };
    let whole = Gap { use_key: true, grants: true };
    let missing: Vec<(&Need, Gap)> = needs.iter().map(|n| (*n, whole)).collect();
    let current: Vec<&str> = needs.iter().filter_map(|n| n.who.unique_id()).collect();
    match extend(&empty, instance, &missing, &current) {
        Ok(doc) => doc.statements().into_iter().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

/// What a policy lacks for one need: the use of the key, creating grants, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gap {
    pub use_key: bool,
    pub grants: bool,
}

impl Gap {
    /// Whether anything is missing.
    pub fn any(self) -> bool {
        self.use_key || self.grants
    }
}

impl NeedKind {
    /// The statement that gives this kind of need `kms:CreateGrant`, the conditions it
    /// must be allowed under, and how a plan says it.
    fn grant(self) -> (Slot, Conditions, &'static str) {
        match self {
            NeedKind::ServiceLinkedRole => {
                (Slot::Attachment, Conditions::GrantForAwsResource, "create grants for AWS resources")
            }
            NeedKind::AccountRoot => (Slot::CrossAccountGrant, Conditions::None, "create grants"),
        }
    }
}

/// What `doc`, read by meaning, lacks for `need` on the key `key_arn`; or, when an
/// unconditional Deny stops it, why.
pub fn gap(doc: &PolicyDocument, need: &Need, key_arn: &str) -> Result<Gap, String> {
    let mut use_key = false;
    for action in USE_ACTIONS {
        match coverage(doc, &need.who, action, key_arn, Conditions::None) {
            Coverage::Allowed => {}
            Coverage::Missing => use_key = true,
            Coverage::Denied(sid) => return Err(denied_text(&need.who, action, sid)),
        }
    }
    let grants = match coverage(doc, &need.who, "kms:CreateGrant", key_arn, need.kind.grant().1) {
        Coverage::Allowed => false,
        Coverage::Missing => true,
        Coverage::Denied(sid) => return Err(denied_text(&need.who, "kms:CreateGrant", sid)),
    };
    Ok(Gap { use_key, grants })
}

/// One line per permission that filling `gap` adds for `need`, as plans and statuses say
/// it.
pub fn lines(need: &Need, gap: Gap) -> Vec<String> {
    let who = need.who.canonical();
    let mut out = Vec::new();
    if gap.use_key {
        out.push(format!("allow {who} to use the key"));
    }
    if gap.grants {
        out.push(format!("allow {who} to {}", need.kind.grant().2));
    }
    out
}

/// `doc` with the statements of `instance` extended by what each of `missing` lacks, and
/// the unique ids of deleted principals dropped from them, but for `current` (the ids of
/// the roles the policy is written for). Refused over KMS's size limit.
pub fn extend(
    doc: &PolicyDocument,
    instance: &Instance,
    missing: &[(&Need, Gap)],
    current: &[&str],
) -> Result<PolicyDocument, PolicyError> {
    let mut additions: [Vec<String>; 3] = Default::default();
    for (need, gap) in missing {
        let who = need.who.canonical().to_owned();
        if gap.use_key {
            additions[Slot::Use as usize].push(who.clone());
        }
        if gap.grants {
            additions[need.kind.grant().0 as usize].push(who);
        }
    }
    let mut merged = doc.clone();
    for slot in Slot::ALL {
        let extra = &additions[slot as usize];
        if !extra.is_empty() {
            upsert_owned(&mut merged, slot, instance, extra);
        }
    }
    drop_orphans_from_owned(&mut merged, instance, current);
    let size = merged.to_json().len();
    if size > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge { size });
    }
    Ok(merged)
}

/// Works out what `doc` is missing for `needs` on the key `key_arn`, and returns the
/// merged document when something is: [`gap`] for each need, then [`extend`]. Only the
/// statements of `instance` are written to.
pub fn ensure(doc: &PolicyDocument, key_arn: &str, needs: &[Need], instance: &Instance) -> Result<Merge, PolicyError> {
    let mut added: Vec<String> = Vec::new();
    let mut denied = Vec::new();
    let mut missing = Vec::new();
    let mut gaps: Vec<(&Need, Gap)> = Vec::new();
    for (i, need) in needs.iter().enumerate() {
        match gap(doc, need, key_arn) {
            Err(why) => denied.push((i, why)),
            Ok(g) if g.any() => {
                missing.push(i);
                // Several bindings can share one need (ASGs on the same role and key):
                // say it once.
                let new: Vec<String> = lines(need, g).into_iter().filter(|l| !added.contains(l)).collect();
                if !new.is_empty() {
                    added.extend(new);
                    gaps.push((need, g));
                }
            }
            Ok(_) => {}
        }
    }
    let foreign_orphans = foreign_orphans(doc, instance);
    if gaps.is_empty() {
        return Ok(Merge { document: None, added, denied, missing, foreign_orphans });
    }
    let current: Vec<&str> = needs.iter().filter_map(|n| n.who.unique_id()).collect();
    let merged = extend(doc, instance, &gaps, &current)?;
    Ok(Merge { document: Some(merged), added, denied, missing, foreign_orphans })
}

/// The first unconditional Deny in `doc` that keeps `who` from an action EBS needs through
/// a grant (the use actions and CreateGrant), as a sentence. A key policy's Deny overrides
/// any grant, so in case 2 the service-linked role itself is checked against the owner's
/// policy, not only the account root that the policy allows.
pub fn denial(doc: &PolicyDocument, who: &PrincipalIds, key_arn: &str) -> Option<String> {
    USE_ACTIONS.iter().chain(["kms:CreateGrant"].iter()).find_map(|action| {
        match coverage(doc, who, action, key_arn, Conditions::None) {
            Coverage::Denied(sid) => Some(denied_text(who, action, sid)),
            _ => None,
        }
    })
}

/// (statement, id) for every unique id in a statement the operator did not write.
pub fn foreign_orphans(doc: &PolicyDocument, instance: &Instance) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, st) in doc.statements().iter().enumerate() {
        let sid = st.get("Sid").and_then(Value::as_str);
        if is_owned(st, instance) {
            continue;
        }
        let label = sid.map_or_else(|| format!("statement {} (no Sid)", i + 1), |s| format!("statement {s:?}"));
        for field in ["Principal", "NotPrincipal"] {
            let Some(aws) = st.get(field).and_then(|p| p.get("AWS")) else { continue };
            for p in strings(aws).into_iter().filter(|p| is_unique_id(p)) {
                out.push((label.clone(), p));
            }
        }
    }
    out
}

/// Removes from the operator's statements every unique id that is not one of `current`
/// (the ids of the roles this policy is written for), and any owned statement left with
/// no principal.
fn drop_orphans_from_owned(doc: &mut PolicyDocument, instance: &Instance, current: &[&str]) {
    let owned = |s: &Value| is_owned(s, instance);
    let statements = doc.statements_mut();
    for st in statements.iter_mut().filter(|s| owned(s)) {
        let Some(aws) = st.get_mut("Principal").and_then(|p| p.get_mut("AWS")) else { continue };
        let kept: Vec<String> =
            strings(aws).into_iter().filter(|p| !is_unique_id(p) || current.contains(&p.as_str())).collect();
        if kept.len() != strings(aws).len() {
            *aws = json!(kept);
        }
    }
    statements.retain(|s| {
        !owned(s) || s.get("Principal").and_then(|p| p.get("AWS")).is_none_or(|aws| !strings(aws).is_empty())
    });
}

/// Rewrites the owned statement of `slot` in place (or appends it), keeping the principals
/// it already lists and adding `extra`.
fn upsert_owned(doc: &mut PolicyDocument, slot: Slot, instance: &Instance, extra: &[String]) {
    let sid = slot.sid(instance);
    let statements = doc.statements_mut();
    let at = statements.iter().position(|s| s.get("Sid").and_then(Value::as_str) == Some(sid.as_str()));
    let mut principals: Vec<String> =
        at.and_then(|i| statements[i].get("Principal")).and_then(|p| p.get("AWS")).map(strings).unwrap_or_default();
    principals.extend(extra.iter().cloned());
    principals.sort();
    principals.dedup();
    let statement = slot.statement(instance, &principals);
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
    use crate::core::model::AccountId;

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
        let m = ensure(&doc, KEY, &[slr_need()], &Instance::default()).unwrap();
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
        let merged = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")], &Instance::default())
            .unwrap()
            .document
            .unwrap();
        let again = ensure(&merged, KEY, &[slr_need(), root_need("444455556666")], &Instance::default()).unwrap();
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
        let m = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")], &Instance::default()).unwrap();
        assert_eq!(m.document, None);
    }

    #[test]
    fn root_with_only_conditional_grant_gets_the_cross_account_grant_statement() {
        let doc = parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"},
               {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:CreateGrant","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}]}"#,
        );
        let m = ensure(&doc, KEY, &[root_need("444455556666")], &Instance::default()).unwrap();
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
        let merged = ensure(&doc, KEY, &[root_need("444455556666")], &Instance::default()).unwrap().document.unwrap();
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
        let m = ensure(&doc, KEY, &[slr_need()], &Instance::default()).unwrap();
        assert_eq!(m.added, [format!("allow {SLR} to use the key")]);
        let merged = m.document.unwrap();
        assert_eq!(merged.statements()[0]["Action"], json!(USE_ACTION_PATTERNS));
        assert_eq!(merged.statements()[1], doc.statements()[1]);
    }

    #[test]
    fn a_need_shared_by_several_bindings_is_added_and_reported_once() {
        let m =
            ensure(&parse(CONSOLE_POLICY), KEY, &[slr_need(), slr_need(), slr_need()], &Instance::default()).unwrap();
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
        let m = ensure(&doc, KEY, &[slr_need(), root_need("444455556666")], &Instance::default()).unwrap();
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
        assert!(matches!(ensure(&doc, KEY, &[slr_need()], &Instance::default()), Err(PolicyError::TooLarge { .. })));
    }

    #[test]
    fn single_statement_object_document_becomes_an_array_when_extended() {
        let doc = parse(
            r#"{"Statement":{"Sid":"only","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}}"#,
        );
        let merged = ensure(&doc, KEY, &[slr_need()], &Instance::default()).unwrap().document.unwrap();
        assert_eq!(sids(&merged), ["only", "AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
    }

    const GONE: &str = "AROAZZZZZZZZZZZZZZZZZ";
    const CURRENT: &str = "AROAAAAAAAAAAAAAAAAAA";

    #[test]
    fn writing_drops_orphaned_ids_from_owned_statements_only() {
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Sid":"Admins","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*"}},
              {{"Sid":"AsgCmkOperatorUse","Effect":"Allow","Principal":{{"AWS":["{GONE}","arn:aws:iam::444455556666:root"]}},"Action":"kms:Encrypt","Resource":"*"}},
              {{"Sid":"AsgCmkOperatorAttachment","Effect":"Allow","Principal":{{"AWS":"{GONE}"}},"Action":"kms:CreateGrant","Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}}]}}"#
        ));
        let need = Need { who: PrincipalIds::role(SLR, Some(CURRENT)), kind: NeedKind::ServiceLinkedRole };
        let m = ensure(&doc, KEY, &[need], &Instance::default()).unwrap();
        assert!(m.foreign_orphans.is_empty());
        let merged = m.document.unwrap();
        let st = merged.statements();
        assert_eq!(st[0], doc.statements()[0], "foreign statement untouched");
        assert_eq!(st[1]["Principal"]["AWS"], json!([SLR, "arn:aws:iam::444455556666:root"]));
        assert_eq!(st[2]["Principal"]["AWS"], json!([SLR]), "the orphan is replaced, not kept beside the role");
        assert!(!merged.to_json().contains(GONE), "{}", merged.to_json());
    }

    #[test]
    fn an_owned_statement_left_without_principals_is_removed() {
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Sid":"AsgCmkOperatorCrossAccountGrant","Effect":"Allow","Principal":{{"AWS":"{GONE}"}},"Action":"kms:CreateGrant","Resource":"*"}}]}}"#
        ));
        let merged = ensure(&doc, KEY, &[slr_need()], &Instance::default()).unwrap().document.unwrap();
        assert_eq!(sids(&merged), ["AsgCmkOperatorUse", "AsgCmkOperatorAttachment"]);
    }

    #[test]
    fn the_current_role_id_is_kept() {
        let doc = parse(&format!(
            r#"{{"Statement":[{{"Sid":"AsgCmkOperatorUse","Effect":"Allow","Principal":{{"AWS":"{CURRENT}"}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}}]}}"#
        ));
        let need = Need { who: PrincipalIds::role(SLR, Some(CURRENT)), kind: NeedKind::ServiceLinkedRole };
        let merged = ensure(&doc, KEY, &[need], &Instance::default())
            .unwrap()
            .document
            .expect("the attachment statement is missing");
        assert_eq!(merged.statements()[0]["Principal"]["AWS"], json!(CURRENT));
    }

    #[test]
    fn an_orphaned_id_in_a_foreign_statement_makes_the_policy_unwritable() {
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Sid":"Legacy","Effect":"Allow","Principal":{{"AWS":["{GONE}","arn:aws:iam::111122223333:role/app"]}},"Action":"kms:Decrypt","Resource":"*"}},
              {{"Effect":"Deny","NotPrincipal":{{"AWS":"AIDAYYYYYYYYYYYYYYYYY"}},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}}]}}"#
        ));
        let m = ensure(&doc, KEY, &[slr_need()], &Instance::default()).unwrap();
        assert_eq!(
            m.foreign_orphans,
            [
                ("statement \"Legacy\"".to_owned(), GONE.to_owned()),
                ("statement 2 (no Sid)".to_owned(), "AIDAYYYYYYYYYYYYYYYYY".to_owned())
            ]
        );
        let why = m.unwritable().unwrap();
        assert!(why.contains(&format!("statement \"Legacy\" names {GONE}")), "{why}");
        assert!(why.contains("ask the key's administrators"), "{why}");
        // Nothing to write: nothing to refuse.
        let done = ensure(&m.document.unwrap(), KEY, &[slr_need()], &Instance::default()).unwrap();
        assert_eq!(done.unwritable(), None);
    }

    #[test]
    fn only_the_needs_that_were_missing_are_reported() {
        let doc = parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"kms:*","Resource":"*"}]}"#,
        );
        let m = ensure(&doc, KEY, &[root_need("444455556666"), slr_need()], &Instance::default()).unwrap();
        assert_eq!(m.missing, [1]);
    }

    #[test]
    fn denial_finds_a_deny_on_the_role_in_the_owners_policy() {
        let doc = parse(&format!(
            r#"{{"Statement":[
              {{"Effect":"Allow","Principal":{{"AWS":"444455556666"}},"Action":"kms:*","Resource":"*"}},
              {{"Sid":"NoAsg","Effect":"Deny","Principal":{{"AWS":"{SLR}"}},"Action":"kms:CreateGrant","Resource":"*"}}]}}"#
        ));
        let why = denial(&doc, &PrincipalIds::role(SLR, None), KEY).unwrap();
        assert!(why.contains("\"NoAsg\" denies kms:CreateGrant"), "{why}");
        assert_eq!(denial(&parse(CONSOLE_POLICY), &PrincipalIds::role(SLR, None), KEY), None);
    }
}
