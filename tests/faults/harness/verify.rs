//! The checks: Elasticsearch against the ground truth (lost, duplicated and
//! unexpected spans) and the dead-letter topic read back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::{Elasticsearch, SearchParts};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use tailsift::loadgen::TraceTruth;
use tailsift::model::TraceId;
use tailsift::policy::probabilistic_hash;

use super::{PERCENT, log};
use crate::common;

/// Whether the test policies must keep a trace: an error, or the
/// probabilistic hash under the threshold (both deterministic on replay).
pub fn must_keep(t: &TraceTruth) -> bool {
    let threshold = (PERCENT / 100.0 * u64::MAX as f64) as u64;
    let id = TraceId::from_hex(&t.trace_id).expect("ground truth trace id is hex");
    t.error || probabilistic_hash("default-hash-seed", &id) <= threshold
}

/// Elasticsearch against the ground truth.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verdict {
    pub traces: usize,
    pub must_keep: usize,
    pub spans_checked: u64,
    pub docs: u64,
    /// Spans of must-keep traces missing from Elasticsearch.
    pub lost: u64,
    /// Documents beyond the first per (traceID, spanID).
    pub duplicated: u64,
    /// Traces in Elasticsearch no policy keeps (or not generated at all).
    pub unexpected_traces: usize,
    /// Must-keep traces with more distinct spans than generated.
    pub extra_spans: u64,
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected_traces == 0
            && self.extra_spans == 0
    }

    pub fn ensure(&self) -> Result<()> {
        ensure!(
            self.must_keep > 0,
            "no trace to check: the load produced nothing the policies keep"
        );
        ensure!(
            self.ok(),
            "{} lost spans, {} duplicated documents, {} unexpected traces, {} extra spans \
             ({} must-keep traces, {} spans checked, {} docs); first problems:\n  {}",
            self.lost,
            self.duplicated,
            self.unexpected_traces,
            self.extra_spans,
            self.must_keep,
            self.spans_checked,
            self.docs,
            self.examples.join("\n  ")
        );
        Ok(())
    }
}

pub fn es_client(url: &str) -> Result<Elasticsearch> {
    Ok(Elasticsearch::new(Transport::single_node(url)?))
}

/// Every (traceID, spanID) with its document count, exactly (composite
/// aggregation, paged), from `<prefix>-jaeger-span-*`.
pub async fn span_doc_counts(
    es_url: &str,
    prefix: &str,
) -> Result<HashMap<String, HashMap<String, u64>>> {
    let es = es_client(es_url)?;
    let pattern = format!("{prefix}-jaeger-span-*");
    let r = es
        .indices()
        .refresh(IndicesRefreshParts::Index(&[&pattern]))
        .send()
        .await?;
    ensure!(
        r.status_code().is_success(),
        "refresh {pattern}: {}",
        r.status_code()
    );
    let mut out: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut composite = json!({
            "size": 5000,
            "sources": [
                {"t": {"terms": {"field": "traceID"}}},
                {"s": {"terms": {"field": "spanID"}}}
            ]
        });
        if let Some(a) = &after {
            composite["after"] = a.clone();
        }
        let body =
            json!({"size": 0, "track_total_hits": true, "aggs": {"ids": {"composite": composite}}});
        let resp = es
            .search(SearchParts::Index(&[&pattern]))
            .body(body)
            .send()
            .await?;
        let status = resp.status_code();
        let v: Value = resp.json().await?;
        ensure!(status.is_success(), "search {pattern}: {status}: {v}");
        let agg = &v["aggregations"]["ids"];
        let buckets = agg["buckets"].as_array().cloned().unwrap_or_default();
        for b in &buckets {
            let t = b["key"]["t"].as_str().unwrap_or_default().to_string();
            let s = b["key"]["s"].as_str().unwrap_or_default().to_string();
            let n = b["doc_count"].as_u64().unwrap_or(0);
            *out.entry(t).or_default().entry(s).or_default() += n;
        }
        match agg.get("after_key") {
            Some(a) if !buckets.is_empty() => after = Some(a.clone()),
            _ => break,
        }
    }
    Ok(out)
}

pub async fn verify(es_url: &str, prefix: &str, truth: &[TraceTruth]) -> Result<Verdict> {
    let found = span_doc_counts(es_url, prefix).await?;
    let mut v = Verdict {
        traces: truth.len(),
        ..Default::default()
    };
    let mut known = HashSet::new();
    for t in truth {
        known.insert(t.trace_id.as_str());
        let spans = found.get(&t.trace_id);
        let distinct = spans.map_or(0, |s| s.len() as u64);
        if must_keep(t) {
            v.must_keep += 1;
            v.spans_checked += t.spans as u64;
            let want = t.spans as u64;
            if distinct < want {
                v.lost += want - distinct;
                if v.examples.len() < 10 {
                    v.examples.push(format!(
                        "trace {} (error={}): {distinct} of {want} spans in Elasticsearch",
                        t.trace_id, t.error
                    ));
                }
            } else if distinct > want {
                v.extra_spans += distinct - want;
            }
        } else if distinct > 0 {
            v.unexpected_traces += 1;
            if v.examples.len() < 10 {
                v.examples.push(format!(
                    "trace {} kept but no policy selects it",
                    t.trace_id
                ));
            }
        }
    }
    for (trace, spans) in &found {
        for (span, n) in spans {
            v.docs += n;
            if *n > 1 {
                v.duplicated += n - 1;
                if v.examples.len() < 10 {
                    v.examples
                        .push(format!("trace {trace} span {span}: {n} documents"));
                }
            }
        }
        if !known.contains(trace.as_str()) {
            v.unexpected_traces += 1;
            if v.examples.len() < 10 {
                v.examples.push(format!(
                    "trace {trace} in Elasticsearch was never generated"
                ));
            }
        }
    }
    log(format!(
        "verified: {} traces generated, {} must be kept ({} spans); {} docs; lost {}, duplicated {}, \
         unexpected traces {}, extra spans {}",
        v.traces,
        v.must_keep,
        v.spans_checked,
        v.docs,
        v.lost,
        v.duplicated,
        v.unexpected_traces,
        v.extra_spans
    ));
    Ok(v)
}

/// A message of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterMsg {
    pub key: Option<String>,
    pub len: usize,
    pub headers: HashMap<String, String>,
}

impl DeadLetterMsg {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Reads a whole topic from the beginning to its current end.
pub fn read_topic(brokers: &str, topic: &str) -> Result<Vec<DeadLetterMsg>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::unique_name("faults-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = HashMap::new();
    for p in &partitions {
        let (low, high) = c.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        remaining += high - low;
        ends.insert(*p, high);
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        ensure!(
            Instant::now() < deadline,
            "reading {topic}: {remaining} messages never arrived"
        );
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        if m.offset() >= ends[&m.partition()] {
            continue;
        }
        remaining -= 1;
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers.insert(
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push(DeadLetterMsg {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            len: m.payload().map_or(0, <[u8]>::len),
            headers,
        });
    }
    Ok(out)
}
