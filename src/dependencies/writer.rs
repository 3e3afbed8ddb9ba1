//! Writes dependency documents to Elasticsearch under the spans' delivery
//! rules: retried with backoff until stored (the offsets they hold back stay
//! uncommitted meanwhile), a refusal that no retry can fix logged, counted
//! and let go. Once a document is stored, the decision records that waited
//! for it go to the decision log.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::links::Document;
use crate::decision_log::{self, DecisionLog};
use crate::offsets::AckHandle;
use crate::sink::SinkError;
use crate::sink::elasticsearch::EsClient;
use crate::sink::index::{Day, IndexNames, Kind};

/// Flushes waiting for the writer before partitions wait for room; each
/// holds up to a few thousand decision records (`links::MAX_HELD`).
const QUEUE: usize = 16;

/// One flush of one partition.
pub struct Batch {
    pub partition: i32,
    pub document: Document,
    pub records: Vec<decision_log::Pending>,
    pub log: Option<Arc<DecisionLog>>,
    /// Acknowledged once the document is stored (or refused for good).
    pub gate: AckHandle,
}

#[derive(Clone)]
pub struct LinkWriter {
    tx: mpsc::Sender<Batch>,
}

struct Outcomes {
    stored: metrics::Counter,
    retried: metrics::Counter,
    rejected: metrics::Counter,
}

impl LinkWriter {
    pub fn start(client: EsClient, names: IndexNames, backoff: (Duration, Duration)) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, client, names, backoff));
        Self { tx }
    }

    #[cfg(test)]
    pub fn from_sender(tx: mpsc::Sender<Batch>) -> Self {
        Self { tx }
    }

    /// Queues a flush; waits while the writer is `QUEUE` flushes behind.
    pub async fn send(&self, batch: Batch) {
        if self.tx.send(batch).await.is_err() {
            tracing::warn!("dependency writer stopped; links of this flush are not stored");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Batch>,
    client: EsClient,
    names: IndexNames,
    backoff: (Duration, Duration),
) {
    let counter = |result: &'static str| metrics::counter!("tailsift_dependency_documents_total", "result" => result);
    let outcomes = Outcomes {
        stored: counter("stored"),
        retried: counter("retried"),
        rejected: counter("rejected"),
    };
    while let Some(batch) = rx.recv().await {
        // Revoked before it was stored: the next owner decides these traces
        // again (their records were not written) and counts them.
        if batch.gate.is_orphaned() {
            continue;
        }
        store(&client, &names, &batch.document, backoff, &outcomes).await;
        if let Some(log) = &batch.log {
            for record in batch.records {
                log.record(batch.partition, record).await;
            }
        }
        batch.gate.ack();
    }
}

/// Puts the document, retrying what may pass later (no answer, 408, 429,
/// 5xx) with exponential backoff.
async fn store(
    client: &EsClient,
    names: &IndexNames,
    doc: &Document,
    (initial, max): (Duration, Duration),
    outcomes: &Outcomes,
) {
    let day = Day::from_micros(u64::try_from(doc.bucket_ms).unwrap_or(0) * 1000);
    let path = format!(
        "/{}/_doc/{}",
        names.write_target(Kind::Dependencies, day),
        doc.id
    );
    let mut wait = initial;
    loop {
        match client.put_json(&path, &doc.body).await {
            Ok(()) => {
                outcomes.stored.increment(1);
                return;
            }
            Err(SinkError::Status { status, body, .. }) if !retryable(status) => {
                outcomes.rejected.increment(1);
                tracing::error!(%path, status, body, "Elasticsearch refused a dependency document; its links are not stored");
                return;
            }
            Err(e) => {
                outcomes.retried.increment(1);
                tracing::warn!(%path, error = %e, retry_in = ?wait, "cannot store a dependency document; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max);
            }
        }
    }
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}
