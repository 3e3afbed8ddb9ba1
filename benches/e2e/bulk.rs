//! (e) The ceiling for the Elasticsearch sink: the very documents tailsift
//! writes (its own encoder, every trace kept), batched by the same byte and
//! document limits, sent with the same client and concurrency by a minimal
//! loop. Documents are encoded before the clock starts, so the timed part
//! is Elasticsearch and the HTTP client alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use rdkafka::message::Message as _;
use serde::{Deserialize, Serialize};
use tailsift::config::{BulkConfig, Config};
use tailsift::model::{Decision, Payload, ScanBatch, SpanRef, TraceId};
use tailsift::offsets::AckHandle;
use tailsift::sink::KeptTrace;
use tailsift::sink::document::DocOptions;
use tailsift::sink::elasticsearch::EsClient;
use tailsift::sink::encode::{EncodedTrace, Encoder};
use tailsift::sink::index::IndexNames;
use tailsift::sink::redact::Redactor;
use tailsift::sink::templates::{self, IndexSettings};

use crate::{kafka, procstat};

/// Attempts per bulk request before the loader gives up.
const ATTEMPTS: u32 = 10;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BulkResult {
    /// Span documents (one per span of the topic).
    pub span_docs: u64,
    /// Span plus service documents.
    pub docs: u64,
    pub requests: u64,
    /// Requests sent again after a transport error, 429/5xx or item errors.
    pub retries: u64,
    pub body_bytes: u64,
    /// First request sent to last response.
    pub seconds: f64,
    /// The whole process, encoding included.
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

/// Bulk-loads the topic of the tailsift config at `config` into the
/// Elasticsearch and index prefix it names: the traces of its first
/// messages, up to about `max_spans` spans.
pub fn run(config: &Path, max_spans: u64) -> Result<BulkResult> {
    let cfg = Config::load(config)?;
    let prepared = prepare(&cfg, max_spans)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut out = runtime.block_on(send(&cfg, prepared))?;
    let stats = procstat::own()?;
    out.cpu_seconds = stats.cpu_seconds;
    out.peak_rss = stats.peak_rss;
    Ok(out)
}

/// Bulk bodies ready to send, and what they hold.
struct Prepared {
    bodies: Vec<Bytes>,
    span_docs: u64,
    docs: u64,
}

fn prepare(cfg: &Config, max_spans: u64) -> Result<Prepared> {
    let decoder = tailsift::app::build_rules(cfg)?.decoder;
    let encoder = Encoder::new(
        IndexNames::new(&cfg.index_prefix(), cfg.elasticsearch.use_aliases),
        DocOptions {
            short_trace_ids: cfg.elasticsearch.short_trace_ids,
        },
        Redactor::new(&cfg.elasticsearch.redaction)?,
    );
    let mut batcher = Batcher::new(&cfg.elasticsearch.bulk);
    let mut batch = ScanBatch::default();
    let (mut span_docs, mut docs) = (0, 0);
    kafka::consume_to_end(cfg, |m| {
        if span_docs >= max_spans {
            return;
        }
        let raw = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        let Ok(normalized) = decoder.scan(raw, None, &mut batch) else {
            return;
        };
        let payload = Arc::new(Payload {
            bytes: normalized.bytes,
            format: normalized.format,
            partition: m.partition(),
            offset: m.offset(),
            times: tailsift::span_time::TimeBounds::UNBOUNDED,
        });
        for trace in kept_traces(&batch, &payload) {
            let encoded = encoder.encode(&trace);
            span_docs += (trace.spans.len() - encoded.rejects.len()) as u64;
            docs += encoded.docs.len() as u64;
            batcher.add(&encoded);
        }
    })?;
    Ok(Prepared {
        bodies: batcher.finish(),
        span_docs,
        docs,
    })
}

/// The traces of one message, every one kept, spans in message order.
fn kept_traces(batch: &ScanBatch, payload: &Arc<Payload>) -> Vec<KeptTrace> {
    let mut traces: Vec<(TraceId, Vec<SpanRef>)> = Vec::new();
    for span in &batch.spans {
        let r = SpanRef {
            payload: payload.clone(),
            layout: span.layout,
        };
        match traces.iter_mut().find(|(id, _)| *id == span.trace_id) {
            Some((_, spans)) => spans.push(r),
            None => traces.push((span.trace_id, vec![r])),
        }
    }
    traces
        .into_iter()
        .map(|(trace_id, spans)| KeptTrace {
            trace_id,
            decision: Decision::keep("always".into(), 1.0),
            would_drop: false,
            spans,
            ack: AckHandle::detached(),
        })
        .collect()
}

/// Cuts documents into bulk bodies exactly where the sink's batcher does:
/// before a line that would overflow `max_bytes`, after `max_docs` lines.
struct Batcher {
    max_bytes: usize,
    max_docs: usize,
    body: BytesMut,
    lines: usize,
    bodies: Vec<Bytes>,
}

impl Batcher {
    fn new(cfg: &BulkConfig) -> Self {
        Self {
            max_bytes: cfg.max_bytes.as_u64() as usize,
            max_docs: cfg.max_docs.max(1),
            body: BytesMut::new(),
            lines: 0,
            bodies: Vec::new(),
        }
    }

    fn add(&mut self, encoded: &EncodedTrace) {
        for doc in &encoded.docs {
            let line = &encoded.ndjson[doc.line.clone()];
            if self.lines > 0 && self.body.len() + line.len() > self.max_bytes {
                self.cut();
            }
            self.body.extend_from_slice(line);
            self.lines += 1;
            if self.lines >= self.max_docs || self.body.len() >= self.max_bytes {
                self.cut();
            }
        }
    }

    fn cut(&mut self) {
        if self.lines > 0 {
            self.bodies.push(self.body.split().freeze());
            self.lines = 0;
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.cut();
        self.bodies
    }
}

async fn send(cfg: &Config, prepared: Prepared) -> Result<BulkResult> {
    let es = &cfg.elasticsearch;
    let client = EsClient::new(es)?;
    let names = IndexNames::new(&cfg.index_prefix(), es.use_aliases);
    let settings = IndexSettings {
        shards: es.shards,
        replicas: es.replicas,
    };
    templates::install(&client, &names, settings, false).await?;
    let requests = prepared.bodies.len() as u64;
    let body_bytes = prepared.bodies.iter().map(|b| b.len() as u64).sum();
    let started = Instant::now();
    let retries: Vec<u64> = futures::stream::iter(prepared.bodies)
        .map(|body| send_body(&client, body))
        .buffer_unordered(es.bulk.concurrency.max(1))
        .try_collect()
        .await?;
    Ok(BulkResult {
        span_docs: prepared.span_docs,
        docs: prepared.docs,
        requests,
        retries: retries.iter().sum(),
        body_bytes,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

/// Sends one body until Elasticsearch took every item; returns the retries.
/// `_id`s are deterministic, so sending a whole body again is idempotent.
async fn send_body(client: &EsClient, body: Bytes) -> Result<u64> {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        match client.bulk(body.clone()).await {
            Ok(r) if r.status.is_success() && !item_errors(&r.body)? => {
                return Ok(u64::from(attempt));
            }
            Ok(r) => last_error = format!("status {}, item errors", r.status),
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
    }
    bail!("bulk request failed {ATTEMPTS} times: {last_error}")
}

fn item_errors(body: &[u8]) -> Result<bool> {
    #[derive(Deserialize)]
    struct Head {
        errors: bool,
    }
    let head: Head = serde_json::from_slice(body).context("unreadable bulk response")?;
    Ok(head.errors)
}
