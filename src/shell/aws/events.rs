//! The events poller: a task of the daemon's own that receives from the queue (long
//! polling: 20 s, up to 10 messages a call), hands each batch to the loop, and deletes
//! the batch's messages once the loop has scheduled what they touch. Delivery is at
//! least once: a message whose deletion fails comes back, and costs at most one more pass
//! of its unit. A receive that fails backs off (1 s, 2 s, … up to a minute) and is
//! counted; nothing else stops the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Account;
use crate::core::model::desired::Events;
use crate::shell::metrics::Metrics;

/// Messages received in one call, for the loop; the loop answers on `scheduled` once it
/// has taken them in, and the poller then deletes them.
pub struct Batch {
    pub bodies: Vec<String>,
    pub scheduled: oneshot::Sender<()>,
}

/// SQS answers at most 10 messages a call, and waits at most 20 s for one (SQS
/// Developer Guide, "Amazon SQS short and long polling").
const MAX_MESSAGES: i32 = 10;
const WAIT_SECONDS: i32 = 20;

/// Receives from `events`' queue until the loop goes away.
pub async fn poll(account: Arc<Account>, events: Events, tx: mpsc::Sender<Batch>, metrics: Arc<Metrics>) {
    let client = account.sqs(&events.region);
    // Once, to say in the log which queue this is, or why it cannot be read.
    let attributes = client
        .get_queue_attributes()
        .queue_url(&events.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send();
    match account.send("sqs", "GetQueueAttributes", attributes).await {
        Ok(out) => {
            let arn = out.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn));
            tracing::info!(queue = arn.map_or(events.queue_url.as_str(), String::as_str), "receiving change events");
        }
        Err(f) => {
            tracing::warn!(queue = %events.queue_url, error = %f, "the events queue cannot be read; receiving from it anyway")
        }
    }
    let mut failures: u32 = 0;
    loop {
        let request = client
            .receive_message()
            .queue_url(&events.queue_url)
            .wait_time_seconds(WAIT_SECONDS)
            .max_number_of_messages(MAX_MESSAGES)
            .send();
        let messages = match account.send("sqs", "ReceiveMessage", request).await {
            Ok(out) => {
                failures = 0;
                metrics.events_polled.set(crate::shell::metrics::unix_now());
                out.messages.unwrap_or_default()
            }
            Err(f) => {
                failures += 1;
                metrics.events_receive_errors.inc();
                let wait = Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                tracing::warn!(queue = %events.queue_url, error = %f, retry_in = ?wait, "cannot receive events");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let bodies = messages.iter().map(|m| m.body().unwrap_or_default().to_owned()).collect();
        let (scheduled, done) = oneshot::channel();
        if tx.send(Batch { bodies, scheduled }).await.is_err() || done.await.is_err() {
            return; // the loop is gone: the messages come back to whoever polls next
        }
        delete(&account, &client, &events, &messages).await;
    }
}

/// Deletes a batch's messages; one whose deletion fails is delivered again.
async fn delete(
    account: &Account,
    client: &aws_sdk_sqs::Client,
    events: &Events,
    messages: &[aws_sdk_sqs::types::Message],
) {
    use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry as Entry;
    let entries: Vec<Entry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Entry::builder().id(i.to_string()).receipt_handle(m.receipt_handle()?).build().ok())
        .collect();
    let request = client.delete_message_batch().queue_url(&events.queue_url).set_entries(Some(entries)).send();
    match account.send("sqs", "DeleteMessageBatch", request).await {
        Ok(out) if out.failed().is_empty() => {}
        Ok(out) => {
            tracing::warn!(
                failed = out.failed().len(),
                "some events could not be deleted; they will be delivered again"
            )
        }
        Err(f) => tracing::warn!(error = %f, "events could not be deleted; they will be delivered again"),
    }
}
