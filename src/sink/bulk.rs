//! The Elasticsearch sink: `submit` encodes a kept trace and waits for room
//! in the byte budget (the backpressure), a batcher groups documents into
//! bulk requests by bytes, count and linger time, and up to `concurrency`
//! requests run at once. Transient failures (connection, 429, 5xx — whole
//! request or per item) are retried with exponential backoff forever;
//! permanent item rejections go to the dead-letter sink. A trace is
//! acknowledged once every one of its documents is resolved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use elasticsearch::http::StatusCode;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::sleep_until;

use super::ack::{Backlog, Ticket};
use super::document::DocOptions;
use super::elasticsearch::{BulkReply, EsClient};
use super::encode::Encoder;
use super::index::IndexNames;
use super::redact::Redactor;
use super::templates::{self, IndexSettings};
use super::{KeptTrace, SinkError, TraceSink};
use crate::config::{BulkConfig, ElasticsearchConfig};
use crate::deadletter::{DeadLetter, DeadLetterSink};

/// One bulk item on its way.
struct Doc {
    line: Bytes,
    body: Bytes,
    partition: i32,
    offset: i64,
    ticket: Arc<Ticket>,
}

enum Msg {
    Docs(Vec<Doc>),
    /// Send what is batched now instead of waiting out the linger time.
    Flush,
}

/// Writes kept traces to Elasticsearch. Dropping it stops the writer once
/// queued documents are sent.
pub struct ElasticsearchSink {
    client: EsClient,
    encoder: Encoder,
    backlog: Arc<Backlog>,
    dead_letters: Arc<dyn DeadLetterSink>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl ElasticsearchSink {
    /// Connects, installs the index templates (unless switched off) and, in
    /// alias mode, the write aliases, then starts the writer tasks.
    /// `index_prefix` is the configured prefix with its `-` (see
    /// `Config::index_prefix`).
    pub async fn start(
        cfg: &ElasticsearchConfig,
        index_prefix: &str,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Result<Self, SinkError> {
        let client = EsClient::new(cfg)?;
        let names = IndexNames::new(index_prefix, cfg.use_aliases);
        if cfg.create_templates {
            let settings = IndexSettings {
                shards: cfg.shards,
                replicas: cfg.replicas,
            };
            templates::install(&client, &names, settings).await?;
        }
        if cfg.use_aliases {
            templates::ensure_write_aliases(&client, &names).await?;
        }
        // Unset outside a loaded config (tests, tools): the 1 GiB default's share.
        let queue = cfg.queue_bytes.map_or(64 << 20, |q| q.as_u64());
        let backlog = Arc::new(Backlog::new(queue as usize));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Arc::new(Writer {
            client: client.clone(),
            dead_letters: dead_letters.clone(),
            backoff: (cfg.bulk.initial_backoff, cfg.bulk.max_backoff),
        });
        tokio::spawn(run_batcher(rx, bulk_limits(&cfg.bulk, queue), writer));
        let opts = DocOptions {
            short_trace_ids: cfg.short_trace_ids,
        };
        let redactor = Redactor::new(&cfg.redaction)
            .map_err(|e| SinkError::Config(format!("elasticsearch.redaction: {e}")))?;
        Ok(Self {
            client,
            encoder: Encoder::new(names, opts, redactor),
            backlog,
            dead_letters,
            tx,
        })
    }

    /// Sends what is batched and waits until no submitted document is
    /// pending (each written, or set aside as a dead letter). Meant for
    /// shutdown and tests: under continuous submits it waits for a lull.
    pub async fn flush(&self) {
        let _ = self.tx.send(Msg::Flush);
        self.backlog.wait_idle().await;
    }

    /// Drains for at most `timeout`; false if documents were still pending.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let drained = tokio::time::timeout(timeout, self.flush()).await.is_ok();
        if !drained {
            tracing::warn!(
                ?timeout,
                "Elasticsearch sink not drained at shutdown; pending traces will be replayed"
            );
        }
        drained
    }

    /// Readiness: Elasticsearch answers and accepts our credentials.
    pub async fn ping(&self) -> bool {
        self.client.ping().await
    }
}

impl TraceSink for ElasticsearchSink {
    async fn submit(&self, trace: KeptTrace) {
        let encoded = self.encoder.encode(&trace);
        let bytes = self.backlog.reserve(encoded.ndjson.len()).await;
        let units = encoded.docs.len() + encoded.rejects.len();
        let ticket = Ticket::new(
            self.backlog.clone(),
            trace.ack,
            units,
            bytes,
            encoded.key,
            encoded.ended_micros,
        );
        for letter in encoded.rejects {
            self.dead_letters.send(letter, ticket.dead_letter_ack());
        }
        if encoded.docs.is_empty() {
            return;
        }
        let docs = encoded
            .docs
            .into_iter()
            .map(|d| Doc {
                line: encoded.ndjson.slice(d.line),
                body: encoded.ndjson.slice(d.body),
                partition: d.partition,
                offset: d.offset,
                ticket: ticket.clone(),
            })
            .collect();
        if self.tx.send(Msg::Docs(docs)).is_err() {
            // Only after the writer task died: the trace stays unacknowledged
            // and is replayed from Kafka.
            tracing::error!("Elasticsearch writer is gone; trace left unacknowledged");
        }
    }
}

/// The batching settings, with requests no larger than an eighth of the
/// queue: a request in flight holds its documents twice more (our body and
/// the HTTP client's copy of it) on top of the queue that counts them, so
/// with a small queue (a small `memory.limit`) 5 MiB requests would
/// multiply its memory.
fn bulk_limits(cfg: &BulkConfig, queue_bytes: u64) -> BulkConfig {
    let cap = (queue_bytes / 8).max(256 * 1024);
    BulkConfig {
        max_bytes: bytesize::ByteSize::b(cfg.max_bytes.as_u64().min(cap)),
        ..cfg.clone()
    }
}

/// Groups documents into bulk requests and dispatches them, at most
/// `concurrency` at a time.
async fn run_batcher(mut rx: mpsc::UnboundedReceiver<Msg>, cfg: BulkConfig, writer: Arc<Writer>) {
    let concurrency = cfg.concurrency.max(1);
    let in_flight = Arc::new(Semaphore::new(concurrency));
    let max_bytes = cfg.max_bytes.as_u64() as usize;
    let max_docs = cfg.max_docs.max(1);
    let mut batch = Batch::default();
    loop {
        let msg = match batch.deadline {
            Some(deadline) => tokio::select! {
                msg = rx.recv() => msg,
                _ = sleep_until(deadline.into()) => Some(Msg::Flush),
            },
            None => rx.recv().await,
        };
        match msg {
            Some(Msg::Docs(docs)) => {
                for doc in docs {
                    if !batch.docs.is_empty() && batch.bytes + doc.line.len() > max_bytes {
                        dispatch(&mut batch, &in_flight, &writer).await;
                    }
                    batch.push(doc, cfg.linger);
                    if batch.docs.len() >= max_docs || batch.bytes >= max_bytes {
                        dispatch(&mut batch, &in_flight, &writer).await;
                    }
                }
            }
            Some(Msg::Flush) => dispatch(&mut batch, &in_flight, &writer).await,
            None => break,
        }
    }
    dispatch(&mut batch, &in_flight, &writer).await;
    // Let in-flight requests finish before the task ends.
    let _ = in_flight.acquire_many(concurrency as u32).await;
}

#[derive(Default)]
struct Batch {
    docs: Vec<Doc>,
    bytes: usize,
    /// When the oldest document has lingered long enough.
    deadline: Option<Instant>,
}

impl Batch {
    fn push(&mut self, doc: Doc, linger: Duration) {
        self.deadline.get_or_insert_with(|| Instant::now() + linger);
        self.bytes += doc.line.len();
        self.docs.push(doc);
    }
}

async fn dispatch(batch: &mut Batch, in_flight: &Arc<Semaphore>, writer: &Arc<Writer>) {
    if batch.docs.is_empty() {
        return;
    }
    let docs = std::mem::take(batch).docs;
    let Ok(permit) = in_flight.clone().acquire_owned().await else {
        return;
    };
    let writer = writer.clone();
    tokio::spawn(async move {
        writer.write(docs).await;
        drop(permit);
    });
}

/// Sends bulk requests until every document is resolved.
struct Writer {
    client: EsClient,
    dead_letters: Arc<dyn DeadLetterSink>,
    backoff: (Duration, Duration),
}

/// What to do with the documents of one request after its response.
enum Outcome {
    Done,
    /// Retry these after a backoff.
    Retry(Vec<Doc>),
    /// The body was refused as a whole (too large or unparsable): send the
    /// halves separately to isolate the culprit.
    Split(Vec<Doc>),
}

impl Writer {
    async fn write(&self, docs: Vec<Doc>) {
        let mut work = vec![docs];
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        while let Some(docs) = work.pop() {
            match self.attempt(docs).await {
                Outcome::Done => backoff.reset(),
                Outcome::Retry(docs) => {
                    backoff.wait().await;
                    work.push(docs);
                }
                Outcome::Split(mut docs) => {
                    let tail = docs.split_off(docs.len() / 2);
                    work.push(tail);
                    work.push(docs);
                }
            }
        }
    }

    async fn attempt(&self, docs: Vec<Doc>) -> Outcome {
        let body = concat(&docs);
        let started = Instant::now();
        let reply = self.client.bulk(body).await;
        metrics::histogram!("tailsift_es_bulk_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match reply {
            Err(e) => {
                request_failed("connection_error", "connection");
                retried("connection");
                tracing::warn!(error = %e, docs = docs.len(), "bulk request failed, retrying");
                Outcome::Retry(docs)
            }
            Ok(reply) => self.on_reply(docs, reply),
        }
    }

    fn on_reply(&self, docs: Vec<Doc>, reply: BulkReply) -> Outcome {
        let status = reply.status;
        if status.is_success() {
            return self.on_items(docs, &reply.body);
        }
        let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)]).into_owned();
        let whole_body_refused = matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST
        );
        match (whole_body_refused, docs.len()) {
            (true, 1) => {
                request_failed("http_error", "http_4xx");
                self.reject_all(docs, &format!("http {status}: {text}"));
                Outcome::Done
            }
            (true, _) => {
                request_failed("http_error", "http_4xx");
                Outcome::Split(docs)
            }
            // 429, 5xx and everything else (auth, missing permissions…):
            // retrying keeps the data; the logs and metrics say why.
            _ => {
                request_failed("http_error", retry_reason(status));
                retried(retry_reason(status));
                tracing::warn!(%status, body = %text, docs = docs.len(), "bulk request refused, retrying");
                Outcome::Retry(docs)
            }
        }
    }

    fn on_items(&self, docs: Vec<Doc>, body: &[u8]) -> Outcome {
        #[derive(Deserialize)]
        struct Head {
            errors: bool,
        }
        match serde_json::from_slice::<Head>(body) {
            Ok(Head { errors: false }) => {
                metrics::counter!("tailsift_es_bulk_requests_total", "result" => "ok").increment(1);
                indexed(&docs);
                return Outcome::Done;
            }
            Ok(Head { errors: true }) => {}
            Err(e) => return self.unreadable(docs, &e.to_string()),
        }
        metrics::counter!("tailsift_es_bulk_requests_total", "result" => "item_errors")
            .increment(1);
        let items = match serde_json::from_slice::<Items>(body) {
            Ok(i) if i.items.len() == docs.len() => i.items,
            Ok(i) => {
                let why = format!("{} items for {} documents", i.items.len(), docs.len());
                return self.unreadable(docs, &why);
            }
            Err(e) => return self.unreadable(docs, &e.to_string()),
        };
        let mut retry = Vec::new();
        let mut rejected = 0;
        for (doc, item) in docs.into_iter().zip(items) {
            let r = item.index;
            match r.status {
                200..=299 => indexed(std::slice::from_ref(&doc)),
                429 | 500.. => {
                    retried(retry_reason_code(r.status));
                    retry.push(doc);
                }
                _ => {
                    let err = r.error.unwrap_or_default();
                    if rejected == 0 {
                        tracing::warn!(status = r.status, error = %err.kind, reason = %err.reason, "document rejected by Elasticsearch");
                    }
                    rejected += 1;
                    metrics::counter!("tailsift_es_errors_total", "type" => err.kind.clone())
                        .increment(1);
                    self.reject(doc, format!("{}: {}", err.kind, err.reason));
                }
            }
        }
        match retry.is_empty() {
            true => Outcome::Done,
            false => Outcome::Retry(retry),
        }
    }

    /// A 2xx response we cannot read: we do not know what was stored, so
    /// send it again (`_id`s are deterministic: no duplicates).
    fn unreadable(&self, docs: Vec<Doc>, why: &str) -> Outcome {
        tracing::warn!(error = why, "unreadable bulk response, retrying");
        metrics::counter!("tailsift_es_errors_total", "type" => "unreadable_response").increment(1);
        Outcome::Retry(docs)
    }

    fn reject_all(&self, docs: Vec<Doc>, error: &str) {
        for doc in docs {
            self.reject(doc, error.to_string());
        }
    }

    /// Permanently refused: counted, handed to the dead-letter sink, and
    /// resolved once the dead letter is stored.
    fn reject(&self, doc: Doc, error: String) {
        metrics::counter!("tailsift_es_documents_total", "result" => "rejected").increment(1);
        let letter = DeadLetter {
            payload: doc.body,
            key: Some(doc.ticket.key.clone()),
            reason: "es_rejected",
            error,
            partition: doc.partition,
            offset: doc.offset,
        };
        self.dead_letters.send(letter, doc.ticket.dead_letter_ack());
    }
}

#[derive(Deserialize)]
struct Items {
    items: Vec<Item>,
}

/// One response item, keyed by its op (we only send `index`).
#[derive(Deserialize)]
struct Item {
    #[serde(alias = "create", alias = "update", alias = "delete")]
    index: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    error: Option<ItemError>,
}

#[derive(Deserialize, Default)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

fn indexed(docs: &[Doc]) {
    metrics::counter!("tailsift_es_documents_total", "result" => "indexed")
        .increment(docs.len() as u64);
    for d in docs {
        d.ticket.resolve();
    }
}

fn request_failed(result: &'static str, error_type: &'static str) {
    metrics::counter!("tailsift_es_bulk_requests_total", "result" => result).increment(1);
    metrics::counter!("tailsift_es_errors_total", "type" => error_type).increment(1);
}

fn retried(reason: &'static str) {
    metrics::counter!("tailsift_es_retries_total", "reason" => reason).increment(1);
}

fn retry_reason(status: StatusCode) -> &'static str {
    retry_reason_code(status.as_u16())
}

fn retry_reason_code(status: u16) -> &'static str {
    match status {
        429 => "http_429",
        500.. => "http_5xx",
        _ => "http_4xx",
    }
}

/// Body of one bulk request: the documents' lines back to back.
fn concat(docs: &[Doc]) -> Bytes {
    let mut body = BytesMut::with_capacity(docs.iter().map(|d| d.line.len()).sum());
    for d in docs {
        body.extend_from_slice(&d.line);
    }
    body.freeze()
}

/// Exponential backoff with ±20% jitter so writers do not retry in step.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    async fn wait(&mut self) {
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_parsing() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"i","_id":"a","status":201,"result":"created"}},
            {"index":{"_index":"i","_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"index":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let items: Items = serde_json::from_slice(body).unwrap();
        let statuses: Vec<u16> = items.items.iter().map(|i| i.index.status).collect();
        assert_eq!(statuses, [201, 400, 429]);
        let err = items.items[1].index.error.as_ref().unwrap();
        assert_eq!(
            (err.kind.as_str(), err.reason.as_str()),
            ("mapper_parsing_exception", "failed to parse")
        );
    }

    #[test]
    fn bulk_requests_stay_small_next_to_the_queue() {
        let cfg = BulkConfig::default();
        assert_eq!(bulk_limits(&cfg, 64 << 20).max_bytes, cfg.max_bytes);
        assert_eq!(bulk_limits(&cfg, 16 << 20).max_bytes.as_u64(), 2 << 20);
        assert_eq!(bulk_limits(&cfg, 1 << 20).max_bytes.as_u64(), 256 * 1024);
    }

    #[tokio::test]
    async fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(30));
        let t0 = Instant::now();
        for _ in 0..3 {
            b.wait().await;
        }
        // 10 + 20 + 30 (capped), each at least 80%.
        assert!(
            t0.elapsed() >= Duration::from_millis(48),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(b.next, Duration::from_millis(30));
        b.reset();
        assert_eq!(b.next, Duration::from_millis(10));
    }
}
