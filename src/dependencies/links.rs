//! One partition's dependency links since it was assigned, per time
//! bucket, as the cumulative document Jaeger's dependency reader sums, and
//! the decision records that wait for that document.
//!
//! Exactness: a trace's links are counted at its decision, and its
//! decision record (which makes a replay treat the trace as decided) is
//! written only after a document holding those links is stored. A crash
//! before that point leaves no record, so the next owner decides the trace
//! again from the replayed messages and counts it there; the lost
//! in-memory counts were never stored. Each assignment writes documents
//! of its own (`session` in the ID), rewritten with the running totals at
//! every flush, so no owner overwrites another's counts.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::graph::{Edge, Services};
use crate::decision_log;
use crate::offsets::Resolved;

/// Decision records a partition holds before it writes its document early:
/// catching up on a backlog it decides thousands of traces a second, and
/// holding `flush_interval`'s worth of records would cost memory that
/// `memory.limit` does not plan for.
const MAX_HELD: usize = 2048;

/// A dependency document ready for the writer.
pub struct Document {
    /// Bucket start, ms since the epoch: the document's `timestamp` and day.
    pub bucket_ms: i64,
    pub id: String,
    pub body: serde_json::Value,
}

/// What a flush hands over: the document, the records that may be written
/// once it is stored, and the offsets it holds back meanwhile.
pub struct Flush {
    pub document: Document,
    pub records: Vec<decision_log::Pending>,
    pub gate: Resolved,
}

pub struct PartitionLinks {
    topic: String,
    partition: i32,
    session: String,
    bucket: Duration,
    flush_every: Duration,
    current: Option<i64>,
    counts: HashMap<(u32, u32), u64, foldhash::fast::RandomState>,
    records: Vec<decision_log::Pending>,
    gate: Resolved,
    changed: bool,
    last_flush: Instant,
}

impl PartitionLinks {
    pub fn new(topic: &str, partition: i32, bucket: Duration, flush_every: Duration) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            session: format!("{:016x}", rand::random::<u64>()),
            bucket: bucket.max(Duration::from_secs(1)),
            flush_every,
            current: None,
            counts: HashMap::default(),
            records: Vec::new(),
            gate: Resolved::default(),
            changed: false,
            last_flush: Instant::now(),
        }
    }

    /// Counts a decided trace's edges. Returns a flush of the previous
    /// bucket when the clock moved into a new one.
    pub fn add(&mut self, edges: &[Edge], services: &Services, first_offset: i64) -> Option<Flush> {
        let bucket = self.bucket_of(SystemTime::now());
        let mut closed = None;
        if self.current.is_some_and(|b| b != bucket) {
            closed = self.flush(services);
            self.counts.clear();
        }
        self.current = Some(bucket);
        for e in edges {
            *self.counts.entry((e.parent, e.child)).or_default() += 1;
        }
        self.gate.add(first_offset, 1);
        self.changed = true;
        closed
    }

    /// A decision record that waits for the next stored document.
    pub fn hold(&mut self, record: decision_log::Pending) {
        self.records.push(record);
    }

    /// The flush due by now (every `flush_every`, or sooner once
    /// `MAX_HELD` records wait), if anything changed.
    pub fn due(&mut self, services: &Services) -> Option<Flush> {
        if self.last_flush.elapsed() < self.flush_every && self.records.len() < MAX_HELD {
            return None;
        }
        self.flush(services)
    }

    /// The running totals of the current bucket as a document, with what
    /// waited for it.
    pub fn flush(&mut self, services: &Services) -> Option<Flush> {
        self.last_flush = Instant::now();
        if !self.changed {
            return None;
        }
        let bucket_ms = self.current?;
        self.changed = false;
        let document = self.document(bucket_ms, services);
        Some(Flush {
            document,
            records: std::mem::take(&mut self.records),
            gate: std::mem::take(&mut self.gate),
        })
    }

    fn document(&self, bucket_ms: i64, services: &Services) -> Document {
        let mut links: Vec<_> = self
            .counts
            .iter()
            .map(|(&(p, c), &n)| (services.name(p).clone(), services.name(c).clone(), n))
            .collect();
        links.sort();
        let dependencies: Vec<_> = links
            .iter()
            .map(|(p, c, n)| json!({"parent": &**p, "child": &**c, "callCount": n}))
            .collect();
        let timestamp = chrono::DateTime::from_timestamp_millis(bucket_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Document {
            bucket_ms,
            id: format!(
                "{}-{}-{bucket_ms}-{}",
                self.topic, self.partition, self.session
            ),
            body: json!({"timestamp": timestamp, "dependencies": dependencies}),
        }
    }

    fn bucket_of(&self, t: SystemTime) -> i64 {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let size = self.bucket.as_millis().max(1) as i64;
        ms - ms % size
    }
}
