//! Builders for realistic span messages in the exact layouts real producers
//! write to Kafka, for tests, benchmarks and the load generator:
//!
//! - OpenTelemetry Collector kafka exporter, `otlp_proto` / `otlp_json`:
//!   one `ExportTraceServiceRequest` per message ([`otlp_proto`],
//!   [`otlp_json`]; [`otlp_request`] for the message itself).
//! - Jaeger collector, `protobuf` / `json`: one api_v2 `Span` per message
//!   with its process embedded ([`jaeger_proto`], [`jaeger_json`];
//!   [`jaeger_span`] for the message itself).
//!
//! A span is described once as a [`SpanSpec`] and rendered in either
//! layout, so tests can check both against the same expectations.
//!
//! ```
//! use tailsift::decode::fixtures::{SpanSpec, otlp_proto};
//! use tailsift::model::SpanStatus;
//!
//! let root = SpanSpec::new([1; 16], [1; 8]).service("checkout");
//! let child = SpanSpec::new([1; 16], [2; 8])
//!     .parent([1; 8])
//!     .status(SpanStatus::Error)
//!     .attr("http.status_code", 503);
//! let message: Vec<u8> = otlp_proto(&[root, child]);
//! ```

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status::StatusCode,
};
use prost::Message;

use super::jaeger;
use crate::model::SpanStatus;

/// 2023-11-14T22:13:20Z, a fixed start so rendered messages are stable.
pub const DEFAULT_START_UNIX_NANO: u64 = 1_700_000_000_000_000_000;

/// An attribute value, rendered as the matching OTLP `AnyValue` member or
/// Jaeger `ValueType`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

/// One span, independent of layout. Build with [`SpanSpec::new`] and the
/// chained setters; all fields are public for direct tweaks.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanSpec {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub name: String,
    /// `service.name` of the resource (OTLP) or process (Jaeger).
    pub service: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// OTLP status code; in Jaeger, `Error` becomes the tag `error=true`
    /// and `Ok` the tag `otel.status_code=OK`.
    pub status: SpanStatus,
    pub trace_state: String,
    pub attributes: Vec<(String, Value)>,
    /// Resource (OTLP) or process (Jaeger) attributes besides `service.name`.
    pub resource_attributes: Vec<(String, Value)>,
}

impl SpanSpec {
    /// A 25 ms root span of service `checkout` starting at
    /// [`DEFAULT_START_UNIX_NANO`], with typical host/SDK resource
    /// attributes and no span attributes.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: [0; 8],
            name: "GET /api/orders".into(),
            service: "checkout".into(),
            start_unix_nano: DEFAULT_START_UNIX_NANO,
            end_unix_nano: DEFAULT_START_UNIX_NANO + 25_000_000,
            status: SpanStatus::Unset,
            trace_state: String::new(),
            attributes: Vec::new(),
            resource_attributes: vec![
                ("host.name".into(), "ip-10-0-12-34".into()),
                ("telemetry.sdk.language".into(), "java".into()),
                ("telemetry.sdk.version".into(), "1.32.0".into()),
            ],
        }
    }

    pub fn parent(mut self, parent_span_id: [u8; 8]) -> Self {
        self.parent_span_id = parent_span_id;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    pub fn times(mut self, start_unix_nano: u64, end_unix_nano: u64) -> Self {
        self.start_unix_nano = start_unix_nano;
        self.end_unix_nano = end_unix_nano;
        self
    }

    pub fn status(mut self, status: SpanStatus) -> Self {
        self.status = status;
        self
    }

    pub fn trace_state(mut self, trace_state: impl Into<String>) -> Self {
        self.trace_state = trace_state.into();
        self
    }

    pub fn attr(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    pub fn resource_attr(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.resource_attributes.push((key.into(), value.into()));
        self
    }

    /// Adds the ten attributes an instrumented HTTP server span typically
    /// carries, for realistic message sizes.
    pub fn http_server_attributes(self, status_code: i64) -> Self {
        self.attr("http.request.method", "GET")
            .attr("http.route", "/api/orders/{id}")
            .attr("url.path", "/api/orders/8f14e45f")
            .attr("url.scheme", "https")
            .attr("http.response.status_code", status_code)
            .attr("server.address", "checkout.prod.svc.cluster.local")
            .attr("server.port", 8443)
            .attr("client.address", "10.0.7.21")
            .attr("user_agent.original", "okhttp/4.12.0")
            .attr("network.protocol.version", "1.1")
    }

    fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }
}

/// A trace of `span_count` spans (a root and its direct children, one after
/// another inside the root's 100 ms), each with [`SpanSpec::http_server_attributes`].
/// Span IDs are `index + 1` big-endian, so they are stable and unique per trace.
pub fn trace_spans(trace_id: [u8; 16], span_count: usize, start_unix_nano: u64) -> Vec<SpanSpec> {
    let step = 100_000_000 / span_count.max(1) as u64;
    (0..span_count)
        .map(|i| {
            let spec = SpanSpec::new(trace_id, (i as u64 + 1).to_be_bytes());
            if i == 0 {
                spec.times(start_unix_nano, start_unix_nano + 100_000_000)
                    .http_server_attributes(200)
            } else {
                let start = start_unix_nano + step * i as u64;
                spec.parent(1u64.to_be_bytes())
                    .name(format!("SELECT orders {i}"))
                    .times(start, start + step / 2)
                    .http_server_attributes(200)
            }
        })
        .collect()
}

// ---- OTLP ------------------------------------------------------------------

/// One `ExportTraceServiceRequest` as the Collector's kafka exporter writes
/// it: spans grouped into one ResourceSpans per service (in first-seen
/// order; resource attributes from that service's first span), each with
/// one ScopeSpans.
pub fn otlp_request(spans: &[SpanSpec]) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    for spec in spans {
        let i = match services.iter().position(|s| *s == spec.service) {
            Some(i) => i,
            None => {
                services.push(&spec.service);
                resource_spans.push(otlp_resource_spans(spec));
                resource_spans.len() - 1
            }
        };
        resource_spans[i].scope_spans[0].spans.push(otlp_span(spec));
    }
    ExportTraceServiceRequest { resource_spans }
}

/// [`otlp_request`] encoded as protobuf (the `otlp_proto` encoding).
pub fn otlp_proto(spans: &[SpanSpec]) -> Vec<u8> {
    otlp_request(spans).encode_to_vec()
}

/// [`otlp_request`] as OTLP/JSON (the `otlp_json` encoding): hex IDs,
/// camelCase names, 64-bit integers as strings, enums as integers.
pub fn otlp_json(spans: &[SpanSpec]) -> String {
    serde_json::to_string(&otlp_request(spans)).expect("OTLP requests always serialize")
}

/// The OTLP span alone.
pub fn otlp_span(spec: &SpanSpec) -> Span {
    let error = spec.status == SpanStatus::Error;
    Span {
        trace_id: spec.trace_id.to_vec(),
        span_id: spec.span_id.to_vec(),
        trace_state: spec.trace_state.clone(),
        parent_span_id: if spec.is_root() {
            Vec::new()
        } else {
            spec.parent_span_id.to_vec()
        },
        // Sampled, with a known "parent is not remote".
        flags: 0x101,
        name: spec.name.clone(),
        kind: if spec.is_root() {
            span::SpanKind::Server
        } else {
            span::SpanKind::Client
        } as i32,
        start_time_unix_nano: spec.start_unix_nano,
        end_time_unix_nano: spec.end_unix_nano,
        attributes: otlp_attributes(&spec.attributes),
        events: if error {
            vec![otlp_exception_event(spec.end_unix_nano)]
        } else {
            Vec::new()
        },
        status: otlp_status(spec.status),
        ..Default::default()
    }
}

/// The scope every fixture span is sent under.
pub fn otlp_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.opentelemetry.tomcat-10.0".into(),
        version: "2.1.0-alpha".into(),
        ..Default::default()
    }
}

/// The resource of `spec`: `service.name` plus its resource attributes.
pub fn otlp_resource(spec: &SpanSpec) -> Resource {
    let mut attributes = vec![otlp_key_value(
        "service.name",
        &spec.service.as_str().into(),
    )];
    attributes.extend(otlp_attributes(&spec.resource_attributes));
    Resource {
        attributes,
        ..Default::default()
    }
}

fn otlp_resource_spans(spec: &SpanSpec) -> ResourceSpans {
    ResourceSpans {
        resource: Some(otlp_resource(spec)),
        scope_spans: vec![ScopeSpans {
            scope: Some(otlp_scope()),
            spans: Vec::new(),
            schema_url: String::new(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
    }
}

fn otlp_status(status: SpanStatus) -> Option<Status> {
    let (code, message) = match status {
        SpanStatus::Unset => return None,
        SpanStatus::Ok => (StatusCode::Ok, ""),
        SpanStatus::Error => (StatusCode::Error, "upstream request failed"),
    };
    Some(Status {
        message: message.into(),
        code: code as i32,
    })
}

fn otlp_exception_event(time_unix_nano: u64) -> span::Event {
    span::Event {
        time_unix_nano,
        name: "exception".into(),
        attributes: otlp_attributes(&[
            ("exception.type".into(), "java.io.IOException".into()),
            ("exception.message".into(), "connection reset".into()),
        ]),
        dropped_attributes_count: 0,
    }
}

fn otlp_attributes(attrs: &[(String, Value)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| otlp_key_value(k, v)).collect()
}

fn otlp_key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value.clone() {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Double(d) => any_value::Value::DoubleValue(d),
        Value::Bytes(b) => any_value::Value::BytesValue(b),
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

// ---- Jaeger ----------------------------------------------------------------

/// One api_v2 `Span` as the Jaeger collector writes it to Kafka: 16-byte
/// trace ID, a CHILD_OF reference for the parent, process embedded, span
/// kind as tag `span.kind`, error as tag `error=true` plus an error log.
pub fn jaeger_span(spec: &SpanSpec) -> jaeger::Span {
    let mut tags = vec![jaeger_tag(
        "span.kind",
        &(if spec.is_root() { "server" } else { "client" }).into(),
    )];
    tags.extend(spec.attributes.iter().map(|(k, v)| jaeger_tag(k, v)));
    match spec.status {
        SpanStatus::Error => tags.push(jaeger_tag("error", &true.into())),
        SpanStatus::Ok => tags.push(jaeger_tag("otel.status_code", &"OK".into())),
        SpanStatus::Unset => {}
    }
    if !spec.trace_state.is_empty() {
        tags.push(jaeger_tag(
            "w3c.tracestate",
            &spec.trace_state.as_str().into(),
        ));
    }
    jaeger::Span {
        trace_id: spec.trace_id.to_vec(),
        span_id: spec.span_id.to_vec(),
        operation_name: spec.name.clone(),
        references: jaeger_references(spec),
        flags: 1,
        start_time: Some(timestamp(spec.start_unix_nano)),
        duration: Some(duration(
            spec.end_unix_nano.saturating_sub(spec.start_unix_nano),
        )),
        tags,
        logs: if spec.status == SpanStatus::Error {
            vec![jaeger_error_log(spec.end_unix_nano)]
        } else {
            Vec::new()
        },
        process: Some(jaeger::Process {
            service_name: spec.service.clone(),
            tags: spec
                .resource_attributes
                .iter()
                .map(|(k, v)| jaeger_tag(k, v))
                .collect(),
        }),
        process_id: String::new(),
        warnings: Vec::new(),
    }
}

/// [`jaeger_span`] encoded as protobuf (the Jaeger collector's `protobuf`).
pub fn jaeger_proto(spec: &SpanSpec) -> Vec<u8> {
    jaeger_span(spec).encode_to_vec()
}

/// [`jaeger_span`] as protobuf-JSON (the Jaeger collector's `json`): base64
/// IDs, camelCase names, RFC 3339 times, `"0.025s"` durations, enum names.
pub fn jaeger_json(spec: &SpanSpec) -> String {
    serde_json::to_string(&jaeger_span(spec)).expect("Jaeger spans always serialize")
}

fn jaeger_references(spec: &SpanSpec) -> Vec<jaeger::SpanRef> {
    if spec.is_root() {
        return Vec::new();
    }
    vec![jaeger::SpanRef {
        trace_id: spec.trace_id.to_vec(),
        span_id: spec.parent_span_id.to_vec(),
        ref_type: jaeger::SpanRefType::ChildOf as i32,
    }]
}

fn jaeger_error_log(unix_nano: u64) -> jaeger::Log {
    jaeger::Log {
        timestamp: Some(timestamp(unix_nano)),
        fields: vec![
            jaeger_tag("event", &"error".into()),
            jaeger_tag("message", &"connection reset".into()),
        ],
    }
}

/// A Jaeger tag of the value's type.
pub fn jaeger_tag(key: &str, value: &Value) -> jaeger::KeyValue {
    let mut kv = jaeger::KeyValue {
        key: key.into(),
        ..Default::default()
    };
    let v_type = match value.clone() {
        Value::Str(s) => {
            kv.v_str = s;
            jaeger::ValueType::String
        }
        Value::Bool(b) => {
            kv.v_bool = b;
            jaeger::ValueType::Bool
        }
        Value::Int(i) => {
            kv.v_int64 = i;
            jaeger::ValueType::Int64
        }
        Value::Double(d) => {
            kv.v_float64 = d;
            jaeger::ValueType::Float64
        }
        Value::Bytes(b) => {
            kv.v_binary = b;
            jaeger::ValueType::Binary
        }
    };
    kv.v_type = v_type as i32;
    kv
}

fn timestamp(unix_nano: u64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: (unix_nano / 1_000_000_000) as i64,
        nanos: (unix_nano % 1_000_000_000) as i32,
    }
}

fn duration(nanos: u64) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}
