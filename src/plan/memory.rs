//! How `memory.limit` is shared out among what grows with the load.

use crate::config::Config;

/// How `memory.limit` is shared out. The limit is the budget of the whole
/// process, so that it can be the container's limit minus a margin; the
/// parts that grow with load get fixed shares of it:
///
/// - buffered traces: an eighth, as the windows count them (the messages
///   their spans keep alive plus bookkeeping). Hash maps, vectors and the
///   allocator's partly used pages make their resident memory a multiple
///   of that count. Beyond it the oldest traces of the windows over their
///   share are decided early (reason `memory`);
/// - the sink queue (`elasticsearch.queue_bytes` unless set): a sixteenth,
///   at most 64 MiB. Beyond it partitions are paused;
/// - dead letters in flight to Kafka, and in repartition mode the pieces
///   in flight: a sixteenth (each). Beyond it the producing partition
///   waits, so a refusing broker cannot hold bad input without bound;
/// - librdkafka's prefetch: a sixteenth, divided over the topic's
///   partitions, as an instance may be assigned all of them and librdkafka
///   applies its bounds to each partition's queue; half of a partition's
///   share is its `queued.max.messages.kbytes` unless set in
///   `kafka.properties`, the rest one fetch's overshoot and librdkafka's
///   memory per message (see `source::plan_prefetch`). A consumer catching
///   up on a backlog is faster with more of it;
/// - the decision cache: at most a sixteenth. The configured counts are
///   scaled down to fit it (and the scaling logged) so that a small limit
///   cannot be overrun by remembered decisions. Its tables are allocated
///   whole at the start and touched at random, so it costs its share early;
/// - the rest, over half, covers what does not scale with the load or is
///   not counted: runtime, librdkafka, the hand-over channels
///   (messages fetched before a partition's queue is split off), the binary's
///   pages, the windows' maps and vectors and allocator slack, bulk request
///   bodies in flight (twice each).
///
/// What these shares gave on real runs (peak RSS against the limit, speed
/// by prefetch): benches/e2e/results.md, "Measurements behind the code".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub traces: u64,
    pub sink_queue: u64,
    /// Payload bytes of dead letters (and repartitioned pieces) on their way
    /// to Kafka; beyond it the producing partition waits.
    pub dead_letters: u64,
    /// All partitions together; see [`super::Prefetch`].
    pub prefetch: u64,
    /// The most the decision cache may take.
    pub decision_cache: u64,
}

pub(super) const MIB: u64 = 1024 * 1024;

impl MemoryPlan {
    pub(super) fn new(cfg: &Config) -> Self {
        let limit = cfg.memory.limit.as_u64();
        let sink_queue = cfg
            .elasticsearch
            .queue_bytes
            .map_or((limit / 16).min(64 * MIB), |q| q.as_u64());
        Self {
            traces: limit / 8,
            sink_queue,
            dead_letters: limit / 16,
            prefetch: limit / 16,
            decision_cache: limit / 16,
        }
    }
}

/// librdkafka's prefetch bound (per partition with split partition queues).
pub const PREFETCH_PROPERTY: &str = "queued.max.messages.kbytes";
