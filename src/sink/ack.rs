//! Completion tracking: a trace is acknowledged to the offset tracker only
//! once each of its units (bulk documents, dead letters) is resolved, and the
//! sink's byte budget is what makes `submit` wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::offsets::AckHandle;

/// Bytes of submitted traces not yet resolved, bounded by `queue_bytes`,
/// and a count of unresolved units for `flush`.
pub(crate) struct Backlog {
    bytes: Semaphore,
    capacity: usize,
    units: AtomicUsize,
    idle: Notify,
}

impl Backlog {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Semaphore::new(capacity),
            capacity,
            units: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Waits until `bytes` fit in the budget and takes them. A trace larger
    /// than the whole budget takes all of it rather than waiting forever.
    pub async fn reserve(&self, bytes: usize) -> usize {
        let n = bytes.min(self.capacity).min(u32::MAX as usize);
        if let Ok(permit) = self.bytes.acquire_many(n as u32).await {
            permit.forget();
        }
        self.report();
        n
    }

    fn release(&self, bytes: usize) {
        self.bytes.add_permits(bytes);
        self.report();
    }

    fn report(&self) {
        let queued = self.capacity - self.bytes.available_permits();
        metrics::gauge!("tailsift_sink_queue_bytes").set(queued as f64);
    }

    fn add_units(&self, n: usize) {
        self.units.fetch_add(n, Ordering::AcqRel);
    }

    fn unit_done(&self) {
        if self.units.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Returns once every unit added so far is resolved.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.units.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// One kept trace in flight.
pub(crate) struct Ticket {
    units: AtomicUsize,
    ack: Mutex<Option<AckHandle>>,
    bytes: usize,
    backlog: Arc<Backlog>,
    /// The trace ID as hex: the dead-letter message key.
    pub key: Bytes,
    /// When the trace's last span ended, µs since the epoch (0: unknown).
    ended_micros: u64,
}

impl Ticket {
    /// `bytes` must already be reserved from `backlog`; they are given back
    /// with the acknowledgement.
    pub fn new(
        backlog: Arc<Backlog>,
        ack: AckHandle,
        units: usize,
        bytes: usize,
        key: Bytes,
        ended_micros: u64,
    ) -> Arc<Self> {
        let ticket = Arc::new(Self {
            units: AtomicUsize::new(units),
            ack: Mutex::new(Some(ack)),
            bytes,
            backlog,
            key,
            ended_micros,
        });
        if units == 0 {
            ticket.complete();
        } else {
            ticket.backlog.add_units(units);
        }
        ticket
    }

    /// Resolves one unit; the last one acknowledges the trace.
    pub fn resolve(&self) {
        if self.units.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete();
        }
        self.backlog.unit_done();
    }

    fn complete(&self) {
        let ack = self.ack.lock().map(|mut a| a.take()).unwrap_or_default();
        if let Some(ack) = ack {
            ack.ack();
            self.record_freshness();
        }
        self.backlog.release(self.bytes);
    }

    /// Freshness: from the end of the trace's last span to the moment all
    /// of it is stored (the design documents ask for under 30 s). Includes
    /// the producers' and Kafka's share, the decision wait, and any
    /// Elasticsearch backpressure.
    fn record_freshness(&self) {
        if self.ended_micros == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let seconds = now.saturating_sub(self.ended_micros) as f64 / 1e6;
        metrics::histogram!("tailsift_freshness_seconds").record(seconds);
    }

    /// An `AckHandle` for a dead letter: acknowledging it resolves one unit
    /// of this trace. Dropped unacknowledged, the trace stays unresolved and
    /// is replayed, as for any lost acknowledgement.
    pub fn dead_letter_ack(self: &Arc<Self>) -> AckHandle {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ticket = Arc::clone(self);
        tokio::spawn(async move {
            if rx.recv().await.is_some() {
                ticket.resolve();
            }
        });
        AckHandle::new(tx, Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Resolved;

    fn handle() -> (AckHandle, mpsc::UnboundedReceiver<Resolved>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = Resolved::default();
        r.add(7, 2);
        (AckHandle::new(tx, r), rx)
    }

    #[tokio::test]
    async fn acks_after_the_last_unit_and_returns_bytes() {
        let backlog = Arc::new(Backlog::new(100));
        let bytes = backlog.reserve(60).await;
        let (ack, mut rx) = handle();
        let t = Ticket::new(backlog.clone(), ack, 2, bytes, Bytes::new(), 0);
        t.resolve();
        assert!(rx.try_recv().is_err());
        t.dead_letter_ack().ack();
        backlog.wait_idle().await;
        assert_eq!(rx.recv().await.unwrap().span_count(), 2);
        assert_eq!(backlog.bytes.available_permits(), 100);
    }

    #[tokio::test]
    async fn empty_trace_acks_at_once_and_oversized_takes_the_budget() {
        let backlog = Arc::new(Backlog::new(10));
        assert_eq!(backlog.reserve(50).await, 10);
        let (ack, mut rx) = handle();
        Ticket::new(backlog.clone(), ack, 0, 10, Bytes::new(), 0);
        assert!(rx.try_recv().is_ok());
        assert_eq!(backlog.bytes.available_permits(), 10);
    }
}
