//! Shared helpers for integration tests that talk to the REAL local services started by
//! `deploy/local/stack.sh up` (Apache Kafka + Elasticsearch on 127.0.0.1).
//!
//! Endpoints come from the environment the stack prints (`deploy/local/stack.sh env`):
//! `KAFKA_BROKERS` and `ES_URL`. When a variable is unset the test FAILS (it never
//! skips), except outside CI where the default local endpoint is used if it answers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod es;
pub mod jaeger;
pub mod kafka;
pub mod pipeline;
pub mod prometheus;

pub const START_HINT: &str =
    "start the stack: deploy/local/stack.sh up && eval \"$(deploy/local/stack.sh env)\"";

/// Kafka bootstrap servers of the running stack (`KAFKA_BROKERS`, e.g. `127.0.0.1:9092`).
pub fn kafka_brokers() -> String {
    endpoint("KAFKA_BROKERS", "127.0.0.1:9092", "127.0.0.1:9092")
}

/// Base URL of the running Elasticsearch (`ES_URL`, e.g. `http://127.0.0.1:9200`).
pub fn es_url() -> String {
    endpoint("ES_URL", "http://127.0.0.1:9200", "127.0.0.1:9200")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn endpoint(var: &str, default: &str, probe: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        let v = v.trim();
        if !v.is_empty() {
            return v.to_string();
        }
    }
    if !in_ci() && answers(probe) {
        eprintln!("{var} is not set; using {default}, which answers");
        return default.to_string();
    }
    let why = if in_ci() {
        "CI=true".to_string()
    } else {
        format!("nothing answers on {probe}")
    };
    panic!("{var} is not set ({why}); {START_HINT}");
}

fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The tests' HTTP client for everything but Elasticsearch (metrics, readiness, Jaeger's
/// APIs): straight to the address, whatever proxy the environment names.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().no_proxy().build()
}

/// A name no other test run uses: `<prefix>-<pid>-<nanos>-<n>` (lowercase, ES-safe).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Prints a line that shows up in the CI log even though libtest captures the output
/// of passing tests (it captures `print!`/`eprint!`, not direct writes to stderr).
pub fn report(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[harness] {line}");
}
