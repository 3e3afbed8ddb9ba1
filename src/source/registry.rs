//! The partitions this instance owns, their published watermarks, and the
//! commits of those watermarks.
//!
//! The periodic committer and the revoke callback both commit under the
//! registry lock, so a late periodic commit can never move a revoked
//! partition's offset after its final synchronous commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Shared between a partition task and the registry.
#[derive(Debug)]
pub struct PartitionHandle {
    pub partition: i32,
    /// The partition task's committable offset; -1 until it has one.
    pub watermark: AtomicI64,
    committed: AtomicI64,
    /// Fired on revoke: the task forgets its window and exits.
    pub revoked: CancellationToken,
}

impl PartitionHandle {
    pub fn new(partition: i32) -> Arc<Self> {
        Arc::new(Self {
            partition,
            watermark: AtomicI64::new(-1),
            committed: AtomicI64::new(-1),
            revoked: CancellationToken::new(),
        })
    }

    pub fn publish(&self, offset: Option<i64>) {
        if let Some(o) = offset {
            self.watermark.store(o, Ordering::Release);
        }
    }

    fn pending_commit(&self) -> Option<i64> {
        let w = self.watermark.load(Ordering::Acquire);
        (w >= 0 && w > self.committed.load(Ordering::Relaxed)).then_some(w)
    }
}

#[derive(Default)]
pub struct Registry {
    topic: String,
    partitions: Mutex<HashMap<i32, Arc<PartitionHandle>>>,
    /// Fired on every assignment, before the partition's task starts, so
    /// the lag probe reads the group's committed offset before this
    /// instance commits over it (`lag::watch`).
    pub assigned: tokio::sync::Notify,
}

impl Registry {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn new(topic: &str) -> Self {
        report_assigned(0);
        Self {
            topic: topic.to_string(),
            partitions: Mutex::default(),
            assigned: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Arc<PartitionHandle>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, handle: Arc<PartitionHandle>) {
        crate::baseline::partition(handle.partition);
        let mut map = self.lock();
        map.insert(handle.partition, handle);
        report_assigned(map.len());
        self.assigned.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn handles(&self) -> Vec<Arc<PartitionHandle>> {
        self.lock().values().cloned().collect()
    }

    /// Commits every partition whose watermark moved, synchronously, so the
    /// result is known (manual commits report no callback). None if there
    /// was nothing to commit, else whether the commit succeeded.
    pub fn commit<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
    ) -> Option<bool> {
        let map = self.lock();
        commit_handles(consumer, &self.topic, map.values())
    }

    /// Revoke: removes the partitions, commits their final watermarks and
    /// tells their tasks to forget their windows.
    pub fn revoke<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        partitions: &[i32],
    ) {
        let mut map = self.lock();
        let gone: Vec<Arc<PartitionHandle>> =
            partitions.iter().filter_map(|p| map.remove(p)).collect();
        report_assigned(map.len());
        commit_handles(consumer, &self.topic, gone.iter());
        for h in gone {
            h.revoked.cancel();
        }
    }
}

/// Set at every change, not on a timer, so the gauge is right the moment
/// a rebalance completes.
fn report_assigned(partitions: usize) {
    metrics::gauge!("tailsift_assigned_partitions").set(partitions as f64);
}

fn commit_handles<'a, C, X>(
    consumer: &C,
    topic: &str,
    handles: impl Iterator<Item = &'a Arc<PartitionHandle>>,
) -> Option<bool>
where
    C: Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    let mut tpl = TopicPartitionList::new();
    let mut batch = Vec::new();
    for h in handles {
        if let Some(offset) = h.pending_commit()
            && tpl
                .add_partition_offset(topic, h.partition, Offset::Offset(offset))
                .is_ok()
        {
            batch.push((h.clone(), offset));
        }
    }
    if batch.is_empty() {
        return None;
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            for (h, offset) in batch {
                h.committed.store(offset, Ordering::Relaxed);
                metrics::gauge!("tailsift_committed_offset", "partition" => h.partition.to_string())
                    .set(offset as f64);
            }
            metrics::counter!("tailsift_commits_total", "result" => "ok").increment(1);
            Some(true)
        }
        Err(e) => {
            metrics::counter!("tailsift_commits_total", "result" => "error").increment(1);
            tracing::warn!(error = %e, "offset commit failed; will retry");
            Some(false)
        }
    }
}
