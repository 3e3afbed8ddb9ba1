use std::collections::HashMap;

use bytes::Bytes;

use super::*;
use crate::config::EncodingSetting;
use crate::decode::Decoder;
use crate::loadgen::encode;
use crate::loadgen::generator::{GenTrace, Profile, TraceGenerator};
use crate::model::ScanBatch;

fn traces(n: usize, seed: u64) -> Vec<GenTrace> {
    let mut g = TraceGenerator::new(
        Profile {
            error_rate: 0.3,
            ..Profile::default()
        },
        seed,
    );
    (0..n)
        .map(|i| g.trace(1_700_000_000_000_000_000 + i as u64 * 1_000_000))
        .collect()
}

/// Scans every trace as one OTLP message and counts its spans.
fn observe_all(local: &mut LocalSpanMetrics, cfg: &SpanMetricsConfig, traces: &[GenTrace]) {
    let keys = SpanMetrics::attribute_keys(cfg);
    let decoder = Decoder::new(EncodingSetting::OtlpProto, keys, 1 << 24);
    let mut batch = ScanBatch::default();
    for t in traces {
        let spans: Vec<_> = t.spans.iter().map(|s| (t.trace_id, s)).collect();
        let bytes = Bytes::from(encode::otlp(&spans, false));
        let normalized = decoder.scan(bytes, None, &mut batch).expect("scan");
        for i in 0..batch.spans.len() {
            local.observe(&batch.view(i, &normalized.bytes));
        }
    }
    local.flush();
}

/// `name{labels} value` lines of one family, by their label text.
fn samples(text: &str, family: &str) -> HashMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn kind_label(kind: i32) -> &'static str {
    kind_name(kind as u8)
}

#[test]
fn calls_by_service_operation_kind_and_status_match_the_spans() {
    let cfg = SpanMetricsConfig::default();
    let metrics = Arc::new(SpanMetrics::new(&cfg));
    let traffic = traces(300, 5);
    observe_all(&mut metrics.local(), &cfg, &traffic);
    let mut truth: HashMap<String, f64> = HashMap::new();
    for s in traffic.iter().flat_map(|t| &t.spans) {
        let status = if s.error {
            "STATUS_CODE_ERROR"
        } else {
            "STATUS_CODE_UNSET"
        };
        let labels = format!(
            "service_name=\"{}\",span_name=\"{}\",span_kind=\"{}\",status_code=\"{status}\"",
            s.service,
            s.name,
            kind_label(s.kind)
        );
        *truth.entry(labels).or_default() += 1.0;
    }
    let family = "traces_span_metrics_calls_total";
    let mut first = String::new();
    metrics.render(&mut first);
    let zeros = samples(&first, family);
    assert_eq!(zeros.len(), truth.len(), "every new series is shown");
    assert!(
        zeros.values().all(|v| *v == 0.0),
        "a new series starts at zero"
    );
    let mut second = String::new();
    metrics.render(&mut second);
    assert_eq!(samples(&second, family), truth);
    let counts = samples(&second, "traces_span_metrics_duration_milliseconds_count");
    assert_eq!(counts.values().sum::<f64>(), truth.values().sum::<f64>());
    assert!(second.contains("# TYPE traces_span_metrics_duration_milliseconds histogram"));
}

#[test]
fn durations_fall_in_their_bucket() {
    let cfg = SpanMetricsConfig::default();
    let metrics = Arc::new(SpanMetrics::new(&cfg));
    let mut traffic = traces(1, 9);
    traffic[0].spans.truncate(1);
    let span = &mut traffic[0].spans[0];
    span.end_unix_nano = span.start_unix_nano + 7_000_000; // 7 ms: bucket le="8"
    observe_all(&mut metrics.local(), &cfg, &traffic);
    let mut out = String::new();
    metrics.render(&mut out);
    out.clear();
    metrics.render(&mut out);
    let buckets = samples(&out, "traces_span_metrics_duration_milliseconds_bucket");
    let at = |le: &str| {
        buckets
            .iter()
            .find(|(l, _)| l.ends_with(&format!("le=\"{le}\"")))
            .map(|(_, v)| *v)
    };
    assert_eq!(at("6"), Some(0.0));
    assert_eq!(at("8"), Some(1.0));
    assert_eq!(at("+Inf"), Some(1.0));
    assert!(out.contains("_sum{") && out.contains("} 7.0\n"), "{out}");
}

#[test]
fn dimensions_add_labels_from_attributes() {
    let cfg = SpanMetricsConfig {
        dimensions: vec!["http.route".into(), "missing.key".into()],
        ..SpanMetricsConfig::default()
    };
    let metrics = Arc::new(SpanMetrics::new(&cfg));
    observe_all(&mut metrics.local(), &cfg, &traces(20, 3));
    let mut out = String::new();
    metrics.render(&mut out);
    let calls = samples(&out, "traces_span_metrics_calls_total");
    assert!(!calls.is_empty());
    for labels in calls.keys() {
        let route = labels.split(',').find(|l| l.starts_with("http_route="));
        let name = labels.split(',').find(|l| l.starts_with("span_name="));
        let (Some(route), Some(name)) = (route, name) else {
            panic!("labels {labels}");
        };
        // The generator sets http.route to the span name.
        assert_eq!(
            route.trim_start_matches("http_route="),
            name.trim_start_matches("span_name=")
        );
        assert!(
            !labels.contains("missing_key"),
            "an absent attribute adds no label"
        );
    }
}

#[test]
fn series_beyond_the_cap_go_to_the_overflow_series() {
    let cfg = SpanMetricsConfig {
        max_series: 3,
        ..SpanMetricsConfig::default()
    };
    let metrics = Arc::new(SpanMetrics::new(&cfg));
    let traffic = traces(100, 11);
    let spans: usize = traffic.iter().map(|t| t.spans.len()).sum();
    observe_all(&mut metrics.local(), &cfg, &traffic);
    let mut out = String::new();
    metrics.render(&mut out);
    out.clear();
    metrics.render(&mut out);
    let calls = samples(&out, "traces_span_metrics_calls_total");
    assert_eq!(calls.len(), 4, "three series and the overflow: {calls:?}");
    assert!(calls.contains_key("otel_metric_overflow=\"true\""));
    assert_eq!(calls.values().sum::<f64>(), spans as f64, "nothing is lost");
}

#[test]
fn a_bad_namespace_is_refused() {
    let cfg = SpanMetricsConfig {
        namespace: "traces.span".into(),
        ..SpanMetricsConfig::default()
    };
    assert!(cfg.validate().is_err());
    assert!(SpanMetricsConfig::default().validate().is_ok());
}

#[test]
fn rendered_families_are_catalogued() {
    let cfg = SpanMetricsConfig::default();
    let metrics = Arc::new(SpanMetrics::new(&cfg));
    let mut out = String::new();
    metrics.render(&mut out);
    let catalogued = |name: &str| {
        crate::telemetry::CONNECTOR_METRICS
            .iter()
            .any(|(n, _)| *n == name)
    };
    let typed: Vec<_> = out
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(typed.len(), 2);
    assert!(typed.iter().all(|n| catalogued(n)), "{typed:?}");
}
