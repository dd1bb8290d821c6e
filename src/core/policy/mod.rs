//! KMS key-policy documents: parse, evaluate "does this policy let P do A" by meaning,
//! and merge the operator's own statements into a policy without touching anyone else's.
//!
//! A document is kept as an order-preserving JSON object, so every field the operator does
//! not understand (and every statement it did not write) goes back to KMS as it came.

mod condition;
mod eval;
mod merge;

pub use eval::{coverage, Conditions, Coverage, PrincipalIds};
pub use merge::{
    case2_statements, denial, ensure, extend, foreign_orphans, gap, is_owned, lines, owned_principals, prune, refusal,
    statements_for, Gap, Merge, Need, NeedKind,
};

use serde_json::{Map, Value};

/// Sid prefix of statements written by an operator instance. An instance edits only the
/// statements whose Sid is exactly one of its own ([`is_owned`]); all others are never
/// edited, reordered or dropped.
pub const SID_PREFIX: &str = "AsgCmkOperator";
/// KMS rejects key policies over 32 KB.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// The actions the service-linked role needs on the key, as the procedure writes them.
pub const USE_ACTION_PATTERNS: [&str; 5] =
    ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"];

/// What EBS actually calls: the policy counts as granting "use" when each of these is
/// allowed, however the statements spell it (wildcards, several statements, any order).
pub const USE_ACTIONS: [&str; 7] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
];

/// The operations of the cross-account grant (case 2, step 4 of the procedure).
pub const GRANT_OPERATIONS: [&str; 8] = [
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "DescribeKey",
    "CreateGrant",
];

/// True for an IAM unique id such as `AROA…` (role) or `AIDA…` (user): four capitals
/// starting with `A`, then capitals and digits. KMS shows one in place of a principal's
/// ARN once that principal is deleted (AWS Knowledge Center,
/// "kms-policy-error-invalid-principals").
pub fn is_unique_id(s: &str) -> bool {
    let b = s.as_bytes();
    (16..=128).contains(&b.len())
        && b[0] == b'A'
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("key policy is not valid JSON: {0}")]
    Json(String),
    #[error("key policy must be a JSON object with a Statement")]
    Shape,
    #[error("merged key policy would be {size} bytes; KMS allows {MAX_POLICY_BYTES}")]
    TooLarge { size: usize },
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    root: Map<String, Value>,
}

impl PolicyDocument {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let Value::Object(root) = value else { return Err(PolicyError::Shape) };
        match root.get("Statement") {
            Some(Value::Array(_)) | Some(Value::Object(_)) => Ok(Self { root }),
            _ => Err(PolicyError::Shape),
        }
    }

    /// The statements, whether the document holds an array or a single object.
    pub fn statements(&self) -> Vec<&Value> {
        match self.root.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => Vec::new(),
        }
    }

    /// Every `AWS` principal the statements name in `Principal`, as written.
    pub fn principals(&self) -> Vec<String> {
        self.statements().into_iter().filter_map(|s| s.get("Principal")?.get("AWS")).flat_map(strings).collect()
    }

    fn statements_mut(&mut self) -> &mut Vec<Value> {
        let st = self.root.entry("Statement").or_insert_with(|| Value::Array(Vec::new()));
        if !st.is_array() {
            let one = st.take();
            *st = Value::Array(vec![one]);
        }
        match st {
            Value::Array(items) => items,
            _ => unreachable!("made an array above"),
        }
    }

    /// Compact JSON, as sent to PutKeyPolicy.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Value::Object(self.root.clone())).expect("a JSON value always serialises")
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(scalar_string).collect(),
        other => vec![scalar_string(other)],
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_non_policies() {
        assert!(matches!(PolicyDocument::parse("nope"), Err(PolicyError::Json(_))));
        assert_eq!(PolicyDocument::parse("[]"), Err(PolicyError::Shape));
        assert_eq!(PolicyDocument::parse(r#"{"Version":"2012-10-17"}"#), Err(PolicyError::Shape));
    }

    #[test]
    fn single_statement_object_is_read_as_one_statement() {
        let d = PolicyDocument::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        )
        .unwrap();
        assert_eq!(d.statements().len(), 1);
    }
}
