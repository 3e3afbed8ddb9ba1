//! librdkafka callbacks: rebalances and statistics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use super::registry::Registry;

/// How long trace deadlines stood still for Kafka outages, in total. While
/// all brokers are down nothing arrives, and producers hold back the rest of
/// the traces already being buffered; the trace windows' clocks stand still
/// meanwhile, so those traces are not decided from their first spans.
/// Down on librdkafka's `AllBrokersDown`; up again on the next message, a
/// successful commit, or statistics showing a broker up — plus a grace
/// period, as producers reconnect with a backoff (librdkafka's grows to
/// 10 s, +50 % jitter) before they deliver what they held back.
#[derive(Debug)]
pub struct Outage {
    grace: Duration,
    /// No outage going on (or in its grace period): the hot path (every
    /// message, every clock reading) then only reads these two atomics.
    quiet: AtomicBool,
    past_nanos: AtomicU64,
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    /// When the current outage began.
    since: Option<Instant>,
    /// When it ends (up plus grace); None while still down.
    until: Option<Instant>,
    /// Outages that are over.
    past: Duration,
}

impl Default for Outage {
    fn default() -> Self {
        Self::new(Duration::from_secs(15))
    }
}

impl Outage {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            quiet: AtomicBool::new(true),
            past_nanos: AtomicU64::new(0),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn down(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        match (s.since, s.until) {
            (None, _) => {
                s.since = Some(now);
                self.quiet.store(false, Ordering::Release);
                tracing::warn!("all Kafka brokers down: trace deadlines stand still");
            }
            // Down again within the grace period: the same outage goes on.
            (Some(_), Some(_)) => s.until = None,
            (Some(_), None) => {}
        }
    }

    pub fn up(&self) {
        if self.quiet.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        if let (Some(since), None) = (s.since, s.until) {
            let now = Instant::now();
            s.until = Some(now + self.grace);
            tracing::info!(
                outage = ?now.duration_since(since),
                grace = ?self.grace,
                "Kafka reachable again: trace deadlines run again after the grace period"
            );
        }
    }

    /// Time deadlines stood still so far, including an outage going on.
    pub fn total(&self) -> Duration {
        if self.quiet.load(Ordering::Acquire) {
            return Duration::from_nanos(self.past_nanos.load(Ordering::Acquire));
        }
        let mut s = self.lock();
        let Some(since) = s.since else {
            return s.past;
        };
        let now = Instant::now();
        match s.until {
            Some(until) if until <= now => {
                s.past += until.duration_since(since);
                s.since = None;
                s.until = None;
                self.past_nanos
                    .store(s.past.as_nanos() as u64, Ordering::Release);
                self.quiet.store(true, Ordering::Release);
                s.past
            }
            _ => s.past + now.duration_since(since),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_stands_still_until_the_grace_period_is_over() {
        let o = Outage::new(Duration::from_millis(50));
        assert_eq!(o.total(), Duration::ZERO);
        o.up(); // not down: nothing happens
        assert_eq!(o.total(), Duration::ZERO);
        o.down();
        std::thread::sleep(Duration::from_millis(20));
        let during = o.total();
        assert!(during >= Duration::from_millis(20), "{during:?}");
        o.up();
        std::thread::sleep(Duration::from_millis(80));
        let after = o.total();
        // The outage plus the grace period, then it stops growing.
        assert!(after >= Duration::from_millis(70), "{after:?}");
        assert!(after < Duration::from_millis(75) + during, "{after:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(o.total(), after);
    }
}
