//! librdkafka callbacks: rebalances and statistics.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use tokio::sync::mpsc;

use super::registry::Registry;

/// Partitions newly assigned, for the source loop to start tasks for.
#[derive(Debug)]
pub struct Assigned(pub Vec<i32>);

pub struct SourceContext {
    topic: String,
    registry: Arc<Registry>,
    assigned: mpsc::UnboundedSender<Assigned>,
}

impl SourceContext {
    /// A context for `topic`, and where it announces assigned partitions.
    pub fn new(topic: &str, registry: Arc<Registry>) -> (Self, mpsc::UnboundedReceiver<Assigned>) {
        let (assigned, rx) = mpsc::unbounded_channel();
        let ctx = Self {
            topic: topic.to_string(),
            registry,
            assigned,
        };
        (ctx, rx)
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
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
