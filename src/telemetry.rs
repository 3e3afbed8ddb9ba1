//! Logs and Prometheus metrics: logging setup, rate-limited warnings, and the
//! catalogue of every metric the service exports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{LogFormat, LoggingConfig};

/// Every metric tailsift exports: (name, kind, unit, help). Dashboards and
/// alert rules are checked against this list.
pub const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (
        "tailsift_consumed_messages_total",
        Kind::Counter,
        Unit::Count,
        "Kafka messages consumed, by partition",
    ),
    (
        "tailsift_consumed_spans_total",
        Kind::Counter,
        Unit::Count,
        "Spans scanned from Kafka, by partition",
    ),
    (
        "tailsift_decode_errors_total",
        Kind::Counter,
        Unit::Count,
        "Messages that could not be decoded, by reason",
    ),
    (
        "tailsift_unkeyed_messages_total",
        Kind::Counter,
        Unit::Count,
        "Messages not keyed by their trace ID or holding several traces, by reason (use repartition mode)",
    ),
    (
        "tailsift_rekeyed_messages_total",
        Kind::Counter,
        Unit::Count,
        "Messages split by trace and produced again keyed by trace ID (repartition mode: auto or an input topic)",
    ),
    (
        "tailsift_dead_letters_total",
        Kind::Counter,
        Unit::Count,
        "Messages and documents set aside, by reason and outcome",
    ),
    (
        "tailsift_dead_letter_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Payload bytes of dead letters on their way to Kafka (bounded by the memory plan)",
    ),
    (
        "tailsift_span_time_corrections_total",
        Kind::Counter,
        Unit::Count,
        "Spans whose impossible start or end was corrected (and tagged), by reason",
    ),
    (
        "tailsift_consumer_lag_messages",
        Kind::Gauge,
        Unit::Count,
        "Consumer lag per partition (librdkafka statistics)",
    ),
    (
        "tailsift_partition_lag_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest unresolved message per partition (Kafka timestamps), 0 when caught up",
    ),
    (
        "tailsift_topic_retention_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "retention.ms of the topic, read from the broker (absent when unlimited)",
    ),
    (
        "tailsift_lost_messages_total",
        Kind::Counter,
        Unit::Count,
        "Messages retention deleted below the oldest unresolved offset, per partition: no replay can recover them",
    ),
    (
        "tailsift_committed_offset",
        Kind::Gauge,
        Unit::Count,
        "Last committed offset per partition",
    ),
    (
        "tailsift_commits_total",
        Kind::Counter,
        Unit::Count,
        "Offset commits, by result",
    ),
    (
        "tailsift_rebalances_total",
        Kind::Counter,
        Unit::Count,
        "Rebalance events, by kind (assign, revoke, error)",
    ),
    (
        "tailsift_kafka_errors_total",
        Kind::Counter,
        Unit::Count,
        "Kafka consumer errors",
    ),
    (
        "tailsift_assigned_partitions",
        Kind::Gauge,
        Unit::Count,
        "Partitions assigned to this instance",
    ),
    (
        "tailsift_buffered_traces",
        Kind::Gauge,
        Unit::Count,
        "Traces waiting for a decision",
    ),
    (
        "tailsift_buffered_spans",
        Kind::Gauge,
        Unit::Count,
        "Spans waiting for a decision",
    ),
    (
        "tailsift_memory_purges_total",
        Kind::Counter,
        Unit::Count,
        "Times freed memory was returned at once, the resident set being near memory.limit",
    ),
    (
        "tailsift_buffered_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Bytes held by buffered traces",
    ),
    (
        "tailsift_memory_limit_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Configured memory.limit",
    ),
    (
        "tailsift_decisions_total",
        Kind::Counter,
        Unit::Count,
        "Trace decisions, by policy and outcome (kept, dropped)",
    ),
    (
        "tailsift_decision_reasons_total",
        Kind::Counter,
        Unit::Count,
        "Why traces were decided when they were (timeout, root, limit, memory, shutdown)",
    ),
    (
        "tailsift_decision_latency_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from a trace's first span to its decision",
    ),
    (
        "tailsift_late_spans_total",
        Kind::Counter,
        Unit::Count,
        "Spans arriving after their trace was decided, by outcome and where the decision was found (memory, log, none)",
    ),
    (
        "tailsift_decision_cache_evictions_total",
        Kind::Counter,
        Unit::Count,
        "Remembered decisions forgotten to make room, by set (kept, dropped)",
    ),
    (
        "tailsift_decision_log_records_total",
        Kind::Counter,
        Unit::Count,
        "Decision records written to the decision log, by result (ok, error: retried)",
    ),
    (
        "tailsift_decision_log_loaded_total",
        Kind::Counter,
        Unit::Count,
        "Decision records read back from the decision log on partition assignment",
    ),
    (
        "tailsift_decision_log_load_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to read a partition's recent decisions back on assignment",
    ),
    (
        "tailsift_policy_evaluations_total",
        Kind::Counter,
        Unit::Count,
        "Policy evaluations, by policy and result (sampled, not_sampled)",
    ),
    (
        "tailsift_ottl_errors_total",
        Kind::Counter,
        Unit::Count,
        "OTTL condition evaluation errors, by policy or filter rule (each error_mode)",
    ),
    (
        "tailsift_spans_filtered_total",
        Kind::Counter,
        Unit::Count,
        "Spans dropped by filter.spans before buffering, by rule",
    ),
    (
        "tailsift_policy_reloads_total",
        Kind::Counter,
        Unit::Count,
        "Policy reloads, by result",
    ),
    (
        "tailsift_freshness_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "From the end of a kept trace's last span to Elasticsearch acknowledging all of it",
    ),
    (
        "tailsift_es_bulk_requests_total",
        Kind::Counter,
        Unit::Count,
        "Elasticsearch bulk requests, by result",
    ),
    (
        "tailsift_es_bulk_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Elasticsearch bulk request latency",
    ),
    (
        "tailsift_es_documents_total",
        Kind::Counter,
        Unit::Count,
        "Documents written or rejected by Elasticsearch",
    ),
    (
        "tailsift_es_retries_total",
        Kind::Counter,
        Unit::Count,
        "Elasticsearch retries, by reason",
    ),
    (
        "tailsift_es_errors_total",
        Kind::Counter,
        Unit::Count,
        "Elasticsearch errors, by type",
    ),
    (
        "tailsift_es_service_documents_total",
        Kind::Counter,
        Unit::Count,
        "Service/operation documents written",
    ),
    (
        "tailsift_sink_invalid_spans_total",
        Kind::Counter,
        Unit::Count,
        "Kept spans that could not be converted to documents, by reason",
    ),
    (
        "tailsift_redacted_values_total",
        Kind::Counter,
        Unit::Count,
        "Secrets found in attribute values and replaced or hashed, by rule",
    ),
    (
        "tailsift_sink_queue_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Kept span bytes waiting for Elasticsearch",
    ),
    (
        "tailsift_paused_partitions",
        Kind::Gauge,
        Unit::Count,
        "Partitions paused by backpressure",
    ),
    // Prometheus' standard process metrics (the names its client libraries
    // use, so existing dashboards and alerts work), read from /proc at
    // every scrape by `ProcessMetrics`.
    (
        "process_cpu_seconds_total",
        Kind::Counter,
        Unit::Seconds,
        "User and system CPU time spent, in whole seconds",
    ),
    (
        "process_resident_memory_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Resident memory size (compare with tailsift_memory_limit_bytes)",
    ),
    (
        "process_virtual_memory_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Virtual memory size",
    ),
    (
        "tailsift_span_metrics_overflow_spans_total",
        Kind::Counter,
        Unit::Count,
        "Spans counted in the span metrics' overflow series because span_metrics.max_series was reached",
    ),
    (
        "tailsift_service_graph_overflow_calls_total",
        Kind::Counter,
        Unit::Count,
        "Service-graph calls not exported because dependencies.max_edges was reached",
    ),
    (
        "tailsift_dependency_documents_total",
        Kind::Counter,
        Unit::Count,
        "Dependency-link documents written to Elasticsearch, by result (stored, retried, rejected)",
    ),
    (
        "process_virtual_memory_max_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Maximum amount of virtual memory available (address-space limit)",
    ),
    (
        "process_open_fds",
        Kind::Gauge,
        Unit::Count,
        "Open file descriptors",
    ),
    (
        "process_max_fds",
        Kind::Gauge,
        Unit::Count,
        "Maximum number of open file descriptors",
    ),
    (
        "process_threads",
        Kind::Gauge,
        Unit::Count,
        "OS threads of the process",
    ),
    (
        "process_start_time_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Start time of the process since the Unix epoch",
    ),
];

/// Families in the OpenTelemetry connectors' naming (default namespaces),
/// rendered by `span_metrics` and `dependencies::service_graph` rather than
/// the registry: Jaeger's Monitor tab and Grafana's node graph read them.
pub const CONNECTOR_METRICS: &[(&str, Kind)] = &[
    ("traces_span_metrics_calls_total", Kind::Counter),
    ("traces_span_metrics_duration_milliseconds", Kind::Histogram),
    ("traces_service_graph_request_total", Kind::Counter),
    ("traces_service_graph_request_failed_total", Kind::Counter),
    (
        "traces_service_graph_request_server_seconds",
        Kind::Histogram,
    ),
    (
        "traces_service_graph_request_client_seconds",
        Kind::Histogram,
    ),
];

/// Prefix of the standard process metrics in [`METRICS`]; every other
/// metric is `tailsift_*`.
pub const PROCESS_PREFIX: &str = "process_";

/// Prometheus' standard process metrics, refreshed before each scrape so
/// they are as current as the scrape.
#[derive(Default)]
pub struct ProcessMetrics(metrics_process::Collector);

impl ProcessMetrics {
    /// Records the current values (a few reads of /proc).
    pub fn collect(&self) {
        self.0.collect();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Installs the global Prometheus recorder and describes every metric.
pub fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )?
        .install_recorder()?;
    for &(name, kind, unit, help) in METRICS {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
    Ok(handle)
}

/// Sets up `tracing` output; `RUST_LOG` overrides the configured level.
pub fn init_logging(cfg: &LoggingConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match cfg.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Logs a warning per key at most once per interval, so a flood of bad
/// input cannot flood the log; the metrics still count every occurrence.
pub struct LogLimiter {
    every: Duration,
    /// Per key: when it was last logged, and how many were suppressed since.
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `log` if `key` was not logged within the interval.
    pub fn warn(&self, key: &'static str, log: impl FnOnce()) {
        let now = Instant::now();
        let suppressed = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match last.get_mut(key) {
                Some(entry) if now.duration_since(entry.0) < self.every => {
                    entry.1 += 1;
                    return;
                }
                Some(entry) => std::mem::replace(entry, (now, 0)).1,
                None => {
                    last.insert(key, (now, 0));
                    0
                }
            }
        };
        if suppressed > 0 {
            tracing::warn!(key, suppressed, "similar warnings suppressed");
        }
        log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_suppresses_repeats() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let mut n = 0;
        for _ in 0..5 {
            l.warn("x", || n += 1);
        }
        l.warn("y", || n += 1);
        assert_eq!(n, 2);
    }

    /// Every metric the code records is in the catalogue (which the
    /// dashboard and alert tests check against).
    #[test]
    fn recorded_metrics_are_catalogued() {
        let re = regex::Regex::new(r#"(?:counter|gauge|histogram)!\(\s*"(tailsift_[a-z0-9_]+)""#)
            .expect("regex");
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("read src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for cap in re.captures_iter(&text) {
                    seen += 1;
                    assert!(
                        METRICS.iter().any(|(n, ..)| *n == &cap[1]),
                        "{} records {} which is not in METRICS",
                        path.display(),
                        &cap[1]
                    );
                }
            }
        }
        assert!(seen > 20, "only {seen} metric uses found");
    }

    #[test]
    fn metric_names_follow_conventions() {
        for (name, kind, unit, _) in METRICS {
            assert!(
                name.starts_with("tailsift_") || name.starts_with(PROCESS_PREFIX),
                "{name}"
            );
            if *kind == Kind::Counter {
                assert!(name.ends_with("_total"), "{name}");
            }
            if *unit == Unit::Seconds {
                assert!(name.contains("_seconds"), "{name}");
            }
        }
    }
}
