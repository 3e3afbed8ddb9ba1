//! Jaeger documents serialized per second: an OTLP span with 10 attributes
//! and an event, and a Jaeger span with tags, a log and references. The
//! output buffer is reused across iterations, as the sink does per trace;
//! before measuring, a counting allocator checks that writing a document
//! into a warm buffer allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use tailsift::decode::{OtlpSpan, jaeger};
use tailsift::sink::document::{DocOptions, Sampling, jaeger_document, otlp_document};

/// Counts allocations so the bench can prove documents need none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `write` once to warm the buffer, then asserts a second run does
/// not allocate.
fn assert_allocation_free(name: &str, mut write: impl FnMut()) {
    write();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    write();
    let n = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(n, 0, "{name}: {n} allocations per document");
}

fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn otlp_span() -> OtlpSpan {
    let attributes = vec![
        attr("http.method", Value::StringValue("GET".into())),
        attr("http.route", Value::StringValue("/api/v1/cart/{id}".into())),
        attr("http.status_code", Value::IntValue(200)),
        attr(
            "http.url",
            Value::StringValue("https://shop.example.com/api/v1/cart/42".into()),
        ),
        attr("net.peer.name", Value::StringValue("10.0.12.7".into())),
        attr("net.peer.port", Value::IntValue(48210)),
        attr(
            "user_agent.original",
            Value::StringValue("okhttp/4.12.0".into()),
        ),
        attr("cache.hit", Value::BoolValue(true)),
        attr("db.rows", Value::IntValue(17)),
        attr("load", Value::DoubleValue(0.734)),
    ];
    OtlpSpan {
        span: Span {
            trace_id: vec![0x5a; 16],
            span_id: vec![0x11; 8],
            parent_span_id: vec![0x22; 8],
            name: "GET /api/v1/cart/{id}".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_714_979_289_123_456_789,
            end_time_unix_nano: 1_714_979_289_125_456_789,
            attributes,
            events: vec![Event {
                time_unix_nano: 1_714_979_289_124_000_000,
                name: "cache.lookup".into(),
                attributes: vec![attr("cache.key", Value::StringValue("cart:42".into()))],
                ..Default::default()
            }],
            status: Some(Status {
                message: String::new(),
                code: StatusCode::Ok as i32,
            }),
            ..Default::default()
        },
        scope: Some(InstrumentationScope {
            name: "io.opentelemetry.okhttp-3.0".into(),
            version: "2.3.0".into(),
            ..Default::default()
        }),
        resource: Some(Resource {
            attributes: vec![
                attr("service.name", Value::StringValue("cart".into())),
                attr("host.name", Value::StringValue("cart-7d9f8-x2x".into())),
                attr("telemetry.sdk.language", Value::StringValue("java".into())),
            ],
            ..Default::default()
        }),
    }
}

fn jaeger_span() -> jaeger::Span {
    let tag = |key: &str, v_type: i32| jaeger::KeyValue {
        key: key.into(),
        v_type,
        ..Default::default()
    };
    jaeger::Span {
        trace_id: vec![0x5a; 16],
        span_id: vec![0x11; 8],
        operation_name: "HTTP GET /cart".into(),
        references: vec![jaeger::SpanRef {
            trace_id: vec![0x5a; 16],
            span_id: vec![0x22; 8],
            ref_type: 0,
        }],
        flags: 1,
        start_time: Some(pbjson_types::Timestamp {
            seconds: 1_714_979_289,
            nanos: 123_456_789,
        }),
        duration: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 2_000_000,
        }),
        tags: vec![
            jaeger::KeyValue {
                v_str: "server".into(),
                ..tag("span.kind", 0)
            },
            jaeger::KeyValue {
                v_int64: 200,
                ..tag("http.status_code", 2)
            },
            jaeger::KeyValue {
                v_str: "https://shop.example.com/cart".into(),
                ..tag("http.url", 0)
            },
            jaeger::KeyValue {
                v_bool: false,
                ..tag("error", 1)
            },
            jaeger::KeyValue {
                v_float64: 0.25,
                ..tag("sampler.param", 3)
            },
        ],
        logs: vec![jaeger::Log {
            timestamp: Some(pbjson_types::Timestamp {
                seconds: 1_714_979_289,
                nanos: 124_000_000,
            }),
            fields: vec![jaeger::KeyValue {
                v_str: "cache miss".into(),
                ..tag("event", 0)
            }],
        }],
        process: Some(jaeger::Process {
            service_name: "cart".into(),
            tags: vec![jaeger::KeyValue {
                v_str: "Go-2.30.0".into(),
                ..tag("jaeger.version", 0)
            }],
        }),
        ..Default::default()
    }
}

fn documents(c: &mut Criterion) {
    let opts = DocOptions::default();
    let sampling = Sampling {
        policy: "baseline",
        rate: 10.0,
        would_drop: false,
    };
    let mut group = c.benchmark_group("document");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(4096);

    let otlp = otlp_span();
    let jaeger = jaeger_span();
    assert_allocation_free("otlp", || {
        buf.clear();
        black_box(otlp_document(&otlp, &opts, &sampling, &mut buf).is_ok());
    });
    assert_allocation_free("jaeger", || {
        buf.clear();
        black_box(jaeger_document(&jaeger, &opts, &sampling, &mut buf).is_ok());
    });
    group.bench_function("otlp_10_attrs_1_event", |b| {
        b.iter(|| {
            buf.clear();
            black_box(otlp_document(black_box(&otlp), &opts, &sampling, &mut buf).is_ok());
        })
    });
    group.bench_function("jaeger_5_tags_1_log", |b| {
        b.iter(|| {
            buf.clear();
            black_box(jaeger_document(black_box(&jaeger), &opts, &sampling, &mut buf).is_ok());
        })
    });
    group.finish();
}

criterion_group!(benches, documents);
criterion_main!(benches);
