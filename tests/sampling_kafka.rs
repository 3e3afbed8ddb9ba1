//! The sampling core against the real broker: a generated workload with known
//! ground truth (error traces, slow traces, ordinary ones, late spans) on 6
//! partitions, consumed by TWO tailsift pipelines in one consumer group.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use common::pipeline::{Running, span_ids, wait_assigned};
use tailsift::decode::Encoding;
use tailsift::loadgen::{self, LoadOptions, generator::Profile};
use tailsift::model::TraceId;
use tailsift::policy::probabilistic_hash;
use tailsift::sink::null::CollectingSink;

const PARTITIONS: i32 = 6;
const PERCENT: f64 = 20.0;
const POLICIES: &str = r#"[
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_keep_every_interesting_trace() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-sampling");
    let group = common::unique_name("tailsift-sampling-group");
    common::kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let cfg = common::pipeline::config(&brokers, &topic, &group, POLICIES);

    // Two members of one group, both assigned before any traffic flows, so
    // no rebalance splits the run.
    let sinks = [
        Arc::new(CollectingSink::default()),
        Arc::new(CollectingSink::default()),
    ];
    let a = Running::start(&cfg, sinks[0].clone())?;
    let b = Running::start(&cfg, sinks[1].clone())?;
    wait_assigned(&[&a, &b], PARTITIONS as usize).await?;

    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        encoding: Encoding::OtlpProto,
        keyed: true,
        rate: 0.0,
        max_traces: Some(600),
        profile: Profile {
            error_rate: 0.1,
            slow_rate: 0.1,
            ..Default::default()
        },
        seed: 42,
        late_rate: 0.05,
        late_delay: Duration::from_secs(5),
        keep_truth: true,
        ..Default::default()
    };
    let summary = loadgen::run(&opts).await?;
    println!("produced: {}", summary.table());
    ensure!(summary.failed_messages == 0, "produce failures");

    // Let every trace reach its deadline and the late spans follow.
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(3)).await;
    a.stop().await?;
    b.stop().await?;

    // Gather what each member kept.
    let mut kept: HashMap<TraceId, (String, Vec<[u8; 8]>, usize)> = HashMap::new();
    for (member, sink) in sinks.iter().enumerate() {
        for c in sink.take() {
            let e = kept
                .entry(c.trace_id)
                .or_insert_with(|| (c.decision.policy.to_string(), Vec::new(), member));
            assert_eq!(e.2, member, "trace {} kept by both members", c.trace_id);
            e.1.extend(span_ids(&c));
        }
    }

    let threshold = (PERCENT / 100.0 * u64::MAX as f64) as u64;
    let (mut ordinary, mut ordinary_kept) = (0u32, 0u32);
    for t in &summary.truth {
        let id = TraceId::from_hex(&t.trace_id).context("truth trace id")?;
        let by_hash = probabilistic_hash("default-hash-seed", &id) <= threshold;
        let must_keep = t.error || t.slow || by_hash;
        match kept.get(&id) {
            Some((policy, spans, _)) => {
                ensure!(
                    must_keep,
                    "trace {id} kept by {policy} but no policy selects it"
                );
                let unique: HashSet<_> = spans.iter().collect();
                ensure!(unique.len() == spans.len(), "trace {id}: duplicate spans");
                ensure!(
                    spans.len() == t.spans,
                    "trace {id}: {} of {} spans kept (late: {})",
                    spans.len(),
                    t.spans,
                    t.late_spans
                );
                if t.error {
                    ensure!(
                        policy == "errors",
                        "error trace {id} attributed to {policy}"
                    );
                }
            }
            None => ensure!(
                !must_keep,
                "trace {id} (error={}, slow={}) lost",
                t.error,
                t.slow
            ),
        }
        if !t.error && !t.slow {
            ordinary += 1;
            ordinary_kept += u32::from(by_hash);
        }
    }
    // The hash decides exactly; its share must also look like 20 %.
    let share = f64::from(ordinary_kept) / f64::from(ordinary.max(1));
    println!(
        "kept {} of {} traces; probabilistic share {share:.3} of {ordinary} ordinary",
        kept.len(),
        summary.truth.len()
    );
    ensure!(
        (share - PERCENT / 100.0).abs() < 0.06,
        "probabilistic share {share}"
    );

    // Everything resolved: the group committed every partition to its end.
    common::kafka::ensure_committed_to_end(&brokers, &topic, &group, PARTITIONS)
}
