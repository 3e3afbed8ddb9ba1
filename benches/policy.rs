//! Policy evaluation throughput: `observe` every span of a trace, then
//! `decide` it, for the shipped default policy set and for a heavier set
//! (regex string_attribute, and, throughput), and for `ottl_condition`
//! policies next to the string_attribute / numeric_attribute policies
//! they are equivalent to (the target: at most 2× their cost per span).
//! Elements are spans.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tailsift::model::{
    ByteRange, RawValue, ScanBatch, ScannedAttr, ScannedSpan, SpanId, SpanStatus, TraceId,
    TraceSummary,
};
use tailsift::policy::PolicyEngine;

const TRACES: usize = 1000;
const SPANS_PER_TRACE: usize = 10;

const DEFAULT_POLICIES: &str = "
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- {name: slow, type: latency, latency: {threshold_ms: 1000}}
- {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";

const RICH_POLICIES: &str = "
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- name: api-v2
  type: string_attribute
  string_attribute: {key: http.route, values: ['^/api/v2/', 'admin'], enabled_regex_matching: true}
- name: slow-checkout
  type: and
  and:
    and_sub_policy:
      - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
      - {name: slow, type: latency, latency: {threshold_ms: 500}}
- name: per-route
  type: throughput
  throughput: {goal_traces_per_second: 100, key_attributes: [service.name, http.route]}
";

/// Pairs of equivalent policies: (name, attribute policy, OTTL policy).
const EQUIVALENT: [(&str, &str, &str); 2] = [
    (
        "string",
        "- {name: p, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}",
        r#"- {name: p, type: ottl_condition, ottl_condition: {span: ['attributes["http.route"] == "/health"']}}"#,
    ),
    (
        "numeric",
        "- {name: p, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}",
        r#"- {name: p, type: ottl_condition, ottl_condition: {span: ['attributes["http.status_code"] >= 500 and attributes["http.status_code"] <= 599']}}"#,
    ),
];

const SERVICES: [&str; 3] = ["checkout", "cart", "frontend"];
const ROUTES: [&str; 5] = [
    "/api/v1/users/{id}",
    "/api/v1/orders",
    "/health",
    "/api/v2/cart",
    "/static/app.js",
];

/// Pre-scanned traces over one shared byte buffer, as the decoder leaves them.
struct Corpus {
    traces: Vec<(TraceId, ScanBatch)>,
    bytes: Vec<u8>,
}

struct Strings {
    bytes: Vec<u8>,
}

impl Strings {
    fn put(&mut self, s: &str) -> ByteRange {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(s.as_bytes());
        ByteRange::new(start, self.bytes.len())
    }
}

/// SplitMix64, for reproducible IDs and shapes.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn corpus() -> Corpus {
    let mut s = Strings { bytes: Vec::new() };
    let route_key = s.put("http.route");
    let status_key = s.put("http.status_code");
    let service_key = s.put("service.name");
    let routes: Vec<ByteRange> = ROUTES.iter().map(|r| s.put(r)).collect();
    let services: Vec<ByteRange> = SERVICES.iter().map(|v| s.put(v)).collect();
    let mut rng = 1u64;
    let traces = (0..TRACES)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next(&mut rng).to_be_bytes());
            id[8..].copy_from_slice(&next(&mut rng).to_be_bytes());
            let trace_id = TraceId(id);
            let duration_ms = next(&mut rng) % 1500;
            let mut batch = ScanBatch::default();
            for i in 0..SPANS_PER_TRACE {
                let svc = next(&mut rng) as usize % services.len();
                let route = next(&mut rng) as usize % routes.len();
                let first = batch.attrs.len() as u32;
                batch.attrs.push(ScannedAttr {
                    key: route_key,
                    value: RawValue::Str(routes[route]),
                });
                let status = if next(&mut rng).is_multiple_of(50) {
                    503
                } else {
                    200
                };
                batch.attrs.push(ScannedAttr {
                    key: status_key,
                    value: RawValue::Int(status),
                });
                batch.attrs.push(ScannedAttr {
                    key: service_key,
                    value: RawValue::Str(services[svc]),
                });
                let error = next(&mut rng).is_multiple_of(100);
                batch.spans.push(ScannedSpan {
                    trace_id,
                    span_id: SpanId((i as u64 + 1).to_be_bytes()),
                    start_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
                    end_unix_nano: 1_700_000_000_000_000_000 + duration_ms * 1_000_000,
                    status: if error {
                        SpanStatus::Error
                    } else {
                        SpanStatus::Unset
                    },
                    service_name: services[svc],
                    span_attrs: (first, first + 2),
                    resource_attrs: (first + 2, first + 3),
                    ..ScannedSpan::default()
                });
            }
            (trace_id, batch)
        })
        .collect();
    Corpus {
        traces,
        bytes: s.bytes,
    }
}

fn engine(yaml: &str) -> PolicyEngine {
    let policies: Vec<serde_json::Value> =
        serde_yaml_ng::from_str(yaml).expect("bench policies parse");
    PolicyEngine::from_config(&policies).expect("bench policies compile")
}

/// Observes and decides every trace once; returns how many were kept.
fn run(engine: &PolicyEngine, corpus: &Corpus) -> usize {
    let now = Instant::now();
    let mut kept = 0;
    for (trace_id, batch) in &corpus.traces {
        let mut state = engine.new_state();
        let mut summary = TraceSummary::new(*trace_id);
        for i in 0..batch.spans.len() {
            let view = batch.view(i, &corpus.bytes);
            engine.observe(&mut state, &view);
            summary.observe(view.span, 300);
        }
        kept += usize::from(engine.decide(&summary, &state, now).keep);
    }
    kept
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    let mut group = c.benchmark_group("policy_observe_decide");
    group.throughput(Throughput::Elements((TRACES * SPANS_PER_TRACE) as u64));
    for (name, yaml) in [
        ("default", DEFAULT_POLICIES),
        ("regex_and_throughput", RICH_POLICIES),
    ] {
        let e = engine(yaml);
        group.bench_function(name, |b| b.iter(|| black_box(run(&e, &corpus))));
    }
    for (name, attribute, ottl) in EQUIVALENT {
        let (a, o) = (engine(attribute), engine(ottl));
        let kept = run(&a, &corpus);
        assert_eq!(kept, run(&o, &corpus), "{name}: the pair must decide alike");
        assert!(kept > 0 && kept < TRACES, "{name}: {kept} kept, not a test");
        group.bench_function(format!("{name}_attribute"), |b| {
            b.iter(|| black_box(run(&a, &corpus)))
        });
        group.bench_function(format!("{name}_ottl"), |b| {
            b.iter(|| black_box(run(&o, &corpus)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
