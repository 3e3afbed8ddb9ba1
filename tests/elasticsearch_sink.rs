//! The Elasticsearch sink against a real Elasticsearch: set `ES_URL`
//! (`eval "$(deploy/local/stack.sh env)"` after `deploy/local/stack.sh up`).
//! Every test writes under its own index prefix.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::Transport;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};
use tailsift::config::{Config, ElasticsearchConfig};
use tailsift::deadletter::{DeadLetter, DeadLetterSink, Queued};
use tailsift::decode::jaeger;
use tailsift::model::{ByteRange, Decision, Payload, SpanLayout, SpanRef, TraceId, WireFormat};
use tailsift::offsets::{AckHandle, Resolved};
use tailsift::plan::Plan;
use tailsift::sink::document::service_doc_id;
use tailsift::sink::templates::TemplateApi;
use tailsift::sink::{ElasticsearchSink, KeptTrace, TraceSink};
use tokio::sync::mpsc;

// ---------------------------------------------------------------- helpers

fn es_url() -> String {
    std::env::var("ES_URL").expect(
        "ES_URL is not set: start Elasticsearch with `deploy/local/stack.sh up` and \
         `eval \"$(deploy/local/stack.sh env)\"`",
    )
}

/// A fresh lowercase index prefix per test and run.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("it-{test}-{}-{nanos}-", std::process::id())
}

fn config() -> ElasticsearchConfig {
    let mut cfg = ElasticsearchConfig {
        urls: vec![es_url()],
        // The local stack is one node.
        replicas: 0,
        ..Default::default()
    };
    cfg.bulk.linger = Duration::from_millis(20);
    cfg
}

/// Dead letters kept in memory, acknowledged at once.
#[derive(Default)]
struct Recorder(Mutex<Vec<DeadLetter>>);

impl DeadLetterSink for Recorder {
    fn send(&self, letter: DeadLetter, ack: AckHandle) -> Queued<'_> {
        self.0.lock().unwrap().push(letter);
        ack.ack();
        Box::pin(std::future::ready(()))
    }
}

impl Recorder {
    fn letters(&self) -> Vec<DeadLetter> {
        self.0.lock().unwrap().clone()
    }
}

/// The sink the service builds from `cfg` under `prefix`.
async fn start(cfg: &ElasticsearchConfig, prefix: &str) -> (ElasticsearchSink, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let service = Config {
        elasticsearch: ElasticsearchConfig {
            index_prefix: prefix.to_string(),
            ..cfg.clone()
        },
        ..Config::default()
    };
    let plan = Plan::resolve(&service).expect("test config resolves");
    let sink = ElasticsearchSink::start(&plan.sink, recorder.clone())
        .await
        .expect("sink starts against ES_URL");
    (sink, recorder)
}

/// Raw calls for assertions.
struct Es(Elasticsearch);

impl Es {
    fn new() -> Self {
        Self(Elasticsearch::new(
            Transport::single_node(&es_url()).unwrap(),
        ))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()));
        let resp = self
            .0
            .send(method, path, HeaderMap::new(), None::<&()>, body, None)
            .await
            .unwrap();
        let status = resp.status_code().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Refreshes, then returns the `_source` of every hit in `index`.
    async fn docs(&self, index: &str, query: Value) -> Vec<Value> {
        self.call(Method::Post, &format!("/{index}/_refresh"), None)
            .await;
        let body = json!({"query": query, "size": 100, "version": true, "sort": ["_doc"]});
        let (status, r) = self
            .call(Method::Post, &format!("/{index}/_search"), Some(body))
            .await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{r}");
        r["hits"]["hits"].as_array().unwrap().clone()
    }

    async fn count(&self, index: &str) -> usize {
        self.call(Method::Post, &format!("/{index}/_refresh"), None)
            .await;
        let (status, r) = self
            .call(Method::Get, &format!("/{index}/_count"), None)
            .await;
        match status {
            404 => 0,
            200 => r["count"].as_u64().unwrap() as usize,
            _ => panic!("count {index}: {status} {r}"),
        }
    }

    /// Deletes what a test wrote under `prefix` (by name: wildcard deletes
    /// are refused by default).
    async fn cleanup(&self, prefix: &str) {
        let (_, indices) = self
            .call(
                Method::Get,
                &format!("/_cat/indices/{prefix}*?format=json&h=index"),
                None,
            )
            .await;
        for i in indices.as_array().into_iter().flatten() {
            if let Some(name) = i["index"].as_str() {
                self.call(Method::Delete, &format!("/{name}"), None).await;
            }
        }
        // Composable templates on Elasticsearch 8/9 (and a test's own), legacy ones on
        // OpenSearch.
        for name in ["jaeger-span", "jaeger-service", "reject"] {
            for api in ["_index_template", "_template"] {
                self.call(Method::Delete, &format!("/{api}/{prefix}{name}"), None)
                    .await;
            }
        }
    }
}

fn ack_channel(offset: i64, spans: u32) -> (AckHandle, mpsc::UnboundedReceiver<Resolved>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut r = Resolved::default();
    r.add(offset, spans);
    (AckHandle::new(tx, r), rx)
}

fn kept(trace_id: TraceId, spans: Vec<SpanRef>, ack: AckHandle) -> KeptTrace {
    KeptTrace {
        trace_id,
        decision: Decision::keep("errors".into(), 1.0),
        would_drop: false,
        spans,
        ack,
    }
}

fn payload(bytes: Vec<u8>, format: WireFormat) -> Arc<Payload> {
    Arc::new(Payload {
        bytes: bytes.into(),
        format,
        partition: 0,
        offset: 100,
        times: tailsift::span_time::TimeBounds::UNBOUNDED,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> ByteRange {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("sub-message inside the request");
    ByteRange::new(at, at + needle.len())
}

/// One OTLP request holding `spans`, with their layouts computed the way a
/// scan records them (span, scope and resource messages).
fn otlp_refs(resource: Resource, scope: InstrumentationScope, spans: Vec<Span>) -> Vec<SpanRef> {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope.clone()),
                spans: spans.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bytes = req.encode_to_vec();
    let scope_range = find(&bytes, &scope.encode_to_vec());
    let resource_range = find(&bytes, &resource.encode_to_vec());
    let p = payload(bytes, WireFormat::Otlp);
    spans
        .iter()
        .map(|s| SpanRef {
            layout: SpanLayout {
                span: find(&p.bytes, &s.encode_to_vec()),
                scope: scope_range,
                resource: resource_range,
            },
            payload: p.clone(),
        })
        .collect()
}

fn jaeger_ref(span: &jaeger::Span) -> SpanRef {
    let bytes = span.encode_to_vec();
    SpanRef {
        layout: SpanLayout {
            span: ByteRange::new(0, bytes.len()),
            ..Default::default()
        },
        payload: payload(bytes, WireFormat::Jaeger),
    }
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn tag(key: &str, ty: &str, value: &str) -> Value {
    json!({"key": key, "type": ty, "value": value})
}

/// Unix nanoseconds of an RFC 3339 time.
fn nanos(rfc3339: &str) -> u64 {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    t.timestamp_nanos_opt().unwrap() as u64
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            attr("service.name", s(service)),
            attr("host.name", s("node-1")),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.opentelemetry.okhttp".into(),
        version: "1.2.3".into(),
        ..Default::default()
    }
}

fn simple_span(trace: [u8; 16], id: u8, name: &str, start: &str) -> Span {
    let start = nanos(start);
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        name: name.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2_000_000,
        ..Default::default()
    }
}

fn trace_hex(t: [u8; 16]) -> String {
    TraceId(t).to_hex()
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn otlp_span_is_stored_per_the_jaeger_contract() {
    let p = prefix("otlp");
    let (sink, _) = start(&config(), &p).await;
    let trace = [0x4b; 16];
    let start = nanos("2024-05-06T07:08:09.123456789Z");
    let span = Span {
        trace_id: trace.to_vec(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
        trace_state: "vendor=abc".into(),
        name: "GET /cart".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000,
        attributes: vec![
            attr("http.status_code", any_value::Value::IntValue(503)),
            attr("retry", any_value::Value::BoolValue(false)),
        ],
        events: vec![Event {
            time_unix_nano: start + 1_000,
            name: "exception".into(),
            attributes: vec![attr("exception.type", s("Timeout"))],
            ..Default::default()
        }],
        links: vec![Link {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            ..Default::default()
        }],
        status: Some(Status {
            message: "upstream timeout".into(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    let (ack, mut acks) = ack_channel(100, 1);
    let refs = otlp_refs(resource("cart"), scope(), vec![span]);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    sink.flush().await;
    assert!(acks.try_recv().is_ok(), "acknowledged after flush");

    let hits = Es::new()
        .docs(
            &format!("{p}jaeger-span-2024-05-06"),
            json!({"term": {"traceID": trace_hex(trace)}}),
        )
        .await;
    assert_eq!(hits.len(), 1);
    let t = trace_hex(trace);
    let expected = json!({
        "traceID": t,
        "spanID": "0102030405060708",
        "parentSpanID": "0000000000000009",
        "operationName": "GET /cart",
        "references": [
            {"refType": "CHILD_OF", "traceID": t, "spanID": "0000000000000009"},
            {"refType": "FOLLOWS_FROM", "traceID": "11".repeat(16), "spanID": "22".repeat(8)},
        ],
        "startTime": 1_714_979_289_123_456u64,
        "startTimeMillis": 1_714_979_289_123u64,
        "duration": 1500,
        "tags": [
            tag("otel.scope.name", "string", "io.opentelemetry.okhttp"),
            tag("otel.scope.version", "string", "1.2.3"),
            tag("http.status_code", "int64", "503"),
            tag("retry", "bool", "false"),
            tag("span.kind", "string", "client"),
            tag("otel.status_code", "string", "ERROR"),
            tag("error", "bool", "true"),
            tag("otel.status_description", "string", "upstream timeout"),
            tag("w3c.tracestate", "string", "vendor=abc"),
            tag("sampling.policy", "string", "errors"),
            tag("sampling.rate", "float64", "1"),
        ],
        "logs": [{
            "timestamp": 1_714_979_289_123_457u64,
            "fields": [tag("event", "string", "exception"), tag("exception.type", "string", "Timeout")],
        }],
        "process": {"serviceName": "cart", "tags": [tag("host.name", "string", "node-1")]},
    });
    let source = &hits[0]["_source"];
    for (field, want) in expected.as_object().unwrap() {
        assert_eq!(&source[field], want, "field {field}");
    }
    assert_eq!(source, &expected, "no other fields");
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn jaeger_span_is_stored_per_the_jaeger_contract() {
    let p = prefix("jaeger");
    let cfg = ElasticsearchConfig {
        short_trace_ids: true,
        ..config()
    };
    let (sink, _) = start(&cfg, &p).await;
    let kv = |key: &str, v_type: i32| jaeger::KeyValue {
        key: key.into(),
        v_type,
        ..Default::default()
    };
    let trace64 = vec![0, 0, 0, 0, 0, 0, 0x0a, 0xbc];
    let span = jaeger::Span {
        trace_id: trace64.clone(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
        operation_name: "HTTP GET".into(),
        references: vec![
            jaeger::SpanRef {
                trace_id: trace64.clone(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
                ref_type: 0,
            },
            jaeger::SpanRef {
                trace_id: trace64.clone(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 7],
                ref_type: 1,
            },
        ],
        flags: 1,
        start_time: Some(pbjson_types::Timestamp {
            seconds: 1_485_467_191,
            nanos: 639_875_000,
        }),
        duration: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 5_000,
        }),
        tags: vec![
            jaeger::KeyValue {
                v_str: "service-y".into(),
                ..kv("peer.service", 0)
            },
            jaeger::KeyValue {
                v_bool: true,
                ..kv("error", 1)
            },
            jaeger::KeyValue {
                v_int64: 23456,
                ..kv("peer.ipv4", 2)
            },
            jaeger::KeyValue {
                v_float64: 72.5,
                ..kv("temperature", 3)
            },
            jaeger::KeyValue {
                v_binary: vec![0, 0, 0x30, 0x39],
                ..kv("blob", 4)
            },
        ],
        logs: vec![jaeger::Log {
            timestamp: Some(pbjson_types::Timestamp {
                seconds: 1_485_467_191,
                nanos: 639_880_000,
            }),
            fields: vec![jaeger::KeyValue {
                v_str: "retrying".into(),
                ..kv("event", 0)
            }],
        }],
        process: Some(jaeger::Process {
            service_name: "service-x".into(),
            tags: vec![jaeger::KeyValue {
                v_str: "1.0".into(),
                ..kv("jaeger.version", 0)
            }],
        }),
        ..Default::default()
    };
    let trace_id = TraceId::from_slice(&trace64).unwrap();
    let (ack, mut acks) = ack_channel(100, 1);
    sink.submit(kept(trace_id, vec![jaeger_ref(&span)], ack))
        .await;
    sink.flush().await;
    assert!(acks.try_recv().is_ok());

    let hits = Es::new()
        .docs(
            &format!("{p}jaeger-span-2017-01-26"),
            json!({"term": {"traceID": "0000000000000abc"}}),
        )
        .await;
    assert_eq!(hits.len(), 1, "found by the 16-hex trace ID");
    let expected = json!({
        "traceID": "0000000000000abc",
        "spanID": "0000000000000002",
        "parentSpanID": "0000000000000001",
        "flags": 1,
        "operationName": "HTTP GET",
        "references": [
            {"refType": "CHILD_OF", "traceID": "0000000000000abc", "spanID": "0000000000000001"},
            {"refType": "FOLLOWS_FROM", "traceID": "0000000000000abc", "spanID": "0000000000000007"},
        ],
        "startTime": 1_485_467_191_639_875u64,
        "startTimeMillis": 1_485_467_191_639u64,
        "duration": 5,
        "tags": [
            tag("peer.service", "string", "service-y"),
            tag("error", "bool", "true"),
            tag("peer.ipv4", "int64", "23456"),
            tag("temperature", "float64", "72.5"),
            tag("blob", "binary", "00003039"),
            tag("sampling.policy", "string", "errors"),
            tag("sampling.rate", "float64", "1"),
        ],
        "logs": [{"timestamp": 1_485_467_191_639_880u64, "fields": [tag("event", "string", "retrying")]}],
        "process": {"serviceName": "service-x", "tags": [tag("jaeger.version", "string", "1.0")]},
    });
    let source = &hits[0]["_source"];
    for (field, want) in expected.as_object().unwrap() {
        assert_eq!(&source[field], want, "field {field}");
    }
    assert_eq!(source, &expected, "no other fields");
    Es::new().cleanup(&p).await;
}

/// A same-named template tailsift did not create (a Jaeger installation's,
/// with its own `_meta` and `tag.*` dynamic templates) is left alone; with
/// `overwrite_templates` it is replaced; a missing one is created, marked.
/// In the template API the server speaks: composable on Elasticsearch 8/9,
/// legacy on OpenSearch (whose `_meta` sits in the mappings).
#[tokio::test]
async fn foreign_templates_are_kept_unless_overwrite_is_set() {
    let p = prefix("foreign");
    let es = Es::new();
    let client = tailsift::sink::elasticsearch::EsClient::new(&config()).expect("client");
    let info = client.server_info().await.expect("server info");
    let api = TemplateApi::for_server(&info);
    let span_name = format!("{p}jaeger-span");
    let span_path = api.path(&span_name);
    let mappings = json!({
        "dynamic_templates": [
            {"span_tags_map": {"path_match": "tag.*", "mapping": {"type": "keyword"}}}
        ],
    });
    let settings = json!({"index.number_of_shards": 1, "index.number_of_replicas": 0});
    let owner = json!({"owner": "jaeger-es-rollover"});
    let foreign = match api {
        TemplateApi::Composable => json!({
            "index_patterns": [format!("{p}jaeger-span-*")],
            "priority": 300,
            "template": {"settings": settings, "mappings": mappings},
            "_meta": owner,
        }),
        TemplateApi::Legacy => {
            let mut mappings = mappings;
            mappings["_meta"] = owner;
            json!({
                "index_patterns": [format!("{p}jaeger-span-*")],
                "order": 300,
                "settings": settings,
                "mappings": mappings,
            })
        }
    };
    let (status, r) = es.call(Method::Put, &span_path, Some(foreign)).await;
    assert_eq!(status, 200, "{r}");
    let meta = |name: &str, reply: &Value| match api {
        TemplateApi::Composable => reply["index_templates"][0]["index_template"]["_meta"].clone(),
        TemplateApi::Legacy => reply[name]["mappings"]["_meta"].clone(),
    };

    let (_sink, _) = start(&config(), &p).await;
    let (_, kept) = es.call(Method::Get, &span_path, None).await;
    assert_eq!(
        meta(&span_name, &kept)["owner"],
        "jaeger-es-rollover",
        "{kept}"
    );
    let service_name = format!("{p}jaeger-service");
    let (_, created) = es.call(Method::Get, &api.path(&service_name), None).await;
    assert_eq!(
        meta(&service_name, &created)["managed_by"],
        "tailsift",
        "{created}"
    );

    let cfg = ElasticsearchConfig {
        overwrite_templates: true,
        ..config()
    };
    let (_sink, _) = start(&cfg, &p).await;
    let (_, replaced) = es.call(Method::Get, &span_path, None).await;
    assert_eq!(
        meta(&span_name, &replaced)["managed_by"],
        "tailsift",
        "{replaced}"
    );
    // Ours from now on: updated on every start, switch or not.
    let (_sink, _) = start(&config(), &p).await;
    es.cleanup(&p).await;
}

#[tokio::test]
async fn applied_mapping_has_nested_tags() {
    let p = prefix("mapping");
    let (sink, _) = start(&config(), &p).await;
    let trace = [0x5c; 16];
    let refs = otlp_refs(
        resource("m"),
        scope(),
        vec![simple_span(trace, 1, "op", "2024-05-06T00:00:01Z")],
    );
    let (ack, _acks) = ack_channel(1, 1);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    sink.flush().await;

    let index = format!("{p}jaeger-span-2024-05-06");
    let (status, m) = Es::new()
        .call(Method::Get, &format!("/{index}/_mapping"), None)
        .await;
    assert_eq!(status, 200, "{m}");
    let props = &m[&index]["mappings"]["properties"];
    assert_eq!(props["tags"]["type"], "nested", "{props}");
    assert_eq!(props["tags"]["properties"]["value"]["type"], "keyword");
    assert_eq!(props["process"]["properties"]["tags"]["type"], "nested");
    assert_eq!(props["logs"]["type"], "nested");
    assert_eq!(props["logs"]["properties"]["fields"]["type"], "nested");
    assert_eq!(props["references"]["type"], "nested");
    assert_eq!(props["traceID"]["type"], "keyword");
    assert_eq!(props["startTime"]["type"], "long");
    assert_eq!(props["startTimeMillis"]["type"], "date");
    assert_eq!(props["duration"]["type"], "long");

    let service_index = format!("{p}jaeger-service-2024-05-06");
    let (_, m) = Es::new()
        .call(Method::Get, &format!("/{service_index}/_mapping"), None)
        .await;
    let props = &m[&service_index]["mappings"]["properties"];
    assert_eq!(props["serviceName"]["type"], "keyword");
    assert_eq!(props["operationName"]["type"], "keyword");
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn trace_crossing_utc_midnight_lands_in_two_daily_indices() {
    let p = prefix("midnight");
    let (sink, _) = start(&config(), &p).await;
    let trace = [0x6d; 16];
    let refs = otlp_refs(
        resource("night"),
        scope(),
        vec![
            simple_span(trace, 1, "late", "2024-01-01T23:59:59.900Z"),
            simple_span(trace, 2, "early", "2024-01-02T00:00:00.100Z"),
        ],
    );
    let (ack, mut acks) = ack_channel(1, 2);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    sink.flush().await;
    assert!(acks.try_recv().is_ok());

    let es = Es::new();
    let day1 = es
        .docs(
            &format!("{p}jaeger-span-2024-01-01"),
            json!({"match_all": {}}),
        )
        .await;
    let day2 = es
        .docs(
            &format!("{p}jaeger-span-2024-01-02"),
            json!({"match_all": {}}),
        )
        .await;
    assert_eq!(day1.len(), 1);
    assert_eq!(day2.len(), 1);
    assert_eq!(day1[0]["_source"]["operationName"], "late");
    assert_eq!(day2[0]["_source"]["operationName"], "early");
    assert_eq!(es.count(&format!("{p}jaeger-service-2024-01-01")).await, 1);
    assert_eq!(es.count(&format!("{p}jaeger-service-2024-01-02")).await, 1);
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn the_same_trace_twice_leaves_one_copy_of_each_span() {
    let p = prefix("twice");
    let trace = [0x7e; 16];
    let spans: Vec<Span> = (1..=3)
        .map(|i| simple_span(trace, i, "op", "2024-02-03T04:05:06Z"))
        .collect();
    // A second sink instance stands for a restart that replays the input;
    // the replay may be sampled differently (reloaded policy, adaptive rate).
    for restart in 0..2 {
        let (sink, _) = start(&config(), &p).await;
        for _ in 0..2 {
            let (ack, mut acks) = ack_channel(1, 3);
            let refs = otlp_refs(resource("dup"), scope(), spans.clone());
            let mut trace = kept(TraceId(trace), refs, ack);
            if restart == 1 {
                trace.decision = Decision::keep("baseline".into(), 10.0);
            }
            sink.submit(trace).await;
            sink.flush().await;
            assert!(acks.try_recv().is_ok());
        }
    }
    let es = Es::new();
    assert_eq!(es.count(&format!("{p}jaeger-span-*")).await, 3);
    let hits = es
        .docs(&format!("{p}jaeger-span-*"), json!({"match_all": {}}))
        .await;
    let rate = |h: &Value| {
        let tags = h["_source"]["tags"].as_array().unwrap().clone();
        tags.into_iter()
            .find(|t| t["key"] == "sampling.rate")
            .unwrap()["value"]
            .clone()
    };
    let rates: Vec<Value> = hits.iter().map(rate).collect();
    assert_eq!(rates, vec![json!("10"); 3], "the replay's tags win");
    assert_eq!(es.count(&format!("{p}jaeger-service-*")).await, 1);
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn rejected_document_goes_to_dead_letters_and_does_not_block_others() {
    let p = prefix("reject");
    let (sink, dead) = start(&config(), &p).await;
    // The day's index gets `operationName` as a number: a span whose operation name
    // is not numeric is refused with a mapping error. (A composable template of higher
    // priority, not an explicit index mapping: OpenSearch would merge that with the
    // legacy span template's keyword parameters and refuse the index itself.)
    let index = format!("{p}jaeger-span-2024-03-10");
    let es = Es::new();
    let (status, r) = es
        .call(
            Method::Put,
            &format!("/_index_template/{p}reject"),
            Some(json!({
                "index_patterns": [index],
                "priority": 1000,
                "template": {"mappings": {"properties": {"operationName": {"type": "long"}}}},
            })),
        )
        .await;
    assert_eq!(status, 200, "{r}");

    let trace = [0x8f; 16];
    let refs = otlp_refs(
        resource("rej"),
        scope(),
        vec![
            simple_span(trace, 1, "12345", "2024-03-10T12:00:00Z"),
            simple_span(trace, 2, "checkout", "2024-03-10T12:00:01Z"),
            simple_span(trace, 3, "678", "2024-03-10T12:00:02Z"),
        ],
    );
    let (ack, mut acks) = ack_channel(1, 3);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    tokio::time::timeout(Duration::from_secs(30), sink.flush())
        .await
        .expect("a rejected document must not block the sink");
    assert!(
        acks.try_recv().is_ok(),
        "acknowledged once the dead letter is stored"
    );

    let letters = dead.letters();
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.reason, "es_rejected");
    assert!(
        l.error.starts_with("document_parsing_exception") || l.error.contains("parsing"),
        "{}",
        l.error
    );
    let doc: Value = serde_json::from_slice(&l.payload).unwrap();
    assert_eq!(doc["operationName"], "checkout");
    assert_eq!(l.key.as_deref(), Some(trace_hex(trace).as_bytes()));
    assert_eq!((l.partition, l.offset), (0, 100));
    assert_eq!(es.count(&index).await, 2, "the other spans are stored");
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn acknowledged_only_after_elasticsearch_confirms() {
    let p = prefix("ack");
    let mut cfg = config();
    cfg.bulk.linger = Duration::from_secs(60);
    let (sink, _) = start(&cfg, &p).await;
    let trace = [0x9a; 16];
    let refs = otlp_refs(
        resource("a"),
        scope(),
        vec![simple_span(trace, 1, "op", "2024-04-01T10:00:00Z")],
    );
    let (ack, mut acks) = ack_channel(5, 1);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let es = Es::new();
    let index = format!("{p}jaeger-span-2024-04-01");
    assert!(
        acks.try_recv().is_err(),
        "not acknowledged while still batched"
    );
    assert_eq!(es.count(&index).await, 0);

    sink.flush().await;
    let resolved = acks
        .try_recv()
        .expect("acknowledged after the bulk response");
    assert_eq!(resolved.offsets, vec![(5, 1)]);
    assert_eq!(es.count(&index).await, 1, "and the document is there");
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn service_documents_once_per_day_service_and_operation() {
    let p = prefix("services");
    let (sink, _) = start(&config(), &p).await;
    let trace = [0xab; 16];
    let day = "2024-06-01T08:00:00Z";
    let refs = otlp_refs(
        resource("shop"),
        scope(),
        vec![
            simple_span(trace, 1, "list", day),
            simple_span(trace, 2, "list", day),
            simple_span(trace, 3, "buy", day),
        ],
    );
    let (ack, _a) = ack_channel(1, 3);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    let other = [0xac; 16];
    let refs = otlp_refs(
        resource("shop"),
        scope(),
        vec![simple_span(other, 4, "list", day)],
    );
    let (ack, _b) = ack_channel(2, 1);
    sink.submit(kept(TraceId(other), refs, ack)).await;
    sink.flush().await;

    let hits = Es::new()
        .docs(
            &format!("{p}jaeger-service-2024-06-01"),
            json!({"match_all": {}}),
        )
        .await;
    let mut got: Vec<(String, String, u64)> = hits
        .iter()
        .map(|h| {
            (
                h["_id"].as_str().unwrap().to_string(),
                h["_source"]["operationName"].as_str().unwrap().to_string(),
                h["_version"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (
            format!("{:x}", service_doc_id("shop", "buy")),
            "buy".to_string(),
            1,
        ),
        (
            format!("{:x}", service_doc_id("shop", "list")),
            "list".to_string(),
            1,
        ),
    ];
    want.sort();
    assert_eq!(got, want, "one document each, written once (version 1)");
    assert_eq!(hits[0]["_source"]["serviceName"], "shop");
    Es::new().cleanup(&p).await;
}

/// Starts a sink with `cfg`, writes one single-span trace dated `day`,
/// flushes, and checks that the trace was acknowledged.
async fn write_one_span(cfg: &ElasticsearchConfig, p: &str, id: u8, day: &str) {
    let (sink, _) = start(cfg, p).await;
    let trace = [id; 16];
    let refs = otlp_refs(
        resource("one"),
        scope(),
        vec![simple_span(trace, 1, "op", &format!("{day}T00:00:00Z"))],
    );
    let (ack, mut acks) = ack_channel(1, 1);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    sink.flush().await;
    assert!(acks.try_recv().is_ok(), "trace not acknowledged");
}

#[tokio::test]
async fn gzip_compressed_bulk_requests() {
    let p = prefix("gzip");
    let cfg = ElasticsearchConfig {
        gzip: true,
        ..config()
    };
    write_one_span(&cfg, &p, 0xde, "2024-10-01").await;
    assert_eq!(
        Es::new().count(&format!("{p}jaeger-span-2024-10-01")).await,
        1
    );
    Es::new().cleanup(&p).await;
}

#[tokio::test]
async fn alias_mode_writes_through_the_write_aliases() {
    let p = prefix("alias");
    let cfg = ElasticsearchConfig {
        use_aliases: true,
        ..config()
    };
    write_one_span(&cfg, &p, 0xbc, "2024-07-01").await;
    let es = Es::new();
    assert_eq!(es.count(&format!("{p}jaeger-span-000001")).await, 1);
    assert_eq!(es.count(&format!("{p}jaeger-span-read")).await, 1);
    assert_eq!(es.count(&format!("{p}jaeger-service-read")).await, 1);
    // A restart finds the aliases and keeps them.
    drop(start(&cfg, &p).await);
    assert_eq!(es.count(&format!("{p}jaeger-span-write")).await, 1);
    es.cleanup(&p).await;
}

/// A TCP relay to the real Elasticsearch that can refuse service: while
/// down it drops every connection at once, as a crashed node would.
struct Relay {
    url: String,
    up: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let target = url::Url::parse(&es_url()).unwrap();
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port_or_known_default().unwrap()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (up2, refused2) = (up.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    refused2.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { url, up, refused }
    }
}

#[tokio::test]
async fn connection_errors_are_retried_until_elasticsearch_is_back() {
    use std::sync::atomic::Ordering;
    let p = prefix("outage");
    let relay = Relay::start().await;
    let mut cfg = config();
    cfg.urls = vec![relay.url.clone()];
    cfg.create_templates = false;
    cfg.bulk.initial_backoff = Duration::from_millis(20);
    cfg.bulk.max_backoff = Duration::from_millis(100);
    let (sink, dead) = start(&cfg, &p).await;
    assert!(
        !sink.ping().await,
        "not ready while Elasticsearch is unreachable"
    );

    let trace = [0xcd; 16];
    let refs = otlp_refs(
        resource("o"),
        scope(),
        vec![simple_span(trace, 1, "op", "2024-08-01T00:00:00Z")],
    );
    let (ack, mut acks) = ack_channel(1, 1);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    let drained = tokio::time::timeout(Duration::from_millis(800), sink.flush()).await;
    assert!(
        drained.is_err(),
        "nothing can be confirmed during the outage"
    );
    assert!(acks.try_recv().is_err());
    assert!(
        relay.refused.load(Ordering::SeqCst) >= 3,
        "retried with backoff"
    );

    relay.up.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), sink.flush())
        .await
        .expect("drains once Elasticsearch is back");
    assert!(acks.try_recv().is_ok());
    assert!(sink.ping().await);
    assert!(dead.letters().is_empty(), "an outage is not a rejection");
    assert_eq!(
        Es::new().count(&format!("{p}jaeger-span-2024-08-01")).await,
        1
    );
    Es::new().cleanup(&p).await;
}

/// tailsift's writer (decode, convert, batch, per-item checks, acks) against
/// a bare loader that only POSTs pre-built bulk bodies of the same documents
/// with the same request size and concurrency. Run it with
/// `cargo test --features integration --test elasticsearch_sink -- --ignored --nocapture bulk_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark, prints a table"]
async fn bulk_throughput_vs_bare_loader() {
    use futures::StreamExt;
    use std::time::Instant;
    use tailsift::decode::OtlpSpan;
    use tailsift::sink::document::{DocOptions, Sampling, otlp_document};

    let traces: usize = std::env::var("BENCH_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    const SPANS: u8 = 10;
    let cfg = config();
    let trace_spans = |t: usize| -> ([u8; 16], Vec<Span>) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(t as u64 + 1).to_be_bytes());
        let spans = (1..=SPANS)
            .map(|i| {
                let mut s = simple_span(id, i, "GET /api/items", "2024-09-09T09:09:09Z");
                s.attributes = (0..10)
                    .map(|a| attr(&format!("attr.{a}"), s_val(&format!("value-{a}-{t}"))))
                    .collect();
                s
            })
            .collect();
        (id, spans)
    };
    fn s_val(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    // tailsift
    let p_sink = prefix("bench-sink");
    let (sink, _) = start(&cfg, &p_sink).await;
    let inputs: Vec<_> = (0..traces)
        .map(|t| {
            let (id, spans) = trace_spans(t);
            (id, otlp_refs(resource("bench"), scope(), spans))
        })
        .collect();
    let started = Instant::now();
    for (id, refs) in inputs {
        let (ack, _rx) = ack_channel(1, u32::from(SPANS));
        sink.submit(kept(TraceId(id), refs, ack)).await;
    }
    // Submitting includes decoding and converting every span (the CPU part;
    // slow in a debug build).
    let submit_secs = started.elapsed().as_secs_f64();
    sink.flush().await;
    let sink_secs = started.elapsed().as_secs_f64();

    // bare loader: same documents, bodies built before the clock starts
    let p_bare = prefix("bench-bare");
    drop(start(&cfg, &p_bare).await);
    let sampling = Sampling {
        policy: "errors",
        rate: 1.0,
        would_drop: false,
    };
    let max = cfg.bulk.max_bytes.as_u64() as usize;
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
    let mut in_body = 0usize;
    for t in 0..traces {
        let (_, spans) = trace_spans(t);
        for span in spans {
            let s = OtlpSpan {
                span,
                scope: Some(scope()),
                resource: Some(resource("bench")),
            };
            let mut body = Vec::new();
            let meta = otlp_document(&s, &DocOptions::default(), &sampling, &mut body).unwrap();
            let line = format!(
                "{{\"index\":{{\"_index\":\"{p_bare}jaeger-span-2024-09-09\",\"_id\":\"{}_{}\"}}}}\n",
                meta.trace_id.as_str(),
                meta.span_id.as_str()
            );
            let current = bodies.last_mut().unwrap();
            if current.len() + line.len() + body.len() > max || in_body == cfg.bulk.max_docs {
                bodies.push(Vec::new());
                in_body = 0;
            }
            let current = bodies.last_mut().unwrap();
            current.extend_from_slice(line.as_bytes());
            current.extend_from_slice(&body);
            current.push(b'\n');
            in_body += 1;
        }
    }
    let client = tailsift::sink::elasticsearch::EsClient::new(&cfg).unwrap();
    let started = Instant::now();
    let replies: Vec<_> =
        futures::stream::iter(bodies.into_iter().map(|b| client.bulk(Bytes::from(b))))
            .buffer_unordered(cfg.bulk.concurrency)
            .collect()
            .await;
    let bare_secs = started.elapsed().as_secs_f64();
    for r in replies {
        let r = r.unwrap();
        assert!(r.status.is_success());
        assert!(
            !String::from_utf8_lossy(&r.body[..200.min(r.body.len())]).contains("\"errors\":true")
        );
    }

    let es = Es::new();
    let spans = traces * usize::from(SPANS);
    assert_eq!(
        es.count(&format!("{p_sink}jaeger-span-*")).await.min(100),
        spans.min(100)
    );
    let (sink_rate, bare_rate) = (spans as f64 / sink_secs, spans as f64 / bare_secs);
    println!("\n| loader    | spans | seconds | spans/s |");
    println!("|-----------|-------|---------|---------|");
    println!("| tailsift  | {spans} | {sink_secs:.2} | {sink_rate:.0} |");
    println!("| bare bulk | {spans} | {bare_secs:.2} | {bare_rate:.0} |");
    println!("tailsift / bare = {:.0}%", 100.0 * sink_rate / bare_rate);
    println!("tailsift spent {submit_secs:.2} s submitting (decode + convert + queue)");
    es.cleanup(&p_sink).await;
    es.cleanup(&p_bare).await;
}

/// The shipped redaction rules (config/tailsift.yaml) in the real
/// Elasticsearch: secret headers are gone, and what the value rules find
/// inside values is hashed or replaced while the rest of each value stays.
#[tokio::test]
async fn shipped_redaction_rules_scrub_stored_values() {
    let p = prefix("redact");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tailsift.yaml");
    let shipped = tailsift::config::Config::load(&shipped).expect("shipped config");
    let cfg = ElasticsearchConfig {
        redaction: shipped.elasticsearch.redaction,
        ..config()
    };
    let (sink, _) = start(&cfg, &p).await;
    let trace = [0x5c; 16];
    let mut span = simple_span(trace, 1, "POST /checkout", "2024-05-06T07:08:09Z");
    span.attributes = vec![
        attr(
            "http.request.header.authorization",
            s("Bearer abcdefgh12345678"),
        ),
        attr(
            "enduser.note",
            s("mail ann@example.org card 4111 1111 1111 1111 order 4111111111111112"),
        ),
        attr("upstream.auth", s("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")),
    ];
    span.events = vec![Event {
        time_unix_nano: span.start_time_unix_nano + 1_000,
        name: "lookup".into(),
        attributes: vec![attr("customer", s("ssn 123-45-6789, not 2024-01-1234"))],
        ..Default::default()
    }];
    let (ack, mut acks) = ack_channel(7, 1);
    let refs = otlp_refs(resource("checkout"), scope(), vec![span]);
    sink.submit(kept(TraceId(trace), refs, ack)).await;
    sink.flush().await;
    assert!(acks.try_recv().is_ok(), "acknowledged after flush");

    let hits = Es::new()
        .docs(
            &format!("{p}jaeger-span-2024-05-06"),
            json!({"term": {"traceID": trace_hex(trace)}}),
        )
        .await;
    assert_eq!(hits.len(), 1);
    let source = &hits[0]["_source"];
    let tags = source["tags"].as_array().expect("tags");
    let value = |key: &str| {
        tags.iter()
            .find(|t| t["key"] == key)
            .and_then(|t| t["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        value("http.request.header.authorization"),
        None,
        "deleted by key"
    );
    let note = value("enduser.note").expect("enduser.note kept");
    let hashed = note
        .strip_prefix("mail sha256:")
        .and_then(|rest| rest.split_once(' '))
        .map(|(hash, rest)| (hash.len(), rest.to_string()));
    assert_eq!(
        hashed,
        Some((
            64,
            "card [redacted:card_number] order 4111111111111112".into()
        )),
        "{note}"
    );
    assert_eq!(
        value("upstream.auth").as_deref(),
        Some("[redacted:bearer_token]")
    );
    let fields = &source["logs"][0]["fields"];
    assert_eq!(
        fields[1],
        tag("customer", "string", "ssn [redacted:ssn], not 2024-01-1234")
    );
    let stored = source.to_string();
    for secret in [
        "ann@example.org",
        "4111 1111",
        "123-45-6789",
        "eyJhbGci",
        "abcdefgh",
    ] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
    }
    Es::new().cleanup(&p).await;
}
