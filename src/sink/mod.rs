//! Where kept traces go: the Elasticsearch writer in production, an in-memory
//! collector in tests.

use std::future::Future;
use std::sync::Arc;

use crate::model::{Decision, SpanRef, TraceId};
use crate::offsets::AckHandle;

/// A trace the policies kept (or, in dry-run mode, would have dropped).
#[derive(Debug)]
pub struct KeptTrace {
    pub trace_id: TraceId,
    pub decision: Decision,
    /// Dry run: the policies would have dropped this trace.
    pub would_drop: bool,
    pub spans: Vec<SpanRef>,
    /// Acknowledge only once every span is durably written (or permanently
    /// rejected and set aside as a dead letter).
    pub ack: AckHandle,
}

impl KeptTrace {
    pub fn wire_bytes(&self) -> usize {
        self.spans.iter().map(|s| s.layout.span.len()).sum()
    }
}

/// Accepts kept traces. `submit` waits while the sink is full: that wait is
/// the backpressure that pauses consumption.
pub trait TraceSink: Send + Sync + 'static {
    fn submit(&self, trace: KeptTrace) -> impl Future<Output = ()> + Send;

    /// Whether the sink can currently write (for `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
}

impl<T: TraceSink> TraceSink for Arc<T> {
    fn submit(&self, trace: KeptTrace) -> impl Future<Output = ()> + Send {
        (**self).submit(trace)
    }

    fn is_ready(&self) -> bool {
        (**self).is_ready()
    }
}

pub mod null;
