//! The whole benchmark: a fresh topic loaded by `tailsift loadgen`, then
//! every contender in turn (never two at once), each reading the topic from
//! offset 0 to the end as a new consumer group.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde::de::DeserializeOwned;

use crate::es::Es;
use crate::prom::Metrics;
use crate::report::{Load, Memory, Results, SinkRun, Throughput};
use crate::watch::{self, Contender, Progress};
use crate::{kafka, machine, report};

const PARTITIONS: i32 = 6;
/// Documents indexed to warm Elasticsearch up before its measured runs.
const WARMUP_SPANS: u64 = 200_000;

/// How long traces are buffered, and the memory limit that allows it.
struct Window {
    decision_wait: &'static str,
    root_idle: &'static str,
    memory_limit: &'static str,
}

/// Throughput and sink runs: a short wait, so a run ends soon after the
/// topic is consumed; the same wait for tailsift and the Collector.
const SHORT: Window = Window {
    decision_wait: "1s",
    root_idle: "2s",
    memory_limit: "1GiB",
};
/// Memory runs hold every trace: nothing is decided (or shed) while they run.
const HELD: Window = Window {
    decision_wait: "1h",
    root_idle: "1h",
    memory_limit: "64GiB",
};

const TAILSIFT_CONFIG: &str = include_str!("configs/tailsift.yaml");
const OTELCOL_CONFIG: &str = include_str!("configs/otelcol.yaml");
const POLICIES: &str = include_str!("configs/policies-default.yaml");
const KEEP_10: &str = include_str!("configs/policies-keep10.yaml");
const KEEP_ALL: &str = include_str!("configs/policies-keep100.yaml");

#[derive(clap::Args)]
pub struct Args {
    /// Release build of the tailsift binary.
    #[arg(long)]
    pub tailsift: PathBuf,
    /// The Collector built by deploy/local/otelcol.sh; (c) is skipped without it.
    #[arg(long)]
    pub otelcol: Option<PathBuf>,
    #[arg(long)]
    pub brokers: String,
    /// Elasticsearch for (d) and (e); both are skipped without it.
    #[arg(long)]
    pub es_url: Option<String>,
    /// Traces to load (loadgen averages about 8 spans per trace).
    #[arg(long, required_unless_present = "topic")]
    pub traces: Option<u64>,
    /// Directory for configs, logs and results.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Markdown file in which this label's section is (re)written.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Names the run in the report ("quick", "full").
    #[arg(long, default_value = "full")]
    pub label: String,
    /// Version of the Kafka broker, for the machine description.
    #[arg(long, default_value = "unknown")]
    pub kafka_version: String,
    /// Version of the Collector, for the machine description.
    #[arg(long, default_value = "-")]
    pub collector_version: String,
    /// Keep the topic and the Elasticsearch indices afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Runs of each contender (the report takes medians); memory runs once.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Reuse this loaded topic instead of loading a fresh one (profiling).
    #[arg(long, conflicts_with = "traces")]
    pub topic: Option<String>,
    /// Only these contenders: scan, null, memory, otelcol, otelcol-memory,
    /// bulk, es100, es10 (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

struct Run {
    args: Args,
    runtime: tokio::runtime::Runtime,
    /// Unique per run: names the topic, groups and index prefixes.
    id: String,
    topic: String,
    load: Load,
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let id = format!(
        "e2e{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
    );
    let mut run = Run {
        topic: args
            .topic
            .clone()
            .unwrap_or_else(|| format!("tailsift-bench-{id}")),
        runtime: tokio::runtime::Runtime::new()?,
        id,
        args,
        load: Load::default(),
    };
    let results = run.all();
    if !run.args.keep && run.args.topic.is_none() {
        let _ = run
            .runtime
            .block_on(kafka::delete_topic(&run.args.brokers, &run.topic));
    }
    let results = results?;
    std::fs::write(
        run.args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    println!("{}", report::text(&results));
    if let Some(path) = &run.args.markdown {
        report::write_markdown(path, &results)?;
        step(&format!("wrote {}", path.display()));
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("[e2e {}] {what}", chrono::Local::now().format("%H:%M:%S"));
}

impl Run {
    fn all(&mut self) -> Result<Results> {
        let mut r = Results {
            label: self.args.label.clone(),
            ..Default::default()
        };
        match self.args.traces {
            Some(traces) => self.load_topic(traces)?,
            None => self.measure_topic()?,
        }
        r.load = self.load.clone();
        if self.wanted("scan") {
            r.scan = self.repeat(|run, i| run.scan(&format!("scan{i}")))?;
        }
        if self.wanted("null") {
            let name = |i| format!("null{i}");
            r.tailsift = self.repeat(|run, i| run.tailsift_throughput(&name(i), true))?;
        }
        if self.wanted("null-off") {
            let name = |i| format!("nulloff{i}");
            r.tailsift_plain = self.repeat(|run, i| run.tailsift_throughput(&name(i), false))?;
        }
        if self.wanted("memory") {
            r.tailsift_memory = Some(self.tailsift_memory()?);
        }
        if let Some(otelcol) = self.args.otelcol.clone() {
            if self.wanted("otelcol") {
                let name = |i| format!("otelcol{i}");
                r.otelcol = self.repeat(|run, i| run.otelcol_throughput(&otelcol, &name(i)))?;
            }
            if self.wanted("otelcol-memory") {
                r.otelcol_memory = Some(self.otelcol_memory(&otelcol)?);
            }
        }
        if let Some(url) = self.args.es_url.clone() {
            self.elasticsearch(&Es::new(&url)?, &mut r)?;
        }
        let es_version = match &self.args.es_url {
            Some(url) => Some(self.runtime.block_on(Es::new(url)?.version())?),
            None => None,
        };
        r.machine = machine::describe(
            &self.args.collector_version,
            &self.args.kafka_version,
            es_version,
        );
        Ok(r)
    }

    /// Bulk loader and sink runs alternate, after a warm-up of the node:
    /// a cold JVM indexes at a fraction of its speed, and the machine is
    /// shared, so neither side should get all the quiet (or busy) minutes.
    fn elasticsearch(&self, es: &Es, r: &mut Results) -> Result<()> {
        let (bulk, all) = (self.wanted("bulk"), self.wanted("es100"));
        if bulk || all {
            self.bulk(es, "warmup", WARMUP_SPANS.min(self.load.spans))?;
        }
        for i in 1..=self.args.repeat.max(1) {
            if bulk {
                r.bulk
                    .push(self.bulk(es, &format!("bulk{i}"), self.load.spans)?);
            }
            if all {
                r.es_keep_all
                    .push(self.tailsift_es(es, &format!("es100-{i}"), KEEP_ALL)?);
            }
        }
        if self.wanted("es10") {
            r.es_keep_10 =
                self.repeat(|run, i| run.tailsift_es(es, &format!("es10-{i}"), KEEP_10))?;
        }
        Ok(())
    }

    fn wanted(&self, contender: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|c| c == contender)
    }

    /// `repeat` runs of one contender, numbered from 1.
    fn repeat<T>(&self, mut f: impl FnMut(&Self, usize) -> Result<T>) -> Result<Vec<T>> {
        (1..=self.args.repeat.max(1)).map(|i| f(self, i)).collect()
    }

    fn load_topic(&mut self, traces: u64) -> Result<()> {
        let brokers = &self.args.brokers;
        step(&format!(
            "creating topic {} ({PARTITIONS} partitions)",
            self.topic
        ));
        self.runtime
            .block_on(kafka::create_topic(brokers, &self.topic, PARTITIONS))?;
        step(&format!("loading {traces} traces with tailsift loadgen"));
        let traces = traces.to_string();
        let summary: serde_json::Value = self.child_json(
            &self.args.tailsift,
            &[
                "loadgen",
                "--brokers",
                brokers,
                "--topic",
                &self.topic,
                "--rate",
                "0",
            ]
            .into_iter()
            .chain(["--traces", &traces, "--json"])
            .map(String::from)
            .collect::<Vec<_>>(),
        )?;
        let field = |k: &str| summary[k].as_u64().with_context(|| format!("loadgen {k}"));
        self.load = Load {
            traces: field("traces")?,
            spans: field("spans")?,
            messages: kafka::message_count(brokers, &self.topic)? as u64,
            seconds: summary["elapsed_secs"].as_f64().unwrap_or(0.0),
        };
        if field("failed_messages")? > 0 {
            bail!("loadgen failed to produce some messages: {summary}");
        }
        step(&format!(
            "loaded {} spans in {} messages",
            self.load.spans, self.load.messages
        ));
        Ok(())
    }

    /// An existing topic: what it holds, from one scan.
    fn measure_topic(&mut self) -> Result<()> {
        let scan = self.scan("measure")?;
        self.load = Load {
            traces: scan.traces,
            spans: scan.spans,
            messages: scan.messages,
            seconds: 0.0,
        };
        step(&format!(
            "topic {} holds {} spans of {} traces",
            self.topic, scan.spans, scan.traces
        ));
        Ok(())
    }

    /// Runs `program args` to completion and parses its stdout as JSON.
    fn child_json<T: DeserializeOwned>(&self, program: &Path, args: &[String]) -> Result<T> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                program.display(),
                args.join(" "),
                out.status
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{} printed no JSON", program.display()))
    }

    fn scan(&self, name: &str) -> Result<crate::scan::ScanResult> {
        step(&format!("(a) bare consume + scan loop [{name}]"));
        let (config, _) = self.tailsift_config(name, POLICIES, &SHORT)?;
        self.child_json(
            &std::env::current_exe()?,
            &["scan".into(), path_arg(&config)],
        )
    }

    /// `observers`: span metrics and dependency links on (the default) or off.
    fn tailsift_throughput(&self, name: &str, observers: bool) -> Result<Throughput> {
        step(&format!("(b) tailsift run --sink null [{name}]"));
        let (config, listen) = self.tailsift_config_with(name, POLICIES, &SHORT, observers)?;
        let (spans, traces) = (self.load.spans as f64, self.load.traces as f64);
        let observed = watch::observe(
            &self.tailsift(&config, name, listen, "null"),
            self.timeout(),
            Duration::ZERO,
            |m| {
                let consumed = m.sum(&["tailsift_consumed_spans_total"]);
                let decided = m.sum(&["tailsift_decisions_total"]);
                Progress {
                    started: consumed > 0.0,
                    consumed: consumed >= spans,
                    done: consumed >= spans && decided >= traces,
                    output: decided,
                }
            },
        )?;
        Ok(Throughput {
            spans: self.load.spans,
            seconds: observed.consume_seconds(),
            cpu_seconds: observed.stats.cpu_seconds,
            peak_rss: observed.stats.peak_rss,
        })
    }

    fn tailsift_memory(&self) -> Result<Memory> {
        step("(b) tailsift, every trace held in memory");
        let (config, listen) = self.tailsift_config("memory", POLICIES, &HELD)?;
        let spans = self.load.spans as f64;
        let observed = watch::observe(
            &self.tailsift(&config, "memory", listen, "null"),
            self.timeout(),
            Duration::from_secs(1),
            |m| {
                let consumed = m.sum(&["tailsift_consumed_spans_total"]);
                Progress {
                    started: consumed > 0.0,
                    consumed: consumed >= spans,
                    // The gauge is refreshed every second.
                    done: m.sum(&["tailsift_buffered_spans"]) >= spans,
                    output: 0.0,
                }
            },
        )?;
        Ok(Memory {
            buffered_spans: observed.metrics.sum(&["tailsift_buffered_spans"]) as u64,
            rss_delta: observed.stats.rss.saturating_sub(observed.baseline_rss),
            accounted_bytes: Some(observed.metrics.sum(&["tailsift_buffered_bytes"]) as u64),
            peak_rss: observed.stats.peak_rss,
        })
    }

    fn otelcol_throughput(&self, otelcol: &Path, name: &str) -> Result<Throughput> {
        step(&format!(
            "(c) OpenTelemetry Collector: kafka -> tail_sampling -> nop [{name}]"
        ));
        let (spans, traces) = (self.load.spans as f64, self.load.traces as f64);
        let contender = self.otelcol(otelcol, name, &SHORT)?;
        let observed = watch::observe(&contender, self.timeout(), Duration::ZERO, |m| {
            let accepted = otel_accepted(m);
            let decided = otel_decided(m);
            Progress {
                started: accepted > 0.0,
                consumed: accepted >= spans,
                done: accepted >= spans && decided >= traces,
                output: decided,
            }
        })?;
        Ok(Throughput {
            spans: self.load.spans,
            seconds: observed.consume_seconds(),
            cpu_seconds: observed.stats.cpu_seconds,
            peak_rss: observed.stats.peak_rss,
        })
    }

    fn otelcol_memory(&self, otelcol: &Path) -> Result<Memory> {
        step("(c) OpenTelemetry Collector, every trace held in memory");
        let spans = self.load.spans as f64;
        let contender = self.otelcol(otelcol, "otelcol-memory", &HELD)?;
        // Go collects garbage lazily: give it a few seconds to settle.
        let observed = watch::observe(&contender, self.timeout(), Duration::from_secs(3), |m| {
            let accepted = otel_accepted(m);
            Progress {
                started: accepted > 0.0,
                consumed: accepted >= spans,
                done: accepted >= spans,
                output: 0.0,
            }
        })?;
        Ok(Memory {
            buffered_spans: otel_accepted(&observed.metrics) as u64,
            rss_delta: observed.stats.rss.saturating_sub(observed.baseline_rss),
            accounted_bytes: None,
            peak_rss: observed.stats.peak_rss,
        })
    }

    fn bulk(&self, es: &Es, name: &str, max_spans: u64) -> Result<crate::bulk::BulkResult> {
        step(&format!("(e) bare bulk loader [{name}]"));
        let (config, _) = self.tailsift_config(name, KEEP_ALL, &SHORT)?;
        let args = [
            "bulk".into(),
            path_arg(&config),
            "--max-spans".into(),
            max_spans.to_string(),
        ];
        let result: crate::bulk::BulkResult = self.child_json(&std::env::current_exe()?, &args)?;
        self.check_and_remove(es, name, result.span_docs)?;
        Ok(result)
    }

    fn tailsift_es(&self, es: &Es, name: &str, policies: &str) -> Result<SinkRun> {
        step(&format!("(d) tailsift run, Elasticsearch sink [{name}]"));
        let (config, listen) = self.tailsift_config(name, policies, &SHORT)?;
        let messages = self.load.messages as f64;
        let spans = self.load.spans as f64;
        let observed = watch::observe(
            &self.tailsift(&config, name, listen, "elasticsearch"),
            self.timeout(),
            Duration::ZERO,
            |m| {
                let consumed = m.sum(&["tailsift_consumed_spans_total"]);
                Progress {
                    started: consumed > 0.0,
                    consumed: consumed >= spans,
                    // Every message resolved: each kept span acknowledged.
                    done: m.sum(&["tailsift_committed_offset"]) >= messages,
                    output: m.sum_where("tailsift_es_documents_total", "result=\"indexed\""),
                }
            },
        )?;
        let docs = self.runtime.block_on(es.span_docs(&self.prefix(name)))?;
        self.remove_indices(es, name)?;
        // Nothing can be written before the first decision: the decision
        // wait is latency, not throughput.
        let wait = humantime::parse_duration(SHORT.decision_wait)?;
        let writing = observed
            .last_output
            .saturating_duration_since(observed.first + wait);
        Ok(SinkRun {
            span_docs: docs,
            seconds: writing.as_secs_f64(),
            consume_seconds: observed.consume_seconds(),
            cpu_seconds: observed.stats.cpu_seconds,
            peak_rss: observed.stats.peak_rss,
        })
    }

    fn check_and_remove(&self, es: &Es, name: &str, expected: u64) -> Result<()> {
        let docs = self.runtime.block_on(es.span_docs(&self.prefix(name)))?;
        self.remove_indices(es, name)?;
        if docs != expected {
            bail!("{name}: {docs} span documents in Elasticsearch, expected {expected}");
        }
        Ok(())
    }

    fn remove_indices(&self, es: &Es, name: &str) -> Result<()> {
        if !self.args.keep {
            self.runtime.block_on(es.remove(&self.prefix(name)))?;
        }
        Ok(())
    }

    fn prefix(&self, name: &str) -> String {
        format!("{}-{name}-", self.id)
    }

    /// Generous: the slowest contender runs at a few thousand spans/s.
    fn timeout(&self) -> Duration {
        Duration::from_secs(120 + self.load.spans / 2_000)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.args.out.join(name)
    }

    /// Writes the tailsift config of contender `name`; returns it and the
    /// metrics address.
    fn tailsift_config(
        &self,
        name: &str,
        policies: &str,
        window: &Window,
    ) -> Result<(PathBuf, String)> {
        self.tailsift_config_with(name, policies, window, true)
    }

    fn tailsift_config_with(
        &self,
        name: &str,
        policies: &str,
        window: &Window,
        observers: bool,
    ) -> Result<(PathBuf, String)> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let text = fill(
            TAILSIFT_CONFIG,
            &[
                ("BROKERS", &self.args.brokers),
                ("TOPIC", &self.topic),
                ("GROUP", &format!("{}-{name}", self.id)),
                ("DECISION_WAIT", window.decision_wait),
                ("ROOT_IDLE", window.root_idle),
                ("POLICIES", policies),
                (
                    "ES_URL",
                    self.args
                        .es_url
                        .as_deref()
                        .unwrap_or("http://127.0.0.1:9200"),
                ),
                ("PREFIX", &self.prefix(name)),
                ("MEMORY_LIMIT", window.memory_limit),
                ("LISTEN", &listen),
                ("OBSERVERS", if observers { "true" } else { "false" }),
            ],
        );
        let path = self.file(&format!("tailsift-{name}.yaml"));
        std::fs::write(&path, text)?;
        Ok((path, listen))
    }

    fn tailsift(&self, config: &Path, name: &str, listen: String, sink: &str) -> Contender {
        Contender {
            program: self.args.tailsift.clone(),
            args: vec![
                "run".into(),
                "--config".into(),
                path_arg(config),
                "--sink".into(),
                sink.into(),
            ],
            metrics_addr: listen,
            log: self.file(&format!("tailsift-{name}.log")),
        }
    }

    fn otelcol(&self, program: &Path, name: &str, window: &Window) -> Result<Contender> {
        let port = free_port()?;
        let text = fill(
            OTELCOL_CONFIG,
            &[
                ("BROKERS", &self.args.brokers),
                ("TOPIC", &self.topic),
                ("GROUP", &format!("{}-{name}", self.id)),
                ("DECISION_WAIT", window.decision_wait),
                (
                    "NUM_TRACES",
                    &(self.load.traces * 2).max(50_000).to_string(),
                ),
                ("POLICIES", POLICIES),
                ("METRICS_PORT", &port.to_string()),
            ],
        );
        let config = self.file(&format!("{name}.yaml"));
        std::fs::write(&config, text)?;
        Ok(Contender {
            program: program.to_path_buf(),
            args: vec![format!("--config={}", config.display())],
            metrics_addr: format!("127.0.0.1:{port}"),
            log: self.file(&format!("{name}.log")),
        })
    }
}

/// Spans the Collector's kafka receiver handed to the pipeline.
fn otel_accepted(m: &Metrics) -> f64 {
    m.sum(&[
        "otelcol_receiver_accepted_spans_total",
        "otelcol_receiver_accepted_spans",
    ])
}

/// Traces the tail sampling processor decided (sampled or not).
fn otel_decided(m: &Metrics) -> f64 {
    m.sum(&[
        "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
        "otelcol_processor_tail_sampling_global_count_traces_sampled",
    ])
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Replaces each `{{KEY}}` in `template`; lines after the first of a
/// multi-line value are indented to the placeholder's column, so YAML
/// blocks such as policy lists nest where they are put.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let mut line = line.to_string();
        for (key, value) in values {
            let mark = format!("{{{{{key}}}}}");
            if let Some(column) = line.find(&mark) {
                let indent = format!("\n{}", " ".repeat(column));
                line = line.replace(&mark, &value.trim_end().replace('\n', &indent));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_indents_blocks_to_the_placeholder() {
        let t = "a: {{A}}\nlist:\n  {{B}}\n";
        let filled = fill(t, &[("A", "1"), ("B", "- x\n- y\n")]);
        assert_eq!(filled, "a: 1\nlist:\n  - x\n  - y\n");
    }

    #[test]
    fn configs_parse_once_filled() {
        let values = [
            ("BROKERS", "127.0.0.1:9092"),
            ("TOPIC", "t"),
            ("GROUP", "g"),
            ("DECISION_WAIT", "1s"),
            ("ROOT_IDLE", "2s"),
            ("POLICIES", POLICIES),
            ("ES_URL", "http://127.0.0.1:9200"),
            ("PREFIX", "p-"),
            ("MEMORY_LIMIT", "1GiB"),
            ("LISTEN", "127.0.0.1:1"),
            ("OBSERVERS", "true"),
            ("NUM_TRACES", "10"),
            ("METRICS_PORT", "1"),
        ];
        let dir = std::env::temp_dir().join(format!("e2e-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for policies in [POLICIES, KEEP_10, KEEP_ALL] {
            let mut v = values.to_vec();
            v[5].1 = policies;
            let path = dir.join("tailsift.yaml");
            std::fs::write(&path, fill(TAILSIFT_CONFIG, &v)).unwrap();
            let cfg = tailsift::config::Config::load(&path).unwrap();
            tailsift::app::build_rules(&cfg).unwrap();
        }
        let otel: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&fill(OTELCOL_CONFIG, &values)).unwrap();
        let policies = &otel["processors"]["tail_sampling"]["policies"];
        assert_eq!(policies.as_sequence().map(Vec::len), Some(3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
