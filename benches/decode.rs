//! Scan (zero-copy) vs full prost decode, in spans per second.
//!
//! Messages are what real producers write: an OTLP `ExportTraceServiceRequest`
//! of 50 spans with 10 attributes each (the Collector kafka exporter), and
//! one Jaeger span per message (the Jaeger collector). Run with
//! `cargo bench --bench decode`.
//!
//! Before measuring, the bench checks that a warm scan allocates nothing:
//! the scan path must not allocate per span.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tailsift::config::EncodingSetting;
use tailsift::decode::{Decoder, decode_span, fixtures, jaeger};
use tailsift::model::{AttributeKeys, Payload, ScanBatch, SpanRef};

/// Counts allocations so the bench can prove the scan allocates nothing.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwards the caller's contract to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SPANS: usize = 50;

/// Keys a typical policy set reads.
fn keys() -> AttributeKeys {
    AttributeKeys::new([
        "http.response.status_code",
        "http.route",
        "deployment.environment",
    ])
}

fn otlp_specs() -> Vec<fixtures::SpanSpec> {
    fixtures::trace_spans([0x4b; 16], SPANS, fixtures::DEFAULT_START_UNIX_NANO)
}

fn assert_scan_allocates_nothing(decoder: &Decoder, raw: &Bytes, what: &str) {
    let mut batch = ScanBatch::default();
    decoder
        .scan(raw.clone(), None, &mut batch)
        .expect("warm-up scan");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        decoder.scan(raw.clone(), None, &mut batch).expect("scan");
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("allocations in 1000 warm scans of the {what} message: {allocations}");
    assert_eq!(allocations, 0, "the scan path must not allocate");
}

fn otlp(c: &mut Criterion) {
    let specs = otlp_specs();
    let proto = Bytes::from(fixtures::otlp_proto(&specs));
    let json = Bytes::from(fixtures::otlp_json(&specs));
    println!(
        "OTLP message: {SPANS} spans x 10 attributes, {} bytes protobuf, {} bytes JSON",
        proto.len(),
        json.len()
    );
    let decoder = Decoder::new(EncodingSetting::OtlpProto, keys(), 16 << 20);
    assert_scan_allocates_nothing(&decoder, &proto, "OTLP");

    let mut group = c.benchmark_group("otlp");
    group.throughput(Throughput::Elements(SPANS as u64));
    let mut batch = ScanBatch::default();
    group.bench_function("proto_scan", |b| {
        b.iter(|| decoder.scan(black_box(proto.clone()), None, &mut batch))
    });
    group.bench_function("proto_full_prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&proto[..])))
    });
    let json_decoder = Decoder::new(EncodingSetting::OtlpJson, keys(), 16 << 20);
    group.bench_function("json_normalize_and_scan", |b| {
        b.iter(|| json_decoder.scan(black_box(json.clone()), None, &mut batch))
    });
    group.finish();
}

fn jaeger_spans(c: &mut Criterion) {
    let spec = &otlp_specs()[1];
    let proto = Bytes::from(fixtures::jaeger_proto(spec));
    println!("Jaeger message: 1 span, {} bytes protobuf", proto.len());
    let decoder = Decoder::new(EncodingSetting::JaegerProto, keys(), 16 << 20);
    assert_scan_allocates_nothing(&decoder, &proto, "Jaeger");

    let mut group = c.benchmark_group("jaeger");
    group.throughput(Throughput::Elements(1));
    let mut batch = ScanBatch::default();
    group.bench_function("proto_scan", |b| {
        b.iter(|| decoder.scan(black_box(proto.clone()), None, &mut batch))
    });
    group.bench_function("proto_full_prost_decode", |b| {
        b.iter(|| jaeger::Span::decode(black_box(&proto[..])))
    });
    group.finish();
}

/// One span of a kept trace, decoded from its scanned layout.
fn full_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_span");
    group.throughput(Throughput::Elements(1));
    let cases = [
        (
            "otlp",
            EncodingSetting::OtlpProto,
            fixtures::otlp_proto(&otlp_specs()),
        ),
        (
            "jaeger",
            EncodingSetting::JaegerProto,
            fixtures::jaeger_proto(&otlp_specs()[1]),
        ),
    ];
    for (name, setting, raw) in cases {
        let decoder = Decoder::new(setting, keys(), 16 << 20);
        let mut batch = ScanBatch::default();
        let n = decoder.scan(raw.into(), None, &mut batch).expect("scan");
        let span = SpanRef {
            payload: Arc::new(Payload {
                bytes: n.bytes,
                format: n.format,
                partition: 0,
                offset: 0,
                times: tailsift::span_time::TimeBounds::UNBOUNDED,
            }),
            layout: batch.spans[batch.spans.len() / 2].layout,
        };
        group.bench_function(name, |b| b.iter(|| decode_span(black_box(&span))));
    }
    group.finish();
}

criterion_group!(benches, otlp, jaeger_spans, full_decode);
criterion_main!(benches);
