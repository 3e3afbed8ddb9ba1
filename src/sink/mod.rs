//! Where kept traces go: the Elasticsearch writer in production, an in-memory
//! collector in tests.
//!
//! - `document`: Jaeger span and service documents (the storage contract)
//! - `index`: daily index and alias names
//! - `templates`: index templates installed at start
//! - `retime`: impossible span times corrected on the document
//! - `encode`: a kept trace → bulk NDJSON lines
//! - `classify`: a bulk reply → acknowledge, retry or dead-letter
//! - `bulk`: [`ElasticsearchSink`], batching, retries, acknowledgements
//! - `elasticsearch`: the HTTP client

mod ack;
pub mod bulk;
pub mod classify;
pub mod document;
pub mod elasticsearch;
pub mod encode;
pub mod health;
pub mod index;
pub mod null;
pub mod redact;
pub mod retime;
mod scrub;
pub mod templates;

use std::future::Future;
use std::sync::Arc;

pub use bulk::{ElasticsearchSink, SinkSettings};

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

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid Elasticsearch configuration: {0}")]
    Config(String),
    #[error("Elasticsearch request failed: {0}")]
    Transport(#[from] ::elasticsearch::Error),
    #[error("Elasticsearch answered {status} to {path}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("unexpected Elasticsearch response: {0}")]
    Response(String),
}

impl SinkError {
    fn status(path: &str, status: ::elasticsearch::http::StatusCode, body: &[u8]) -> Self {
        Self::Status {
            path: path.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
        }
    }
}
