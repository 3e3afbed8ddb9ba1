//! `tailsift loadgen`: produces realistic traces to Kafka in any encoding,
//! keyed by trace ID or not, at a rate, with late spans and garbage, and
//! reports the ground truth that tests and people check results against.

pub mod encode;
pub mod generator;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use crate::decode::Encoding;
use crate::model::TraceId;
use generator::{GenSpan, GenTrace, Profile, TraceGenerator};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot write the ground truth to {path}: {source}")]
    Truth {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub brokers: String,
    pub topic: String,
    pub encoding: Encoding,
    /// Key messages by trace ID hex (Jaeger collector, OTel exporter with
    /// `partition_traces_by_id`). Unkeyed OTLP batches the spans of
    /// `traces_per_message` traces and spreads them over 3 messages, as SDK
    /// batching does.
    pub keyed: bool,
    pub traces_per_message: usize,
    /// Spans per second; 0 = as fast as possible.
    pub rate: f64,
    pub duration: Option<Duration>,
    pub max_traces: Option<u64>,
    pub profile: Profile,
    pub seed: u64,
    /// Share of traces whose last span is held back and sent `late_delay`
    /// after the rest.
    pub late_rate: f64,
    pub late_delay: Duration,
    /// Shuffle the spans of a trace before sending.
    pub out_of_order: bool,
    /// Share of messages replaced by bad input.
    pub garbage_rate: f64,
    pub properties: BTreeMap<String, String>,
    /// Write one JSON line per trace ({trace_id, spans, error, slow}).
    pub truth_file: Option<PathBuf>,
    /// Keep the per-trace ground truth in the summary (for tests).
    pub keep_truth: bool,
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "jaeger-spans".into(),
            encoding: Encoding::OtlpProto,
            keyed: true,
            traces_per_message: 10,
            rate: 1000.0,
            duration: None,
            max_traces: Some(1000),
            profile: Profile::default(),
            seed: 1,
            late_rate: 0.0,
            late_delay: Duration::from_secs(15),
            out_of_order: false,
            garbage_rate: 0.0,
            properties: BTreeMap::new(),
            truth_file: None,
            keep_truth: false,
            progress: false,
        }
    }
}

/// Ground truth of one generated trace.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TraceTruth {
    pub trace_id: String,
    pub spans: usize,
    pub error: bool,
    pub slow: bool,
    pub late_spans: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub traces: u64,
    pub spans: u64,
    pub messages: u64,
    pub error_traces: u64,
    pub slow_traces: u64,
    pub late_spans: u64,
    pub garbage_messages: u64,
    pub failed_messages: u64,
    pub elapsed_secs: f64,
    pub spans_per_sec: f64,
    #[serde(skip)]
    pub truth: Vec<TraceTruth>,
}

impl Summary {
    pub fn table(&self) -> String {
        format!(
            "traces {}  spans {}  messages {}  error traces {}  slow traces {}  late spans {}  garbage {}  failed {}  {:.1}s  {:.0} spans/s",
            self.traces,
            self.spans,
            self.messages,
            self.error_traces,
            self.slow_traces,
            self.late_spans,
            self.garbage_messages,
            self.failed_messages,
            self.elapsed_secs,
            self.spans_per_sec
        )
    }
}

/// Unkeyed OTLP batches are spread over this many messages.
const UNKEYED_SPLIT: usize = 3;

/// A message ready to send.
struct Outgoing {
    key: Option<String>,
    payload: Vec<u8>,
}

/// Produces traffic as configured and returns what was sent.
pub async fn run(opts: &LoadOptions) -> Result<Summary, LoadError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    let producer: FutureProducer = cfg.create()?;
    let mut run = Run::new(opts, producer);
    run.produce().await?;
    run.finish().await
}

struct Run<'a> {
    opts: &'a LoadOptions,
    producer: FutureProducer,
    generator: TraceGenerator,
    rng: StdRng,
    inflight: VecDeque<DeliveryFuture>,
    /// Held-back spans with the time they are due.
    late: VecDeque<(Instant, TraceId, GenSpan)>,
    /// Traces waiting to fill an unkeyed OTLP batch.
    pending_batch: Vec<GenTrace>,
    summary: Summary,
    started: Instant,
    last_progress: Instant,
}

impl<'a> Run<'a> {
    fn new(opts: &'a LoadOptions, producer: FutureProducer) -> Self {
        Self {
            opts,
            producer,
            generator: TraceGenerator::new(opts.profile.clone(), opts.seed),
            rng: StdRng::seed_from_u64(opts.seed ^ 0x5eed),
            inflight: VecDeque::new(),
            late: VecDeque::new(),
            pending_batch: Vec::new(),
            summary: Summary::default(),
            started: Instant::now(),
            last_progress: Instant::now(),
        }
    }

    fn done(&self) -> bool {
        let by_count = self
            .opts
            .max_traces
            .is_some_and(|m| self.summary.traces >= m);
        let by_time = self
            .opts
            .duration
            .is_some_and(|d| self.started.elapsed() >= d);
        by_count || by_time || (self.opts.max_traces.is_none() && self.opts.duration.is_none())
    }

    async fn produce(&mut self) -> Result<(), LoadError> {
        while !self.done() {
            let mut trace = self.generator.trace(now_unix_nano());
            self.record(&trace);
            if self.opts.out_of_order {
                shuffle(&mut trace.spans, &mut self.rng);
            }
            self.hold_back_late(&mut trace);
            self.send_trace(trace).await?;
            self.send_due_late(false).await?;
            self.pace().await;
            self.report_progress();
        }
        self.flush_batch().await?;
        self.send_due_late(true).await
    }

    fn record(&mut self, t: &GenTrace) {
        self.summary.traces += 1;
        self.summary.spans += t.spans.len() as u64;
        self.summary.error_traces += u64::from(t.error);
        self.summary.slow_traces += u64::from(t.slow);
    }

    fn hold_back_late(&mut self, trace: &mut GenTrace) {
        // The held-back span is never the root nor an error span: the part
        // sent on time must carry the evidence the ground truth is based on.
        let candidate = trace
            .spans
            .iter()
            .rposition(|s| !s.error && !s.parent.is_zero());
        let late = match candidate {
            Some(i) if self.rng.random_bool(self.opts.late_rate.clamp(0.0, 1.0)) => {
                let span = trace.spans.remove(i);
                let due = Instant::now() + self.opts.late_delay;
                self.late.push_back((due, trace.trace_id, span));
                self.summary.late_spans += 1;
                true
            }
            _ => false,
        };
        if self.opts.keep_truth || self.opts.truth_file.is_some() {
            self.summary.truth.push(TraceTruth {
                trace_id: trace.trace_id.to_hex(),
                spans: trace.spans.len() + usize::from(late),
                error: trace.error,
                slow: trace.slow,
                late_spans: usize::from(late),
            });
        }
    }

    async fn send_trace(&mut self, trace: GenTrace) -> Result<(), LoadError> {
        let batches = !self.opts.keyed && !encode::one_span_per_message(self.opts.encoding);
        if batches {
            self.pending_batch.push(trace);
            if self.pending_batch.len() >= self.opts.traces_per_message.max(1) {
                self.flush_batch().await?;
            }
            return Ok(());
        }
        let spans: Vec<(TraceId, &GenSpan)> =
            trace.spans.iter().map(|s| (trace.trace_id, s)).collect();
        let key = self.opts.keyed.then(|| trace.trace_id.to_hex());
        for payload in encode::encode(self.opts.encoding, &spans) {
            self.send(Outgoing {
                key: key.clone(),
                payload,
            })
            .await?;
        }
        Ok(())
    }

    async fn flush_batch(&mut self) -> Result<(), LoadError> {
        if self.pending_batch.is_empty() {
            return Ok(());
        }
        let traces = std::mem::take(&mut self.pending_batch);
        let spans: Vec<(TraceId, &GenSpan)> = traces
            .iter()
            .flat_map(|t| t.spans.iter().map(move |s| (t.trace_id, s)))
            .collect();
        // An SDK exports spans as they end, so one trace's spans land in
        // several batches (and, unkeyed, on several partitions).
        for chunk in 0..UNKEYED_SPLIT {
            let part: Vec<_> = spans
                .iter()
                .skip(chunk)
                .step_by(UNKEYED_SPLIT)
                .copied()
                .collect();
            if part.is_empty() {
                continue;
            }
            for payload in encode::encode(self.opts.encoding, &part) {
                self.send(Outgoing { key: None, payload }).await?;
            }
        }
        Ok(())
    }

    async fn send_due_late(&mut self, all: bool) -> Result<(), LoadError> {
        while let Some((due, _, _)) = self.late.front() {
            let now = Instant::now();
            if *due > now {
                if !all {
                    return Ok(());
                }
                tokio::time::sleep(*due - now).await;
            }
            let Some((_, trace_id, span)) = self.late.pop_front() else {
                break;
            };
            let key = self.opts.keyed.then(|| trace_id.to_hex());
            for payload in encode::encode(self.opts.encoding, &[(trace_id, &span)]) {
                self.send(Outgoing {
                    key: key.clone(),
                    payload,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Sends a message, replaced by garbage at the configured rate (the
    /// real message then follows, so the good traffic stays complete).
    async fn send(&mut self, m: Outgoing) -> Result<(), LoadError> {
        if self.opts.garbage_rate > 0.0 && self.rng.random_bool(self.opts.garbage_rate.min(1.0)) {
            let bad = garbage(&mut self.rng, &m.payload);
            self.summary.garbage_messages += 1;
            self.enqueue(Outgoing {
                key: m.key.clone(),
                payload: bad,
            })
            .await?;
        }
        self.enqueue(m).await
    }

    async fn enqueue(&mut self, m: Outgoing) -> Result<(), LoadError> {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(&self.opts.topic).payload(&m.payload);
            if let Some(k) = &m.key {
                record = record.key(k.as_str());
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.inflight.push_back(delivery);
                    self.summary.messages += 1;
                    break;
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    self.await_oldest().await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if self.inflight.len() > 50_000 {
            self.await_oldest().await;
        }
        Ok(())
    }

    async fn await_oldest(&mut self) {
        match self.inflight.pop_front() {
            Some(d) => {
                if !matches!(d.await, Ok(Ok(_))) {
                    self.summary.failed_messages += 1;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }

    async fn pace(&self) {
        if self.opts.rate <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.summary.spans as f64 / self.opts.rate);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    fn report_progress(&mut self) {
        if !self.opts.progress || self.last_progress.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_progress = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "loadgen: {:.0}s  traces {}  spans {}  {:.0} spans/s",
            secs,
            self.summary.traces,
            self.summary.spans,
            self.summary.spans as f64 / secs.max(0.001)
        );
    }

    async fn finish(mut self) -> Result<Summary, LoadError> {
        while !self.inflight.is_empty() {
            self.await_oldest().await;
        }
        let _ = self.producer.flush(Duration::from_secs(30));
        let secs = self.started.elapsed().as_secs_f64();
        self.summary.elapsed_secs = secs;
        self.summary.spans_per_sec = self.summary.spans as f64 / secs.max(0.001);
        if let Some(path) = &self.opts.truth_file {
            write_truth(path, &self.summary.truth)?;
        }
        Ok(self.summary)
    }
}

fn write_truth(path: &std::path::Path, truth: &[TraceTruth]) -> Result<(), LoadError> {
    let err = |source| LoadError::Truth {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for t in truth {
        let line = serde_json::to_string(t).unwrap_or_default();
        writeln!(f, "{line}").map_err(err)?;
    }
    f.flush().map_err(err)
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

/// Bad input of the kinds real topics see: random bytes, a truncated
/// message, an empty one, JSON where protobuf is expected, and a span with
/// an all-zero trace ID.
pub fn garbage(rng: &mut StdRng, good: &[u8]) -> Vec<u8> {
    match rng.random_range(0..5) {
        0 => {
            let mut b = vec![0u8; rng.random_range(1..256)];
            rng.fill_bytes(&mut b);
            b
        }
        1 => good[..good.len() / 2].to_vec(),
        2 => Vec::new(),
        3 => br#"{"not":"a span"}"#.to_vec(),
        _ => zero_trace_id(good),
    }
}

/// The same message with every trace ID zeroed: valid protobuf, bad data.
fn zero_trace_id(good: &[u8]) -> Vec<u8> {
    let mut g = TraceGenerator::new(Profile::default(), 0);
    let mut t = g.trace(now_unix_nano());
    t.trace_id = TraceId::default();
    let spans: Vec<(TraceId, &GenSpan)> = t.spans.iter().map(|s| (t.trace_id, s)).collect();
    if good.first() == Some(&b'{') {
        return encode::otlp(&spans, true);
    }
    encode::otlp(&spans, false)
}
