//! Turns a kept trace into bulk NDJSON: per span an `index` action with a
//! deterministic `_id` plus the Jaeger document, and a service document the
//! first time a (day, service, operation) shows up. One buffer per trace;
//! each document is a zero-copy slice of it.
//!
//! The span `_id` is `traceID_spanID_<FNV-1a 64 of the span's wire bytes>`
//! (resource, scope and span as they came from Kafka). It must not depend
//! on how the span was sampled: after a crash or a rebalance the replay can
//! see only part of a trace that was written before, and decide that part
//! under another policy (say `baseline` instead of `errors`, whose error
//! span came before the committed offset). Hashing the document, whose
//! `sampling.policy` tag then differs, gave such a span a second document;
//! hashing the source bytes makes the replay overwrite the first one, while
//! distinct spans that share IDs (Zipkin-style shared spans) stay apart.
//!
//! Public so the end-to-end benchmark's bare bulk loader indexes exactly the
//! documents the sink writes.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hasher as _;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use fnv::FnvHasher;

use super::KeptTrace;
use super::document::{
    DocOptions, HexId, Sampling, SpanMeta, jaeger_document, otlp_document, service_doc_id,
    service_document,
};
use super::index::{Day, IndexNames, Kind};
use super::redact::Redactor;
use super::retime;
use crate::deadletter::DeadLetter;
use crate::decode::{DecodedSpan, decode_span};
use crate::model::SpanRef;

/// Service-document dedupe keeps this many most recent days…
const SERVICE_DAYS: usize = 3;
/// …and forgets a day's entries past this many (rewriting is idempotent).
const SERVICES_PER_DAY: usize = 100_000;

/// One bulk item: where its line lies in the trace's buffer.
#[derive(Debug)]
pub struct DocSpan {
    /// Action line, document and the trailing newline.
    pub line: Range<usize>,
    /// The document alone.
    pub body: Range<usize>,
    pub partition: i32,
    pub offset: i64,
}

/// A trace ready for the bulk writer.
#[derive(Debug, Default)]
pub struct EncodedTrace {
    pub ndjson: Bytes,
    pub docs: Vec<DocSpan>,
    /// Spans that could not be turned into documents.
    pub rejects: Vec<DeadLetter>,
    pub key: Bytes,
    /// When the trace's last span ended (µs since the epoch; 0: no span
    /// became a document), for the freshness histogram.
    pub ended_micros: u64,
}

pub struct Encoder {
    names: IndexNames,
    opts: DocOptions,
    redactor: Redactor,
    services: Mutex<ServiceCache>,
}

impl Encoder {
    pub fn new(names: IndexNames, opts: DocOptions, redactor: Redactor) -> Self {
        Self {
            names,
            opts,
            redactor,
            services: Mutex::new(ServiceCache::default()),
        }
    }

    pub fn encode(&self, trace: &KeptTrace) -> EncodedTrace {
        let sampling = Sampling {
            policy: &trace.decision.policy,
            rate: trace.decision.sample_rate,
            would_drop: trace.would_drop,
        };
        let mut out = Vec::with_capacity(trace.wire_bytes() * 3 + 512);
        let mut body = Vec::with_capacity(2048);
        let mut docs = Vec::with_capacity(trace.spans.len() + 1);
        let mut rejects = Vec::new();
        let mut targets = Targets::default();
        let key = Bytes::from(trace.trace_id.to_hex());
        let mut ended_micros = 0;
        for span in &trace.spans {
            let mut decoded = match decode_span(span) {
                Ok(d) => d,
                Err(e) => {
                    rejects.push(reject(span, &key, "undecodable_span", e.to_string()));
                    continue;
                }
            };
            self.redactor.apply(&mut decoded);
            retime::apply(&mut decoded, &span.payload.times);
            body.clear();
            let meta = match &decoded {
                DecodedSpan::Otlp(s) => otlp_document(s, &self.opts, &sampling, &mut body),
                DecodedSpan::Jaeger(s) => jaeger_document(s, &self.opts, &sampling, &mut body),
            };
            match meta {
                Ok(meta) => {
                    ended_micros = ended_micros.max(meta.start_micros + meta.duration_micros);
                    self.push_span(&mut out, &mut docs, &mut targets, &meta, &body, span);
                }
                Err(e) => rejects.push(reject(span, &key, "invalid_span", e.to_string())),
            }
        }
        // Sized for the worst case (three times the wire bytes); the sink
        // queue counts the length, and the buffer lives until Elasticsearch
        // took the trace: give the rest back.
        out.shrink_to_fit();
        EncodedTrace {
            ndjson: Bytes::from(out),
            docs,
            rejects,
            key,
            ended_micros,
        }
    }

    fn push_span(
        &self,
        out: &mut Vec<u8>,
        docs: &mut Vec<DocSpan>,
        targets: &mut Targets,
        meta: &SpanMeta,
        body: &[u8],
        span: &SpanRef,
    ) {
        let day = Day::from_micros(meta.start_micros);
        let hash = source_hash(span);
        let start = out.len();
        action(out, targets.get(&self.names, Kind::Span, day), |o| {
            id_part(o, meta.trace_id);
            o.push(b'_');
            id_part(o, meta.span_id);
            o.push(b'_');
            id_part(o, HexId::from_u64(hash));
        });
        docs.push(line(out, start, body, span));

        let service_id = service_doc_id(meta.service, meta.operation);
        if self.first_service_sighting(day, service_id) {
            let start = out.len();
            action(out, targets.get(&self.names, Kind::Service, day), |o| {
                o.extend_from_slice(format!("{service_id:x}").as_bytes());
            });
            let mut doc = Vec::with_capacity(meta.service.len() + meta.operation.len() + 40);
            service_document(meta.service, meta.operation, &mut doc);
            docs.push(line(out, start, &doc, span));
            metrics::counter!("tailsift_es_service_documents_total").increment(1);
        }
    }

    fn first_service_sighting(&self, day: Day, id: u64) -> bool {
        // A poisoned lock only means another submit panicked mid-insert;
        // at worst a service document is written twice (same `_id`).
        let mut cache = self.services.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(day, id)
    }
}

/// FNV-1a 64 over the bytes the span came in: resource, scope (both empty
/// for Jaeger) and the span itself. The same Kafka message always gives the
/// same hash, whatever the decision and the document format.
fn source_hash(span: &SpanRef) -> u64 {
    let bytes = &span.payload.bytes;
    let range = |r: crate::model::ByteRange| {
        bytes
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    };
    let l = &span.layout;
    let mut h = FnvHasher::default();
    for part in [range(l.resource), range(l.scope), range(l.span)] {
        h.write(&(part.len() as u32).to_le_bytes());
        h.write(part);
    }
    h.finish()
}

/// Appends `body` and its newline after the action line started at `start`.
fn line(out: &mut Vec<u8>, start: usize, body: &[u8], span: &SpanRef) -> DocSpan {
    let body_start = out.len();
    out.extend_from_slice(body);
    let body_end = out.len();
    out.push(b'\n');
    DocSpan {
        line: start..out.len(),
        body: body_start..body_end,
        partition: span.payload.partition,
        offset: span.payload.offset,
    }
}

/// `{"index":{"_index":"<index>","_id":"<id>"}}\n`; names and IDs are
/// plain ASCII (hex, dates, a validated prefix), so no escaping.
fn action(out: &mut Vec<u8>, index: &str, id: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"index\":{\"_index\":\"");
    out.extend_from_slice(index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":\"");
    id(out);
    out.extend_from_slice(b"\"}}\n");
}

fn id_part(out: &mut Vec<u8>, id: HexId) {
    out.extend_from_slice(id.as_str().as_bytes());
}

/// Spans the scan accepted but full decoding refuses: should not happen,
/// so each one is logged.
fn reject(span: &SpanRef, key: &Bytes, reason: &'static str, error: String) -> DeadLetter {
    tracing::warn!(reason, %error, partition = span.payload.partition, offset = span.payload.offset, "span cannot be written; sent to dead letters");
    metrics::counter!("tailsift_sink_invalid_spans_total", "reason" => reason).increment(1);
    DeadLetter {
        payload: span
            .payload
            .bytes
            .slice(span.layout.span.start as usize..span.layout.span.end as usize),
        key: Some(key.clone()),
        reason,
        error,
        partition: span.payload.partition,
        offset: span.payload.offset,
    }
}

/// Index names of the days one trace touches (usually one).
#[derive(Default)]
struct Targets(Vec<(Kind, Day, String)>);

impl Targets {
    fn get(&mut self, names: &IndexNames, kind: Kind, day: Day) -> &str {
        let i = match self.0.iter().position(|(k, d, _)| *k == kind && *d == day) {
            Some(i) => i,
            None => {
                self.0.push((kind, day, names.write_target(kind, day)));
                self.0.len() - 1
            }
        };
        &self.0[i].2
    }
}

/// Which (day, service+operation) pairs already have a service document.
#[derive(Default)]
struct ServiceCache {
    days: BTreeMap<Day, HashSet<u64>>,
}

impl ServiceCache {
    /// True the first time `id` is seen on `day`.
    fn insert(&mut self, day: Day, id: u64) -> bool {
        let seen = self.days.entry(day).or_default();
        if seen.len() >= SERVICES_PER_DAY {
            seen.clear();
        }
        let new = seen.insert(id);
        while self.days.len() > SERVICE_DAYS {
            self.days.pop_first();
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::jaeger;
    use crate::model::{ByteRange, Decision, Payload, SpanLayout, TraceId, WireFormat};
    use crate::offsets::AckHandle;
    use prost::Message;
    use std::sync::Arc;

    fn jaeger_ref(span_id: u8, start_secs: i64, operation: &str) -> SpanRef {
        let span = jaeger::Span {
            trace_id: vec![7; 16],
            span_id: vec![0, 0, 0, 0, 0, 0, 0, span_id],
            operation_name: operation.into(),
            start_time: Some(pbjson_types::Timestamp {
                seconds: start_secs,
                nanos: 0,
            }),
            process: Some(jaeger::Process {
                service_name: "svc".into(),
                tags: vec![],
            }),
            ..Default::default()
        };
        let bytes = span.encode_to_vec();
        SpanRef {
            layout: SpanLayout {
                span: ByteRange::new(0, bytes.len()),
                ..Default::default()
            },
            payload: Arc::new(Payload {
                bytes: bytes.into(),
                format: WireFormat::Jaeger,
                partition: 3,
                offset: 42,
                times: crate::span_time::TimeBounds::UNBOUNDED,
            }),
        }
    }

    fn kept(spans: Vec<SpanRef>) -> KeptTrace {
        KeptTrace {
            trace_id: TraceId([7; 16]),
            decision: Decision::keep("p".into(), 1.0),
            would_drop: false,
            spans,
            ack: AckHandle::detached(),
        }
    }

    fn lines(e: &EncodedTrace) -> Vec<serde_json::Value> {
        e.ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn spans_and_first_service_sightings_become_bulk_lines() {
        let enc = Encoder::new(
            IndexNames::new("x-", false),
            DocOptions::default(),
            Redactor::default(),
        );
        // 2023-11-14T22:13:20Z and the next day.
        let day1 = 1_700_000_000;
        let trace = kept(vec![
            jaeger_ref(1, day1, "a"),
            jaeger_ref(2, day1, "a"),
            jaeger_ref(3, day1 + 86_400, "a"),
        ]);
        let e = enc.encode(&trace);
        assert!(e.rejects.is_empty());
        // 3 spans + service docs for (day1, a) and (day2, a).
        assert_eq!(e.docs.len(), 5);
        let l = lines(&e);
        assert_eq!(l[0]["index"]["_index"], "x-jaeger-span-2023-11-14");
        let id = l[0]["index"]["_id"].as_str().unwrap();
        assert!(
            id.starts_with(&format!("{}_0000000000000001_", "07".repeat(16))),
            "{id}"
        );
        assert_eq!(l[2]["index"]["_index"], "x-jaeger-service-2023-11-14");
        assert_eq!(
            l[2]["index"]["_id"],
            format!("{:x}", service_doc_id("svc", "a"))
        );
        assert_eq!(
            l[3],
            serde_json::json!({"serviceName": "svc", "operationName": "a"})
        );
        assert_eq!(l[8]["index"]["_index"], "x-jaeger-service-2023-11-15");
        // Bodies and lines slice the buffer exactly.
        let d = &e.docs[0];
        assert_eq!(d.body.end + 1, d.line.end);
        assert_eq!(e.ndjson[d.body.start], b'{');
        assert_eq!((d.partition, d.offset), (3, 42));

        // Same input again, even sampled differently: the same IDs, no new
        // service docs.
        let mut trace = trace;
        trace.decision = Decision::keep("other".into(), 4.0);
        let again = enc.encode(&trace);
        assert_eq!(again.docs.len(), 3);
        assert_eq!(lines(&again)[0], l[0]);
        assert_ne!(
            lines(&again)[1],
            l[1],
            "the document itself has the new tags"
        );
    }

    #[test]
    fn span_ids_do_not_depend_on_the_decision() {
        let enc = Encoder::new(
            IndexNames::new("", false),
            DocOptions::default(),
            Redactor::default(),
        );
        let by_errors = kept(vec![jaeger_ref(1, 1, "a"), jaeger_ref(2, 1, "a")]);
        let mut by_baseline = kept(vec![jaeger_ref(2, 1, "a")]);
        by_baseline.decision = Decision::keep("baseline".into(), 10.0);
        by_baseline.would_drop = true;
        let first = lines(&enc.encode(&by_errors));
        let replay = lines(&enc.encode(&by_baseline));
        // Lines: span 1 action + doc, its service action + doc, span 2
        // action + doc; the replay has no service document any more.
        assert_eq!(first.len(), 6);
        // Span 2: same `_id` although its document (sampling tags) differs.
        assert_eq!(replay[0]["index"]["_id"], first[4]["index"]["_id"]);
        assert_ne!(replay[1], first[5]);
        // Different spans, different IDs.
        assert_ne!(first[0]["index"]["_id"], first[4]["index"]["_id"]);
        let other = lines(&enc.encode(&kept(vec![jaeger_ref(2, 1, "b")])));
        assert_ne!(other[0]["index"]["_id"], first[4]["index"]["_id"]);
    }

    #[test]
    fn undecodable_spans_become_dead_letters() {
        let enc = Encoder::new(
            IndexNames::new("", false),
            DocOptions::default(),
            Redactor::default(),
        );
        let mut bad = jaeger_ref(1, 1, "a");
        bad.payload = Arc::new(Payload {
            bytes: Bytes::from_static(&[0xff, 0xff, 0xff]),
            format: WireFormat::Jaeger,
            partition: 1,
            offset: 9,
            times: crate::span_time::TimeBounds::UNBOUNDED,
        });
        bad.layout.span = ByteRange::new(0, 3);
        let e = enc.encode(&kept(vec![bad, jaeger_ref(2, 1, "a")]));
        assert_eq!(e.rejects.len(), 1);
        assert_eq!(e.rejects[0].reason, "undecodable_span");
        assert_eq!(e.rejects[0].offset, 9);
        assert_eq!(e.docs.len(), 2);
    }

    #[test]
    fn impossible_start_times_land_in_todays_index_with_the_originals_tagged() {
        use crate::span_time::{TimeBounds, TimeLimits};
        let enc = Encoder::new(
            IndexNames::new("", false),
            DocOptions::default(),
            Redactor::default(),
        );
        let now = std::time::SystemTime::now();
        let now_secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let bounds = TimeBounds::new(TimeLimits::default(), Some(now_secs * 1000), now);
        let spans: Vec<SpanRef> = [0, now_secs + 10 * 86_400, i64::MAX]
            .into_iter()
            .enumerate()
            .map(|(i, start)| {
                let mut r = jaeger_ref(i as u8 + 1, start, "a");
                Arc::get_mut(&mut r.payload).unwrap().times = bounds;
                r
            })
            .collect();
        let today = Day::from_micros(now_secs as u64 * 1_000_000).date();
        let e = enc.encode(&kept(spans));
        assert!(e.rejects.is_empty());
        let l = lines(&e);
        let docs: Vec<&serde_json::Value> =
            l.iter().filter(|v| v.get("spanID").is_some()).collect();
        assert_eq!(docs.len(), 3);
        for (i, action) in l.iter().filter(|v| v.get("index").is_some()).enumerate() {
            let index = action["index"]["_index"].as_str().unwrap();
            assert!(index.ends_with(&today), "line {i}: {index}");
        }
        for d in docs {
            assert_eq!(d["startTime"], now_secs as u64 * 1_000_000, "{d}");
            let tags = d["tags"].as_array().unwrap();
            let reason = tags
                .iter()
                .find(|t| t["key"] == super::retime::REASON_TAG)
                .unwrap_or_else(|| panic!("{d}"));
            assert!(
                reason["value"] == "start_too_old" || reason["value"] == "start_in_future",
                "{reason}"
            );
            assert!(
                tags.iter()
                    .any(|t| t["key"] == super::retime::ORIGINAL_START_TAG)
            );
        }
    }

    #[test]
    fn service_cache_is_bounded_by_days() {
        let mut c = ServiceCache::default();
        assert!(c.insert(Day(1), 5));
        assert!(!c.insert(Day(1), 5));
        for d in 2..=4 {
            assert!(c.insert(Day(d), 5));
        }
        assert_eq!(c.days.len(), SERVICE_DAYS);
        assert!(c.insert(Day(1), 5), "oldest day was forgotten");
    }
}
