//! What the daemon's loop needs from the outside world: a connection, a pass over some
//! bindings, and a sweep of the selectors. [`AwsReconciler`] is the real one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use crate::core::judge::Judged;
use crate::core::model::desired::Desired;
use crate::core::model::select::Swept;
use crate::core::model::BindingId;
use crate::core::plan::Depth;
use crate::shell::aws::{Aws, CallStats, ExecSettings};
use crate::shell::reconcile::{self, Outcome};

/// What the loop needs from the outside world: a connection, and a pass over some
/// bindings. [`AwsReconciler`] is the real one; tests put in their own to drive the loop
/// on a paused clock.
pub trait Reconciler: Send + Sync + 'static {
    type Client: Send + Sync + 'static;
    /// Connects; `region` is the fallback for global calls.
    fn connect(&self, region: String) -> impl Future<Output = Result<Self::Client, String>> + Send + 'static;
    /// Reconciles `desired` (the bindings of the keys due) once; a full pass also reads
    /// what changes rarely (the groups' recent launches). `prior` is each binding's last
    /// judgement, for what the pass does not read.
    fn reconcile(
        &self,
        client: Arc<Self::Client>,
        desired: Desired,
        depth: Depth,
        prior: BTreeMap<BindingId, Judged>,
    ) -> impl Future<Output = Outcome> + Send + 'static;
    /// Sweeps the selectors of `desired`: the groups each one selects, and what they
    /// launch with. A reconciler that knows no selectors finds nothing.
    fn sweep(
        &self,
        _client: Arc<Self::Client>,
        _desired: Arc<Desired>,
    ) -> impl Future<Output = Swept> + Send + 'static {
        async { Swept::default() }
    }
}

/// Passes against AWS: [`reconcile::apply`] with the daemon's settings.
pub struct AwsReconciler {
    pub stats: Arc<CallStats>,
    pub exec: ExecSettings,
    pub max_rounds: u32,
}

impl Reconciler for AwsReconciler {
    type Client = Aws;

    fn connect(&self, region: String) -> impl Future<Output = Result<Aws, String>> + Send + 'static {
        let stats = self.stats.clone();
        async move {
            let aws = Aws::connect(&region, stats).await.map_err(|e| e.to_string())?;
            tracing::info!(account = %aws.caller(), "connected to AWS");
            Ok(aws)
        }
    }

    fn reconcile(
        &self,
        aws: Arc<Aws>,
        desired: Desired,
        depth: Depth,
        prior: BTreeMap<BindingId, Judged>,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let (exec, max_rounds) = (self.exec.clone(), self.max_rounds);
        async move { reconcile::apply(&aws, &desired, max_rounds, &exec, depth, &prior).await }
    }

    // The future must own what it uses ('static): an `async fn` would hold `&self`.
    #[allow(clippy::manual_async_fn)]
    fn sweep(&self, aws: Arc<Aws>, desired: Arc<Desired>) -> impl Future<Output = Swept> + Send + 'static {
        async move { crate::shell::aws::select::sweep(&aws, &desired).await }
    }
}
