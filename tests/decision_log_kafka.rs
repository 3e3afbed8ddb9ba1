//! The decision log and group membership against the real broker: records
//! are acknowledged once stored, read back within the horizon only, and a
//! pipeline runs on Kafka 4's consumer group protocol.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use common::pipeline::{Running, wait_assigned};
use tailsift::config::GroupProtocol;
use tailsift::decision_log::record::DecisionRecord;
use tailsift::decision_log::{DecisionLog, LogSettings, Pending};
use tailsift::decode::Encoding;
use tailsift::loadgen::{self, LoadOptions, generator::Profile};
use tailsift::model::{Decision, DecisionReason, TraceId};
use tailsift::offsets::{AckHandle, Resolved};
use tailsift::sink::null::CollectingSink;
use tailsift::window::{DecisionCache, Found, Remembered};

fn settings(brokers: &str, topic: &str, partitions: i32) -> LogSettings {
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    LogSettings {
        client,
        topic: topic.to_string(),
        input_partitions: partitions,
        horizon: Duration::from_secs(600),
    }
}

async fn open(s: LogSettings) -> Result<DecisionLog> {
    Ok(tokio::task::spawn_blocking(move || DecisionLog::open(s)).await??)
}

async fn load(log: &Arc<DecisionLog>, input: i32, cache: &Arc<DecisionCache>) -> Result<()> {
    let (log, cache) = (log.clone(), cache.clone());
    let loaded = tokio::task::spawn_blocking(move || log.load(input, &cache)).await??;
    ensure!(loaded.complete, "read-back incomplete: {loaded:?}");
    Ok(())
}

/// A decision is acknowledged once the broker stored it, and a fresh
/// process (a fresh cache) reads it back with its policy and rate; input
/// partitions beyond the log's count share its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_acknowledged_and_read_back() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-decisions");
    let log = Arc::new(open(settings(&brokers, &topic, 2)).await?);
    let (tx, mut acks) = mpsc::unbounded_channel();
    let ids: Vec<TraceId> = (0..50).map(|_| TraceId(rand::random())).collect();
    for (i, id) in ids.iter().enumerate() {
        let decision = match i % 2 {
            0 => Decision::keep("errors".into(), 1.0),
            _ => Decision::drop("none".into()),
        };
        let input = (i % 3) as i32; // partition 2 maps onto the log's 0
        let record = DecisionRecord::new(&decision, DecisionReason::Timeout, input, (7, 9));
        let mut resolved = Resolved::default();
        resolved.add(i as i64, 1);
        let ack = AckHandle::new(tx.clone(), resolved);
        log.record(input, Pending::new(*id, record, ack)).await;
    }
    let mut acked = HashSet::new();
    while acked.len() < ids.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), acks.recv())
            .await
            .context("decision records not acknowledged")?
            .context("ack channel closed")?;
        acked.insert(r.offsets[0].0);
    }

    let cache = Arc::new(DecisionCache::new(1000, 1000));
    for input in 0..3 {
        load(&log, input, &cache).await?;
    }
    for (i, id) in ids.iter().enumerate() {
        let want = match i % 2 {
            0 => Remembered::Kept(Decision::keep("errors".into(), 1.0)),
            _ => Remembered::Dropped,
        };
        ensure!(
            cache.lookup(id) == Some((want, Found::Log)),
            "trace {i} not read back"
        );
    }
    Ok(())
}

/// Only the horizon is read back: a record older than it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_horizon_is_read_back() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-decisions-horizon");
    let log = Arc::new(open(settings(&brokers, &topic, 1)).await?);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let (old, recent) = (TraceId(rand::random()), TraceId(rand::random()));
    let record = DecisionRecord::new(
        &Decision::keep("errors".into(), 1.0),
        DecisionReason::Root,
        0,
        (1, 1),
    )
    .encode_to_vec();
    for (id, at) in [(old, now_ms - 20 * 60_000), (recent, now_ms - 60_000)] {
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(&id.0[..])
                    .payload(&record)
                    .timestamp(at),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let cache = Arc::new(DecisionCache::new(10, 10));
    load(&log, 0, &cache).await?;
    ensure!(
        cache.lookup(&recent).is_some(),
        "a recent decision was not read back"
    );
    ensure!(
        cache.lookup(&old).is_none(),
        "a decision beyond the horizon was read back"
    );
    Ok(())
}

/// Kafka 4's consumer group protocol (KIP-848): a pipeline consumes, keeps
/// every error trace whole, and commits every partition to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_protocol_consumes_and_commits() -> Result<()> {
    const PARTITIONS: i32 = 4;
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-kip848");
    let group = common::unique_name("tailsift-kip848-group");
    common::kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let policies = r#"[{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]"#;
    let mut cfg = common::pipeline::config(&brokers, &topic, &group, policies);
    cfg.kafka.properties.clear(); // the classic protocol's session settings
    cfg.kafka.group_protocol = GroupProtocol::Consumer;
    let sink = Arc::new(CollectingSink::default());
    let running = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&running], PARTITIONS as usize).await?;

    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        encoding: Encoding::OtlpProto,
        keyed: true,
        max_traces: Some(300),
        profile: Profile {
            error_rate: 0.2,
            ..Default::default()
        },
        seed: 7,
        keep_truth: true,
        ..Default::default()
    };
    let summary = loadgen::run(&opts).await?;
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(3)).await;
    running.stop().await?;

    let kept: std::collections::HashMap<TraceId, usize> = sink
        .take()
        .into_iter()
        .map(|c| (c.trace_id, c.spans.len()))
        .collect();
    for t in summary.truth.iter().filter(|t| t.error) {
        let id = TraceId::from_hex(&t.trace_id).context("truth trace id")?;
        ensure!(
            kept.get(&id) == Some(&t.spans),
            "error trace {id}: {:?} of {} spans kept",
            kept.get(&id),
            t.spans
        );
    }
    common::kafka::ensure_committed_to_end(&brokers, &topic, &group, PARTITIONS)
}

/// The read-back cost (README): one partition holding the decisions of a
/// 10-minute horizon at 1,000 traces/s per partition (10k traces/s over 10
/// partitions), read into a fresh cache. Prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --features integration --test decision_log_kafka -- --ignored --nocapture"]
async fn read_back_cost() -> Result<()> {
    const RECORDS: usize = 600_000;
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-decisions-cost");
    let log = Arc::new(open(settings(&brokers, &topic, 1)).await?);
    let (tx, mut acks) = mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    let mut bytes = 0usize;
    for i in 0..RECORDS {
        let decision = match i % 10 {
            0 => Decision::keep("baseline".into(), 10.0),
            _ => Decision::drop("none".into()),
        };
        let record =
            DecisionRecord::new(&decision, DecisionReason::Root, 0, (i as i64, i as i64 + 3));
        bytes += record.encoded_len() + 16;
        let ack = AckHandle::new(tx.clone(), Resolved::default());
        log.record(0, Pending::new(TraceId(rand::random()), record, ack))
            .await;
    }
    for _ in 0..RECORDS {
        acks.recv().await.context("ack channel closed")?;
    }
    let wrote = started.elapsed();
    let cache = Arc::new(DecisionCache::new(RECORDS, RECORDS));
    let started = std::time::Instant::now();
    load(&log, 0, &cache).await?;
    let read = started.elapsed();
    println!(
        "{RECORDS} decisions: {:.1} key+value bytes each; written and acknowledged in {wrote:?} \
         ({:.0}/s); read back in {read:?} ({:.0}/s)",
        bytes as f64 / RECORDS as f64,
        RECORDS as f64 / wrote.as_secs_f64(),
        RECORDS as f64 / read.as_secs_f64()
    );
    Ok(())
}

/// Cache pressure as measured against the direct-mapped cache: 60,000 kept
/// traces — fewer than the 100,000 the cache is configured for — then one
/// late span for each of the 3,000 oldest. Every late span follows its
/// trace's decision (the direct-mapped table lost 760 of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_pressure_below_capacity_loses_no_late_span() -> Result<()> {
    const TRACES: usize = 60_000;
    const LATE: usize = 3_000;
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-cache-pressure");
    let group = common::unique_name("tailsift-cache-pressure-group");
    common::kafka::create_topic(&brokers, &topic, 2).await?;
    // The first span of each trace carries the attribute; a late span
    // decided alone would be dropped.
    let policies = r#"[{"name": "marked", "type": "string_attribute",
                        "string_attribute": {"key": "keep", "values": ["yes"]}}]"#;
    let mut cfg = common::pipeline::config(&brokers, &topic, &group, policies);
    cfg.sampling.decision_cache.kept = 100_000;
    cfg.sampling.root_idle = Duration::from_millis(100);
    let sink = Arc::new(CollectingSink::default());
    let running = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&running], 2).await?;

    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let ids: Vec<TraceId> = (0..TRACES).map(|_| TraceId(rand::random())).collect();
    let root = |n: u64| tailsift::loadgen::generator::GenSpan {
        span_id: tailsift::model::SpanId((n + 1).to_be_bytes()),
        parent: tailsift::model::SpanId([0; 8]),
        service: "svc".into(),
        name: "op".into(),
        kind: 2,
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_001_000_000,
        error: false,
        attributes: vec![(
            "keep".to_string(),
            tailsift::loadgen::generator::GenValue::Str("yes".into()),
        )],
    };
    let send = |id: TraceId, span: tailsift::loadgen::generator::GenSpan| {
        let payload =
            tailsift::loadgen::encode::encode(Encoding::OtlpProto, &[(id, &span)]).remove(0);
        let key = id.to_hex();
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    };
    let sends: Vec<_> = ids.iter().map(|id| send(*id, root(0))).collect();
    for r in futures::future::join_all(sends).await {
        r?;
    }
    // Every trace decided: all 60,000 collected.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut collected = Vec::new();
    while collected.len() < TRACES {
        ensure!(
            std::time::Instant::now() < deadline,
            "only {} traces decided",
            collected.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        collected.extend(sink.take());
    }
    let late: Vec<_> = ids[..LATE]
        .iter()
        .map(|id| {
            let mut s = root(1);
            s.parent = tailsift::model::SpanId(1u64.to_be_bytes());
            s.attributes.clear();
            send(*id, s)
        })
        .collect();
    for r in futures::future::join_all(late).await {
        r?;
    }
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(2)).await;
    running.stop().await?;
    let followed: HashSet<TraceId> = sink
        .take()
        .into_iter()
        .filter(|c| &*c.decision.policy == "marked")
        .map(|c| c.trace_id)
        .collect();
    let oldest: HashSet<TraceId> = ids[..LATE].iter().copied().collect();
    let lost = oldest.difference(&followed).count();
    ensure!(lost == 0, "{lost} of {LATE} late spans found no decision");
    Ok(())
}
