//! (a) The practical ceiling: one thread polling rdkafka and scanning every
//! message with tailsift's own decoder — no windows, no policies, no tasks.
//! The payload copy stays: any consumer that buffers spans past the next
//! poll must copy them out of librdkafka's buffer, tailsift included.

use std::path::Path;

use anyhow::Result;
use bytes::Bytes;
use rdkafka::message::Message as _;
use serde::{Deserialize, Serialize};
use tailsift::config::Config;
use tailsift::model::ScanBatch;

use crate::{kafka, procstat};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScanResult {
    pub messages: u64,
    /// Distinct trace IDs per message, summed: the topic's traces when
    /// messages are keyed by trace (one trace per message).
    pub traces: u64,
    pub spans: u64,
    pub payload_bytes: u64,
    pub errors: u64,
    /// First to last message.
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

/// Scans the topic of the tailsift config at `config` with the decoder its
/// policies would build.
pub fn run(config: &Path) -> Result<ScanResult> {
    let cfg = Config::load(config)?;
    let decoder = tailsift::app::build_rules(&cfg)?.decoder;
    let mut batch = ScanBatch::default();
    let mut out = ScanResult::default();
    let consumed = kafka::consume_to_end(&cfg, |m| {
        let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        out.payload_bytes += payload.len() as u64;
        match decoder.scan(payload, None, &mut batch) {
            Ok(_) => {
                out.spans += batch.spans.len() as u64;
                out.traces += distinct_traces(&batch);
            }
            Err(_) => out.errors += 1,
        }
    })?;
    let stats = procstat::own()?;
    out.messages = consumed.messages;
    out.seconds = (consumed.last - consumed.first).as_secs_f64();
    out.cpu_seconds = stats.cpu_seconds;
    out.peak_rss = stats.peak_rss;
    Ok(out)
}

fn distinct_traces(batch: &ScanBatch) -> u64 {
    let spans = &batch.spans;
    let first_of_its_trace = |i: usize| spans[..i].iter().all(|s| s.trace_id != spans[i].trace_id);
    (0..spans.len()).filter(|&i| first_of_its_trace(i)).count() as u64
}
