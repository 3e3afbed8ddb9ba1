//! Proves the local harness runs a REAL Kafka broker: admin, produce, consume in a
//! consumer group, commit, and resume from the committed offsets in a second consumer.
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common/mod.rs).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

fn consumer(brokers: &str, group: &str, topic: &str) -> Result<StreamConsumer> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

async fn produce(producer: &FutureProducer, topic: &str, batch: &str, n: usize) -> Result<()> {
    for i in 0..n {
        let key = format!("trace-{i}");
        let payload = format!("{batch}-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing {payload}"))?;
        ensure!(
            delivery.offset >= 0,
            "bad offset for {payload}: {delivery:?}"
        );
    }
    Ok(())
}

/// Receives until `want` distinct payloads have arrived, then keeps listening for
/// `linger` to catch anything unexpected. Returns every payload seen.
async fn receive(c: &StreamConsumer, want: usize, linger: Duration) -> Result<Vec<String>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, c.recv())
            .await
            .with_context(|| format!("timed out after {TIMEOUT:?}; got {got:?}"))??;
        got.push(String::from_utf8(
            msg.payload().unwrap_or_default().to_vec(),
        )?);
    }
    while let Ok(msg) = tokio::time::timeout(linger, c.recv()).await {
        got.push(String::from_utf8(
            msg?.payload().unwrap_or_default().to_vec(),
        )?);
    }
    Ok(got)
}

fn committed_total(c: &StreamConsumer, topic: &str) -> Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut total = 0;
    for e in committed.elements() {
        match e.offset() {
            Offset::Offset(o) => total += o,
            Offset::Invalid => {}
            other => bail!("unexpected committed offset {other:?} on {e:?}"),
        }
    }
    Ok(total)
}

/// Dropping a StreamConsumer blocks (~100 ms, leaves the group): do it off the executor.
async fn close(c: StreamConsumer) {
    tokio::task::spawn_blocking(move || {
        c.unsubscribe();
        drop(c);
    })
    .await
    .expect("close consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_produce_consume_commit_resume_in_group() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-harness");
    let group = common::unique_name("tailsift-harness-group");

    let admin = admin(&brokers)?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .with_context(|| {
            format!(
                "no metadata from Kafka at {brokers}; {}",
                common::START_HINT
            )
        })?;
    let brokers_seen: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("id={} {}:{}", b.id(), b.host(), b.port()))
        .collect();
    common::report(&format!(
        "kafka at {brokers}: metadata from {}: brokers [{}], {} topics (jaeger-spans present: {})",
        md.orig_broker_name(),
        brokers_seen.join(", "),
        md.topics().len(),
        md.topics().iter().any(|t| t.name() == "jaeger-spans"),
    ));
    ensure!(!md.brokers().is_empty(), "broker list is empty");

    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await?;
    for r in created {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    common::report(&format!(
        "created topic {topic} with {PARTITIONS} partitions"
    ));

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "15000")
        .set("enable.idempotence", "true")
        .create()?;

    // Batch A: consumed and committed by the first group member.
    produce(&producer, &topic, "a", 9).await?;
    let c1 = consumer(&brokers, &group, &topic)?;
    let mut got_a = receive(&c1, 9, Duration::from_millis(500)).await?;
    got_a.sort();
    let mut want_a: Vec<String> = (0..9).map(|i| format!("a-{i}")).collect();
    want_a.sort();
    assert_eq!(got_a, want_a, "first consumer must see exactly batch A");
    c1.commit_consumer_state(CommitMode::Sync)?;
    let committed = committed_total(&c1, &topic)?;
    common::report(&format!(
        "consumer 1 (group {group}) read {} messages, committed offsets sum {committed}",
        got_a.len()
    ));
    assert_eq!(
        committed, 9,
        "committed offsets must cover all 9 messages of batch A"
    );
    close(c1).await;

    // Batch B: a new member of the same group must resume after the committed offsets.
    produce(&producer, &topic, "b", 6).await?;
    let c2 = consumer(&brokers, &group, &topic)?;
    let got_b = receive(&c2, 6, Duration::from_secs(2)).await?;
    let got_b_set: BTreeSet<String> = got_b.iter().cloned().collect();
    let want_b: BTreeSet<String> = (0..6).map(|i| format!("b-{i}")).collect();
    assert_eq!(
        got_b.len(),
        6,
        "duplicates or extra messages after resume: {got_b:?}"
    );
    assert_eq!(
        got_b_set, want_b,
        "second consumer must resume exactly after batch A"
    );
    c2.commit_consumer_state(CommitMode::Sync)?;
    assert_eq!(committed_total(&c2, &topic)?, 15);
    common::report(&format!(
        "consumer 2 (same group) resumed: read {got_b:?}, committed offsets sum 15"
    ));
    close(c2).await;

    let deleted = admin.delete_topics(&[&topic], &opts).await?;
    for r in deleted {
        r.map_err(|(t, e)| anyhow::anyhow!("delete topic {t}: {e}"))?;
    }
    Ok(())
}
