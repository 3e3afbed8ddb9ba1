//! The whole benchmark: a fresh topic loaded by `tailsift loadgen`, then
//! every contender in turn (never two at once), each reading the topic from
//! offset 0 to the end as a new consumer group.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde::de::DeserializeOwned;

use crate::es::Es;
use crate::prom::Metrics;
use crate::report::{Crash, Load, Memory, Results, SinkRun, Throughput};
use crate::watch::{self, Contender, Observed, Progress};
use crate::{kafka, machine, report};

mod sustain;

const PARTITIONS: i32 = 6;
/// Documents indexed to warm Elasticsearch up before its measured runs.
const WARMUP_SPANS: u64 = 200_000;

/// How long traces are buffered, and the memory limit that allows it.
struct Window<'a> {
    decision_wait: &'a str,
    root_idle: &'a str,
    memory_limit: &'a str,
}

/// Throughput and sink runs: a short wait, so a run ends soon after the
/// topic is consumed; the same wait for tailsift and the Collector.
const SHORT: Window<'static> = Window {
    decision_wait: "1s",
    root_idle: "2s",
    memory_limit: "1GiB",
};
/// Memory runs hold every trace: nothing is decided (or shed) while they run.
const HELD: Window<'static> = Window {
    decision_wait: "1h",
    root_idle: "1h",
    memory_limit: "64GiB",
};

const TAILSIFT_CONFIG: &str = include_str!("configs/tailsift.yaml");
const OTELCOL_CONFIG: &str = include_str!("configs/otelcol.yaml");
const JAEGER_CONFIG: &str = include_str!("configs/jaeger.yaml");
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
    #[arg(long, required_unless_present_any = ["topic", "sustain"])]
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
    /// The `jaeger` (v2) binary built by deploy/local/jaeger-query.sh; the
    /// Jaeger v2 runs are skipped without it.
    #[arg(long)]
    pub jaeger: Option<PathBuf>,
    /// Version of Jaeger, for the machine description.
    #[arg(long, default_value = "-")]
    pub jaeger_version: String,
    /// Also kill tailsift and Jaeger v2 (SIGKILL) mid-run once each and
    /// count the spans lost.
    #[arg(long)]
    pub kill: bool,
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
    /// bulk, es100, es10, es3, jaeger (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Instead of the contenders: the sustained run, tailsift with the
    /// Elasticsearch sink fed live by loadgen at this many spans/s.
    #[arg(long, requires = "es_url", conflicts_with_all = ["traces", "topic"])]
    pub sustain: Option<f64>,
    /// How long the sustained rate is fed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub sustain_for: Duration,
    /// The burst after it: this many times the sustained rate...
    #[arg(long, default_value_t = 10.0)]
    pub burst_factor: f64,
    /// ...for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub burst_for: Duration,
    /// tailsift's `memory.limit` in the sustained run.
    #[arg(long, default_value = "1GiB")]
    pub memory_limit: String,
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
    let results = match run.args.sustain {
        Some(rate) => run.sustained(rate),
        None => run.all(),
    };
    if !run.args.keep && run.args.topic.is_none() {
        let _ = run
            .runtime
            .block_on(kafka::delete_topic(&run.args.brokers, &run.topic));
    }
    let results = results?;
    let mismatch = results.docs_mismatch();
    std::fs::write(
        run.args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    println!("{}", report::text(&results));
    if let Some(path) = &run.args.markdown {
        report::write_markdown(path, &results)?;
        step(&format!("wrote {}", path.display()));
    }
    match mismatch {
        Some(why) => bail!("the Jaeger v2 comparison is void: {why}"),
        None => Ok(()),
    }
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
            [&self.args.collector_version, &self.args.jaeger_version],
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
        let versus = self.wanted("es3") || self.wanted("jaeger");
        if bulk || all || versus {
            self.bulk(es, "warmup", WARMUP_SPANS.min(self.load.spans))?;
        }
        for i in 1..=self.args.repeat.max(1) {
            if bulk {
                r.bulk
                    .push(self.bulk(es, &format!("bulk{i}"), self.load.spans)?);
            }
            if all {
                r.es_keep_all.push(self.tailsift_es(
                    es,
                    &format!("es100-{i}"),
                    KEEP_ALL,
                    watch::POLL,
                )?);
            }
        }
        if self.wanted("es10") {
            r.es_keep_10 = self
                .repeat(|run, i| run.tailsift_es(es, &format!("es10-{i}"), KEEP_10, watch::POLL))?;
        }
        self.versus_jaeger(es, r)
    }

    /// tailsift and Jaeger v2 on the same job, runs alternating; then, with
    /// `--kill`, each killed once mid-run.
    fn versus_jaeger(&self, es: &Es, r: &mut Results) -> Result<()> {
        let jaeger = self.args.jaeger.clone().filter(|_| self.wanted("jaeger"));
        for i in 1..=self.args.repeat.max(1) {
            if self.wanted("es3") {
                r.es_policies.push(self.tailsift_es(
                    es,
                    &format!("es3-{i}"),
                    POLICIES,
                    COMPARISON_POLL,
                )?);
            }
            if let Some(program) = &jaeger {
                r.jaeger
                    .push(self.jaeger_es(program, es, &format!("jaeger{i}"))?);
            }
        }
        if !self.args.kill {
            return Ok(());
        }
        let expected = r
            .es_policies
            .iter()
            .chain(&r.jaeger)
            .map(|run| run.span_docs)
            .next()
            .context("--kill needs a run without a crash first (es3 or jaeger)")?;
        if self.wanted("es3") {
            r.crashes.push(self.tailsift_crash(es, expected)?);
        }
        if let Some(program) = &jaeger {
            r.crashes.push(self.jaeger_crash(program, es, expected)?);
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

    /// `poll`: how often its metrics are scraped.
    fn tailsift_es(&self, es: &Es, name: &str, policies: &str, poll: Duration) -> Result<SinkRun> {
        step(&format!("(d) tailsift run, Elasticsearch sink [{name}]"));
        let (config, listen) = self.tailsift_config(name, policies, &SHORT)?;
        let messages = self.load.messages as f64;
        let spans = self.load.spans as f64;
        let contender = Contender {
            poll,
            ..self.tailsift(&config, name, listen, "elasticsearch")
        };
        let observed = watch::observe(&contender, self.timeout(), Duration::ZERO, |m| {
            let consumed = m.sum(&["tailsift_consumed_spans_total"]);
            Progress {
                started: consumed > 0.0,
                consumed: consumed >= spans,
                // Every message resolved: each kept span acknowledged.
                done: m.sum(&["tailsift_committed_offset"]) >= messages,
                output: m.sum_where("tailsift_es_documents_total", "result=\"indexed\""),
            }
        })?;
        self.sink_run(es, name, &observed)
    }

    /// Counts what a sink run indexed and removes it.
    fn sink_run(&self, es: &Es, name: &str, observed: &Observed) -> Result<SinkRun> {
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

    /// (f) Jaeger v2 as an ingester with tail sampling. Its writer hands
    /// spans to a bulk processor and returns, so the run is done only when
    /// every trace is decided, the writer has indexed what the exporter
    /// passed on, and nothing moved for longer than the sampler's tick.
    fn jaeger_es(&self, program: &Path, es: &Es, name: &str) -> Result<SinkRun> {
        step(&format!(
            "(f) Jaeger v2: kafka -> tail_sampling -> Elasticsearch [{name}]"
        ));
        let contender = Contender {
            poll: COMPARISON_POLL,
            ..self.jaeger(program, es, name)?
        };
        let (spans, traces) = (self.load.spans as f64, self.load.traces as f64);
        let mut quiet = Quiet::default();
        let observed = watch::observe(&contender, self.timeout(), Duration::ZERO, |m| {
            let (accepted, decided) = (otel_accepted(m), otel_decided(m));
            let (sent, written) = (jaeger_sent(m), jaeger_written(m));
            let settled = quiet.settled(&jaeger_movement(m), QUIET);
            Progress {
                started: accepted > 0.0,
                consumed: accepted >= spans,
                done: accepted >= spans && decided >= traces && written >= sent && settled,
                output: written,
            }
        })?;
        self.sink_run(es, name, &observed)
    }

    /// tailsift killed once half the expected documents are indexed.
    fn tailsift_crash(&self, es: &Es, expected: u64) -> Result<Crash> {
        let name = "crash-tailsift";
        let (config, listen) = self.tailsift_config(name, POLICIES, &SHORT)?;
        let contender = Contender {
            poll: COMPARISON_POLL,
            ..self.tailsift(&config, name, listen, "elasticsearch")
        };
        self.crash(
            es,
            name,
            "tailsift",
            expected,
            contender,
            Sink {
                written: tailsift_written,
                movement: tailsift_movement,
            },
        )
    }

    /// Jaeger v2 killed once half the expected documents are indexed.
    fn jaeger_crash(&self, program: &Path, es: &Es, expected: u64) -> Result<Crash> {
        let name = "crash-jaeger";
        let contender = Contender {
            poll: COMPARISON_POLL,
            ..self.jaeger(program, es, name)?
        };
        let label = format!("Jaeger v2 (module {})", self.args.jaeger_version);
        self.crash(
            es,
            name,
            &label,
            expected,
            contender,
            Sink {
                written: jaeger_written,
                movement: jaeger_movement,
            },
        )
    }

    /// SIGKILL once `sink.written` reaches half of `expected`, start the
    /// same config again (same consumer group, same indices) and let it
    /// finish: when the group has committed the whole topic and nothing
    /// moved for a while. Then count what reached Elasticsearch.
    fn crash(
        &self,
        es: &Es,
        name: &str,
        label: &str,
        expected: u64,
        contender: Contender,
        sink: Sink,
    ) -> Result<Crash> {
        step(&format!("{label}: SIGKILL mid-run, then restart [{name}]"));
        let half = expected as f64 / 2.0;
        let killed = watch::kill_when(&relog(&contender, "killed"), self.timeout(), |m| {
            (sink.written)(m) >= half
        })?;
        let group = format!("{}-{name}", self.id);
        let committed = kafka::Committed::new(&self.args.brokers, &group, &self.topic)?;
        let messages = self.load.messages as i64;
        let mut quiet = Quiet::default();
        step(&format!("{label}: killed; restarting on group {group}"));
        watch::observe(
            &relog(&contender, "restarted"),
            self.timeout(),
            Duration::ZERO,
            |m| {
                let done = quiet.settled(&(sink.movement)(m), QUIET)
                    && committed.total().is_ok_and(|c| c >= messages);
                Progress {
                    started: true,
                    consumed: done,
                    done,
                    output: (sink.written)(m),
                }
            },
        )?;
        let prefix = self.prefix(name);
        let docs = self.runtime.block_on(es.span_docs(&prefix))?;
        let distinct = self.runtime.block_on(es.distinct_spans(&prefix))?;
        self.remove_indices(es, name)?;
        Ok(Crash {
            contender: label.to_string(),
            expected,
            written_at_kill: (sink.written)(&killed) as u64,
            docs,
            distinct,
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
        window: &Window<'_>,
    ) -> Result<(PathBuf, String)> {
        self.tailsift_config_with(name, policies, window, true)
    }

    fn tailsift_config_with(
        &self,
        name: &str,
        policies: &str,
        window: &Window<'_>,
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
            poll: watch::POLL,
        }
    }

    /// Jaeger v2 on the same topic, policies and decision wait as tailsift,
    /// writing to the same Elasticsearch under its own index prefix.
    fn jaeger(&self, program: &Path, es: &Es, name: &str) -> Result<Contender> {
        let port = free_port()?;
        let version = self.runtime.block_on(es.version())?;
        let major = version.split('.').next().unwrap_or_default().to_string();
        let prefix = self.prefix(name);
        let text = fill(
            JAEGER_CONFIG,
            &[
                ("BROKERS", &self.args.brokers),
                ("TOPIC", &self.topic),
                ("GROUP", &format!("{}-{name}", self.id)),
                ("DECISION_WAIT", SHORT.decision_wait),
                ("NUM_TRACES", &self.num_traces()),
                ("POLICIES", POLICIES),
                ("ES_URL", self.args.es_url.as_deref().unwrap_or_default()),
                ("ES_MAJOR", &major),
                // Jaeger adds the '-' itself.
                ("PREFIX", prefix.trim_end_matches('-')),
                ("METRICS_PORT", &port.to_string()),
            ],
        );
        self.collector_build(program, name, &text, port)
    }

    /// A Collector-built contender (Jaeger v2, the OpenTelemetry Collector)
    /// run with its filled-in config file, exporting metrics on `port`.
    fn collector_build(
        &self,
        program: &Path,
        name: &str,
        text: &str,
        port: u16,
    ) -> Result<Contender> {
        let config = self.file(&format!("{name}.yaml"));
        std::fs::write(&config, text)?;
        Ok(Contender {
            program: program.to_path_buf(),
            args: vec![format!("--config={}", config.display())],
            metrics_addr: format!("127.0.0.1:{port}"),
            log: self.file(&format!("{name}.log")),
            poll: watch::POLL,
        })
    }

    /// Room for every trace of the run in a Collector's tail sampler.
    fn num_traces(&self) -> String {
        (self.load.traces * 2).max(50_000).to_string()
    }

    fn otelcol(&self, program: &Path, name: &str, window: &Window<'_>) -> Result<Contender> {
        let port = free_port()?;
        let text = fill(
            OTELCOL_CONFIG,
            &[
                ("BROKERS", &self.args.brokers),
                ("TOPIC", &self.topic),
                ("GROUP", &format!("{}-{name}", self.id)),
                ("DECISION_WAIT", window.decision_wait),
                ("NUM_TRACES", &self.num_traces()),
                ("POLICIES", POLICIES),
                ("METRICS_PORT", &port.to_string()),
            ],
        );
        self.collector_build(program, name, &text, port)
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

/// Scrape interval of the Jaeger v2 comparison, which is about CPU: a
/// scrape of tailsift's page (span metrics included) costs it ~2.4 ms.
/// Both sides are scraped at this interval.
const COMPARISON_POLL: Duration = Duration::from_millis(250);

/// Longer than the tail sampler's one-second tick and the bulk flush
/// interval: counters unchanged this long mean the pipeline is empty.
const QUIET: Duration = Duration::from_millis(2500);

/// When a set of counters last changed.
#[derive(Default)]
struct Quiet {
    last: Vec<f64>,
    since: Option<Instant>,
}

impl Quiet {
    /// Whether `values` are what they were `quiet` ago.
    fn settled(&mut self, values: &[f64], quiet: Duration) -> bool {
        let now = Instant::now();
        if self.since.is_none() || self.last != values {
            self.last = values.to_vec();
            self.since = Some(now);
        }
        self.since.is_some_and(|since| now - since >= quiet)
    }
}

/// How the crash runs read a contender's metrics.
struct Sink {
    /// Span documents it reports written.
    written: fn(&Metrics) -> f64,
    /// Counters that move while it has work.
    movement: fn(&Metrics) -> Vec<f64>,
}

fn tailsift_written(m: &Metrics) -> f64 {
    m.sum_where("tailsift_es_documents_total", "result=\"indexed\"")
}

fn tailsift_movement(m: &Metrics) -> Vec<f64> {
    vec![
        m.sum(&["tailsift_consumed_spans_total"]),
        m.sum(&["tailsift_decisions_total"]),
        tailsift_written(m),
        m.sum(&["tailsift_committed_offset"]),
    ]
}

/// Spans Jaeger's exporter handed to its storage writer.
fn jaeger_sent(m: &Metrics) -> f64 {
    m.sum(&[
        "otelcol_exporter_sent_spans_total",
        "otelcol_exporter_sent_spans",
    ])
}

/// Jaeger's count of documents its Elasticsearch bulk processor got
/// acknowledged (spans and service documents; `jaeger.storage.bulk_index.inserts`).
const JAEGER_INSERTS: [&str; 2] = [
    "jaeger_storage_bulk_index_inserts_total",
    "jaeger_storage_bulk_index_inserts",
];

/// Documents Jaeger's Elasticsearch bulk processor had acknowledged.
fn jaeger_written(m: &Metrics) -> f64 {
    m.sum(&JAEGER_INSERTS)
}

fn jaeger_movement(m: &Metrics) -> Vec<f64> {
    vec![
        otel_accepted(m),
        otel_decided(m),
        jaeger_sent(m),
        jaeger_written(m),
    ]
}

/// A contender as is, logging to a file of its own.
fn relog(c: &Contender, suffix: &str) -> Contender {
    let mut c = c.clone();
    c.log = c.log.with_extension(format!("{suffix}.log"));
    c
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
            ("ES_MAJOR", "8"),
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
        let jaeger: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&fill(JAEGER_CONFIG, &values)).unwrap();
        assert_eq!(jaeger["processors"], otel["processors"]);
        let es = &jaeger["extensions"]["jaeger_storage"]["backends"]["bench"]["elasticsearch"];
        assert_eq!(es["version"].as_u64(), Some(8));
        // The same bulk requests as tailsift's sink.
        let sink = tailsift::config::BulkConfig::default();
        let bulk = &es["bulk_processing"];
        assert_eq!(bulk["max_bytes"].as_u64(), Some(sink.max_bytes.as_u64()));
        assert_eq!(bulk["max_actions"].as_u64(), Some(sink.max_docs as u64));
        assert_eq!(bulk["workers"].as_u64(), Some(sink.concurrency as u64));
        assert_eq!(bulk["flush_interval"].as_str(), Some("200ms"));
        assert_eq!(sink.linger, Duration::from_millis(200));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
