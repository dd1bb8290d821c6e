//! `handoff`: what the owners of keys the operator cannot act in must add to their key
//! policies (procedure case 2, hand-off mode; see [`Desired::is_handoff`](crate::core::model::desired::Desired::is_handoff)). Pure: from the
//! config and the caller's account.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::core::judge;
use crate::core::model::desired::Desired;
use crate::core::model::{AccountId, BindingId, KeyArn};

/// One hand-off key: the group accounts that use it and the bindings that need it.
struct HandoffKey {
    groups: BTreeSet<AccountId>,
    bindings: Vec<BindingId>,
}

/// The hand-off keys of `desired`, by owner account.
fn by_owner(desired: &Desired, caller: &AccountId) -> BTreeMap<AccountId, BTreeMap<KeyArn, HandoffKey>> {
    let mut owners: BTreeMap<AccountId, BTreeMap<KeyArn, HandoffKey>> = BTreeMap::new();
    for b in desired.bindings.iter().filter(|b| desired.is_handoff(b, caller)) {
        let key = owners
            .entry(*b.key.account())
            .or_default()
            .entry(b.key.clone())
            .or_insert_with(|| HandoffKey { groups: BTreeSet::new(), bindings: Vec::new() });
        key.groups.insert(b.asg.account);
        key.bindings.push(b.id());
    }
    owners
}

/// Why each statement is there, by Sid.
fn reason(sid: &str, groups: &str) -> String {
    if sid.ends_with("Use") {
        format!(
            "lets account {groups} use the key (kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey*, kms:DescribeKey): its groups' service-linked roles use it through the grant, and the operator describes the key with that account's credentials"
        )
    } else {
        format!(
            "lets account {groups} create grants on the key: the operator creates one grant per group's service-linked role, with that account's credentials. It has no kms:GrantIsForAWSResource condition because the operator, not an AWS service, makes that call (KMS Developer Guide, \"AWS KMS condition keys\")"
        )
    }
}

/// The aws CLI steps for one key, run with the owner account's credentials.
fn steps(key: &KeyArn) -> Vec<String> {
    let (region, arn) = (key.region(), key.as_str());
    vec![
        format!(
            "aws kms get-key-policy --region {region} --key-id {arn} --policy-name default --query Policy --output text > key-policy.json"
        ),
        "edit key-policy.json: append the statements above to its \"Statement\" array; where a statement with the same Sid is there already, add the principals to it instead. Change no other statement".to_owned(),
        format!(
            "aws kms put-key-policy --region {region} --key-id {arn} --policy-name default --policy file://key-policy.json"
        ),
    ]
}

/// `{"owners": [{"account", "keys": [{"key", "groupAccounts", "bindings", "statements":
/// [{"sid", "reason", "statement"}], "steps"}]}]}`.
pub fn document(desired: &Desired, caller: &AccountId) -> Value {
    let owners: Vec<Value> = by_owner(desired, caller)
        .into_iter()
        .map(|(owner, keys)| {
            let keys: Vec<Value> = keys
                .into_iter()
                .map(|(key, k)| {
                    let groups: Vec<&str> = k.groups.iter().map(AccountId::as_str).collect();
                    let named = groups.join(", ");
                    let statements: Vec<Value> = judge::handoff_statements(&key, &k.groups)
                        .into_iter()
                        .map(|st| {
                            let sid = st["Sid"].as_str().unwrap_or_default().to_owned();
                            json!({ "sid": sid, "reason": reason(&sid, &named), "statement": st })
                        })
                        .collect();
                    json!({
                        "key": key.as_str(),
                        "region": key.region(),
                        "groupAccounts": groups,
                        "bindings": k.bindings.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                        "statements": statements,
                        "steps": steps(&key),
                    })
                })
                .collect();
            json!({ "account": owner.as_str(), "keys": keys })
        })
        .collect();
    json!({ "owners": owners })
}

/// The same, for people.
pub fn text(desired: &Desired, caller: &AccountId) -> String {
    let doc = document(desired, caller);
    let owners = doc["owners"].as_array().cloned().unwrap_or_default();
    if owners.is_empty() {
        return "No key needs its owner's hand: every key is in an account the operator can act in.\n".to_owned();
    }
    let mut s = String::new();
    for o in &owners {
        s.push_str(&format!(
            "Key owner account {} (not under `accounts`): the operator does not write its key policies.\n",
            o["account"].as_str().unwrap_or_default()
        ));
        for k in o["keys"].as_array().into_iter().flatten() {
            s.push_str(&format!("\n  key {}\n    used by:", k["key"].as_str().unwrap_or_default()));
            for b in k["bindings"].as_array().into_iter().flatten() {
                s.push_str(&format!(" {}", b.as_str().unwrap_or_default()));
            }
            s.push_str("\n    add these statements to its key policy:\n");
            for st in k["statements"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "\n    # {}: {}\n",
                    st["sid"].as_str().unwrap_or_default(),
                    st["reason"].as_str().unwrap_or_default()
                ));
                let pretty = serde_json::to_string_pretty(&st["statement"]).expect("statement serialises");
                for line in pretty.lines() {
                    s.push_str(&format!("    {line}\n"));
                }
            }
            s.push_str("\n    steps, with the owner account's credentials:\n");
            for (i, step) in k["steps"].as_array().into_iter().flatten().enumerate() {
                s.push_str(&format!("      {}. {}\n", i + 1, step.as_str().unwrap_or_default()));
            }
        }
        s.push('\n');
    }
    s.push_str("The operator checks again on its hand-off interval (run --handoff-recheck-interval, default 1m), then creates the grants and switches the groups.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::desired::Binding;
    use crate::core::model::AsgRef;

    fn acct(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    #[test]
    fn only_keys_of_accounts_without_credentials_are_handed_off_with_the_operators_statements() {
        let caller = acct("111122223333");
        let key = |a: &str| {
            KeyArn::parse(&format!("arn:aws:kms:us-west-2:{a}:key/11111111-1111-1111-1111-111111111111")).unwrap()
        };
        let bind = |asg: &str, k: KeyArn| Binding {
            asg: AsgRef::new(caller, "us-west-2", asg),
            key: k,
            slr_suffix: None,
            reencrypt_from: None,
            reencrypt_parameter: None,
            origin: Default::default(),
        };
        let mut desired = Desired {
            accounts: BTreeMap::from([(acct("222233334444"), "arn:aws:iam::222233334444:role/admin".to_owned())]),
            bindings: vec![
                bind("own", key("111122223333")),
                bind("listed", key("222233334444")),
                bind("web", key("444455556666")),
                bind("api", key("444455556666")),
            ],
            selectors: Vec::new(),
            events: None,
            operator: Default::default(),
        };
        let doc = document(&desired, &caller);
        let owners = doc["owners"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "{doc:#}");
        assert_eq!(owners[0]["account"], "444455556666");
        let k = &owners[0]["keys"][0];
        assert_eq!(k["bindings"].as_array().unwrap().len(), 2);
        let sids: Vec<&str> = k["statements"].as_array().unwrap().iter().map(|s| s["sid"].as_str().unwrap()).collect();
        assert_eq!(sids, ["AsgCmkOperatorUse", "AsgCmkOperatorCrossAccountGrant"]);
        let use_st = &k["statements"][0]["statement"];
        assert_eq!(use_st["Principal"]["AWS"], json!(["arn:aws:iam::111122223333:root"]));
        assert!(use_st["Action"].as_array().unwrap().contains(&json!("kms:ReEncrypt*")));
        let grant_st = &k["statements"][1]["statement"];
        assert_eq!(grant_st["Action"], "kms:CreateGrant");
        assert!(grant_st.get("Condition").is_none(), "the operator's own CreateGrant is not for an AWS resource");
        assert!(k["steps"][0].as_str().unwrap().starts_with("aws kms get-key-policy"));
        assert!(k["steps"][2].as_str().unwrap().starts_with("aws kms put-key-policy"));
        assert!(!k["steps"][2].as_str().unwrap().contains("bypass"));
        assert!(text(&desired, &caller).contains("AsgCmkOperatorCrossAccountGrant"));
        // Listing the account under `accounts` ends the hand-off.
        desired.accounts.insert(acct("444455556666"), "arn:aws:iam::444455556666:role/admin".into());
        assert!(document(&desired, &caller)["owners"].as_array().unwrap().is_empty());
    }
}
