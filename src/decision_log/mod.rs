//! The decision log: every trace decision recorded on a Kafka topic, so
//! that late spans follow their trace's decision in whichever process owns
//! the partition next — after a restart, a crash or a rebalance — and not
//! only in the process that decided.
//!
//! One small record per decided trace, keyed by trace ID, written to the
//! decisions partition with the input partition's number (modulo the
//! decisions topic's partition count), so the owner of input partition p
//! reads one decisions partition. A message of the input counts as
//! resolved only once the records of the traces it starts are
//! acknowledged (`source` defers its resolution until then). On
//! assignment, before its first message, a partition's recent decisions
//! (`sampling.decision_cache.horizon`) are read back into the decision
//! cache.
//!
//! Owns: the record format (`record`), the topic (created if missing), the
//! producer with its delivery tracking and retries (`writer`), and the
//! read-back (`loader`).

mod loader;
pub mod record;
mod writer;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

pub use loader::Loaded;
pub use writer::Writer;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    #[error("decision log topic {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("decision log topic {0} has no partitions")]
    NoPartitions(String),
}

/// Where the log lives and how to reach it.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Brokers and security settings shared with the consumer.
    pub client: ClientConfig,
    pub topic: String,
    /// Partitions of the input topic: a missing decisions topic is created
    /// with as many (-1: unknown, the broker's default count).
    pub input_partitions: i32,
    pub horizon: Duration,
}

/// The decision log of one input topic.
pub struct DecisionLog {
    settings: LogSettings,
    partitions: i32,
    writer: Writer,
}

impl DecisionLog {
    /// Creates the topic if missing, then the producer. Blocks on the
    /// network: call it off the async workers.
    pub fn open(settings: LogSettings) -> Result<Self, DecisionLogError> {
        let err = |source| DecisionLogError::Kafka {
            topic: settings.topic.clone(),
            source,
        };
        let partitions = match topic_partitions(&settings.client, &settings.topic).map_err(err)? {
            Some(n) => n,
            None => {
                create_topic(&settings).map_err(err)?;
                topic_partitions(&settings.client, &settings.topic)
                    .map_err(err)?
                    .ok_or_else(|| DecisionLogError::NoPartitions(settings.topic.clone()))?
            }
        };
        if partitions < settings.input_partitions {
            tracing::warn!(topic = %settings.topic, partitions, input = settings.input_partitions,
                "decision log has fewer partitions than the input: input partitions share them");
        }
        let writer = Writer::new(&settings.client, &settings.topic).map_err(err)?;
        tracing::info!(topic = %settings.topic, partitions, horizon = ?settings.horizon, "decision log");
        Ok(Self {
            settings,
            partitions,
            writer,
        })
    }

    /// The decisions partition of an input partition.
    fn partition_of(&self, input: i32) -> i32 {
        input.rem_euclid(self.partitions)
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Records a decision of input partition `input` (see [`Writer::record`]).
    pub async fn record(&self, input: i32, pending: writer::Pending) {
        self.writer.record(self.partition_of(input), pending).await;
    }

    /// Reads the decisions of input partition `input` from the last
    /// horizon into `cache`. Blocks: call it off the async workers.
    pub fn load(
        &self,
        input: i32,
        cache: &crate::window::DecisionCache,
    ) -> Result<Loaded, DecisionLogError> {
        let partition = self.partition_of(input);
        loader::load(&self.settings, partition, cache).map_err(|source| DecisionLogError::Kafka {
            topic: self.settings.topic.clone(),
            source,
        })
    }
}

pub use writer::Pending;

/// The partition count of `topic`, or None if it does not exist.
fn topic_partitions(client: &ClientConfig, topic: &str) -> Result<Option<i32>, KafkaError> {
    let consumer: BaseConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
        None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
        Some(code) => Err(KafkaError::MetadataFetch(code)),
    }
}

/// Compacted (a replay's second record of a trace replaces the first) and
/// deleted after three horizons: only the last horizon is ever read.
fn create_topic(s: &LogSettings) -> Result<(), KafkaError> {
    let retention = (s.horizon * 3).max(Duration::from_secs(1800));
    let retention_ms = retention.as_millis().to_string();
    let configs = [
        ("cleanup.policy", "compact,delete"),
        ("retention.ms", retention_ms.as_str()),
    ];
    let created = futures::executor::block_on(crate::topics::ensure_topic(
        &s.client,
        &s.topic,
        s.input_partitions,
        &configs,
    ))?;
    if created {
        tracing::info!(topic = %s.topic, partitions = s.input_partitions, "created the decision log topic");
    }
    Ok(())
}
