//! Dependency links from every trace, kept or dropped: at decision time the
//! trace's parent links become parent-service → child-service calls,
//! written to `<prefix>jaeger-dependencies-YYYY-MM-DD` in the document
//! format Jaeger's dependency reader sums (`/api/dependencies`, the UI's
//! System Architecture view), and exported as the servicegraph connector's
//! Prometheus series for Grafana's node graph.
//!
//! Owns: the config section, the per-partition tracking of parent links
//! (`graph`), the per-partition documents and the decision records that
//! wait for them (`links`), the Elasticsearch writer (`writer`) and the
//! Prometheus service graph (`service_graph`).
//!
//! What is counted: every span whose parent span is in the same trace and
//! arrived before the trace was decided. Not counted: spans dropped by
//! `filter.spans`, late spans (their trace was decided without them), and
//! traces decided provisionally at shutdown (the next owner decides them
//! whole and counts them).

mod graph;
mod links;
pub mod service_graph;
mod writer;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;

pub use graph::Tracker;
pub use links::{Document, Flush};
pub use service_graph::ServiceGraph;
pub use writer::{Batch, LinkWriter};

use links::PartitionLinks;
use service_graph::LocalGraph;

use crate::model::{SpanView, TraceId};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DependenciesConfig {
    pub enabled: bool,
    /// Documents cover this much decision time each (their `timestamp` is
    /// the bucket's start). Jaeger reads at most `max_doc_count` (10,000)
    /// documents per query: partitions × buckets × assignments per
    /// lookback must stay below it.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// How often a partition rewrites its document with the running
    /// totals; decision records of traces with links wait up to this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Also export the service graph on `/metrics`.
    pub service_graph: bool,
    /// Service pairs the service graph exports; beyond it calls are counted
    /// in `tailsift_service_graph_overflow_calls_total`.
    pub max_edges: usize,
    pub histogram_buckets_s: Vec<f64>,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bucket: Duration::from_secs(3600),
            flush_interval: Duration::from_secs(5),
            service_graph: true,
            max_edges: 10_000,
            histogram_buckets_s: service_graph::DEFAULT_BUCKETS_S.to_vec(),
        }
    }
}

impl DependenciesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket < Duration::from_secs(60) {
            return Err("dependencies.bucket must be at least 1m".into());
        }
        if self.flush_interval.is_zero() || self.flush_interval > self.bucket {
            return Err(
                "dependencies.flush_interval must be above 0 and at most the bucket".into(),
            );
        }
        Ok(())
    }
}

/// What every partition shares: the service graph and, with an
/// Elasticsearch sink, the document writer (set once at start, before the
/// first partition task runs).
pub struct Dependencies {
    pub cfg: DependenciesConfig,
    pub graph: Option<Arc<ServiceGraph>>,
    pub writer: OnceLock<LinkWriter>,
}

impl Dependencies {
    pub fn new(cfg: &DependenciesConfig) -> Self {
        let graph = cfg
            .service_graph
            .then(|| Arc::new(ServiceGraph::new(&cfg.histogram_buckets_s, cfg.max_edges)));
        Self {
            cfg: cfg.clone(),
            graph,
            writer: OnceLock::new(),
        }
    }

    pub fn partition(&self, topic: &str, partition: i32) -> PartitionDependencies {
        PartitionDependencies {
            tracker: Tracker::default(),
            graph: self.graph.as_ref().map(|g| g.local()),
            links: self.writer.get().map(|_| {
                PartitionLinks::new(topic, partition, self.cfg.bucket, self.cfg.flush_interval)
            }),
        }
    }
}

/// One partition's share: the parent links of its buffered traces, its
/// service-graph counts and its documents.
pub struct PartitionDependencies {
    tracker: Tracker,
    graph: Option<LocalGraph>,
    links: Option<PartitionLinks>,
}

/// What became of a decided trace's links.
pub enum Counted {
    /// No links (or none stored): its decision record goes out now.
    Nothing,
    /// In the next document, possibly with a finished document of the
    /// previous bucket to send first; the record must wait for it.
    Pending(Option<Flush>),
}

impl PartitionDependencies {
    /// Tracks a span of a buffered trace (its memory is charged by the
    /// window: `WindowConfig::tracked_bytes_per_span`); `expected` as in
    /// `Tracker::observe`.
    pub fn observe(&mut self, view: &SpanView<'_>, expected: usize) {
        self.tracker.observe(view, expected);
    }

    pub fn forget(&mut self, id: &TraceId) {
        self.tracker.forget(id);
    }

    /// Counts a decided trace whose first message is `first_offset`.
    pub fn decided(&mut self, id: &TraceId, first_offset: i64) -> Counted {
        let edges = self.tracker.finish(id);
        if edges.is_empty() {
            return Counted::Nothing;
        }
        if let Some(graph) = &mut self.graph {
            graph.add(&edges);
        }
        match &mut self.links {
            Some(links) => {
                Counted::Pending(links.add(&edges, &self.tracker.services, first_offset))
            }
            None => Counted::Nothing,
        }
    }

    /// A record that waits for the next document (after `Counted::Pending`).
    pub fn hold(&mut self, record: crate::decision_log::Pending) {
        if let Some(links) = &mut self.links {
            links.hold(record);
        }
    }

    /// Every tick: merges the service graph; the document flush if due.
    pub fn tick(&mut self) -> Option<Flush> {
        if let Some(graph) = &mut self.graph {
            graph.flush(&self.tracker.services);
        }
        self.links.as_mut()?.due(&self.tracker.services)
    }

    /// Shutdown: whatever is counted, now.
    pub fn flush_now(&mut self) -> Option<Flush> {
        if let Some(graph) = &mut self.graph {
            graph.flush(&self.tracker.services);
        }
        self.links.as_mut()?.flush(&self.tracker.services)
    }
}

impl Drop for PartitionDependencies {
    /// A revoked or stopped partition hands in its service-graph counts.
    fn drop(&mut self) {
        if let Some(graph) = &mut self.graph {
            graph.flush(&self.tracker.services);
        }
    }
}

#[cfg(test)]
mod tests;
