//! The generated load and its ground truth: which traces were produced,
//! with how many spans, and whether they carry an error.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::FutureExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use bytes::Bytes;
use tailsift::config::EncodingSetting;
use tailsift::decode::{Decoder, Encoding};
use tailsift::loadgen::generator::{GenSpan, GenTrace, Profile, TraceGenerator};
use tailsift::loadgen::{self, TraceTruth, encode};
use tailsift::model::TraceId;
use tailsift::model::{ScanBatch, SpanId};

use super::scenario::Scenario;
use super::{ERROR_RATE, MAX_MESSAGE_KIB, log};

/// What a load run produced: the per-trace ground truth and counts.
#[derive(Default)]
pub struct Produced {
    pub truth: Vec<TraceTruth>,
    pub spans: u64,
    pub messages: u64,
    pub garbage: u64,
    pub failed: u64,
}

/// A steady load at a rate that can change, until stopped. Like real
/// instrumented services (and the Jaeger collector / OpenTelemetry exporter
/// behind them), every span is sent when it ENDS, so the spans of many
/// traces interleave within a partition and a trace spreads over several
/// messages and up to half a second: a watermark, a crash or a rebalance can
/// fall in the middle of a trace. Traces are fast (no slow tail) so that no
/// span comes after its trace's decision (late spans after a crash have no
/// decision cache to follow; see the module docs).
pub struct Load {
    stop: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Produced>>,
}

impl Load {
    pub fn start(s: &Scenario, rate: f64, garbage_rate: f64, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rate_bits = Arc::new(AtomicU64::new(rate.to_bits()));
        let driver = Driver {
            brokers: s.env.brokers.clone(),
            topic: s.topic.clone(),
            encoding: s.encoding,
            garbage_rate,
            seed,
            late_share: s.tuning.late_share,
            late_after: s.tuning.late_after,
        };
        let task = tokio::spawn(driver.run(stop.clone(), rate_bits.clone()));
        Self {
            stop,
            rate: rate_bits,
            task,
        }
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Stops starting traces, sends the rest of the started ones, and
    /// returns what was produced; fails if any message could not be
    /// produced (the ground truth would be wrong).
    pub async fn stop(self) -> Result<Produced> {
        self.stop.store(true, Ordering::Relaxed);
        let p = self.task.await??;
        ensure!(p.failed == 0, "{} messages could not be produced", p.failed);
        let unique: HashSet<&str> = p.truth.iter().map(|t| t.trace_id.as_str()).collect();
        ensure!(unique.len() == p.truth.len(), "the load repeated trace IDs");
        log(format!(
            "load: {} traces, {} spans, {} messages, {} garbage",
            p.truth.len(),
            p.spans,
            p.messages,
            p.garbage
        ));
        Ok(p)
    }
}

struct Driver {
    brokers: String,
    topic: String,
    encoding: Encoding,
    garbage_rate: f64,
    seed: u64,
    late_share: f64,
    late_after: Duration,
}

/// One more span for `trace`, a child of its root that starts `after` the
/// trace ended: OK status, so only its trace's decision can keep it (an
/// error trace's late span, decided alone, would be dropped).
fn late_span(trace: &GenTrace, after: Duration, rng: &mut StdRng) -> Option<GenSpan> {
    let root = trace.spans.iter().find(|s| s.parent.is_zero())?;
    let end = trace.spans.iter().map(|s| s.end_unix_nano).max()?;
    let start = end + after.as_nanos() as u64;
    Some(GenSpan {
        span_id: SpanId(rng.random::<u64>().max(1).to_be_bytes()),
        parent: root.span_id,
        name: "late-work".into(),
        kind: 1,
        start_unix_nano: start,
        end_unix_nano: start + 1_000_000,
        error: false,
        attributes: Vec::new(),
        ..root.clone()
    })
}

/// A span waiting for its end time.
struct Due {
    at: Instant,
    trace: usize,
    span: GenSpan,
}

impl Driver {
    const TICK: Duration = Duration::from_millis(10);

    async fn run(self, stop: Arc<AtomicBool>, rate: Arc<AtomicU64>) -> Result<Produced> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        let mut generator = TraceGenerator::new(
            Profile {
                error_rate: ERROR_RATE,
                slow_rate: 0.0,
                ..Profile::default()
            },
            self.seed,
        );
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9a7b);
        let setting = match self.encoding {
            Encoding::OtlpProto => EncodingSetting::OtlpProto,
            Encoding::OtlpJson => EncodingSetting::OtlpJson,
            Encoding::JaegerProto => EncodingSetting::JaegerProto,
            Encoding::JaegerJson => EncodingSetting::JaegerJson,
        };
        let decoder = Decoder::new(setting, Default::default(), MAX_MESSAGE_KIB * 1024);
        let mut out = Produced::default();
        let mut ids: Vec<TraceId> = Vec::new();
        let mut due: Vec<Due> = Vec::new();
        let mut inflight: VecDeque<DeliveryFuture> = VecDeque::new();
        // Spans owed at the current rate, carried between ticks.
        let mut credit = 0.0f64;
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(Self::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping {
                credit += f64::from_bits(rate.load(Ordering::Relaxed)) * (now - last).as_secs_f64();
                while credit > 0.0 {
                    let mut trace = generator.trace(unix_nanos());
                    let late = rng.random_bool(self.late_share.clamp(0.0, 1.0));
                    if let Some(span) = late
                        .then(|| late_span(&trace, self.late_after, &mut rng))
                        .flatten()
                    {
                        trace.spans.push(span);
                    }
                    let start = trace
                        .spans
                        .iter()
                        .map(|s| s.start_unix_nano)
                        .min()
                        .unwrap_or(0);
                    credit -= trace.spans.len() as f64;
                    out.spans += trace.spans.len() as u64;
                    out.truth.push(TraceTruth {
                        trace_id: trace.trace_id.to_hex(),
                        spans: trace.spans.len(),
                        error: trace.error,
                        slow: trace.slow,
                        late_spans: usize::from(late),
                    });
                    ids.push(trace.trace_id);
                    let n = ids.len() - 1;
                    for span in trace.spans {
                        let after = Duration::from_nanos(span.end_unix_nano.saturating_sub(start));
                        due.push(Due {
                            at: now + after,
                            trace: n,
                            span,
                        });
                    }
                }
            }
            last = now;
            // Send what ended by now, one message per span (Jaeger) or per
            // trace and tick (an OpenTelemetry batch split by trace ID).
            let (ready, waiting): (Vec<Due>, Vec<Due>) = due.into_iter().partition(|d| d.at <= now);
            due = waiting;
            let mut by_trace: BTreeMap<usize, Vec<GenSpan>> = BTreeMap::new();
            for d in ready {
                by_trace.entry(d.trace).or_default().push(d.span);
            }
            for (trace, spans) in by_trace {
                let id = ids[trace];
                let refs: Vec<(TraceId, &GenSpan)> = spans.iter().map(|s| (id, s)).collect();
                let key = id.to_hex();
                for payload in encode::encode(self.encoding, &refs) {
                    if self.garbage_rate > 0.0 && rng.random_bool(self.garbage_rate) {
                        let bad = loadgen::garbage(&mut rng, &payload);
                        // A truncation that falls between two resource
                        // blocks is a valid, smaller message: not garbage.
                        let mut batch = ScanBatch::default();
                        if decoder
                            .scan(Bytes::from(bad.clone()), None, &mut batch)
                            .is_err()
                        {
                            out.garbage += 1;
                            send(&producer, &self.topic, &key, &bad, &mut inflight, &mut out).await;
                        }
                    }
                    send(
                        &producer,
                        &self.topic,
                        &key,
                        &payload,
                        &mut inflight,
                        &mut out,
                    )
                    .await;
                }
            }
            if stopping && due.is_empty() {
                break;
            }
        }
        while let Some(d) = inflight.pop_front() {
            if !matches!(d.await, Ok(Ok(_))) {
                out.failed += 1;
            }
        }
        Ok(out)
    }
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    inflight: &mut VecDeque<DeliveryFuture>,
    out: &mut Produced,
) {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(d) => {
                inflight.push_back(d);
                out.messages += 1;
                break;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                if let Some(d) = inflight.pop_front()
                    && !matches!(d.await, Ok(Ok(_)))
                {
                    out.failed += 1;
                }
            }
            Err((e, _)) => {
                log(format!("produce failed: {e}"));
                out.failed += 1;
                break;
            }
        }
    }
    // Reap what was delivered, keeping the queue of futures short.
    while inflight.len() > 100_000 {
        if let Some(d) = inflight.pop_front()
            && !matches!(d.await, Ok(Ok(_)))
        {
            out.failed += 1;
        }
    }
    while let Some(d) = inflight.front_mut() {
        let Some(r) = d.now_or_never() else { break };
        inflight.pop_front();
        if !matches!(r, Ok(Ok(_))) {
            out.failed += 1;
        }
    }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
