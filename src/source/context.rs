//! librdkafka callbacks: rebalances and statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use super::registry::Registry;

/// How long the consumer has had no broker to fetch from, in total. While
/// all brokers are down nothing arrives, and producers hold back the rest of
/// the traces already being buffered; the trace windows' clocks stand still
/// meanwhile, so those traces are not decided from their first spans.
/// Down on librdkafka's `AllBrokersDown`; up again on the next message, a
/// successful commit, or statistics showing a broker up.
#[derive(Debug)]
pub struct Outage {
    base: Instant,
    /// Nanoseconds after `base` the current outage began; 0 when up.
    since: AtomicU64,
    /// Nanoseconds of outages that are over.
    past: AtomicU64,
}

impl Default for Outage {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            since: AtomicU64::new(0),
            past: AtomicU64::new(0),
        }
    }
}

impl Outage {
    fn now(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    pub fn down(&self) {
        if self
            .since
            .compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!("all Kafka brokers down: trace deadlines stand still");
        }
    }

    pub fn up(&self) {
        if self.since.load(Ordering::Acquire) == 0 {
            return;
        }
        let since = self.since.swap(0, Ordering::AcqRel);
        if since != 0 {
            let lasted = self.now().saturating_sub(since);
            self.past.fetch_add(lasted, Ordering::AcqRel);
            tracing::info!(
                outage = ?Duration::from_nanos(lasted),
                "Kafka reachable again: trace deadlines run again"
            );
        }
    }

    /// Time spent down so far, including an outage going on.
    pub fn total(&self) -> Duration {
        let since = self.since.load(Ordering::Acquire);
        let current = if since == 0 {
            0
        } else {
            self.now().saturating_sub(since)
        };
        Duration::from_nanos(self.past.load(Ordering::Acquire) + current)
    }
}

/// Partitions newly assigned, for the source loop to start tasks for.
#[derive(Debug)]
pub struct Assigned(pub Vec<i32>);

pub struct SourceContext {
    topic: String,
    registry: Arc<Registry>,
    assigned: mpsc::UnboundedSender<Assigned>,
    pub(crate) outage: Arc<Outage>,
}

impl SourceContext {
    /// A context for `topic`, and where it announces assigned partitions.
    pub fn new(topic: &str, registry: Arc<Registry>) -> (Self, mpsc::UnboundedReceiver<Assigned>) {
        let (assigned, rx) = mpsc::unbounded_channel();
        let ctx = Self {
            topic: topic.to_string(),
            registry,
            assigned,
            outage: Arc::default(),
        };
        (ctx, rx)
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.outage.down();
        }
        tracing::error!(error = %error, reason, "librdkafka error");
    }

    fn stats(&self, stats: Statistics) {
        if stats.brokers.values().any(|b| b.state == "UP") {
            self.outage.up();
        }
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        for p in topic.partitions.values().filter(|p| p.partition >= 0) {
            if p.consumer_lag >= 0 {
                metrics::gauge!("tailsift_consumer_lag_messages", "partition" => p.partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    /// On revoke, commit each partition's watermark before librdkafka hands
    /// it to another member; its undecided traces are replayed there.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions(&self.topic, tpl);
                tracing::info!(partitions = ?parts, "partitions revoked");
                metrics::counter!("tailsift_rebalances_total", "kind" => "revoke").increment(1);
                self.registry.revoke(consumer, &parts);
                for p in parts {
                    metrics::gauge!("tailsift_consumer_lag_messages", "partition" => p.to_string())
                        .set(0.0);
                }
            }
            Rebalance::Error(e) => {
                metrics::counter!("tailsift_rebalances_total", "kind" => "error").increment(1);
                tracing::warn!(error = %e, "rebalance error");
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = partitions(&self.topic, tpl);
            tracing::info!(partitions = ?parts, "partitions assigned");
            metrics::counter!("tailsift_rebalances_total", "kind" => "assign").increment(1);
            let _ = self.assigned.send(Assigned(parts));
        }
    }
}

fn partitions(topic: &str, tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}
