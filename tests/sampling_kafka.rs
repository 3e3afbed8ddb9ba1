//! The sampling core against the real broker: a generated workload with known
//! ground truth (error traces, slow traces, ordinary ones, late spans) on 6
//! partitions, consumed by TWO tailsift pipelines in one consumer group.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use tailsift::app::Pipeline;
use tailsift::config::{Config, EncodingSetting};
use tailsift::deadletter::CountOnly;
use tailsift::decode::{DecodedSpan, Encoding, decode_span};
use tailsift::loadgen::{self, LoadOptions, generator::Profile};
use tailsift::model::TraceId;
use tailsift::policy::probabilistic_hash;
use tailsift::sink::null::{Collected, CollectingSink};

const PARTITIONS: i32 = 6;
const PERCENT: f64 = 20.0;

fn config(brokers: &str, topic: &str, group: &str) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.topic = topic.to_string();
    cfg.kafka.group_id = group.to_string();
    cfg.kafka.encoding = EncodingSetting::OtlpProto;
    cfg.kafka.properties = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.sampling.decision_wait = Duration::from_secs(3);
    cfg.sampling.root_idle = Duration::from_millis(500);
    cfg.shutdown.timeout = Duration::from_secs(20);
    let policies = format!(
        r#"[
        {{"name": "errors", "type": "status_code", "status_code": {{"status_codes": ["ERROR"]}}}},
        {{"name": "slow", "type": "latency", "latency": {{"threshold_ms": 1000}}}},
        {{"name": "baseline", "type": "probabilistic", "probabilistic": {{"sampling_percentage": {PERCENT}}}}}
    ]"#
    );
    cfg.sampling.policies = serde_json::from_str(&policies).expect("policies");
    cfg
}

async fn create_topic(brokers: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Committed offsets of the group vs the partitions' end offsets.
fn committed_vs_end(brokers: &str, topic: &str, group: &str) -> Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (_, high) = c.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))?;
        let got = match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        out.push((got, high));
    }
    Ok(out)
}

fn span_ids(c: &Collected) -> Vec<[u8; 8]> {
    c.spans
        .iter()
        .map(|r| match decode_span(r).expect("kept span decodes") {
            DecodedSpan::Otlp(o) => o.span.span_id.try_into().expect("8-byte span id"),
            DecodedSpan::Jaeger(j) => j.span_id.try_into().expect("8-byte span id"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_keep_every_interesting_trace() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-sampling");
    let group = common::unique_name("tailsift-sampling-group");
    create_topic(&brokers, &topic).await?;
    let cfg = config(&brokers, &topic, &group);

    // Two members of one group, both assigned before any traffic flows, so
    // no rebalance splits the run.
    let sinks = [
        Arc::new(CollectingSink::default()),
        Arc::new(CollectingSink::default()),
    ];
    let mut pipelines = Vec::new();
    for sink in &sinks {
        pipelines.push(Arc::new(Pipeline::new(
            &cfg,
            sink.clone(),
            Arc::new(CountOnly),
        )?));
    }
    let mut runs = Vec::new();
    for p in &pipelines {
        let (p, cfg) = (p.clone(), cfg.clone());
        runs.push(tokio::spawn(async move { p.run(&cfg).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<usize> = pipelines.iter().map(|p| p.shared.registry.len()).collect();
        if owned.iter().sum::<usize>() == PARTITIONS as usize && owned.iter().all(|n| *n > 0) {
            println!("assignment settled: {owned:?}");
            break;
        }
        ensure!(Instant::now() < deadline, "group never settled: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

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
    for p in &pipelines {
        p.shared.stop.cancel();
    }
    for r in runs {
        r.await.context("pipeline task")??;
    }

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
        "kept {} of {} traces; probabilistic share {:.3} of {ordinary} ordinary",
        kept.len(),
        summary.truth.len(),
        share
    );
    ensure!(
        (share - PERCENT / 100.0).abs() < 0.06,
        "probabilistic share {share}"
    );

    // Everything resolved: the group committed every partition to its end.
    for (p, (committed, end)) in committed_vs_end(&brokers, &topic, &group)?
        .iter()
        .enumerate()
    {
        ensure!(
            committed == end,
            "partition {p}: committed {committed}, end {end}"
        );
    }
    Ok(())
}
