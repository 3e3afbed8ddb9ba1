//! Repartition mode with an input topic (`kafka.repartition.input_topic`),
//! for input not keyed by trace ID (e.g. the OpenTelemetry kafka exporter
//! without `partition_traces_by_id`): spans of one trace are then spread
//! over partitions and no single consumer sees the whole trace.
//!
//! This stage consumes the unkeyed input topic, re-produces each trace's
//! spans as one protobuf message keyed by trace ID to `kafka.topic` (see
//! `rekey`), and commits an input message only once every piece of it is
//! acknowledged by the broker. The sampler then reads `kafka.topic` as
//! usual. A crash may re-produce pieces; their spans get the same document
//! IDs downstream, so Elasticsearch still holds one copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deadletter::{DeadLetter, DeadLetterSink};
use crate::decode::Decoder;
use crate::model::{AttributeKeys, ScanBatch};
use crate::offsets::{AckHandle, PartitionOffsets, Resolved};
use crate::plan::Plan;
use crate::rekey::{Forwarder, split_by_trace};
use crate::source::{
    Assigned, Incoming, PartitionHandle, Registry, SourceContext, consumer_config,
};

#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// An assigned input partition: its watermark and acknowledgements.
struct InputPartition {
    handle: Arc<PartitionHandle>,
    offsets: PartitionOffsets,
    acks: AckSender,
}

impl InputPartition {
    fn resolve(&mut self, r: &Resolved) {
        self.offsets.resolve_all(r);
        self.handle.publish(self.offsets.committable());
    }
}

/// The running stage.
pub struct Repartitioner {
    consumer: Arc<StreamConsumer<SourceContext>>,
    assigned: mpsc::UnboundedReceiver<Assigned>,
    forwarder: Forwarder,
    decoder: Decoder,
    registry: Arc<Registry>,
    dead_letters: Arc<dyn DeadLetterSink>,
    stop: CancellationToken,
}

impl Repartitioner {
    /// Consumes `input_topic` as group `<group_id>-repartition`.
    pub fn new(
        cfg: &Config,
        plan: &Plan,
        input_topic: &str,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: CancellationToken,
    ) -> Result<Self, RepartitionError> {
        let mut kafka = cfg.kafka.clone();
        kafka.group_id = format!("{}-repartition", cfg.kafka.group_id);
        kafka.topic = input_topic.to_string();
        // The metadata request blocks, once, at start-up.
        let kafka = crate::source::plan_prefetch(&kafka, plan.prefetch);
        let registry = Arc::new(Registry::new(input_topic));
        let (context, assigned) = SourceContext::new(input_topic, registry.clone());
        let consumer: StreamConsumer<SourceContext> =
            consumer_config(&kafka).create_with_context(context)?;
        consumer.subscribe(&[input_topic])?;
        let forwarder = Forwarder::new(
            &crate::source::client_config(&cfg.kafka),
            &cfg.kafka.topic,
            plan.memory.dead_letters as usize,
        )?;
        Ok(Self {
            consumer: Arc::new(consumer),
            assigned,
            forwarder,
            decoder: Decoder::new(
                cfg.kafka.encoding,
                AttributeKeys::default(),
                cfg.kafka.max_message_bytes.as_u64() as usize,
            ),
            registry,
            dead_letters,
            stop,
        })
    }

    /// Runs until `stop` fires, then commits what was acknowledged.
    pub async fn run(mut self) {
        let (acks_tx, mut acks_rx) = mpsc::unbounded_channel::<(i32, Resolved)>();
        let mut partitions: HashMap<i32, InputPartition> = HashMap::new();
        let mut batch = ScanBatch::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(Assigned(ps)) = self.assigned.recv() => {
                    for p in ps {
                        let handle = PartitionHandle::new(p);
                        self.registry.insert(handle.clone());
                        let acks = AckSender::new(p, acks_tx.clone());
                        partitions.insert(p, InputPartition { handle, offsets: PartitionOffsets::default(), acks });
                    }
                }
                Some((p, r)) = acks_rx.recv() => {
                    if let Some(ip) = partitions.get_mut(&p) {
                        ip.resolve(&r);
                    }
                }
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let p = rdkafka::Message::partition(&m);
                        let incoming = Incoming::from_message(&m);
                        drop(m);
                        if let Some(ip) = partitions.get_mut(&p) {
                            self.forward(incoming, &mut ip.offsets, &mut batch, &ip.acks).await;
                            ip.handle.publish(ip.offsets.committable());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "repartition consumer error"),
                },
                _ = tick.tick() => {
                    partitions.retain(|_, ip| !ip.handle.revoked.is_cancelled());
                    let (c, r) = (self.consumer.clone(), self.registry.clone());
                    let _ = tokio::task::spawn_blocking(move || r.commit(&*c)).await;
                }
            }
        }
        // Give in-flight pieces a moment, then commit what they resolved.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some((p, r))) = tokio::time::timeout_at(deadline, acks_rx.recv()).await {
            if let Some(ip) = partitions.get_mut(&p) {
                ip.resolve(&r);
            }
            if partitions
                .values()
                .all(|ip| ip.offsets.unresolved_messages() == 0)
            {
                break;
            }
        }
        let (c, r) = (self.consumer.clone(), self.registry.clone());
        let _ = tokio::task::spawn_blocking(move || {
            r.commit(&*c);
            c.unsubscribe();
        })
        .await;
    }

    async fn forward(
        &self,
        m: Incoming,
        offsets: &mut PartitionOffsets,
        batch: &mut ScanBatch,
        ack: &AckSender,
    ) {
        let pieces = match self
            .decoder
            .scan(m.payload.clone(), m.content_type.as_deref(), batch)
        {
            Ok(n) => split_by_trace(&n.bytes, n.format, batch),
            Err(e) => {
                offsets.track(m.offset, 1);
                self.dead_letter(m, ack, e.reason(), e.to_string()).await;
                return;
            }
        };
        let offset = m.offset;
        let rejected = batch.rejection_summary();
        offsets.track(offset, pieces.len() as u32 + u32::from(rejected.is_some()));
        if let Some((reason, error)) = rejected {
            // Spans cut out for a bad ID: the original, naming them.
            self.dead_letter(m, ack, reason, error).await;
        }
        self.forwarder
            .forward(pieces, || ack.handle(offset, 1))
            .await;
    }
}

impl Repartitioner {
    async fn dead_letter(&self, m: Incoming, ack: &AckSender, reason: &'static str, error: String) {
        metrics::counter!("tailsift_decode_errors_total", "reason" => reason).increment(1);
        let letter = DeadLetter {
            reason,
            error,
            partition: ack.partition,
            offset: m.offset,
            payload: m.payload,
            key: m.key,
        };
        self.dead_letters
            .send(letter, ack.handle(m.offset, 1))
            .await;
    }
}

/// Builds acknowledgement handles for one input partition; one forwarding
/// task per partition tags its resolutions with the partition number.
#[derive(Clone)]
struct AckSender {
    tx: mpsc::UnboundedSender<Resolved>,
    partition: i32,
}

impl AckSender {
    fn new(partition: i32, out: mpsc::UnboundedSender<(i32, Resolved)>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if out.send((partition, r)).is_err() {
                    return;
                }
            }
        });
        Self { tx, partition }
    }

    fn handle(&self, offset: i64, n: u32) -> AckHandle {
        let mut r = Resolved::default();
        r.add(offset, n);
        AckHandle::new(self.tx.clone(), r)
    }
}
