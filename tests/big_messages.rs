//! 16 MiB OTLP messages of tiny spans (~300k spans each, every one its own
//! trace) next to a steady generated load, under `memory.limit: 256MiB`
//! and the shipped `kafka.max_spans_per_message`: the instance's peak RSS
//! stays under the limit, each big message is in the dead-letter topic
//! whole (reason `too_many_spans`), and the load's spans are all in
//! Elasticsearch.
//!
//! Before the cap and the bounds, eight such messages drove peak RSS to
//! 529 MiB under the same limit: their scan (~560k span facts) and every
//! span's window entry outside the trace budget.

mod common;
#[path = "faults/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tailsift::decode::Encoding;

use harness::load::Load;
use harness::results::Row;
use harness::scenario::{Scenario, Tuning};
use harness::{ONE_AT_A_TIME, log};

const MESSAGES: usize = 8;
const LIMIT_MIB: u64 = 256;
const MAX_BYTES: usize = 16 << 20;
/// What topics of the scenario take (the broker's default is 1 MB).
const TOPIC_MAX_BYTES: &str = "20971520";

/// One OTLP request of tiny spans, each its own trace, as close to 16 MiB
/// as fits.
fn big_message(seed: u8) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let span = |i: u32| {
        let mut trace = [seed; 16];
        trace[12..].copy_from_slice(&(i + 1).to_be_bytes());
        Span {
            trace_id: trace.to_vec(),
            span_id: trace[8..].to_vec(),
            name: "t".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1000,
            ..Default::default()
        }
    };
    let one = span(0).encoded_len() + 3;
    let n = (MAX_BYTES - 4096) / one;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n as u32).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

async fn allow_big_messages(brokers: &str, topics: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let configs: Vec<AlterConfig> = topics
        .iter()
        .map(|t| {
            AlterConfig::new(ResourceSpecifier::Topic(t)).set("max.message.bytes", TOPIC_MAX_BYTES)
        })
        .collect();
    for r in admin.alter_configs(&configs, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("alter {t:?}: {e}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_messages_of_tiny_spans_stay_under_the_memory_limit() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let tuning = Tuning {
        memory_limit_mib: LIMIT_MIB,
        max_message_kib: MAX_BYTES / 1024,
        ..Tuning::default()
    };
    let mut s = Scenario::new("big_messages", Encoding::OtlpProto, tuning).await?;
    allow_big_messages(&s.env.brokers, &[&s.topic, &s.dlq]).await?;
    let a = s.spawn()?;
    s.wait_assigned(&[&a], 1, Duration::from_secs(60)).await?;
    let load = Load::start(&s, 400.0, 0.0, 31);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.env.brokers)
        .set("message.max.bytes", TOPIC_MAX_BYTES)
        .create()?;
    for i in 0..MESSAGES {
        let payload = big_message(0xb0 + i as u8);
        let key = format!("big-{i}");
        producer
            .send(
                FutureRecord::to(&s.topic).key(&key).payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("produce {key} ({} bytes)", payload.len()))?;
        log(format!(
            "produced {key}: {:.1} MiB",
            payload.len() as f64 / 1048576.0
        ));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let produced = load.stop().await?;
    s.wait_drained(&[&a], Duration::from_secs(240)).await?;
    let verdict = s.verify(&produced.truth).await?;
    let letters = s.dead_letters().await?;
    let big: Vec<_> = letters
        .iter()
        .filter(|l| l.header("tailsift.error.reason") == "too_many_spans")
        .collect();
    let peak_kib = s.monitor.peak_kib();
    s.account(&a).await;
    let (status, _) = a.terminate(Duration::from_secs(45)).await?;
    let mut row = Row::new(&s, 1, &verdict);
    row.note = format!(
        "{MESSAGES} messages of 16 MiB, tiny spans; {} in the DLQ whole",
        big.len()
    );
    s.record(&row)?;
    log(harness::memory::describe_peaks(&s.monitor));
    verdict.ensure()?;
    ensure!(status.success(), "tailsift exited with {status}");
    ensure!(
        big.len() == MESSAGES,
        "{} of {MESSAGES} big messages in the dead-letter topic ({} letters)",
        big.len(),
        letters.len()
    );
    ensure!(
        peak_kib < LIMIT_MIB * 1024,
        "peak RSS {:.1} MiB above memory.limit {LIMIT_MIB} MiB",
        peak_kib as f64 / 1024.0
    );
    s.cleanup().await
}
