//! Repartition mode, for input not keyed by trace ID (e.g. the OpenTelemetry
//! kafka exporter without `partition_traces_by_id`): spans of one trace are
//! then spread over partitions and no single consumer sees the whole trace.
//!
//! This stage consumes the unkeyed input topic, re-produces each trace's
//! spans as one protobuf message keyed by trace ID to `kafka.topic`, and
//! commits an input message only once every piece of it is acknowledged by
//! the broker. The sampler then reads `kafka.topic` as usual. A crash may
//! re-produce pieces; their spans get the same document IDs downstream, so
//! Elasticsearch still holds one copy.
//!
//! Splitting works on the wire: the scanner's byte ranges of each span, its
//! scope and its resource are copied into new `ExportTraceServiceRequest`s
//! without decoding them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::encoding::{WireType, encode_key, encode_varint};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::budget::ByteBudget;
use crate::config::{Config, MemoryPlan};
use crate::deadletter::{DeadLetter, DeadLetterSink};
use crate::decode::Decoder;
use crate::model::{AttributeKeys, ScanBatch, TraceId, WireFormat};
use crate::offsets::{AckHandle, PartitionOffsets, Resolved};
use crate::source::{
    Assigned, Incoming, PartitionHandle, Registry, SourceContext, consumer_config,
};

/// One trace's spans, ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub trace_id: TraceId,
    pub payload: Vec<u8>,
}

/// Splits a scanned message into one message per trace. Jaeger messages
/// hold one span already and pass through unchanged.
pub fn split_by_trace(bytes: &[u8], format: WireFormat, batch: &ScanBatch) -> Vec<Piece> {
    match format {
        WireFormat::Jaeger => batch
            .spans
            .first()
            .map(|s| Piece {
                trace_id: s.trace_id,
                payload: bytes.to_vec(),
            })
            .into_iter()
            .collect(),
        WireFormat::Otlp => split_otlp(bytes, batch),
    }
}

fn split_otlp(bytes: &[u8], batch: &ScanBatch) -> Vec<Piece> {
    let mut order: Vec<TraceId> = Vec::new();
    let mut by_trace: HashMap<TraceId, Vec<usize>> = HashMap::new();
    for (i, s) in batch.spans.iter().enumerate() {
        by_trace
            .entry(s.trace_id)
            .or_insert_with(|| {
                order.push(s.trace_id);
                Vec::new()
            })
            .push(i);
    }
    order
        .into_iter()
        .map(|trace_id| Piece {
            trace_id,
            payload: encode_request(bytes, batch, &by_trace[&trace_id]),
        })
        .collect()
}

/// Builds `ExportTraceServiceRequest{ResourceSpans{resource, ScopeSpans{
/// scope, spans…}…}…}` from byte ranges, grouping consecutive spans that
/// share a resource and a scope.
fn encode_request(bytes: &[u8], batch: &ScanBatch, spans: &[usize]) -> Vec<u8> {
    let mut request = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let resource = batch.spans[spans[i]].layout.resource;
        let mut resource_spans = Vec::new();
        put_message(&mut resource_spans, 1, resource.of(bytes));
        while i < spans.len() && batch.spans[spans[i]].layout.resource == resource {
            let scope = batch.spans[spans[i]].layout.scope;
            let mut scope_spans = Vec::new();
            put_message(&mut scope_spans, 1, scope.of(bytes));
            while i < spans.len()
                && batch.spans[spans[i]].layout.resource == resource
                && batch.spans[spans[i]].layout.scope == scope
            {
                put_field(
                    &mut scope_spans,
                    2,
                    batch.spans[spans[i]].layout.span.of(bytes),
                );
                i += 1;
            }
            put_field(&mut resource_spans, 2, &scope_spans);
        }
        put_field(&mut request, 1, &resource_spans);
    }
    request
}

/// A length-delimited field, always written (repeated spans may be empty).
fn put_field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// An optional sub-message: absent when the source had none.
fn put_message(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    if !body.is_empty() {
        put_field(out, number, body);
    }
}

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
    producer: FutureProducer,
    output: String,
    decoder: Decoder,
    registry: Arc<Registry>,
    dead_letters: Arc<dyn DeadLetterSink>,
    /// Bytes of pieces produced and not yet acknowledged by the broker;
    /// when full, forwarding (and so consuming) waits.
    in_flight: ByteBudget,
    stop: CancellationToken,
}

impl Repartitioner {
    /// Consumes `input_topic` as group `<group_id>-repartition`.
    pub fn new(
        cfg: &Config,
        input_topic: &str,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: CancellationToken,
    ) -> Result<Self, RepartitionError> {
        let mut kafka = cfg.kafka.clone();
        kafka.group_id = format!("{}-repartition", cfg.kafka.group_id);
        kafka.topic = input_topic.to_string();
        // Half the plan's prefetch (the source has the other half); the
        // metadata request blocks, once, at start-up.
        let mut plan = MemoryPlan::new(cfg);
        plan.prefetch /= 2;
        let kafka = crate::source::plan_prefetch(&kafka, &plan);
        let registry = Arc::new(Registry::new(input_topic));
        let (context, assigned) = SourceContext::new(input_topic, registry.clone());
        let consumer: StreamConsumer<SourceContext> =
            consumer_config(&kafka).create_with_context(context)?;
        consumer.subscribe(&[input_topic])?;
        let producer: FutureProducer = crate::source::client_config(&cfg.kafka)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Self {
            consumer: Arc::new(consumer),
            assigned,
            producer,
            output: cfg.kafka.topic.clone(),
            decoder: Decoder::new(
                cfg.kafka.encoding,
                AttributeKeys::default(),
                cfg.kafka.max_message_bytes.as_u64() as usize,
            ),
            registry,
            dead_letters,
            in_flight: ByteBudget::new(plan.dead_letters as usize),
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
        for piece in pieces {
            let producer = self.producer.clone();
            let topic = self.output.clone();
            let handle = ack.handle(offset, 1);
            let permit = self.in_flight.reserve(piece.payload.len()).await;
            tokio::spawn(async move {
                produce_until_acked(&producer, &topic, &piece).await;
                drop(permit);
                handle.ack();
            });
        }
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

async fn produce_until_acked(producer: &FutureProducer, topic: &str, piece: &Piece) {
    let key = piece.trace_id.to_hex();
    let mut backoff = Duration::from_millis(100);
    loop {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/x-protobuf"),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&piece.payload)
            .headers(headers);
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(error = %e, "repartition produce failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;

    use super::*;
    use crate::config::EncodingSetting;
    use crate::loadgen::encode;
    use crate::loadgen::generator::{Profile, TraceGenerator};

    fn scan(d: &Decoder, bytes: &[u8], batch: &mut ScanBatch) -> WireFormat {
        d.scan(Bytes::copy_from_slice(bytes), None, batch)
            .expect("valid message")
            .format
    }

    #[test]
    fn otlp_batch_splits_into_one_message_per_trace() {
        let mut g = TraceGenerator::new(Profile::default(), 3);
        let traces: Vec<_> = (0..5).map(|_| g.trace(1_700_000_000_000_000_000)).collect();
        let spans: Vec<_> = traces
            .iter()
            .flat_map(|t| t.spans.iter().map(move |s| (t.trace_id, s)))
            .collect();
        let message = encode::otlp(&spans, false);
        let d = Decoder::new(
            EncodingSetting::OtlpProto,
            AttributeKeys::default(),
            1 << 24,
        );
        let mut batch = ScanBatch::default();
        let format = scan(&d, &message, &mut batch);
        let pieces = split_by_trace(&message, format, &batch);
        assert_eq!(pieces.len(), traces.len());
        for piece in &pieces {
            let trace = traces
                .iter()
                .find(|t| t.trace_id == piece.trace_id)
                .expect("a piece per generated trace");
            let mut one = ScanBatch::default();
            scan(&d, &piece.payload, &mut one);
            assert!(one.spans.iter().all(|s| s.trace_id == trace.trace_id));
            let got: HashSet<_> = one.spans.iter().map(|s| s.span_id).collect();
            let want: HashSet<_> = trace.spans.iter().map(|s| s.span_id).collect();
            assert_eq!(got, want);
            for (i, s) in one.spans.iter().enumerate() {
                let original = trace
                    .spans
                    .iter()
                    .find(|g| g.span_id == s.span_id)
                    .expect("span");
                assert_eq!(one.view(i, &piece.payload).service_name(), original.service);
            }
        }
    }

    #[test]
    fn jaeger_span_passes_through() {
        let mut g = TraceGenerator::new(Profile::default(), 4);
        let t = g.trace(1_700_000_000_000_000_000);
        let message = encode::jaeger(t.trace_id, &t.spans[0], false);
        let d = Decoder::new(
            EncodingSetting::JaegerProto,
            AttributeKeys::default(),
            1 << 24,
        );
        let mut batch = ScanBatch::default();
        let format = scan(&d, &message, &mut batch);
        let pieces = split_by_trace(&message, format, &batch);
        assert_eq!(
            pieces,
            vec![Piece {
                trace_id: t.trace_id,
                payload: message
            }]
        );
    }
}
