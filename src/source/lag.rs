//! Lag in seconds against the topic's retention, and offsets that fell
//! below the log start.
//!
//! Lag in messages does not say whether data is at risk: during an
//! Elasticsearch outage tailsift pauses and waits, and what matters is
//! whether the oldest message it has not resolved is deleted by retention
//! first. So every [`PROBE_EVERY`] this reads, per assigned partition, the
//! Kafka timestamp of the message at the partition's watermark (its oldest
//! unresolved offset; before the first one, the group's committed offset)
//! and compares it with now; the topic's `retention.ms` is exported beside
//! it. A watermark (or, before it has one, the group's committed offset)
//! below the log start means retention deleted messages tailsift had not
//! resolved: no replay can bring them back, and librdkafka's
//! `auto.offset.reset` skips them silently. They are counted as lost and
//! logged. Those the partition task fetched before the deletion are still
//! buffered and get written if it stays up; the count is the upper bound,
//! what a restart or rebalance then loses.
//! On assignment the probe runs at once, before the partition's task
//! starts, so a restart whose committed offset already lies below the log
//! start is caught before this instance commits past it.
//!
//! Reads go through a consumer of its own that never joins the group or
//! commits (`assign`, not `subscribe`), with small fetches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Registry;
use crate::config::KafkaConfig;

/// How often lag seconds are measured.
pub const PROBE_EVERY: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    /// Age of the oldest unresolved message; 0 when caught up.
    pub seconds: f64,
    /// The oldest unresolved offset: the watermark, else the committed
    /// offset; None if neither exists yet.
    pub position: Option<i64>,
    /// The partition's first offset still in the log.
    pub log_start: i64,
}

impl PartitionLag {
    /// Unresolved messages retention deleted.
    pub fn below_log_start(&self) -> i64 {
        self.position.map_or(0, |p| (self.log_start - p).max(0))
    }
}

/// Reads timestamps and watermarks of one topic.
pub struct LagProbe {
    consumer: BaseConsumer,
    topic: String,
}

impl LagProbe {
    pub fn new(cfg: &KafkaConfig) -> KafkaResult<Self> {
        let consumer = super::client_config(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // One message's timestamp is needed, not a prefetch.
            .set("fetch.message.max.bytes", "65536")
            .set("queued.max.messages.kbytes", "1024")
            .create()?;
        Ok(Self {
            consumer,
            topic: cfg.topic.clone(),
        })
    }

    /// Measures each `(partition, watermark)`; a watermark below 0 means
    /// none yet, and the group's committed offset (else the log start)
    /// stands for it. Blocks on the network.
    pub fn probe(&self, watermarks: &[(i32, i64)]) -> KafkaResult<Vec<PartitionLag>> {
        let committed = self.committed(watermarks)?;
        let mut out = Vec::with_capacity(watermarks.len());
        let mut fetch = TopicPartitionList::new();
        for &(partition, watermark) in watermarks {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            let position = match watermark {
                w if w >= 0 => Some(w),
                _ => committed.get(&partition).copied(),
            };
            let oldest = position.unwrap_or(low).max(low);
            if oldest < high {
                fetch.add_partition_offset(&self.topic, partition, Offset::Offset(oldest))?;
            }
            out.push(PartitionLag {
                partition,
                seconds: 0.0,
                position,
                log_start: low,
            });
        }
        if fetch.count() > 0 {
            let ages = self.ages(&fetch)?;
            for lag in &mut out {
                lag.seconds = ages.get(&lag.partition).copied().unwrap_or(0.0);
            }
        }
        Ok(out)
    }

    /// The group's committed offsets of the partitions without a watermark.
    fn committed(&self, watermarks: &[(i32, i64)]) -> KafkaResult<HashMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _) in watermarks.iter().filter(|(_, w)| *w < 0) {
            tpl.add_partition(&self.topic, p);
        }
        if tpl.count() == 0 {
            return Ok(HashMap::new());
        }
        let committed = self.consumer.committed_offsets(tpl, TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// Seconds since the timestamp of the first message fetched from each
    /// partition at its offset in `at`.
    fn ages(&self, at: &TopicPartitionList) -> KafkaResult<HashMap<i32, f64>> {
        self.consumer.assign(at)?;
        let wanted = at.count();
        let mut ages = HashMap::new();
        let deadline = Instant::now() + TIMEOUT;
        while ages.len() < wanted && Instant::now() < deadline {
            let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            if let Some(ts) = m.timestamp().to_millis() {
                ages.entry(m.partition()).or_insert_with(|| age_seconds(ts));
            }
        }
        self.consumer.unassign()?;
        Ok(ages)
    }
}

fn age_seconds(timestamp_ms: i64) -> f64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    ((now_ms - timestamp_ms) as f64 / 1000.0).max(0.0)
}

/// The topic's `retention.ms`; None when unlimited (-1) or unreadable.
pub async fn retention(cfg: &KafkaConfig) -> KafkaResult<Option<Duration>> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(cfg).create()?;
    let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let topic = [ResourceSpecifier::Topic(&cfg.topic)];
    let described = admin.describe_configs(&topic, &opts).await?;
    let ms = described
        .into_iter()
        .flatten()
        .find_map(|r| r.get("retention.ms").and_then(|e| e.value.clone()))
        .and_then(|v| v.parse::<i64>().ok());
    Ok(ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis))
}

/// Exports the topic's retention (`tailsift_topic_retention_seconds`), read
/// once at start-up, before partitions are assigned, so the gauge is there
/// when the service is ready.
pub async fn report_retention(cfg: &KafkaConfig) {
    match retention(cfg).await {
        Ok(Some(r)) => metrics::gauge!("tailsift_topic_retention_seconds").set(r.as_secs_f64()),
        Ok(None) => tracing::info!(topic = %cfg.topic, "topic retention unlimited or unknown"),
        Err(e) => {
            tracing::warn!(topic = %cfg.topic, error = %e, "cannot read the topic's retention")
        }
    }
}

/// Lost messages counted so far per partition: up to which offset.
#[derive(Default)]
struct LostCount(HashMap<i32, i64>);

impl LostCount {
    /// Messages below the log start not counted before. The position stays
    /// below it until the partition task resolves the next message.
    fn newly_lost(&mut self, lag: &PartitionLag) -> i64 {
        let Some(position) = lag.position else {
            return 0;
        };
        let counted = self.0.entry(lag.partition).or_insert(position);
        let new = lag.log_start - (*counted).max(position);
        *counted = (*counted).max(lag.log_start);
        new.max(0)
    }
}

/// Measures the assigned partitions every [`PROBE_EVERY`] and on every
/// assignment, and exports `tailsift_partition_lag_seconds`,
/// `tailsift_lost_messages_total`, and the group's committed offset of
/// partitions this instance has not committed yet. Runs until dropped.
pub async fn watch(cfg: KafkaConfig, registry: Arc<Registry>) {
    let probe = match LagProbe::new(&cfg) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the lag probe; no lag in seconds");
            return;
        }
    };
    let mut lost = LostCount::default();
    let mut reported: Vec<i32> = Vec::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Also at once on assignment: a new partition has no watermark yet,
        // so the probe reads the group's committed offset before this
        // instance commits over it, and sees whether it lies below the log
        // start (a restart after a long outage).
        tokio::select! {
            _ = tick.tick() => {}
            _ = registry.assigned.notified() => {}
        }
        let watermarks: Vec<(i32, i64)> = registry
            .handles()
            .iter()
            .map(|h| {
                (
                    h.partition,
                    h.watermark.load(std::sync::atomic::Ordering::Acquire),
                )
            })
            .collect();
        let p = probe.clone();
        let asked = watermarks.clone();
        let measured = match tokio::task::spawn_blocking(move || p.probe(&asked)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lag probe failed");
                continue;
            }
            Err(_) => continue,
        };
        for (lag, &(_, watermark)) in measured.iter().zip(&watermarks) {
            report(lag, lost.newly_lost(lag));
            // Until this instance commits, the group's committed offset is
            // what the gauge should show (it starts at 0, see `baseline`; the
            // probe on assignment sets it).
            if let (true, Some(committed)) = (watermark < 0, lag.position) {
                metrics::gauge!("tailsift_committed_offset", "partition" => lag.partition.to_string())
                    .set(committed as f64);
            }
        }
        // Revoked partitions: their new owner reports them.
        for gone in reported
            .iter()
            .filter(|p| !watermarks.iter().any(|(q, _)| q == *p))
        {
            metrics::gauge!("tailsift_partition_lag_seconds", "partition" => gone.to_string())
                .set(0.0);
        }
        reported = watermarks.iter().map(|(p, _)| *p).collect();
    }
}

fn report(lag: &PartitionLag, newly_lost: i64) {
    let p = lag.partition.to_string();
    metrics::gauge!("tailsift_partition_lag_seconds", "partition" => p.clone()).set(lag.seconds);
    if newly_lost > 0 {
        metrics::counter!("tailsift_lost_messages_total", "partition" => p)
            .increment(newly_lost as u64);
        tracing::error!(
            partition = lag.partition,
            lost = newly_lost,
            "messages deleted by retention before tailsift resolved them: \
             the consumer lagged longer than the topic's retention"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(position: i64, log_start: i64) -> PartitionLag {
        PartitionLag {
            partition: 0,
            seconds: 1.0,
            position: Some(position),
            log_start,
        }
    }

    #[test]
    fn lost_messages_are_counted_once() {
        let mut c = LostCount::default();
        assert_eq!(c.newly_lost(&lag(10, 0)), 0);
        // Retention moved the log start to 15 while the watermark was 10.
        assert_eq!(lag(10, 15).below_log_start(), 5);
        assert_eq!(c.newly_lost(&lag(10, 15)), 5);
        assert_eq!(c.newly_lost(&lag(10, 15)), 0, "the same gap again");
        // It moved on to 18 before the task resolved anything.
        assert_eq!(c.newly_lost(&lag(10, 18)), 3);
        // The task jumped to the log start and goes on.
        assert_eq!(c.newly_lost(&lag(18, 18)), 0);
        assert_eq!(c.newly_lost(&lag(40, 30)), 0);
        let unknown = PartitionLag {
            position: None,
            ..lag(0, 50)
        };
        assert_eq!(c.newly_lost(&unknown), 0);
        assert_eq!(unknown.below_log_start(), 0);
    }

    #[test]
    fn age_is_never_negative() {
        assert_eq!(age_seconds(i64::MAX / 2), 0.0);
        assert!(age_seconds(0) > 1.0e9);
    }
}
