//! What the partition tasks share, grouped by what it serves: the group
//! member's state every task reads (assignment, stop, log limits), the
//! context the trace windows work in, where decided traces and bad input
//! go, and what observes every span. Each group holds types from below
//! (`window`, `sink`, `decision_log`, `span_metrics`, `dependencies`);
//! none of those knows of it.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::{Outage, Registry};
use crate::config::PendingOnShutdown;
use crate::deadletter::DeadLetterSink;
use crate::decision_log::DecisionLog;
use crate::dependencies::Dependencies;
use crate::rekey::Forwarder;
use crate::series::Exposition;
use crate::sink::TraceSink;
use crate::span_metrics::SpanMetrics;
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy, WindowConfig};

/// State every partition task shares, built once by the app from the plan.
pub struct Shared<S: TraceSink> {
    /// The assigned partitions and their published watermarks.
    pub registry: Arc<Registry>,
    /// Fired once when the service stops.
    pub stop: CancellationToken,
    pub log_limiter: LogLimiter,
    pub window: WindowContext,
    pub outputs: Outputs<S>,
    pub observers: Observers,
}

/// What the trace windows are built with and decide by.
pub struct WindowContext {
    pub config: WindowConfig,
    /// Decisions remembered for late spans, across partitions.
    pub cache: Arc<DecisionCache>,
    /// Buffered bytes and counts across all windows.
    pub occupancy: Arc<Occupancy>,
    /// Buffered trace bytes allowed before traces are decided early:
    /// `memory.limit`'s share for them (`plan::MemoryPlan::traces`).
    pub trace_budget: usize,
    /// Time without any reachable broker: the windows' clock stands still
    /// meanwhile. The consumer reports it.
    pub outage: Arc<Outage>,
    /// What becomes of buffered traces when the service stops.
    pub on_shutdown: PendingOnShutdown,
}

/// Where decided traces, their decisions and bad input go.
pub struct Outputs<S: TraceSink> {
    pub sink: S,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// Set once at start, before the first partition task runs; unset when
    /// `sampling.decision_log.enabled` is false.
    pub decision_log: OnceLock<Arc<DecisionLog>>,
    /// `kafka.repartition: auto`: where messages not keyed by trace ID go
    /// instead of the windows, re-keyed back to the topic.
    pub rekey: Option<Arc<Forwarder>>,
}

/// What counts every span before sampling.
pub struct Observers {
    /// RED metrics of every span; unset when `span_metrics.enabled` is false.
    pub span_metrics: Option<Arc<SpanMetrics>>,
    /// Dependency links of every trace; unset when `dependencies.enabled`
    /// is false.
    pub dependencies: Option<Arc<Dependencies>>,
}

impl Observers {
    /// The families rendered beside the registry's on `/metrics`.
    pub fn families(&self) -> Vec<Arc<dyn Exposition>> {
        let mut out: Vec<Arc<dyn Exposition>> = Vec::new();
        if let Some(m) = &self.span_metrics {
            out.push(m.clone());
        }
        if let Some(g) = self.dependencies.as_ref().and_then(|d| d.graph.clone()) {
            out.push(g);
        }
        out
    }
}
