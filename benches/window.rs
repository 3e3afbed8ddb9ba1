//! Trace window throughput: scan a realistic OTLP message, insert its spans
//! into a partition's window (policy observe included), then expire the
//! traces (decide) — the per-span work of the sampling hot path minus Kafka.
//! Elements are spans.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tailsift::config::EncodingSetting;
use tailsift::decode::Decoder;
use tailsift::dependencies::{Dependencies, DependenciesConfig};
use tailsift::loadgen::encode;
use tailsift::loadgen::generator::{Profile, TraceGenerator};
use tailsift::model::{Payload, ScanBatch, SpanRef, SpanView, TraceId};
use tailsift::policy::PolicyEngine;
use tailsift::span_metrics::{SpanMetrics, SpanMetricsConfig};
use tailsift::window::{Decided, DecisionCache, Occupancy, TraceWindow, WindowConfig};

const DEFAULT_POLICIES: &str = r#"[
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
]"#;

/// 200 traces, one OTLP message each, as the kafka exporter keyed by trace ID writes them.
fn messages() -> Vec<Bytes> {
    let mut g = TraceGenerator::new(Profile::default(), 11);
    (0..200)
        .map(|_| {
            let t = g.trace(1_700_000_000_000_000_000);
            let spans: Vec<_> = t.spans.iter().map(|s| (t.trace_id, s)).collect();
            Bytes::from(encode::otlp(&spans, false))
        })
        .collect()
}

fn window(engine: &Arc<PolicyEngine>) -> TraceWindow {
    let cfg = WindowConfig {
        decision_wait: Duration::from_secs(10),
        root_idle: Duration::from_secs(2),
        max_spans_per_trace: 10_000,
        max_bytes_per_trace: 1 << 24,
        dry_run: false,
        tracked_bytes_per_span: 0,
    };
    TraceWindow::new(
        cfg,
        engine.clone(),
        Arc::new(DecisionCache::new(100_000, 1_000_000)),
        Arc::new(Occupancy::default()),
    )
}

/// Scans every message into a fresh window (`per_span` sees each span
/// too), then decides every trace.
fn scan_insert_decide(
    engine: &Arc<PolicyEngine>,
    decoder: &Decoder,
    msgs: &[Bytes],
    batch: &mut ScanBatch,
    mut per_span: impl FnMut(&SpanView<'_>),
) -> Vec<Decided> {
    let mut w = window(engine);
    let now = Instant::now();
    for (offset, m) in msgs.iter().enumerate() {
        let n = decoder.scan(m.clone(), None, batch).expect("scan");
        let payload = Arc::new(Payload {
            bytes: n.bytes,
            format: n.format,
            partition: 0,
            offset: offset as i64,
            times: tailsift::span_time::TimeBounds::UNBOUNDED,
        });
        for i in 0..batch.spans.len() {
            let span = &batch.spans[i];
            let r = SpanRef {
                payload: payload.clone(),
                layout: span.layout,
            };
            let view = batch.view(i, &payload.bytes);
            per_span(&view);
            black_box(w.insert(span, &view, r, now, batch.spans.len()));
        }
    }
    w.expire(now + Duration::from_secs(11))
}

fn insert_and_decide(c: &mut Criterion) {
    let policies: Vec<serde_json::Value> = serde_json::from_str(DEFAULT_POLICIES).expect("json");
    let engine = Arc::new(PolicyEngine::from_config(&policies).expect("policies"));
    let decoder = Decoder::new(EncodingSetting::OtlpProto, engine.attribute_keys(), 1 << 24);
    let msgs = messages();
    let mut batch = ScanBatch::default();
    let spans: usize = msgs
        .iter()
        .map(|m| {
            decoder.scan(m.clone(), None, &mut batch).expect("scan");
            batch.spans.len()
        })
        .sum();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("scan+insert+decide", |b| {
        b.iter(|| black_box(scan_insert_decide(&engine, &decoder, &msgs, &mut batch, |_| {}).len()))
    });
    // The same with what span metrics and dependency links add per span:
    // their observe on every span, edges at every decision, the merges of
    // a tick. The difference is their cost (target: at most 15% of the
    // null-sink CPU per span, checked end to end by benches/e2e).
    let red = Arc::new(SpanMetrics::new(&SpanMetricsConfig::default()));
    let deps = Dependencies::new(&DependenciesConfig::default());
    // A partition's maps live as long as its assignment: kept across
    // iterations. A merge per iteration (1,578 spans) is far more often than
    // the service's tick (100 ms).
    let (mut local, mut links) = (red.local(), deps.partition("t", 0));
    group.bench_function("scan+insert+decide+span-metrics+dependencies", |b| {
        b.iter(|| {
            let decided = scan_insert_decide(&engine, &decoder, &msgs, &mut batch, |view| {
                local.observe(view);
                links.observe(view, 8);
            });
            for d in &decided {
                black_box(links.decided(&d.trace_id, 0));
            }
            local.flush();
            black_box(links.tick());
            black_box(decided.len())
        })
    });
    group.finish();
}

/// 50,000 single-span traces whose IDs are random, sequential 64-bit
/// (what counter-style generators make), or crafted to differ only in the
/// bytes a weak hash ignores: the keyed map hashing keeps all three within
/// a small factor of each other (issue: crafted IDs must not make a
/// partition's window quadratic).
fn trace_id_shapes(c: &mut Criterion) {
    const TRACES: u64 = 50_000;
    let policies: Vec<serde_json::Value> = serde_json::from_str(DEFAULT_POLICIES).expect("json");
    let engine = Arc::new(PolicyEngine::from_config(&policies).expect("policies"));
    let decoder = Decoder::new(EncodingSetting::OtlpProto, engine.attribute_keys(), 1 << 24);
    let msg = messages().remove(0);
    let mut batch = ScanBatch::default();
    let n = decoder.scan(msg, None, &mut batch).expect("scan");
    let payload = Arc::new(Payload {
        bytes: n.bytes,
        format: n.format,
        partition: 0,
        offset: 0,
        times: tailsift::span_time::TimeBounds::UNBOUNDED,
    });
    type Shape = (&'static str, fn(u64) -> TraceId);
    let shapes: [Shape; 3] = [
        ("random", |i| {
            TraceId(
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) as u128 * 0xD6E8_FEB8_6659_FD93u128)
                    .to_be_bytes(),
            )
        }),
        ("sequential-64bit", |i| TraceId((i as u128).to_be_bytes())),
        ("crafted", |i| {
            let mut b = [0u8; 16];
            b[4..8].copy_from_slice(&(i as u32).to_be_bytes());
            b[12..16].copy_from_slice(&((i >> 32) as u32 | 1).to_be_bytes());
            TraceId(b)
        }),
    ];
    let mut group = c.benchmark_group("window-trace-ids");
    group.throughput(Throughput::Elements(TRACES));
    for (name, id) in shapes {
        let ids: Vec<TraceId> = (0..TRACES).map(id).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut w = window(&engine);
                let now = Instant::now();
                let view = batch.view(0, &payload.bytes);
                for id in &ids {
                    let mut span = batch.spans[0].clone();
                    span.trace_id = *id;
                    let r = SpanRef {
                        payload: payload.clone(),
                        layout: span.layout,
                    };
                    black_box(w.insert(&span, &view, r, now, 1));
                }
                black_box(w.expire(now + Duration::from_secs(11)).len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, insert_and_decide, trace_id_shapes);
criterion_main!(benches);
