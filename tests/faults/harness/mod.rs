//! The fault-injection harness: tailsift instances as child processes, a
//! steady (or bursting) load with ground truth, memory sampling, stack
//! control, and the checks against Elasticsearch and the dead-letter topic.
//!
//! - `stack`: the suite's environment and its own stack's services
//! - `scenario`: a scenario's topics, config and instances
//! - `instance`: one tailsift child process
//! - `memory`: resident memory sampling
//! - `load`: the generated load and its ground truth
//! - `verify`: Elasticsearch and the dead-letter topic against the ground truth
//! - `results`: the results table

pub mod instance;
pub mod load;
pub mod memory;
pub mod results;
pub mod scenario;
pub mod stack;
pub mod verify;

use std::io::Write as _;

pub const PARTITIONS: i32 = 6;
/// `kafka.max_message_bytes` of every scenario, in KiB: small, so that an
/// oversized message is cheap to make.
pub const MAX_MESSAGE_KIB: usize = 64;
/// `probabilistic` share of the test policies, in percent.
pub const PERCENT: f64 = 10.0;
const POLICIES: &str = r#"
    - name: errors
      type: status_code
      status_code: {status_codes: [ERROR]}
    - name: baseline
      type: probabilistic
      probabilistic: {sampling_percentage: 10}
"#;

/// Share of generated traces with an error span. High on purpose: a trace
/// with an error that the probabilistic policy does not pick is exactly the
/// one a partial view of the trace (a decision from half its spans) gets
/// wrong, so it must be common for the suite to catch such mistakes.
pub const ERROR_RATE: f64 = 0.25;

/// Serializes scenarios: they share two cores and must not disturb each
/// other's timing (libtest runs tests of one binary in parallel).
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn log(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[faults {}] {}", clock(), line.as_ref());
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
