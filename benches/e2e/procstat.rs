//! CPU time and memory of a process, from /proc: what `time` and `ps` would
//! say, readable while the process runs and for any process we started.

use std::sync::OnceLock;

use anyhow::{Context as _, Result};

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// utime + stime of all threads, in seconds.
    pub cpu_seconds: f64,
    /// Resident set now (VmRSS), bytes.
    pub rss: u64,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss: u64,
}

/// Stats of process `pid`.
pub fn read(pid: u32) -> Result<ProcStats> {
    read_from(&format!("/proc/{pid}"))
}

/// Stats of this process (the in-process bare loops).
pub fn own() -> Result<ProcStats> {
    read_from("/proc/self")
}

fn read_from(dir: &str) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).with_context(|| dir.to_string())?;
    let status =
        std::fs::read_to_string(format!("{dir}/status")).with_context(|| dir.to_string())?;
    Ok(ProcStats {
        cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks(),
        rss: status_kib(&status, "VmRSS:") * 1024,
        peak_rss: status_kib(&status, "VmHWM:") * 1024,
    })
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its closing `)`.
fn cpu_ticks(stat: &str) -> Result<u64> {
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc stat")?
            .parse()
            .context("bad /proc stat field")
    };
    Ok(field(14)? + field(15)?)
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Ticks per second of the /proc CPU counters (`getconf CLK_TCK`; 100 on
/// every Linux we know of, which is also the fallback).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
