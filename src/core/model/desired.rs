//! The desired state: what the config file says, once validated.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::select::{Origin, Selector};
use super::{AccountId, AsgRef, BindingId, Failure, Instance, KeyArn, Slr};

/// A validated binding: one ASG that must be able to use one key. A config entry with
/// `keys:` makes one per key, all with the same group and role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub asg: AsgRef,
    /// The key the group launches with once the binding is converged: for a binding with
    /// `strategy: reencrypt`, the `reencryptWith` key in the group's own account.
    pub key: KeyArn,
    pub slr_suffix: Option<Arc<str>>,
    /// `strategy: reencrypt`: the other accounts' keys the group's images (and mappings)
    /// use now, which the operator replaces with copies under `key` (procedure case 2,
    /// solution 1). None for the default strategy, a grant on each key.
    pub reencrypt_from: Option<Arc<[KeyArn]>>,
    /// `reencryptParameter` (with `strategy: reencrypt`): the Systems Manager parameter the
    /// operator publishes the copy's AMI id to, when the group's image comes from a
    /// parameter; its new version names the image `resolve:ssm:` this one.
    pub reencrypt_parameter: Option<Arc<str>>,
    /// The config's `bindings`, or a selector's sweep.
    pub origin: Origin,
}

impl Binding {
    pub fn id(&self) -> BindingId {
        BindingId { asg: self.asg.clone(), key: self.key.clone() }
    }

    /// Case 2 of the procedure: the key lives in another account than the ASG.
    pub fn is_cross_account(&self) -> bool {
        self.key.account() != &self.asg.account
    }

    pub fn slr(&self) -> Slr {
        Slr { account: self.asg.account, partition: self.key.partition(), suffix: self.slr_suffix.clone() }
    }
}

/// The validated desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Accounts other than our own, with the role to assume in each.
    pub accounts: BTreeMap<AccountId, String>,
    pub bindings: Vec<Binding>,
    /// Groups chosen by tag: each sweep of them adds bindings (see
    /// [`crate::core::select`]).
    pub selectors: Vec<Selector>,
    /// `events`: the SQS queue EventBridge delivers AWS's change events to, when set.
    pub events: Option<Events>,
    /// Which instance this is, and whether it prunes.
    pub operator: Operator,
}

impl Desired {
    /// Whether the operator can act in `account`: its own, or one listed under `accounts`.
    pub fn reaches(&self, account: &AccountId, caller: &AccountId) -> bool {
        account == caller || self.accounts.contains_key(account)
    }

    /// Why a binding cannot be acted on with the credentials at hand, if it cannot: its
    /// group's account is neither the operator's nor listed. A key owner account the
    /// operator cannot act in is no error: see [`Desired::is_handoff`].
    pub fn unreachable(&self, b: &Binding, caller: &AccountId) -> Option<Failure> {
        (!self.reaches(&b.asg.account, caller)).then(|| {
            Failure::terminal(format!(
                "ASG account {} is neither the operator's own account ({caller}) nor listed under `accounts`",
                b.asg.account
            ))
        })
    }

    /// Hand-off mode (procedure case 2 when someone else owns the key): the key's owner
    /// account is neither the caller's, nor the group's, nor listed under `accounts`. The
    /// operator never writes that key's policy: it checks, with the group account's
    /// credentials, whether the owner's policy lets the group's account create the grant,
    /// creates it once it does, and until then reports what the owner must add.
    pub fn is_handoff(&self, b: &Binding, caller: &AccountId) -> bool {
        b.key.account() != &b.asg.account && !self.reaches(b.key.account(), caller)
    }
}

/// The queue of change events (`events` in the config, or `run --events-queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    pub queue_url: String,
    pub region: String,
    /// The queue's account and name, from its URL (`…/ACCOUNT/NAME`).
    pub account: AccountId,
    pub name: String,
}

impl Events {
    /// The queue from its URL: `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME` (the
    /// Region from the host when `region` is None), or any URL whose path is
    /// `/ACCOUNT/NAME` with `region` given.
    pub fn parse(url: &str, region: Option<&str>) -> Result<Events, String> {
        let shape = "a queue URL such as https://sqs.us-west-2.amazonaws.com/111122223333/asg-cmk-operator-events";
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(format!("{url:?} is not {shape}"))?;
        let (host, path) = rest.split_once('/').ok_or(format!("{url:?} is not {shape}"))?;
        let mut parts = path.trim_end_matches('/').split('/');
        let (Some(account), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{url:?} is not {shape}"));
        };
        let account = AccountId::parse(account).ok_or(format!("{url:?}: {account:?} is not an account id"))?;
        if name.is_empty() || name.len() > 80 {
            return Err(format!("{url:?}: a queue name is 1 to 80 characters"));
        }
        let from_host = host.strip_prefix("sqs.").and_then(|h| h.split_once('.')).map(|(r, _)| r.to_owned());
        let region = region
            .map(str::to_owned)
            .or(from_host)
            .ok_or(format!("{url:?}: its Region cannot be read from it; give `region`"))?;
        Ok(Events { queue_url: url.to_owned(), region, account, name: name.to_owned() })
    }

    pub fn queue_arn(&self, partition: &str) -> String {
        format!("arn:{partition}:sqs:{}:{}:{}", self.region, self.account, self.name)
    }
}

/// Settings of the operator itself, from the config (and the command line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operator {
    /// `instance`: whose statements and grants these are.
    pub instance: Instance,
    /// `defaults.prune` (or `--prune`): remove what this instance wrote that no current
    /// binding explains.
    pub prune: bool,
    /// `defaults.allowMassPrune` (or `--allow-mass-prune`): prune even when the guard
    /// would hold it (more than half of the bindings removed at once, or all of them).
    pub allow_mass_prune: bool,
    /// `defaults.reencryptCleanup`: deregister the operator's image copies (and delete
    /// their snapshots) once nothing launches them or may launch them.
    pub reencrypt_cleanup: bool,
    /// How many bindings the whole config has. A pass over part of it (one unit of work)
    /// weighs a prune against all of them, not against its part.
    pub config_bindings: usize,
    /// Set by the daemon when the config edit that led here removes more than half of the
    /// bindings (see `edit_prune_hold` in the planner's prune step): why nothing is pruned until
    /// that is confirmed. It stands until an edit brings the removals back under half.
    pub prune_held: Option<String>,
    /// Keys no binding names any more, which the daemon saw leave the config while
    /// pruning: read, with pruning on, to prune what this instance wrote there, until
    /// nothing of it is left. Only the daemon sees an edit, so only it fills this.
    pub departed: std::collections::BTreeSet<KeyArn>,
    /// `defaults.selectorSyncInterval`: how often the daemon sweeps the selectors between
    /// full resyncs (never less often than it resyncs); [`DEFAULT_SELECTOR_SYNC`] when
    /// the config says nothing.
    pub selector_sync: Option<std::time::Duration>,
    /// `defaults.kmsCreateGrantRate`: at most this many CreateGrant calls a second per
    /// account and Region, dry runs included; see [`Operator::create_grant_rate`].
    pub kms_create_grant_rate: Option<u32>,
}

impl Operator {
    /// CreateGrant calls a second per account and Region, at most: the config's, else
    /// [`DEFAULT_CREATE_GRANT_RATE`].
    pub fn create_grant_rate(&self) -> u32 {
        self.kms_create_grant_rate.unwrap_or(DEFAULT_CREATE_GRANT_RATE)
    }
}

/// A fifth of KMS's CreateGrant quota (50/s per account and Region), which AWS's own
/// grants count against too: every launch of an encrypted volume makes one.
pub const DEFAULT_CREATE_GRANT_RATE: u32 = 10;

/// How often selectors are swept unless `defaults.selectorSyncInterval` says otherwise.
pub const DEFAULT_SELECTOR_SYNC: std::time::Duration = std::time::Duration::from_secs(60);
