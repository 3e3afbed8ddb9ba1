//! Repartition mode on the real broker: unkeyed OTLP batches whose traces are
//! spread over messages and partitions are re-keyed by trace ID, so every
//! error trace is still kept whole.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use common::pipeline::{Running, span_ids, wait_assigned};
use tailsift::config::{Repartition, RepartitionConfig};
use tailsift::decode::Encoding;
use tailsift::loadgen::{self, LoadOptions, generator::Profile};
use tailsift::model::TraceId;
use tailsift::sink::null::CollectingSink;

const PARTITIONS: i32 = 6;
const ERRORS_ONLY: &str =
    r#"[{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_input_is_rekeyed_and_sampled_whole() -> Result<()> {
    let brokers = common::kafka_brokers();
    let input = common::unique_name("tailsift-unkeyed");
    let internal = common::unique_name("tailsift-bytrace");
    let group = common::unique_name("tailsift-repartition-group");
    common::kafka::create_topic(&brokers, &input, PARTITIONS).await?;
    common::kafka::create_topic(&brokers, &internal, PARTITIONS).await?;
    let mut cfg = common::pipeline::config(&brokers, &internal, &group, ERRORS_ONLY);
    cfg.kafka.repartition = Some(Repartition::Topic(RepartitionConfig {
        input_topic: input.clone(),
    }));

    let sink = Arc::new(CollectingSink::default());
    let member = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&member], PARTITIONS as usize).await?;

    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: input.clone(),
        encoding: Encoding::OtlpProto,
        keyed: false,
        traces_per_message: 5,
        rate: 0.0,
        max_traces: Some(300),
        profile: Profile {
            error_rate: 0.2,
            ..Default::default()
        },
        seed: 9,
        keep_truth: true,
        ..Default::default()
    };
    let summary = loadgen::run(&opts).await?;
    println!("produced unkeyed: {}", summary.table());
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(4)).await;
    member.stop().await?;

    let mut kept: HashMap<TraceId, Vec<[u8; 8]>> = HashMap::new();
    for c in sink.take() {
        kept.entry(c.trace_id).or_default().extend(span_ids(&c));
    }
    let mut errors = 0;
    for t in summary.truth.iter().filter(|t| t.error) {
        errors += 1;
        let id = TraceId::from_hex(&t.trace_id).context("truth id")?;
        let spans = kept
            .get(&id)
            .with_context(|| format!("error trace {id} lost"))?;
        let unique: HashSet<_> = spans.iter().collect();
        ensure!(
            unique.len() == t.spans,
            "error trace {id}: {} of {} spans kept",
            unique.len(),
            t.spans
        );
    }
    println!(
        "{errors} error traces kept whole out of {} traces",
        summary.truth.len()
    );
    ensure!(errors > 20, "too few error traces generated: {errors}");
    for (p, (committed, end)) in common::kafka::committed_vs_end(
        &brokers,
        &input,
        &format!("{group}-repartition"),
        PARTITIONS,
    )?
    .iter()
    .enumerate()
    {
        // A partition that never received a message has nothing to commit.
        let resolved = committed == end || (*end == 0 && *committed < 0);
        ensure!(
            resolved,
            "input partition {p}: committed {committed}, end {end}"
        );
    }
    Ok(())
}
