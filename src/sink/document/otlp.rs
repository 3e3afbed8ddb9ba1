//! An OTLP span as a Jaeger document, mapped the way the OpenTelemetry →
//! Jaeger translator does (`pkg/translator/jaeger` in
//! opentelemetry-collector-contrib): scope, status and kind as tags, the
//! parent and links as references, events as logs, the resource as the
//! process.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::json::{comma, float, quoted, string};
use super::{
    DocOptions, DocumentError, HexId, NO_SERVICE_NAME, Sampling, SpanMeta, Val, head, log_head,
    reference, sampling_tags, span_id, tag, times, trace_id,
};
use crate::decode::OtlpSpan;
use crate::model::{SpanId, TraceId};

const SERVICE_NAME_KEY: &str = "service.name";
/// Link attribute the translator reads to turn a link into CHILD_OF.
pub(super) const REF_TYPE_KEY: &str = "opentracing.ref_type";

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

/// An OTLP value as plain JSON (what the translator's `AsString` gives
/// for arrays and maps; bytes as base64 like Go's encoder).
pub(super) fn any_json(out: &mut Vec<u8>, v: &AnyValue) {
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
