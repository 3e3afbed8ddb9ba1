//! One `tailsift run` child process: its metrics and readiness endpoints,
//! SIGKILL and SIGTERM, its log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::log;
use super::memory::vm_rss_hwm;

/// One `tailsift run` child process.
pub struct Instance {
    pub id: u32,
    pub pid: u32,
    pub(super) child: Child,
    pub(super) http: reqwest::Client,
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
            let resp = self
                .http
                .get(format!("http://{}{path}", self.metrics))
                .send()
                .await?;
            anyhow::Ok((resp.status().as_u16(), resp.text().await?))
        };
        tokio::time::timeout(Duration::from_secs(3), fut)
            .await
            .map_err(|_| anyhow!("{}: GET {path} timed out", self.name()))?
            .with_context(|| format!("{}: GET {path}", self.name()))
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
