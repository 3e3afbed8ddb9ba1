//! Reading a partition's recent decisions back into the decision cache.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::LogSettings;
use super::record::DecisionRecord;
use crate::model::TraceId;
use crate::window::{DecisionCache, Found};

const POLL: Duration = Duration::from_millis(200);
/// Reading back is bounded: past this a partition starts with what was
/// read (late spans of the rest are decided alone, and counted so).
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What one read-back found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub records: u64,
    /// Records that were not decision records (skipped).
    pub invalid: u64,
    pub complete: bool,
}

pub fn load(s: &LogSettings, partition: i32, cache: &DecisionCache) -> Result<Loaded, KafkaError> {
    let started = Instant::now();
    let consumer: BaseConsumer = s
        .client
        .clone()
        .set("group.id", "tailsift-decision-log-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(&s.topic, partition, super::METADATA_TIMEOUT)?;
    let Some(start) = start_offset(&consumer, s, partition)? else {
        return Ok(Loaded {
            complete: true,
            ..Loaded::default()
        });
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&s.topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let mut loaded = Loaded::default();
    let mut next = start;
    while next < high && started.elapsed() < LOAD_TIMEOUT {
        let Some(m) = consumer.poll(POLL) else {
            continue;
        };
        let m = m?;
        next = m.offset() + 1;
        match decode(m.key(), m.payload()) {
            Some((id, record)) => {
                cache.remember(&id, &record.decision(), Found::Log);
                loaded.records += 1;
            }
            None => loaded.invalid += 1,
        }
    }
    loaded.complete = next >= high;
    metrics::counter!("tailsift_decision_log_loaded_total").increment(loaded.records);
    metrics::histogram!("tailsift_decision_log_load_seconds")
        .record(started.elapsed().as_secs_f64());
    tracing::info!(partition, records = loaded.records, invalid = loaded.invalid,
        complete = loaded.complete, took = ?started.elapsed(), "decisions read back");
    Ok(loaded)
}

/// The first offset within the horizon, or None when nothing is that recent.
fn start_offset(
    consumer: &BaseConsumer,
    s: &LogSettings,
    partition: i32,
) -> Result<Option<i64>, KafkaError> {
    let since = SystemTime::now()
        .checked_sub(s.horizon)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&s.topic, partition, Offset::Offset(since))?;
    let found = consumer.offsets_for_times(tpl, super::METADATA_TIMEOUT)?;
    Ok(found.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<(TraceId, DecisionRecord)> {
    let id = TraceId::from_slice(key?)?;
    let record = DecisionRecord::decode(value?).ok()?;
    Some((id, record))
}
