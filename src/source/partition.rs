//! One task per assigned partition: decode, buffer, decide, resolve.
//!
//! The task owns its partition's trace window and offset watermark, so the
//! hot path takes no lock. Kept traces go to the sink (whose `submit` waits
//! when the sink is full: backpressure); acknowledgements come back on a
//! channel and resolve offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::registry::PartitionHandle;
use crate::config::PendingOnShutdown;
use crate::deadletter::DeadLetter;
use crate::decode::{DecodeError, Decoder};
use crate::model::{Payload, ScanBatch, SpanRef, TraceId};
use crate::offsets::{AckHandle, PartitionOffsets, Resolved};
use crate::policy::PolicyEngine;
use crate::sink::{KeptTrace, TraceSink};
use crate::window::{Decided, Inserted, Remembered, TraceWindow};

/// How often deadlines are checked and the watermark is published.
const TICK: Duration = Duration::from_millis(100);
/// A message's allocations besides its bytes: the `Payload` and its `Arc`,
/// the `Bytes` header, allocator rounding.
const MESSAGE_OVERHEAD: usize = 96;

/// The policies and the decoder built from them, swapped on reload.
pub struct Rules {
    pub engine: Arc<PolicyEngine>,
    pub decoder: Arc<Decoder>,
}

/// A Kafka message copied out of librdkafka's buffer: buffered spans outlive
/// the poll that returned it.
#[derive(Debug)]
pub struct Incoming {
    pub offset: i64,
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
}

struct PartitionMetrics {
    messages: metrics::Counter,
    spans: metrics::Counter,
    late_kept: metrics::Counter,
    late_dropped: metrics::Counter,
}

impl PartitionMetrics {
    fn new(partition: i32) -> Self {
        let p = partition.to_string();
        Self {
            messages: metrics::counter!("tailsift_consumed_messages_total", "partition" => p.clone()),
            spans: metrics::counter!("tailsift_consumed_spans_total", "partition" => p),
            late_kept: metrics::counter!("tailsift_late_spans_total", "outcome" => "kept"),
            late_dropped: metrics::counter!("tailsift_late_spans_total", "outcome" => "dropped"),
        }
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
            shared.window.clone(),
            current.engine.clone(),
            shared.cache.clone(),
            shared.occupancy.clone(),
        );
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        Self {
            metrics: PartitionMetrics::new(handle.partition),
            handle,
            shared,
            rules,
            window,
            decoder: current.decoder.clone(),
            offsets: PartitionOffsets::default(),
            acks_tx,
            acks_rx,
            inflight: 0,
            stalled: Duration::ZERO,
            batch: ScanBatch::default(),
        }
    }

    /// Runs until the partition is revoked or the service stops. `messages`
    /// yields the partition's messages in offset order.
    pub async fn run(mut self, mut messages: mpsc::Receiver<Incoming>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let revoked = self.handle.revoked.clone();
        let stop = self.shared.stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = revoked.cancelled() => return,
                _ = stop.cancelled() => break,
                Some(r) = self.acks_rx.recv() => self.acknowledged(&r),
                _ = tick.tick() => self.on_tick().await,
                m = messages.recv() => match m {
                    Some(m) => self.on_message(m).await,
                    None => break,
                },
            }
        }
        self.shutdown().await;
    }

    /// Picks up reloaded policies; checked per message (an atomic load) so
    /// every message consumed after a reload is seen by the new policies.
    fn refresh_rules(&mut self) {
        if self.rules.has_changed().unwrap_or(false) {
            let rules = self.rules.borrow_and_update().clone();
            self.window.set_engine(rules.engine.clone());
            self.decoder = rules.decoder.clone();
        }
    }

    async fn on_tick(&mut self) {
        self.refresh_rules();
        let decided = self.window.expire(self.clock());
        self.handle_decided(decided).await;
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
                crate::keying::check(
                    self.handle.partition,
                    m.offset,
                    m.key.as_deref(),
                    &self.batch,
                    &self.shared.log_limiter,
                );
                let payload = Arc::new(Payload {
                    bytes: normalized.bytes,
                    format: normalized.format,
                    partition: self.handle.partition,
                    offset: m.offset,
                });
                self.buffer_spans(payload).await;
            }
            Err(e) => self.dead_letter(m, e),
        }
        self.relieve_memory().await;
    }

    async fn buffer_spans(&mut self, payload: Arc<Payload>) {
        let n = self.batch.spans.len();
        self.offsets.track(payload.offset, n as u32);
        self.metrics.spans.increment(n as u64);
        let now = self.clock();
        let expected = spans_per_trace(&self.batch);
        let mut late: HashMap<TraceId, (crate::model::Decision, Vec<SpanRef>)> = HashMap::new();
        let mut decided = Vec::new();
        for i in 0..n {
            let span = &self.batch.spans[i];
            let view = self.batch.view(i, &payload.bytes);
            let span_ref = SpanRef {
                payload: payload.clone(),
                layout: span.layout,
            };
            match self
                .window
                .insert(span, &view, span_ref.clone(), now, expected)
            {
                Inserted::Buffered => {}
                Inserted::Decided(d) => decided.push(d),
                Inserted::Late(Remembered::Dropped) => {
                    self.metrics.late_dropped.increment(1);
                    self.offsets.resolve(payload.offset, 1);
                }
                Inserted::Late(Remembered::Kept(decision)) => {
                    self.metrics.late_kept.increment(1);
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
            self.submit(trace_id, decision, false, spans, resolved)
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
            if d.write() {
                self.submit(d.trace_id, d.decision, d.would_drop, d.spans, d.resolved)
                    .await;
            } else {
                self.resolve(&d.resolved);
            }
        }
    }

    async fn submit(
        &mut self,
        trace_id: TraceId,
        decision: crate::model::Decision,
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
        let started = Instant::now();
        self.shared.sink.submit(trace).await;
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
    fn clock(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.stalled + self.shared.outage.total())
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

    fn dead_letter(&mut self, m: Incoming, e: DecodeError) {
        let reason = e.reason();
        metrics::counter!("tailsift_decode_errors_total", "reason" => reason).increment(1);
        self.shared.log_limiter.warn(reason, || {
            tracing::warn!(partition = self.handle.partition, offset = m.offset, reason, error = %e, "bad message");
        });
        self.offsets.track(m.offset, 1);
        let mut resolved = Resolved::default();
        resolved.add(m.offset, 1);
        let letter = DeadLetter {
            payload: m.payload,
            key: m.key,
            reason,
            error: e.to_string(),
            partition: self.handle.partition,
            offset: m.offset,
        };
        let ack = self.ack_handle(resolved);
        self.shared.dead_letters.send(letter, ack);
    }

    /// Over the trace budget (`memory.limit`'s share), decide this
    /// partition's oldest traces early (reason `memory`) — its share of the
    /// excess.
    async fn relieve_memory(&mut self) {
        let used = self.shared.occupancy.bytes();
        if used <= self.shared.trace_budget {
            return;
        }
        let share = (used - self.shared.trace_budget) / self.shared.registry.len().max(1);
        let decided = self.window.shed(share.max(1), self.clock());
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
        if self.shared.on_shutdown == PendingOnShutdown::Decide {
            let decided = self.window.drain(self.clock());
            for d in &decided {
                if let Some(first) = d.resolved.offsets.iter().map(|(o, _)| *o).min() {
                    self.offsets.hold(first);
                }
            }
            self.handle_decided(decided).await;
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
