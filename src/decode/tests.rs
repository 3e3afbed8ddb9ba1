//! Decoder tests: messages in the exact layouts of the OpenTelemetry
//! Collector kafka exporter and the Jaeger collector, all four encodings and
//! `auto`, plus garbage of every kind.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::fixtures::{self, SpanSpec, Value};
use super::*;
use crate::model::{AttrValue, Payload, ScanExtras, SpanId, SpanRef, SpanStatus, TraceId};

/// The attribute keys "policies" read in these tests.
const KEYS: [&str; 6] = [
    "http.response.status_code",
    "http.route",
    "host.name",
    "retry",
    "ratio",
    "blob",
];

fn decoder(setting: EncodingSetting) -> Decoder {
    Decoder::new(setting, AttributeKeys::new(KEYS), 1 << 20)
}

fn scan_with(
    setting: EncodingSetting,
    raw: impl Into<Bytes>,
    content_type: Option<&str>,
) -> Result<(Normalized, ScanBatch), DecodeError> {
    let mut batch = ScanBatch::default();
    let n = decoder(setting).scan(raw.into(), content_type, &mut batch)?;
    Ok((n, batch))
}

fn scan(setting: EncodingSetting, raw: impl Into<Bytes>) -> (Normalized, ScanBatch) {
    scan_with(setting, raw, None).expect("scan")
}

/// Three spans over two services: a root with every attribute type, an
/// erroring child with a trace state, an OK child of another service.
fn specs() -> Vec<SpanSpec> {
    let trace = [0x5b; 16];
    let root = SpanSpec::new(trace, [1; 8])
        .attr("http.route", "/api/orders/{id}")
        .attr("http.response.status_code", 200)
        .attr("retry", false)
        .attr("ratio", 0.5)
        .attr("blob", vec![1u8, 2, 3])
        .attr("not.wanted", "x");
    let child = SpanSpec::new(trace, [2; 8])
        .parent([1; 8])
        .name("SELECT orders")
        .times(
            fixtures::DEFAULT_START_UNIX_NANO + 1_000,
            fixtures::DEFAULT_START_UNIX_NANO + 9_000_000,
        )
        .status(SpanStatus::Error)
        .trace_state("rojo=00f067aa0ba902b7")
        .attr("http.response.status_code", 503);
    let other = SpanSpec::new(trace, [3; 8])
        .parent([1; 8])
        .service("inventory")
        .status(SpanStatus::Ok)
        .resource_attr("k8s.pod.name", "inventory-7f9c");
    vec![root, child, other]
}

/// The attributes a scan must keep for `spec`: its wanted span attributes,
/// then its wanted resource attributes.
fn wanted(spec: &SpanSpec) -> Vec<(String, Value)> {
    spec.attributes
        .iter()
        .chain(&spec.resource_attributes)
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn owned(v: AttrValue<'_>) -> Value {
    match v {
        AttrValue::Str(s) => Value::Str(s.into()),
        AttrValue::Bool(b) => Value::Bool(b),
        AttrValue::Int(i) => Value::Int(i),
        AttrValue::Double(d) => Value::Double(d),
        AttrValue::Bytes(b) => Value::Bytes(b.to_vec()),
    }
}

/// Checks every field of scanned span `i` against `spec`.
fn assert_span(n: &Normalized, batch: &ScanBatch, i: usize, spec: &SpanSpec) {
    let view = batch.view(i, &n.bytes);
    let s = view.span;
    assert_eq!(s.trace_id, TraceId(spec.trace_id));
    assert_eq!(s.span_id, SpanId(spec.span_id));
    assert_eq!(s.parent_span_id, SpanId(spec.parent_span_id));
    assert_eq!(s.start_unix_nano, spec.start_unix_nano);
    assert_eq!(s.end_unix_nano, spec.end_unix_nano);
    assert_eq!(s.status, spec.status);
    assert_eq!(view.trace_state(), spec.trace_state);
    assert_eq!(view.service_name(), spec.service);
    let attrs: Vec<_> = view
        .attributes()
        .map(|(k, v)| (k.to_string(), owned(v)))
        .collect();
    assert_eq!(attrs, wanted(spec), "span {i}");
}

/// Fully decodes span `i` from its layout, as the sink will.
fn decode(n: &Normalized, batch: &ScanBatch, i: usize) -> DecodedSpan {
    let payload = Arc::new(Payload {
        bytes: n.bytes.clone(),
        format: n.format,
        partition: 0,
        offset: 0,
    });
    decode_span(&SpanRef {
        payload,
        layout: batch.spans[i].layout,
    })
    .expect("decode_span")
}

fn assert_otlp_round_trip(n: &Normalized, batch: &ScanBatch, i: usize, spec: &SpanSpec) {
    let DecodedSpan::Otlp(d) = decode(n, batch, i) else {
        panic!("expected an OTLP span");
    };
    assert_eq!(d.span, fixtures::otlp_span(spec));
    assert_eq!(d.scope, Some(fixtures::otlp_scope()));
    assert_eq!(d.resource, Some(fixtures::otlp_resource(spec)));
}

fn assert_jaeger_round_trip(n: &Normalized, batch: &ScanBatch, spec: &SpanSpec) {
    let DecodedSpan::Jaeger(d) = decode(n, batch, 0) else {
        panic!("expected a Jaeger span");
    };
    assert_eq!(*d, fixtures::jaeger_span(spec));
}

// ---- hand-built wire bytes ---------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(number: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// One unknown field of every wire type (numbers 90..93).
fn unknown_fields() -> Vec<u8> {
    let mut out = Vec::new();
    varint(90 << 3, &mut out);
    varint(300, &mut out);
    varint(91 << 3 | 1, &mut out);
    out.extend([7; 8]);
    out.extend(len_field(92, b"unknown"));
    varint(93 << 3 | 5, &mut out);
    out.extend([9; 4]);
    out
}

// ---- OTLP --------------------------------------------------------------------

#[test]
fn otlp_proto_scans_every_field_and_round_trips() {
    let specs = specs();
    let raw = fixtures::otlp_proto(&specs);
    let (n, batch) = scan(EncodingSetting::OtlpProto, raw);
    assert_eq!(
        (n.format, n.encoding),
        (WireFormat::Otlp, Encoding::OtlpProto)
    );
    assert_eq!(batch.spans.len(), 3);
    for (i, spec) in specs.iter().enumerate() {
        assert_span(&n, &batch, i, spec);
        assert_otlp_round_trip(&n, &batch, i, spec);
    }
    // Spans of one ResourceSpans share its resource and scope ranges.
    assert_eq!(
        batch.spans[0].layout.resource,
        batch.spans[1].layout.resource
    );
    assert_eq!(batch.spans[0].layout.scope, batch.spans[1].layout.scope);
    assert_ne!(
        batch.spans[0].layout.resource,
        batch.spans[2].layout.resource
    );
}

#[test]
fn otlp_proto_is_not_copied() {
    let raw = Bytes::from(fixtures::otlp_proto(&specs()));
    let mut batch = ScanBatch::default();
    let n = decoder(EncodingSetting::OtlpProto)
        .scan(raw.clone(), None, &mut batch)
        .unwrap();
    assert_eq!(n.bytes.as_ptr(), raw.as_ptr());
}

/// Verbatim shape of the Collector's `otlp_json` (pdata's JSON marshaler):
/// defaults omitted, enums as integers, 64-bit integers as strings.
const COLLECTOR_OTLP_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
{"key":"service.name","value":{"stringValue":"frontend"}},
{"key":"host.name","value":{"stringValue":"web-1"}}]},
"scopeSpans":[{"scope":{"name":"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp","version":"0.49.0"},
"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
"parentSpanId":"eee19b7ec3c1b173","traceState":"rojo=00f067aa0ba902b7","flags":257,
"name":"HTTP GET","kind":2,"startTimeUnixNano":"1544712660000000000",
"endTimeUnixNano":"1544712661000000000","attributes":[
{"key":"http.response.status_code","value":{"intValue":"503"}},
{"key":"http.route","value":{"stringValue":"/cart"}},
{"key":"retry","value":{"boolValue":true}},
{"key":"ratio","value":{"doubleValue":0.25}},
{"key":"blob","value":{"bytesValue":"AQID"}},
{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}],
"events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[
{"key":"exception.message","value":{"stringValue":"boom"}}]}],
"status":{"message":"upstream failed","code":2}},
{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b173",
"name":"HTTP GET /cart","kind":1,"startTimeUnixNano":"1544712659000000000",
"endTimeUnixNano":"1544712662000000000","status":{}}]}],
"schemaUrl":"https://opentelemetry.io/schemas/1.24.0"}]}"#;

#[test]
fn otlp_json_as_the_collector_writes_it() {
    let (n, batch) = scan(EncodingSetting::OtlpJson, COLLECTOR_OTLP_JSON);
    assert_eq!(
        (n.format, n.encoding),
        (WireFormat::Otlp, Encoding::OtlpJson)
    );
    assert_eq!(batch.spans.len(), 2);
    let view = batch.view(0, &n.bytes);
    let s = view.span;
    assert_eq!(s.trace_id.to_hex(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.span_id.to_hex(), "eee19b7ec3c1b174");
    assert_eq!(s.parent_span_id.to_hex(), "eee19b7ec3c1b173");
    assert_eq!(s.start_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(s.end_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(s.status, SpanStatus::Error);
    assert_eq!(view.trace_state(), "rojo=00f067aa0ba902b7");
    assert_eq!(view.service_name(), "frontend");
    let attrs: Vec<_> = view.attributes().collect();
    assert_eq!(
        attrs,
        vec![
            ("http.response.status_code", AttrValue::Int(503)),
            ("http.route", AttrValue::Str("/cart")),
            ("retry", AttrValue::Bool(true)),
            ("ratio", AttrValue::Double(0.25)),
            ("blob", AttrValue::Bytes(&[1, 2, 3])),
            ("host.name", AttrValue::Str("web-1")),
        ]
    );
    let root = batch.spans[1].clone();
    assert!(root.parent_span_id.is_zero());
    assert_eq!(root.status, SpanStatus::Unset);

    // The full decode sees everything the JSON held.
    let DecodedSpan::Otlp(d) = decode(&n, &batch, 0) else {
        panic!("expected OTLP");
    };
    assert_eq!(d.span.name, "HTTP GET");
    assert_eq!(d.span.kind, 2);
    assert_eq!(d.span.flags, 257);
    assert_eq!(d.span.events[0].name, "exception");
    assert_eq!(
        d.span.status.as_ref().map(|s| s.message.as_str()),
        Some("upstream failed")
    );
    assert_eq!(d.scope.map(|s| s.version).as_deref(), Some("0.49.0"));
}

#[test]
fn otlp_json_normalizes_to_the_same_protobuf() {
    let specs = specs();
    let (n, batch) = scan(EncodingSetting::OtlpJson, fixtures::otlp_json(&specs));
    assert_eq!(n.bytes, fixtures::otlp_proto(&specs));
    for (i, spec) in specs.iter().enumerate() {
        assert_span(&n, &batch, i, spec);
        assert_otlp_round_trip(&n, &batch, i, spec);
    }
}

#[test]
fn otlp_json_accepts_enum_names() {
    let json = COLLECTOR_OTLP_JSON
        .replace(r#""kind":2"#, r#""kind":"SPAN_KIND_SERVER""#)
        .replace(r#""code":2"#, r#""code":"STATUS_CODE_ERROR""#);
    let (n, batch) = scan(EncodingSetting::OtlpJson, json);
    assert_eq!(batch.spans[0].status, SpanStatus::Error);
    let DecodedSpan::Otlp(d) = decode(&n, &batch, 0) else {
        panic!("expected OTLP");
    };
    assert_eq!(d.span.kind, 2);
}

#[test]
fn resource_after_scope_spans_still_applies() {
    let spec = &specs()[0];
    let mut rs = fixtures::otlp_request(std::slice::from_ref(spec))
        .resource_spans
        .remove(0);
    let resource = rs.resource.take().expect("fixture resource");
    // scope_spans (field 2) first, then resource (field 1).
    let mut body = rs.encode_to_vec();
    body.extend(len_field(1, &resource.encode_to_vec()));
    let raw = len_field(1, &body);
    let (n, batch) = scan(EncodingSetting::OtlpProto, raw);
    assert_span(&n, &batch, 0, spec);
    assert_otlp_round_trip(&n, &batch, 0, spec);
}

#[test]
fn unknown_fields_are_skipped_at_every_level() {
    let spec = &specs()[1];
    let mut span = fixtures::otlp_span(spec).encode_to_vec();
    span.extend(unknown_fields());
    let mut scope_spans = len_field(1, &fixtures::otlp_scope().encode_to_vec());
    scope_spans.extend(unknown_fields());
    scope_spans.extend(len_field(2, &span));
    let mut rs = unknown_fields();
    rs.extend(len_field(2, &scope_spans));
    rs.extend(len_field(1, &fixtures::otlp_resource(spec).encode_to_vec()));
    let mut raw = unknown_fields();
    raw.extend(len_field(1, &rs));
    raw.extend(unknown_fields());
    let (n, batch) = scan(EncodingSetting::OtlpProto, raw);
    assert_eq!(batch.spans.len(), 1);
    assert_span(&n, &batch, 0, spec);
    // prost keeps no unknown fields, so compare after the same drop.
    let DecodedSpan::Otlp(d) = decode(&n, &batch, 0) else {
        panic!("expected OTLP");
    };
    assert_eq!(d.span, fixtures::otlp_span(spec));
}

#[test]
fn a_group_in_the_message_is_rejected() {
    let mut raw = fixtures::otlp_proto(&specs());
    raw.extend([0x9b, 0x06, 0x9c, 0x06]); // field 99 start/end group
    let err = scan_with(EncodingSetting::OtlpProto, raw, None).unwrap_err();
    assert_eq!(err.reason(), "invalid_protobuf");
}

#[test]
fn array_and_kvlist_attributes_are_skipped() {
    let mut request = fixtures::otlp_request(&specs()[..1]);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.attributes = vec![KeyValue {
        key: "http.route".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::StringValue("/a".into())),
                }],
            })),
        }),
        ..Default::default()
    }];
    let (n, batch) = scan(EncodingSetting::OtlpProto, request.encode_to_vec());
    let keys: Vec<_> = batch
        .view(0, &n.bytes)
        .attributes()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["host.name"]);
}

#[test]
fn no_keys_means_no_attributes_but_service_name_still_read() {
    let d = Decoder::new(EncodingSetting::Auto, AttributeKeys::default(), 1 << 20);
    for raw in [
        fixtures::otlp_proto(&specs()),
        fixtures::jaeger_proto(&specs()[0]),
    ] {
        let mut batch = ScanBatch::default();
        let n = d.scan(raw.into(), None, &mut batch).unwrap();
        assert!(batch.attrs.is_empty());
        assert_eq!(batch.view(0, &n.bytes).service_name(), "checkout");
    }
}

#[test]
fn one_bad_span_rejects_the_whole_message() {
    let mut specs = specs();
    specs[2].trace_id = [0; 16];
    let err = scan_with(
        EncodingSetting::OtlpProto,
        fixtures::otlp_proto(&specs),
        None,
    );
    assert!(matches!(err, Err(DecodeError::ZeroTraceId)));
}

#[test]
fn otlp_ids_must_have_the_right_size() {
    let mut request = fixtures::otlp_request(&specs()[..1]);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.trace_id.truncate(8); // 64-bit trace IDs are a Jaeger thing only
    let err = scan_with(EncodingSetting::OtlpProto, request.encode_to_vec(), None).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidTraceId(8)));
    assert_eq!(err.reason(), "invalid_id");

    let mut request = fixtures::otlp_request(&specs()[..1]);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.span_id.push(0);
    let err = scan_with(EncodingSetting::OtlpProto, request.encode_to_vec(), None).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidSpanId(9)));

    let mut request = fixtures::otlp_request(&specs()[..1]);
    request.resource_spans[0].scope_spans[0].spans[0].parent_span_id = vec![1; 4];
    let err = scan_with(EncodingSetting::OtlpProto, request.encode_to_vec(), None).unwrap_err();
    assert_eq!(err.reason(), "invalid_id");
}

#[test]
fn a_request_without_spans_is_rejected() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(fixtures::otlp_resource(&specs()[0])),
            ..Default::default()
        }],
    };
    let err = scan_with(EncodingSetting::OtlpProto, request.encode_to_vec(), None).unwrap_err();
    assert!(matches!(err, DecodeError::NoSpans));
    let err = scan_with(EncodingSetting::OtlpJson, r#"{"resourceSpans":[]}"#, None).unwrap_err();
    assert_eq!(err.reason(), "no_spans");
}

// ---- Jaeger ------------------------------------------------------------------

#[test]
fn jaeger_proto_scans_every_field_and_round_trips() {
    for spec in specs() {
        let (n, batch) = scan(EncodingSetting::JaegerProto, fixtures::jaeger_proto(&spec));
        assert_eq!(
            (n.format, n.encoding),
            (WireFormat::Jaeger, Encoding::JaegerProto)
        );
        assert_eq!(batch.spans.len(), 1);
        assert_span(&n, &batch, 0, &spec);
        let layout = batch.spans[0].layout;
        assert_eq!(layout.span, crate::model::ByteRange::new(0, n.bytes.len()));
        assert!(layout.scope.is_empty() && layout.resource.is_empty());
        assert_jaeger_round_trip(&n, &batch, &spec);
    }
}

#[test]
fn jaeger_json_normalizes_to_the_same_protobuf() {
    for spec in specs() {
        let (n, batch) = scan(EncodingSetting::JaegerJson, fixtures::jaeger_json(&spec));
        assert_eq!(
            (n.format, n.encoding),
            (WireFormat::Jaeger, Encoding::JaegerJson)
        );
        assert_eq!(n.bytes, fixtures::jaeger_proto(&spec));
        assert_span(&n, &batch, 0, &spec);
        assert_jaeger_round_trip(&n, &batch, &spec);
    }
}

/// The shape gogo `jsonpb.Marshaler{}` writes for the Jaeger collector's
/// `json` encoding: base64 IDs, camelCase, defaults (STRING, CHILD_OF)
/// omitted, int64 as strings, RFC 3339 times, durations in seconds.
const JAEGER_COLLECTOR_JSON: &str = r#"{"traceId":"W47/95gDgQPSabYzgT/GDA==",
"spanId":"7uGbfsPBsXQ=","operationName":"HTTP GET /cart",
"references":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXM="}],
"flags":1,"startTime":"2018-12-13T14:51:00.000250Z","duration":"1.5s",
"tags":[{"key":"span.kind","vStr":"server"},
{"key":"http.response.status_code","vType":"INT64","vInt64":"503"},
{"key":"error","vType":"BOOL","vBool":true},
{"key":"ratio","vType":"FLOAT64","vFloat64":0.25},
{"key":"blob","vType":"BINARY","vBinary":"AQID"}],
"logs":[{"timestamp":"2018-12-13T14:51:00.500Z","fields":[{"key":"event","vStr":"error"}]}],
"process":{"serviceName":"frontend","tags":[{"key":"host.name","vStr":"web-1"}]}}"#;

#[test]
fn jaeger_json_as_the_jaeger_collector_writes_it() {
    let (n, batch) = scan(EncodingSetting::JaegerJson, JAEGER_COLLECTOR_JSON);
    let view = batch.view(0, &n.bytes);
    let s = view.span;
    assert_eq!(s.trace_id.to_hex(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.span_id.to_hex(), "eee19b7ec3c1b174");
    assert_eq!(s.parent_span_id.to_hex(), "eee19b7ec3c1b173");
    assert_eq!(s.start_unix_nano, 1_544_712_660_000_250_000);
    assert_eq!(s.end_unix_nano, 1_544_712_661_500_250_000);
    assert_eq!(s.status, SpanStatus::Error);
    assert_eq!(view.service_name(), "frontend");
    let attrs: Vec<_> = view.attributes().collect();
    assert_eq!(
        attrs,
        vec![
            ("http.response.status_code", AttrValue::Int(503)),
            ("ratio", AttrValue::Double(0.25)),
            ("blob", AttrValue::Bytes(&[1, 2, 3])),
            ("host.name", AttrValue::Str("web-1")),
        ]
    );
    let DecodedSpan::Jaeger(d) = decode(&n, &batch, 0) else {
        panic!("expected Jaeger");
    };
    assert_eq!(d.operation_name, "HTTP GET /cart");
    assert_eq!(d.logs[0].fields[0].v_str, "error");
}

#[test]
fn jaeger_64bit_trace_ids_are_zero_extended() {
    let spec = &specs()[1];
    let mut span = fixtures::jaeger_span(spec);
    span.trace_id = vec![0xab; 8];
    span.references[0].trace_id = [[0u8; 8], [0xab; 8]].concat(); // same ID, 16-byte form
    let (_, batch) = scan(EncodingSetting::JaegerProto, span.encode_to_vec());
    let s = &batch.spans[0];
    assert_eq!(
        s.trace_id,
        TraceId([[0; 8], [0xab; 8]].concat().try_into().unwrap())
    );
    assert!(s.trace_id.is_64bit());
    assert_eq!(s.parent_span_id, SpanId([1; 8]));
}

fn span_ref(trace: [u8; 16], span: [u8; 8], ref_type: jaeger::SpanRefType) -> jaeger::SpanRef {
    jaeger::SpanRef {
        trace_id: trace.to_vec(),
        span_id: span.to_vec(),
        ref_type: ref_type as i32,
    }
}

fn parent_with(refs: Vec<jaeger::SpanRef>) -> SpanId {
    let mut span = fixtures::jaeger_span(&specs()[0]);
    span.references = refs;
    scan(EncodingSetting::JaegerProto, span.encode_to_vec())
        .1
        .spans[0]
        .parent_span_id
}

#[test]
fn jaeger_parent_comes_from_references() {
    use jaeger::SpanRefType::{ChildOf, FollowsFrom};
    let same = specs()[0].trace_id;
    let other = [0x77; 16];
    // CHILD_OF wins over an earlier FOLLOWS_FROM.
    assert_eq!(
        parent_with(vec![
            span_ref(same, [4; 8], FollowsFrom),
            span_ref(same, [5; 8], ChildOf)
        ]),
        SpanId([5; 8])
    );
    // Else the first reference into the same trace.
    assert_eq!(
        parent_with(vec![
            span_ref(other, [6; 8], ChildOf),
            span_ref(same, [7; 8], FollowsFrom),
            span_ref(same, [8; 8], FollowsFrom)
        ]),
        SpanId([7; 8])
    );
    // Links into other traces only: a root.
    assert!(parent_with(vec![span_ref(other, [6; 8], ChildOf)]).is_zero());
    assert!(parent_with(vec![]).is_zero());
}

#[test]
fn jaeger_references_before_the_trace_id_still_resolve() {
    let spec = &specs()[1];
    let mut span = fixtures::jaeger_span(spec);
    let refs = std::mem::take(&mut span.references);
    let mut raw = Vec::new();
    for r in refs {
        raw.extend(len_field(4, &r.encode_to_vec()));
    }
    raw.extend(span.encode_to_vec());
    let (_, batch) = scan(EncodingSetting::JaegerProto, raw);
    assert_eq!(batch.spans[0].parent_span_id, SpanId(spec.parent_span_id));
}

fn status_with(tags: Vec<jaeger::KeyValue>) -> SpanStatus {
    let mut span = fixtures::jaeger_span(&specs()[0]);
    span.tags = tags;
    scan(EncodingSetting::JaegerProto, span.encode_to_vec())
        .1
        .spans[0]
        .status
}

#[test]
fn jaeger_error_tags_set_the_status() {
    let tag = |k: &str, v: Value| fixtures::jaeger_tag(k, &v);
    assert_eq!(
        status_with(vec![tag("error", true.into())]),
        SpanStatus::Error
    );
    assert_eq!(
        status_with(vec![tag("error", "true".into())]),
        SpanStatus::Error
    );
    assert_eq!(
        status_with(vec![tag("error", false.into())]),
        SpanStatus::Unset
    );
    assert_eq!(
        status_with(vec![tag("error", "false".into())]),
        SpanStatus::Unset
    );
    assert_eq!(
        status_with(vec![tag("otel.status_code", "ERROR".into())]),
        SpanStatus::Error
    );
    assert_eq!(
        status_with(vec![tag("otel.status_code", "OK".into())]),
        SpanStatus::Ok
    );
    assert_eq!(
        status_with(vec![
            tag("error", true.into()),
            tag("otel.status_code", "OK".into())
        ]),
        SpanStatus::Error
    );
}

#[test]
fn jaeger_unknown_fields_are_skipped() {
    let spec = &specs()[1];
    let mut raw = fixtures::jaeger_proto(spec);
    raw.extend(unknown_fields());
    let (n, batch) = scan(EncodingSetting::JaegerProto, raw);
    assert_span(&n, &batch, 0, spec);
}

#[test]
fn jaeger_id_errors() {
    let mut span = fixtures::jaeger_span(&specs()[0]);
    span.trace_id = vec![0; 16];
    let err = scan_with(EncodingSetting::JaegerProto, span.encode_to_vec(), None).unwrap_err();
    assert_eq!(err.reason(), "zero_trace_id");
    span.trace_id = vec![1; 12];
    let err = scan_with(EncodingSetting::JaegerProto, span.encode_to_vec(), None).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidTraceId(12)));
    span.trace_id = vec![1; 16];
    span.span_id = vec![];
    let err = scan_with(EncodingSetting::JaegerProto, span.encode_to_vec(), None).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidSpanId(0)));
}

// ---- auto --------------------------------------------------------------------

#[test]
fn auto_detects_all_four_encodings() {
    let specs = specs();
    let cases: [(Vec<u8>, Encoding, Option<&str>); 8] = [
        (fixtures::otlp_proto(&specs), Encoding::OtlpProto, None),
        (
            fixtures::otlp_proto(&specs),
            Encoding::OtlpProto,
            Some("application/x-protobuf"),
        ),
        (fixtures::otlp_json(&specs).into(), Encoding::OtlpJson, None),
        (
            COLLECTOR_OTLP_JSON.into(),
            Encoding::OtlpJson,
            Some("application/json; charset=utf-8"),
        ),
        (
            fixtures::jaeger_proto(&specs[1]),
            Encoding::JaegerProto,
            None,
        ),
        (
            fixtures::jaeger_json(&specs[1]).into(),
            Encoding::JaegerJson,
            None,
        ),
        (
            format!("\n  {JAEGER_COLLECTOR_JSON}").into(),
            Encoding::JaegerJson,
            None,
        ),
        (
            fixtures::jaeger_proto(&specs[1]),
            Encoding::JaegerProto,
            Some("application/x-protobuf"),
        ),
    ];
    for (raw, want, content_type) in cases {
        let (n, batch) = scan_with(EncodingSetting::Auto, raw.clone(), content_type)
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(n.encoding, want);
        // Same result as the explicit setting.
        let explicit = match want {
            Encoding::OtlpProto => EncodingSetting::OtlpProto,
            Encoding::OtlpJson => EncodingSetting::OtlpJson,
            Encoding::JaegerProto => EncodingSetting::JaegerProto,
            Encoding::JaegerJson => EncodingSetting::JaegerJson,
        };
        let (m, other) = scan(explicit, raw);
        assert_eq!(n.bytes, m.bytes);
        assert_eq!(batch.spans, other.spans);
    }
}

#[test]
fn auto_rejects_what_it_cannot_place() {
    let err = scan_with(EncodingSetting::Auto, r#"{"spans":[]}"#, None).unwrap_err();
    assert_eq!(err.reason(), "unknown_encoding");
    // A content type that contradicts the bytes is believed, and fails.
    let err = scan_with(
        EncodingSetting::Auto,
        fixtures::otlp_proto(&specs()),
        Some("application/json"),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "invalid_json");
    // A broken OTLP request reports the OTLP error...
    let mut specs = specs();
    specs[0].span_id = [0; 8];
    specs[0].trace_id = [0; 16];
    let err = scan_with(EncodingSetting::Auto, fixtures::otlp_proto(&specs), None).unwrap_err();
    assert_eq!(err.reason(), "zero_trace_id");
    // ...and what starts like a Jaeger span (16-byte trace ID, 8-byte span
    // ID) the Jaeger error.
    let mut span = fixtures::jaeger_span(&specs[1]);
    span.trace_id = vec![0; 16];
    let err = scan_with(EncodingSetting::Auto, span.encode_to_vec(), None).unwrap_err();
    assert_eq!(err.reason(), "zero_trace_id");
}

// ---- garbage -----------------------------------------------------------------

const ALL_SETTINGS: [EncodingSetting; 5] = [
    EncodingSetting::OtlpProto,
    EncodingSetting::OtlpJson,
    EncodingSetting::JaegerProto,
    EncodingSetting::JaegerJson,
    EncodingSetting::Auto,
];

#[test]
fn empty_and_oversized_messages_are_rejected() {
    for setting in ALL_SETTINGS {
        let err = scan_with(setting, Vec::new(), None).unwrap_err();
        assert_eq!(err.reason(), "empty");
        let small = Decoder::new(setting, AttributeKeys::default(), 16);
        let err = small
            .scan(
                fixtures::otlp_proto(&specs()).into(),
                None,
                &mut ScanBatch::default(),
            )
            .unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { max: 16, .. }));
        assert_eq!(err.reason(), "too_large");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x7a11_5167);
    let mut batch = ScanBatch::default();
    let decoders = ALL_SETTINGS.map(decoder);
    for _ in 0..3_000 {
        let len = rng.random_range(1..300);
        let mut raw = vec![0u8; len];
        rng.fill(&mut raw[..]);
        for d in &decoders {
            let _ = d.scan(raw.clone().into(), None, &mut batch);
        }
    }
}

#[test]
fn mutated_valid_messages_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut batch = ScanBatch::default();
    let d = decoder(EncodingSetting::Auto);
    let seeds = [
        fixtures::otlp_proto(&specs()),
        fixtures::jaeger_proto(&specs()[1]),
        fixtures::otlp_json(&specs()).into_bytes(),
        fixtures::jaeger_json(&specs()[1]).into_bytes(),
    ];
    for seed in &seeds {
        for _ in 0..2_000 {
            let mut raw = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..raw.len());
                raw[i] = rng.random();
            }
            if let Ok(n) = d.scan(raw.into(), None, &mut batch) {
                // Whatever was accepted has in-range layouts.
                for s in &batch.spans {
                    assert!(s.layout.span.end as usize <= n.bytes.len());
                }
            }
        }
    }
}

#[test]
fn otlp_truncated_anywhere_is_an_error() {
    // One ResourceSpans: every strict prefix cuts a field short.
    let raw = fixtures::otlp_proto(&specs()[..2]);
    for setting in [EncodingSetting::OtlpProto, EncodingSetting::Auto] {
        for cut in 0..raw.len() {
            let result = scan_with(setting, raw[..cut].to_vec(), None);
            assert!(
                result.is_err(),
                "{setting:?} accepted a prefix of {cut} bytes"
            );
        }
    }
}

#[test]
fn jaeger_truncated_is_an_error_unless_prost_accepts_it_too() {
    // A top-level Span cut between two fields is still a valid (shorter)
    // message; anything prost rejects, the scan must reject as well.
    let raw = fixtures::jaeger_proto(&specs()[1]);
    for cut in 0..raw.len() {
        let prefix = &raw[..cut];
        let scanned = scan_with(EncodingSetting::JaegerProto, prefix.to_vec(), None);
        if jaeger::Span::decode(prefix).is_err() {
            assert!(scanned.is_err(), "accepted a prefix of {cut} bytes");
        }
    }
}

#[test]
fn json_truncated_anywhere_is_an_error() {
    let specs = specs();
    let cases = [
        (EncodingSetting::OtlpJson, fixtures::otlp_json(&specs)),
        (
            EncodingSetting::JaegerJson,
            fixtures::jaeger_json(&specs[1]),
        ),
        (
            EncodingSetting::JaegerJson,
            JAEGER_COLLECTOR_JSON.to_string(),
        ),
    ];
    for (setting, json) in cases {
        for cut in 0..json.len() {
            let result = scan_with(setting, json.as_bytes()[..cut].to_vec(), None);
            assert!(result.is_err(), "{setting:?} accepted {cut} bytes");
        }
    }
}

#[test]
fn wrong_encodings_are_errors() {
    let specs = specs();
    let otlp_json = fixtures::otlp_json(&specs);
    let jaeger_json = fixtures::jaeger_json(&specs[1]);
    let cases: [(EncodingSetting, Vec<u8>); 8] = [
        (EncodingSetting::OtlpProto, otlp_json.clone().into()),
        (EncodingSetting::JaegerProto, jaeger_json.clone().into()),
        (
            EncodingSetting::OtlpProto,
            fixtures::jaeger_proto(&specs[1]),
        ),
        (EncodingSetting::JaegerProto, fixtures::otlp_proto(&specs)),
        (EncodingSetting::OtlpJson, fixtures::otlp_proto(&specs)),
        (
            EncodingSetting::JaegerJson,
            fixtures::jaeger_proto(&specs[1]),
        ),
        (EncodingSetting::OtlpJson, jaeger_json.into()),
        (EncodingSetting::JaegerJson, otlp_json.into()),
    ];
    for (setting, raw) in cases {
        let result = scan_with(setting, raw, None);
        assert!(result.is_err(), "{setting:?} accepted a foreign message");
    }
}

#[test]
fn invalid_utf8_in_a_scanned_string_is_rejected() {
    let mut spec = specs()[0].clone();
    spec.service = "svc-\u{7f}".into();
    let mut raw = fixtures::otlp_proto(&[spec]);
    let at = raw.windows(5).position(|w| w == b"svc-\x7f").unwrap();
    raw[at + 4] = 0xff;
    let err = scan_with(EncodingSetting::OtlpProto, raw, None).unwrap_err();
    assert_eq!(err.reason(), "invalid_utf8");
}

// ---- API ---------------------------------------------------------------------

#[test]
fn decode_span_checks_the_layout() {
    let raw = fixtures::jaeger_proto(&specs()[0]);
    let r = SpanRef {
        payload: Arc::new(Payload {
            bytes: raw.into(),
            format: WireFormat::Jaeger,
            partition: 0,
            offset: 0,
        }),
        layout: crate::model::SpanLayout {
            span: crate::model::ByteRange::new(0, 10_000),
            ..Default::default()
        },
    };
    let err = decode_span(&r).unwrap_err();
    assert_eq!(err.reason(), "invalid_layout");
}

#[test]
fn the_batch_is_cleared_and_reused() {
    let d = decoder(EncodingSetting::OtlpProto);
    let mut batch = ScanBatch::default();
    d.scan(fixtures::otlp_proto(&specs()).into(), None, &mut batch)
        .unwrap();
    let (spans, attrs) = (batch.spans.len(), batch.attrs.len());
    d.scan(fixtures::otlp_proto(&specs()).into(), None, &mut batch)
        .unwrap();
    assert_eq!((batch.spans.len(), batch.attrs.len()), (spans, attrs));
}

#[test]
fn encodings_have_their_config_names() {
    let names: Vec<_> = [
        Encoding::OtlpProto,
        Encoding::OtlpJson,
        Encoding::JaegerProto,
        Encoding::JaegerJson,
    ]
    .iter()
    .map(Encoding::as_str)
    .collect();
    assert_eq!(
        names,
        ["otlp_proto", "otlp_json", "jaeger_proto", "jaeger_json"]
    );
}

#[test]
fn decoder_is_send_sync_and_cheap_to_share() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Decoder>();
}

/// Scope names and events cost a walk of nested messages: recorded only
/// when asked for, in both wire models, with event attributes limited to
/// the keys asked for and the span's own attributes kept contiguous.
#[test]
fn scope_name_and_events_are_scanned_only_on_request() {
    let error = SpanSpec::new([3; 16], [1; 8])
        .status(SpanStatus::Error)
        .name("GET /x")
        .attr("http.route", "/x");
    for (setting, raw) in [
        (
            EncodingSetting::OtlpProto,
            fixtures::otlp_proto(std::slice::from_ref(&error)),
        ),
        (EncodingSetting::JaegerProto, fixtures::jaeger_proto(&error)),
    ] {
        let (n, batch) = scan(setting, raw.clone());
        let v = batch.view(0, &n.bytes);
        assert!(
            batch.events.is_empty() && v.span.scope_name.is_empty(),
            "{setting:?}"
        );
        assert_eq!(v.bytes_at(v.span.name), b"GET /x");
        assert_eq!(v.span.kind, 2, "a root is a server span");
        assert_eq!(v.span.flags & 1, 1, "sampled");

        let extras = ScanExtras {
            scope_name: true,
            events: true,
            event_keys: vec!["exception.type".into(), "message".into()],
        };
        let d = Decoder::new(
            setting,
            AttributeKeys::new(KEYS).with_extras(extras),
            1 << 20,
        );
        let mut batch = ScanBatch::default();
        let n = d.scan(Bytes::from(raw), None, &mut batch).expect("scan");
        let v = batch.view(0, &n.bytes);
        let events = v.events();
        assert_eq!(events.len(), 1, "{setting:?}");
        let attrs: Vec<_> = v
            .attr_range(events[0].attrs)
            .iter()
            .map(|a| String::from_utf8_lossy(v.bytes_at(a.key)).into_owned())
            .collect();
        let span_keys: Vec<_> = v
            .span_attributes()
            .iter()
            .map(|a| String::from_utf8_lossy(v.bytes_at(a.key)).into_owned())
            .collect();
        assert_eq!(span_keys, ["http.route"], "{setting:?}");
        match setting {
            EncodingSetting::OtlpProto => {
                assert_eq!(v.bytes_at(events[0].name), b"exception");
                assert_eq!(attrs, ["exception.type"]);
                assert_eq!(
                    v.bytes_at(v.span.scope_name),
                    b"io.opentelemetry.tomcat-10.0"
                );
                assert_eq!(
                    v.bytes_at(v.span.status_message),
                    b"upstream request failed"
                );
            }
            _ => {
                assert_eq!(v.bytes_at(events[0].name), b"error");
                assert_eq!(attrs, ["message"]);
            }
        }
    }
}
