//! One task per assigned partition: read, decode, buffer, decide, resolve.
//!
//! The task owns its partition's trace window and offset watermark, so the
//! hot path takes no lock. It reads its partition's librdkafka queue itself
//! (no task in between: one wake-up per fetched batch, not one per
//! message). Kept traces go to the sink (whose `submit` waits when the sink
//! is full: backpressure); acknowledgements come back on a channel and
//! resolve offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;

use super::Shared;
use super::registry::PartitionHandle;
use crate::config::PendingOnShutdown;
use crate::deadletter::DeadLetter;
use crate::decision_log::{self, record::DecisionRecord};
use crate::decode::{DecodeError, Decoder, Normalized};
use crate::dependencies::{Batch, Counted, Flush, PartitionDependencies};
use crate::model::{Decision, DecisionReason, Payload, ScanBatch, SpanRef, TraceId};
use crate::offsets::{AckHandle, PartitionOffsets, Resolved};
use crate::policy::{PolicyEngine, SpanFilter};
use crate::rekey::{Forwarder, split_by_trace};
use crate::sink::{KeptTrace, TraceSink};
use crate::span_metrics::LocalSpanMetrics;
use crate::window::{Decided, Found, Inserted, Remembered, TraceWindow};

mod input;

pub(crate) use input::Input;
use input::{Backpressure, PartitionStream, next_message, ready_message};

/// How often deadlines are checked and the watermark is published.
const TICK: Duration = Duration::from_millis(100);
/// Messages taken from the partition's queue without going back to the
/// loop's other events (acknowledgements, ticks, stop).
const BATCH: usize = 64;
/// A message's allocations besides its bytes: the `Payload` and its `Arc`,
/// the `Bytes` header, allocator rounding.
const MESSAGE_OVERHEAD: usize = 96;

/// The policies, the span filter and the decoder built from them, swapped
/// on reload.
pub struct Rules {
    pub engine: Arc<PolicyEngine>,
    pub filter: Arc<SpanFilter>,
    pub decoder: Arc<Decoder>,
    /// After a reload: a decoder that also scans the keys of the policies
    /// before, which still decide the traces that started under them. A
    /// partition uses it until those traces are decided (`decision_wait`).
    pub bridge: Option<Arc<Decoder>>,
    built: Instant,
}

impl Rules {
    pub fn new(engine: PolicyEngine, filter: SpanFilter, decoder: Decoder) -> Self {
        Self {
            engine: Arc::new(engine),
            filter: Arc::new(filter),
            decoder: Arc::new(decoder),
            bridge: None,
            built: Instant::now(),
        }
    }

    /// These rules replacing `before`: the bridge scans the keys of both,
    /// and those of `before`'s own bridge if `before` came less than
    /// `decision_wait` ago (its predecessor's traces may still be waiting).
    pub fn replacing(mut self, before: &Rules, decision_wait: Duration) -> Self {
        let recent = before.built.elapsed() < decision_wait;
        let old = match &before.bridge {
            Some(bridge) if recent => bridge,
            _ => &before.decoder,
        };
        self.bridge = Some(Arc::new(self.decoder.with_keys_of(old)));
        self
    }
}

/// A Kafka message copied out of librdkafka's buffer: buffered spans outlive
/// the poll that returned it.
#[derive(Debug)]
pub struct Incoming {
    pub offset: i64,
    /// The Kafka timestamp (ms), a witness for the spans' own clocks.
    pub timestamp: Option<i64>,
    pub payload: Bytes,
    pub key: Option<Bytes>,
    pub content_type: Option<String>,
}

impl Incoming {
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let content_type = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        });
        Self {
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            key: m.key().map(Bytes::copy_from_slice),
            content_type,
        }
    }
}

/// Spans per trace in a scanned message, to size new traces' span lists:
/// all of them when the message holds one trace (producers keying by trace
/// ID write it so); otherwise unknown, and lists grow as usual.
fn spans_per_trace(batch: &ScanBatch) -> usize {
    let spans = &batch.spans;
    match spans.first() {
        Some(first) if spans.iter().all(|s| s.trace_id == first.trace_id) => spans.len(),
        _ => 0,
    }
}

pub struct PartitionTask<S: TraceSink> {
    pub handle: Arc<PartitionHandle>,
    pub shared: Arc<Shared<S>>,
    pub rules: watch::Receiver<Arc<Rules>>,
    window: TraceWindow,
    decoder: Arc<Decoder>,
    /// Until when `decoder` is a reload's bridge (see `Rules::bridge`).
    bridged_until: Option<Instant>,
    filter: Arc<SpanFilter>,
    offsets: PartitionOffsets,
    acks_tx: mpsc::UnboundedSender<Resolved>,
    acks_rx: mpsc::UnboundedReceiver<Resolved>,
    /// Acknowledgements handed out and not yet received.
    inflight: usize,
    /// Time spent handing kept traces to the sink, mostly waiting for room
    /// in it (backpressure); see `clock`.
    stalled: Duration,
    batch: ScanBatch,
    metrics: PartitionMetrics,
    /// Span metrics counted here since the last tick.
    red: Option<LocalSpanMetrics>,
    /// Parent links of the buffered traces, and their documents.
    links: Option<PartitionDependencies>,
}

struct PartitionMetrics {
    messages: metrics::Counter,
    spans: metrics::Counter,
    /// Late spans by outcome (kept, dropped) and where their decision was
    /// found (memory, log); `window` counts those it found none for.
    late: [[metrics::Counter; 2]; 2],
}

impl PartitionMetrics {
    fn new(partition: i32) -> Self {
        let p = partition.to_string();
        let late = |found: Found| {
            ["kept", "dropped"].map(|outcome| {
                metrics::counter!("tailsift_late_spans_total", "outcome" => outcome, "found" => found.as_str())
            })
        };
        Self {
            messages: metrics::counter!("tailsift_consumed_messages_total", "partition" => p.clone()),
            spans: metrics::counter!("tailsift_consumed_spans_total", "partition" => p),
            late: [late(Found::Memory), late(Found::Log)],
        }
    }

    fn late(&self, remembered: &Remembered, found: Found) -> &metrics::Counter {
        let by_found = &self.late[usize::from(found == Found::Log)];
        &by_found[usize::from(matches!(remembered, Remembered::Dropped))]
    }
}

impl<S: TraceSink> PartitionTask<S> {
    pub fn new(
        handle: Arc<PartitionHandle>,
        shared: Arc<Shared<S>>,
        mut rules: watch::Receiver<Arc<Rules>>,
    ) -> Self {
        let current = rules.borrow_and_update().clone();
        let window = TraceWindow::new(
            shared.window.config.clone(),
            current.engine.clone(),
            shared.window.cache.clone(),
            shared.window.occupancy.clone(),
        );
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let red = shared.observers.span_metrics.as_ref().map(|m| m.local());
        let links = shared
            .observers
            .dependencies
            .as_ref()
            .map(|d| d.partition(shared.registry.topic(), handle.partition));
        Self {
            red,
            links,
            metrics: PartitionMetrics::new(handle.partition),
            handle,
            shared,
            rules,
            window,
            decoder: current.decoder.clone(),
            bridged_until: None,
            filter: current.filter.clone(),
            offsets: PartitionOffsets::default(),
            acks_tx,
            acks_rx,
            inflight: 0,
            stalled: Duration::ZERO,
            batch: ScanBatch::default(),
        }
    }

    /// Runs until the partition is revoked or the service stops.
    pub(crate) async fn run(mut self, input: Input) {
        let Input {
            queue,
            mut handover,
        } = input;
        let (queue, mut stuck) = match queue {
            Some((queue, pause)) => (Some(queue), Backpressure::new(Some(pause))),
            None => (None, Backpressure::new(None)),
        };
        let mut stream = queue.as_ref().map(StreamPartitionQueue::stream);
        let revoked = self.handle.revoked.clone();
        let stop = self.shared.stop.clone();
        tokio::select! {
            _ = revoked.cancelled() => return,
            _ = stop.cancelled() => return,
            _ = stuck.around(self.read_back_decisions()) => {}
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut handover_open = true;
        loop {
            let event = tokio::select! {
                biased;
                _ = revoked.cancelled() => return,
                _ = stop.cancelled() => break,
                Some(r) = self.acks_rx.recv() => Event::Ack(r),
                _ = tick.tick() => Event::Tick,
                m = handover.recv(), if handover_open => match m {
                    Some(m) => Event::Message(m),
                    None => Event::HandoverClosed,
                },
                m = next_message(&mut stream) => Event::Kafka(self.take(m)),
            };
            match event {
                Event::Ack(r) => self.acknowledged(&r),
                Event::Tick => stuck.around(self.on_tick()).await,
                Event::Message(m) => stuck.around(self.on_message(m)).await,
                Event::HandoverClosed if stream.is_none() => break,
                Event::HandoverClosed => handover_open = false,
                Event::Kafka(m) => {
                    if let Some(m) = m {
                        stuck.around(self.on_message(m)).await;
                    }
                    self.read_ready(&mut stream, &mut stuck).await;
                }
            }
        }
        self.shutdown().await;
    }

    /// Handles up to `BATCH` more messages that are already in the
    /// partition's queue, without waiting for any.
    async fn read_ready(
        &mut self,
        stream: &mut Option<PartitionStream<'_>>,
        stuck: &mut Backpressure,
    ) {
        let Some(stream) = stream else {
            return;
        };
        for _ in 1..BATCH {
            let Some(m) = ready_message(stream) else {
                return;
            };
            if let Some(m) = self.take(m) {
                stuck.around(self.on_message(m)).await;
            }
            // A partition that always has messages must still let the
            // worker's other tasks run.
            tokio::task::consume_budget().await;
        }
    }

    /// A message from the partition's queue, copied out of librdkafka's
    /// buffer; None for a queue error (logged).
    fn take(&self, m: KafkaResult<BorrowedMessage<'_>>) -> Option<Incoming> {
        match m {
            Ok(m) => {
                self.shared.window.outage.up();
                Some(Incoming::from_message(&m))
            }
            Err(e) => {
                tracing::warn!(partition = self.handle.partition, error = %e, "partition queue error");
                None
            }
        }
    }

    /// Before the first message: the partition's recent decisions, made by
    /// whoever owned it before, so that late spans follow them. Messages
    /// wait in librdkafka's queue meanwhile (and the partition is paused if
    /// it takes long). A failed read-back is logged; late spans whose decision
    /// it would have held are then decided alone, and counted so.
    async fn read_back_decisions(&self) {
        let Some(log) = self.shared.outputs.decision_log.get().cloned() else {
            return;
        };
        let (partition, cache) = (self.handle.partition, self.shared.window.cache.clone());
        match tokio::task::spawn_blocking(move || log.load(partition, &cache)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(partition, error = %e, "cannot read back decisions"),
            Err(e) => tracing::warn!(partition, error = %e, "decision read-back failed"),
        }
    }

    /// Picks up reloaded policies; checked per message (an atomic load) so
    /// every message consumed after a reload is seen by the new policies.
    fn refresh_rules(&mut self) {
        if self.rules.has_changed().unwrap_or(false) {
            let rules = self.rules.borrow_and_update().clone();
            self.window.set_engine(rules.engine.clone());
            self.decoder = rules
                .bridge
                .clone()
                .unwrap_or_else(|| rules.decoder.clone());
            self.filter = rules.filter.clone();
            self.bridged_until = Some(self.clock() + self.shared.window.config.decision_wait);
        }
        if self.bridged_until.is_some_and(|t| t <= self.clock()) {
            self.bridged_until = None;
            self.decoder = self.rules.borrow().decoder.clone();
        }
    }

    async fn on_tick(&mut self) {
        self.refresh_rules();
        let decided = self.window.expire(self.clock());
        self.handle_decided(decided).await;
        self.relieve_memory().await;
        if let Some(red) = &mut self.red {
            red.flush();
        }
        if let Some(flush) = self.links.as_mut().and_then(|l| l.tick()) {
            self.send_links(flush).await;
        }
        self.handle.publish(self.offsets.committable());
    }

    async fn on_message(&mut self, m: Incoming) {
        self.refresh_rules();
        self.metrics.messages.increment(1);
        match self.decoder.scan(
            m.payload.clone(),
            m.content_type.as_deref(),
            &mut self.batch,
        ) {
            Ok(normalized) => {
                let misplaced = crate::keying::check(
                    self.handle.partition,
                    m.offset,
                    m.key.as_deref(),
                    &self.batch,
                    self.shared.outputs.rekey.is_some(),
                    &self.shared.log_limiter,
                );
                if let (Some(_), Some(rekey)) = (misplaced, self.shared.outputs.rekey.clone()) {
                    self.rekey(m, normalized, &rekey).await;
                    return;
                }
                let times = self.decoder.correct_times(m.timestamp, &mut self.batch);
                let payload = Arc::new(Payload {
                    bytes: normalized.bytes,
                    format: normalized.format,
                    partition: self.handle.partition,
                    offset: m.offset,
                    times,
                });
                let rejected = self.batch.rejection_summary();
                self.buffer_spans(payload, rejected.is_some()).await;
                if let Some((reason, error)) = rejected {
                    self.log_bad(&m, reason, &error);
                    self.send_dead_letter(m, reason, error).await;
                }
            }
            Err(e) => self.dead_letter(m, e).await,
        }
        self.relieve_memory().await;
    }

    /// `kafka.repartition: auto`: a message not keyed by its trace ID is
    /// not sampled from the part of its traces it holds. It goes back to
    /// the topic as one message per trace, keyed by trace ID, and is
    /// resolved once the broker has every piece; the pieces come back
    /// through the partitions of their traces. Spans cut out for a bad ID
    /// are dead-lettered with the original, as in the direct path. Time
    /// corrections wait for the pieces, so nothing is counted twice.
    async fn rekey(&mut self, m: Incoming, normalized: Normalized, forwarder: &Forwarder) {
        let pieces = split_by_trace(&normalized.bytes, normalized.format, &self.batch);
        let rejected = self.batch.rejection_summary();
        self.offsets.track(
            m.offset,
            pieces.len() as u32 + u32::from(rejected.is_some()),
        );
        let started = TokioInstant::now();
        let (offset, acks) = (m.offset, &self.acks_tx);
        let mut handed_out = 0;
        forwarder
            .forward(pieces, || {
                handed_out += 1;
                let mut resolved = Resolved::default();
                resolved.add(offset, 1);
                AckHandle::new(acks.clone(), resolved)
            })
            .await;
        self.inflight += handed_out;
        // Waiting for room among the pieces in flight is backpressure, like
        // waiting for the sink: the windows' clock stands still meanwhile.
        self.stalled += started.elapsed();
        if let Some((reason, error)) = rejected {
            self.log_bad(&m, reason, &error);
            self.send_dead_letter(m, reason, error).await;
        }
    }

    /// `dead_letter`: one more unit to resolve, the dead letter of the
    /// spans cut out of the message.
    async fn buffer_spans(&mut self, payload: Arc<Payload>, dead_letter: bool) {
        let n = self.batch.spans.len();
        self.offsets
            .track(payload.offset, n as u32 + u32::from(dead_letter));
        self.metrics.spans.increment(n as u64);
        let now = self.clock();
        let expected = spans_per_trace(&self.batch);
        let mut late: HashMap<TraceId, (Decision, Vec<SpanRef>)> = HashMap::new();
        let mut decided = Vec::new();
        for i in 0..n {
            let span = &self.batch.spans[i];
            let view = self.batch.view(i, &payload.bytes);
            if self.filter.drops(&view) {
                self.offsets.resolve(payload.offset, 1);
                continue;
            }
            if let Some(red) = &mut self.red {
                red.observe(&view);
            }
            let span_ref = SpanRef {
                payload: payload.clone(),
                layout: span.layout,
            };
            match self
                .window
                .insert(span, &view, span_ref.clone(), now, expected)
            {
                Inserted::Buffered => {
                    if let Some(links) = &mut self.links {
                        links.observe(&view, expected);
                    }
                }
                Inserted::Decided(d) => {
                    if let Some(links) = &mut self.links {
                        links.observe(&view, expected);
                    }
                    decided.push(d);
                }
                Inserted::Late(remembered, found) => {
                    self.metrics.late(&remembered, found).increment(1);
                    let decision = match remembered {
                        Remembered::Kept(d) => d,
                        // A dry run writes everything.
                        Remembered::Dropped if self.shared.window.config.dry_run => {
                            Decision::drop("late".into())
                        }
                        Remembered::Dropped => {
                            self.offsets.resolve(payload.offset, 1);
                            continue;
                        }
                    };
                    late.entry(span.trace_id)
                        .or_insert_with(|| (decision, Vec::new()))
                        .1
                        .push(span_ref);
                }
            }
        }
        self.charge_message(&payload);
        for (trace_id, (decision, spans)) in late {
            let mut resolved = Resolved::default();
            resolved.add(payload.offset, spans.len() as u32);
            let would_drop = !decision.keep;
            self.submit(trace_id, decision, would_drop, spans, resolved)
                .await;
        }
        self.handle_decided(decided).await;
    }

    /// A buffered span keeps its whole message alive, not only its own
    /// bytes: OTLP framing, resource and scope (as much as the spans again
    /// for small messages) and the allocation around it. Charge that to the
    /// traces still buffering spans of the message, shared per span, so the
    /// trace budget measures memory, not just span bytes.
    fn charge_message(&mut self, payload: &Payload) {
        let n = self.batch.spans.len();
        let spans: usize = self.batch.spans.iter().map(|s| s.layout.span.len()).sum();
        let extra = (payload.bytes.len() + MESSAGE_OVERHEAD).saturating_sub(spans);
        if n == 0 || extra == 0 {
            return;
        }
        let share = extra / n;
        for span in &self.batch.spans {
            self.window.charge(&span.trace_id, share);
        }
    }

    async fn handle_decided(&mut self, decided: Vec<Decided>) {
        for d in decided {
            let waits = self.count_links(&d).await;
            self.log_decision(&d, waits).await;
            if d.write() {
                self.submit(d.trace_id, d.decision, d.would_drop, d.spans, d.resolved)
                    .await;
            } else {
                self.resolve(&d.resolved);
            }
        }
    }

    /// Counts a decided trace's dependency links; whether its decision
    /// record must wait for the document that holds them (see
    /// `dependencies::links`). The trace's first message waits for that
    /// document too. A shutdown decision is provisional: not counted.
    async fn count_links(&mut self, d: &Decided) -> bool {
        let Some(links) = &mut self.links else {
            return false;
        };
        let first = d.resolved.offsets.iter().map(|(o, _)| *o).min();
        let (Some(first), false) = (first, d.reason == DecisionReason::Shutdown) else {
            links.forget(&d.trace_id);
            return false;
        };
        let Counted::Pending(closed) = links.decided(&d.trace_id, first) else {
            return false;
        };
        self.offsets.defer(first);
        if let Some(flush) = closed {
            self.send_links(flush).await;
        }
        true
    }

    /// Hands a dependency document to the writer, with the records and
    /// offsets that wait for it.
    async fn send_links(&mut self, flush: Flush) {
        let writer = self
            .shared
            .observers
            .dependencies
            .as_ref()
            .and_then(|d| d.writer.get());
        let Some(writer) = writer.cloned() else {
            return;
        };
        let batch = Batch {
            partition: self.handle.partition,
            document: flush.document,
            records: flush.records,
            log: self.shared.outputs.decision_log.get().cloned(),
            gate: self.ack_handle(flush.gate),
        };
        let started = TokioInstant::now();
        writer.send(batch).await;
        self.stalled += started.elapsed();
    }

    /// Records a decision in the decision log, holding back the trace's
    /// first message (and so the watermark) until the broker stored it;
    /// `waits`: only once its dependency document is stored. A shutdown
    /// decision is not recorded: it is provisional (see `shutdown`).
    async fn log_decision(&mut self, d: &Decided, waits: bool) {
        let Some(log) = self.shared.outputs.decision_log.get().cloned() else {
            return;
        };
        if d.reason == DecisionReason::Shutdown {
            return;
        }
        let offsets = d.resolved.offsets.iter().map(|(o, _)| *o);
        let (Some(first), Some(last)) = (offsets.clone().min(), offsets.max()) else {
            return;
        };
        self.offsets.defer(first);
        let mut resolved = Resolved::default();
        resolved.add(first, 1);
        let ack = self.ack_handle(resolved);
        let partition = self.handle.partition;
        let record = DecisionRecord::new(&d.decision, d.reason, partition, (first, last));
        let pending = decision_log::Pending::new(d.trace_id, record, ack);
        if waits && let Some(links) = &mut self.links {
            links.hold(pending);
            return;
        }
        let started = TokioInstant::now();
        log.record(partition, pending).await;
        self.stalled += started.elapsed();
    }

    async fn submit(
        &mut self,
        trace_id: TraceId,
        decision: Decision,
        would_drop: bool,
        spans: Vec<SpanRef>,
        resolved: Resolved,
    ) {
        let trace = KeptTrace {
            trace_id,
            decision,
            would_drop,
            spans,
            ack: self.ack_handle(resolved),
        };
        let started = TokioInstant::now();
        self.shared.outputs.sink.submit(trace).await;
        self.stalled += started.elapsed();
    }

    /// The trace window's clock: wall time that stands still while this
    /// task waits for the sink, and while no Kafka broker is reachable.
    /// Waiting for the sink, the task consumes nothing and soon the
    /// partition is paused, so the rest of a buffered trace stays in Kafka
    /// however long Elasticsearch is away; with the brokers down, the rest
    /// waits in the producers. Deadlines on the wall clock would expire
    /// meanwhile and decide such traces from their first spans alone (an
    /// error span still to come: the trace dropped, and its rest following
    /// that decision). On this clock a trace gets its `decision_wait` of
    /// time in which its spans can arrive.
    ///
    /// Read from tokio's clock (the wall clock, virtual in paused-time
    /// tests) like the stalls it subtracts.
    fn clock(&self) -> Instant {
        let now = TokioInstant::now().into_std();
        now.checked_sub(self.stalled + self.shared.window.outage.total())
            .unwrap_or(now)
    }

    fn ack_handle(&mut self, resolved: Resolved) -> AckHandle {
        self.inflight += 1;
        AckHandle::new(self.acks_tx.clone(), resolved)
    }

    fn acknowledged(&mut self, r: &Resolved) {
        self.inflight = self.inflight.saturating_sub(1);
        self.resolve(r);
    }

    fn resolve(&mut self, r: &Resolved) {
        self.offsets.resolve_all(r);
    }

    async fn dead_letter(&mut self, m: Incoming, e: DecodeError) {
        let (reason, error) = (e.reason(), e.to_string());
        self.log_bad(&m, reason, &error);
        self.offsets.track(m.offset, 1);
        self.send_dead_letter(m, reason, error).await;
    }

    fn log_bad(&self, m: &Incoming, reason: &'static str, error: &str) {
        metrics::counter!("tailsift_decode_errors_total", "reason" => reason).increment(1);
        self.shared.log_limiter.warn(reason, || {
            tracing::warn!(
                partition = self.handle.partition,
                offset = m.offset,
                reason,
                error,
                "bad message"
            );
        });
    }

    /// The whole message with `error` naming what is wrong; resolves one
    /// unit of it once stored.
    async fn send_dead_letter(&mut self, m: Incoming, reason: &'static str, error: String) {
        let mut resolved = Resolved::default();
        resolved.add(m.offset, 1);
        let letter = DeadLetter {
            payload: m.payload,
            key: m.key,
            reason,
            error,
            partition: self.handle.partition,
            offset: m.offset,
        };
        let ack = self.ack_handle(resolved);
        self.shared.outputs.dead_letters.send(letter, ack).await;
    }

    /// Over the trace budget (`memory.limit`'s share), decide this
    /// partition's oldest traces early (reason `memory`) if it holds more
    /// than its share (see `TraceWindow::relieve`).
    async fn relieve_memory(&mut self) {
        let (budget, partitions) = (self.shared.window.trace_budget, self.shared.registry.len());
        let decided = self.window.relieve(budget, partitions, self.clock());
        self.handle_decided(decided).await;
    }

    /// Service stop: decide (or forget) what is buffered, wait for the sink
    /// to acknowledge what it was given, publish the final watermark. The
    /// caller bounds the whole shutdown with `shutdown.timeout`.
    ///
    /// Traces decided here are decided from the spans consumed so far; the
    /// rest of them is still in Kafka, past this point. Committing past
    /// their messages would leave that rest to the next owner, which would
    /// decide it alone, without the evidence in the first part (an error
    /// span), and lose it. So their messages stay uncommitted: the next owner
    /// replays them and decides each trace whole; what is written now is
    /// overwritten there (same `_id`s), not duplicated.
    async fn shutdown(mut self) {
        if self.shared.window.on_shutdown == PendingOnShutdown::Decide {
            let decided = self.window.drain(self.clock());
            for d in &decided {
                if let Some(first) = d.resolved.offsets.iter().map(|(o, _)| *o).min() {
                    self.offsets.hold(first);
                }
            }
            self.handle_decided(decided).await;
        }
        if let Some(flush) = self.links.as_mut().and_then(|l| l.flush_now()) {
            self.send_links(flush).await;
        }
        while self.inflight > 0 {
            self.handle.publish(self.offsets.committable());
            match self.acks_rx.recv().await {
                Some(r) => self.acknowledged(&r),
                None => break,
            }
        }
        self.handle.publish(self.offsets.committable());
    }
}

enum Event {
    Ack(Resolved),
    Tick,
    Message(Incoming),
    HandoverClosed,
    /// From the partition's queue; None for a queue error.
    Kafka(Option<Incoming>),
}

#[cfg(test)]
mod tests;
