//! A Jaeger span as a Jaeger document: the model's fields one for one, tags
//! typed by their `v_type`, the parent taken from the first CHILD_OF
//! reference.

use super::json::{comma, string};
use super::{
    DocOptions, DocumentError, HexId, NO_SERVICE_NAME, Sampling, SpanMeta, Val, head, log_head,
    reference, sampling_tags, span_id, tag, times, trace_id,
};
use crate::decode::jaeger;
use crate::model::TraceId;

// jaeger.api_v2 wire values.
pub(super) const JAEGER_BOOL: i32 = 1;
pub(super) const JAEGER_INT64: i32 = 2;
pub(super) const JAEGER_FLOAT64: i32 = 3;
pub(super) const JAEGER_BINARY: i32 = 4;
pub(super) const JAEGER_FOLLOWS_FROM: i32 = 1;

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
