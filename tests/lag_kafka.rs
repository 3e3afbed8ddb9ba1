//! Lag in seconds and offsets below the log start, measured by
//! `source::lag::LagProbe` on the real broker: messages with Kafka
//! timestamps two minutes old, a caught-up partition, an empty one, and
//! records deleted from under a watermark (what retention does during a
//! long outage). Needs `deploy/local/stack.sh up` (KAFKA_BROKERS).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tailsift::config::KafkaConfig;
use tailsift::source::lag::{self, LagProbe, PartitionLag};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn probe(cfg: &KafkaConfig, at: Vec<(i32, i64)>) -> Result<Vec<PartitionLag>> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || LagProbe::new(&cfg)?.probe(&at))
        .await?
        .context("probe")
}

#[tokio::test]
async fn lag_seconds_retention_and_offsets_below_the_log_start() -> Result<()> {
    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-lag");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(&topic, 2, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    for r in admin.create_topics([&new], &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    let cfg = KafkaConfig {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group_id: common::unique_name("tailsift-lag-group"),
        ..Default::default()
    };
    ensure!(lag::retention(&cfg).await? == Some(Duration::from_secs(3600)));

    // Ten messages on partition 0, written two minutes ago, a second apart.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let then = now_ms() - 120_000;
    for i in 0..10i64 {
        let record = FutureRecord::to(&topic)
            .partition(0)
            .key("k")
            .payload("span bytes")
            .timestamp(then + i * 1000);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }

    // Watermark 3 on partition 0: its message is ~117 s old. Partition 1 is
    // empty and the group never committed: nothing is waiting.
    let m = probe(&cfg, vec![(0, 3), (1, -1)]).await?;
    ensure!((110.0..140.0).contains(&m[0].seconds), "{m:?}");
    ensure!(m[0].below_log_start() == 0 && m[0].log_start == 0, "{m:?}");
    ensure!(m[1].seconds == 0.0 && m[1].position.is_none(), "{m:?}");
    // Caught up: nothing unresolved.
    let m = probe(&cfg, vec![(0, 10)]).await?;
    ensure!(m[0].seconds == 0.0, "{m:?}");

    // Records below offset 6 deleted while the watermark is still 3.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(6))?;
    admin.delete_records(&tpl, &opts).await?;
    let m = probe(&cfg, vec![(0, 3)]).await?;
    ensure!(m[0].log_start == 6 && m[0].below_log_start() == 3, "{m:?}");
    // The oldest message that is left is the one measured: ~114 s.
    ensure!((105.0..137.0).contains(&m[0].seconds), "{m:?}");
    Ok(())
}
