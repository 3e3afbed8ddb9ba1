use std::collections::HashMap;

use bytes::Bytes;

use super::*;
use crate::config::EncodingSetting;
use crate::decode::Decoder;
use crate::loadgen::encode;
use crate::loadgen::generator::{GenTrace, Profile, TraceGenerator};
use crate::model::{AttributeKeys, ScanBatch};
use crate::offsets::AckHandle;
use crate::series::Exposition;

fn traces(n: usize, seed: u64) -> Vec<GenTrace> {
    let mut g = TraceGenerator::new(Profile::default(), seed);
    (0..n)
        .map(|i| g.trace(1_700_000_000_000_000_000 + i as u64 * 1_000_000))
        .collect()
}

/// Parent service → child service calls of the generated spans, as
/// Jaeger derives them.
fn truth(traffic: &[GenTrace]) -> HashMap<(String, String), u64> {
    let mut links = HashMap::new();
    for t in traffic {
        for child in &t.spans {
            if let Some(parent) = t.spans.iter().find(|p| p.span_id == child.parent) {
                *links
                    .entry((parent.service.clone(), child.service.clone()))
                    .or_default() += 1;
            }
        }
    }
    links
}

/// Every trace scanned as one OTLP message, its spans observed in
/// `deps`; calls `decided` for each trace after its spans.
fn feed(
    deps: &mut PartitionDependencies,
    traffic: &[GenTrace],
    mut decided: impl FnMut(&mut PartitionDependencies, &GenTrace, i64),
) {
    let decoder = Decoder::new(
        EncodingSetting::OtlpProto,
        AttributeKeys::default(),
        1 << 24,
    );
    let mut batch = ScanBatch::default();
    for (offset, t) in traffic.iter().enumerate() {
        let spans: Vec<_> = t.spans.iter().map(|s| (t.trace_id, s)).collect();
        let bytes = Bytes::from(encode::otlp(&spans, false));
        let normalized = decoder.scan(bytes, None, &mut batch).expect("scan");
        for i in 0..batch.spans.len() {
            deps.observe(&batch.view(i, &normalized.bytes), batch.spans.len());
        }
        decided(deps, t, offset as i64);
    }
}

fn document_links(doc: &Document) -> HashMap<(String, String), u64> {
    let list = doc.body["dependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (
                (s("parent"), s("child")),
                l["callCount"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Dependencies with a writer that is never run: its presence turns the
/// documents on.
fn with_writer() -> Dependencies {
    let deps = Dependencies::new(&DependenciesConfig::default());
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let _ = deps.writer.set(LinkWriter::from_sender(tx));
    deps
}

#[test]
fn documents_hold_exactly_the_parent_links() {
    let deps = with_writer();
    let mut part = deps.partition("jaeger-spans", 3);
    let traffic = traces(400, 21);
    feed(&mut part, &traffic, |d, t, offset| {
        match d.decided(&t.trace_id, offset) {
            Counted::Pending(None) => assert!(t.spans.len() > 1),
            Counted::Pending(Some(_)) => panic!("one bucket"),
            Counted::Nothing => assert_eq!(t.spans.len(), 1, "a trace without links"),
        }
    });
    let flush = part.flush_now().expect("a document");
    assert_eq!(document_links(&flush.document), truth(&traffic));
    let linked = traffic.iter().filter(|t| t.spans.len() > 1).count();
    assert_eq!(
        flush.gate.offsets.len(),
        linked,
        "their first messages wait"
    );
    let ts = flush.document.body["timestamp"]
        .as_str()
        .unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert!(ts.ends_with(":00:00Z"), "hour bucket start: {ts}");
    assert!(flush.document.id.starts_with("jaeger-spans-3-"));
}

#[test]
fn a_flush_carries_the_running_totals_and_the_waiting_records() {
    let deps = with_writer();
    let mut part = deps.partition("t", 0);
    let traffic = traces(60, 4);
    let (a, b) = traffic.split_at(30);
    feed(&mut part, a, |d, t, o| drop(d.decided(&t.trace_id, o)));
    let record = crate::decision_log::Pending::new(
        a[0].trace_id,
        crate::decision_log::record::DecisionRecord::new(
            &crate::model::Decision::drop("p".into()),
            crate::model::DecisionReason::Timeout,
            0,
            (0, 0),
        ),
        AckHandle::detached(),
    );
    part.hold(record);
    let first = part.flush_now().expect("first");
    assert_eq!(first.records.len(), 1);
    assert!(part.flush_now().is_none(), "nothing new, nothing to write");
    feed(&mut part, b, |d, t, o| drop(d.decided(&t.trace_id, o)));
    let second = part.flush_now().expect("second");
    assert_eq!(
        second.document.id, first.document.id,
        "the same document, rewritten"
    );
    assert_eq!(document_links(&second.document), truth(&traffic));
    assert!(second.records.is_empty());
}

#[test]
fn forgotten_and_unlinked_traces_count_nothing() {
    let deps = with_writer();
    let mut part = deps.partition("t", 0);
    let traffic = traces(10, 8);
    feed(&mut part, &traffic, |d, t, _| d.forget(&t.trace_id));
    assert!(part.tracker.is_empty());
    assert!(part.flush_now().is_none());
    let mut lone = traces(1, 2);
    lone[0].spans.truncate(1);
    feed(&mut part, &lone, |d, t, o| {
        assert!(matches!(d.decided(&t.trace_id, o), Counted::Nothing));
    });
}

#[test]
fn the_service_graph_counts_calls_between_services() {
    let deps = Dependencies::new(&DependenciesConfig::default());
    let graph = deps.graph.clone().expect("service graph on by default");
    let mut part = deps.partition("t", 0);
    let traffic = traces(200, 13);
    feed(&mut part, &traffic, |d, t, o| {
        assert!(
            matches!(d.decided(&t.trace_id, o), Counted::Nothing),
            "no writer: no documents"
        );
    });
    assert!(part.tick().is_none());
    let mut out = String::new();
    graph.render(&mut out);
    out.clear();
    graph.render(&mut out);
    let mut seen = HashMap::new();
    for line in out
        .lines()
        .filter(|l| l.starts_with("traces_service_graph_request_total{"))
    {
        let (labels, n) = line.rsplit_once(' ').expect("sample");
        seen.insert(labels.to_string(), n.parse::<u64>().expect("count"));
    }
    let expected: HashMap<String, u64> = truth(&traffic)
        .into_iter()
        .filter(|((p, c), _)| p != c)
        .map(|((p, c), n)| {
            (
                format!("traces_service_graph_request_total{{client=\"{p}\",server=\"{c}\"}}"),
                n,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    assert!(out.contains("traces_service_graph_request_server_seconds_bucket{"));
}

#[test]
fn buckets_and_intervals_are_checked() {
    let mut cfg = DependenciesConfig::default();
    assert!(cfg.validate().is_ok());
    cfg.flush_interval = Duration::from_secs(7200);
    assert!(cfg.validate().is_err());
}

#[test]
fn rendered_families_are_catalogued() {
    let graph = ServiceGraph::new(&service_graph::DEFAULT_BUCKETS_S, 10);
    let mut out = String::new();
    graph.render(&mut out);
    let typed: Vec<_> = out
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(typed.len(), 4);
    for name in typed {
        assert!(
            crate::telemetry::CONNECTOR_METRICS
                .iter()
                .any(|(n, _)| *n == name),
            "{name}"
        );
    }
}
