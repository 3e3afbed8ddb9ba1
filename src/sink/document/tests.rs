use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::{Value as J, json};

use super::jaeger::{
    JAEGER_BINARY, JAEGER_BOOL, JAEGER_FLOAT64, JAEGER_FOLLOWS_FROM, JAEGER_INT64,
};
use super::json::{float, string};
use super::otlp::REF_TYPE_KEY;
use super::*;
use crate::decode::{OtlpSpan, jaeger};

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
    s.span.links[0].attributes = vec![kv(REF_TYPE_KEY, Value::StringValue("follows_from".into()))];
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
        let meta = jaeger_document(&span, &DocOptions::default(), &sampling(), &mut buf).unwrap();
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
    let err = otlp_document(&o, &DocOptions::default(), &sampling(), &mut Vec::new()).unwrap_err();
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
