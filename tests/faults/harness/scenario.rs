//! One scenario: its topics, group, indices and files, the config its
//! instances run with (the fixed part, and the `Tuning` a scenario varies),
//! spawning instances, and waiting on the group as a whole.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;

use tailsift::decode::Encoding;
use tailsift::loadgen::TraceTruth;

use super::instance::{Instance, metric_sum};
use super::memory::RssMonitor;
use super::results::Row;
use super::stack::Env;
use super::verify::{DeadLetterMsg, Verdict, es_client, read_topic, verify};
use super::{MAX_MESSAGE_KIB, PARTITIONS, POLICIES, log};
use crate::common;

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
            http: common::http_client()?,
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
