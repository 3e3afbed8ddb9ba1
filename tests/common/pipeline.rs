//! Running tailsift pipelines in-process for tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio::task::JoinHandle;

use tailsift::app::Pipeline;
use tailsift::config::Config;
use tailsift::deadletter::{CountOnly, DeadLetterSink};
use tailsift::decode::{DecodedSpan, decode_span};
use tailsift::loadgen::{self, LoadOptions};
use tailsift::plan::Plan;
use tailsift::sink::null::Collected;
use tailsift::sink::{ElasticsearchSink, TraceSink};

/// A config for `topic` and `group` with short windows, for tests.
pub fn config(brokers: &str, topic: &str, group: &str, policies: &str) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.topic = topic.to_string();
    cfg.kafka.group_id = group.to_string();
    cfg.kafka.properties = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.sampling.decision_wait = Duration::from_secs(3);
    cfg.sampling.root_idle = Duration::from_millis(500);
    cfg.shutdown.timeout = Duration::from_secs(20);
    // The local stack is one Elasticsearch node.
    cfg.elasticsearch.replicas = 0;
    cfg.sampling.policies = serde_json::from_str(policies).expect("test policies are JSON");
    cfg
}

pub struct Running<S: TraceSink> {
    pub pipeline: Arc<Pipeline<S>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl<S: TraceSink> Running<S> {
    pub fn start(cfg: &Config, sink: S) -> Result<Self> {
        Self::start_with(cfg, sink, Arc::new(CountOnly))
    }

    /// With real dead letters, e.g. `tailsift::app::dead_letters(cfg).await`.
    pub fn start_with(
        cfg: &Config,
        sink: S,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Result<Self> {
        let plan = Plan::resolve(cfg)?;
        let pipeline = Arc::new(Pipeline::new(cfg, &plan, sink, dead_letters)?);
        let (p, cfg) = (pipeline.clone(), cfg.clone());
        let task = tokio::spawn(async move { p.run(&cfg).await });
        Ok(Self { pipeline, task })
    }

    pub fn partitions(&self) -> usize {
        self.pipeline.shared.registry.len()
    }

    pub async fn stop(self) -> Result<()> {
        self.pipeline.shared.stop.cancel();
        self.task.await.context("pipeline task")?
    }
}

/// Waits until the members together own `partitions`, each at least one.
pub async fn wait_assigned<S: TraceSink>(members: &[&Running<S>], partitions: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<usize> = members.iter().map(|m| m.partitions()).collect();
        if owned.iter().sum::<usize>() == partitions && owned.iter().all(|n| *n > 0) {
            println!("assignment settled: {owned:?}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "group never settled: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The span IDs of a collected trace.
pub fn span_ids(c: &Collected) -> Vec<[u8; 8]> {
    c.spans
        .iter()
        .map(|r| {
            let id = match decode_span(r).expect("kept span decodes") {
                DecodedSpan::Otlp(o) => o.span.span_id,
                DecodedSpan::Jaeger(j) => j.span_id,
            };
            id.try_into().expect("8-byte span id")
        })
        .collect()
}

/// tailsift's real write path: one pipeline per config (same topic, a group each)
/// consumes what loadgen produces and hands the kept traces to its own Elasticsearch
/// sink, which installs the templates and bulk-writes the daily indices under the
/// config's prefix. Returns once every trace is decided, written and its offsets
/// committed in every group.
pub async fn write_to_elasticsearch(
    cfgs: &[Config],
    opts: &LoadOptions,
    partitions: i32,
) -> Result<loadgen::Summary> {
    write_through(cfgs, partitions, async { Ok(loadgen::run(opts).await?) }).await
}

/// The same, with the topic filled by `produce` (e.g. a real upstream producer).
pub async fn write_through<T>(
    cfgs: &[Config],
    partitions: i32,
    produce: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let mut running = Vec::new();
    let mut sinks = Vec::new();
    for cfg in cfgs {
        let plan = Plan::resolve(cfg)?;
        let sink = Arc::new(
            ElasticsearchSink::start(&plan.sink, Arc::new(CountOnly))
                .await
                .context("the Elasticsearch sink does not start")?,
        );
        running.push(Running::start(cfg, sink.clone())?);
        sinks.push(sink);
    }
    for r in &running {
        wait_assigned(&[r], partitions as usize).await?;
    }
    let produced = produce.await?;
    // Every trace reaches its decision deadline, then shutdown flushes and commits.
    let wait = cfgs
        .iter()
        .map(|c| c.sampling.decision_wait)
        .max()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(3)).await;
    for r in running {
        r.stop().await?;
    }
    for sink in sinks {
        ensure!(
            sink.shutdown(Duration::from_secs(30)).await,
            "the Elasticsearch sink did not drain"
        );
    }
    // Offsets are committed only for spans Elasticsearch acknowledged (or dropped).
    for cfg in cfgs {
        let k = &cfg.kafka;
        for (p, (committed, end)) in
            super::kafka::committed_vs_end(&k.brokers, &k.topic, &k.group_id, partitions)?
                .iter()
                .enumerate()
        {
            ensure!(
                committed == end,
                "group {}, partition {p}: committed {committed}, end {end}",
                k.group_id
            );
        }
    }
    Ok(produced)
}
