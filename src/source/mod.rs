//! The Kafka source: a consumer-group member that gives each assigned
//! partition its own task and queue, so a busy partition never stalls the
//! others, and commits only resolved offsets.

mod context;
pub mod lag;
mod partition;
mod registry;
mod shared;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use partition::{Incoming, Rules};
pub use registry::{PartitionHandle, Registry};
pub use shared::{Observers, Outputs, Shared, WindowContext};

use crate::config::{GroupProtocol, KafkaConfig};
use crate::plan::{PREFETCH_PROPERTY, Prefetch};
use crate::sink::TraceSink;
use crate::telemetry::LogLimiter;
pub use context::{Assigned, Outage, SourceContext};
use partition::{Input, PartitionTask};

/// Messages from the consumer's main queue buffered for a partition's task.
const PARTITION_CHANNEL: usize = 128;
/// Partitions assumed by the prefetch plan when the topic's metadata cannot
/// be read at start-up (no broker yet, topic not created yet).
const UNKNOWN_PARTITIONS: usize = 32;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the last commit and the consumer's close may take at shutdown,
/// after `shutdown.timeout`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

type Kafka = StreamConsumer<SourceContext>;

/// librdkafka settings for the consumer: manual, resolved-only commits,
/// cooperative rebalances, static membership; user properties override.
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // The prefetch per partition (separate partition queues) comes from
        // the plan, in `cfg.properties` (`plan_prefetch`); beyond it the
        // pump's pause takes over. Once it is full, librdkafka waits this
        // long before the next fetch (default 1 s, which capped a catch-up
        // at one prefetch per partition per second, the consumer idle).
        .set("fetch.queue.backoff.ms", "10");
    membership(cfg, &mut c);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// How this member joins the group. A crashed member is replaced within
/// the session timeout (10 s by default, librdkafka's is 45 s); with a
/// static `group.instance.id` a restarted one takes its partitions back
/// at once, without a rebalance. Kafka 4's consumer protocol assigns on
/// the broker, which also owns its session timeout and assignor.
fn membership(cfg: &KafkaConfig, c: &mut ClientConfig) {
    if let Some(id) = cfg.group_instance_id.as_deref().filter(|id| !id.is_empty()) {
        c.set("group.instance.id", id);
    }
    match cfg.group_protocol {
        GroupProtocol::Classic => {
            let session = cfg.session_timeout.as_millis();
            c.set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", session.to_string())
                .set("heartbeat.interval.ms", (session / 5).max(100).to_string());
        }
        GroupProtocol::Consumer => {
            c.set("group.protocol", "consumer");
        }
    }
}

/// The default `group.instance.id`: the host name and the metrics port.
/// Both are stable when the same instance restarts (a pod keeps its name,
/// a host its services' ports) and differ between instances sharing a
/// host, which must never share an ID (the broker fences the older one).
pub fn default_instance_id(metrics_listen: &str) -> Option<String> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    let port = metrics_listen.rsplit(':').next().unwrap_or("0");
    Some(format!("{}-{port}", host.trim()))
}

/// `cfg` with librdkafka's prefetch bound from the memory plan, unless
/// `kafka.properties` sets it: the plan's prefetch over the topic's
/// partitions. A partition's share holds its queued messages (half of
/// it), one fetch's overshoot past that bound (`fetch.message.max.bytes`,
/// a quarter, 64 KiB to 1 MiB) and librdkafka's own memory per message
/// besides the payload it counts (the rest). Blocks on a metadata request.
pub fn plan_prefetch(cfg: &KafkaConfig, prefetch: Prefetch) -> KafkaConfig {
    let partitions = topic_partitions(cfg).unwrap_or_else(|e| {
        tracing::warn!(topic = %cfg.topic, error = %e, assumed = UNKNOWN_PARTITIONS,
            "cannot read the topic's partition count for the prefetch plan");
        UNKNOWN_PARTITIONS
    });
    let per_partition = prefetch.per_partition(partitions);
    let mut planned = cfg.clone();
    let props = &mut planned.properties;
    props
        .entry(PREFETCH_PROPERTY.into())
        .or_insert_with(|| (per_partition / 2 / 1024).to_string());
    let fetch = (per_partition / 4).clamp(64 * 1024, 1024 * 1024);
    props
        .entry("fetch.message.max.bytes".into())
        .or_insert_with(|| fetch.to_string());
    tracing::info!(topic = %cfg.topic, partitions, prefetch_per_partition = %bytesize::ByteSize::b(per_partition), "prefetch plan");
    planned
}

pub fn topic_partitions(cfg: &KafkaConfig) -> Result<usize, KafkaError> {
    let client: BaseConsumer = client_config(cfg).create()?;
    let metadata = client.fetch_metadata(Some(&cfg.topic), METADATA_TIMEOUT)?;
    let topic = metadata.topics().iter().find(|t| t.name() == cfg.topic);
    match topic.map(|t| t.partitions().len()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        )),
    }
}

/// Settings shared by the consumer and producers (brokers, security).
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in cfg.properties.iter().filter(|(k, _)| is_shared_property(k)) {
        c.set(k, v);
    }
    c
}

fn is_shared_property(key: &str) -> bool {
    ["security.", "sasl.", "ssl.", "client."]
        .iter()
        .any(|p| key.starts_with(p))
}

pub struct Source<S: TraceSink> {
    consumer: Arc<Kafka>,
    topic: String,
    commit_interval: Duration,
    shutdown_timeout: Duration,
    shared: Arc<Shared<S>>,
    rules: watch::Receiver<Arc<Rules>>,
    assigned: mpsc::UnboundedReceiver<Assigned>,
}

impl<S: TraceSink> Source<S> {
    pub fn new(
        cfg: &KafkaConfig,
        shutdown_timeout: Duration,
        shared: Arc<Shared<S>>,
        rules: watch::Receiver<Arc<Rules>>,
    ) -> Result<Self, KafkaError> {
        let (mut context, assigned) = SourceContext::new(&cfg.topic, shared.registry.clone());
        context.outage = shared.window.outage.clone();
        let consumer: Kafka = consumer_config(cfg).create_with_context(context)?;
        consumer.subscribe(&[&cfg.topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: cfg.topic.clone(),
            commit_interval: cfg.commit_interval,
            shutdown_timeout,
            shared,
            rules,
            assigned,
        })
    }

    /// Consumes until `shared.stop` fires, then lets every partition task
    /// finish (bounded by the shutdown timeout) and commits a last time.
    pub async fn run(mut self) {
        let committer = tokio::spawn(commit_loop(
            self.consumer.clone(),
            self.shared.registry.clone(),
            self.commit_interval,
            self.shared.stop.clone(),
            self.shared.window.outage.clone(),
        ));
        let mut tasks = JoinSet::new();
        let mut main = MainQueue::default();
        let mut retry = tokio::time::interval(MAIN_QUEUE_RETRY);
        let stop = self.shared.stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(Assigned(parts)) = self.assigned.recv() => {
                    for p in parts {
                        let input = self.start_partition(p, &mut tasks);
                        main.inputs.insert(p, input);
                    }
                    main.forward();
                }
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        self.shared.window.outage.up();
                        main.dispatch(Incoming::from_message(&m), m.partition());
                    }
                    Err(e) => log_consumer_error(&self.shared.log_limiter, &e),
                },
                _ = retry.tick(), if main.has_waiting() => main.forward(),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        self.finish(tasks, committer).await;
    }

    fn start_partition(
        &self,
        partition: i32,
        tasks: &mut JoinSet<()>,
    ) -> (Arc<PartitionHandle>, mpsc::Sender<Incoming>) {
        let handle = PartitionHandle::new(partition);
        self.shared.registry.insert(handle.clone());
        let (tx, handover) = mpsc::channel(PARTITION_CHANNEL);
        let queue = self
            .consumer
            .split_partition_queue(&self.topic, partition)
            .map(|queue| {
                let pause = Pause {
                    consumer: self.consumer.clone(),
                    topic: self.topic.clone(),
                    partition,
                };
                (queue, pause)
            });
        let task = PartitionTask::new(handle.clone(), self.shared.clone(), self.rules.clone());
        tasks.spawn(task.run(Input { queue, handover }));
        (handle, tx)
    }

    async fn finish(self, mut tasks: JoinSet<()>, committer: tokio::task::JoinHandle<()>) {
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout reached; unacknowledged spans will be replayed");
            tasks.abort_all();
        }
        let _ = committer.await;
        let consumer = self.consumer;
        let registry = self.shared.registry.clone();
        // Committing and closing block on the network; keep them off the
        // async workers, and bound them: with no broker reachable they
        // would wait forever, and the next owner replays from the last
        // commit anyway.
        let close = tokio::task::spawn_blocking(move || {
            registry.commit(&*consumer);
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
            tracing::warn!(timeout = ?CLOSE_TIMEOUT, "final commit and close did not finish; exiting");
        }
    }
}

/// Pauses and resumes fetching one partition.
pub(crate) struct Pause {
    consumer: Arc<Kafka>,
    topic: String,
    partition: i32,
}

impl Pause {
    pub(crate) fn set(&self, paused: bool) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        let gauge = metrics::gauge!("tailsift_paused_partitions");
        match result {
            Ok(()) if paused => gauge.increment(1.0),
            Ok(()) => gauge.decrement(1.0),
            Err(e) => {
                tracing::warn!(partition = self.partition, paused, error = %e, "cannot change pause state")
            }
        }
    }
}

/// How often messages waiting on the main queue's side are offered to their
/// partition's task again.
const MAIN_QUEUE_RETRY: Duration = Duration::from_millis(20);

/// Messages fetched before a partition's queue was split arrive on the main
/// queue, possibly before the partition's task exists (its assignment is
/// announced through a channel). They are routed to their task without
/// waiting for room in its channel: the loop that receives them also serves
/// rebalance callbacks, and must not block behind one busy partition. A
/// message that cannot be handed over yet waits here, in offset order, and
/// is never dropped while its partition is owned: a later offset of the
/// partition resolving first would commit past it.
#[derive(Default)]
struct MainQueue {
    inputs: HashMap<i32, (Arc<PartitionHandle>, mpsc::Sender<Incoming>)>,
    waiting: HashMap<i32, VecDeque<Incoming>>,
}

impl MainQueue {
    fn dispatch(&mut self, m: Incoming, partition: i32) {
        self.waiting.entry(partition).or_default().push_back(m);
        self.forward_partition(partition);
    }

    fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Hands over what the tasks have room for; forgets revoked partitions
    /// (their next owner replays from the committed watermark).
    fn forward(&mut self) {
        let revoked: Vec<i32> = self
            .inputs
            .iter()
            .filter(|(_, (h, _))| h.revoked.is_cancelled())
            .map(|(p, _)| *p)
            .collect();
        for p in revoked {
            self.inputs.remove(&p);
            self.waiting.remove(&p);
        }
        let parts: Vec<i32> = self.waiting.keys().copied().collect();
        for p in parts {
            self.forward_partition(p);
        }
    }

    fn forward_partition(&mut self, partition: i32) {
        let Some(queue) = self.waiting.get_mut(&partition) else {
            return;
        };
        if let Some((handle, tx)) = self.inputs.get(&partition) {
            if handle.revoked.is_cancelled() {
                queue.clear();
            }
            while let Some(m) = queue.pop_front() {
                match tx.try_send(m) {
                    Ok(()) => {}
                    Err(TrySendError::Full(m)) => {
                        queue.push_front(m);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => queue.clear(),
                }
            }
        }
        if queue.is_empty() {
            self.waiting.remove(&partition);
        }
    }
}

fn log_consumer_error(limiter: &LogLimiter, e: &KafkaError) {
    metrics::counter!("tailsift_kafka_errors_total").increment(1);
    limiter.warn(
        "kafka",
        || tracing::warn!(error = %e, "kafka consumer error"),
    );
}

async fn commit_loop(
    consumer: Arc<Kafka>,
    registry: Arc<Registry>,
    every: Duration,
    stop: CancellationToken,
    outage: Arc<Outage>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (c, r) = (consumer.clone(), registry.clone());
        if let Ok(Some(true)) = tokio::task::spawn_blocking(move || r.commit(&*c)).await {
            outage.up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64) -> Incoming {
        Incoming {
            offset,
            timestamp: None,
            payload: bytes::Bytes::new(),
            key: None,
            content_type: None,
        }
    }

    /// A message for a partition whose task does not exist yet, or whose
    /// channel is full, waits in order instead of being dropped (a later
    /// offset resolving first would commit past it) or blocking the loop.
    #[test]
    fn main_queue_messages_wait_for_their_task() {
        let mut main = MainQueue::default();
        main.dispatch(message(5), 3);
        main.dispatch(message(6), 3);
        assert!(main.has_waiting());
        let (tx, mut rx) = mpsc::channel(1);
        main.inputs.insert(3, (PartitionHandle::new(3), tx));
        main.forward();
        assert_eq!(rx.try_recv().map(|m| m.offset).ok(), Some(5));
        assert!(main.has_waiting(), "offset 6 waits for room");
        main.forward();
        assert_eq!(rx.try_recv().map(|m| m.offset).ok(), Some(6));
        assert!(!main.has_waiting());
    }

    #[test]
    fn a_revoked_partitions_messages_are_let_go() {
        let mut main = MainQueue::default();
        let (tx, _rx) = mpsc::channel(1);
        let handle = PartitionHandle::new(1);
        main.inputs.insert(1, (handle.clone(), tx));
        main.dispatch(message(1), 1);
        main.dispatch(message(2), 1);
        handle.revoked.cancel();
        main.forward();
        assert!(!main.has_waiting());
    }
}
