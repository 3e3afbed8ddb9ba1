//! Jaeger Query compatibility, end to end: traffic from `tailsift loadgen` goes through
//! Kafka, a real tailsift pipeline (errors + 25 % probabilistic) and tailsift's
//! Elasticsearch sink into daily indices under a fresh prefix, and UNMODIFIED Jaeger
//! readers on the same prefix must return it through their HTTP API: Jaeger v2 (the
//! reader of record), and v1.66 too when `JAEGER_READERS=v2,v1` (see tests/common/jaeger.rs).
//! The ground truth is the generator replayed with loadgen's seed. For each reader:
//!
//! - `/api/services` lists exactly the services of the kept spans, and
//!   `/api/services/{svc}/operations` their operations;
//! - `/api/traces?service=S&tags={"error":"true"}` finds, per service, every error trace
//!   of the ground truth whose failing span belongs to S (Jaeger matches service and
//!   tags on the same span), and nothing else; `/api/traces?service=S` finds every kept
//!   trace with a span of S;
//! - `/api/traces?service=S&minDuration=…&maxDuration=…` finds exactly the kept traces
//!   with a span of S whose duration lies in that range;
//! - `/api/traces/{id}` returns every span of every kept trace (see
//!   `common::jaeger::check_trace`); dropped traces are not found.
//!
//! Needs the real stack (`deploy/local/stack.sh up`, see tests/common) and Go for the
//! one-time Jaeger builds (cached under `$TAILSIFT_CACHE/jaeger`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};

use common::es::Es;
use common::jaeger::{self, JaegerApi, JaegerQuery, check_trace, hexes, strings, trace_ids};
use common::{kafka, pipeline};
use tailsift::config::{Config, EncodingSetting};
use tailsift::decode::Encoding;
use tailsift::loadgen::generator::{GenSpan, GenTrace, Profile, TraceGenerator};
use tailsift::loadgen::{self, LoadOptions};
use tailsift::model::TraceId;
use tailsift::policy::probabilistic_hash;

const PARTITIONS: i32 = 3;
const TRACES: u64 = 150;
const SEED: u64 = 4242;
/// Baseline keep share (besides every error trace).
const PERCENT: f64 = 25.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_query_reads_what_tailsift_wrote() -> Result<()> {
    if !jaeger::enabled("jaeger_query_reads_what_tailsift_wrote") {
        return Ok(());
    }
    let readers = jaeger::readers()?;
    let brokers = common::kafka_brokers();
    let es_url = common::es_url();
    let run = common::unique_name("jaegerq");
    let topic = format!("tailsift-{run}");

    let cfg = config(&brokers, &topic, &es_url, &run);
    let prefix = cfg.index_prefix();
    println!("topic {topic}, index prefix '{prefix}'");

    // 1. Unmodified Jaeger readers on the prefix, first: the first run builds them (and
    //    fails here when it cannot), before any CPU-sensitive pipeline timing.
    let queries =
        JaegerQuery::start_all(&readers, &es_url, &cfg.elasticsearch.index_prefix).await?;

    // 2. Kafka → tailsift pipeline → Elasticsearch sink.
    kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let t0_us = now_us();
    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        encoding: Encoding::OtlpProto,
        keyed: true,
        rate: 0.0,
        max_traces: Some(TRACES),
        profile: Profile {
            error_rate: 0.15,
            slow_rate: 0.05,
            ..Default::default()
        },
        seed: SEED,
        keep_truth: true,
        ..Default::default()
    };
    let es = Es::new(&es_url)?;
    let summary = pipeline::write_to_elasticsearch(&[cfg], &opts, PARTITIONS).await?;
    ensure!(summary.failed_messages == 0, "loadgen: produce failures");
    println!("produced: {}", summary.table());
    es.refresh(&format!("{prefix}jaeger-*")).await?;
    let t1_us = now_us();

    // 3. The ground truth: the generator is deterministic per (profile, seed), so
    //    replaying it yields every span loadgen sent (absolute times aside).
    let traces = regenerate(&opts, &summary)?;
    let truth = Truth::new(&traces, (t0_us - 60_000_000, t1_us + 60_000_000))?;

    // 4. What each Jaeger reader returns.
    for q in &queries {
        let name = q.reader.name();
        check_reader(&q.api, &truth)
            .await
            .with_context(|| format!("Jaeger {name}"))?;
        common::report(&format!(
            "Jaeger {name}: services, operations, tag and duration searches match; all {} \
             kept traces ({} spans) found by ID and match the ground truth; dropped ones absent",
            truth.kept.len(),
            truth.kept.iter().map(|t| t.spans.len()).sum::<usize>()
        ));
    }
    queries.into_iter().for_each(JaegerQuery::finish);
    es.delete_run(&prefix).await;
    Ok(())
}

// ------------------------------------------------------------------ tailsift side ----

fn config(brokers: &str, topic: &str, es_url: &str, index_prefix: &str) -> Config {
    let policies = format!(
        r#"[
        {{"name": "errors", "type": "status_code", "status_code": {{"status_codes": ["ERROR"]}}}},
        {{"name": "baseline", "type": "probabilistic", "probabilistic": {{"sampling_percentage": {PERCENT}}}}}
    ]"#
    );
    let mut cfg = pipeline::config(brokers, topic, &format!("{topic}-group"), &policies);
    cfg.kafka.encoding = EncodingSetting::OtlpProto;
    cfg.elasticsearch.urls = vec![es_url.to_string()];
    cfg.elasticsearch.index_prefix = index_prefix.to_string();
    cfg
}

/// Replays the generator loadgen used and checks it matches the trace IDs it reported.
fn regenerate(opts: &LoadOptions, summary: &loadgen::Summary) -> Result<Vec<GenTrace>> {
    let mut generator = TraceGenerator::new(opts.profile.clone(), opts.seed);
    let traces: Vec<GenTrace> = (0..summary.traces).map(|_| generator.trace(0)).collect();
    ensure!(
        traces.len() == summary.truth.len()
            && traces
                .iter()
                .zip(&summary.truth)
                .all(|(g, t)| g.trace_id.to_hex() == t.trace_id
                    && g.spans.len() == t.spans
                    && g.error == t.error),
        "replaying the generator does not reproduce loadgen's ground truth"
    );
    Ok(traces)
}

// ------------------------------------------------------------------ ground truth -----

/// What the policies kept and dropped, and the search window around the run.
struct Truth<'a> {
    all: &'a [GenTrace],
    kept: Vec<&'a GenTrace>,
    dropped: Vec<&'a GenTrace>,
    /// Kept spans' operations per service.
    ops: BTreeMap<&'a str, BTreeSet<&'a str>>,
    window_us: (i64, i64),
}

impl<'a> Truth<'a> {
    fn new(all: &'a [GenTrace], window_us: (i64, i64)) -> Result<Self> {
        let threshold = (PERCENT / 100.0 * u64::MAX as f64) as u64;
        let (kept, dropped): (Vec<&GenTrace>, Vec<&GenTrace>) = all.iter().partition(|t| {
            t.error || probabilistic_hash("default-hash-seed", &t.trace_id) <= threshold
        });
        ensure!(
            !dropped.is_empty() && kept.iter().any(|t| t.error),
            "workload too small: {} kept, {} dropped",
            kept.len(),
            dropped.len()
        );
        println!(
            "{} traces, {} kept ({} with errors), {} dropped",
            all.len(),
            kept.len(),
            kept.iter().filter(|t| t.error).count(),
            dropped.len()
        );
        let mut ops: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in kept.iter().flat_map(|t| &t.spans) {
            ops.entry(&s.service).or_default().insert(&s.name);
        }
        Ok(Self {
            all,
            kept,
            dropped,
            ops,
            window_us,
        })
    }

    /// Kept traces with a span of `service` that satisfies `pred`.
    fn kept_with(&self, service: &str, pred: impl Fn(&GenSpan) -> bool) -> BTreeSet<TraceId> {
        self.kept
            .iter()
            .filter(|t| t.spans.iter().any(|s| s.service == service && pred(s)))
            .map(|t| t.trace_id)
            .collect()
    }

    /// `/api/traces` parameters: one service over the run's window.
    fn search(&self, service: &str) -> Vec<(&'static str, String)> {
        vec![
            ("service", service.to_string()),
            ("start", self.window_us.0.to_string()),
            ("end", self.window_us.1.to_string()),
            ("lookback", "1h".to_string()),
            ("limit", "1000".to_string()),
        ]
    }
}

/// A span's duration as Jaeger stores it: whole µs.
fn duration_us(s: &GenSpan) -> i64 {
    ((s.end_unix_nano - s.start_unix_nano) / 1000) as i64
}

/// A duration bound near the `q` quantile of `durations` (sorted, deduplicated) that no
/// duration comes within 3 µs of, so truncation to µs cannot move a span across it.
fn bound_near(durations: &[i64], q: f64) -> Option<i64> {
    let from = (q * durations.len() as f64) as usize;
    durations
        .windows(2)
        .skip(from)
        .find(|w| w[1] - w[0] >= 7)
        .map(|w| w[0] + 3)
}

// ------------------------------------------------------------------ Jaeger side ------

async fn check_reader(api: &JaegerApi, truth: &Truth<'_>) -> Result<()> {
    check_services(api, truth).await?;
    check_searches(api, truth).await?;
    check_duration_searches(api, truth).await?;
    let mut spans_checked = 0;
    for t in &truth.kept {
        spans_checked += check_trace(api, t, &t.trace_id.to_hex()).await?;
    }
    for t in &truth.dropped {
        api.ensure_absent(&t.trace_id.to_hex())
            .await
            .context("a dropped trace")?;
    }
    println!(
        "/api/traces/{{id}}: {} kept traces, {spans_checked} spans match the ground truth; {} dropped traces absent",
        truth.kept.len(),
        truth.dropped.len()
    );
    Ok(())
}

/// `/api/services` and `/api/services/{svc}/operations`.
async fn check_services(api: &JaegerApi, truth: &Truth<'_>) -> Result<()> {
    let services: BTreeSet<String> = strings(&api.get("/api/services", &[]).await?["data"])?;
    let want: BTreeSet<String> = truth.ops.keys().map(|s| s.to_string()).collect();
    ensure!(
        services == want,
        "/api/services: got {services:?}, want {want:?}"
    );
    for (svc, ops) in &truth.ops {
        let path = format!("/api/services/{svc}/operations");
        let got: BTreeSet<String> = strings(&api.get(&path, &[]).await?["data"])?;
        let want: BTreeSet<String> = ops.iter().map(|s| s.to_string()).collect();
        ensure!(
            got == want,
            "operations of {svc}: got {got:?}, want {want:?}"
        );
    }
    println!("/api/services: {services:?}");
    Ok(())
}

/// `/api/traces?service=…[&tags={"error":"true"}]`.
async fn check_searches(api: &JaegerApi, truth: &Truth<'_>) -> Result<()> {
    let mut errors_found = BTreeSet::new();
    for svc in truth.ops.keys() {
        let base = truth.search(svc);
        let mut with_error = base.clone();
        with_error.push(("tags", r#"{"error":"true"}"#.to_string()));
        let got = trace_ids(&api.get("/api/traces", &with_error).await?)?;
        let want = truth.kept_with(svc, |s| s.error);
        ensure!(
            got == want,
            "error traces of {svc}: Jaeger Query found {} ({}), the ground truth has {} ({})",
            got.len(),
            hexes(&got),
            want.len(),
            hexes(&want)
        );
        errors_found.extend(got);

        let got = trace_ids(&api.get("/api/traces", &base).await?)?;
        let want = truth.kept_with(svc, |_| true);
        ensure!(
            got == want,
            "traces of {svc}: Jaeger Query found {}, the ground truth has {}; missing {}; extra {}",
            got.len(),
            want.len(),
            hexes(&want.difference(&got).copied().collect()),
            hexes(&got.difference(&want).copied().collect())
        );
    }
    let all_errors: BTreeSet<TraceId> = truth
        .all
        .iter()
        .filter(|t| t.error)
        .map(|t| t.trace_id)
        .collect();
    ensure!(
        errors_found == all_errors,
        "error searches found {} of the {} error traces",
        errors_found.len(),
        all_errors.len()
    );
    println!(
        "tag search error=true found all {} error traces",
        all_errors.len()
    );
    Ok(())
}

/// `/api/traces?service=…&minDuration=…&maxDuration=…`, and each bound alone: Jaeger
/// matches the range on a span of the service.
async fn check_duration_searches(api: &JaegerApi, truth: &Truth<'_>) -> Result<()> {
    let mut narrowed = 0;
    for svc in truth.ops.keys() {
        let mut durations: Vec<i64> = truth
            .kept
            .iter()
            .flat_map(|t| &t.spans)
            .filter(|s| s.service == *svc)
            .map(duration_us)
            .collect();
        durations.sort_unstable();
        durations.dedup();
        let (Some(min), Some(max)) = (bound_near(&durations, 0.25), bound_near(&durations, 0.75))
        else {
            continue;
        };
        if min >= max {
            continue;
        }
        for (lo, hi) in [(Some(min), Some(max)), (Some(min), None), (None, Some(max))] {
            let mut query = truth.search(svc);
            if let Some(lo) = lo {
                query.push(("minDuration", format!("{lo}us")));
            }
            if let Some(hi) = hi {
                query.push(("maxDuration", format!("{hi}us")));
            }
            let got = trace_ids(&api.get("/api/traces", &query).await?)?;
            let want = truth.kept_with(svc, |s| {
                let d = duration_us(s);
                lo.is_none_or(|lo| d >= lo) && hi.is_none_or(|hi| d <= hi)
            });
            ensure!(
                got == want,
                "traces of {svc} with duration in [{lo:?}, {hi:?}] µs: Jaeger Query found {}, \
                 the ground truth has {}; missing {}; extra {}",
                got.len(),
                want.len(),
                hexes(&want.difference(&got).copied().collect()),
                hexes(&got.difference(&want).copied().collect())
            );
            if !want.is_empty() && want.len() < truth.kept_with(svc, |_| true).len() {
                narrowed += 1;
            }
        }
    }
    ensure!(
        narrowed > 0,
        "no duration search narrowed a service's traces: the workload does not test it"
    );
    println!("duration searches: {narrowed} narrowed a service's traces, all exact");
    Ok(())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
