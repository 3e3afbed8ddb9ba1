//! A real Prometheus server for the tests that read tailsift's metrics the
//! way operators do: built by `deploy/local/prometheus.sh build` (cached),
//! scraping one target every second, with its HTTP API on a free port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/prometheus.sh");
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A running Prometheus; stopped on drop, its data removed.
pub struct Prometheus {
    child: Child,
    pub url: String,
    http: reqwest::Client,
    dir: PathBuf,
}

fn server_binary() -> Result<PathBuf> {
    let build = Command::new("bash")
        .arg(SCRIPT)
        .arg("build")
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("run bash {SCRIPT} build"))?;
    ensure!(build.success(), "`bash {SCRIPT} build` failed ({build})");
    let out = Command::new("bash").arg(SCRIPT).arg("server").output()?;
    ensure!(
        out.status.success(),
        "`bash {SCRIPT} server` found no server"
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

impl Prometheus {
    /// Scrapes `target` (`host:port`, path /metrics). Builds the server the
    /// first time (minutes): call it off the async executor.
    pub fn start(target: &str) -> Result<Self> {
        let bin = server_binary()?;
        let dir = std::env::temp_dir().join(super::unique_name("tailsift-prometheus"));
        std::fs::create_dir_all(&dir)?;
        let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
                 scrape_configs:\n  - job_name: tailsift\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn prometheus")?;
        let url = format!("http://127.0.0.1:{port}");
        let me = Self {
            child,
            http: super::http_client()?,
            url,
            dir,
        };
        me.wait_ready()?;
        super::report(&format!("Prometheus scraping {target} at {}", me.url));
        Ok(me)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.url.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "Prometheus did not listen on {addr} within 60s; log in {}",
            self.dir.display()
        )
    }

    /// An instant query's result vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("query {promql}"))?;
        let body: Value = resp.json().await?;
        ensure!(body["status"] == "success", "query {promql}: {body}");
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The single value of a query that yields one sample (0 when none).
    pub async fn scalar(&self, promql: &str) -> Result<f64> {
        let result = self.query(promql).await?;
        let Some(sample) = result.first() else {
            return Ok(0.0);
        };
        let value = sample["value"][1].as_str().context("sample value")?;
        Ok(value.parse()?)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
