//! The Kafka source: a consumer-group member that gives each assigned
//! partition its own task and queue, so a busy partition never stalls the
//! others, and commits only resolved offsets.

mod context;
pub mod lag;
mod partition;
mod registry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use partition::{Incoming, Rules};
pub use registry::{PartitionHandle, Registry};

use crate::config::{KafkaConfig, MemoryPlan, PREFETCH_PROPERTY, PendingOnShutdown};
use crate::deadletter::DeadLetterSink;
use crate::sink::TraceSink;
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy, WindowConfig};
pub use context::{Assigned, Outage, SourceContext};
use partition::PartitionTask;

/// Messages buffered between a partition's librdkafka queue and its task.
const PARTITION_CHANNEL: usize = 128;
/// How long a full partition channel is tolerated before pausing fetching.
const STUCK: Duration = Duration::from_millis(200);
/// Partitions assumed by the prefetch plan when the topic's metadata cannot
/// be read at start-up (no broker yet, topic not created yet).
const UNKNOWN_PARTITIONS: usize = 32;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

type Kafka = StreamConsumer<SourceContext>;

/// State every partition task shares.
pub struct Shared<S: TraceSink> {
    pub sink: S,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    pub window: WindowConfig,
    pub cache: Arc<DecisionCache>,
    pub occupancy: Arc<Occupancy>,
    /// Buffered trace bytes allowed before traces are decided early:
    /// `memory.limit`'s share for them (`MemoryPlan::traces`).
    pub trace_budget: usize,
    pub registry: Arc<Registry>,
    /// Time without any reachable broker (stops the windows' clocks).
    pub outage: Arc<Outage>,
    /// Fired once when the service stops.
    pub stop: CancellationToken,
    pub on_shutdown: PendingOnShutdown,
    pub log_limiter: LogLimiter,
}

/// librdkafka settings for the consumer: manual, resolved-only commits and
/// cooperative rebalances; user properties override.
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "5000")
        // Prefetch per partition (separate partition queues); beyond it the
        // pump's pause takes over. The service sets it from memory.limit
        // (`plan_prefetch`).
        .set(PREFETCH_PROPERTY, "16384")
        // Once that prefetch is full, librdkafka waits this long before the
        // next fetch (default 1 s): catching up on a backlog was capped at
        // 16 MiB per partition per second, with the consumer idle.
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// `cfg` with librdkafka's prefetch bound from the memory plan, unless
/// `kafka.properties` sets it: the plan's prefetch over the topic's
/// partitions, with `fetch.message.max.bytes` at half a partition's share
/// (64 KiB to 1 MiB), by which one fetch may overshoot it. Blocks on a
/// metadata request.
pub fn plan_prefetch(cfg: &KafkaConfig, plan: &MemoryPlan) -> KafkaConfig {
    let partitions = topic_partitions(cfg).unwrap_or_else(|e| {
        tracing::warn!(topic = %cfg.topic, error = %e, assumed = UNKNOWN_PARTITIONS,
            "cannot read the topic's partition count for the prefetch plan");
        UNKNOWN_PARTITIONS
    });
    let per_partition = plan.prefetch_per_partition(cfg, partitions);
    let mut planned = cfg.clone();
    let props = &mut planned.properties;
    props
        .entry(PREFETCH_PROPERTY.into())
        .or_insert_with(|| (per_partition / 1024).to_string());
    let fetch = (per_partition / 2).clamp(64 * 1024, 1024 * 1024);
    props
        .entry("fetch.message.max.bytes".into())
        .or_insert_with(|| fetch.to_string());
    tracing::info!(topic = %cfg.topic, partitions, prefetch_per_partition = %bytesize::ByteSize::b(per_partition), "prefetch plan");
    planned
}

fn topic_partitions(cfg: &KafkaConfig) -> Result<usize, KafkaError> {
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
        context.outage = shared.outage.clone();
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
            self.shared.outage.clone(),
        ));
        let mut tasks = JoinSet::new();
        let mut inputs: HashMap<i32, (Arc<PartitionHandle>, mpsc::Sender<Incoming>)> =
            HashMap::new();
        let stop = self.shared.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(Assigned(parts)) = self.assigned.recv() => {
                    for p in parts {
                        let input = self.start_partition(p, &mut tasks);
                        inputs.insert(p, input);
                    }
                    inputs.retain(|_, (h, _)| !h.revoked.is_cancelled());
                }
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        self.shared.outage.up();
                        dispatch(&inputs, &m).await
                    }
                    Err(e) => log_consumer_error(&self.shared.log_limiter, &e),
                },
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
        let (tx, rx) = mpsc::channel(PARTITION_CHANNEL);
        if let Some(queue) = self.consumer.split_partition_queue(&self.topic, partition) {
            let pause = Pause {
                consumer: self.consumer.clone(),
                topic: self.topic.clone(),
                partition,
            };
            let stop = self.shared.stop.clone();
            let outage = self.shared.outage.clone();
            tasks.spawn(pump(queue, tx.clone(), handle.clone(), stop, pause, outage));
        }
        let task = PartitionTask::new(handle.clone(), self.shared.clone(), self.rules.clone());
        tasks.spawn(task.run(rx));
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
        // async workers.
        let _ = tokio::task::spawn_blocking(move || {
            registry.commit(&*consumer);
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}

/// Pauses and resumes fetching one partition.
struct Pause {
    consumer: Arc<Kafka>,
    topic: String,
    partition: i32,
}

impl Pause {
    fn set(&self, paused: bool) {
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

/// Moves one partition's messages from librdkafka into its task's channel.
/// When the task falls behind (the sink is full, or memory is short) the
/// channel fills; the partition is then paused so librdkafka stops fetching
/// it, and resumed once the task took the waiting message.
async fn pump(
    queue: rdkafka::consumer::stream_consumer::StreamPartitionQueue<SourceContext>,
    tx: mpsc::Sender<Incoming>,
    handle: Arc<PartitionHandle>,
    stop: CancellationToken,
    pause: Pause,
    outage: Arc<Outage>,
) {
    loop {
        let incoming = tokio::select! {
            _ = handle.revoked.cancelled() => return,
            _ = stop.cancelled() => return,
            m = queue.recv() => match m {
                Ok(m) => {
                    outage.up();
                    Incoming::from_message(&m)
                }
                Err(e) => {
                    tracing::warn!(partition = handle.partition, error = %e, "partition queue error");
                    continue;
                }
            },
        };
        // Most sends find room; only a full channel arms the timer.
        let incoming = match tx.try_send(incoming) {
            Ok(()) => continue,
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(m)) => m,
        };
        // A briefly full channel is ordinary CPU-bound work: only a task that
        // stays stuck gets its partition paused.
        let Err(SendTimeoutError::Timeout(waiting)) = tx.send_timeout(incoming, STUCK).await else {
            continue;
        };
        pause.set(true);
        let drained = tokio::select! {
            _ = handle.revoked.cancelled() => false,
            _ = stop.cancelled() => false,
            r = drain_half(&tx, waiting) => r,
        };
        pause.set(false);
        if !drained {
            return;
        }
    }
}

/// Sends `m`, then waits until half the channel is free again, so a paused
/// partition is resumed with room to spare instead of flapping.
async fn drain_half(tx: &mpsc::Sender<Incoming>, m: Incoming) -> bool {
    if tx.send(m).await.is_err() {
        return false;
    }
    tx.reserve_many(PARTITION_CHANNEL / 2).await.is_ok()
}

/// Messages fetched before a partition's queue was split arrive on the main
/// queue; route them to their partition's task.
async fn dispatch(
    inputs: &HashMap<i32, (Arc<PartitionHandle>, mpsc::Sender<Incoming>)>,
    m: &rdkafka::message::BorrowedMessage<'_>,
) {
    if let Some((handle, tx)) = inputs.get(&m.partition())
        && !handle.revoked.is_cancelled()
    {
        let _ = tx.send(Incoming::from_message(m)).await;
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
