//! `tailsift run` as operators run it: a child process with a config file,
//! scraped over HTTP while real traffic flows through the real broker into
//! the real Elasticsearch. Checks the metric set, readiness, hot reload of
//! policies (a good file takes effect, a broken one is rejected), and a
//! clean SIGTERM shutdown.
//!
//! Needs `deploy/local/stack.sh up` (KAFKA_BROKERS, ES_URL; see tests/common).

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use tailsift::decode::Encoding;
use tailsift::loadgen::{self, LoadOptions};

const PARTITIONS: i32 = 6;

const ERRORS_ONLY: &str = "
    - name: errors
      type: status_code
      status_code: {status_codes: [ERROR]}
";
const KEEP_ALL: &str = "
    - name: everything
      type: always_sample
";

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_config(
    path: &Path,
    topic: &str,
    group: &str,
    prefix: &str,
    port: u16,
    policies: &str,
) -> Result<()> {
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  topic: {topic}\n  group_id: {group}\n  properties:\n    statistics.interval.ms: \"1000\"\n\
         sampling:\n  decision_wait: 2s\n  root_idle: 300ms\n  policies:{policies}\
         elasticsearch:\n  urls: [{es}]\n  index_prefix: {prefix}\n  replicas: 0\n\
         metrics:\n  listen: 127.0.0.1:{port}\n",
        brokers = common::kafka_brokers(),
        es = common::es_url(),
    );
    std::fs::write(path, yaml).context("write config")
}

/// `name{labels}` → value, from the Prometheus text format.
async fn scrape(port: u16) -> Result<HashMap<String, f64>> {
    let body = http_get(port, "/metrics").await?.1;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

fn sum(m: &HashMap<String, f64>, name: &str, label: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

/// `GET http://127.0.0.1:<port><path>`: status and body.
async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let resp = common::http_client()?
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

async fn wait_for(
    what: &str,
    secs: u64,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn produce(topic: &str, traces: u64, seed: u64) -> Result<loadgen::Summary> {
    let opts = LoadOptions {
        brokers: common::kafka_brokers(),
        topic: topic.to_string(),
        encoding: Encoding::OtlpProto,
        rate: 0.0,
        max_traces: Some(traces),
        seed,
        ..Default::default()
    };
    Ok(loadgen::run(&opts).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_readiness_reload_and_shutdown() -> Result<()> {
    let topic = common::unique_name("tailsift-run");
    let group = common::unique_name("tailsift-run-group");
    let prefix = common::unique_name("run");
    common::kafka::create_topic(&common::kafka_brokers(), &topic, PARTITIONS).await?;
    let dir = std::env::temp_dir().join(common::unique_name("tailsift-run-cfg"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("tailsift.yaml");
    let port = free_port()?;
    write_config(&cfg, &topic, &group, &prefix, port, ERRORS_ONLY)?;

    let log = std::fs::File::create(dir.join("tailsift.log"))?;
    let mut service = Service(
        Command::new(env!("CARGO_BIN_EXE_tailsift"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn tailsift")?,
    );
    wait_for("/readyz = 200", 60, async || {
        Ok(http_get(port, "/readyz").await?.0 == 200)
    })
    .await?;
    println!(
        "tailsift ready on :{port}, log {}",
        dir.join("tailsift.log").display()
    );

    // Phase 1: errors only. Decisions add up to the traces sent.
    let first = produce(&topic, 400, 1).await?;
    wait_for("400 decisions", 60, async || {
        Ok(sum(&scrape(port).await?, "tailsift_decisions_total", "") == 400.0)
    })
    .await?;
    wait_for("kept spans indexed", 30, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_es_documents_total",
            "indexed",
        ) > 0.0)
    })
    .await?;
    let m = scrape(port).await?;
    let kept = sum(&m, "tailsift_decisions_total", "outcome=\"kept\"");
    ensure!(
        kept == first.error_traces as f64,
        "kept {kept}, error traces {}",
        first.error_traces
    );
    ensure!(sum(&m, "tailsift_consumed_spans_total", "") == first.spans as f64);
    // Freshness: one observation per kept trace once all of it is stored,
    // from its last span's end (the generator's spans end just before they
    // are sent).
    wait_for("freshness of every kept trace", 30, async || {
        let m = scrape(port).await?;
        Ok(m.get("tailsift_freshness_seconds_count") == Some(&kept))
    })
    .await?;
    let m = scrape(port).await?;
    let mean = m["tailsift_freshness_seconds_sum"] / kept;
    ensure!((0.0..60.0).contains(&mean), "mean freshness {mean}s");
    for name in [
        "tailsift_consumed_messages_total",
        "tailsift_decision_reasons_total",
        "tailsift_decision_latency_seconds_bucket",
        "tailsift_es_bulk_requests_total",
        "tailsift_es_bulk_duration_seconds_bucket",
        "tailsift_es_documents_total",
    ] {
        ensure!(
            m.keys().any(|k| k.starts_with(name)),
            "metric {name} missing"
        );
    }
    for name in [
        "tailsift_buffered_spans",
        "tailsift_assigned_partitions",
        "tailsift_memory_limit_bytes",
    ] {
        ensure!(m.contains_key(name), "gauge {name} missing");
    }
    ensure!(m["tailsift_assigned_partitions"] == f64::from(PARTITIONS));
    wait_for("lag back to 0 and offsets committed", 60, async || {
        let m = scrape(port).await?;
        let lag = sum(&m, "tailsift_consumer_lag_messages", "partition");
        let committed = sum(&m, "tailsift_committed_offset", "partition");
        Ok(lag == 0.0 && committed == first.messages as f64)
    })
    .await?;

    // Phase 2: a new policy file takes effect without a restart.
    write_config(&cfg, &topic, &group, &prefix, port, KEEP_ALL)?;
    wait_for("reload ok", 30, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_policy_reloads_total",
            "result=\"ok\"",
        ) >= 1.0)
    })
    .await?;
    produce(&topic, 100, 2).await?;
    wait_for("100 traces kept by the reloaded policy", 60, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_decisions_total",
            "policy=\"everything\"",
        ) == 100.0)
    })
    .await?;

    // Phase 3: a broken file is rejected; the policies in force stay.
    std::fs::write(
        &cfg,
        "sampling:\n  policies:\n    - name: bad\n      type: no_such_policy\n",
    )?;
    wait_for("reload rejected", 30, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_policy_reloads_total",
            "result=\"error\"",
        ) >= 1.0)
    })
    .await?;
    produce(&topic, 50, 3).await?;
    wait_for("still keeping everything", 60, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_decisions_total",
            "policy=\"everything\"",
        ) == 150.0)
    })
    .await?;

    // SIGTERM: a clean, prompt exit with status 0.
    let pid = service.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = service.0.try_wait()? {
            break s;
        }
        ensure!(
            Instant::now() < deadline,
            "tailsift did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status.success(), "exit status {status}");
    Ok(())
}

/// Metric families (`# TYPE` lines) of a scrape.
fn families(body: &str) -> std::collections::BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Started with the shipped config/tailsift.yaml on an idle topic, every
/// family of the catalogue is on /metrics as soon as the service is ready:
/// per assigned partition, per configured policy and outcome, per decode
/// reason, Elasticsearch, dead letters, process metrics. Then unkeyed input
/// (several traces per message, no key) is counted and /readyz says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_from_the_start_and_unkeyed_input_is_reported() -> Result<()> {
    use tailsift::telemetry::{CONNECTOR_METRICS, METRICS};
    let topic = common::unique_name("tailsift-idle");
    common::kafka::create_topic(&common::kafka_brokers(), &topic, PARTITIONS).await?;
    let dir = std::env::temp_dir().join(common::unique_name("tailsift-idle-run"));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("tailsift.log"))?;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tailsift.yaml");
    let _service = Service(
        Command::new(env!("CARGO_BIN_EXE_tailsift"))
            .args(["run", "--config"])
            .arg(&shipped)
            .env("TAILSIFT_KAFKA__BROKERS", common::kafka_brokers())
            .env("TAILSIFT_KAFKA__TOPIC", &topic)
            .env(
                "TAILSIFT_KAFKA__GROUP_ID",
                common::unique_name("tailsift-idle-group"),
            )
            .env("TAILSIFT_KAFKA__DEAD_LETTER_TOPIC", format!("{topic}-dlq"))
            .env("TAILSIFT_ELASTICSEARCH__URLS", common::es_url())
            .env(
                "TAILSIFT_ELASTICSEARCH__INDEX_PREFIX",
                common::unique_name("idle"),
            )
            .env("TAILSIFT_METRICS__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn tailsift")?,
    );
    wait_for("/readyz = 200", 60, async || {
        Ok(http_get(port, "/readyz").await?.0 == 200)
    })
    .await?;

    let body = http_get(port, "/metrics").await?.1;
    let found = families(&body);
    // Labelled by a configured OTTL rule or span filter; the shipped config
    // has none, so there is no series to show.
    let per_ottl_rule = [
        "tailsift_ottl_errors_total",
        "tailsift_spans_filtered_total",
    ];
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|m| m.0)
        .chain(CONNECTOR_METRICS.iter().map(|m| m.0))
        .filter(|name| !found.contains(*name) && !per_ottl_rule.contains(name))
        .collect();
    ensure!(
        missing.is_empty(),
        "families missing on an idle topic: {missing:?}"
    );
    let unknown: Vec<&String> = found
        .iter()
        .filter(|f| !METRICS.iter().any(|m| m.0 == f.as_str()))
        .filter(|f| !CONNECTOR_METRICS.iter().any(|m| m.0 == f.as_str()))
        .collect();
    ensure!(
        unknown.is_empty(),
        "exported but not catalogued: {unknown:?}"
    );

    let m = scrape(port).await?;
    let count = |name: &str, label: &str| {
        m.keys()
            .filter(|k| k.starts_with(&format!("{name}{{")) && k.contains(label))
            .count()
    };
    let partitions = PARTITIONS as usize;
    for name in [
        "tailsift_consumer_lag_messages",
        "tailsift_partition_lag_seconds",
        "tailsift_lost_messages_total",
        "tailsift_committed_offset",
        "tailsift_consumed_messages_total",
    ] {
        ensure!(
            count(name, "partition=") == partitions,
            "{name}: not one series per partition"
        );
    }
    for policy in ["errors", "slow", "baseline", "none"] {
        for outcome in ["kept", "dropped"] {
            let label = format!("policy=\"{policy}\",outcome=\"{outcome}\"");
            let alt = format!("outcome=\"{outcome}\",policy=\"{policy}\"");
            ensure!(
                count("tailsift_decisions_total", &label) + count("tailsift_decisions_total", &alt)
                    == 1,
                "no decision series {label}"
            );
        }
    }
    let reasons = tailsift::decode::DecodeError::REASONS.len();
    ensure!(count("tailsift_decode_errors_total", "reason=") == reasons);
    ensure!(
        count("tailsift_redacted_values_total", "rule=") == 4,
        "the shipped value rules"
    );
    ensure!(
        m.get("process_resident_memory_bytes")
            .is_some_and(|v| *v > 0.0)
    );
    ensure!(sum(&m, "tailsift_unkeyed_messages_total", "") == 0.0);
    ensure!(
        !http_get(port, "/readyz")
            .await?
            .1
            .contains(tailsift::keying::NOTE)
    );

    // Unkeyed batches: several traces per message, no key.
    let opts = LoadOptions {
        brokers: common::kafka_brokers(),
        topic: topic.clone(),
        encoding: Encoding::OtlpProto,
        keyed: false,
        rate: 0.0,
        max_traces: Some(200),
        seed: 9,
        ..Default::default()
    };
    loadgen::run(&opts).await?;
    wait_for("unkeyed messages counted", 60, async || {
        Ok(sum(
            &scrape(port).await?,
            "tailsift_unkeyed_messages_total",
            "reason=",
        ) > 0.0)
    })
    .await?;
    let (status, ready) = http_get(port, "/readyz").await?;
    ensure!(status == 200, "/readyz {status}: {ready}");
    ensure!(ready.contains(tailsift::keying::NOTE), "/readyz: {ready}");
    let logged = std::fs::read_to_string(dir.join("tailsift.log"))?;
    ensure!(
        logged.contains(tailsift::keying::NOTE),
        "no warning in the log"
    );
    Ok(())
}

/// A restart after retention deleted messages the group never resolved (its
/// committed offset lies below the log start): librdkafka would resume at
/// the log start silently; tailsift counts the skipped messages as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_below_the_log_start_counts_lost_messages() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let brokers = common::kafka_brokers();
    let topic = common::unique_name("tailsift-lost");
    let group = common::unique_name("tailsift-lost-group");
    common::kafka::create_topic(&brokers, &topic, 1).await?;
    produce(&topic, 30, 4).await?;
    // The group had resolved up to offset 2; then retention removed 0..6.
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(&topic, 0, Offset::Offset(2))?;
    committer.commit(&at, CommitMode::Sync)?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let mut below = TopicPartitionList::new();
    below.add_partition_offset(&topic, 0, Offset::Offset(6))?;
    admin.delete_records(&below, &AdminOptions::new()).await?;

    let dir = std::env::temp_dir().join(common::unique_name("tailsift-lost-cfg"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("tailsift.yaml");
    let port = free_port()?;
    write_config(
        &cfg,
        &topic,
        &group,
        &common::unique_name("lost"),
        port,
        KEEP_ALL,
    )?;
    let log = std::fs::File::create(dir.join("tailsift.log"))?;
    let _service = Service(
        Command::new(env!("CARGO_BIN_EXE_tailsift"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn tailsift")?,
    );
    let lost = "tailsift_lost_messages_total{partition=\"0\"}";
    wait_for("4 lost messages counted", 60, async || {
        Ok(scrape(port).await?.get(lost) == Some(&4.0))
    })
    .await?;
    // Consumption went on from the log start; the count does not grow.
    wait_for("the committed offset past the log start", 60, async || {
        let m = scrape(port).await?;
        Ok(m.get("tailsift_committed_offset{partition=\"0\"}")
            .is_some_and(|o| *o >= 6.0))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(16)).await;
    ensure!(scrape(port).await?.get(lost) == Some(&4.0), "counted again");
    Ok(())
}
