//! The benchmark topic: created fresh per run, its end offsets, and a
//! consume-to-the-end loop shared by the bare scan loop and the bulk loader.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tailsift::config::{Config, KafkaConfig};
use tailsift::plan::{PREFETCH_PROPERTY, Plan};

const TIMEOUT: Duration = Duration::from_secs(10);

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    for r in admin(brokers)?.create_topics(&topics, &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    Ok(())
}

pub async fn delete_topic(brokers: &str, topic: &str) -> Result<()> {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for r in admin(brokers)?.delete_topics(&[topic], &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("delete topic {t}: {e}"))?;
    }
    Ok(())
}

/// The high watermark of every partition of `topic`, by partition number.
pub fn end_offsets(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i64>> {
    let meta = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions = meta
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .context("topic not in metadata")?;
    (0..partitions as i32)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, TIMEOUT)?.1))
        .collect()
}

/// Sum of the high watermarks: the number of messages of a fresh topic.
pub fn message_count(brokers: &str, topic: &str) -> Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    Ok(end_offsets(&c, topic)?.iter().sum())
}

/// What a consumer group has committed on a topic: how far a contender
/// got that commits offsets to Kafka.
pub struct Committed {
    consumer: BaseConsumer,
    partitions: TopicPartitionList,
}

impl Committed {
    pub fn new(brokers: &str, group: &str, topic: &str) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()?;
        let mut partitions = TopicPartitionList::new();
        for p in 0..end_offsets(&consumer, topic)?.len() {
            partitions.add_partition(topic, p as i32);
        }
        Ok(Self {
            consumer,
            partitions,
        })
    }

    /// The sum of the committed offsets (a partition without one counts 0).
    pub fn total(&self) -> Result<i64> {
        let got = self
            .consumer
            .committed_offsets(self.partitions.clone(), TIMEOUT)
            .context("committed offsets")?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum())
    }
}

fn metadata_client(cfg: &KafkaConfig) -> Result<BaseConsumer> {
    Ok(tailsift::source::client_config(cfg).create()?)
}

/// tailsift's consumer settings for a loop that reads every partition from
/// one queue: librdkafka bounds the prefetch per queue and tailsift gives
/// each partition a queue of its own, so the one queue gets the bound of
/// all partitions together (else the ceiling would be throttled by it).
fn single_queue_config(cfg: &Config, partitions: usize) -> Result<ClientConfig> {
    let per_partition = Plan::resolve(cfg)?.prefetch.per_partition(partitions);
    let mut c = tailsift::source::consumer_config(&cfg.kafka);
    let kib = per_partition / 1024 * partitions.max(1) as u64;
    c.set(PREFETCH_PROPERTY, kib.to_string());
    Ok(c)
}

/// When the first and the last message arrived.
pub struct Consumed {
    pub first: Instant,
    pub last: Instant,
    pub messages: u64,
}

/// Reads `cfg.topic` from the beginning to the end offsets it has now, as a
/// member of the fresh group `cfg.group_id` with tailsift's own consumer
/// settings, and hands every message to `f`.
pub fn consume_to_end(
    config: &Config,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<Consumed> {
    let cfg = &config.kafka;
    let ends = end_offsets(&metadata_client(cfg)?, &cfg.topic)?;
    let consumer: BaseConsumer = single_queue_config(config, ends.len())?.create()?;
    let mut next = vec![0i64; ends.len()];
    consumer.subscribe(&[&cfg.topic])?;
    let started = Instant::now();
    let mut first = None;
    let mut messages = 0;
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("still not at the end of {} after an hour", cfg.topic);
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(m) => m.context("consume")?,
        };
        first.get_or_insert_with(Instant::now);
        messages += 1;
        if let Some(n) = next.get_mut(m.partition() as usize) {
            *n = m.offset() + 1;
        }
        f(&m);
    }
    Ok(Consumed {
        first: first.unwrap_or(started),
        last: Instant::now(),
        messages,
    })
}
