//! Rollover without ILM on the REAL search engine (Elasticsearch by default,
//! every engine of scripts/matrix.sh):
//!
//! - `rollover_commands_move_the_aliases`: `init` (twice: nothing new the
//!   second time), `rollover` with a condition not met and one met, `lookback`
//!   with a cutoff before and after the rollover, each checked on the aliases
//!   Elasticsearch reports;
//! - `writes_continue_through_a_rollover_and_jaeger_reads_across_it`, the
//!   acceptance test: tailsift in alias mode samples and writes traces from
//!   Kafka while `rollover` runs with a condition that triggers; every trace
//!   is stored whole across the two indices, one trace has spans in both (a
//!   span sent after the rollover), and an unmodified Jaeger Query in alias
//!   mode returns every trace through the read alias. `lookback` then hides
//!   the old index from it and `prune-indices` deletes it, the write index
//!   staying and still read.
//!
//! Needs the stack (`deploy/local/stack.sh up`, see tests/common); the second
//! test also Jaeger v2, run like tests/jaeger_query.rs (`TAILSIFT_JAEGER_QUERY=1`
//! or CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use chrono::{Days, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use common::es::Es;
use common::jaeger::{self, JaegerQuery, check_trace};
use common::pipeline::{self, Running, wait_assigned};
use tailsift::config::{Config, ElasticsearchConfig};
use tailsift::deadletter::CountOnly;
use tailsift::loadgen::encode;
use tailsift::loadgen::generator::{GenSpan, GenTrace, Profile, TraceGenerator};
use tailsift::model::{SpanId, TraceId};
use tailsift::plan::Plan;
use tailsift::retention::prune_indices;
use tailsift::rollover::{self, Conditions, LookbackUnit, RolloverError};
use tailsift::sink::ElasticsearchSink;
use tailsift::sink::elasticsearch::EsClient;

const PARTITIONS: i32 = 3;
const ALWAYS: &str = r#"[{"name": "all", "type": "always_sample"}]"#;
/// Traces sent before the rollover, and while it runs.
const BEFORE: usize = 60;
const DURING: usize = 120;
const SEED: u64 = 1616;

fn es_config() -> ElasticsearchConfig {
    ElasticsearchConfig {
        urls: vec![common::es_url()],
        use_aliases: true,
        // The local stack is one node.
        replicas: 0,
        ..Default::default()
    }
}

/// Index → its aliases, for the run's span and service indices.
async fn aliases(es: &Es, prefix: &str) -> Result<BTreeMap<String, Vec<String>>> {
    es.aliases(&format!(
        "{prefix}jaeger-span-0*,{prefix}jaeger-service-0*,{prefix}jaeger-dependencies-0*"
    ))
    .await
}

fn expect(prefix: &str, entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(index, aliases)| {
            let mut a: Vec<String> = aliases.iter().map(|x| format!("{prefix}{x}")).collect();
            a.sort();
            (format!("{prefix}{index}"), a)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_commands_move_the_aliases() -> Result<()> {
    let cfg = es_config();
    let client = EsClient::new(&cfg)?;
    let es = Es::new(&common::es_url())?;
    let prefix = format!("{}-", common::unique_name("tailsift-rollover-cmd"));
    let names = rollover::names(&prefix);

    let missing = rollover::rollover(&client, &names, &conditions(Some(1))).await;
    ensure!(
        matches!(missing, Err(RolloverError::NoWriteAlias(_))),
        "rollover before init: {missing:?}"
    );

    let created = rollover::init(&client, &cfg, &names).await?;
    let first = [
        format!("{prefix}jaeger-service-000001"),
        format!("{prefix}jaeger-span-000001"),
        format!("{prefix}jaeger-dependencies-000001"),
    ];
    ensure!(
        BTreeSet::from_iter(&created) == BTreeSet::from_iter(&first),
        "init created {created:?}"
    );
    ensure!(
        rollover::init(&client, &cfg, &names).await?.is_empty(),
        "init again created indices"
    );
    let both = ["jaeger-span-read", "jaeger-span-write"];
    let service_both = ["jaeger-service-read", "jaeger-service-write"];
    let deps_both = ["jaeger-dependencies-read", "jaeger-dependencies-write"];
    ensure!(
        aliases(&es, &prefix).await?
            == expect(
                &prefix,
                &[
                    ("jaeger-span-000001", &both),
                    ("jaeger-service-000001", &service_both),
                    ("jaeger-dependencies-000001", &deps_both),
                ]
            ),
        "after init: {:?}",
        aliases(&es, &prefix).await?
    );

    // Empty indices: a document condition is not met.
    for r in rollover::rollover(&client, &names, &conditions(Some(1))).await? {
        ensure!(!r.rolled_over, "rolled over without documents: {r:?}");
        ensure!(r.conditions.values().all(|met| !met), "{r:?}");
    }
    let age = Conditions {
        max_age: Some("1ms".into()),
        ..Default::default()
    };
    for r in rollover::rollover(&client, &names, &age).await? {
        ensure!(r.rolled_over && r.new_index.ends_with("-000002"), "{r:?}");
    }
    let rolled = expect(
        &prefix,
        &[
            ("jaeger-span-000001", &["jaeger-span-read"]),
            ("jaeger-span-000002", &both),
            ("jaeger-service-000001", &["jaeger-service-read"]),
            ("jaeger-service-000002", &service_both),
            ("jaeger-dependencies-000001", &["jaeger-dependencies-read"]),
            ("jaeger-dependencies-000002", &deps_both),
        ],
    );
    ensure!(
        aliases(&es, &prefix).await? == rolled,
        "after the rollover: {:?}",
        aliases(&es, &prefix).await?
    );

    // Retired just now: a cutoff at the start of the day keeps them readable.
    let today = rollover::cutoff(Utc::now(), LookbackUnit::Days, 1);
    ensure!(rollover::lookback(&client, &names, today).await?.is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = rollover::cutoff(Utc::now(), LookbackUnit::Seconds, 0);
    let removed = rollover::lookback(&client, &names, now).await?;
    ensure!(
        BTreeSet::from_iter(&removed) == BTreeSet::from_iter(&first),
        "lookback removed {removed:?}"
    );
    let looked_back = expect(
        &prefix,
        &[
            ("jaeger-span-000001", &[]),
            ("jaeger-span-000002", &both),
            ("jaeger-service-000001", &[]),
            ("jaeger-service-000002", &service_both),
            ("jaeger-dependencies-000001", &[]),
            ("jaeger-dependencies-000002", &deps_both),
        ],
    );
    ensure!(
        aliases(&es, &prefix).await? == looked_back,
        "after lookback: {:?}",
        aliases(&es, &prefix).await?
    );
    es.delete_run(&prefix).await;
    Ok(())
}

fn conditions(max_docs: Option<u64>) -> Conditions {
    Conditions {
        max_docs,
        ..Default::default()
    }
}

// ------------------------------------------------------------------ acceptance -------

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A plain producer: each trace as one OTLP message keyed by its trace ID.
struct Producer {
    inner: FutureProducer,
    topic: String,
}

impl Producer {
    fn new(brokers: &str, topic: &str) -> Result<Self> {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()?;
        Ok(Self {
            inner,
            topic: topic.to_string(),
        })
    }

    async fn send(&self, trace_id: TraceId, spans: &[&GenSpan]) -> Result<()> {
        let spans: Vec<(TraceId, &GenSpan)> = spans.iter().map(|s| (trace_id, *s)).collect();
        let payload = encode::otlp(&spans, false);
        let key = trace_id.to_hex();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        self.inner
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        Ok(())
    }

    /// `traces` at `per_second`.
    async fn send_all(&self, traces: &[GenTrace], per_second: f64) -> Result<()> {
        let started = Instant::now();
        for (i, t) in traces.iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / per_second);
            tokio::time::sleep_until(due.into()).await;
            self.send(t.trace_id, &t.spans.iter().collect::<Vec<_>>())
                .await?;
        }
        Ok(())
    }
}

fn generate(n: usize, generator: &mut TraceGenerator) -> Vec<GenTrace> {
    (0..n).map(|_| generator.trace(now_ns())).collect()
}

/// A new child of `trace`'s root, to be sent after the trace was decided.
fn late_child(trace: &GenTrace) -> Result<GenSpan> {
    let root = trace
        .spans
        .iter()
        .find(|s| s.parent.is_zero())
        .context("generated trace without a root")?;
    Ok(GenSpan {
        span_id: SpanId([0x5a; 8]),
        parent: root.span_id,
        service: root.service.clone(),
        name: "after the rollover".into(),
        kind: 1,
        start_unix_nano: root.start_unix_nano + 1_000,
        end_unix_nano: root.start_unix_nano + 2_000,
        error: false,
        attributes: Vec::new(),
    })
}

/// Polls until `index` holds at least one document.
async fn wait_for_documents(es: &Es, index: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        es.refresh(index).await?;
        if es.count(index, None).await? > 0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "nothing written to {index}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where each trace's span documents are: (in the first index, in the second).
async fn placement(es: &Es, prefix: &str, traces: &[GenTrace]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for t in traces {
        let q = json!({"term": {"traceID": t.trace_id.to_hex()}});
        out.push((
            es.count(&format!("{prefix}jaeger-span-000001"), Some(q.clone()))
                .await?,
            es.count(&format!("{prefix}jaeger-span-000002"), Some(q))
                .await?,
        ));
    }
    Ok(out)
}

async fn start_readers(es_url: &str, prefix: &str) -> Result<Vec<JaegerQuery>> {
    let mut all = Vec::new();
    for reader in jaeger::readers()? {
        let (es_url, prefix) = (es_url.to_string(), prefix.to_string());
        let q = tokio::task::spawn_blocking(move || {
            JaegerQuery::start_with_aliases(reader, &es_url, &prefix)
        })
        .await
        .context("Jaeger Query start task")??;
        all.push(q);
    }
    Ok(all)
}

fn acceptance_config(run: &str, brokers: &str, topic: &str) -> Config {
    let mut cfg = pipeline::config(brokers, topic, &format!("{run}-group"), ALWAYS);
    cfg.elasticsearch = ElasticsearchConfig {
        index_prefix: run.to_string(),
        ..es_config()
    };
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_continue_through_a_rollover_and_jaeger_reads_across_it() -> Result<()> {
    if !jaeger::enabled("writes_continue_through_a_rollover_and_jaeger_reads_across_it") {
        return Ok(());
    }
    let (brokers, es_url) = (common::kafka_brokers(), common::es_url());
    let run = common::unique_name("rollover");
    let topic = format!("tailsift-{run}");
    let cfg = acceptance_config(&run, &brokers, &topic);
    let prefix = cfg.index_prefix();
    let names = rollover::names(&prefix);
    let es = Es::new(&es_url)?;
    let client = EsClient::new(&cfg.elasticsearch)?;

    // Jaeger first: its first start builds it (minutes, once).
    let queries = start_readers(&es_url, &cfg.elasticsearch.index_prefix).await?;
    rollover::init(&client, &cfg.elasticsearch, &names).await?;

    kafka_topic(&brokers, &topic).await?;
    let plan = Plan::resolve(&cfg)?;
    let sink = Arc::new(ElasticsearchSink::start(&plan.sink, Arc::new(CountOnly)).await?);
    let member = Running::start(&cfg, sink.clone())?;
    wait_assigned(&[&member], PARTITIONS as usize).await?;
    let producer = Producer::new(&brokers, &topic)?;
    let mut generator = TraceGenerator::new(
        Profile {
            slow_rate: 0.0,
            ..Default::default()
        },
        SEED,
    );

    // 1. Traffic into the first index.
    let mut traces = generate(BEFORE, &mut generator);
    producer.send_all(&traces, 60.0).await?;
    wait_for_documents(&es, &format!("{prefix}jaeger-span-000001")).await?;

    // 2. The rollover, while traffic goes on and tailsift keeps writing.
    let during = generate(DURING, &mut generator);
    let outcomes = tokio::join!(producer.send_all(&during, 20.0), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // (documents count once refreshed)
        es.refresh(&format!("{prefix}jaeger-*")).await?;
        rollover::rollover(&client, &names, &conditions(Some(1)))
            .await
            .map_err(anyhow::Error::from)
    });
    outcomes.0?;
    // (The in-process pipeline writes no dependency documents: that alias
    // has none and stays.)
    let written = outcomes
        .1?
        .into_iter()
        .filter(|r| !r.alias.contains("jaeger-dependencies"));
    for r in written {
        ensure!(r.rolled_over, "the condition did not trigger: {r:?}");
        common::report(&format!(
            "{}: {} -> {} during traffic",
            r.alias, r.old_index, r.new_index
        ));
    }
    traces.extend(during);

    // 3. A span of a trace stored before the rollover, sent after it: the
    //    trace's decision is remembered, its new span goes to the new index.
    let late = late_child(&traces[0])?;
    producer.send(traces[0].trace_id, &[&late]).await?;
    traces[0].spans.push(late);

    tokio::time::sleep(cfg.sampling.decision_wait + Duration::from_secs(3)).await;
    member.stop().await?;
    ensure!(
        sink.shutdown(Duration::from_secs(30)).await,
        "the sink did not drain"
    );
    common::kafka::ensure_committed_to_end(&brokers, &topic, &cfg.kafka.group_id, PARTITIONS)?;

    // 4. Every span stored once, in one of the two indices.
    es.refresh(&format!("{prefix}jaeger-*")).await?;
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let read = es.count(&format!("{prefix}jaeger-span-read"), None).await?;
    ensure!(
        read as usize == spans,
        "{read} span documents in the read alias, {spans} sent"
    );
    let placed = placement(&es, &prefix, &traces).await?;
    let old_only: Vec<&GenTrace> = traces
        .iter()
        .zip(&placed)
        .filter(|(_, p)| p.1 == 0)
        .map(|(t, _)| t)
        .collect();
    let new_only: Vec<&GenTrace> = traces
        .iter()
        .zip(&placed)
        .filter(|(_, p)| p.0 == 0)
        .map(|(t, _)| t)
        .collect();
    ensure!(
        !old_only.is_empty() && !new_only.is_empty(),
        "traces before / after the rollover: {} / {}",
        old_only.len(),
        new_only.len()
    );
    ensure!(
        placed[0] == (traces[0].spans.len() as u64 - 1, 1),
        "the late span's trace: {:?}",
        placed[0]
    );
    common::report(&format!(
        "{} traces ({spans} spans): {} in the first index, {} in the second, 1 in both",
        traces.len(),
        old_only.len(),
        new_only.len()
    ));

    // 5. Jaeger Query reads across both through the read alias.
    let services: BTreeSet<String> = traces
        .iter()
        .flat_map(|t| t.spans.iter().map(|s| s.service.clone()))
        .collect();
    for q in &queries {
        let listed = jaeger::strings(&q.api.get("/api/services", &[]).await?["data"])?;
        ensure!(
            listed == services,
            "Jaeger {}: services {listed:?}, want {services:?}",
            q.reader.name()
        );
        for t in &traces {
            check_trace(&q.api, t, &t.trace_id.to_hex())
                .await
                .with_context(|| format!("Jaeger {}", q.reader.name()))?;
        }
    }

    // 6. Lookback: the first index leaves the read alias; Jaeger no longer
    //    sees what only it holds, and still reads the rest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = rollover::cutoff(Utc::now(), LookbackUnit::Seconds, 0);
    let removed = rollover::lookback(&client, &names, cutoff).await?;
    ensure!(removed.len() == 2, "lookback removed {removed:?}");
    for q in &queries {
        q.api.ensure_absent(&old_only[0].trace_id.to_hex()).await?;
        check_trace(&q.api, new_only[0], &new_only[0].trace_id.to_hex()).await?;
    }

    // 7. Retention, days later: the retired index goes, the write index stays.
    let ts = tailsift::retention::client(&es_url)?;
    let report = prune_indices(&ts, &prefix, 1, Utc::now() + Days::new(2), false).await?;
    let index = |family: &str, n: &str| format!("{prefix}jaeger-{family}-{n}");
    ensure!(
        report.deleted == [index("service", "000001"), index("span", "000001")],
        "prune deleted {:?}",
        report.deleted
    );
    // The dependencies' first index is still their write index (no rollover).
    let kept = [
        index("dependencies", "000001"),
        index("service", "000002"),
        index("span", "000002"),
    ];
    ensure!(report.kept == kept, "prune kept {:?}", report.kept);
    for q in &queries {
        for t in &new_only {
            check_trace(&q.api, t, &t.trace_id.to_hex()).await?;
        }
    }
    common::report(&format!(
        "Jaeger read all {} traces across the rollover; after lookback and prune the {} of the \
         new index",
        traces.len(),
        new_only.len()
    ));
    queries.into_iter().for_each(JaegerQuery::finish);
    es.delete_run(&prefix).await;
    Ok(())
}

async fn kafka_topic(brokers: &str, topic: &str) -> Result<()> {
    common::kafka::create_topic(brokers, topic, PARTITIONS)
        .await
        .with_context(|| format!("no Kafka at {brokers}; {}", common::START_HINT))
}
