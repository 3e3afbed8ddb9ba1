//! Producing decision records: each carries the acknowledgement handle
//! that resolves its trace's first message once the broker stored it.

use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc;

use super::record::{self, DecisionRecord};
use crate::model::TraceId;
use crate::offsets::AckHandle;

/// How long to wait for room when librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A decision on its way to the log.
#[derive(Debug)]
pub struct Pending {
    pub trace_id: TraceId,
    pub record: DecisionRecord,
    /// Acknowledged once the record is stored.
    pub ack: AckHandle,
    partition: i32,
}

impl Pending {
    pub fn new(trace_id: TraceId, record: DecisionRecord, ack: AckHandle) -> Self {
        Self {
            trace_id,
            record,
            ack,
            partition: 0,
        }
    }
}

/// Delivery reports: acknowledge what was stored, hand back for another
/// try what failed.
struct Deliveries {
    retry: mpsc::UnboundedSender<Box<Pending>>,
    written: metrics::Counter,
    errors: metrics::Counter,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        match result {
            Ok(_) => {
                self.written.increment(1);
                pending.ack.ack();
            }
            Err((e, _)) => {
                self.errors.increment(1);
                tracing::warn!(error = %e, "decision log write failed; retrying");
                let _ = self.retry.send(pending);
            }
        }
    }
}

pub struct Writer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl Writer {
    pub fn new(client: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let context = Deliveries {
            retry: retry_tx,
            written: metrics::counter!("tailsift_decision_log_records_total", "result" => "ok"),
            errors: metrics::counter!("tailsift_decision_log_records_total", "result" => "error"),
        };
        let producer: ThreadedProducer<Deliveries> = client
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // Failures surface in the metric within this time, and are
            // retried here rather than lost.
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.kbytes", "16384")
            .create_with_context(context)?;
        let writer = Self {
            producer,
            topic: topic.to_string(),
        };
        tokio::spawn(retry_loop(
            writer.producer.clone(),
            writer.topic.clone(),
            retry_rx,
        ));
        Ok(writer)
    }

    /// Queues the record for `partition` of the log; waits while
    /// librdkafka's queue is full (backpressure on the deciding partition).
    pub async fn record(&self, partition: i32, mut pending: Pending) {
        pending.partition = partition;
        let mut pending = Box::new(pending);
        loop {
            match send(&self.producer, &self.topic, pending) {
                Ok(()) => return,
                Err((e, back)) => {
                    pending = back;
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        tracing::warn!(error = %e, "decision log produce failed; retrying");
                    }
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
            }
        }
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "decision log flush incomplete");
        }
    }
}

fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    pending: Box<Pending>,
) -> Result<(), (KafkaError, Box<Pending>)> {
    let key = record::key(&pending.trace_id);
    let value = pending.record.encode_to_vec();
    let partition = pending.partition;
    let rec = BaseRecord::with_opaque_to(topic, pending)
        .partition(partition)
        .key(&key[..])
        .payload(&value[..]);
    producer.send(rec).map_err(|(e, r)| (e, r.delivery_opaque))
}

/// Records whose delivery failed, sent again with a growing backoff.
/// Records of a partition revoked meanwhile are let go: its new owner
/// replays the traces and decides them again.
async fn retry_loop(
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    mut failed: mpsc::UnboundedReceiver<Box<Pending>>,
) {
    let mut backoff = Duration::from_millis(100);
    while let Some(mut pending) = failed.recv().await {
        if pending.ack.is_orphaned() {
            continue;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        loop {
            match send(&producer, &topic, pending) {
                Ok(()) => break,
                Err((_, back)) => {
                    pending = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
            }
        }
        if failed.is_empty() {
            backoff = Duration::from_millis(100);
        }
    }
}
