//! Hand-off keys (procedure case 2 when someone else owns the key): the operator cannot
//! read their policies, so `KeyPolicyReady` is KMS's answer to a dry run of the grant,
//! and a binding waits, with the statements the owner must add, until it succeeds.

use std::collections::BTreeSet;

use super::condition::{Kind, Reason, State};
use super::parts::{rank, stop_fail, stop_wait, Effect, Entry, Parts};
use crate::core::model::desired::Binding;
use crate::core::model::{AccountId, DryRun, Failure, KeyArn, Wait};
use crate::core::policy;

/// Why a hand-off binding waits, with the statements its key's owner must add.
pub fn awaiting_owner(b: &Binding, why: &str) -> String {
    let statements = handoff_statements(&b.key, &BTreeSet::from([b.asg.account]));
    format!(
        "awaiting key owner: account {owner} owns key {key} and has no entry under `accounts`, so its key policy is its administrators' to change, and {why}. Ask them to add these statements to the key policy (`asg-cmk-operator handoff` prints them with the steps): {json}",
        owner = b.key.account(),
        key = b.key,
        json = serde_json::Value::Array(statements),
    )
}

/// The statements a hand-off key's owner must add for the group accounts `accounts`: the
/// same ones, with the same Sids, that the operator writes itself in case 2.
pub fn handoff_statements(key: &KeyArn, accounts: &BTreeSet<AccountId>) -> Vec<serde_json::Value> {
    let roots: Vec<String> = accounts.iter().map(|a| a.root_arn(key.partition())).collect();
    policy::case2_statements(&roots)
}

/// `KeyPolicyReady` of a hand-off key: its policy cannot be read, so what counts is KMS's
/// answer to a dry run of the grant, made by the group's account.
pub(super) fn handoff_policy(p: &Parts) -> Entry {
    let (k, b) = (Kind::KeyPolicyReady, p.b);
    let waiting = |why: String, effect: bool| {
        let message = awaiting_owner(b, &why);
        let eff = if effect { stop_wait(rank::DRY_RUN, Wait::KeyOwner, message.clone()) } else { Effect::None };
        p.c(k, State::False, Reason::AwaitingKeyOwner, message, eff)
    };
    if b.key.is_alias() {
        let f = Failure::terminal(format!(
            "key {} belongs to account {}, which has no entry under `accounts`: name it by its key ARN (hand-off keys are checked by key ARN only), or list the account with a role to assume",
            b.key,
            b.key.account()
        ));
        return p.c(k, State::False, Reason::AliasAcrossAccounts, f.message.clone(), stop_fail(rank::ALIAS, f));
    }
    if p.describe_denied() {
        // KeyUsable says so, and waits.
        return waiting(format!("account {} may not describe it yet", b.asg.account), false);
    }
    match p.observed.handoff.get(&(b.key.clone(), p.slr.clone())) {
        None => p.not_observed(k, rank::DRY_RUN, "dry run of CreateGrant"),
        Some(Err(f)) => p.read_failed(k, rank::DRY_RUN, "dry run of CreateGrant", f),
        Some(Ok(DryRun::Refused)) => {
            waiting(format!("a dry run of CreateGrant by account {} was refused", b.asg.account), true)
        }
        Some(Ok(DryRun::GranteeUnknown)) => p.c(
            k,
            State::Unknown,
            Reason::GranteeUnknown,
            format!("KMS does not know {} yet; the dry run is made again once it does", p.slr.arn()),
            Effect::None,
        ),
        Some(Ok(DryRun::Allowed)) => p.c(
            k,
            State::True,
            Reason::OwnerAllows,
            format!(
                "a dry run of the grant by account {} succeeds: the owner's key policy lets it use the key and create grants",
                b.asg.account
            ),
            Effect::None,
        ),
    }
}
