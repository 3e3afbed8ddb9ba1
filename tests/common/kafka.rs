//! Kafka helpers for pipeline tests: topics and committed offsets.

use std::time::Duration;

use anyhow::Result;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    for r in admin.create_topics(&topics, &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Per partition: the group's committed offset (-1 if none) and the end.
pub fn committed_vs_end(
    brokers: &str,
    topic: &str,
    group: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
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

/// Fails unless the group committed every partition to its end offset:
/// every message resolved.
pub fn ensure_committed_to_end(
    brokers: &str,
    topic: &str,
    group: &str,
    partitions: i32,
) -> Result<()> {
    for (p, (committed, end)) in committed_vs_end(brokers, topic, group, partitions)?
        .iter()
        .enumerate()
    {
        anyhow::ensure!(
            committed == end,
            "partition {p}: committed {committed}, end {end}"
        );
    }
    Ok(())
}
