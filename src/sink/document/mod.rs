//! Jaeger span and service documents exactly as Jaeger's Elasticsearch
//! storage writes them (its `dbmodel`), serialized straight into a caller's
//! reused buffer: no intermediate structs, no per-field allocations.
//!
//! This file holds what every span document shares: the writer's types, the
//! document's skeleton (IDs, times, references, tags) and the service
//! documents. The mappings live beside it:
//! - `otlp`: an OTLP span, mapped the way the OpenTelemetry → Jaeger
//!   translator does (`pkg/translator/jaeger` in opentelemetry-collector-contrib),
//!   so Jaeger Query shows it as if Jaeger's own collector had stored it
//! - `jaeger`: a Jaeger span, field for field
//! - `json`: the JSON primitives (strings, numbers, hex) both write with

mod jaeger;
mod json;
mod otlp;
#[cfg(test)]
mod tests;

use std::hash::Hasher as _;
use std::ops::Range;

use fnv::FnvHasher;
use opentelemetry_proto::tonic::common::v1::AnyValue;

use crate::model::{SpanId, TraceId};

pub use jaeger::jaeger_document;
use json::{float, hex_into, quoted, string, uint};
use otlp::any_json;
pub use otlp::otlp_document;

/// The service name Jaeger's OTLP translator gives a resource without
/// `service.name`.
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("trace ID must be 8 or 16 bytes, got {0}")]
    TraceId(usize),
    #[error("span ID must be 8 non-zero bytes, got {0} bytes")]
    SpanId(usize),
}

/// Writer settings that hold for every document.
#[derive(Clone, Copy, Debug, Default)]
pub struct DocOptions {
    /// Write 64-bit trace IDs as 16 hex chars (what Jaeger v1 Query expects).
    pub short_trace_ids: bool,
}

/// How the span's trace was kept; stamped on every span as tags.
#[derive(Clone, Copy, Debug)]
pub struct Sampling<'a> {
    pub policy: &'a str,
    pub rate: f64,
    /// Dry run: the policies would have dropped the trace.
    pub would_drop: bool,
}

/// What the bulk writer needs to know about a written span document.
#[derive(Clone, Debug)]
pub struct SpanMeta<'a> {
    pub trace_id: HexId,
    pub span_id: HexId,
    pub start_micros: u64,
    pub duration_micros: u64,
    pub service: &'a str,
    pub operation: &'a str,
    /// Where the sampling tags lie in the output buffer: they can differ
    /// between a first write and a replay (policy reload, adaptive rates),
    /// so the document `_id` hashes the document without them.
    pub sampling_tags: Range<usize>,
}

/// A hex-encoded trace or span ID kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexId {
    buf: [u8; 32],
    len: u8,
}

impl HexId {
    /// 32 hex chars, or 16 for a 64-bit ID when `short` is set.
    pub fn trace(id: &TraceId, short: bool) -> Self {
        let raw = match short && id.is_64bit() {
            true => &id.0[8..],
            false => &id.0[..],
        };
        Self::encode(raw)
    }

    pub fn span(id: &SpanId) -> Self {
        Self::encode(&id.0)
    }

    /// 16 hex chars, zero-padded.
    pub fn from_u64(v: u64) -> Self {
        Self::encode(&v.to_be_bytes())
    }

    fn encode(raw: &[u8]) -> Self {
        let mut buf = [0u8; 32];
        let len = raw.len() * 2;
        // Cannot fail: `raw` is at most 16 bytes and the slice is exactly 2×.
        let _ = hex::encode_to_slice(raw, &mut buf[..len]);
        Self {
            buf,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for HexId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `_id` Jaeger gives a service document: FNV-1a of service then
/// operation, lowercase hex without zero padding (Go's `%x`).
pub fn service_doc_id(service: &str, operation: &str) -> u64 {
    let mut h = FnvHasher::default();
    h.write(service.as_bytes());
    h.write(operation.as_bytes());
    h.finish()
}

/// `{"serviceName":…,"operationName":…}`
pub fn service_document(service: &str, operation: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"serviceName\":");
    string(out, service);
    out.extend_from_slice(b",\"operationName\":");
    string(out, operation);
    out.push(b'}');
}

fn trace_id(raw: &[u8]) -> Result<TraceId, DocumentError> {
    TraceId::from_slice(raw).ok_or(DocumentError::TraceId(raw.len()))
}

fn span_id(raw: &[u8]) -> Result<SpanId, DocumentError> {
    match SpanId::from_slice(raw) {
        Some(id) if !id.is_zero() => Ok(id),
        _ => Err(DocumentError::SpanId(raw.len())),
    }
}

/// `{"traceID":…,"spanID":…[,"parentSpanID":…][,"flags":…],"operationName":…`
fn head(out: &mut Vec<u8>, meta: &SpanMeta, parent: Option<HexId>, flags: u32) {
    out.extend_from_slice(b"{\"traceID\":");
    string(out, meta.trace_id.as_str());
    out.extend_from_slice(b",\"spanID\":");
    string(out, meta.span_id.as_str());
    if let Some(p) = parent {
        out.extend_from_slice(b",\"parentSpanID\":");
        string(out, p.as_str());
    }
    if flags != 0 {
        out.extend_from_slice(b",\"flags\":");
        uint(out, u64::from(flags));
    }
    out.extend_from_slice(b",\"operationName\":");
    string(out, meta.operation);
}

fn times(out: &mut Vec<u8>, start_micros: u64, duration_micros: u64) {
    out.extend_from_slice(b",\"startTime\":");
    uint(out, start_micros);
    out.extend_from_slice(b",\"startTimeMillis\":");
    uint(out, start_micros / 1000);
    out.extend_from_slice(b",\"duration\":");
    uint(out, duration_micros);
}

fn log_head(out: &mut Vec<u8>, timestamp_micros: u64) {
    out.extend_from_slice(b"{\"timestamp\":");
    uint(out, timestamp_micros);
    out.extend_from_slice(b",\"fields\":[");
}

fn reference(out: &mut Vec<u8>, first: &mut bool, follows_from: bool, trace: HexId, span: HexId) {
    if *first {
        out.extend_from_slice(b",\"references\":[");
    } else {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(match follows_from {
        true => b"{\"refType\":\"FOLLOWS_FROM\",\"traceID\":",
        false => b"{\"refType\":\"CHILD_OF\",\"traceID\":",
    });
    string(out, trace.as_str());
    out.extend_from_slice(b",\"spanID\":");
    string(out, span.as_str());
    out.push(b'}');
}

fn sampling_tags(out: &mut Vec<u8>, first: &mut bool, s: &Sampling) {
    tag(out, first, "sampling.policy", Val::Str(s.policy));
    tag(out, first, "sampling.rate", Val::Float(s.rate));
    if s.would_drop {
        tag(out, first, "sampling.dry_run_dropped", Val::Bool(true));
    }
}

/// A tag value; always written as a JSON string, the form every Jaeger
/// Query version reads.
enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Float(f64),
    Binary(&'a [u8]),
    /// An OTLP array or key-value list: a JSON text, typed string.
    Json(&'a AnyValue),
}

fn tag(out: &mut Vec<u8>, first: &mut bool, key: &str, v: Val) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(b"{\"key\":");
    string(out, key);
    let ty: &[u8] = match v {
        Val::Str(_) | Val::Json(_) => b",\"type\":\"string\",\"value\":",
        Val::Bool(_) => b",\"type\":\"bool\",\"value\":",
        Val::Int(_) => b",\"type\":\"int64\",\"value\":",
        Val::Float(_) => b",\"type\":\"float64\",\"value\":",
        Val::Binary(_) => b",\"type\":\"binary\",\"value\":",
    };
    out.extend_from_slice(ty);
    match v {
        Val::Str(s) => string(out, s),
        Val::Bool(b) => out.extend_from_slice(if b { b"\"true\"" } else { b"\"false\"" }),
        Val::Int(i) => quoted(out, |o| {
            o.extend_from_slice(itoa::Buffer::new().format(i).as_bytes())
        }),
        Val::Float(f) => quoted(out, |o| float(o, f)),
        Val::Binary(b) => quoted(out, |o| hex_into(o, b)),
        Val::Json(any) => {
            // Rare (arrays and maps), so a scratch buffer is fine here.
            let mut text = Vec::new();
            any_json(&mut text, any);
            string(out, std::str::from_utf8(&text).unwrap_or_default());
        }
    }
    out.push(b'}');
}
