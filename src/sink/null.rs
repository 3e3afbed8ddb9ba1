//! Sinks that write nowhere: `NullSink` acknowledges at once (benchmarks of
//! the sampling path alone), `CollectingSink` keeps what it is given (tests
//! observing decisions).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{KeptTrace, TraceSink};
use crate::model::{Decision, SpanRef, TraceId};

/// Acknowledges every kept trace immediately and counts it.
#[derive(Default)]
pub struct NullSink {
    pub traces: AtomicU64,
    pub spans: AtomicU64,
}

impl TraceSink for NullSink {
    async fn submit(&self, trace: KeptTrace) {
        self.traces.fetch_add(1, Ordering::Relaxed);
        self.spans
            .fetch_add(trace.spans.len() as u64, Ordering::Relaxed);
        trace.ack.ack();
    }
}

/// One kept trace as a `CollectingSink` saw it.
#[derive(Debug, Clone)]
pub struct Collected {
    pub trace_id: TraceId,
    pub decision: Decision,
    pub would_drop: bool,
    pub spans: Vec<SpanRef>,
}

/// Keeps every kept trace in memory and acknowledges it.
#[derive(Default)]
pub struct CollectingSink {
    traces: Mutex<Vec<Collected>>,
}

impl CollectingSink {
    pub fn take(&self) -> Vec<Collected> {
        std::mem::take(&mut *self.traces.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl TraceSink for CollectingSink {
    async fn submit(&self, trace: KeptTrace) {
        let c = Collected {
            trace_id: trace.trace_id,
            decision: trace.decision,
            would_drop: trace.would_drop,
            spans: trace.spans,
        };
        self.traces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
        trace.ack.ack();
    }
}
