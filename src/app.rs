//! Wiring: config → policies, decoder, sink, dead letters, Kafka source,
//! HTTP server, reload and signal handling.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EncodingSetting, KafkaConfig, Repartition};
use crate::deadletter::{CountOnly, DeadLetterSink, KafkaDeadLetters};
use crate::decision_log::{DecisionLog, LogSettings};
use crate::decode::Decoder;
use crate::dependencies::{Dependencies, LinkWriter};
use crate::plan::{CacheSize, Plan, Prefetch};
use crate::policy::{PolicyEngine, SpanFilter};
use crate::rekey::Forwarder;
use crate::repartition::Repartitioner;
use crate::server::{self, Readiness};
use crate::sink::elasticsearch::EsClient;
use crate::sink::index::IndexNames;
use crate::sink::{SinkSettings, TraceSink};
use crate::source::{self, Observers, Outputs, Registry, Rules, Shared, Source, WindowContext};
use crate::span_metrics::SpanMetrics;
use crate::telemetry::LogLimiter;
use crate::window::{DecisionCache, Occupancy};

/// How often the config file is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Builds the policies, the span filter and the decoder that scans for
/// what they read.
pub fn build_rules(cfg: &Config) -> anyhow::Result<Rules> {
    let engine = PolicyEngine::from_config(&cfg.sampling.policies)
        .context("invalid sampling.policies")?
        .sample_on_first_match(cfg.sampling.sample_on_first_match);
    let filter = SpanFilter::from_config(&cfg.filter)?;
    let mut keys = engine.attribute_keys().merge(&filter.attribute_keys());
    if cfg.span_metrics.enabled {
        keys = keys.merge(&SpanMetrics::attribute_keys(&cfg.span_metrics));
    }
    let decoder = Decoder::new(
        sampled_encoding(&cfg.kafka),
        keys,
        cfg.kafka.max_message_bytes.as_u64() as usize,
    )
    .with_time_limits(cfg.sampling.time_limits())
    .with_max_spans(cfg.kafka.max_spans_per_message);
    Ok(Rules::new(engine, filter, decoder))
}

/// What the sampler's decoder reads. Re-keyed pieces are protobuf in the
/// input's model (OTLP or Jaeger), tagged with a content type. Reading
/// only pieces (an input topic), or pieces beside JSON input (`auto`), the
/// decoder tells them apart itself; beside protobuf input the configured
/// encoding reads both.
fn sampled_encoding(kafka: &KafkaConfig) -> EncodingSetting {
    match (&kafka.repartition, kafka.encoding) {
        (None, e) => e,
        (
            Some(Repartition::Auto),
            e @ (EncodingSetting::OtlpProto | EncodingSetting::JaegerProto),
        ) => e,
        (Some(_), _) => EncodingSetting::Auto,
    }
}

/// Room for a dead letter's headers and framing beyond its payload.
const DEAD_LETTER_HEADROOM: u64 = 64 * 1024;

/// The dead-letter topic's producer, after creating the topic if it is
/// missing; only counting after the explicit opt-out.
pub async fn dead_letters(cfg: &Config, plan: &Plan) -> anyhow::Result<Arc<dyn DeadLetterSink>> {
    let Some(topic) = cfg.kafka.dead_letter_topic() else {
        tracing::warn!(
            "kafka.dead_letter_topic is none: bad input and rejected documents are counted and dropped"
        );
        return Ok(Arc::new(CountOnly));
    };
    // A dead letter is a whole message (up to kafka.max_message_bytes) with
    // headers: the producer and the topic must take one that large (both
    // default to 1 MB). Failing to create the topic stops the start:
    // producing to a missing topic would hold every dead letter (and its
    // source offset) until an operator creates it.
    let max_bytes = cfg.kafka.max_message_bytes.as_u64() + DEAD_LETTER_HEADROOM;
    let mut client = source::client_config(&cfg.kafka);
    client.set("message.max.bytes", max_bytes.to_string());
    let max = max_bytes.to_string();
    let created = crate::topics::ensure_topic(&client, &topic, -1, &[("max.message.bytes", &max)])
        .await
        .with_context(|| format!("cannot create the dead-letter topic {topic}"))?;
    if created {
        tracing::info!(%topic, "created the dead-letter topic");
    }
    Ok(Arc::new(
        KafkaDeadLetters::new(
            &client,
            &topic,
            &cfg.kafka.topic,
            plan.memory.dead_letters as usize,
        )
        .context("cannot create the dead-letter producer")?,
    ))
}

/// The dependency documents' writer, on the sink's Elasticsearch settings
/// and index names (the sink installs the template).
pub fn link_writer(sink: &SinkSettings) -> anyhow::Result<LinkWriter> {
    let client = EsClient::new(&sink.elasticsearch)?;
    let names = IndexNames::new(&sink.index_prefix, sink.elasticsearch.use_aliases);
    let bulk = &sink.bulk;
    Ok(LinkWriter::start(
        client,
        names,
        (bulk.initial_backoff, bulk.max_backoff),
    ))
}

/// The pieces a running pipeline is made of, for the service and for tests.
pub struct Pipeline<S: TraceSink> {
    pub shared: Arc<Shared<S>>,
    pub rules: watch::Sender<Arc<Rules>>,
    plan: Plan,
}

impl<S: TraceSink> Pipeline<S> {
    pub fn new(
        cfg: &Config,
        plan: &Plan,
        sink: S,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> anyhow::Result<Self> {
        let rules = build_rules(cfg)?;
        let rekey = match cfg.kafka.rekeys_unkeyed() {
            true => Some(Arc::new(
                Forwarder::new(
                    &source::client_config(&cfg.kafka),
                    &cfg.kafka.topic,
                    plan.memory.dead_letters as usize,
                )
                .context("cannot create the producer that re-keys unkeyed input")?,
            )),
            false => None,
        };
        let shared = Arc::new(Shared {
            registry: Arc::new(Registry::new(&cfg.kafka.topic)),
            stop: CancellationToken::new(),
            log_limiter: LogLimiter::default(),
            window: WindowContext {
                config: plan.window.clone(),
                cache: Arc::new(decision_cache(cfg, plan.decision_cache)),
                occupancy: Arc::new(Occupancy::default()),
                trace_budget: plan.memory.traces as usize,
                outage: Arc::default(),
                on_shutdown: cfg.shutdown.pending,
            },
            outputs: Outputs {
                sink,
                dead_letters,
                decision_log: OnceLock::new(),
                rekey,
            },
            observers: Observers {
                span_metrics: (cfg.span_metrics.enabled)
                    .then(|| Arc::new(SpanMetrics::new(&cfg.span_metrics))),
                dependencies: (cfg.dependencies.enabled)
                    .then(|| Arc::new(Dependencies::new(&cfg.dependencies))),
            },
        });
        let (rules, _) = watch::channel(Arc::new(rules));
        Ok(Self {
            shared,
            rules,
            plan: plan.clone(),
        })
    }

    /// Consumes until `shared.stop` fires, then shuts down cleanly.
    pub async fn run(&self, cfg: &Config) -> anyhow::Result<()> {
        if cfg.sampling.decision_log.enabled {
            let Some(log) = open_decision_log(cfg, &self.shared.stop).await else {
                return Ok(()); // stopped before the log could be opened
            };
            let _ = self.shared.outputs.decision_log.set(log);
        }
        let kafka = planned_source(&cfg.kafka, self.plan.prefetch).await?;
        source::lag::report_retention(&cfg.kafka).await;
        let source = Source::new(
            &kafka,
            cfg.shutdown.timeout,
            self.shared.clone(),
            self.rules.subscribe(),
        )
        .context("cannot create the Kafka consumer")?;
        let repartition = match cfg.kafka.repartition_input() {
            Some(input_topic) => {
                let stage = Repartitioner::new(
                    cfg,
                    &self.plan,
                    input_topic,
                    self.shared.outputs.dead_letters.clone(),
                    self.shared.stop.clone(),
                )
                .context("cannot start the repartition stage")?;
                Some(tokio::spawn(stage.run()))
            }
            None => None,
        };
        let gauges = tokio::spawn(report_gauges(self.shared.clone()));
        let lag = tokio::spawn(source::lag::watch(
            cfg.kafka.clone(),
            self.shared.registry.clone(),
        ));
        let memory = tokio::spawn(crate::memory::hold_limit(cfg.memory.limit.as_u64()));
        source.run().await;
        gauges.abort();
        lag.abort();
        memory.abort();
        if let Some(stage) = repartition {
            let _ = stage.await;
        }
        Ok(())
    }
}

/// The decision cache at the plan's size, with a warning when that is
/// fewer entries than configured.
fn decision_cache(cfg: &Config, size: CacheSize) -> DecisionCache {
    let c = &cfg.sampling.decision_cache;
    if size.scaled {
        tracing::warn!(
            configured_kept = c.kept,
            configured_dropped = c.dropped,
            kept = size.kept,
            dropped = size.dropped,
            "sampling.decision_cache does not fit a sixteenth of memory.limit; remembering fewer decisions"
        );
    }
    DecisionCache::new(size.kept, size.dropped)
}

/// How long to wait between attempts to open the decision log at start.
const LOG_RETRY: Duration = Duration::from_secs(5);

/// Opens (and creates, if missing) the decision log, retrying until it
/// works or the service stops: nothing is consumed before it is open, as
/// a partition must read its decisions back before its first message.
async fn open_decision_log(cfg: &Config, stop: &CancellationToken) -> Option<Arc<DecisionLog>> {
    let settings = LogSettings {
        client: source::client_config(&cfg.kafka),
        topic: decision_log_topic(cfg),
        input_partitions: -1,
        horizon: cfg.sampling.decision_cache.horizon,
    };
    loop {
        let (kafka, mut s) = (cfg.kafka.clone(), settings.clone());
        let opened = tokio::task::spawn_blocking(move || {
            // Unknown (the input topic not created yet): the broker's default.
            s.input_partitions = source::topic_partitions(&kafka).map_or(-1, |n| n as i32);
            DecisionLog::open(s)
        })
        .await;
        match opened {
            Ok(Ok(log)) => return Some(Arc::new(log)),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot open the decision log; retrying"),
            Err(e) => tracing::warn!(error = %e, "decision log task failed; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(LOG_RETRY) => {}
        }
    }
}

/// `sampling.decision_log.topic`, or `<kafka.topic>-decisions`.
pub fn decision_log_topic(cfg: &Config) -> String {
    cfg.sampling
        .decision_log
        .topic
        .clone()
        .unwrap_or_else(|| format!("{}-decisions", cfg.kafka.topic))
}

/// The source's Kafka settings with the plan's prefetch.
async fn planned_source(kafka: &KafkaConfig, prefetch: Prefetch) -> anyhow::Result<KafkaConfig> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || source::plan_prefetch(&kafka, prefetch))
        .await
        .context("prefetch plan")
}

/// Ready when partitions are assigned and the sink answers.
struct ServiceReadiness<S: TraceSink> {
    shared: Arc<Shared<S>>,
}

impl<S: TraceSink> Readiness for ServiceReadiness<S> {
    fn ready(&self) -> Result<(), String> {
        if self.shared.registry.is_empty() {
            return Err("no partitions assigned".into());
        }
        if !self.shared.outputs.sink.is_ready() {
            return Err("sink not reachable".into());
        }
        Ok(())
    }
}

/// What the running service is made of besides its sink.
pub struct Service {
    pub cfg: Config,
    pub plan: Plan,
    pub config_path: PathBuf,
    pub metrics: PrometheusHandle,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// Writes dependency documents; with an Elasticsearch sink only.
    pub link_writer: Option<LinkWriter>,
}

impl Service {
    /// Runs with `sink` until SIGTERM/SIGINT.
    pub async fn serve<S: TraceSink>(self, sink: S) -> anyhow::Result<()> {
        let mut cfg = self.cfg;
        if cfg.kafka.group_instance_id.is_none() {
            cfg.kafka.group_instance_id = source::default_instance_id(&cfg.metrics.listen);
        }
        metrics::gauge!("tailsift_memory_limit_bytes").set(cfg.memory.limit.as_u64() as f64);
        let plan = &self.plan.memory;
        tracing::info!(
            limit = %cfg.memory.limit,
            traces = %bytesize::ByteSize::b(plan.traces),
            sink_queue = %bytesize::ByteSize::b(plan.sink_queue),
            prefetch = %bytesize::ByteSize::b(plan.prefetch),
            "memory plan"
        );
        let pipeline = Pipeline::new(&cfg, &self.plan, sink, self.dead_letters)?;
        crate::baseline::at_start(&cfg, &pipeline.rules.borrow().engine);
        let stop = pipeline.shared.stop.clone();
        let listen = cfg.metrics.listen.parse().context("metrics.listen")?;
        let readiness = Arc::new(ServiceReadiness {
            shared: pipeline.shared.clone(),
        });
        if let (Some(deps), Some(writer)) =
            (&pipeline.shared.observers.dependencies, self.link_writer)
        {
            let _ = deps.writer.set(writer);
        }
        let families = pipeline.shared.observers.families();
        let http = tokio::spawn(server::serve(
            listen,
            self.metrics,
            families,
            readiness,
            stop.clone(),
        ));
        tokio::spawn(watch_signals(stop.clone()));
        tokio::spawn(watch_reloads(
            self.config_path,
            pipeline.rules.clone(),
            stop.clone(),
        ));
        tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, "tailsift running");
        pipeline.run(&cfg).await?;
        stop.cancel();
        match http.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server failed"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("tailsift stopped");
        Ok(())
    }
}

async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    stop.cancel();
}

/// Reloads the policies on SIGHUP and when the config file changes. An
/// invalid file is logged and the policies in force stay.
async fn watch_reloads(path: PathBuf, rules: watch::Sender<Arc<Rules>>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut seen = modified(&path);
    let mut poll = tokio::time::interval(RELOAD_POLL);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangup => {}
            _ = poll.tick() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
            }
        }
        reload(&path, &rules);
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn reload(path: &Path, rules: &watch::Sender<Arc<Rules>>) {
    match Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|c| Ok((build_rules(&c)?, c.sampling.decision_wait)))
    {
        Ok((r, wait)) => {
            crate::baseline::decisions(&r.engine);
            let r = r.replacing(&rules.borrow(), wait);
            rules.send_replace(Arc::new(r));
            metrics::counter!("tailsift_policy_reloads_total", "result" => "ok").increment(1);
            tracing::info!(path = %path.display(), "policies reloaded");
        }
        Err(e) => {
            metrics::counter!("tailsift_policy_reloads_total", "result" => "error").increment(1);
            tracing::error!(path = %path.display(), error = format!("{e:#}"), "reload rejected; keeping the policies in force");
        }
    }
}

async fn report_gauges<S: TraceSink>(shared: Arc<Shared<S>>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let o = &shared.window.occupancy;
        metrics::gauge!("tailsift_buffered_bytes").set(o.bytes() as f64);
        metrics::gauge!("tailsift_buffered_spans").set(o.spans.load(Relaxed) as f64);
        metrics::gauge!("tailsift_buffered_traces").set(o.traces.load(Relaxed) as f64);
    }
}
