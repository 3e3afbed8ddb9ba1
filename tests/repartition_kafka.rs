//! Repartition mode on the real broker: unkeyed OTLP batches whose traces are
//! spread over messages and partitions are re-keyed by trace ID, so every
//! error trace is still kept whole: through an input topic, and with
//! `kafka.repartition: auto` on the topic itself, fed by a producer written
//! here the way an SDK's batch exporter behind an unkeyed Kafka exporter
//! sends (its own OTLP encoding, no key, spans batched as they end).
//!
//! Needs `deploy/local/stack.sh up` and `KAFKA_BROKERS` (see tests/common).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use common::pipeline::{Running, span_ids, wait_assigned};
use tailsift::config::{Repartition, RepartitionConfig};
use tailsift::decode::Encoding;
use tailsift::loadgen::generator::GenSpan;
use tailsift::loadgen::{self, LoadOptions, generator::Profile};
use tailsift::model::TraceId;
use tailsift::sink::null::CollectingSink;

const PARTITIONS: i32 = 6;
const ERRORS_ONLY: &str =
    r#"[{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_input_is_rekeyed_and_sampled_whole() -> Result<()> {
    let brokers = common::kafka_brokers();
    let input = common::unique_name("tailsift-unkeyed");
    let internal = common::unique_name("tailsift-bytrace");
    let group = common::unique_name("tailsift-repartition-group");
    common::kafka::create_topic(&brokers, &input, PARTITIONS).await?;
    common::kafka::create_topic(&brokers, &internal, PARTITIONS).await?;
    let mut cfg = common::pipeline::config(&brokers, &internal, &group, ERRORS_ONLY);
    cfg.kafka.repartition = Some(Repartition::Topic(RepartitionConfig {
        input_topic: input.clone(),
    }));

    let sink = Arc::new(CollectingSink::default());
    let member = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&member], PARTITIONS as usize).await?;

    let opts = LoadOptions {
        brokers: brokers.clone(),
        topic: input.clone(),
        encoding: Encoding::OtlpProto,
        keyed: false,
        traces_per_message: 5,
        rate: 0.0,
        max_traces: Some(300),
        profile: Profile {
            error_rate: 0.2,
            ..Default::default()
        },
        seed: 9,
        keep_truth: true,
        ..Default::default()
    };
    let summary = loadgen::run(&opts).await?;
    println!("produced unkeyed: {}", summary.table());
    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(4)).await;
    member.stop().await?;

    let mut kept: HashMap<TraceId, Vec<[u8; 8]>> = HashMap::new();
    for c in sink.take() {
        kept.entry(c.trace_id).or_default().extend(span_ids(&c));
    }
    let mut errors = 0;
    for t in summary.truth.iter().filter(|t| t.error) {
        errors += 1;
        let id = TraceId::from_hex(&t.trace_id).context("truth id")?;
        let spans = kept
            .get(&id)
            .with_context(|| format!("error trace {id} lost"))?;
        let unique: HashSet<_> = spans.iter().collect();
        ensure!(
            unique.len() == t.spans,
            "error trace {id}: {} of {} spans kept",
            unique.len(),
            t.spans
        );
    }
    println!(
        "{errors} error traces kept whole out of {} traces",
        summary.truth.len()
    );
    ensure!(errors > 20, "too few error traces generated: {errors}");
    for (p, (committed, end)) in common::kafka::committed_vs_end(
        &brokers,
        &input,
        &format!("{group}-repartition"),
        PARTITIONS,
    )?
    .iter()
    .enumerate()
    {
        // A partition that never received a message has nothing to commit.
        let resolved = committed == end || (*end == 0 && *committed < 0);
        ensure!(
            resolved,
            "input partition {p}: committed {committed}, end {end}"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ auto -------------

/// An SDK-like exporter: one OTLP request per service and batch, no
/// message key. Its own protobuf building, not tailsift's.
mod independent {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
    use prost::Message as _;
    use tailsift::loadgen::generator::GenSpan;
    use tailsift::model::TraceId;

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    pub fn request(spans: &[(TraceId, &GenSpan)]) -> Vec<u8> {
        let mut resources: Vec<ResourceSpans> = Vec::new();
        for (trace_id, s) in spans {
            let span = Span {
                trace_id: trace_id.0.to_vec(),
                span_id: s.span_id.0.to_vec(),
                parent_span_id: if s.parent.is_zero() {
                    Vec::new()
                } else {
                    s.parent.0.to_vec()
                },
                name: s.name.clone(),
                kind: s.kind,
                start_time_unix_nano: s.start_unix_nano,
                end_time_unix_nano: s.end_unix_nano,
                status: s.error.then(|| Status {
                    code: status::StatusCode::Error as i32,
                    message: "failed".into(),
                }),
                ..Default::default()
            };
            let service = text("service.name", &s.service);
            match resources.iter_mut().find(|r| {
                r.resource
                    .as_ref()
                    .is_some_and(|res| res.attributes[0] == service)
            }) {
                Some(r) => r.scope_spans[0].spans.push(span),
                None => resources.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![service],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }
        }
        ExportTraceServiceRequest {
            resource_spans: resources,
        }
        .encode_to_vec()
    }
}

/// Traces running concurrently: their spans shuffled together (as they end)
/// and exported in batches of this many spans.
const CONCURRENT: usize = 6;
const BATCH_SPANS: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rekeys_unkeyed_input_on_the_topic_itself() -> Result<()> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use tailsift::loadgen::generator::{GenTrace, TraceGenerator};

    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-auto");
    let group = common::unique_name("tailsift-auto-group");
    common::kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    let mut cfg = common::pipeline::config(&brokers, &topic, &group, ERRORS_ONLY);
    cfg.kafka.repartition = Some(Repartition::Auto);
    // A root seen first may wait for the rest of its trace a little longer
    // than the tests' default: the rest comes back from other partitions.
    cfg.sampling.root_idle = Duration::from_secs(2);

    let sink = Arc::new(CollectingSink::default());
    let member = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&member], PARTITIONS as usize).await?;

    let mut generator = TraceGenerator::new(
        Profile {
            error_rate: 0.2,
            slow_rate: 0.0,
            ..Default::default()
        },
        21,
    );
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let traces: Vec<GenTrace> = (0..300).map(|_| generator.trace(start)).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // Where each trace's spans went: it must reach several partitions.
    let mut partitions: HashMap<TraceId, HashSet<i32>> = HashMap::new();
    for group in traces.chunks(CONCURRENT) {
        let mut spans: Vec<(TraceId, &GenSpan)> = group
            .iter()
            .flat_map(|t| t.spans.iter().map(move |s| (t.trace_id, s)))
            .collect();
        spans.shuffle(&mut rng);
        for batch in spans.chunks(BATCH_SPANS) {
            let payload = independent::request(batch);
            let record: FutureRecord<'_, (), _> = FutureRecord::to(&topic).payload(&payload);
            let delivered = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            for (trace_id, _) in batch {
                partitions
                    .entry(*trace_id)
                    .or_default()
                    .insert(delivered.partition);
            }
        }
    }
    tokio::time::sleep(
        cfg.sampling.decision_wait + cfg.sampling.root_idle + Duration::from_secs(4),
    )
    .await;
    member.stop().await?;

    let mut kept: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
    for c in sink.take() {
        kept.entry(c.trace_id).or_default().extend(span_ids(&c));
    }
    let errors: Vec<&GenTrace> = traces.iter().filter(|t| t.error).collect();
    let spread = errors
        .iter()
        .filter(|t| partitions[&t.trace_id].len() > 1)
        .count();
    ensure!(
        errors.len() > 30,
        "too few error traces generated: {}",
        errors.len()
    );
    ensure!(
        spread * 2 > errors.len(),
        "only {spread} of {} error traces reached several partitions: the input is too easy",
        errors.len()
    );
    for t in &errors {
        let got = kept
            .get(&t.trace_id)
            .with_context(|| format!("error trace {} lost", t.trace_id.to_hex()))?;
        let want: HashSet<[u8; 8]> = t.spans.iter().map(|s| s.span_id.0).collect();
        ensure!(
            *got == want,
            "error trace {}: {} of {} spans kept",
            t.trace_id.to_hex(),
            got.intersection(&want).count(),
            want.len()
        );
    }
    ensure!(
        kept.len() == errors.len(),
        "{} traces kept, {} error traces generated: only error traces are kept",
        kept.len(),
        errors.len()
    );
    println!(
        "auto: {} error traces of {} kept whole, {spread} of them sent over several partitions",
        errors.len(),
        traces.len()
    );
    // The unkeyed originals and the re-keyed pieces: all resolved.
    common::kafka::ensure_committed_to_end(&brokers, &topic, &group, PARTITIONS)
}
