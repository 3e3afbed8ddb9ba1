//! The Elasticsearch sink: `submit` encodes a kept trace and waits for room
//! in the byte budget (the backpressure), a batcher groups documents into
//! bulk requests by bytes, count and linger time, and up to `concurrency`
//! requests run at once. Each reply is classified (`classify`): documents
//! refused for a cluster reason are retried with exponential backoff
//! forever, documents refused for their content go to the dead-letter sink.
//! A trace is acknowledged once every one of its documents is resolved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::sleep_until;

use super::ack::{Backlog, Ticket};
use super::classify::{Action, Reason, Reply, Verdict, classify};
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

/// What the Elasticsearch sink is built from (resolved by `plan::Plan`).
#[derive(Clone, Debug)]
pub struct SinkSettings {
    pub elasticsearch: ElasticsearchConfig,
    /// The configured prefix with its `-` (see `Config::index_prefix`).
    pub index_prefix: String,
    /// Bytes of encoded documents waiting for Elasticsearch; beyond them
    /// `submit` waits, and soon the partitions are paused.
    pub queue_bytes: u64,
    /// `elasticsearch.bulk`, with requests sized to the queue.
    pub bulk: BulkConfig,
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
    pub async fn start(
        settings: &SinkSettings,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Result<Self, SinkError> {
        let cfg = &settings.elasticsearch;
        let client = EsClient::new(cfg)?;
        let names = IndexNames::new(&settings.index_prefix, cfg.use_aliases);
        if cfg.create_templates {
            let index = IndexSettings {
                shards: cfg.shards,
                replicas: cfg.replicas,
            };
            templates::install(&client, &names, index, cfg.overwrite_templates).await?;
        }
        if cfg.use_aliases {
            templates::ensure_write_aliases(&client, &names).await?;
        }
        let backlog = Arc::new(Backlog::new(settings.queue_bytes as usize));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Arc::new(Writer {
            client: client.clone(),
            dead_letters: dead_letters.clone(),
            backoff: (settings.bulk.initial_backoff, settings.bulk.max_backoff),
        });
        tokio::spawn(run_batcher(rx, settings.bulk.clone(), writer));
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
            self.dead_letters
                .send(letter, ticket.dead_letter_ack())
                .await;
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

/// What is left of one request after its reply.
enum Outcome {
    Done,
    /// Retry these after a backoff.
    Retry(Vec<Doc>),
    /// Send the halves separately to isolate the culprit.
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
        if let Err(e) = &reply {
            tracing::warn!(error = %e, docs = docs.len(), "bulk request failed, retrying");
        }
        let reply = reply.ok();
        let verdict = classify(
            reply.as_ref().map(|r| Reply {
                status: r.status.as_u16(),
                body: &r.body,
            }),
            docs.len(),
        );
        self.apply(docs, verdict, reply.as_ref()).await
    }

    async fn apply(&self, docs: Vec<Doc>, verdict: Verdict, reply: Option<&BulkReply>) -> Outcome {
        match verdict {
            Verdict::Acknowledge => {
                request_done("ok");
                indexed(&docs);
                Outcome::Done
            }
            Verdict::Retry(reason) => {
                request_done("error");
                if let Some(r) = reply {
                    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(512)]);
                    tracing::warn!(status = %r.status, body = %text, reason = reason.as_str(), docs = docs.len(), "bulk request refused, retrying");
                }
                retried(reason, docs.len());
                Outcome::Retry(docs)
            }
            Verdict::Split => {
                request_done("error");
                metrics::counter!("tailsift_es_errors_total", "type" => "request_refused")
                    .increment(1);
                Outcome::Split(docs)
            }
            Verdict::Items(actions) => {
                request_done("item_errors");
                self.per_item(docs, actions).await
            }
        }
    }

    async fn per_item(&self, docs: Vec<Doc>, actions: Vec<Action>) -> Outcome {
        let mut retry = Vec::new();
        let mut first_reason = None;
        let mut rejected = 0;
        for (doc, action) in docs.into_iter().zip(actions) {
            match action {
                Action::Acknowledge => indexed(std::slice::from_ref(&doc)),
                Action::Retry(reason) => {
                    first_reason.get_or_insert(reason);
                    retried(reason, 1);
                    retry.push(doc);
                }
                Action::DeadLetter { kind, error } => {
                    if rejected == 0 {
                        tracing::warn!(%error, "document rejected by Elasticsearch");
                    }
                    rejected += 1;
                    metrics::counter!("tailsift_es_errors_total", "type" => kind).increment(1);
                    self.reject(doc, error).await;
                }
            }
        }
        if let Some(reason) = first_reason {
            tracing::warn!(
                reason = reason.as_str(),
                docs = retry.len(),
                "Elasticsearch refused documents for a cluster reason; retrying"
            );
        }
        match retry.is_empty() {
            true => Outcome::Done,
            false => Outcome::Retry(retry),
        }
    }

    /// Permanently refused: counted, handed to the dead-letter sink, and
    /// resolved once the dead letter is stored.
    async fn reject(&self, doc: Doc, error: String) {
        metrics::counter!("tailsift_es_documents_total", "result" => "rejected").increment(1);
        let letter = DeadLetter {
            payload: doc.body,
            key: Some(doc.ticket.key.clone()),
            reason: "es_rejected",
            error,
            partition: doc.partition,
            offset: doc.offset,
        };
        self.dead_letters
            .send(letter, doc.ticket.dead_letter_ack())
            .await;
    }
}

fn indexed(docs: &[Doc]) {
    metrics::counter!("tailsift_es_documents_total", "result" => "indexed")
        .increment(docs.len() as u64);
    for d in docs {
        d.ticket.resolve();
    }
}

fn request_done(result: &'static str) {
    metrics::counter!("tailsift_es_bulk_requests_total", "result" => result).increment(1);
}

/// Documents sent again, by why: the sign of what an operator must fix.
fn retried(reason: Reason, docs: usize) {
    metrics::counter!("tailsift_es_retries_total", "reason" => reason.as_str())
        .increment(docs as u64);
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
