//! Trace windows: spans buffered per trace until the trace is decided.
//!
//! One `TraceWindow` per assigned partition, owned by that partition's task.
//! Producers key messages by trace ID, so Kafka's partitioner already shards
//! traces by ID hash; owning the shard per partition means no lock at all on
//! the hot path, and a revoked partition's undecided traces are forgotten by
//! dropping its window (the next owner replays them from the watermark).

mod cache;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use cache::{DecisionCache, ENTRY_BYTES as CACHE_ENTRY_BYTES, Found, Remembered};

use crate::model::{
    Decision, DecisionReason, ScannedSpan, SpanRef, SpanView, TraceId, TraceSummary,
};
use crate::offsets::Resolved;
use crate::policy::{PolicyEngine, TraceState};

/// Bookkeeping bytes per buffered span beyond its wire bytes: the `SpanRef`
/// and its share of the entry's vectors.
const SPAN_OVERHEAD: usize = std::mem::size_of::<SpanRef>() + 16;
/// Bookkeeping bytes per buffered trace: entry, map slot and deadline.
const TRACE_OVERHEAD: usize = std::mem::size_of::<TraceEntry>() + 64;

#[derive(Clone, Debug)]
pub struct WindowConfig {
    pub decision_wait: Duration,
    pub root_idle: Duration,
    pub max_spans_per_trace: u32,
    pub max_bytes_per_trace: u64,
    /// Keep everything, but mark what the policies would drop.
    pub dry_run: bool,
    /// Memory others keep per buffered span until its trace is decided
    /// (the dependency links' node), charged with the span.
    pub tracked_bytes_per_span: usize,
}

/// Buffered bytes and counts across all windows of this instance, checked
/// against `memory.limit`.
#[derive(Debug, Default)]
pub struct Occupancy {
    pub bytes: AtomicUsize,
    pub spans: AtomicI64,
    pub traces: AtomicI64,
}

impl Occupancy {
    fn add(&self, bytes: usize, spans: i64, traces: i64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.spans.fetch_add(spans, Ordering::Relaxed);
        self.traces.fetch_add(traces, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize, spans: i64, traces: i64) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.spans.fetch_sub(spans, Ordering::Relaxed);
        self.traces.fetch_sub(traces, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A trace that has been decided, handed back to the partition task.
#[derive(Debug)]
pub struct Decided {
    pub trace_id: TraceId,
    pub decision: Decision,
    /// Dry run: the policies would have dropped it; it is written anyway.
    pub would_drop: bool,
    pub reason: DecisionReason,
    pub spans: Vec<SpanRef>,
    pub resolved: Resolved,
}

impl Decided {
    /// Whether the spans go to the sink.
    pub fn write(&self) -> bool {
        self.decision.keep || self.would_drop
    }
}

/// What happened to one inserted span.
#[derive(Debug)]
pub enum Inserted {
    /// Buffered with its trace.
    Buffered,
    /// Its trace was decided before; the span follows that decision.
    Late(Remembered, Found),
    /// Buffering it made the trace hit a size limit, so it was decided.
    Decided(Decided),
}

struct TraceEntry {
    summary: TraceSummary,
    state: TraceState,
    /// The policies in force when the trace started; a reload applies to
    /// traces that start after it.
    engine: Arc<PolicyEngine>,
    spans: Vec<SpanRef>,
    resolved: Resolved,
    first_seen: Instant,
    last_seen: Instant,
    /// Memory charged to the occupancy for this trace.
    charged: usize,
}

impl TraceEntry {
    fn new(id: TraceId, engine: &Arc<PolicyEngine>, now: Instant, expected: usize) -> Self {
        Self {
            summary: TraceSummary::new(id),
            state: engine.new_state(),
            engine: engine.clone(),
            spans: Vec::with_capacity(expected),
            resolved: Resolved::default(),
            first_seen: now,
            last_seen: now,
            charged: TRACE_OVERHEAD,
        }
    }

    fn deadline(&self, cfg: &WindowConfig) -> Instant {
        let wait = self.first_seen + cfg.decision_wait;
        if self.summary.root_seen {
            wait.min(self.last_seen + cfg.root_idle)
        } else {
            wait
        }
    }
}

/// Keyed per process (foldhash's random state): trace IDs come from
/// outside, and sequential or crafted IDs must spread over the buckets as
/// well as random ones (benches/window.rs measures both).
type TraceMap = HashMap<TraceId, TraceEntry, foldhash::fast::RandomState>;

/// Candidate deadlines, earliest first: one per trace at first span +
/// `decision_wait`, one more at root + `root_idle` once the root arrived.
/// Both delays are fixed and spans arrive in time order, so each kind is
/// appended in order: two deques do what a heap did, without its log n
/// comparisons per trace. Entries can be stale (trace decided since, or
/// still receiving spans); `expire` re-checks each one that comes up.
#[derive(Default)]
struct Deadlines {
    wait: VecDeque<(Instant, TraceId)>,
    idle: VecDeque<(Instant, TraceId)>,
}

impl Deadlines {
    fn push_wait(&mut self, at: Instant, id: TraceId) {
        push_sorted(&mut self.wait, at, id);
    }

    fn push_idle(&mut self, at: Instant, id: TraceId) {
        push_sorted(&mut self.idle, at, id);
    }

    /// The earliest entry, removed if it is due by `now` (or whatever the
    /// time, when `now` is `None`).
    fn pop(&mut self, now: Option<Instant>) -> Option<(Instant, TraceId)> {
        let queue = match (self.wait.front(), self.idle.front()) {
            (Some(w), Some(i)) if i.0 < w.0 => &mut self.idle,
            (Some(_), _) => &mut self.wait,
            (None, _) => &mut self.idle,
        };
        match queue.front() {
            Some((at, _)) if now.is_none_or(|now| *at <= now) => queue.pop_front(),
            _ => None,
        }
    }

    fn next(&self) -> Option<Instant> {
        let fronts = [self.wait.front(), self.idle.front()];
        fronts.into_iter().flatten().map(|(at, _)| *at).min()
    }

    fn clear(&mut self) {
        self.wait.clear();
        self.idle.clear();
    }
}

/// Appends, or inserts in order for the rare entry earlier than the last
/// (a re-checked idle deadline; callers passing an earlier `now`).
fn push_sorted(queue: &mut VecDeque<(Instant, TraceId)>, at: Instant, id: TraceId) {
    match queue.back() {
        Some((last, _)) if *last > at => {
            let i = queue.partition_point(|(t, _)| *t <= at);
            queue.insert(i, (at, id));
        }
        _ => queue.push_back((at, id)),
    }
}

/// The buffered traces of one partition.
pub struct TraceWindow {
    cfg: WindowConfig,
    engine: Arc<PolicyEngine>,
    traces: TraceMap,
    deadlines: Deadlines,
    cache: Arc<DecisionCache>,
    occupancy: Arc<Occupancy>,
    /// This window's part of `occupancy.bytes`.
    bytes: usize,
    metrics: DecisionMetrics,
}

impl TraceWindow {
    pub fn new(
        cfg: WindowConfig,
        engine: Arc<PolicyEngine>,
        cache: Arc<DecisionCache>,
        occupancy: Arc<Occupancy>,
    ) -> Self {
        Self {
            cfg,
            engine,
            traces: TraceMap::default(),
            deadlines: Deadlines::default(),
            cache,
            occupancy,
            bytes: 0,
            metrics: DecisionMetrics::default(),
        }
    }

    /// Policies for traces that start from now on.
    pub fn set_engine(&mut self, engine: Arc<PolicyEngine>) {
        self.engine = engine;
    }

    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Buffers one scanned span. `view` gives the policies its attributes;
    /// a trace seen for the first time makes room for `expected` spans
    /// (how many of its spans the current message holds), so its span list
    /// is allocated once instead of grown.
    pub fn insert(
        &mut self,
        span: &ScannedSpan,
        view: &SpanView<'_>,
        span_ref: SpanRef,
        now: Instant,
        expected: usize,
    ) -> Inserted {
        let id = span.trace_id;
        let entry = match self.traces.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => {
                if let Some((r, found)) = self.cache.lookup(&id) {
                    return Inserted::Late(r, found);
                }
                self.occupancy.add(TRACE_OVERHEAD, 0, 1);
                self.bytes += TRACE_OVERHEAD;
                self.deadlines.push_wait(now + self.cfg.decision_wait, id);
                slot.insert(TraceEntry::new(id, &self.engine, now, expected))
            }
        };
        let wire = span_ref.layout.span.len();
        let root_before = entry.summary.root_seen;
        entry.summary.observe(span, wire);
        entry.engine.observe(&mut entry.state, view);
        entry.resolved.add(span_ref.payload.offset, 1);
        entry.spans.push(span_ref);
        entry.last_seen = now;
        let cost = wire + SPAN_OVERHEAD + self.cfg.tracked_bytes_per_span;
        entry.charged += cost;
        self.occupancy.add(cost, 1, 0);
        self.bytes += cost;
        let over_limit = entry.summary.span_count >= self.cfg.max_spans_per_trace
            || entry.summary.bytes >= self.cfg.max_bytes_per_trace;
        if !root_before && entry.summary.root_seen {
            self.deadlines.push_idle(now + self.cfg.root_idle, id);
        }
        if over_limit && let Some(d) = self.decide(&id, DecisionReason::Limit, now) {
            return Inserted::Decided(d);
        }
        Inserted::Buffered
    }

    /// Charges `bytes` more to a buffered trace (no-op once it is
    /// decided): what its spans keep alive beyond their own wire bytes, such
    /// as the rest of the message they came in.
    pub fn charge(&mut self, id: &TraceId, bytes: usize) {
        if let Some(entry) = self.traces.get_mut(id) {
            entry.charged += bytes;
            self.occupancy.add(bytes, 0, 0);
            self.bytes += bytes;
        }
    }

    /// Decides every trace whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Decided> {
        let mut out = Vec::new();
        while let Some((_, id)) = self.deadlines.pop(Some(now)) {
            let Some(entry) = self.traces.get(&id) else {
                continue; // decided earlier — a stale candidate
            };
            let due = entry.deadline(&self.cfg);
            if due > now {
                // The root arrived but spans kept coming: check again later.
                self.deadlines.push_idle(due, id);
                continue;
            }
            let reason = if entry.first_seen + self.cfg.decision_wait <= now {
                DecisionReason::Timeout
            } else {
                DecisionReason::Root
            };
            out.extend(self.decide(&id, reason, now));
        }
        out
    }

    /// Over `budget` (all windows' traces together, shared by `windows`),
    /// decides this window's oldest traces early, down to its fair share of
    /// the budget and by at most the total excess. A window under its share
    /// sheds nothing, even while the total is over: its traces may be the
    /// newest of all, still receiving spans (a partition at the head of its
    /// topic beside others catching up a backlog), and a trace decided from
    /// its first spans takes its later ones, an error among them, with it.
    /// The windows over their share (there is one while the total is over)
    /// shed instead, their oldest first.
    pub fn relieve(&mut self, budget: usize, windows: usize, now: Instant) -> Vec<Decided> {
        let excess = self.occupancy.bytes().saturating_sub(budget);
        let over_share = self.bytes.saturating_sub(budget / windows.max(1));
        match excess.min(over_share) {
            0 => Vec::new(),
            bytes => self.shed(bytes, now),
        }
    }

    /// Decides the oldest traces early until this window's buffered bytes
    /// dropped by at least `bytes` (memory pressure).
    pub fn shed(&mut self, mut bytes: usize, now: Instant) -> Vec<Decided> {
        let mut out = Vec::new();
        while bytes > 0 {
            let Some((_, id)) = self.deadlines.pop(None) else {
                break;
            };
            let Some(entry) = self.traces.get(&id) else {
                continue;
            };
            bytes = bytes.saturating_sub(entry.charged);
            out.extend(self.decide(&id, DecisionReason::Memory, now));
        }
        out
    }

    /// Decides everything still buffered (shutdown).
    pub fn drain(&mut self, now: Instant) -> Vec<Decided> {
        let ids: Vec<TraceId> = self.traces.keys().copied().collect();
        self.deadlines.clear();
        ids.iter()
            .filter_map(|id| self.decide(id, DecisionReason::Shutdown, now))
            .collect()
    }

    /// The earliest pending deadline, to know when to wake up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    fn decide(&mut self, id: &TraceId, reason: DecisionReason, now: Instant) -> Option<Decided> {
        let entry = self.traces.remove(id)?;
        self.occupancy
            .sub(entry.charged, i64::from(entry.summary.span_count), 1);
        self.bytes -= entry.charged;
        let decision = entry.engine.decide(&entry.summary, &entry.state, now);
        // A shutdown decision is provisional: the next owner replays the
        // trace and decides it whole (see `PartitionTask::shutdown`).
        if reason != DecisionReason::Shutdown {
            self.cache.remember(id, &decision, Found::Memory);
        }
        self.metrics
            .record(&decision, reason, entry.first_seen, now);
        if !entry.summary.root_seen && reason == DecisionReason::Timeout {
            self.metrics
                .fragment(&decision, u64::from(entry.summary.span_count));
        }
        Some(Decided {
            trace_id: *id,
            would_drop: self.cfg.dry_run && !decision.keep,
            decision,
            reason,
            spans: entry.spans,
            resolved: entry.resolved,
        })
    }
}

impl Drop for TraceWindow {
    /// A forgotten window (revoked partition) gives its memory back.
    fn drop(&mut self) {
        for entry in self.traces.values() {
            self.occupancy
                .sub(entry.charged, i64::from(entry.summary.span_count), 1);
        }
    }
}

/// Decision metrics with their handles cached: registering a labelled
/// counter hashes its name and labels (and the policy label allocated a
/// string) for every decided trace.
#[derive(Default)]
struct DecisionMetrics {
    /// By policy and outcome; policies are few, so a list beats a map.
    decisions: Vec<(Arc<str>, bool, metrics::Counter)>,
    reasons: HashMap<DecisionReason, metrics::Counter>,
    latency: Option<metrics::Histogram>,
    /// Spans of rootless traces without a remembered decision, by outcome
    /// (kept, dropped).
    fragments: Option<[metrics::Counter; 2]>,
}

impl DecisionMetrics {
    fn record(
        &mut self,
        decision: &Decision,
        reason: DecisionReason,
        first_seen: Instant,
        now: Instant,
    ) {
        self.decision_counter(decision).increment(1);
        self.reasons
            .entry(reason)
            .or_insert_with(|| {
                metrics::counter!("tailsift_decision_reasons_total", "reason" => reason.as_str())
            })
            .increment(1);
        self.latency
            .get_or_insert_with(|| metrics::histogram!("tailsift_decision_latency_seconds"))
            .record(now.saturating_duration_since(first_seen).as_secs_f64());
    }

    /// A trace that timed out without its root span and with no remembered
    /// decision is most likely the late rest of a trace decided before,
    /// whose decision is no longer known (older than the horizon, evicted):
    /// its spans count as late spans whose decision was not found. (A
    /// trace whose root never comes counts here too.)
    fn fragment(&mut self, decision: &Decision, spans: u64) {
        let [kept, dropped] = self.fragments.get_or_insert_with(|| {
            ["kept", "dropped"].map(|outcome| {
                metrics::counter!("tailsift_late_spans_total", "outcome" => outcome, "found" => "none")
            })
        });
        match decision.keep {
            true => kept.increment(spans),
            false => dropped.increment(spans),
        }
    }

    fn decision_counter(&mut self, decision: &Decision) -> &metrics::Counter {
        let (policy, keep) = (&decision.policy, decision.keep);
        let found = self
            .decisions
            .iter()
            .position(|(p, k, _)| *k == keep && (Arc::ptr_eq(p, policy) || **p == **policy));
        let i = found.unwrap_or_else(|| {
            let outcome = if keep { "kept" } else { "dropped" };
            let counter = metrics::counter!(
                "tailsift_decisions_total",
                "policy" => policy.to_string(),
                "outcome" => outcome
            );
            self.decisions.push((policy.clone(), keep, counter));
            self.decisions.len() - 1
        });
        &self.decisions[i].2
    }
}

#[cfg(test)]
mod tests;
