//! The desired state: what the config file says, once validated.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{AccountId, AsgRef, BindingId, Instance, KeyArn, Slr};

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
    /// Which instance this is, and whether it prunes.
    pub operator: Operator,
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
    /// How many bindings the whole config has. A pass over part of it (one unit of work)
    /// weighs a prune against all of them, not against its part.
    pub config_bindings: usize,
    /// Set by the daemon when the config edit that led here removes more than half of the
    /// bindings (see [`crate::core::plan::edit_prune_hold`]): why nothing is pruned until
    /// that is confirmed. It stands until an edit brings the removals back under half.
    pub prune_held: Option<String>,
    /// Keys no binding names any more, which the daemon saw leave the config while
    /// pruning: read, with pruning on, to prune what this instance wrote there, until
    /// nothing of it is left. Only the daemon sees an edit, so only it fills this.
    pub departed: std::collections::BTreeSet<KeyArn>,
}
