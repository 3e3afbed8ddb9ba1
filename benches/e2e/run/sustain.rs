//! The sustained run: tailsift with the Elasticsearch sink on a topic that
//! `tailsift loadgen` feeds live, at a fixed rate and then in a burst of a
//! multiple of it. What it shows: whether tailsift keeps up (consumed rate,
//! lag), its resident set against `memory.limit`, the traces it decided
//! early to stay under it (`memory` decisions), and how long the lag takes
//! to drain after the burst.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{POLICIES, Run, SHORT, Window, step};
use crate::es::Es;
use crate::kafka::{self, Committed};
use crate::machine;
use crate::procstat;
use crate::prom::Metrics;
use crate::report::{Results, Sustained};
use crate::watch::{self, Contender};

/// How often the run is sampled: its phases last minutes.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait for the lag to drain after the burst.
const DRAIN_LIMIT: Duration = Duration::from_secs(1800);

/// One sample of tailsift and the topic.
#[derive(Clone, Copy, Default)]
struct Sample {
    consumed: f64,
    lag: u64,
}

/// Extremes and totals over a run's samples.
#[derive(Default)]
struct Track {
    peak_rss: u64,
    memory_decisions: f64,
    cpu_seconds: f64,
}

impl Run {
    pub(super) fn sustained(&mut self, rate: f64) -> Result<Results> {
        let url = self
            .args
            .es_url
            .clone()
            .context("--sustain needs --es-url")?;
        let es = Es::new(&url)?;
        let brokers = self.args.brokers.clone();
        step(&format!("creating topic {}", self.topic));
        self.runtime.block_on(kafka::create_topic(
            &brokers,
            &self.topic,
            super::PARTITIONS,
        ))?;
        let name = "sustain";
        let limit = self.args.memory_limit.clone();
        let window = Window {
            memory_limit: &limit,
            ..SHORT
        };
        let (config, listen) = self.tailsift_config(name, POLICIES, &window)?;
        let contender = self.tailsift(&config, name, listen, "elasticsearch");
        let mut child = watch::spawn(&contender)?;
        let result = self.feed(&contender, &child, rate);
        watch::stop(&mut child);
        let mut sustained = result?;
        sustained.span_docs = self.runtime.block_on(es.span_docs(&self.prefix(name)))?;
        sustained.memory_limit = limit
            .parse::<bytesize::ByteSize>()
            .map_err(|e| anyhow::anyhow!("--memory-limit {limit}: {e}"))?
            .as_u64();
        self.remove_indices(&es, name)?;
        let es_version = self.runtime.block_on(es.version())?;
        Ok(Results {
            label: self.args.label.clone(),
            machine: machine::describe(["-", "-"], &self.args.kafka_version, Some(es_version)),
            sustained: Some(sustained),
            ..Default::default()
        })
    }

    /// The steady phase, the burst, and the drain, sampled every second.
    fn feed(&self, contender: &Contender, child: &Child, rate: f64) -> Result<Sustained> {
        let group = format!("{}-sustain", self.id);
        let committed = Committed::new(&self.args.brokers, &group, &self.topic)?;
        let mut track = Track::default();
        let sample = |track: &mut Track| self.sample(contender, child, &committed, track);

        step(&format!(
            "steady: {rate} spans/s for {:?}",
            self.args.sustain_for
        ));
        wait_ready(contender)?;
        let start = sample(&mut track)?;
        let steady = self.loadgen(rate, self.args.sustain_for, "steady")?;
        let (steady_summary, steady_lag) = self.until_exit(steady, || sample(&mut track))?;
        let after_steady = sample(&mut track)?;

        let burst_rate = rate * self.args.burst_factor;
        step(&format!(
            "burst: {burst_rate} spans/s for {:?}",
            self.args.burst_for
        ));
        let burst = self.loadgen(burst_rate, self.args.burst_for, "burst")?;
        let (burst_summary, burst_lag) = self.until_exit(burst, || sample(&mut track))?;

        step("draining the lag");
        let burst_end = Instant::now();
        loop {
            if sample(&mut track)?.lag == 0 {
                break;
            }
            if burst_end.elapsed() > DRAIN_LIMIT {
                bail!("the lag did not drain within {DRAIN_LIMIT:?} after the burst");
            }
            std::thread::sleep(TICK);
        }
        let drain_seconds = burst_end.elapsed().as_secs_f64();
        Ok(Sustained {
            rate,
            seconds: steady_summary.seconds,
            produced_rate: steady_summary.rate(),
            consumed_rate: (after_steady.consumed - start.consumed) / steady_summary.seconds,
            max_lag: steady_lag,
            burst_rate,
            burst_seconds: burst_summary.seconds,
            burst_produced_rate: burst_summary.rate(),
            max_lag_burst: burst_lag,
            drain_seconds,
            peak_rss: track.peak_rss,
            memory_limit: 0,
            memory_decisions: track.memory_decisions as u64,
            cpu_seconds: track.cpu_seconds,
            span_docs: 0,
        })
    }

    fn sample(
        &self,
        contender: &Contender,
        child: &Child,
        committed: &Committed,
        track: &mut Track,
    ) -> Result<Sample> {
        let metrics = Metrics::scrape(&contender.metrics_addr).with_context(|| {
            format!(
                "tailsift stopped answering; log: {}",
                contender.log.display()
            )
        })?;
        let stats = procstat::read(child.id())?;
        track.peak_rss = track.peak_rss.max(stats.peak_rss);
        track.cpu_seconds = stats.cpu_seconds;
        track.memory_decisions =
            metrics.sum_where("tailsift_decision_reasons_total", "reason=\"memory\"");
        let end = kafka::message_count(&self.args.brokers, &self.topic)?;
        let lag = (end - committed.total()?).max(0) as u64;
        Ok(Sample {
            consumed: metrics.sum(&["tailsift_consumed_spans_total"]),
            lag,
        })
    }

    /// `tailsift loadgen` at `rate` spans/s for `duration`, in the background.
    fn loadgen(&self, rate: f64, duration: Duration, phase: &str) -> Result<Child> {
        let log = std::fs::File::create(self.file(&format!("loadgen-{phase}.log")))?;
        Command::new(&self.args.tailsift)
            .args([
                "loadgen",
                "--brokers",
                &self.args.brokers,
                "--topic",
                &self.topic,
            ])
            .args(["--rate", &rate.to_string(), "--json"])
            .args([
                "--duration",
                &humantime::format_duration(duration).to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start tailsift loadgen")
    }

    /// Samples every second until the loadgen exits; its summary and the
    /// largest lag seen meanwhile.
    fn until_exit(
        &self,
        mut loadgen: Child,
        mut sample: impl FnMut() -> Result<Sample>,
    ) -> Result<(Produced, u64)> {
        let mut max_lag = 0;
        while loadgen.try_wait()?.is_none() {
            std::thread::sleep(TICK);
            match sample() {
                Ok(s) => max_lag = max_lag.max(s.lag),
                Err(e) => {
                    let _ = loadgen.kill();
                    let _ = loadgen.wait();
                    return Err(e);
                }
            }
        }
        let out = loadgen.wait_with_output()?;
        if !out.status.success() {
            bail!("tailsift loadgen failed: {}", out.status);
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("loadgen printed no JSON")?;
        if summary["failed_messages"].as_u64() != Some(0) {
            bail!("loadgen failed to produce some messages: {summary}");
        }
        Ok((
            Produced {
                spans: summary["spans"].as_f64().context("loadgen spans")?,
                seconds: summary["elapsed_secs"]
                    .as_f64()
                    .context("loadgen elapsed_secs")?,
            },
            max_lag,
        ))
    }
}

/// Waits for tailsift's metrics endpoint to answer.
fn wait_ready(contender: &Contender) -> Result<()> {
    let started = Instant::now();
    while Metrics::scrape(&contender.metrics_addr).is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "tailsift did not come up within 60 s; log: {}",
                watch::tail(&contender.log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// What one loadgen produced.
struct Produced {
    spans: f64,
    seconds: f64,
}

impl Produced {
    fn rate(&self) -> f64 {
        self.spans / self.seconds.max(f64::MIN_POSITIVE)
    }
}
