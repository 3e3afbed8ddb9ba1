//! What the partition tasks share.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::{Outage, Registry};
use crate::config::PendingOnShutdown;
use crate::deadletter::DeadLetterSink;
use crate::decision_log::DecisionLog;
use crate::rekey::Forwarder;
use crate::sink::TraceSink;
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy, WindowConfig};

/// State every partition task shares.
pub struct Shared<S: TraceSink> {
    pub sink: S,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    pub window: WindowConfig,
    pub cache: Arc<DecisionCache>,
    /// Set once at start, before the first partition task runs; unset when
    /// `sampling.decision_log.enabled` is false.
    pub decision_log: OnceLock<Arc<DecisionLog>>,
    pub occupancy: Arc<Occupancy>,
    /// RED metrics of every span; unset when `span_metrics.enabled` is false.
    pub span_metrics: Option<Arc<crate::span_metrics::SpanMetrics>>,
    /// Dependency links of every trace; unset when `dependencies.enabled`
    /// is false.
    pub dependencies: Option<Arc<crate::dependencies::Dependencies>>,
    /// Buffered trace bytes allowed before traces are decided early:
    /// `memory.limit`'s share for them (`MemoryPlan::traces`).
    pub trace_budget: usize,
    pub registry: Arc<Registry>,
    /// Time without any reachable broker (stops the windows' clocks).
    pub outage: Arc<Outage>,
    /// Fired once when the service stops.
    pub stop: CancellationToken,
    pub on_shutdown: PendingOnShutdown,
    pub log_limiter: LogLimiter,
    /// `kafka.repartition: auto`: where messages not keyed by trace ID go
    /// instead of the windows, re-keyed back to the topic.
    pub rekey: Option<Arc<Forwarder>>,
}

impl<S: TraceSink> Shared<S> {
    /// The families rendered beside the registry's on `/metrics`.
    pub fn families(&self) -> Vec<Arc<dyn crate::series::Exposition>> {
        let mut out: Vec<Arc<dyn crate::series::Exposition>> = Vec::new();
        if let Some(m) = &self.span_metrics {
            out.push(m.clone());
        }
        if let Some(g) = self.dependencies.as_ref().and_then(|d| d.graph.clone()) {
            out.push(g);
        }
        out
    }
}
