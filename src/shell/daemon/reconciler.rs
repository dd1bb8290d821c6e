//! What the daemon's loop needs from the outside world: a connection, a pass over some
//! bindings, and a sweep of the selectors. [`AwsReconciler`] is the real one.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::model::desired::{Desired, Events};
use crate::core::model::select::Swept;
use crate::core::plan::Depth;
use crate::shell::aws::events::Batch;
use crate::shell::aws::{Aws, CallStats, ExecSettings};
use crate::shell::metrics::Metrics;
use crate::shell::reconcile::{self, Outcome, Prior};

/// What the loop needs from the outside world: a connection, and a pass over some
/// bindings. [`AwsReconciler`] is the real one; tests put in their own to drive the loop
/// on a paused clock.
pub trait Reconciler: Send + Sync + 'static {
    type Client: Send + Sync + 'static;
    /// Connects; `region` is the fallback for global calls.
    fn connect(&self, region: String) -> impl Future<Output = Result<Self::Client, String>> + Send + 'static;
    /// Reconciles `desired` (the bindings of the keys due) once; a full pass also reads
    /// what changes rarely (the groups' recent launches). `prior` is what is known before
    /// reading (see [`Prior`]).
    fn reconcile(
        &self,
        client: Arc<Self::Client>,
        desired: Desired,
        depth: Depth,
        prior: Prior,
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
    /// The ARNs the operator acts as, whose writes are its own (change events name them).
    fn identities(&self, _client: &Self::Client) -> Vec<String> {
        Vec::new()
    }
    /// Receives change events from `queue` (in its account, through `role` when it is
    /// another's) and hands them to the loop through `tx`, until the loop goes away. A
    /// reconciler that knows no queue receives nothing.
    fn poll_events(
        &self,
        _client: Arc<Self::Client>,
        _queue: Events,
        _role: Option<String>,
        _tx: mpsc::Sender<Batch>,
        _metrics: Arc<Metrics>,
    ) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
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

    fn identities(&self, aws: &Aws) -> Vec<String> {
        vec![aws.caller_arn().to_owned()]
    }

    fn reconcile(
        &self,
        aws: Arc<Aws>,
        desired: Desired,
        depth: Depth,
        prior: Prior,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let (exec, max_rounds) = (self.exec.clone(), self.max_rounds);
        async move { reconcile::apply(&aws, &desired, max_rounds, &exec, depth, &prior).await }
    }

    // The future must own what it uses ('static): an `async fn` would hold `&self`.
    #[allow(clippy::manual_async_fn)]
    fn poll_events(
        &self,
        aws: Arc<Aws>,
        queue: Events,
        role: Option<String>,
        tx: mpsc::Sender<Batch>,
        metrics: Arc<Metrics>,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let mut failures = 0u32;
            let account = loop {
                match aws.ensure_account(&queue.account, role.as_deref()).await {
                    Ok(a) => break a,
                    Err(f) => {
                        failures += 1;
                        let wait = std::time::Duration::from_secs(1u64 << failures.min(6));
                        tracing::warn!(queue = %queue.queue_url, error = %f, retry_in = ?wait, "cannot act in the events queue's account");
                        metrics.events_receive_errors.inc();
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            crate::shell::aws::events::poll(account, queue, tx, metrics).await
        }
    }

    // The future must own what it uses ('static): an `async fn` would hold `&self`.
    #[allow(clippy::manual_async_fn)]
    fn sweep(&self, aws: Arc<Aws>, desired: Arc<Desired>) -> impl Future<Output = Swept> + Send + 'static {
        async move { crate::shell::aws::select::sweep(&aws, &desired).await }
    }
}
