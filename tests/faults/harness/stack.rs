//! What the suite talks to (brokers, Elasticsearch, the tailsift binary,
//! its files) and control of its own stack: services stopped and started
//! by the outage scenarios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};

use super::log;
use crate::common;

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
