//! A real upstream producer: Jaeger v2 as a collector (the same `jaeger` binary as the
//! reader, built by `deploy/local/jaeger-query.sh`), OTLP/HTTP receiver → kafka
//! exporter (the OpenTelemetry Collector's `kafkaexporter`, v0.139.0 in Jaeger
//! v2.12.0), writes the topic in each encoding it offers for traces that tailsift
//! reads:
//! - `otlp_proto` with `partition_traces_by_id: true` (messages keyed by trace ID);
//! - `jaeger_proto` (one span per message, always keyed by trace ID);
//! - `otlp_proto` without `partition_traces_by_id`: unkeyed requests of several traces,
//!   which tailsift's repartition mode re-keys.
//!
//! The test sends the generated traces to the collector as OTLP/HTTP protobuf requests
//! (no SDK: the requests are the ones an SDK's exporter sends), tailsift keeps
//! everything and writes Elasticsearch, and Jaeger v2 Query must return every trace
//! with every span.
//!
//! Gated like tests/jaeger_query.rs (see tests/common/jaeger.rs).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use common::es::Es;
use common::jaeger::{self, JaegerQuery, Reader, check_trace};
use common::pipeline;
use tailsift::config::{EncodingSetting, Repartition, RepartitionConfig};
use tailsift::loadgen::encode;
use tailsift::loadgen::generator::{GenSpan, GenTrace, Profile, TraceGenerator};
use tailsift::model::TraceId;

const PARTITIONS: i32 = 3;
const TRACES: usize = 20;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/jaeger-query.sh");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v2_collector_otlp_proto() -> Result<()> {
    through_collector("otlp_proto", EncodingSetting::OtlpProto, Keying::ByTraceId).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v2_collector_jaeger_proto() -> Result<()> {
    through_collector(
        "jaeger_proto",
        EncodingSetting::JaegerProto,
        Keying::ByTraceId,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v2_collector_unkeyed_through_repartition() -> Result<()> {
    through_collector("otlp_proto", EncodingSetting::OtlpProto, Keying::Unkeyed).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keying {
    /// `partition_traces_by_id: true`, one trace per request.
    ByTraceId,
    /// The exporter's default: unkeyed messages, several traces per request.
    Unkeyed,
}

async fn through_collector(
    exporter_encoding: &str,
    encoding: EncodingSetting,
    keying: Keying,
) -> Result<()> {
    let label = match keying {
        Keying::ByTraceId => exporter_encoding.to_string(),
        Keying::Unkeyed => format!("{exporter_encoding} unkeyed, through repartition"),
    };
    if !jaeger::enabled(&format!("Jaeger v2 collector, {label}")) {
        return Ok(());
    }
    let brokers = common::kafka_brokers();
    let es_url = common::es_url();
    let run = common::unique_name(&format!("collector-{}", exporter_encoding.replace('_', "")));
    let topic = format!("tailsift-{run}");
    common::kafka::create_topic(&brokers, &topic, PARTITIONS).await?;
    // Unkeyed: the collector writes an input topic of its own; tailsift re-keys it.
    let exported = match keying {
        Keying::ByTraceId => topic.clone(),
        Keying::Unkeyed => {
            let input = format!("{topic}-unkeyed");
            common::kafka::create_topic(&brokers, &input, PARTITIONS).await?;
            input
        }
    };

    let collector = tokio::task::spawn_blocking({
        let (brokers, exported) = (brokers.clone(), exported.clone());
        let enc = exporter_encoding.to_string();
        move || Collector::start(&brokers, &exported, &enc, keying == Keying::ByTraceId)
    })
    .await
    .context("collector start task")??;
    let mut cfg = pipeline::config(&brokers, &topic, &format!("{run}-group"), "[]");
    cfg.kafka.encoding = encoding;
    if keying == Keying::Unkeyed {
        cfg.kafka.repartition = Some(Repartition::Topic(RepartitionConfig {
            input_topic: exported,
        }));
    }
    cfg.elasticsearch.urls = vec![es_url.clone()];
    cfg.elasticsearch.index_prefix = run.clone();
    let query = JaegerQuery::start_all(&[Reader::V2], &es_url, &run).await?;

    let mut generator = TraceGenerator::new(Profile::default(), 77);
    let traces: Vec<GenTrace> = (0..TRACES).map(|_| generator.trace(now_ns())).collect();
    let per_request = match keying {
        Keying::ByTraceId => 1,
        Keying::Unkeyed => 4,
    };
    let send = collector.send_all(&traces, per_request);
    pipeline::write_through(&[cfg.clone()], PARTITIONS, send).await?;
    let es = Es::new(&es_url)?;
    es.refresh(&format!("{}jaeger-*", cfg.index_prefix()))
        .await?;

    let mut spans = 0;
    for t in &traces {
        spans += check_trace(&query[0].api, t, &t.trace_id.to_hex())
            .await
            .with_context(|| format!("through the collector's kafka exporter, {label}"))?;
    }
    common::report(&format!(
        "Jaeger v2 collector, kafka exporter {label}: {} traces ({spans} spans) \
         sent over OTLP/HTTP, sampled by tailsift, all found by Jaeger v2 Query",
        traces.len()
    ));
    drop(collector);
    query.into_iter().for_each(JaegerQuery::finish);
    es.delete_run(&cfg.index_prefix()).await;
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// A running `jaeger` collector: OTLP/HTTP on a free port → the kafka exporter.
/// Killed on drop, and its directory (config, log) removed.
struct Collector {
    child: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/v1/traces`, its OTLP/HTTP endpoint.
    otlp: String,
    dir: std::path::PathBuf,
}

impl Collector {
    fn start(brokers: &str, topic: &str, encoding: &str, by_trace_id: bool) -> Result<Self> {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("bin")
            .env("JAEGER_READER", "v2")
            .stderr(Stdio::inherit())
            .output()
            .context("bash deploy/local/jaeger-query.sh bin")?;
        ensure!(
            out.status.success(),
            "building Jaeger v2 failed (output above)"
        );
        let bin = String::from_utf8(out.stdout)?.trim().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(common::unique_name("jaeger-collector"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("collector.yaml");
        std::fs::write(
            &config,
            collector_config(brokers, topic, encoding, by_trace_id, port),
        )?;
        let log = std::fs::File::create(dir.join("collector.log"))?;
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {bin}"))?;
        let me = Self {
            child,
            http: common::http_client()?,
            otlp: format!("http://127.0.0.1:{port}/v1/traces"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the collector did not open its OTLP port; see {}", me.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(me)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }

    /// The traces in OTLP/HTTP protobuf requests of `per_request` traces each, as an
    /// SDK's exporter sends them.
    async fn send_all(&self, traces: &[GenTrace], per_request: usize) -> Result<()> {
        for batch in traces.chunks(per_request) {
            let spans: Vec<(TraceId, &GenSpan)> = batch
                .iter()
                .flat_map(|t| t.spans.iter().map(|s| (t.trace_id, s)))
                .collect();
            let resp = self
                .http
                .post(&self.otlp)
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(encode::otlp(&spans, false))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .context("POST /v1/traces")?;
            let status = resp.status();
            ensure!(
                status.is_success(),
                "the collector answered {status}: {}",
                self.log()
            );
        }
        Ok(())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// OTLP/HTTP receiver → kafka exporter; no metrics server (several collectors may run
/// at once).
fn collector_config(
    brokers: &str,
    topic: &str,
    encoding: &str,
    by_trace_id: bool,
    port: u16,
) -> String {
    format!(
        r#"service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [kafka]
  telemetry:
    metrics:
      level: none
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  kafka:
    brokers: ["{brokers}"]
    traces:
      topic: {topic}
      encoding: {encoding}
    partition_traces_by_id: {by_trace_id}
"#
    )
}
