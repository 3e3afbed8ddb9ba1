//! The fault-injection harness: tailsift instances as child processes, a
//! steady (or bursting) load with ground truth, memory sampling, stack
//! control, and the checks against Elasticsearch and the dead-letter topic.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::{Elasticsearch, SearchParts};
use futures::FutureExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use tailsift::config::EncodingSetting;
use tailsift::decode::{Decoder, Encoding};
use tailsift::loadgen::generator::{GenSpan, GenTrace, Profile, TraceGenerator};
use tailsift::loadgen::{self, TraceTruth, encode};
use tailsift::model::TraceId;
use tailsift::model::{ScanBatch, SpanId};
use tailsift::policy::probabilistic_hash;

use crate::common;

pub const PARTITIONS: i32 = 6;
/// `kafka.max_message_bytes` of every scenario, in KiB: small, so that an
/// oversized message is cheap to make.
pub const MAX_MESSAGE_KIB: usize = 64;
/// `probabilistic` share of the test policies, in percent.
pub const PERCENT: f64 = 10.0;
const POLICIES: &str = r#"
    - name: errors
      type: status_code
      status_code: {status_codes: [ERROR]}
    - name: baseline
      type: probabilistic
      probabilistic: {sampling_percentage: 10}
"#;

/// Share of generated traces with an error span. High on purpose: a trace
/// with an error that the probabilistic policy does not pick is exactly the
/// one a partial view of the trace (a decision from half its spans) gets
/// wrong, so it must be common for the suite to catch such mistakes.
pub const ERROR_RATE: f64 = 0.25;

/// Serializes scenarios: they share two cores and must not disturb each
/// other's timing (libtest runs tests of one binary in parallel).
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn log(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[faults {}] {}", clock(), line.as_ref());
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

// ------------------------------------------------------------------ environment ----

/// What the suite talks to and where it keeps its files.
#[derive(Clone)]
pub struct Env {
    pub brokers: String,
    pub es_url: String,
    /// The tailsift binary (a private copy when run by scripts/faults.sh, so
    /// a build in another worktree sharing the target dir cannot swap it).
    pub bin: PathBuf,
    /// The stack the outage scenarios may stop and start (FAULTS_STACK_DIR).
    pub stack_dir: Option<PathBuf>,
    pub work: PathBuf,
    pub results: Option<PathBuf>,
}

impl Env {
    pub fn from_env() -> Self {
        let bin = std::env::var_os("FAULTS_TAILSIFT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tailsift")));
        let work = std::env::var_os("FAULTS_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("tailsift-faults"));
        Self {
            brokers: common::kafka_brokers(),
            es_url: common::es_url(),
            bin,
            stack_dir: std::env::var_os("FAULTS_STACK_DIR").map(PathBuf::from),
            work,
            results: std::env::var_os("FAULTS_RESULTS").map(PathBuf::from),
        }
    }

    /// `deploy/local/stack.sh <action> <service>` on the suite's own stack.
    /// Refuses without FAULTS_STACK_DIR: stopping a stack other engineers'
    /// tests use would break them.
    pub async fn stack(&self, action: &str, service: &str) -> Result<Duration> {
        let dir = self.stack_dir.clone().ok_or_else(|| {
            anyhow!(
                "FAULTS_STACK_DIR is not set: the outage scenarios stop and start services and \
                 only do that on a stack of their own; run them with scripts/faults.sh"
            )
        })?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack.sh");
        let (action, service) = (action.to_string(), service.to_string());
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .arg(&action)
                .arg(&service)
                .env("TAILSIFT_STACK_DIR", dir)
                .output()
        })
        .await??;
        ensure!(
            out.status.success(),
            "stack.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed())
    }

    /// Stops `service` of the suite's stack; the guard starts it again if
    /// the scenario fails before it does (so the next scenario has a stack).
    pub async fn stop_service(&self, service: &'static str) -> Result<Stopped> {
        self.stack("stop", service).await?;
        Ok(Stopped {
            env: self.clone(),
            service,
            restarted: false,
        })
    }
}

/// A service of the suite's stack that is stopped.
pub struct Stopped {
    env: Env,
    service: &'static str,
    restarted: bool,
}

impl Stopped {
    pub async fn start(mut self) -> Result<Duration> {
        self.restarted = true;
        self.env.stack("start", self.service).await
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.restarted {
            return;
        }
        log(format!(
            "scenario failed with {} stopped: starting it again",
            self.service
        ));
        if let Some(dir) = &self.env.stack_dir {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack.sh");
            let _ = Command::new("bash")
                .arg(script)
                .args(["start", self.service])
                .env("TAILSIFT_STACK_DIR", dir)
                .status();
        }
    }
}

// ------------------------------------------------------------------ scenario -------

/// Settings a scenario varies; the rest of the config is fixed.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub decision_wait: &'static str,
    pub root_idle: &'static str,
    pub memory_limit_mib: u64,
    pub queue_bytes: Option<&'static str>,
    pub shutdown_timeout: &'static str,
    /// Consumer group session timeout; None: the shipped default.
    pub session_timeout_ms: Option<u32>,
    /// `kafka.group_protocol`; None: the shipped default.
    pub group_protocol: Option<&'static str>,
    /// Share of traces that get one more span this long after their end,
    /// past `decision_wait`: it must follow its trace's decision, in
    /// whichever process owns the partition by then.
    pub late_share: f64,
    pub late_after: Duration,
    /// `kafka.max_message_bytes`, in KiB.
    pub max_message_kib: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            decision_wait: "3s",
            root_idle: "500ms",
            memory_limit_mib: 256,
            queue_bytes: None,
            shutdown_timeout: "30s",
            session_timeout_ms: None,
            group_protocol: None,
            late_share: 0.3,
            late_after: Duration::from_secs(6),
            max_message_kib: MAX_MESSAGE_KIB,
        }
    }
}

/// One scenario's topic, dead-letter topic, group, index prefix and files.
pub struct Scenario {
    pub name: &'static str,
    pub env: Env,
    pub encoding: Encoding,
    pub topic: String,
    pub dlq: String,
    pub group: String,
    pub prefix: String,
    pub dir: PathBuf,
    pub tuning: Tuning,
    pub monitor: RssMonitor,
    started: Instant,
    spawned: u32,
    /// Counters of instances that are gone.
    gone: HashMap<Counter, f64>,
}

/// Counters the scenarios report, summed over instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Messages consumed (more than produced: the rest was replayed).
    Consumed,
    /// Traces decided early for memory.
    MemoryDecisions,
    /// Spans that arrived after their trace was decided and followed it.
    LateSpans,
    /// Spans of rootless traces decided with no remembered decision: late
    /// spans whose decision was not found.
    LateUnfound,
}

const COUNTERS: [Counter; 4] = [
    Counter::Consumed,
    Counter::MemoryDecisions,
    Counter::LateSpans,
    Counter::LateUnfound,
];

impl Counter {
    fn read(self, m: &str) -> f64 {
        match self {
            Self::Consumed => metric_sum(m, "tailsift_consumed_messages_total", &[]),
            Self::MemoryDecisions => metric_sum(
                m,
                "tailsift_decision_reasons_total",
                &[("reason", "memory")],
            ),
            Self::LateSpans => {
                metric_sum(m, "tailsift_late_spans_total", &[])
                    - metric_sum(m, "tailsift_late_spans_total", &[("found", "none")])
            }
            Self::LateUnfound => metric_sum(m, "tailsift_late_spans_total", &[("found", "none")]),
        }
    }
}

impl Scenario {
    pub async fn new(name: &'static str, encoding: Encoding, tuning: Tuning) -> Result<Self> {
        let env = Env::from_env();
        let unique = common::unique_name(&format!("faults-{}", name.replace('_', "-")));
        let dir = env.work.join(&unique);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let s = Self {
            name,
            encoding,
            topic: unique.clone(),
            dlq: format!("{unique}-dlq"),
            group: format!("{unique}-group"),
            prefix: unique,
            dir,
            tuning,
            monitor: RssMonitor::start(),
            started: Instant::now(),
            spawned: 0,
            gone: HashMap::new(),
            env,
        };
        common::kafka::create_topic(&s.env.brokers, &s.topic, PARTITIONS).await?;
        common::kafka::create_topic(&s.env.brokers, &s.dlq, 1).await?;
        log(format!(
            "scenario {}: topic {} ({PARTITIONS} partitions, {:?}), DLQ {}, indices {}-jaeger-span-*, \
             Kafka {}, Elasticsearch {}, binary {}, files in {}",
            s.name,
            s.topic,
            s.encoding,
            s.dlq,
            s.prefix,
            s.env.brokers,
            s.env.es_url,
            s.env.bin.display(),
            s.dir.display()
        ));
        Ok(s)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn config_yaml(&self, t: &Tuning, metrics: SocketAddr) -> String {
        let encoding = match self.encoding {
            Encoding::OtlpProto => "otlp_proto",
            Encoding::OtlpJson => "otlp_json",
            Encoding::JaegerProto => "jaeger_proto",
            Encoding::JaegerJson => "jaeger_json",
        };
        let queue = t
            .queue_bytes
            .map(|q| format!("  queue_bytes: {q}\n"))
            .unwrap_or_default();
        let session = t
            .session_timeout_ms
            .map(|ms| format!("  session_timeout: {ms}ms\n"))
            .unwrap_or_default();
        let protocol = t
            .group_protocol
            .map(|p| format!("  group_protocol: {p}\n"))
            .unwrap_or_default();
        format!(
            "kafka:\n  brokers: {brokers}\n  topic: {topic}\n  group_id: {group}\n  encoding: {encoding}\n  \
             dead_letter_topic: {dlq}\n  max_message_bytes: {max_message_kib}KiB\n{session}{protocol}\
             sampling:\n  decision_wait: {wait}\n  root_idle: {idle}\n  policies:{POLICIES}\
             elasticsearch:\n  urls: [\"{es}\"]\n  index_prefix: {prefix}\n  replicas: 0\n{queue}  bulk:\n    max_backoff: 5s\n\
             memory:\n  limit: {limit}MiB\n\
             metrics:\n  listen: {metrics}\n\
             logging:\n  level: info\n\
             shutdown:\n  timeout: {shutdown}\n",
            brokers = self.env.brokers,
            topic = self.topic,
            group = self.group,
            dlq = self.dlq,
            wait = t.decision_wait,
            idle = t.root_idle,
            es = self.env.es_url,
            prefix = self.prefix,
            limit = t.memory_limit_mib,
            shutdown = t.shutdown_timeout,
            max_message_kib = t.max_message_kib,
        )
    }

    /// Starts one more `tailsift run` in the group.
    pub fn spawn(&mut self) -> Result<Instance> {
        let t = self.tuning.clone();
        self.spawn_with(&t)
    }

    /// Starts one more `tailsift run` in the group, tuned differently.
    pub fn spawn_with(&mut self, t: &Tuning) -> Result<Instance> {
        let metrics = free_port()?;
        self.spawn_at(t, metrics)
    }

    /// Starts `tailsift run` again in the place of one that is gone: same
    /// metrics port, hence the same default `group.instance.id` — what a
    /// restarted pod or service is.
    pub fn respawn(&mut self, metrics: SocketAddr) -> Result<Instance> {
        let t = self.tuning.clone();
        self.spawn_at(&t, metrics)
    }

    fn spawn_at(&mut self, t: &Tuning, metrics: SocketAddr) -> Result<Instance> {
        self.spawned += 1;
        let id = self.spawned;
        let config = self.dir.join(format!("tailsift-{id}.yaml"));
        std::fs::write(&config, self.config_yaml(t, metrics))?;
        let log_path = self.dir.join(format!("tailsift-{id}.log"));
        let log_file = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&self.env.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // TAILSIFT_* variables are config overrides for the service: keep the
        // caller's (e.g. the stack script's TAILSIFT_STACK_DIR) away from it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TAILSIFT_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.env.bin.display()))?;
        let pid = child.id();
        self.monitor.watch(pid, format!("tailsift-{id}"));
        log(format!(
            "started tailsift-{id} (pid {pid}, metrics {metrics}, log {})",
            log_path.display()
        ));
        Ok(Instance {
            id,
            pid,
            child,
            metrics,
            log: log_path,
        })
    }

    /// Remembers an instance's counters before it goes away.
    pub async fn account(&mut self, i: &Instance) {
        if let Ok(m) = i.metrics().await {
            for c in COUNTERS {
                *self.gone.entry(c).or_default() += c.read(&m);
            }
        }
    }

    /// A counter summed over every instance, live or gone (gone ones up to
    /// their last scrape before they went away).
    pub async fn total(&self, c: Counter, live: &[&Instance]) -> f64 {
        let mut n = self.gone.get(&c).copied().unwrap_or(0.0);
        for i in live {
            if let Ok(m) = i.metrics().await {
                n += c.read(&m);
            }
        }
        n
    }

    /// Waits until the live instances own every partition between them, and
    /// each of them owns `min_each` at least.
    pub async fn wait_assigned(
        &self,
        live: &[&Instance],
        min_each: usize,
        within: Duration,
    ) -> Result<Vec<usize>> {
        let deadline = Instant::now() + within;
        loop {
            let mut owned = Vec::new();
            for i in live {
                owned.push(i.assigned().await.unwrap_or(0));
            }
            if owned.iter().sum::<usize>() == PARTITIONS as usize
                && owned.iter().all(|n| *n >= min_each)
            {
                return Ok(owned);
            }
            if Instant::now() > deadline {
                let mut msg =
                    format!("partitions never settled within {within:?}: owned {owned:?}");
                for i in live {
                    msg.push_str(&i.log_tail(15));
                }
                bail!(msg);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the group committed every partition to its end offset:
    /// every message resolved (dropped, written and acknowledged, or
    /// dead-lettered).
    pub async fn wait_drained(&self, live: &[&Instance], within: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < within {
            let (b, t, g) = (
                self.env.brokers.clone(),
                self.topic.clone(),
                self.group.clone(),
            );
            let offsets = tokio::task::spawn_blocking(move || {
                common::kafka::committed_vs_end(&b, &t, &g, PARTITIONS)
            })
            .await??;
            if offsets.len() == PARTITIONS as usize && offsets.iter().all(|(c, e)| c == e) {
                log(format!(
                    "lag drained in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(started.elapsed());
            }
            last = offsets;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut msg = format!(
            "lag did not drain within {within:?}; (committed, end) per partition: {last:?}"
        );
        for i in live {
            msg.push_str(&i.log_tail(20));
        }
        bail!(msg)
    }

    /// Checks Elasticsearch against the ground truth.
    pub async fn verify(&self, truth: &[TraceTruth]) -> Result<Verdict> {
        verify(&self.env.es_url, &self.prefix, truth).await
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterMsg>> {
        let (b, t) = (self.env.brokers.clone(), self.dlq.clone());
        tokio::task::spawn_blocking(move || read_topic(&b, &t)).await?
    }

    /// Deletes the scenario's topics and indices (after it passed; a failed
    /// one keeps them for a look).
    pub async fn cleanup(&self) -> Result<()> {
        let es = es_client(&self.env.es_url)?;
        let pattern = format!("{}-jaeger-*", self.prefix);
        es.indices()
            .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[
                &pattern,
            ]))
            .send()
            .await?;
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &self.env.brokers)
                .create()?;
        let opts = rdkafka::admin::AdminOptions::new();
        admin
            .delete_topics(&[self.topic.as_str(), self.dlq.as_str()], &opts)
            .await?;
        Ok(())
    }

    /// Prints the scenario's row and appends it to FAULTS_RESULTS.
    pub fn record(&self, row: &Row) -> Result<()> {
        log(format!("RESULT {}", serde_json::to_string(row)?));
        if let Some(path) = &self.env.results {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{}", row.tsv())?;
        }
        Ok(())
    }
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

// ------------------------------------------------------------------ instance -------

/// One `tailsift run` child process.
pub struct Instance {
    pub id: u32,
    pub pid: u32,
    child: Child,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl Instance {
    pub fn name(&self) -> String {
        format!("tailsift-{}", self.id)
    }

    /// `GET path` on the metrics listener: status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let fut = async {
            let mut s = tokio::net::TcpStream::connect(self.metrics).await?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.metrics
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            anyhow::Ok(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(3), fut)
            .await
            .map_err(|_| anyhow!("{}: GET {path} timed out", self.name()))??;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("{}: bad HTTP response to {path}: {head}", self.name()))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }

    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.get("/metrics").await?;
        ensure!(status == 200, "{}: /metrics answered {status}", self.name());
        Ok(body)
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(metric_sum(&self.metrics().await?, name, labels))
    }

    pub async fn assigned(&self) -> Result<usize> {
        Ok(self.metric("tailsift_assigned_partitions", &[]).await? as usize)
    }

    /// `/readyz`: Ok(true) ready, Ok(false) not ready.
    pub async fn ready(&self) -> Result<(bool, String)> {
        let (status, body) = self.get("/readyz").await?;
        Ok((status == 200, body.trim().to_string()))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, no chance to commit or flush.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        log(format!("SIGKILLed {} (pid {})", self.name(), self.pid));
        Ok(())
    }

    /// SIGTERM and wait for the exit, at most `within`.
    pub async fn terminate(mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        ensure!(status.success(), "kill -TERM {} failed", self.pid);
        loop {
            if let Some(s) = self.child.try_wait()? {
                log(format!(
                    "{} (pid {}) exited after SIGTERM in {:.1}s: {s}",
                    self.name(),
                    self.pid,
                    started.elapsed().as_secs_f64()
                ));
                return Ok((s, started.elapsed()));
            }
            if started.elapsed() > within {
                let tail = self.log_tail(30);
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not exit within {within:?} of SIGTERM{tail}",
                    self.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One line on the instance's memory and buffers, for the log.
    pub async fn snapshot(&self) -> String {
        let rss = vm_rss_hwm(self.pid).map_or(0, |(rss, _)| rss);
        let Ok(m) = self.metrics().await else {
            return format!("{}: VmRSS {:.1} MiB", self.name(), rss as f64 / 1024.0);
        };
        let mib = |name| metric_sum(&m, name, &[]) / 1048576.0;
        format!(
            "{}: VmRSS {:.1} MiB, buffered {:.1} MiB ({} traces), sink queue {:.1} MiB, {} paused, \
             lag {}, memory decisions {}",
            self.name(),
            rss as f64 / 1024.0,
            mib("tailsift_buffered_bytes"),
            metric_sum(&m, "tailsift_buffered_traces", &[]),
            mib("tailsift_sink_queue_bytes"),
            metric_sum(&m, "tailsift_paused_partitions", &[]).abs(),
            metric_sum(&m, "tailsift_consumer_lag_messages", &[]),
            metric_sum(
                &m,
                "tailsift_decision_reasons_total",
                &[("reason", "memory")]
            ),
        )
    }

    /// Waits `d`, logging a snapshot every 5 s and failing if it died.
    pub async fn watch(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            ensure!(self.alive(), "{} died{}", self.name(), self.log_tail(30));
            log(format!("  {}", self.snapshot().await));
            tokio::time::sleep((until - Instant::now()).min(Duration::from_secs(5))).await;
        }
        Ok(())
    }

    /// The last `n` lines of the instance's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "\n--- {} ({}) last {n} lines:\n{}",
            self.name(),
            self.log.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sum of every series of `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum::<f64>()
        + 0.0 // no "-0" from gauges that went up and down
}

// ------------------------------------------------------------------ memory ---------

/// Samples VmRSS and VmHWM of watched processes every 100 ms on a thread of
/// its own, so a busy test task cannot miss a peak.
pub struct RssMonitor {
    state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct MonitorState {
    watched: HashMap<u32, String>,
    /// Per process name: highest VmRSS sampled and last VmHWM seen, KiB.
    peaks: BTreeMap<String, (u64, u64)>,
    /// Highest VmRSS sampled within the current window (see `window`).
    window_peak: u64,
}

impl RssMonitor {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                {
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    let watched: Vec<(u32, String)> =
                        g.watched.iter().map(|(p, n)| (*p, n.clone())).collect();
                    for (pid, name) in watched {
                        let Some((rss, hwm)) = vm_rss_hwm(pid) else {
                            continue;
                        };
                        g.window_peak = g.window_peak.max(rss);
                        let e = g.peaks.entry(name).or_default();
                        e.0 = e.0.max(rss);
                        e.1 = e.1.max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { state, stop }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(&self, pid: u32, name: String) {
        self.lock().watched.insert(pid, name);
    }

    /// Restarts the window peak (e.g. at the start of an outage).
    pub fn reset_window(&self) {
        self.lock().window_peak = 0;
    }

    /// Highest VmRSS sampled since `reset_window`, KiB.
    pub fn window_peak_kib(&self) -> u64 {
        self.lock().window_peak
    }

    /// Highest of VmRSS sampled and VmHWM over every watched process, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.lock()
            .peaks
            .values()
            .map(|(r, h)| (*r).max(*h))
            .max()
            .unwrap_or(0)
    }

    pub fn peaks(&self) -> BTreeMap<String, (u64, u64)> {
        self.lock().peaks.clone()
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (VmRSS, VmHWM) in KiB from /proc/PID/status.
pub fn vm_rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ------------------------------------------------------------------ load -----------

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

// ------------------------------------------------------------------ checks ---------

/// Whether the test policies must keep a trace: an error, or the
/// probabilistic hash under the threshold (both deterministic on replay).
pub fn must_keep(t: &TraceTruth) -> bool {
    let threshold = (PERCENT / 100.0 * u64::MAX as f64) as u64;
    let id = TraceId::from_hex(&t.trace_id).expect("ground truth trace id is hex");
    t.error || probabilistic_hash("default-hash-seed", &id) <= threshold
}

/// Elasticsearch against the ground truth.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verdict {
    pub traces: usize,
    pub must_keep: usize,
    pub spans_checked: u64,
    pub docs: u64,
    /// Spans of must-keep traces missing from Elasticsearch.
    pub lost: u64,
    /// Documents beyond the first per (traceID, spanID).
    pub duplicated: u64,
    /// Traces in Elasticsearch no policy keeps (or not generated at all).
    pub unexpected_traces: usize,
    /// Must-keep traces with more distinct spans than generated.
    pub extra_spans: u64,
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected_traces == 0
            && self.extra_spans == 0
    }

    pub fn ensure(&self) -> Result<()> {
        ensure!(
            self.must_keep > 0,
            "no trace to check: the load produced nothing the policies keep"
        );
        ensure!(
            self.ok(),
            "{} lost spans, {} duplicated documents, {} unexpected traces, {} extra spans \
             ({} must-keep traces, {} spans checked, {} docs); first problems:\n  {}",
            self.lost,
            self.duplicated,
            self.unexpected_traces,
            self.extra_spans,
            self.must_keep,
            self.spans_checked,
            self.docs,
            self.examples.join("\n  ")
        );
        Ok(())
    }
}

pub fn es_client(url: &str) -> Result<Elasticsearch> {
    Ok(Elasticsearch::new(Transport::single_node(url)?))
}

/// Every (traceID, spanID) with its document count, exactly (composite
/// aggregation, paged), from `<prefix>-jaeger-span-*`.
pub async fn span_doc_counts(
    es_url: &str,
    prefix: &str,
) -> Result<HashMap<String, HashMap<String, u64>>> {
    let es = es_client(es_url)?;
    let pattern = format!("{prefix}-jaeger-span-*");
    let r = es
        .indices()
        .refresh(IndicesRefreshParts::Index(&[&pattern]))
        .send()
        .await?;
    ensure!(
        r.status_code().is_success(),
        "refresh {pattern}: {}",
        r.status_code()
    );
    let mut out: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut composite = json!({
            "size": 5000,
            "sources": [
                {"t": {"terms": {"field": "traceID"}}},
                {"s": {"terms": {"field": "spanID"}}}
            ]
        });
        if let Some(a) = &after {
            composite["after"] = a.clone();
        }
        let body =
            json!({"size": 0, "track_total_hits": true, "aggs": {"ids": {"composite": composite}}});
        let resp = es
            .search(SearchParts::Index(&[&pattern]))
            .body(body)
            .send()
            .await?;
        let status = resp.status_code();
        let v: Value = resp.json().await?;
        ensure!(status.is_success(), "search {pattern}: {status}: {v}");
        let agg = &v["aggregations"]["ids"];
        let buckets = agg["buckets"].as_array().cloned().unwrap_or_default();
        for b in &buckets {
            let t = b["key"]["t"].as_str().unwrap_or_default().to_string();
            let s = b["key"]["s"].as_str().unwrap_or_default().to_string();
            let n = b["doc_count"].as_u64().unwrap_or(0);
            *out.entry(t).or_default().entry(s).or_default() += n;
        }
        match agg.get("after_key") {
            Some(a) if !buckets.is_empty() => after = Some(a.clone()),
            _ => break,
        }
    }
    Ok(out)
}

pub async fn verify(es_url: &str, prefix: &str, truth: &[TraceTruth]) -> Result<Verdict> {
    let found = span_doc_counts(es_url, prefix).await?;
    let mut v = Verdict {
        traces: truth.len(),
        ..Default::default()
    };
    let mut known = HashSet::new();
    for t in truth {
        known.insert(t.trace_id.as_str());
        let spans = found.get(&t.trace_id);
        let distinct = spans.map_or(0, |s| s.len() as u64);
        if must_keep(t) {
            v.must_keep += 1;
            v.spans_checked += t.spans as u64;
            let want = t.spans as u64;
            if distinct < want {
                v.lost += want - distinct;
                if v.examples.len() < 10 {
                    v.examples.push(format!(
                        "trace {} (error={}): {distinct} of {want} spans in Elasticsearch",
                        t.trace_id, t.error
                    ));
                }
            } else if distinct > want {
                v.extra_spans += distinct - want;
            }
        } else if distinct > 0 {
            v.unexpected_traces += 1;
            if v.examples.len() < 10 {
                v.examples.push(format!(
                    "trace {} kept but no policy selects it",
                    t.trace_id
                ));
            }
        }
    }
    for (trace, spans) in &found {
        for (span, n) in spans {
            v.docs += n;
            if *n > 1 {
                v.duplicated += n - 1;
                if v.examples.len() < 10 {
                    v.examples
                        .push(format!("trace {trace} span {span}: {n} documents"));
                }
            }
        }
        if !known.contains(trace.as_str()) {
            v.unexpected_traces += 1;
            if v.examples.len() < 10 {
                v.examples.push(format!(
                    "trace {trace} in Elasticsearch was never generated"
                ));
            }
        }
    }
    log(format!(
        "verified: {} traces generated, {} must be kept ({} spans); {} docs; lost {}, duplicated {}, \
         unexpected traces {}, extra spans {}",
        v.traces,
        v.must_keep,
        v.spans_checked,
        v.docs,
        v.lost,
        v.duplicated,
        v.unexpected_traces,
        v.extra_spans
    ));
    Ok(v)
}

/// A message of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterMsg {
    pub key: Option<String>,
    pub len: usize,
    pub headers: HashMap<String, String>,
}

impl DeadLetterMsg {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Reads a whole topic from the beginning to its current end.
pub fn read_topic(brokers: &str, topic: &str) -> Result<Vec<DeadLetterMsg>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::unique_name("faults-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = HashMap::new();
    for p in &partitions {
        let (low, high) = c.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        remaining += high - low;
        ends.insert(*p, high);
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        ensure!(
            Instant::now() < deadline,
            "reading {topic}: {remaining} messages never arrived"
        );
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        if m.offset() >= ends[&m.partition()] {
            continue;
        }
        remaining -= 1;
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers.insert(
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push(DeadLetterMsg {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            len: m.payload().map_or(0, <[u8]>::len),
            headers,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------ results --------

/// One line of the results table.
#[derive(Debug, Default, serde::Serialize)]
pub struct Row {
    pub scenario: String,
    pub cycles: u32,
    pub spans_checked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub peak_rss_mib: f64,
    pub memory_limit_mib: u64,
    pub early_decisions: u64,
    pub dlq: u64,
    pub secs: f64,
    pub note: String,
}

impl Row {
    pub fn new(s: &Scenario, cycles: u32, v: &Verdict) -> Self {
        Self {
            scenario: s.name.to_string(),
            cycles,
            spans_checked: v.spans_checked,
            lost: v.lost,
            duplicated: v.duplicated,
            peak_rss_mib: (s.monitor.peak_kib() as f64 / 1024.0 * 10.0).round() / 10.0,
            memory_limit_mib: s.tuning.memory_limit_mib,
            secs: s.elapsed().as_secs_f64().round(),
            ..Default::default()
        }
    }
}

impl Row {
    /// One tab-separated line (scripts/faults.sh prints the table).
    pub fn tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{}\t{}\t{:.0}\t{}",
            self.scenario,
            self.cycles,
            self.spans_checked,
            self.lost,
            self.duplicated,
            self.peak_rss_mib,
            self.memory_limit_mib,
            self.early_decisions,
            self.dlq,
            self.secs,
            self.note
        )
    }
}

/// Formats peaks for the log.
pub fn describe_peaks(m: &RssMonitor) -> String {
    let mut out = String::new();
    for (name, (rss, hwm)) in m.peaks() {
        let _ = write!(
            out,
            "{name}: max VmRSS {:.1} MiB, VmHWM {:.1} MiB; ",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    out
}
