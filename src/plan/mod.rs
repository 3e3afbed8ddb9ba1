//! Validate → plan → build. The config is validated and resolved once into
//! what each stage is built from: the memory shares, the sink's queue and
//! bulk sizes, the consumers' prefetch, the windows' settings and the
//! decision cache's size. No stage derives a size of its own, and nothing
//! derived is written back into the config.

mod memory;

pub use memory::{MemoryPlan, PREFETCH_PROPERTY};

use crate::config::{BulkConfig, Config, ConfigError, DecisionCacheConfig, KafkaConfig};
use crate::sink::SinkSettings;
use crate::window::{CACHE_ENTRY_BYTES, WindowConfig};

use memory::MIB;

/// What the stages are built from; see the module comment.
#[derive(Clone, Debug)]
pub struct Plan {
    pub memory: MemoryPlan,
    pub window: WindowConfig,
    pub decision_cache: CacheSize,
    pub sink: SinkSettings,
    /// Each consumer's: the sampler's, and with an input topic the
    /// repartition stage's.
    pub prefetch: Prefetch,
}

impl Plan {
    /// Validates `cfg` (a config built in code, not loaded, has not been)
    /// and resolves it.
    pub fn resolve(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let memory = MemoryPlan::new(cfg);
        // With an input topic, the repartition stage's consumer prefetches
        // too: each gets half the share.
        let consumers = 1 + u64::from(cfg.kafka.repartition_input().is_some());
        Ok(Self {
            window: window_config(cfg),
            decision_cache: CacheSize::new(&cfg.sampling.decision_cache, memory.decision_cache),
            sink: SinkSettings {
                elasticsearch: cfg.elasticsearch.clone(),
                index_prefix: cfg.index_prefix(),
                queue_bytes: memory.sink_queue,
                bulk: bulk_limits(&cfg.elasticsearch.bulk, memory.sink_queue),
            },
            prefetch: Prefetch::new(&cfg.kafka, memory.prefetch / consumers),
            memory,
        })
    }
}

fn window_config(cfg: &Config) -> WindowConfig {
    WindowConfig {
        decision_wait: cfg.sampling.decision_wait,
        root_idle: cfg.sampling.root_idle,
        max_spans_per_trace: cfg.sampling.max_spans_per_trace,
        max_bytes_per_trace: cfg.sampling.max_bytes_per_trace.as_u64(),
        dry_run: cfg.sampling.dry_run,
        tracked_bytes_per_span: match cfg.dependencies.enabled {
            true => crate::dependencies::Tracker::NODE_BYTES,
            false => 0,
        },
    }
}

/// The batching settings, with requests no larger than an eighth of the
/// queue: a request in flight holds its documents twice more (our body and
/// the HTTP client's copy of it) on top of the queue that counts them, so
/// with a small queue (a small `memory.limit`) 5 MiB requests would
/// multiply its memory.
fn bulk_limits(cfg: &BulkConfig, queue_bytes: u64) -> BulkConfig {
    let cap = (queue_bytes / 8).max(256 * 1024);
    BulkConfig {
        max_bytes: bytesize::ByteSize::b(cfg.max_bytes.as_u64().min(cap)),
        ..cfg.clone()
    }
}

/// The decision cache's entries: the configured counts, scaled down to fit
/// its share of `memory.limit` so that a small limit cannot be overrun by
/// remembered decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSize {
    pub kept: usize,
    pub dropped: usize,
    /// Fewer than configured.
    pub scaled: bool,
}

impl CacheSize {
    fn new(cfg: &DecisionCacheConfig, budget: u64) -> Self {
        let needed = ((cfg.kept + cfg.dropped) * CACHE_ENTRY_BYTES) as f64;
        let scale = (budget as f64 / needed.max(1.0)).min(1.0);
        Self {
            kept: (cfg.kept as f64 * scale) as usize,
            dropped: (cfg.dropped as f64 * scale) as usize,
            scaled: scale < 1.0,
        }
    }
}

/// librdkafka's prefetch for one consumer (`source::plan_prefetch` applies
/// it once the topic's partition count is known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefetch {
    /// All partitions together: an instance may be assigned all of them,
    /// and librdkafka bounds each partition's queue on its own.
    pub total: u64,
    /// Per partition, from `kafka.properties` (`queued.max.messages.kbytes`).
    pub set: Option<u64>,
}

impl Prefetch {
    fn new(kafka: &KafkaConfig, total: u64) -> Self {
        let set = kafka
            .properties
            .get(PREFETCH_PROPERTY)
            .and_then(|k| k.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        Self { total, set }
    }

    /// One partition's prefetch when the topic has `partitions`: the set
    /// value, else an equal part of the total, bounded.
    pub fn per_partition(&self, partitions: usize) -> u64 {
        self.set
            .unwrap_or_else(|| (self.total / partitions.max(1) as u64).clamp(MIB / 4, 16 * MIB))
    }
}

#[cfg(test)]
mod tests;
