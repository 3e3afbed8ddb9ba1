//! RED metrics and dependency links from every span, read back by the real
//! readers: Jaeger v2's Monitor API (`/api/metrics/*`) over a real
//! Prometheus that scrapes `tailsift run`, and Jaeger's `/api/dependencies`
//! over the Elasticsearch indices — checked against the generator's ground
//! truth computed from ALL generated spans, while the span indices hold
//! only the sampled (error) traces.
//!
//! Needs the local stack, and builds Jaeger v2 and Prometheus once (cached);
//! runs when CI or TAILSIFT_JAEGER_QUERY is set:
//! `TAILSIFT_JAEGER_QUERY=1 cargo test --features integration --test red_metrics`.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use common::jaeger::{JaegerApi, JaegerQuery, Reader};
use common::prometheus::Prometheus;
use tailsift::loadgen::encode;
use tailsift::loadgen::generator::{GenTrace, Profile, TraceGenerator};

const TRACES: usize = 800;
/// Jaeger's `ratePer` for the Monitor queries, ms.
const RATE_PER_MS: u64 = 600_000;
/// The span metrics' default buckets (ms), to place a quantile.
const BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's own topic (6 partitions), index prefix, config directory and
/// metrics port.
struct Run {
    topic: String,
    prefix: String,
    dir: std::path::PathBuf,
    port: u16,
}

impl Run {
    async fn new(name: &str) -> Result<Self> {
        let topic = common::unique_name(&format!("tailsift-{name}"));
        let prefix = common::unique_name(name);
        common::kafka::create_topic(&common::kafka_brokers(), &topic, 6).await?;
        let dir = std::env::temp_dir().join(common::unique_name(&format!("tailsift-{name}-cfg")));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        write_config(&dir.join("tailsift.yaml"), &topic, &prefix, port)?;
        Ok(Self {
            topic,
            prefix,
            dir,
            port,
        })
    }
}

/// `tailsift run` on `dir`'s config, logging to `log` there.
fn spawn(dir: &Path, log: &str) -> Result<Service> {
    let log = std::fs::File::create(dir.join(log))?;
    let child = Command::new(env!("CARGO_BIN_EXE_tailsift"))
        .args(["run", "--config"])
        .arg(dir.join("tailsift.yaml"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn tailsift")?;
    Ok(Service(child))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shipped defaults for span metrics and dependencies; a short decision
/// wait to stay fast (the defaults' decisions are the fault suite's).
fn write_config(path: &Path, topic: &str, prefix: &str, port: u16) -> Result<()> {
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  topic: {topic}\n  group_id: {topic}-group\n\
         sampling:\n  decision_wait: 2s\n  root_idle: 300ms\n  policies:\n\
         \x20   - name: errors\n      type: status_code\n      status_code: {{status_codes: [ERROR]}}\n\
         elasticsearch:\n  urls: [{es}]\n  index_prefix: {prefix}\n  replicas: 0\n\
         metrics:\n  listen: 127.0.0.1:{port}\n",
        brokers = common::kafka_brokers(),
        es = common::es_url(),
    );
    std::fs::write(path, yaml).context("write config")
}

fn traffic() -> Vec<GenTrace> {
    traffic_of(TRACES, 42)
}

fn traffic_of(n: usize, seed: u64) -> Vec<GenTrace> {
    let profile = Profile {
        services: 4,
        error_rate: 0.2,
        ..Profile::default()
    };
    let mut g = TraceGenerator::new(profile, seed);
    // Ended in the past: no span is corrected for a clock in the future.
    let start = (now_ms() - 20_000) * 1_000_000;
    (0..n)
        .map(|i| g.trace(start + i as u64 * 1_000_000))
        .collect()
}

/// Ground truth from every generated span.
#[derive(Default)]
struct Truth {
    links: HashMap<(String, String), u64>,
    /// Server spans per service: their durations (ms) and errors.
    server: HashMap<String, (Vec<f64>, u64)>,
    spans: u64,
    stored_spans: u64,
}

fn truth(traces: &[GenTrace]) -> Truth {
    let mut t = Truth::default();
    for trace in traces {
        t.spans += trace.spans.len() as u64;
        if trace.error {
            t.stored_spans += trace.spans.len() as u64;
        }
        for s in &trace.spans {
            if let Some(p) = trace.spans.iter().find(|p| p.span_id == s.parent) {
                *t.links
                    .entry((p.service.clone(), s.service.clone()))
                    .or_default() += 1;
            }
            if s.kind == 2 {
                let e = t.server.entry(s.service.clone()).or_default();
                e.0.push((s.end_unix_nano - s.start_unix_nano) as f64 / 1e6);
                e.1 += u64::from(s.error);
            }
        }
    }
    t
}

async fn produce(topic: &str, traces: &[GenTrace]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_brokers())
        .create()?;
    for t in traces {
        let spans: Vec<_> = t.spans.iter().map(|s| (t.trace_id, s)).collect();
        let payload = encode::otlp(&spans, false);
        let key = t.trace_id.to_hex();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .context("produce")?;
    }
    Ok(())
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs}s waiting for {what}{last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The last point of a Monitor API answer for `service` (jsonpb leaves
/// zero values out).
fn last_point(body: &Value, service: &str) -> Option<f64> {
    let series = body["metrics"].as_array()?.iter().find(|m| {
        m["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["value"] == service))
    })?;
    let point = series["metricPoints"].as_array()?.last()?;
    Some(point["gaugeValue"]["doubleValue"].as_f64().unwrap_or(0.0))
}

async fn monitor(
    api: &JaegerApi,
    what: &str,
    service: &str,
    extra: &[(&str, String)],
) -> Result<f64> {
    let mut query = vec![
        ("service", service.to_string()),
        ("endTs", now_ms().to_string()),
        ("lookback", "60000".to_string()),
        ("step", "5000".to_string()),
        ("ratePer", RATE_PER_MS.to_string()),
        ("spanKind", "server".to_string()),
    ];
    query.extend(extra.iter().cloned());
    let body = api.get(&format!("/api/metrics/{what}"), &query).await?;
    last_point(&body, service).with_context(|| format!("no {what} for {service}: {body}"))
}

async fn dependencies(
    api: &JaegerApi,
    query: &[(&str, String)],
) -> Result<HashMap<(String, String), u64>> {
    let body = api.get("/api/dependencies", query).await?;
    let links = body["data"].as_array().cloned().unwrap_or_default();
    Ok(links
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (
                (s("parent"), s("child")),
                l["callCount"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// The bucket `[lower, upper]` holding the nearest-rank quantile.
fn quantile_bucket(durations: &[f64], q: f64) -> (f64, f64) {
    let mut d = durations.to_vec();
    d.sort_by(f64::total_cmp);
    let rank = ((q * d.len() as f64).ceil() as usize).clamp(1, d.len());
    let v = d[rank - 1];
    let i = BUCKETS_MS.partition_point(|b| *b < v);
    let lower = if i == 0 { 0.0 } else { BUCKETS_MS[i - 1] };
    (lower, BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_monitor_and_dependencies_from_every_span() -> Result<()> {
    if !common::jaeger::enabled("jaeger_monitor_and_dependencies_from_every_span") {
        return Ok(());
    }
    let Run {
        topic,
        prefix,
        dir,
        port,
    } = Run::new("red").await?;
    let _service = spawn(&dir, "tailsift.log")?;
    let target = format!("127.0.0.1:{port}");
    let prometheus = tokio::task::spawn_blocking(move || Prometheus::start(&target)).await??;
    let (es, jprefix, prom) = (
        common::es_url(),
        format!("{prefix}-"),
        prometheus.url.clone(),
    );
    let jaeger = tokio::task::spawn_blocking(move || {
        JaegerQuery::start_with_metrics(Reader::V2, &es, &jprefix, &prom)
    })
    .await??;
    let scrapes = format!("up{{instance=\"127.0.0.1:{port}\"}}");
    wait_for("Prometheus scraping tailsift", 90, || async {
        Ok(prometheus.scalar(&scrapes).await? == 1.0)
    })
    .await?;

    let traces = traffic();
    let truth = truth(&traces);
    produce(&topic, &traces).await?;
    let counted = truth.spans as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = prometheus
            .scalar("sum(traces_span_metrics_calls_total)")
            .await?;
        if seen == counted {
            break;
        }
        if Instant::now() > deadline {
            let consumed = prometheus
                .scalar("sum(tailsift_consumed_spans_total)")
                .await?;
            bail!(
                "Prometheus counts {seen} calls ({consumed} spans consumed); generated {counted}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let decided = prometheus.scalar("sum(tailsift_decisions_total)").await?;
    ensure!(decided == TRACES as f64, "decisions {decided}");

    // Dependencies: exactly the generated links, from kept and dropped traces.
    let api = &jaeger.api;
    let deps_query = [
        ("endTs", now_ms().to_string()),
        ("lookback", "86400000".to_string()),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = dependencies(api, &deps_query).await?;
        if got == truth.links {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "dependencies: Jaeger returns {got:?}, generated {:?}",
                truth.links
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Let the series age, so that rate()'s extrapolation to the window's
    // end (at most a scrape interval) is a few percent of what it saw.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (service, (durations, errors)) in &truth.server {
        let calls = durations.len() as f64;
        let rate = monitor(api, "calls", service, &[]).await?;
        let expected = calls / (RATE_PER_MS as f64 / 1000.0);
        ensure!(
            (rate - expected).abs() <= expected * 0.05,
            "{service}: call rate {rate}/s, generated {expected}/s ({calls} server spans)"
        );
        let error_rate = monitor(api, "errors", service, &[]).await?;
        let expected = *errors as f64 / calls;
        ensure!(
            (error_rate - expected).abs() <= expected * 0.05 + 0.005,
            "{service}: error rate {error_rate}, generated {expected}"
        );
        let q = [("quantile", "0.95".to_string())];
        let p95 = monitor(api, "latencies", service, &q).await?;
        let (lower, upper) = quantile_bucket(durations, 0.95);
        ensure!(
            (lower..=upper).contains(&p95),
            "{service}: p95 {p95} ms outside the bucket of the generated p95 ({lower}..{upper} ms)"
        );
        common::report(&format!(
            "{service}: {calls} server spans, rate {rate:.4}/s, error rate {error_rate:.3}, p95 {p95:.1} ms"
        ));
    }

    // While only the sampled traces were stored.
    let es = common::es::Es::new(&common::es_url())?;
    let spans = format!("{prefix}-jaeger-span-*");
    es.refresh(&spans).await?;
    let stored = es.count(&spans, None).await?;
    ensure!(
        stored == truth.stored_spans,
        "span indices hold {stored} spans, the error traces have {}",
        truth.stored_spans
    );
    ensure!(
        truth.stored_spans < truth.spans / 2,
        "the policies must drop most spans"
    );
    jaeger.finish();
    es.delete_run(&format!("{prefix}-")).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The sum of a family's samples on tailsift's `/metrics`.
async fn scrape_sum(port: u16, family: &str) -> Result<f64> {
    let body = common::http_client()?
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// A member killed (SIGKILL) in the middle of the traffic and started
/// again, with the shipped dependency settings: Jaeger's
/// `/api/dependencies` still holds every generated link, none lost. A trace
/// is counted by whoever decides it whole; the one double count the design
/// allows (a document stored, its decision records not yet acknowledged
/// when the process died) can only come from traces the crashed member
/// decided, and is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_links_survive_a_crash() -> Result<()> {
    if !common::jaeger::enabled("dependency_links_survive_a_crash") {
        return Ok(());
    }
    let Run {
        topic,
        prefix,
        dir,
        port,
    } = Run::new("depcrash").await?;
    let (es, jprefix) = (common::es_url(), format!("{prefix}-"));
    let jaeger = tokio::task::spawn_blocking(move || JaegerQuery::start(Reader::V2, &es, &jprefix))
        .await??;

    let (first, second) = (traffic_of(500, 7), traffic_of(500, 8));
    let mut crashed = spawn(&dir, "tailsift-1.log")?;
    wait_for("the first member ready", 60, || async {
        Ok(scrape_sum(port, "tailsift_rebalances_total")
            .await
            .is_ok_and(|n| n > 0.0))
    })
    .await?;
    produce(&topic, &first).await?;
    wait_for("a third of the first traffic decided", 60, || async {
        Ok(scrape_sum(port, "tailsift_decisions_total").await? >= 170.0)
    })
    .await?;
    let decided_before = scrape_sum(port, "tailsift_decisions_total").await?;
    crashed.0.kill().context("SIGKILL")?;
    let _ = crashed.0.wait();
    produce(&topic, &second).await?;
    let _restarted = spawn(&dir, "tailsift-2.log")?;

    // Only traces the crashed member decided can count twice: at most the
    // busiest of the first traffic, as many as it had decided (plus what it
    // may have decided between that scrape and the kill).
    let mut per_trace: Vec<u64> = first
        .iter()
        .map(|t| truth(std::slice::from_ref(t)).links.values().sum())
        .collect();
    per_trace.sort_unstable_by(|a, b| b.cmp(a));
    let bound: u64 = per_trace.iter().take(decided_before as usize + 50).sum();
    let all: Vec<GenTrace> = first.into_iter().chain(second).collect();
    let expected = truth(&all).links;
    let group = format!("{topic}-group");
    let deadline = Instant::now() + Duration::from_secs(120);
    let query = [
        ("endTs", now_ms().to_string()),
        ("lookback", "86400000".to_string()),
    ];
    let got = loop {
        let committed =
            common::kafka::ensure_committed_to_end(&common::kafka_brokers(), &topic, &group, 6);
        let got = dependencies(&jaeger.api, &query).await?;
        let covered = expected
            .iter()
            .all(|(k, n)| got.get(k).is_some_and(|g| g >= n));
        if committed.is_ok() && covered {
            break got;
        }
        if Instant::now() > deadline {
            bail!(
                "after the crash: committed {committed:?}; Jaeger returns {got:?}, generated {expected:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    ensure!(
        got.len() == expected.len(),
        "links nobody generated: {got:?}"
    );
    let total: u64 = expected.values().sum();
    let extra: u64 = got.values().sum::<u64>() - total;
    common::report(&format!(
        "after a crash: {total} generated calls, {extra} counted twice \
         (the crashed member had decided {decided_before} traces)"
    ));
    ensure!(
        extra <= bound,
        "{extra} of {total} calls counted twice: more than the crashed member decided ({bound})"
    );
    jaeger.finish();
    common::es::Es::new(&common::es_url())?
        .delete_run(&format!("{prefix}-"))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
