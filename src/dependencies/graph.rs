//! The parent links of the traces a partition is buffering: per span its
//! ID, its parent's and its service, kept beside the trace window until the
//! trace is decided, then turned into service-to-service edges.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{SpanId, SpanStatus, SpanView, TraceId};

/// Services a partition names before further ones share one name: a
/// producer inventing a service per span must not grow this without end.
const MAX_SERVICES: usize = 10_000;
const OTHER_SERVICE: &str = "(other)";

/// What one span contributes to the graph.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    span: SpanId,
    parent: SpanId,
    service: u32,
    error: bool,
    duration_ns: u64,
}

/// One parent → child call: the parent span's service calls the child's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub parent: u32,
    pub child: u32,
    /// Either side ended in error (the service graph's `failed`).
    pub failed: bool,
    pub client_ns: u64,
    pub server_ns: u64,
}

/// Service names as small numbers, per partition.
#[derive(Default)]
pub struct Services {
    ids: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    names: Vec<Arc<str>>,
}

impl Services {
    fn intern(&mut self, name: &[u8]) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let full = self.names.len() >= MAX_SERVICES;
        let (key, text): (&[u8], Arc<str>) = match full {
            true => (OTHER_SERVICE.as_bytes(), OTHER_SERVICE.into()),
            false => (name, String::from_utf8_lossy(name).into()),
        };
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(text);
        self.ids.insert(key.into(), id);
        id
    }

    pub fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }
}

type Traces = HashMap<TraceId, Vec<Node>, foldhash::fast::RandomState>;

/// The nodes of the traces buffered in one partition's window.
#[derive(Default)]
pub struct Tracker {
    traces: Traces,
    pub services: Services,
}

impl Tracker {
    /// Bytes one tracked span costs, charged to its trace in the window.
    pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

    /// `expected`: the trace's spans in this message, to size a new
    /// trace's list once.
    pub fn observe(&mut self, view: &SpanView<'_>, expected: usize) {
        let span = view.span;
        let node = Node {
            span: span.span_id,
            parent: span.parent_span_id,
            service: self.services.intern(view.bytes_at(span.service_name)),
            error: span.status == SpanStatus::Error,
            duration_ns: span.end_unix_nano.saturating_sub(span.start_unix_nano),
        };
        self.traces
            .entry(span.trace_id)
            .or_insert_with(|| Vec::with_capacity(expected))
            .push(node);
    }

    /// Stops tracking a trace without counting it.
    pub fn forget(&mut self, id: &TraceId) {
        self.traces.remove(id);
    }

    /// The decided trace's edges: one per span whose parent span is in the
    /// trace (a span seen twice counts once), as Jaeger derives dependency
    /// links; same-service calls included.
    pub fn finish(&mut self, id: &TraceId) -> Vec<Edge> {
        let Some(mut nodes) = self.traces.remove(id) else {
            return Vec::new();
        };
        nodes.sort_unstable_by_key(|n| n.span);
        nodes.dedup_by_key(|n| n.span);
        nodes
            .iter()
            .filter(|n| !n.parent.is_zero())
            .filter_map(|child| {
                let i = nodes.binary_search_by_key(&child.parent, |n| n.span).ok()?;
                let parent = &nodes[i];
                Some(Edge {
                    parent: parent.service,
                    child: child.service,
                    failed: parent.error || child.error,
                    client_ns: parent.duration_ns,
                    server_ns: child.duration_ns,
                })
            })
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }
}
