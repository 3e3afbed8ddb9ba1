//! The machine and software versions a run measured, for the report.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub kafka: String,
    pub elasticsearch: String,
    pub collector: String,
    #[serde(default)]
    pub jaeger: String,
    pub tailsift: String,
    pub rustc: String,
    /// 1/5/15-minute load averages when the run ended: the machine is shared.
    pub load_average: String,
}

impl Machine {
    pub fn markdown(&self) -> String {
        format!(
            "Machine: {} CPUs ({}), {} RAM, Linux {}. Kafka {}, Elasticsearch {}, \
             OpenTelemetry Collector {}, Jaeger v2 (module {}), tailsift {} ({}). Load average at the end: {}.",
            self.cpus,
            self.cpu_model,
            self.memory,
            self.kernel,
            self.kafka,
            self.elasticsearch,
            self.collector,
            self.jaeger,
            self.tailsift,
            self.rustc,
            self.load_average
        )
    }
}

/// `versions`: the Collector's and Jaeger's ("-" when not run).
pub fn describe(versions: [&str; 2], kafka: &str, elasticsearch: Option<String>) -> Machine {
    let [collector, jaeger] = versions;
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: output("lscpu", &[])
            .lines()
            .find_map(|l| l.strip_prefix("Model name:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default(),
        memory: memory_total(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        kafka: kafka.to_string(),
        elasticsearch: elasticsearch.unwrap_or_else(|| "-".into()),
        collector: collector.to_string(),
        jaeger: jaeger.to_string(),
        tailsift: output("git", &["describe", "--always", "--dirty"]),
        rustc: output("rustc", &["--version"]),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn memory_total() -> String {
    let kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
