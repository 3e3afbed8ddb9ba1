//! Re-keying by trace ID, for input not keyed by it (e.g. the OpenTelemetry
//! kafka exporter without `partition_traces_by_id`): a message is split into
//! one message per trace and each is produced keyed by its trace ID, so all
//! spans of a trace meet on one partition. Both repartition modes use it:
//! the explicit one for every message of its input topic (`repartition`),
//! `auto` for the messages the keying check flags (`source::partition`).
//!
//! Splitting works on the wire: the scanner's byte ranges of each span, its
//! scope and its resource are copied into new `ExportTraceServiceRequest`s
//! without decoding them.

use std::collections::HashMap;
use std::time::Duration;

use prost::encoding::{WireType, encode_key, encode_varint};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::budget::ByteBudget;
use crate::model::{ScanBatch, TraceId, WireFormat};
use crate::offsets::AckHandle;

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

/// Produces pieces keyed by trace ID to one topic, each retried until the
/// broker acknowledges it; then the piece's acknowledgement resolves its
/// share of the source message. Pieces in flight are bounded in bytes.
pub struct Forwarder {
    producer: FutureProducer,
    topic: String,
    /// Bytes of pieces produced and not yet acknowledged by the broker;
    /// when full, `forward` (and so the consuming task) waits.
    in_flight: ByteBudget,
}

impl Forwarder {
    /// `client`: the Kafka client settings (brokers, security).
    pub fn new(client: &ClientConfig, topic: &str, in_flight: usize) -> Result<Self, KafkaError> {
        let producer = client
            .clone()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            in_flight: ByteBudget::new(in_flight),
        })
    }

    /// The pieces of one source message, `ack(piece)` giving each its
    /// acknowledgement. Returns once all are on their way.
    pub async fn forward(&self, pieces: Vec<Piece>, mut ack: impl FnMut() -> AckHandle) {
        metrics::counter!("tailsift_rekeyed_messages_total").increment(1);
        for piece in pieces {
            let (producer, topic, handle) = (self.producer.clone(), self.topic.clone(), ack());
            let permit = self.in_flight.reserve(piece.payload.len()).await;
            tokio::spawn(async move {
                produce_until_acked(&producer, &topic, &piece).await;
                drop(permit);
                handle.ack();
            });
        }
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
    use crate::decode::Decoder;
    use crate::loadgen::encode;
    use crate::loadgen::generator::{Profile, TraceGenerator};
    use crate::model::AttributeKeys;

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
