//! tailsift through a secured broker: the local stack's SASL_SSL listener (SCRAM-SHA-512
//! user, broker certificate from the stack's CA) and its mTLS listener (client
//! certificate required). Everything talks through the secured listener under test,
//! with the settings a deployment puts in `kafka.properties`: the load generator's
//! producer, the repartition consumer and producer, the sampling consumer and its
//! commits, and the dead-letter producer. Unkeyed input with garbage goes in; every
//! span must come out, every bad message must be in the dead-letter topic, and both
//! groups must have committed to the end.
//!
//! Needs `KAFKA_SASL_SSL_PORT=… KAFKA_MTLS_PORT=… deploy/local/stack.sh up` and the
//! variables its `env` prints (`KAFKA_SASL_SSL_BROKERS`, `KAFKA_MTLS_BROKERS`,
//! `KAFKA_CA_FILE`, …); in CI a missing listener fails the test, elsewhere it skips.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use common::pipeline::{Running, span_ids, wait_assigned};
use tailsift::config::{Repartition, RepartitionConfig};
use tailsift::decode::Encoding;
use tailsift::loadgen::{self, LoadOptions};
use tailsift::model::TraceId;
use tailsift::sink::null::CollectingSink;

const PARTITIONS: i32 = 3;

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The listener's brokers and client settings, from the stack's `env` output.
fn listener(brokers_var: &str, settings: &[(&str, &str)]) -> Result<Option<(String, Props)>> {
    let Some(brokers) = env(brokers_var) else {
        if common::in_ci() {
            bail!(
                "{brokers_var} is unset: start the stack with the secured listeners ({})",
                common::START_HINT
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {brokers_var} unset (KAFKA_SASL_SSL_PORT=… KAFKA_MTLS_PORT=… deploy/local/stack.sh up)"
        );
        return Ok(None);
    };
    let mut props = Props::new();
    for (key, from) in settings {
        // A value is either literal or `$VAR`, read from the stack's environment.
        let value = match from.strip_prefix('$') {
            Some(var) => env(var).with_context(|| format!("{var} is unset"))?,
            None => from.to_string(),
        };
        props.insert(key.to_string(), value);
    }
    Ok(Some((brokers, props)))
}

type Props = BTreeMap<String, String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sasl_ssl_with_scram() -> Result<()> {
    let settings = [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "$KAFKA_SCRAM_USER"),
        ("sasl.password", "$KAFKA_SCRAM_PASSWORD"),
        ("ssl.ca.location", "$KAFKA_CA_FILE"),
    ];
    let Some((brokers, props)) = listener("KAFKA_SASL_SSL_BROKERS", &settings)? else {
        return Ok(());
    };
    let mut wrong = props.clone();
    wrong.insert("sasl.password".into(), "not-the-password".into());
    ensure_refused(&brokers, &wrong).context("SASL_SSL with a wrong password")?;
    run_through("sasl_ssl", &brokers, props).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_mtls() -> Result<()> {
    let settings = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", "$KAFKA_CA_FILE"),
        ("ssl.certificate.location", "$KAFKA_CLIENT_CERT"),
        ("ssl.key.location", "$KAFKA_CLIENT_KEY"),
    ];
    let Some((brokers, props)) = listener("KAFKA_MTLS_BROKERS", &settings)? else {
        return Ok(());
    };
    let mut anonymous = props.clone();
    anonymous.retain(|k, _| k != "ssl.certificate.location" && k != "ssl.key.location");
    ensure_refused(&brokers, &anonymous).context("TLS without a client certificate")?;
    run_through("mtls", &brokers, props).await
}

/// The whole path through `brokers` with `props`; setup and checks go through the
/// plaintext listener of the same broker.
async fn run_through(name: &str, brokers: &str, props: Props) -> Result<()> {
    let plain = common::kafka_brokers();
    let input = common::unique_name(&format!("tailsift-{name}-in"));
    let internal = common::unique_name(&format!("tailsift-{name}-bytrace"));
    let dead_letters = common::unique_name(&format!("tailsift-{name}-dlq"));
    let group = common::unique_name(&format!("tailsift-{name}-group"));
    for t in [&input, &internal] {
        common::kafka::create_topic(&plain, t, PARTITIONS).await?;
    }
    common::kafka::create_topic(&plain, &dead_letters, 1).await?;

    let mut cfg = common::pipeline::config(brokers, &internal, &group, "[]");
    cfg.kafka.properties.extend(props.clone());
    cfg.kafka.repartition = Some(Repartition::Topic(RepartitionConfig {
        input_topic: input.clone(),
    }));
    cfg.kafka.dead_letter_topic = Some(dead_letters.clone());
    let sink = Arc::new(CollectingSink::default());
    // The Kafka dead-letter producer the service builds from the config.
    let plan = tailsift::plan::Plan::resolve(&cfg)?;
    let dead = tailsift::app::dead_letters(&cfg, &plan).await?;
    let member = Running::start_with(&cfg, sink.clone(), dead)?;
    wait_assigned(&[&member], PARTITIONS as usize).await?;

    let opts = LoadOptions {
        brokers: brokers.to_string(),
        properties: props,
        topic: input.clone(),
        encoding: Encoding::OtlpProto,
        keyed: false,
        traces_per_message: 4,
        rate: 0.0,
        max_traces: Some(60),
        garbage_rate: 0.2,
        seed: 13,
        keep_truth: true,
        ..Default::default()
    };
    let summary = loadgen::run(&opts).await?;
    ensure!(
        summary.failed_messages == 0,
        "{name}: loadgen could not produce"
    );
    ensure!(summary.garbage_messages > 0, "{name}: no garbage generated");
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(4)).await;
    member.stop().await?;

    // Every span of every trace (the policy list is empty: everything is kept).
    let mut kept: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
    for c in sink.take() {
        kept.entry(c.trace_id).or_default().extend(span_ids(&c));
    }
    for t in &summary.truth {
        let id = TraceId::from_hex(&t.trace_id).context("truth id")?;
        let got = kept.get(&id).map_or(0, HashSet::len);
        ensure!(
            got == t.spans,
            "{name}: trace {id}: {got} of {} spans",
            t.spans
        );
    }
    // Every bad message is a dead letter.
    let letters = end_offset(&plain, &dead_letters)?;
    ensure!(
        letters == summary.garbage_messages as i64,
        "{name}: {letters} dead letters for {} garbage messages",
        summary.garbage_messages
    );
    // Both groups committed everything.
    for (topic, group) in [(&input, format!("{group}-repartition")), (&internal, group)] {
        for (p, (committed, end)) in
            common::kafka::committed_vs_end(&plain, topic, &group, PARTITIONS)?
                .iter()
                .enumerate()
        {
            let resolved = committed == end || (*end == 0 && *committed < 0);
            ensure!(
                resolved,
                "{name}: {topic}/{p}: committed {committed}, end {end}"
            );
        }
    }
    common::report(&format!(
        "secured Kafka, {name}: {} traces ({} spans) repartitioned and kept whole, {letters} \
         dead letters, all offsets committed",
        summary.traces, summary.spans
    ));
    Ok(())
}

/// The listener really is secured: these settings get no metadata from it.
fn ensure_refused(brokers: &str, props: &Props) -> Result<()> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create()?;
    let answer = consumer.fetch_metadata(None, Duration::from_secs(5));
    ensure!(
        answer.is_err(),
        "the broker answered: {:?}",
        answer.map(|m| m.orig_broker_name().to_string())
    );
    Ok(())
}

/// Messages in the one-partition `topic`.
fn end_offset(brokers: &str, topic: &str) -> Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let (_, high) = c.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    Ok(high)
}
