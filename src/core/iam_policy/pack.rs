//! Statements packed into documents IAM accepts: a managed policy holds at most 6,144
//! characters, whitespace not counted, and a role takes at most 10 managed policies by
//! default (IAM User Guide, "IAM and AWS STS quotas").

use serde_json::{json, Value};

/// The most characters a managed policy document may hold, whitespace not counted.
pub const MAX_MANAGED_POLICY: usize = 6144;

/// The most managed policies a role takes by default.
pub const MAX_DOCUMENTS: usize = 10;

/// A document's size as IAM counts it: its characters, without whitespace.
pub fn size(doc: &Value) -> usize {
    serde_json::to_string(doc).expect("a JSON value always serialises").chars().filter(|c| !c.is_whitespace()).count()
}

fn document(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// `statements` in as few documents of at most `max` characters as a greedy packing in
/// their order gives; a statement too large for a document alone is split by its
/// resources first. None when one resource's statement alone does not fit.
pub fn pack(statements: Vec<Value>, max: usize) -> Option<Vec<Value>> {
    let mut docs: Vec<Vec<Value>> = Vec::new();
    for st in statements.into_iter().flat_map(|st| split(st, max)) {
        if size(&document(vec![st.clone()])) > max {
            return None;
        }
        match docs.last_mut() {
            Some(last) if size(&document(last.iter().cloned().chain([st.clone()]).collect())) <= max => last.push(st),
            _ => docs.push(vec![st]),
        }
    }
    Some(docs.into_iter().map(document).collect())
}

/// A statement whose document would be over `max`, split into statements of fewer
/// resources each (the Sid numbered: `Sid`, `Sid2`, ...); any other, as it is.
fn split(st: Value, max: usize) -> Vec<Value> {
    let resources = match st.get("Resource") {
        Some(Value::Array(r)) if r.len() > 1 && size(&document(vec![st.clone()])) > max => r.clone(),
        _ => return vec![st],
    };
    let mut out: Vec<Value> = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    let with = |rs: &[Value], n: usize| {
        let mut s = st.clone();
        s["Resource"] = Value::Array(rs.to_vec());
        if n > 0 {
            if let Some(sid) = st.get("Sid").and_then(Value::as_str) {
                s["Sid"] = json!(format!("{sid}{}", n + 1));
            }
        }
        s
    };
    for r in resources {
        current.push(r);
        if current.len() > 1 && size(&document(vec![with(&current, out.len())])) > max {
            let last = current.pop().expect("pushed above");
            out.push(with(&current, out.len()));
            current = vec![last];
        }
    }
    if !current.is_empty() {
        out.push(with(&current, out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sid: &str, n: usize) -> Value {
        let resources: Vec<String> = (0..n)
            .map(|i| {
                format!("arn:aws:autoscaling:us-west-2:111122223333:autoScalingGroup:*:autoScalingGroupName/g-{i:05}")
            })
            .collect();
        json!({"Sid": sid, "Effect": "Allow", "Action": ["autoscaling:UpdateAutoScalingGroup"], "Resource": resources})
    }

    #[test]
    fn statements_fill_documents_of_at_most_the_limit_in_order() {
        let docs = pack(vec![statement("A", 10), statement("B", 10), statement("C", 50)], MAX_MANAGED_POLICY).unwrap();
        assert!(docs.iter().all(|d| size(d) <= MAX_MANAGED_POLICY), "{docs:?}");
        assert_eq!(docs.len(), 2);
        let sids: Vec<&str> =
            docs.iter().flat_map(|d| d["Statement"].as_array().unwrap()).map(|s| s["Sid"].as_str().unwrap()).collect();
        assert_eq!(sids, ["A", "B", "C"]);
    }

    #[test]
    fn a_statement_too_large_alone_is_split_by_its_resources_and_nothing_is_lost() {
        let docs = pack(vec![statement("Groups", 200)], MAX_MANAGED_POLICY).unwrap();
        assert!(docs.len() > 1 && docs.iter().all(|d| size(d) <= MAX_MANAGED_POLICY), "{docs:?}");
        let resources: usize = docs
            .iter()
            .flat_map(|d| d["Statement"].as_array().unwrap())
            .map(|s| s["Resource"].as_array().unwrap().len())
            .sum();
        assert_eq!(resources, 200);
        assert_eq!(docs[1]["Statement"][0]["Sid"], "Groups2");
    }

    #[test]
    fn whitespace_does_not_count() {
        let d = json!({"Version": "2012-10-17", "Statement": []});
        assert_eq!(size(&d), r#"{"Version":"2012-10-17","Statement":[]}"#.len());
    }
}
