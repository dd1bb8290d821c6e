//! What the judge reads of one key, once for every binding on it: its policy and what each
//! distinct need lacks there, and its grants for each role.

use std::collections::BTreeMap;

use crate::core::model::{Grant, Instance, KeyArn, Slr};
use crate::core::policy::{self, Gap, Need, PolicyDocument, PrincipalIds, GRANT_OPERATIONS};

/// One key's policy, read once for all the bindings on it.
#[derive(Debug)]
pub struct KeyView {
    /// The parsed document, or why it could not be parsed.
    pub doc: Result<PolicyDocument, String>,
    /// Why KMS would refuse any write of it: a statement the operator may not edit names
    /// a deleted principal.
    pub refusal: Option<String>,
    /// Each distinct need of the bindings on the key, once.
    pub needs: Vec<NeedView>,
    index: BTreeMap<(bool, String), usize>,
    /// Case 2: whether the owner's policy denies each role (a Deny overrides any grant).
    denials: BTreeMap<Slr, Option<String>>,
    /// Why the write the key needs cannot be made, when the merge of its missing needs
    /// would exceed KMS's size limit.
    pub too_large: Option<String>,
}

/// One distinct need on a key: who needs what, and what the policy lacks for it.
#[derive(Debug)]
pub struct NeedView {
    pub need: Need,
    /// What the policy lacks, or why a Deny stops it.
    pub gap: Result<Gap, String>,
}

impl NeedView {
    pub fn lines(&self) -> Vec<String> {
        match &self.gap {
            Ok(g) => policy::lines(&self.need, *g),
            Err(_) => Vec::new(),
        }
    }
}

impl KeyView {
    /// The statements the operator writes for every need on the key, as JSON: what a
    /// writer that replaces the whole policy must keep in it.
    pub fn statements(&self, instance: &Instance) -> String {
        let needs: Vec<&Need> = self.needs.iter().map(|n| &n.need).collect();
        serde_json::Value::Array(policy::statements_for(&needs, instance)).to_string()
    }

    pub fn of(text: &str, instance: &Instance) -> Self {
        let (doc, refusal) = match PolicyDocument::parse(text) {
            Ok(doc) => {
                let refusal = policy::refusal(&policy::foreign_orphans(&doc, instance));
                (Ok(doc), refusal)
            }
            Err(e) => (Err(e.to_string()), None),
        };
        KeyView { doc, refusal, needs: Vec::new(), index: BTreeMap::new(), denials: BTreeMap::new(), too_large: None }
    }

    /// The index of `need` among the key's needs, evaluated the first time it is seen.
    pub fn need(&mut self, key: &KeyArn, need: Need) -> Option<usize> {
        let doc = self.doc.as_ref().ok()?;
        let id = (need.kind == policy::NeedKind::AccountRoot, need.who.canonical().to_owned());
        if let Some(&i) = self.index.get(&id) {
            return Some(i);
        }
        let gap = policy::gap(doc, &need, key.as_str());
        self.needs.push(NeedView { need, gap });
        self.index.insert(id, self.needs.len() - 1);
        Some(self.needs.len() - 1)
    }

    /// Case 2: why the owner's policy denies the role itself, if it does; once per role.
    pub fn denial(&mut self, key: &KeyArn, slr: &Slr, role: &PrincipalIds) -> Option<String> {
        let doc = self.doc.as_ref().ok()?;
        self.denials.entry(slr.clone()).or_insert_with(|| policy::denial(doc, role, key.as_str())).clone()
    }
}

/// A key's grants for one role.
#[derive(Debug, Default)]
pub struct GrantView {
    /// A grant that gives the role all EBS needs, with no constraints.
    pub complete: Option<String>,
    /// A grant for the role that someone else made and that falls short: not the
    /// operator's to change.
    pub foreign_short: Option<String>,
    /// Whether any grant names the role.
    pub any: bool,
    /// The operator's own grants that no longer do their job, each with why.
    pub retire: Vec<(String, String)>,
}

impl GrantView {
    /// Reads `grants` for `role`: a grant carrying the operator's name (`ours`) that falls
    /// short, or whose grantee is no longer the role (deleted, or deleted and created
    /// again), is retired once a complete one stands.
    pub fn of(grants: &[Grant], role: &PrincipalIds, ours: impl Fn(&Grant) -> bool) -> Self {
        let complete = |g: &Grant| role.matches(&g.grantee_principal) && is_sufficient(g);
        let mut view = GrantView {
            complete: grants.iter().find(|g| complete(g)).map(|g| g.grant_id.clone()),
            any: grants.iter().any(|g| role.matches(&g.grantee_principal)),
            ..GrantView::default()
        };
        if view.complete.is_none() {
            let short = grants.iter().find(|g| role.matches(&g.grantee_principal) && !ours(g));
            view.foreign_short = short.map(|g| g.grant_id.clone());
        }
        for g in grants.iter().filter(|g| ours(g) && !complete(g)) {
            let why = if role.matches(&g.grantee_principal) {
                "lacks operations or has constraints".to_owned()
            } else {
                format!(
                    "is for {}, which is no longer the role (deleted, or deleted and created again)",
                    g.grantee_principal
                )
            };
            view.retire.push((g.grant_id.clone(), why));
        }
        view
    }
}

/// True when the grant lets the grantee do all that EBS needs, with no constraints.
pub fn is_sufficient(g: &Grant) -> bool {
    !g.constrained && GRANT_OPERATIONS.iter().all(|op| g.operations.iter().any(|o| o == op))
}
