//! Runs a contender as a child process (tailsift, the Collector) and
//! watches it through its own Prometheus metrics and /proc until it has
//! done the work, then stops it.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::procstat::{self, ProcStats};
use crate::prom::Metrics;

/// How often metrics and /proc are sampled by default: fine enough for
/// runs of a few seconds, rare enough not to load the contender.
pub const POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct Contender {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// host:port of its Prometheus endpoint.
    pub metrics_addr: String,
    pub log: PathBuf,
    /// How often its metrics are scraped (each scrape costs it CPU).
    pub poll: Duration,
}

/// How far a contender got, judged from one scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// It consumed something.
    pub started: bool,
    /// It consumed everything.
    pub consumed: bool,
    /// The measured work is finished.
    pub done: bool,
    /// A counter whose last increase is timed (e.g. documents indexed).
    pub output: f64,
}

pub struct Observed {
    pub first: Instant,
    pub consumed: Instant,
    /// When `Progress::output` last grew.
    pub last_output: Instant,
    /// Resident set just before consumption started.
    pub baseline_rss: u64,
    /// At `done` (plus the settle time).
    pub stats: ProcStats,
    pub metrics: Metrics,
}

impl Observed {
    pub fn consume_seconds(&self) -> f64 {
        (self.consumed - self.first).as_secs_f64()
    }
}

/// Starts `c`, samples it until `check` says done (then waits `settle` and
/// samples once more) or `timeout` passes, and stops it.
pub fn observe(
    c: &Contender,
    timeout: Duration,
    settle: Duration,
    mut check: impl FnMut(&Metrics) -> Progress,
) -> Result<Observed> {
    let mut child = spawn(c)?;
    let result = sample_until_done(c, &mut child, timeout, settle, &mut check);
    stop(&mut child);
    result
}

/// Starts `c`, samples it until `when` holds, then kills it with SIGKILL
/// (no shutdown, no flush) and returns that last scrape.
pub fn kill_when(
    c: &Contender,
    timeout: Duration,
    mut when: impl FnMut(&Metrics) -> bool,
) -> Result<Metrics> {
    let mut child = spawn(c)?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        std::thread::sleep(c.poll);
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                break Err(anyhow!(
                    "{} exited ({status}) before it was killed; log: {}",
                    c.program.display(),
                    tail(&c.log)
                ));
            }
            Err(e) => break Err(e.into()),
        }
        if Instant::now() > deadline {
            break Err(anyhow!(
                "{} never reached the point to kill it within {timeout:?}; log: {}",
                c.program.display(),
                c.log.display()
            ));
        }
        if let Ok(m) = Metrics::scrape(&c.metrics_addr)
            && when(&m)
        {
            break Ok(m);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub fn spawn(c: &Contender) -> Result<Child> {
    let log = File::create(&c.log).with_context(|| c.log.display().to_string())?;
    let mut cmd = Command::new(&c.program);
    cmd.args(&c.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // TAILSIFT_* variables are config overrides for tailsift; the stack
    // script's own settings share the prefix.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TAILSIFT_") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", c.program.display()))
}

fn sample_until_done(
    c: &Contender,
    child: &mut Child,
    timeout: Duration,
    settle: Duration,
    check: &mut impl FnMut(&Metrics) -> Progress,
) -> Result<Observed> {
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    let (mut first, mut consumed) = (None, None);
    let (mut baseline_rss, mut output, mut last_output) = (0, 0.0, Instant::now());
    loop {
        std::thread::sleep(c.poll);
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited ({status}); log: {}",
                c.program.display(),
                tail(&c.log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not finish within {timeout:?}; log: {}",
                c.program.display(),
                c.log.display()
            );
        }
        // Not up yet, or busy: sample again next time.
        let Ok(metrics) = Metrics::scrape(&c.metrics_addr) else {
            continue;
        };
        let now = Instant::now();
        let stats = procstat::read(pid)?;
        let p = check(&metrics);
        if !p.started {
            baseline_rss = stats.rss;
            continue;
        }
        let first = *first.get_or_insert(now);
        if p.consumed {
            consumed.get_or_insert(now);
        }
        if p.output > output {
            (output, last_output) = (p.output, now);
        }
        if p.done {
            std::thread::sleep(settle);
            return Ok(Observed {
                first,
                consumed: consumed.unwrap_or(now),
                last_output,
                baseline_rss,
                stats: procstat::read(pid)?,
                metrics: Metrics::scrape(&c.metrics_addr).unwrap_or(metrics),
            });
        }
    }
}

/// SIGTERM, then SIGKILL if it lingers.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..150 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a log, for error messages.
pub fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
