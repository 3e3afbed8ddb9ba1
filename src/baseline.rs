//! Every metric family from the start. A Prometheus series exists only once
//! it is recorded; on an idle topic dashboards would show "no data" and
//! `rate()`/`absent()` alerts could not work until traffic happened to
//! create each one. So the series whose labels are known in advance are
//! created at zero: at start-up, per configured policy (again on reload),
//! and per partition on assignment. Labels only traffic reveals (the error
//! types in Elasticsearch replies) come with it.
//!
//! Zero is added, never set, so nothing counted earlier is reset.

use crate::config::Config;
use crate::decode::DecodeError;
use crate::model::DecisionReason;
use crate::policy::{self, PolicyEngine};

fn counter(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|&(k, v)| metrics::Label::new(k, v))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

fn gauge(name: &'static str) {
    metrics::gauge!(name).increment(0.0);
}

/// Reasons dead letters are sent for besides decode errors (the sink's).
const SINK_REJECTS: &[&str] = &["undecodable_span", "invalid_span"];

/// Series of the service's start: decode, dead letters, Kafka, memory,
/// Elasticsearch, decisions.
pub fn at_start(cfg: &Config, engine: &PolicyEngine) {
    for &reason in DecodeError::REASONS {
        counter("tailsift_decode_errors_total", &[("reason", reason)]);
    }
    let outcome = match cfg.kafka.dead_letter_topic() {
        Some(_) => "produced",
        None => "not_configured",
    };
    let letters = DecodeError::REASONS
        .iter()
        .chain(SINK_REJECTS)
        .chain(&["es_rejected"]);
    for &reason in letters {
        counter(
            "tailsift_dead_letters_total",
            &[("reason", reason), ("outcome", outcome)],
        );
    }
    for &reason in SINK_REJECTS {
        counter("tailsift_sink_invalid_spans_total", &[("reason", reason)]);
    }
    for &reason in crate::keying::REASONS {
        counter("tailsift_unkeyed_messages_total", &[("reason", reason)]);
    }
    counter("tailsift_rekeyed_messages_total", &[]);
    for fault in crate::span_time::Fault::ALL {
        counter(
            "tailsift_span_time_corrections_total",
            &[("reason", fault.as_str())],
        );
    }
    gauge("tailsift_dead_letter_bytes");
    counter("tailsift_decision_log_loaded_total", &[]);
    let _ = metrics::histogram!("tailsift_decision_log_load_seconds");
    for result in ["ok", "error"] {
        counter("tailsift_commits_total", &[("result", result)]);
        counter("tailsift_policy_reloads_total", &[("result", result)]);
    }
    for kind in ["assign", "revoke", "error"] {
        counter("tailsift_rebalances_total", &[("kind", kind)]);
    }
    counter("tailsift_kafka_errors_total", &[]);
    counter("tailsift_memory_purges_total", &[]);
    counter("tailsift_span_metrics_overflow_spans_total", &[]);
    counter("tailsift_service_graph_overflow_calls_total", &[]);
    for result in ["stored", "retried", "rejected"] {
        counter("tailsift_dependency_documents_total", &[("result", result)]);
    }
    gauge("tailsift_paused_partitions");
    gauge("tailsift_sink_queue_bytes");
    elasticsearch();
    decisions(engine);
}

/// The sink's series; the error types of failed requests that need no
/// reply to be known (a connection error) are among them.
fn elasticsearch() {
    for result in ["ok", "error", "item_errors"] {
        counter("tailsift_es_bulk_requests_total", &[("result", result)]);
    }
    for result in ["indexed", "rejected"] {
        counter("tailsift_es_documents_total", &[("result", result)]);
    }
    counter("tailsift_es_errors_total", &[("type", "request_refused")]);
    for reason in crate::sink::classify::Reason::ALL {
        counter("tailsift_es_retries_total", &[("reason", reason.as_str())]);
    }
    counter("tailsift_es_service_documents_total", &[]);
    // Registered: rendered with empty buckets until the first record.
    let _ = metrics::histogram!("tailsift_es_bulk_duration_seconds");
    let _ = metrics::histogram!("tailsift_freshness_seconds");
}

/// Decisions per policy and outcome, decision reasons and latency: at
/// start and for the policies of each reload.
pub fn decisions(engine: &PolicyEngine) {
    let mut names = engine.policy_names();
    if names.iter().all(|n| &**n != policy::ALWAYS) {
        // Traces no policy samples are dropped under this name.
        names.push(policy::NONE.into());
    }
    for name in names {
        for outcome in ["kept", "dropped"] {
            let labels = [
                metrics::Label::new("policy", name.to_string()),
                metrics::Label::new("outcome", outcome),
            ];
            metrics::counter!("tailsift_decisions_total", labels.to_vec()).increment(0);
        }
    }
    for reason in [
        DecisionReason::Timeout,
        DecisionReason::Root,
        DecisionReason::Limit,
        DecisionReason::Memory,
        DecisionReason::Shutdown,
    ] {
        counter(
            "tailsift_decision_reasons_total",
            &[("reason", reason.as_str())],
        );
    }
    let _ = metrics::histogram!("tailsift_decision_latency_seconds");
}

/// Series of a newly assigned partition, until librdkafka's statistics and
/// the first commit report it.
pub fn partition(partition: i32) {
    let p = partition.to_string();
    metrics::gauge!("tailsift_consumer_lag_messages", "partition" => p.clone()).increment(0.0);
    metrics::gauge!("tailsift_committed_offset", "partition" => p.clone()).increment(0.0);
    metrics::gauge!("tailsift_partition_lag_seconds", "partition" => p.clone()).increment(0.0);
    metrics::counter!("tailsift_lost_messages_total", "partition" => p).increment(0);
}
