//! Generated spans in the byte layouts real producers write: the
//! OpenTelemetry Collector kafka exporter (one `ExportTraceServiceRequest`
//! per message, protobuf or JSON) and the Jaeger collector (one
//! `jaeger.api_v2.Span` per message, protobuf or JSON).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;

use super::generator::{GenSpan, GenValue};
use crate::decode::{Encoding, jaeger};
use crate::model::TraceId;

/// Encodes one OTLP request holding `spans` (of one or more traces).
pub fn otlp(spans: &[(TraceId, &GenSpan)], json: bool) -> Vec<u8> {
    let req = otlp_request(spans);
    if json {
        serde_json::to_vec(&req).unwrap_or_default()
    } else {
        req.encode_to_vec()
    }
}

/// Encodes one Jaeger span with its process embedded.
pub fn jaeger(trace_id: TraceId, span: &GenSpan, json: bool) -> Vec<u8> {
    let s = jaeger_span(trace_id, span);
    if json {
        serde_json::to_vec(&s).unwrap_or_default()
    } else {
        s.encode_to_vec()
    }
}

/// Whether an encoding carries one span per message (Jaeger) or batches.
pub fn one_span_per_message(e: Encoding) -> bool {
    matches!(e, Encoding::JaegerProto | Encoding::JaegerJson)
}

pub fn encode(e: Encoding, spans: &[(TraceId, &GenSpan)]) -> Vec<Vec<u8>> {
    match e {
        Encoding::OtlpProto => vec![otlp(spans, false)],
        Encoding::OtlpJson => vec![otlp(spans, true)],
        Encoding::JaegerProto => spans.iter().map(|(t, s)| jaeger(*t, s, false)).collect(),
        Encoding::JaegerJson => spans.iter().map(|(t, s)| jaeger(*t, s, true)).collect(),
    }
}

fn otlp_request(spans: &[(TraceId, &GenSpan)]) -> ExportTraceServiceRequest {
    // One ResourceSpans per service, as an SDK batching per process would.
    let mut by_service: Vec<(&str, Vec<Span>)> = Vec::new();
    for (trace_id, s) in spans {
        let span = otlp_span(*trace_id, s);
        match by_service.iter_mut().find(|(svc, _)| *svc == s.service) {
            Some((_, list)) => list.push(span),
            None => by_service.push((&s.service, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", GenValue::Str(service.to_string())),
                        kv("host.name", GenValue::Str(format!("{service}-0"))),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tailsift-loadgen".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn otlp_span(trace_id: TraceId, s: &GenSpan) -> Span {
    let parent = if s.parent.is_zero() {
        Vec::new()
    } else {
        s.parent.0.to_vec()
    };
    Span {
        trace_id: trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        parent_span_id: parent,
        name: s.name.clone(),
        kind: s.kind,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.end_unix_nano,
        attributes: s.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect(),
        status: s.error.then(|| Status {
            message: "generated failure".into(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn kv(key: &str, v: GenValue) -> KeyValue {
    let value = match v {
        GenValue::Str(s) => any_value::Value::StringValue(s),
        GenValue::Int(i) => any_value::Value::IntValue(i),
        GenValue::Bool(b) => any_value::Value::BoolValue(b),
        GenValue::Double(d) => any_value::Value::DoubleValue(d),
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn jaeger_span(trace_id: TraceId, s: &GenSpan) -> jaeger::Span {
    let mut tags: Vec<jaeger::KeyValue> = s
        .attributes
        .iter()
        .map(|(k, v)| jaeger_kv(k, v.clone()))
        .collect();
    if s.error {
        tags.push(jaeger_kv("error", GenValue::Bool(true)));
    }
    let references = if s.parent.is_zero() {
        Vec::new()
    } else {
        vec![jaeger::SpanRef {
            trace_id: jaeger_trace_id(trace_id),
            span_id: s.parent.0.to_vec(),
            ref_type: jaeger::SpanRefType::ChildOf as i32,
        }]
    };
    let duration = s.end_unix_nano - s.start_unix_nano;
    jaeger::Span {
        trace_id: jaeger_trace_id(trace_id),
        span_id: s.span_id.0.to_vec(),
        operation_name: s.name.clone(),
        references,
        start_time: Some(pbjson_types::Timestamp {
            seconds: (s.start_unix_nano / 1_000_000_000) as i64,
            nanos: (s.start_unix_nano % 1_000_000_000) as i32,
        }),
        duration: Some(pbjson_types::Duration {
            seconds: (duration / 1_000_000_000) as i64,
            nanos: (duration % 1_000_000_000) as i32,
        }),
        tags,
        process: Some(jaeger::Process {
            service_name: s.service.clone(),
            tags: vec![jaeger_kv(
                "hostname",
                GenValue::Str(format!("{}-0", s.service)),
            )],
        }),
        ..Default::default()
    }
}

/// Jaeger clients with 64-bit IDs send 8 bytes.
fn jaeger_trace_id(t: TraceId) -> Vec<u8> {
    if t.is_64bit() {
        t.0[8..].to_vec()
    } else {
        t.0.to_vec()
    }
}

fn jaeger_kv(key: &str, v: GenValue) -> jaeger::KeyValue {
    let mut kv = jaeger::KeyValue {
        key: key.into(),
        ..Default::default()
    };
    match v {
        GenValue::Str(s) => {
            kv.v_type = jaeger::ValueType::String as i32;
            kv.v_str = s;
        }
        GenValue::Int(i) => {
            kv.v_type = jaeger::ValueType::Int64 as i32;
            kv.v_int64 = i;
        }
        GenValue::Bool(b) => {
            kv.v_type = jaeger::ValueType::Bool as i32;
            kv.v_bool = b;
        }
        GenValue::Double(d) => {
            kv.v_type = jaeger::ValueType::Float64 as i32;
            kv.v_float64 = d;
        }
    }
    kv
}
