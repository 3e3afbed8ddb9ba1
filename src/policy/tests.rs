//! Engine tests: policies written as users write them (YAML), traces built
//! as scanned spans over a byte buffer.

use std::time::{Duration, Instant};

use super::rules::probabilistic_threshold;
use super::*;
use crate::model::{ByteRange, RawValue, ScanBatch, ScannedAttr, ScannedSpan, SpanId, SpanStatus};

// ---- harness ----------------------------------------------------------

fn engine(yaml: &str) -> PolicyEngine {
    let policies: Vec<serde_json::Value> = serde_yaml_ng::from_str(yaml).unwrap();
    PolicyEngine::from_config(&policies).unwrap_or_else(|e| panic!("{e}"))
}

fn error(yaml: &str) -> String {
    let policies: Vec<serde_json::Value> = serde_yaml_ng::from_str(yaml).unwrap();
    match PolicyEngine::from_config(&policies) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[derive(Clone)]
enum Val {
    S(&'static str),
    I(i64),
    B(bool),
    D(f64),
}

#[derive(Clone, Default)]
struct Span {
    status: SpanStatus,
    service: &'static str,
    trace_state: &'static str,
    attrs: Vec<(&'static str, Val)>,
    resource: Vec<(&'static str, Val)>,
    start_ms: u64,
    end_ms: u64,
    name: &'static str,
    flags: u32,
}

fn span() -> Span {
    Span {
        end_ms: 1,
        ..Span::default()
    }
}

impl Span {
    fn status(mut self, s: SpanStatus) -> Self {
        self.status = s;
        self
    }
    fn service(mut self, s: &'static str) -> Self {
        self.service = s;
        self
    }
    fn trace_state(mut self, s: &'static str) -> Self {
        self.trace_state = s;
        self
    }
    fn attr(mut self, k: &'static str, v: Val) -> Self {
        self.attrs.push((k, v));
        self
    }
    fn resource(mut self, k: &'static str, v: Val) -> Self {
        self.resource.push((k, v));
        self
    }
    fn name(mut self, n: &'static str) -> Self {
        self.name = n;
        self
    }
    fn flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
    fn time(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.start_ms = start_ms;
        self.end_ms = end_ms;
        self
    }
}

/// Lays a span's strings out in a buffer, as a scan of a message would.
struct Scanned {
    batch: ScanBatch,
    bytes: Vec<u8>,
}

impl Scanned {
    fn new(trace_id: TraceId, s: &Span) -> Self {
        let mut bytes = Vec::new();
        let mut put = |text: &str| {
            let start = bytes.len();
            bytes.extend_from_slice(text.as_bytes());
            ByteRange::new(start, bytes.len())
        };
        let mut attrs = Vec::new();
        let mut push = |list: &[(&str, Val)], attrs: &mut Vec<ScannedAttr>| {
            for (k, v) in list {
                let key = put(k);
                let value = match v {
                    Val::S(s) => RawValue::Str(put(s)),
                    Val::I(i) => RawValue::Int(*i),
                    Val::B(b) => RawValue::Bool(*b),
                    Val::D(d) => RawValue::Double(*d),
                };
                attrs.push(ScannedAttr { key, value });
            }
        };
        push(&s.attrs, &mut attrs);
        let span_end = attrs.len() as u32;
        push(&s.resource, &mut attrs);
        let service_name = put(s.service);
        let trace_state = put(s.trace_state);
        let name = put(s.name);
        let scanned = ScannedSpan {
            name,
            flags: s.flags,
            trace_id,
            span_id: SpanId([1; 8]),
            start_unix_nano: s.start_ms * 1_000_000,
            end_unix_nano: s.end_ms * 1_000_000,
            status: s.status,
            trace_state,
            service_name,
            span_attrs: (0, span_end),
            resource_attrs: (span_end, attrs.len() as u32),
            ..ScannedSpan::default()
        };
        Self {
            batch: ScanBatch {
                spans: vec![scanned],
                attrs,
                events: Vec::new(),
            },
            bytes,
        }
    }
}

fn decide_at(e: &PolicyEngine, id: TraceId, spans: &[Span], now: Instant) -> Decision {
    let mut state = e.new_state();
    let mut summary = TraceSummary::new(id);
    for s in spans {
        let scanned = Scanned::new(id, s);
        let view = scanned.batch.view(0, &scanned.bytes);
        e.observe(&mut state, &view);
        summary.observe(view.span, 100);
    }
    e.decide(&summary, &state, now)
}

fn decide(e: &PolicyEngine, spans: &[Span]) -> Decision {
    decide_at(e, TraceId([7; 16]), spans, Instant::now())
}

fn kept(e: &PolicyEngine, spans: &[Span]) -> bool {
    decide(e, spans).keep
}

/// SplitMix64: reproducible trace IDs without a dependency.
struct Ids(u64);

impl Ids {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn trace_id(&mut self) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        TraceId(id)
    }
}

// ---- basics -------------------------------------------------------------

#[test]
fn engine_is_shareable() {
    fn check<T: Send + Sync>() {}
    fn send<T: Send>() {}
    check::<PolicyEngine>();
    send::<TraceState>();
}

#[test]
fn empty_policy_list_keeps_everything_as_always() {
    let e = PolicyEngine::from_config(&[]).unwrap();
    assert_eq!(decide(&e, &[span()]), Decision::keep("always".into(), 1.0));
    assert_eq!(e.policy_names(), vec![Arc::<str>::from("always")]);
    assert!(e.attribute_keys().is_empty());
}

#[test]
fn always_sample() {
    let e = engine("- {name: all, type: always_sample}");
    assert_eq!(decide(&e, &[span()]), Decision::keep("all".into(), 1.0));
}

#[test]
fn nothing_sampled_drops_as_none() {
    let e = engine("- {name: slow, type: latency, latency: {threshold_ms: 100}}");
    assert_eq!(decide(&e, &[span()]), Decision::drop("none".into()));
}

#[test]
fn default_policy_set_from_the_shipped_config() {
    let e = engine(
        "
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- {name: slow, type: latency, latency: {threshold_ms: 1000}}
- {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 10}}
",
    );
    assert_eq!(
        e.policy_names(),
        ["errors", "slow", "baseline"]
            .map(Arc::<str>::from)
            .to_vec()
    );
    let d = decide(&e, &[span(), span().status(SpanStatus::Error)]);
    assert_eq!(d, Decision::keep("errors".into(), 1.0));
    let d = decide(&e, &[span().time(0, 400), span().time(300, 1500)]);
    assert_eq!(d, Decision::keep("slow".into(), 1.0));
}

// ---- latency, span_count ----------------------------------------------

#[test]
fn latency_uses_trace_duration_in_whole_ms() {
    let e = engine("- {name: slow, type: latency, latency: {threshold_ms: 1000}}");
    // Duration = latest end − earliest start, across spans.
    assert!(kept(&e, &[span().time(0, 600), span().time(500, 1000)]));
    assert!(!kept(&e, &[span().time(0, 600), span().time(500, 999)]));
}

#[test]
fn latency_with_upper_bound_is_exclusive_below() {
    let e = engine(
        "- {name: band, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 200}}",
    );
    assert!(!kept(&e, &[span().time(0, 100)]));
    assert!(kept(&e, &[span().time(0, 101)]));
    assert!(kept(&e, &[span().time(0, 200)]));
    assert!(!kept(&e, &[span().time(0, 201)]));
}

#[test]
fn span_count_bounds() {
    let e = engine("- {name: mid, type: span_count, span_count: {min_spans: 2, max_spans: 3}}");
    assert!(!kept(&e, &[span()]));
    assert!(kept(&e, &[span(), span()]));
    assert!(kept(&e, &[span(), span(), span()]));
    assert!(!kept(&e, &[span(), span(), span(), span()]));
    let open = engine("- {name: big, type: span_count, span_count: {min_spans: 2}}");
    assert!(kept(&open, &vec![span(); 50]));
}

// ---- status_code --------------------------------------------------------

#[test]
fn status_code_matches_any_span() {
    let e = engine("- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    assert!(!kept(&e, &[span(), span().status(SpanStatus::Ok)]));
    assert!(kept(
        &e,
        &[span(), span().status(SpanStatus::Error), span()]
    ));
    let ok = engine("- {name: ok, type: status_code, status_code: {status_codes: [OK, UNSET]}}");
    assert!(kept(&ok, &[span()]));
    assert!(!kept(&ok, &[span().status(SpanStatus::Error)]));
}

#[test]
fn status_error_also_follows_the_summary_error_flag() {
    // A Jaeger `error=true` tag reaches policies as an Error status; the
    // summary's flag counts too, should a span skip `observe`.
    let e = engine("- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    let mut summary = TraceSummary::new(TraceId([1; 16]));
    summary.span_count = 1;
    summary.error_seen = true;
    assert!(e.decide(&summary, &e.new_state(), Instant::now()).keep);
}

// ---- probabilistic ------------------------------------------------------

/// FNV-1a 64, written straight from the definition.
fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 14695981039346656037;
    for byte in data {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(1099511628211);
    }
    hash
}

#[test]
fn fnv_test_vectors() {
    assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    let id = TraceId([0xab; 16]);
    let mut input = b"default-hash-seed".to_vec();
    input.extend_from_slice(&id.0);
    assert_eq!(probabilistic_hash("default-hash-seed", &id), fnv1a(&input));
    // 64-bit IDs hash in their zero-extended 16-byte form.
    let short = TraceId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut input = b"s".to_vec();
    input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(probabilistic_hash("s", &short), fnv1a(&input));
}

#[test]
fn probabilistic_threshold_matches_the_definition() {
    assert_eq!(probabilistic_threshold(100.0), u64::MAX);
    assert_eq!(probabilistic_threshold(0.0), 0);
    // 0.5 × (2^64 − 1) = 2^63 − 0.5, truncated.
    assert_eq!(probabilistic_threshold(50.0), (1 << 63) - 1);
    for pct in [0.001, 1.0, 10.0, 33.3, 75.0, 99.999] {
        let simple = (pct / 100.0 * u64::MAX as f64) as u64;
        let exact = probabilistic_threshold(pct);
        // Same value up to f64 rounding of the simple formula.
        assert!(
            simple.abs_diff(exact) <= 1 << 12,
            "{pct}: {simple} vs {exact}"
        );
    }
}

#[test]
fn probabilistic_decisions_follow_fnv_threshold() {
    for (pct, salt_yaml, salt) in [
        (10.0, "", "default-hash-seed"),
        (37.5, ", hash_salt: layer-2", "layer-2"),
    ] {
        let e = engine(&format!(
            "- {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {pct}{salt_yaml}}}}}"
        ));
        let threshold = (pct / 100.0 * u64::MAX as f64) as u64;
        let mut ids = Ids(42);
        let n = 100_000;
        let mut sampled = 0;
        for _ in 0..n {
            let id = ids.trace_id();
            let mut input = salt.as_bytes().to_vec();
            input.extend_from_slice(&id.0);
            let expect = fnv1a(&input) <= threshold;
            let d = decide_at(&e, id, &[span()], Instant::now());
            assert_eq!(d.keep, expect, "{id}");
            if d.keep {
                assert_eq!(d.sample_rate, 100.0 / pct);
                sampled += 1;
            }
        }
        let share = sampled as f64 / n as f64 * 100.0;
        assert!((share - pct).abs() < 0.5, "{pct}%: got {share}%");
    }
}

#[test]
fn probabilistic_edges() {
    let all = engine("- {name: p, type: probabilistic, probabilistic: {sampling_percentage: 100}}");
    let none = engine("- {name: p, type: probabilistic, probabilistic: {sampling_percentage: 0}}");
    let mut ids = Ids(1);
    for _ in 0..1000 {
        let id = ids.trace_id();
        assert!(decide_at(&all, id, &[span()], Instant::now()).keep);
        assert!(!decide_at(&none, id, &[span()], Instant::now()).keep);
    }
}

// ---- attribute policies -------------------------------------------------

#[test]
fn string_attribute_exact_span_and_resource() {
    let e = engine(
        "- {name: s, type: string_attribute, string_attribute: {key: tenant, values: [acme, globex]}}",
    );
    assert!(kept(&e, &[span(), span().attr("tenant", Val::S("globex"))]));
    assert!(kept(&e, &[span().resource("tenant", Val::S("acme"))]));
    assert!(!kept(&e, &[span().attr("tenant", Val::S("acme-2"))]));
    assert!(!kept(&e, &[span().attr("other", Val::S("acme"))]));
    // Only string values count.
    assert!(!kept(&e, &[span().attr("tenant", Val::I(1))]));
}

#[test]
fn string_attribute_service_name_from_jaeger_process() {
    let e = engine(
        "- {name: s, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}",
    );
    assert!(kept(&e, &[span().service("checkout")]));
    assert!(kept(
        &e,
        &[span().resource("service.name", Val::S("checkout"))]
    ));
    assert!(!kept(&e, &[span().service("cart")]));
}

#[test]
fn string_attribute_regex_is_an_unanchored_search() {
    let e = engine(
        "
- name: api
  type: string_attribute
  string_attribute: {key: http.route, values: ['api/v[0-9]+', '^/health$'], enabled_regex_matching: true, cache_max_size: 10}
",
    );
    assert!(kept(
        &e,
        &[span().attr("http.route", Val::S("/x/api/v2/users"))]
    ));
    assert!(kept(&e, &[span().attr("http.route", Val::S("/health"))]));
    assert!(!kept(&e, &[span().attr("http.route", Val::S("/healthz"))]));
    assert!(!kept(&e, &[span().attr("http.route", Val::S("/api/vx"))]));
}

#[test]
fn string_attribute_invert_samples_when_no_span_matches() {
    let e = engine(
        "- {name: not-acme, type: string_attribute, string_attribute: {key: tenant, values: [acme], invert_match: true}}",
    );
    assert!(kept(&e, &[span()]), "key absent");
    assert!(kept(&e, &[span().attr("tenant", Val::S("globex"))]));
    assert!(!kept(
        &e,
        &[span(), span().resource("tenant", Val::S("acme"))]
    ));
}

#[test]
fn numeric_attribute_ranges() {
    let e = engine(
        "- {name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}",
    );
    assert!(kept(
        &e,
        &[span(), span().attr("http.status_code", Val::I(503))]
    ));
    assert!(kept(
        &e,
        &[span().resource("http.status_code", Val::I(500))]
    ));
    assert!(!kept(&e, &[span().attr("http.status_code", Val::I(404))]));
    assert!(!kept(&e, &[span().attr("http.status_code", Val::I(600))]));
    // Integers only.
    assert!(!kept(&e, &[span().attr("http.status_code", Val::D(503.0))]));
    assert!(!kept(&e, &[span().attr("http.status_code", Val::S("503"))]));

    // 0 leaves a side open, as in the collector.
    let min_only =
        engine("- {name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 10}}");
    assert!(kept(&min_only, &[span().attr("k", Val::I(i64::MAX))]));
    assert!(!kept(&min_only, &[span().attr("k", Val::I(9))]));
    let max_only =
        engine("- {name: n, type: numeric_attribute, numeric_attribute: {key: k, max_value: 10}}");
    assert!(kept(&max_only, &[span().attr("k", Val::I(-5))]));
    assert!(!kept(&max_only, &[span().attr("k", Val::I(11))]));
}

#[test]
fn numeric_attribute_invert() {
    let e = engine(
        "- {name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 1, max_value: 5, invert_match: true}}",
    );
    assert!(kept(&e, &[span().attr("k", Val::I(6))]));
    assert!(kept(&e, &[span()]));
    assert!(!kept(
        &e,
        &[span().attr("k", Val::I(6)), span().attr("k", Val::I(3))]
    ));
}

#[test]
fn boolean_attribute_and_invert() {
    let e = engine(
        "- {name: b, type: boolean_attribute, boolean_attribute: {key: cache.hit, value: false}}",
    );
    assert!(kept(&e, &[span().attr("cache.hit", Val::B(false))]));
    assert!(!kept(&e, &[span().attr("cache.hit", Val::B(true))]));
    assert!(!kept(&e, &[span().attr("cache.hit", Val::S("false"))]));
    assert!(!kept(&e, &[span()]));
    let inv = engine(
        "- {name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true, invert_match: true}}",
    );
    assert!(kept(&inv, &[span()]));
    assert!(!kept(&inv, &[span().resource("debug", Val::B(true))]));
}

#[test]
fn trace_state_values() {
    let e = engine(
        "- {name: t, type: trace_state, trace_state: {key: vendor, values: [gold, silver]}}",
    );
    assert!(kept(
        &e,
        &[span(), span().trace_state("ot=th:8,vendor=gold")]
    ));
    assert!(!kept(&e, &[span().trace_state("vendor=bronze")]));
    assert!(!kept(&e, &[span()]));
}

#[test]
fn attribute_keys_cover_every_policy() {
    let e = engine(
        "
- {name: s, type: string_attribute, string_attribute: {key: tenant, values: [a]}}
- name: both
  type: and
  and:
    and_sub_policy:
      - {name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500}}
      - name: inner
        type: not
        not: {not_sub_policy: {name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}}
- {name: tp, type: throughput, throughput: {goal_traces_per_second: 5, key_attributes: [service.name, http.route]}}
",
    );
    let keys: Vec<String> = e.attribute_keys().iter().map(String::from).collect();
    assert_eq!(
        keys,
        [
            "debug",
            "http.route",
            "http.status_code",
            "service.name",
            "tenant"
        ]
    );
}

#[test]
fn more_than_64_leaves() {
    let yaml: String = (0..70)
        .map(|i| format!("- {{name: p{i}, type: string_attribute, string_attribute: {{key: k{i}, values: [v]}}}}\n"))
        .collect();
    let e = engine(&yaml);
    for i in [0, 63, 64, 69] {
        let key: &'static str = format!("k{i}").leak();
        assert_eq!(
            decide(&e, &[span().attr(key, Val::S("v"))]).policy.as_ref(),
            format!("p{i}")
        );
    }
    assert!(!kept(&e, &[span().attr("k70", Val::S("v"))]));
}

// ---- composition and precedence ----------------------------------------

#[test]
fn and_requires_every_sub_policy() {
    let e = engine(
        "
- name: slow-checkout
  type: and
  and:
    and_sub_policy:
      - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
      - {name: slow, type: latency, latency: {threshold_ms: 500}}
",
    );
    assert!(kept(&e, &[span().service("checkout").time(0, 600)]));
    assert!(!kept(&e, &[span().service("checkout").time(0, 100)]));
    assert!(!kept(&e, &[span().service("cart").time(0, 600)]));
}

#[test]
fn and_rate_is_the_product_of_its_parts() {
    let e = engine(
        "
- name: half-of-errors
  type: and
  and:
    and_sub_policy:
      - {name: err, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
",
    );
    let mut ids = Ids(9);
    let kept_rates: Vec<f64> = (0..200)
        .map(|_| {
            decide_at(
                &e,
                ids.trace_id(),
                &[span().status(SpanStatus::Error)],
                Instant::now(),
            )
        })
        .filter(|d| d.keep)
        .map(|d| d.sample_rate)
        .collect();
    assert!((70..130).contains(&kept_rates.len()));
    assert!(kept_rates.iter().all(|r| *r == 2.0));
}

#[test]
fn not_and_nesting() {
    // Keep traces of checkout that are NOT (fast and OK-only).
    let e = engine(
        "
- name: interesting-checkout
  type: and
  and:
    and_sub_policy:
      - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
      - name: not-boring
        type: not
        not:
          not_sub_policy:
            name: boring
            type: and
            and:
              and_sub_policy:
                - {name: fast, type: not, not: {not_sub_policy: {name: slow, type: latency, latency: {threshold_ms: 1000}}}}
                - {name: no-errors, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}
",
    );
    let svc = || span().service("checkout");
    assert!(!kept(&e, &[svc().time(0, 10)]), "fast and ok");
    assert!(kept(&e, &[svc().time(0, 2000)]), "slow");
    assert!(
        kept(&e, &[svc().time(0, 10), svc().status(SpanStatus::Error)]),
        "error"
    );
    assert!(
        !kept(&e, &[span().service("cart").time(0, 2000)]),
        "other service"
    );
}

#[test]
fn drop_beats_any_sample() {
    let e = engine(
        "
- {name: all, type: always_sample}
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- name: no-health
  type: drop
  drop:
    drop_sub_policy:
      - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
",
    );
    // Drops run first whatever their position.
    assert_eq!(e.policy_names()[0].as_ref(), "no-health");
    let health = span().attr("http.route", Val::S("/health"));
    assert_eq!(
        decide(&e, &[health.clone().status(SpanStatus::Error)]),
        Decision::drop("no-health".into())
    );
    assert_eq!(decide(&e, &[span()]), Decision::keep("all".into(), 1.0));
}

#[test]
fn drop_needs_all_its_sub_policies() {
    let e = engine(
        "
- {name: all, type: always_sample}
- name: drop-fast-health
  type: drop
  drop:
    drop_sub_policy:
      - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
      - {name: fast, type: not, not: {not_sub_policy: {name: slow, type: latency, latency: {threshold_ms: 100}}}}
",
    );
    let health = || span().attr("http.route", Val::S("/health"));
    assert!(!kept(&e, &[health().time(0, 5)]));
    assert!(
        kept(&e, &[health().time(0, 500)]),
        "slow health checks stay"
    );
}

#[test]
fn drop_does_not_spend_rate_budgets() {
    let e = engine(
        "
- {name: limit, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}
- {name: no-debug, type: drop, drop: {drop_sub_policy: [{name: d, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]}}
",
    );
    let now = Instant::now();
    let id = TraceId([3; 16]);
    assert!(!decide_at(&e, id, &[span().attr("debug", Val::B(true))], now).keep);
    // The dropped trace did not take the only token.
    assert!(decide_at(&e, id, &[span()], now).keep);
}

#[test]
fn invert_match_does_not_veto_other_policies() {
    // Collector ≥ v0.144: an inverted non-match is a plain "not sampled".
    let e = engine(
        "
- {name: not-acme, type: string_attribute, string_attribute: {key: tenant, values: [acme], invert_match: true}}
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
",
    );
    let acme = span().attr("tenant", Val::S("acme"));
    assert_eq!(
        decide(&e, &[acme.clone().status(SpanStatus::Error)]),
        Decision::keep("errors".into(), 1.0)
    );
    assert!(!kept(&e, &[acme]));
    assert_eq!(decide(&e, &[span()]).policy.as_ref(), "not-acme");
}

#[test]
fn keep_reports_the_smallest_rate_first_in_order_on_ties() {
    let e = engine(
        "
- {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 100}}
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- {name: all, type: always_sample}
",
    );
    assert_eq!(decide(&e, &[span()]), Decision::keep("ten".into(), 1.0));
    let e = engine(
        "
- {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 100}}
- {name: twenty, type: probabilistic, probabilistic: {sampling_percentage: 20, hash_salt: x}}
",
    );
    assert_eq!(decide(&e, &[span()]).policy.as_ref(), "ten");
    let e = engine(
        "
- {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
",
    );
    let mut ids = Ids(5);
    for _ in 0..100 {
        let d = decide_at(
            &e,
            ids.trace_id(),
            &[span().status(SpanStatus::Error)],
            Instant::now(),
        );
        assert_eq!(d, Decision::keep("errors".into(), 1.0));
    }
}

// ---- rate-based policies ------------------------------------------------

#[test]
fn rate_limiting_token_bucket_over_time() {
    let e = engine("- {name: limit, type: rate_limiting, rate_limiting: {spans_per_second: 10}}");
    let t0 = Instant::now();
    let five = vec![span(); 5];
    let at = |ms: u64| decide_at(&e, TraceId([1; 16]), &five, t0 + Duration::from_millis(ms));
    // Burst defaults to 2 × spans_per_second = 20 spans.
    for _ in 0..4 {
        assert_eq!(at(0), Decision::keep("limit".into(), 1.0));
    }
    assert!(!at(0).keep);
    assert!(!at(100).keep, "1 span refilled");
    assert!(at(500).keep, "5 spans refilled");
    assert!(!at(500).keep);
    let later: Vec<bool> = (0..5).map(|_| at(60_000).keep).collect();
    assert_eq!(
        later,
        [true, true, true, true, false],
        "full again, capped at burst"
    );
}

#[test]
fn rate_limiting_burst_capacity_and_oversized_traces() {
    let e = engine(
        "- {name: limit, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 3}}",
    );
    let now = Instant::now();
    assert!(
        !decide_at(&e, TraceId([1; 16]), &vec![span(); 4], now).keep,
        "never fits"
    );
    assert!(decide_at(&e, TraceId([1; 16]), &vec![span(); 3], now).keep);
}

// ---- ottl_condition, trace_flags, bytes_limiting -------------------------

#[test]
fn ottl_condition_samples_when_any_span_matches() {
    let e = engine(
        r#"
- name: slow-checkout
  type: ottl_condition
  ottl_condition:
    span:
      - 'attributes["http.route"] == "/checkout" and end_time_unix_nano - start_time_unix_nano > 1000000000'
      - 'resource.attributes["tier"] == "gold"'
"#,
    );
    let slow = span().attr("http.route", Val::S("/checkout")).time(0, 1500);
    let fast = span().attr("http.route", Val::S("/checkout")).time(0, 500);
    assert_eq!(
        decide(&e, &[fast.clone(), slow]),
        Decision::keep("slow-checkout".into(), 1.0)
    );
    assert!(!kept(&e, std::slice::from_ref(&fast)));
    assert!(kept(&e, &[fast.resource("tier", Val::S("gold"))]));
    let keys: Vec<String> = e.attribute_keys().iter().map(String::from).collect();
    assert_eq!(keys, ["http.route", "tier"]);
}

#[test]
fn ottl_condition_error_mode_like_the_collector() {
    let policy = |mode: &str| {
        engine(&format!(
            r#"
- name: p
  type: ottl_condition
  ottl_condition:
    error_mode: {mode}
    span: ['ToLowerCase(attributes["code"]) == "x" or name == "hit"']
"#
        ))
    };
    // The first span fails (an int is not a string), the second matches.
    let failing = span().attr("code", Val::I(1));
    let hit = span().attr("code", Val::S("y")).name("hit");
    // propagate: evaluation stops at the error; the policy does not sample.
    assert!(!kept(&policy("propagate"), &[failing.clone(), hit.clone()]));
    // A match seen before the error still samples.
    assert!(kept(&policy("propagate"), &[hit.clone(), failing.clone()]));
    // ignore / silent: the failing condition is false, evaluation goes on.
    assert!(kept(&policy("ignore"), &[failing.clone(), hit.clone()]));
    assert!(kept(&policy("silent"), &[failing.clone(), hit]));
    assert!(!kept(&policy("silent"), &[failing]));
}

#[test]
fn trace_flags_samples_a_span_with_the_sampled_flag() {
    let e = engine("- {name: flagged, type: trace_flags}");
    assert!(!kept(&e, &[span(), span().flags(0x100)]));
    assert!(kept(&e, &[span(), span().flags(0x101)]));
}

#[test]
fn bytes_limiting_spends_trace_bytes() {
    // The harness charges 100 bytes per span.
    let e = engine(
        "- {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 200, burst_capacity: 500}}",
    );
    let t0 = Instant::now();
    let three = vec![span(); 3];
    let at = |ms: u64| decide_at(&e, TraceId([1; 16]), &three, t0 + Duration::from_millis(ms));
    assert!(at(0).keep, "300 of 500");
    assert!(!at(0).keep, "200 left");
    assert!(at(500).keep, "100 refilled");
    let e =
        engine("- {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 100}}");
    assert!(
        decide_at(&e, TraceId([1; 16]), &vec![span(); 2], t0).keep,
        "burst 2 × rate"
    );
    assert!(!decide_at(&e, TraceId([1; 16]), &[span()], t0).keep);
}

fn composite_engine(order: &str) -> PolicyEngine {
    engine(&format!(
        "
- name: budget
  type: composite
  composite:
    max_total_spans_per_second: 10
    policy_order: {order}
    composite_sub_policy:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: all, type: always_sample}}
      - {{name: unfunded, type: boolean_attribute, boolean_attribute: {{key: vip, value: true}}}}
    rate_allocation:
      - {{policy: errors, percent: 60}}
      - {{policy: all, percent: 40}}
"
    ))
}

#[test]
fn composite_budgets_per_sub_policy_and_second() {
    let e = composite_engine("[errors, all, unfunded]");
    let t0 = Instant::now() + Duration::from_millis(10);
    let two = |s: Span| vec![s.clone(), s];
    let run = |spans: &[Span], t: Instant| decide_at(&e, TraceId([2; 16]), spans, t);
    let error = two(span().status(SpanStatus::Error));
    let plain = two(span());
    // errors: 60% of 10 = 6 spans/s = three 2-span traces.
    for _ in 0..3 {
        assert_eq!(run(&error, t0), Decision::keep("budget".into(), 1.0));
    }
    assert!(
        !run(&error, t0).keep,
        "errors budget spent; the first sampling sub-policy decides"
    );
    // all: 40% = 4 spans/s.
    assert!(run(&plain, t0).keep);
    assert!(run(&plain, t0).keep);
    assert!(!run(&plain, t0).keep);
    // A new second resets every budget.
    let t1 = t0 + Duration::from_secs(1);
    assert!(run(&error, t1).keep);
    assert!(run(&plain, t1).keep);
}

#[test]
fn composite_policy_order_and_unfunded_sub_policies() {
    // With `all` first, error traces spend the `all` budget.
    let e = composite_engine("[all, errors]");
    let t0 = Instant::now() + Duration::from_millis(10);
    let error = vec![span().status(SpanStatus::Error); 2];
    let run = |spans: &[Span]| decide_at(&e, TraceId([2; 16]), spans, t0).keep;
    assert!(run(&error) && run(&error));
    assert!(!run(&error));
    // A sub-policy without rate_allocation never samples (collector behaviour).
    let vip_only = engine(
        "
- name: c
  type: composite
  composite:
    max_total_spans_per_second: 100
    composite_sub_policy:
      - {name: vip, type: boolean_attribute, boolean_attribute: {key: vip, value: true}}
      - {name: all, type: always_sample}
    rate_allocation: [{policy: all, percent: 0}]
",
    );
    assert!(!kept(&vip_only, &[span().attr("vip", Val::B(true))]));
    assert!(kept(&vip_only, &[span()]), "percent 0 means an equal share");
}

#[test]
fn composite_reports_the_sub_policy_rate() {
    let e = engine(
        "
- name: c
  type: composite
  composite:
    max_total_spans_per_second: 1000000
    composite_sub_policy:
      - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 100}}
    rate_allocation: [{policy: p, percent: 100}]
",
    );
    assert_eq!(decide(&e, &[span()]), Decision::keep("c".into(), 1.0));
}

#[test]
fn throughput_converges_toward_the_goal() {
    let e = engine(
        "
- name: tp
  type: throughput
  throughput: {goal_traces_per_second: 100, key_attributes: [http.route], adjust_interval: 1s, ema_weight: 0.5}
",
    );
    let traffic = [("/hot", 2000u32), ("/warm", 200), ("/rare", 5)];
    let t0 = Instant::now();
    let mut ids = Ids(77);
    let mut kept_per_key = [0u32; 3];
    let mut hot_rate = 0.0;
    let seconds = 20;
    for sec in 0..seconds {
        for (k, &(route, n)) in traffic.iter().enumerate() {
            let s = [span().attr("http.route", Val::S(route))];
            for j in 0..n {
                let now = t0
                    + Duration::from_secs(sec)
                    + Duration::from_micros(u64::from(j) * 1_000_000 / u64::from(n));
                let d = decide_at(&e, ids.trace_id(), &s, now);
                if d.keep && sec >= 10 {
                    kept_per_key[k] += 1;
                    if k == 0 {
                        hot_rate = d.sample_rate;
                    }
                }
            }
        }
    }
    let per_sec = |n: u32| f64::from(n) / 10.0;
    let total: f64 = kept_per_key.iter().map(|&n| per_sec(n)).sum();
    assert!(
        (85.0..115.0).contains(&total),
        "kept {total}/s: {kept_per_key:?}"
    );
    assert_eq!(per_sec(kept_per_key[2]), 5.0, "rare keys are all kept");
    assert!(per_sec(kept_per_key[1]) > 35.0 && per_sec(kept_per_key[1]) < 60.0);
    assert!((35.0..50.0).contains(&hot_rate), "hot rate {hot_rate}");
}

#[test]
fn throughput_decisions_are_deterministic_per_trace_id() {
    let yaml = "- {name: tp, type: throughput, throughput: {goal_traces_per_second: 1, key_attributes: [k], adjust_interval: 1s}}";
    let (a, b) = (engine(yaml), engine(yaml));
    let t0 = Instant::now();
    let mut ids = Ids(3);
    let trace_ids: Vec<TraceId> = (0..300).map(|_| ids.trace_id()).collect();
    let s = [span().attr("k", Val::S("x"))];
    let run = |e: &PolicyEngine| -> Vec<bool> {
        (0..2)
            .flat_map(|sec| trace_ids.iter().map(move |id| (sec, *id)))
            .map(|(sec, id)| decide_at(e, id, &s, t0 + Duration::from_secs(sec)).keep)
            .collect()
    };
    let first = run(&a);
    assert_eq!(first, run(&b));
    // Second interval: rate 300 for this key, so few are kept.
    assert!(first[300..].iter().filter(|k| **k).count() < 10);
}

// ---- validation -----------------------------------------------------------

#[test]
fn validation_errors_name_the_policy() {
    let cases: &[(&str, &str)] = &[
        (
            "- {name: x, type: sometimes}",
            "policy 'x' (sometimes): unknown policy type `sometimes`",
        ),
        (
            "- {name: x, type: ottl_condition}",
            "policy 'x' (ottl_condition): ottl_condition: expected at least one OTTL condition",
        ),
        (
            "- {name: x, type: ottl_condition, ottl_condition: {span: ['links == nil']}}",
            "policy 'x' (ottl_condition): ottl_condition: span[0] `links == nil`: not supported by tailsift: path `links`",
        ),
        (
            "- {name: x, type: ottl_condition, ottl_condition: {error_mode: loud, span: ['true']}}",
            "policy 'x' (ottl_condition): ottl_condition: unknown variant `loud`",
        ),
        (
            "- {name: x, type: bytes_limiting, bytes_limiting: {bytes_per_second: 0}}",
            "policy 'x' (bytes_limiting): `bytes_per_second` must be greater than 0",
        ),
        (
            "- {name: x, type: trace_flags, trace_flags: {sampled: true}}",
            "policy 'x' (trace_flags): trace_flags: unknown field `sampled`",
        ),
        (
            "- {name: slow, type: latency, latency: {treshold_ms: 5}}",
            "policy 'slow' (latency): latency: unknown field `treshold_ms`",
        ),
        (
            "- {name: slow, type: latency, latncy: {}}",
            "policy 'slow' (latency): unknown field `latncy`",
        ),
        (
            "- {name: slow, type: latency, latency: {threshold_ms: fast}}",
            "policy 'slow' (latency): latency: invalid type",
        ),
        (
            "- {name: band, type: latency, latency: {threshold_ms: 9, upper_threshold_ms: 5}}",
            "policy 'band' (latency): `threshold_ms` 9 is greater",
        ),
        (
            "- {name: re, type: string_attribute, string_attribute: {key: k, values: ['a(b'], enabled_regex_matching: true}}",
            "policy 're' (string_attribute): invalid regex `a(b`",
        ),
        (
            "- {name: s, type: string_attribute, string_attribute: {values: [a]}}",
            "policy 's' (string_attribute): `key` must not be empty",
        ),
        (
            "- {name: p, type: probabilistic, probabilistic: {sampling_percentage: 120}}",
            "policy 'p' (probabilistic): `sampling_percentage` 120 is outside [0, 100]",
        ),
        (
            "- {name: p, type: probabilistic, probabilistic: {sampling_percentage: -1}}",
            "policy 'p' (probabilistic): `sampling_percentage` -1 is outside",
        ),
        (
            "- {name: a, type: and, and: {and_sub_policy: []}}",
            "policy 'a' (and): `and_sub_policy` must list at least one policy",
        ),
        (
            "- {name: a, type: and}",
            "policy 'a' (and): `and_sub_policy` must list",
        ),
        (
            "- {name: d, type: drop, drop: {drop_sub_policy: []}}",
            "policy 'd' (drop): `drop_sub_policy` must list",
        ),
        (
            "- {name: c, type: composite, composite: {max_total_spans_per_second: 5}}",
            "policy 'c' (composite): `composite_sub_policy` must list",
        ),
        (
            "- {name: c, type: composite, composite: {composite_sub_policy: [{name: a, type: always_sample}]}}",
            "policy 'c' (composite): `max_total_spans_per_second` must be greater than 0",
        ),
        (
            "- {name: c, type: composite, composite: {max_total_spans_per_second: 5, composite_sub_policy: [{name: a, type: always_sample}], rate_allocation: [{policy: b, percent: 5}]}}",
            "policy 'c' (composite): `rate_allocation` names `b`",
        ),
        (
            "- {name: c, type: composite, composite: {max_total_spans_per_second: 5, policy_order: [z], composite_sub_policy: [{name: a, type: always_sample}]}}",
            "policy 'c' (composite): `policy_order` names `z`",
        ),
        (
            "- {name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 10, max_value: 5}}",
            "policy 'n' (numeric_attribute): `min_value` 10 is greater than `max_value` 5",
        ),
        (
            "- {name: n, type: numeric_attribute, numeric_attribute: {key: k}}",
            "policy 'n' (numeric_attribute): at least one of `min_value` or `max_value`",
        ),
        (
            "- {name: sc, type: span_count, span_count: {min_spans: 10, max_spans: 2}}",
            "policy 'sc' (span_count): `min_spans` 10 is greater than `max_spans` 2",
        ),
        (
            "- {name: e, type: status_code, status_code: {status_codes: [FAIL]}}",
            "policy 'e' (status_code): unknown status code `FAIL`",
        ),
        (
            "- {name: e, type: status_code, status_code: {status_codes: []}}",
            "policy 'e' (status_code): `status_codes` must list",
        ),
        (
            "- {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 0}}",
            "policy 'r' (rate_limiting): `spans_per_second` must be greater than 0",
        ),
        (
            "- {name: t, type: throughput, throughput: {key_attributes: [a]}}",
            "policy 't' (throughput): `goal_traces_per_second` must be greater than 0",
        ),
        (
            "- {name: t, type: throughput, throughput: {goal_traces_per_second: 5, ema_weight: 2}}",
            "policy 't' (throughput): `ema_weight` must be in (0, 1]",
        ),
        (
            "- {name: t, type: throughput, throughput: {goal_traces_per_second: 5, adjust_interval: soon}}",
            "policy 't' (throughput): throughput: ",
        ),
        (
            "- {name: x, type: not}",
            "policy 'x' (not): `not_sub_policy` is required",
        ),
        (
            "- {name: '', type: always_sample}",
            "policy #1 (always_sample): `name` must not be empty",
        ),
        (
            "- {type: always_sample}",
            "policy #1 (always_sample): `name` must not be empty",
        ),
        ("- {name: x}", "policy #1: missing field `type`"),
        ("- just-a-string", "policy #1: expected a mapping"),
        (
            "- {name: a, type: always_sample}\n- {name: a, type: always_sample}",
            "policy 'a': duplicate policy name",
        ),
        (
            "- {name: outer, type: and, and: {and_sub_policy: [{name: ok, type: always_sample}, {name: inner, type: string_attribute, string_attribute: {key: k, values: ['('], enabled_regex_matching: true}}]}}",
            "policy 'outer' (and) > 'inner' (string_attribute): invalid regex `(`",
        ),
        (
            "- {name: outer, type: and, and: {and_sub_policy: [{name: d, type: drop, drop: {drop_sub_policy: [{type: always_sample}]}}]}}",
            "policy 'outer' (and) > 'd' (drop): `drop` is only allowed as a top-level policy",
        ),
        (
            "- {name: outer, type: not, not: {not_sub_policy: {type: latency, latency: {bogus: 1}}}}",
            "policy 'outer' (not) > #1 (latency): latency: unknown field `bogus`",
        ),
    ];
    for (yaml, want) in cases {
        let got = error(yaml);
        assert!(
            got.starts_with(want),
            "\n{yaml}\n got: {got}\nwant: {want}…"
        );
    }
}

#[test]
fn pasted_collector_configs_are_accepted() {
    // Blocks of other types are legal collector config and ignored, numbers
    // may be integers or floats, and cache_max_size is accepted.
    let e = engine(
        "
- name: test-policy-1
  type: latency
  latency: {threshold_ms: 5000}
  probabilistic: {sampling_percentage: 10}
- {name: p, type: probabilistic, probabilistic: {sampling_percentage: 12.5, hash_salt: ''}}
- name: s
  type: string_attribute
  string_attribute: {key: k, values: [a], enabled_regex_matching: true, cache_max_size: 10}
- {name: always, type: always_sample, always_sample: {}}
",
    );
    assert_eq!(e.policy_names().len(), 4);
}

#[test]
fn shipped_config_policies_compile() {
    // Policies reach the engine through the `config` crate's value model.
    let cfg = crate::config::Config::load(std::path::Path::new("config/tailsift.yaml")).unwrap();
    let e = PolicyEngine::from_config(&cfg.sampling.policies).unwrap();
    assert_eq!(e.policy_names().len(), cfg.sampling.policies.len());
}
