//! `filter.spans` against the real broker: `/health` and `/metrics` spans
//! (the design documents' filter processor) are dropped before buffering,
//! every other span of every trace is kept, and every message still
//! resolves: the group commits each partition to its end, including
//! messages whose only span was filtered.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::pipeline::{Running, span_ids, wait_assigned};
use tailsift::config::SpanFilterConfig;
use tailsift::decode::fixtures::{SpanSpec, otlp_proto};
use tailsift::model::TraceId;
use tailsift::sink::null::CollectingSink;

const PARTITIONS: i32 = 2;
const TRACES: u8 = 40;

/// Trace `t`: a root `GET /cart` and a child in one message, then a
/// `/health` probe and a `GET /metrics` scrape as messages of their own.
fn messages(t: u8) -> Vec<(Vec<u8>, [u8; 16])> {
    let trace = [t; 16];
    let root = SpanSpec::new(trace, [1; 8])
        .service("checkout")
        .name("GET /cart")
        .attr("http.route", "/cart");
    let child = SpanSpec::new(trace, [2; 8])
        .parent([1; 8])
        .service("checkout");
    let health = SpanSpec::new(trace, [3; 8])
        .parent([1; 8])
        .service("checkout")
        .attr("http.route", "/health");
    let metrics = SpanSpec::new(trace, [4; 8])
        .parent([1; 8])
        .service("checkout")
        .name("GET /metrics");
    vec![
        (otlp_proto(&[root, child]), trace),
        (otlp_proto(&[health]), trace),
        (otlp_proto(&[metrics]), trace),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_spans_are_dropped_and_their_messages_resolve() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-filter");
    let group = common::unique_name("tailsift-filter-group");
    common::kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let mut cfg = common::pipeline::config(
        &brokers,
        &topic,
        &group,
        r#"[{"name": "all", "type": "always_sample"}]"#,
    );
    cfg.filter.spans = Some(SpanFilterConfig {
        span: vec![
            r#"attributes["http.route"] == "/health""#.into(),
            r#"IsMatch(name, "^GET /metrics$")"#.into(),
        ],
        ..Default::default()
    });
    let sink = Arc::new(CollectingSink::default());
    let running = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&running], PARTITIONS as usize).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "15000")
        .create()?;
    for t in 1..=TRACES {
        for (payload, trace) in messages(t) {
            producer
                .send(
                    FutureRecord::to(&topic).key(&trace[..]).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(3)).await;
    running.stop().await?;

    let mut kept: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
    for c in sink.take() {
        kept.entry(c.trace_id).or_default().extend(span_ids(&c));
    }
    ensure!(
        kept.len() == usize::from(TRACES),
        "{} traces kept",
        kept.len()
    );
    for (id, spans) in &kept {
        let want: HashSet<[u8; 8]> = [[1; 8], [2; 8]].into_iter().collect();
        ensure!(*spans == want, "trace {id}: kept spans {spans:?}");
    }
    let offsets = common::kafka::committed_vs_end(&brokers, &topic, &group, PARTITIONS)?;
    println!("committed vs end: {offsets:?}");
    ensure!(
        offsets.iter().all(|(c, end)| c == end && *end > 0),
        "unresolved messages: {offsets:?}"
    );
    Ok(())
}
