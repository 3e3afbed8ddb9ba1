//! Jaeger span and service documents exactly as Jaeger's Elasticsearch
//! storage writes them (its `dbmodel`), serialized straight into a caller's
//! reused buffer: no intermediate structs, no per-field allocations.
//!
//! OTLP spans are mapped the way the OpenTelemetry → Jaeger translator does
//! (`pkg/translator/jaeger` in opentelemetry-collector-contrib), so Jaeger
//! Query shows them as if Jaeger's own collector had stored them.

use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::decode::{OtlpSpan, jaeger};
use crate::model::{SpanId, TraceId};

/// The service name Jaeger's OTLP translator gives a resource without
/// `service.name`.
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

const SERVICE_NAME_KEY: &str = "service.name";
/// Link attribute the translator reads to turn a link into CHILD_OF.
const REF_TYPE_KEY: &str = "opentracing.ref_type";

// jaeger.api_v2 wire values.
const JAEGER_BOOL: i32 = 1;
const JAEGER_INT64: i32 = 2;
const JAEGER_FLOAT64: i32 = 3;
const JAEGER_BINARY: i32 = 4;
const JAEGER_FOLLOWS_FROM: i32 = 1;

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

/// 64-bit FNV-1a, the hash Jaeger uses for service document IDs.
#[derive(Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The `_id` Jaeger gives a service document: FNV-1a of service then
/// operation, lowercase hex without zero padding (Go's `%x`).
pub fn service_doc_id(service: &str, operation: &str) -> u64 {
    Fnv1a::default()
        .write(service.as_bytes())
        .write(operation.as_bytes())
        .finish()
}

/// `{"serviceName":…,"operationName":…}`
pub fn service_document(service: &str, operation: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"serviceName\":");
    string(out, service);
    out.extend_from_slice(b",\"operationName\":");
    string(out, operation);
    out.push(b'}');
}

/// Appends the Jaeger document of an OTLP span to `out`.
pub fn otlp_document<'s>(
    s: &'s OtlpSpan,
    opts: &DocOptions,
    sampling: &Sampling,
    out: &mut Vec<u8>,
) -> Result<SpanMeta<'s>, DocumentError> {
    let span = &s.span;
    let trace = trace_id(&span.trace_id)?;
    let parent = SpanId::from_slice(&span.parent_span_id)
        .ok_or(DocumentError::SpanId(span.parent_span_id.len()))?;
    let mut meta = SpanMeta {
        trace_id: HexId::trace(&trace, opts.short_trace_ids),
        span_id: HexId::span(&span_id(&span.span_id)?),
        start_micros: span.start_time_unix_nano / 1000,
        duration_micros: 0,
        service: otlp_service_name(s.resource.as_ref()),
        operation: &span.name,
        sampling_tags: 0..0,
    };
    let duration = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
        / 1000;
    meta.duration_micros = duration;

    head(
        out,
        &meta,
        (!parent.is_zero()).then(|| HexId::span(&parent)),
        0,
    );
    otlp_references(out, &span.links, &trace, &parent, opts.short_trace_ids);
    times(out, meta.start_micros, duration);
    out.extend_from_slice(b",\"tags\":[");
    let mut first = true;
    otlp_span_tags(out, &mut first, s);
    let sampling_start = out.len();
    sampling_tags(out, &mut first, sampling);
    meta.sampling_tags = sampling_start..out.len();
    out.extend_from_slice(b"],\"logs\":[");
    for (i, e) in span.events.iter().enumerate() {
        comma(out, i);
        log_head(out, e.time_unix_nano / 1000);
        let mut first = true;
        let named = e.attributes.iter().any(|a| a.key == "event");
        if !e.name.is_empty() && !named {
            tag(out, &mut first, "event", Val::Str(&e.name));
        }
        otlp_attributes(out, &mut first, &e.attributes, None);
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"],\"process\":{\"serviceName\":");
    string(out, meta.service);
    out.extend_from_slice(b",\"tags\":[");
    let attrs = s
        .resource
        .as_ref()
        .map(|r| &r.attributes[..])
        .unwrap_or_default();
    otlp_attributes(out, &mut true, attrs, Some(SERVICE_NAME_KEY));
    out.extend_from_slice(b"]}}");
    Ok(meta)
}

/// Appends the Jaeger document of a Jaeger span to `out`.
pub fn jaeger_document<'s>(
    span: &'s jaeger::Span,
    opts: &DocOptions,
    sampling: &Sampling,
    out: &mut Vec<u8>,
) -> Result<SpanMeta<'s>, DocumentError> {
    let trace = trace_id(&span.trace_id)?;
    let service = span.process.as_ref().map_or("", |p| &p.service_name);
    let mut meta = SpanMeta {
        trace_id: HexId::trace(&trace, opts.short_trace_ids),
        span_id: HexId::span(&span_id(&span.span_id)?),
        start_micros: timestamp_micros(span.start_time.as_ref()),
        duration_micros: 0,
        service: if service.is_empty() {
            NO_SERVICE_NAME
        } else {
            service
        },
        operation: &span.operation_name,
        sampling_tags: 0..0,
    };
    let duration = span
        .duration
        .as_ref()
        .map_or(0, |d| micros(d.seconds, d.nanos));
    meta.duration_micros = duration;

    head(out, &meta, jaeger_parent(span, &trace), span.flags);
    jaeger_references(out, &span.references, opts.short_trace_ids);
    times(out, meta.start_micros, duration);
    out.extend_from_slice(b",\"tags\":[");
    let mut first = true;
    jaeger_tags(out, &mut first, &span.tags);
    let sampling_start = out.len();
    sampling_tags(out, &mut first, sampling);
    meta.sampling_tags = sampling_start..out.len();
    out.extend_from_slice(b"],\"logs\":[");
    for (i, log) in span.logs.iter().enumerate() {
        comma(out, i);
        log_head(out, timestamp_micros(log.timestamp.as_ref()));
        jaeger_tags(out, &mut true, &log.fields);
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"],\"process\":{\"serviceName\":");
    string(out, meta.service);
    out.extend_from_slice(b",\"tags\":[");
    let tags = span
        .process
        .as_ref()
        .map(|p| &p.tags[..])
        .unwrap_or_default();
    jaeger_tags(out, &mut true, tags);
    out.extend_from_slice(b"]}}");
    Ok(meta)
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

/// The parent as a CHILD_OF reference first, then links (FOLLOWS_FROM unless
/// tagged `opentracing.ref_type=child_of`); a link to the parent only sets
/// the parent reference's type. Omitted entirely when there are none.
fn otlp_references(
    out: &mut Vec<u8>,
    links: &[Link],
    trace: &TraceId,
    parent: &SpanId,
    short: bool,
) {
    let link_ids = |l: &Link| Some((TraceId::from_slice(&l.trace_id)?, span_id(&l.span_id).ok()?));
    let is_parent = |t: &TraceId, s: &SpanId| !parent.is_zero() && t == trace && s == parent;
    let mut first = true;
    if !parent.is_zero() {
        let parent_link = links
            .iter()
            .find(|l| link_ids(l).is_some_and(|(t, s)| is_parent(&t, &s)));
        let follows = parent_link.is_some_and(link_follows_from);
        reference(
            out,
            &mut first,
            follows,
            HexId::trace(trace, short),
            HexId::span(parent),
        );
    }
    for l in links {
        let Some((t, s)) = link_ids(l) else { continue };
        if !is_parent(&t, &s) {
            reference(
                out,
                &mut first,
                link_follows_from(l),
                HexId::trace(&t, short),
                HexId::span(&s),
            );
        }
    }
    if !first {
        out.push(b']');
    }
}

fn link_follows_from(l: &Link) -> bool {
    let ref_type = l.attributes.iter().find(|a| a.key == REF_TYPE_KEY);
    !matches!(
        ref_type.and_then(|a| a.value.as_ref()?.value.as_ref()),
        Some(Value::StringValue(v)) if v == "child_of"
    )
}

/// Jaeger's parent: the first CHILD_OF reference within the same trace.
fn jaeger_parent(span: &jaeger::Span, trace: &TraceId) -> Option<HexId> {
    span.references
        .iter()
        .filter(|r| r.ref_type != JAEGER_FOLLOWS_FROM)
        .find(|r| TraceId::from_slice(&r.trace_id).as_ref() == Some(trace))
        .and_then(|r| span_id(&r.span_id).ok())
        .map(|id| HexId::span(&id))
}

fn jaeger_references(out: &mut Vec<u8>, refs: &[jaeger::SpanRef], short: bool) {
    let mut first = true;
    for r in refs {
        let (Some(t), Ok(s)) = (TraceId::from_slice(&r.trace_id), span_id(&r.span_id)) else {
            continue;
        };
        let follows = r.ref_type == JAEGER_FOLLOWS_FROM;
        reference(
            out,
            &mut first,
            follows,
            HexId::trace(&t, short),
            HexId::span(&s),
        );
    }
    if !first {
        out.push(b']');
    }
}

/// In the translator's order: scope, attributes, kind, status, error,
/// status message, trace state.
fn otlp_span_tags(out: &mut Vec<u8>, first: &mut bool, s: &OtlpSpan) {
    let span = &s.span;
    if let Some(scope) = &s.scope {
        if !scope.name.is_empty() {
            tag(out, first, "otel.scope.name", Val::Str(&scope.name));
        }
        if !scope.version.is_empty() {
            tag(out, first, "otel.scope.version", Val::Str(&scope.version));
        }
    }
    otlp_attributes(out, first, &span.attributes, None);
    if let Some(kind) = span_kind(span.kind) {
        tag(out, first, "span.kind", Val::Str(kind));
    }
    let status = span.status.as_ref();
    match status.map(|s| StatusCode::try_from(s.code)) {
        Some(Ok(StatusCode::Ok)) => tag(out, first, "otel.status_code", Val::Str("OK")),
        Some(Ok(StatusCode::Error)) => {
            tag(out, first, "otel.status_code", Val::Str("ERROR"));
            tag(out, first, "error", Val::Bool(true));
        }
        _ => {}
    }
    if let Some(msg) = status.map(|s| &s.message).filter(|m| !m.is_empty()) {
        tag(out, first, "otel.status_description", Val::Str(msg));
    }
    if !span.trace_state.is_empty() {
        tag(out, first, "w3c.tracestate", Val::Str(&span.trace_state));
    }
}

fn span_kind(kind: i32) -> Option<&'static str> {
    Some(match SpanKind::try_from(kind).ok()? {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
        SpanKind::Unspecified => return None,
    })
}

fn sampling_tags(out: &mut Vec<u8>, first: &mut bool, s: &Sampling) {
    tag(out, first, "sampling.policy", Val::Str(s.policy));
    tag(out, first, "sampling.rate", Val::Float(s.rate));
    if s.would_drop {
        tag(out, first, "sampling.dry_run_dropped", Val::Bool(true));
    }
}

fn otlp_service_name(resource: Option<&Resource>) -> &str {
    let attrs = resource.map(|r| &r.attributes[..]).unwrap_or_default();
    match attrs
        .iter()
        .find(|a| a.key == SERVICE_NAME_KEY)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
    {
        Some(Value::StringValue(s)) if !s.is_empty() => s,
        _ => NO_SERVICE_NAME,
    }
}

fn otlp_attributes(out: &mut Vec<u8>, first: &mut bool, attrs: &[KeyValue], skip: Option<&str>) {
    for a in attrs {
        if Some(a.key.as_str()) != skip {
            tag(out, first, &a.key, otlp_value(a.value.as_ref()));
        }
    }
}

fn otlp_value(v: Option<&AnyValue>) -> Val<'_> {
    let Some(any) = v else { return Val::Str("") };
    match &any.value {
        Some(Value::StringValue(s)) => Val::Str(s),
        Some(Value::BoolValue(b)) => Val::Bool(*b),
        Some(Value::IntValue(i)) => Val::Int(*i),
        Some(Value::DoubleValue(d)) => Val::Float(*d),
        Some(Value::BytesValue(b)) => Val::Binary(b),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => Val::Json(any),
        // Empty values and dictionary references (profiles only) carry no text.
        Some(Value::StringValueStrindex(_)) | None => Val::Str(""),
    }
}

fn jaeger_tags(out: &mut Vec<u8>, first: &mut bool, tags: &[jaeger::KeyValue]) {
    for t in tags {
        let v = match t.v_type {
            JAEGER_BOOL => Val::Bool(t.v_bool),
            JAEGER_INT64 => Val::Int(t.v_int64),
            JAEGER_FLOAT64 => Val::Float(t.v_float64),
            JAEGER_BINARY => Val::Binary(&t.v_binary),
            _ => Val::Str(&t.v_str),
        };
        tag(out, first, &t.key, v);
    }
}

fn timestamp_micros(t: Option<&pbjson_types::Timestamp>) -> u64 {
    t.map_or(0, |t| micros(t.seconds, t.nanos))
}

/// Seconds and nanoseconds as non-negative microseconds.
fn micros(seconds: i64, nanos: i32) -> u64 {
    let m = i128::from(seconds) * 1_000_000 + i128::from(nanos) / 1000;
    u64::try_from(m.max(0)).unwrap_or(u64::MAX)
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

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

fn quoted(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    body(out);
    out.push(b'"');
}

fn uint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Shortest round-trip form, integral values without ".0" and non-finite
/// values as Go writes them, so Jaeger Query's `ParseFloat` reads them all
/// and exact tag searches match what Jaeger itself stores.
fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        let mut buf = ryu::Buffer::new();
        let s = buf.format_finite(f);
        out.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes());
    }
}

fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// An OTLP value as plain JSON (what the translator's `AsString` gives
/// for arrays and maps; bytes as base64 like Go's encoder).
fn any_json(out: &mut Vec<u8>, v: &AnyValue) {
    use base64::Engine;
    match &v.value {
        Some(Value::StringValue(s)) => string(out, s),
        Some(Value::BoolValue(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::IntValue(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        Some(Value::DoubleValue(d)) if d.is_finite() => float(out, *d),
        Some(Value::DoubleValue(d)) => quoted(out, |o| float(o, *d)),
        Some(Value::BytesValue(b)) => {
            string(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => {
            out.push(b'[');
            for (i, item) in a.values.iter().enumerate() {
                comma(out, i);
                any_json(out, item);
            }
            out.push(b']');
        }
        Some(Value::KvlistValue(kv)) => {
            out.push(b'{');
            for (i, item) in kv.values.iter().enumerate() {
                comma(out, i);
                string(out, &item.key);
                out.push(b':');
                match &item.value {
                    Some(inner) => any_json(out, inner),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b'}');
        }
        Some(Value::StringValueStrindex(_)) | None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string literal: quotes, and escapes for `"`, `\` and control
/// characters; everything else is valid UTF-8 and copied as is.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(n) = bytes[start..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let i = start + n;
        out.extend_from_slice(&bytes[start..i]);
        escape(out, bytes[i]);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            out.extend_from_slice(b"\\u00");
            hex_into(out, &[b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    use serde_json::{Value as J, json};

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn sampling() -> Sampling<'static> {
        Sampling {
            policy: "errors",
            rate: 1.0,
            would_drop: false,
        }
    }

    fn otlp() -> OtlpSpan {
        let mut trace_id = vec![0u8; 16];
        trace_id[15] = 0xab;
        trace_id[0] = 0x01;
        OtlpSpan {
            span: Span {
                trace_id: trace_id.clone(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
                parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
                trace_state: "k=v".into(),
                name: "GET /\"x\"".into(),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: 1_700_000_000_123_456_789,
                end_time_unix_nano: 1_700_000_000_124_456_789,
                attributes: vec![
                    kv("http.status_code", Value::IntValue(500)),
                    kv("ratio", Value::DoubleValue(72.5)),
                    kv("blob", Value::BytesValue(vec![0, 0, 0x30, 0x39])),
                    kv(
                        "list",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::StringValue("a".into())),
                            }],
                        }),
                    ),
                    kv(
                        "map",
                        Value::KvlistValue(KeyValueList {
                            values: vec![kv("n", Value::IntValue(1))],
                        }),
                    ),
                    KeyValue {
                        key: "empty".into(),
                        value: None,
                        ..Default::default()
                    },
                ],
                events: vec![Event {
                    time_unix_nano: 1_700_000_000_123_999_000,
                    name: "exception".into(),
                    attributes: vec![kv("exception.message", Value::StringValue("boom".into()))],
                    ..Default::default()
                }],
                links: vec![Link {
                    trace_id: trace_id.clone(),
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
                    ..Default::default()
                }],
                status: Some(Status {
                    message: "bad".into(),
                    code: StatusCode::Error as i32,
                }),
                ..Default::default()
            },
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                version: "1.2".into(),
                ..Default::default()
            }),
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("checkout".into())),
                    kv("host.name", Value::StringValue("h1".into())),
                ],
                ..Default::default()
            }),
        }
    }

    fn t(key: &str, ty: &str, value: &str) -> J {
        json!({"key": key, "type": ty, "value": value})
    }

    fn parse(buf: &[u8]) -> J {
        serde_json::from_slice(buf).expect("valid JSON")
    }

    #[test]
    fn otlp_span_matches_the_contract() {
        let mut buf = Vec::new();
        let span = otlp();
        let meta = otlp_document(&span, &DocOptions::default(), &sampling(), &mut buf).unwrap();
        assert_eq!(meta.trace_id.as_str(), "010000000000000000000000000000ab");
        assert_eq!(meta.span_id.as_str(), "0000000000000002");
        assert_eq!(meta.service, "checkout");
        assert_eq!(meta.start_micros, 1_700_000_000_123_456);
        let trace = "010000000000000000000000000000ab";
        let expected = json!({
            "traceID": trace,
            "spanID": "0000000000000002",
            "parentSpanID": "0000000000000001",
            "operationName": "GET /\"x\"",
            "references": [
                {"refType": "CHILD_OF", "traceID": trace, "spanID": "0000000000000001"},
                {"refType": "FOLLOWS_FROM", "traceID": trace, "spanID": "0000000000000009"},
            ],
            "startTime": 1_700_000_000_123_456u64,
            "startTimeMillis": 1_700_000_000_123u64,
            "duration": 1000,
            "tags": [
                t("otel.scope.name", "string", "lib"),
                t("otel.scope.version", "string", "1.2"),
                t("http.status_code", "int64", "500"),
                t("ratio", "float64", "72.5"),
                t("blob", "binary", "00003039"),
                t("list", "string", "[\"a\"]"),
                t("map", "string", "{\"n\":1}"),
                t("empty", "string", ""),
                t("span.kind", "string", "server"),
                t("otel.status_code", "string", "ERROR"),
                t("error", "bool", "true"),
                t("otel.status_description", "string", "bad"),
                t("w3c.tracestate", "string", "k=v"),
                t("sampling.policy", "string", "errors"),
                t("sampling.rate", "float64", "1"),
            ],
            "logs": [{
                "timestamp": 1_700_000_000_123_999u64,
                "fields": [t("event", "string", "exception"), t("exception.message", "string", "boom")],
            }],
            "process": {"serviceName": "checkout", "tags": [t("host.name", "string", "h1")]},
        });
        assert_eq!(parse(&buf), expected);
    }

    #[test]
    fn root_span_has_no_parent_and_missing_service_is_named() {
        let mut s = otlp();
        s.span.parent_span_id.clear();
        s.span.links.clear();
        s.span.status = None;
        s.span.kind = 0;
        s.resource = None;
        let mut buf = Vec::new();
        let sampling = Sampling {
            would_drop: true,
            ..sampling()
        };
        otlp_document(&s, &DocOptions::default(), &sampling, &mut buf).unwrap();
        let doc = parse(&buf);
        assert!(doc.get("parentSpanID").is_none());
        assert!(doc.get("references").is_none());
        assert!(doc.get("flags").is_none());
        assert_eq!(
            doc["process"],
            json!({"serviceName": NO_SERVICE_NAME, "tags": []})
        );
        let tags = doc["tags"].as_array().unwrap();
        assert!(
            !tags
                .iter()
                .any(|t| t["key"] == "span.kind" || t["key"] == "error")
        );
        assert_eq!(
            tags.last().unwrap(),
            &t("sampling.dry_run_dropped", "bool", "true")
        );
    }

    #[test]
    fn link_to_parent_sets_its_type() {
        let mut s = otlp();
        s.span.links[0].span_id = s.span.parent_span_id.clone();
        s.span.links[0].attributes =
            vec![kv(REF_TYPE_KEY, Value::StringValue("follows_from".into()))];
        let mut buf = Vec::new();
        otlp_document(&s, &DocOptions::default(), &sampling(), &mut buf).unwrap();
        let refs = parse(&buf)["references"].clone();
        assert_eq!(refs.as_array().unwrap().len(), 1);
        assert_eq!(refs[0]["refType"], "FOLLOWS_FROM");
    }

    fn jaeger_span() -> jaeger::Span {
        let jt = |key: &str, v_type: i32| jaeger::KeyValue {
            key: key.into(),
            v_type,
            ..Default::default()
        };
        jaeger::Span {
            trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0x2a],
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 3],
            operation_name: "op".into(),
            references: vec![
                jaeger::SpanRef {
                    trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0x2a],
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 4],
                    ref_type: JAEGER_FOLLOWS_FROM,
                },
                jaeger::SpanRef {
                    trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0x2a],
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 5],
                    ref_type: 0,
                },
            ],
            flags: 1,
            start_time: Some(pbjson_types::Timestamp {
                seconds: 1_485_467_191,
                nanos: 639_875_000,
            }),
            duration: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 5000,
            }),
            tags: vec![
                jaeger::KeyValue {
                    v_str: "service-y".into(),
                    ..jt("peer.service", 0)
                },
                jaeger::KeyValue {
                    v_int64: 23456,
                    ..jt("peer.ipv4", JAEGER_INT64)
                },
                jaeger::KeyValue {
                    v_bool: true,
                    ..jt("error", JAEGER_BOOL)
                },
                jaeger::KeyValue {
                    v_float64: 72.5,
                    ..jt("temperature", JAEGER_FLOAT64)
                },
                jaeger::KeyValue {
                    v_binary: vec![0, 0, 0x30, 0x39],
                    ..jt("blob", JAEGER_BINARY)
                },
            ],
            logs: vec![jaeger::Log {
                timestamp: Some(pbjson_types::Timestamp {
                    seconds: 1_485_467_191,
                    nanos: 639_875_000,
                }),
                fields: vec![jaeger::KeyValue {
                    v_str: "y\n".into(),
                    ..jt("x", 0)
                }],
            }],
            process: Some(jaeger::Process {
                service_name: "service-x".into(),
                tags: vec![jaeger::KeyValue {
                    v_bool: false,
                    ..jt("b", JAEGER_BOOL)
                }],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn jaeger_span_matches_the_contract() {
        let mut buf = Vec::new();
        let opts = DocOptions {
            short_trace_ids: true,
        };
        jaeger_document(&jaeger_span(), &opts, &sampling(), &mut buf).unwrap();
        let expected = json!({
            "traceID": "000000000000002a",
            "spanID": "0000000000000003",
            "parentSpanID": "0000000000000005",
            "flags": 1,
            "operationName": "op",
            "references": [
                {"refType": "FOLLOWS_FROM", "traceID": "000000000000002a", "spanID": "0000000000000004"},
                {"refType": "CHILD_OF", "traceID": "000000000000002a", "spanID": "0000000000000005"},
            ],
            "startTime": 1_485_467_191_639_875u64,
            "startTimeMillis": 1_485_467_191_639u64,
            "duration": 5,
            "tags": [
                t("peer.service", "string", "service-y"),
                t("peer.ipv4", "int64", "23456"),
                t("error", "bool", "true"),
                t("temperature", "float64", "72.5"),
                t("blob", "binary", "00003039"),
                t("sampling.policy", "string", "errors"),
                t("sampling.rate", "float64", "1"),
            ],
            "logs": [{"timestamp": 1_485_467_191_639_875u64, "fields": [t("x", "string", "y\n")]}],
            "process": {"serviceName": "service-x", "tags": [t("b", "bool", "false")]},
        });
        assert_eq!(parse(&buf), expected);
    }

    #[test]
    fn sampling_tags_range_cuts_cleanly() {
        for strip_other_tags in [false, true] {
            let mut span = jaeger_span();
            if strip_other_tags {
                span.tags.clear();
            }
            let mut buf = b"prefix".to_vec();
            let meta =
                jaeger_document(&span, &DocOptions::default(), &sampling(), &mut buf).unwrap();
            let cut = [
                &buf[6..meta.sampling_tags.start],
                &buf[meta.sampling_tags.end..],
            ]
            .concat();
            let doc = parse(&cut);
            let tags = doc["tags"].as_array().unwrap();
            assert_eq!(tags.len(), span.tags.len());
            assert!(String::from_utf8_lossy(&buf[meta.sampling_tags]).contains("sampling.rate"));
        }
    }

    #[test]
    fn long_trace_ids_unless_configured() {
        let mut buf = Vec::new();
        let span = jaeger_span();
        let meta = jaeger_document(&span, &DocOptions::default(), &sampling(), &mut buf).unwrap();
        assert_eq!(meta.trace_id.as_str(), "0000000000000000000000000000002a");
    }

    #[test]
    fn bad_ids_are_errors() {
        let mut s = jaeger_span();
        s.trace_id = vec![1, 2, 3];
        let err =
            jaeger_document(&s, &DocOptions::default(), &sampling(), &mut Vec::new()).unwrap_err();
        assert_eq!(err, DocumentError::TraceId(3));
        let mut o = otlp();
        o.span.span_id = vec![0; 8];
        let err =
            otlp_document(&o, &DocOptions::default(), &sampling(), &mut Vec::new()).unwrap_err();
        assert_eq!(err, DocumentError::SpanId(8));
    }

    #[test]
    fn floats_read_like_go() {
        let f = |v: f64| {
            let mut o = Vec::new();
            float(&mut o, v);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(f(72.5), "72.5");
        assert_eq!(f(10.0), "10");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e300), "1e300");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn strings_are_escaped() {
        let mut o = Vec::new();
        string(&mut o, "a\"b\\c\u{1}d\té");
        assert_eq!(parse(&o), json!("a\"b\\c\u{1}d\té"));
    }

    #[test]
    fn service_documents_match_jaeger() {
        let mut o = Vec::new();
        service_document("svc", "op", &mut o);
        assert_eq!(
            parse(&o),
            json!({"serviceName": "svc", "operationName": "op"})
        );
        // FNV-1a 64 reference value of "a".
        assert_eq!(service_doc_id("a", ""), 0xaf63_dc4c_8601_ec8c);
    }
}
