//! Remembered decisions, so spans arriving after their trace was decided
//! follow that decision at once instead of starting a new, partial trace.
//!
//! Two bounded sets, kept and dropped, each evicting its oldest entry first
//! (first in, first out: a decision is remembered for a while after it was
//! made, whether or not a late span asked for it). An entry holds the trace's
//! fingerprint and its decision together, under one lock, so a lookup never
//! sees one trace's ID with another's policy. The sets are sharded by
//! fingerprint so partition tasks rarely meet on a lock; each task touches
//! the cache once per trace (a lookup when the trace is first seen, an
//! insert when it is decided), not per span.
//!
//! Decisions come from this process (`Found::Memory`) or from the decision
//! log an earlier owner of the partition wrote (`Found::Log`, see
//! `decision_log`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{Decision, TraceId};

/// What the cache remembers about a decided trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Remembered {
    Kept(Decision),
    Dropped,
}

/// Where a remembered decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Found {
    /// By this process.
    Memory,
    /// By an earlier owner of the partition, read back from the decision log.
    Log,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Log => "log",
        }
    }
}

/// Approximate bytes per remembered trace: the fingerprint in the eviction
/// queue (8) plus a map slot (16 bytes and a control byte, at hashbrown's
/// load factor of 7/8, rounded up to a power of two of buckets).
pub const ENTRY_BYTES: usize = 8 + 2 * 17;

/// Shards are worth it only when each holds a good number of entries; a
/// tiny cache stays exact in one shard.
const ENTRIES_PER_SHARD: usize = 4096;
const MAX_SHARDS: usize = 64;

#[derive(Clone, Copy)]
struct KeptMeta {
    policy: u16,
    rate: f32,
    found: Found,
}

/// A bounded map that evicts its oldest entry to make room.
struct Fifo<V> {
    /// Keyed per process: trace IDs come from outside, and a crafted set
    /// must not pile up in one bucket.
    map: HashMap<u64, V, foldhash::fast::RandomState>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl<V: Copy> Fifo<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Inserts or updates; true when an older entry had to go.
    fn insert(&mut self, fp: u64, value: V) -> bool {
        if self.capacity == 0 {
            return false;
        }
        if let Some(v) = self.map.get_mut(&fp) {
            *v = value;
            return false;
        }
        let evicted = self.order.len() >= self.capacity;
        if evicted && let Some(oldest) = self.order.pop_front() {
            self.map.remove(&oldest);
        }
        self.order.push_back(fp);
        self.map.insert(fp, value);
        evicted
    }

    fn get(&self, fp: u64) -> Option<V> {
        self.map.get(&fp).copied()
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

struct Shard {
    kept: Fifo<KeptMeta>,
    dropped: Fifo<Found>,
}

pub struct DecisionCache {
    shards: Box<[Mutex<Shard>]>,
    /// Policy names, interned: an entry holds an index, not a string.
    policies: Mutex<Vec<Arc<str>>>,
    evicted_kept: metrics::Counter,
    evicted_dropped: metrics::Counter,
}

fn shard_count(entries: usize) -> usize {
    (entries / ENTRIES_PER_SHARD)
        .next_power_of_two()
        .clamp(1, MAX_SHARDS)
}

impl DecisionCache {
    /// Remembers up to `kept` kept and `dropped` dropped traces.
    pub fn new(kept: usize, dropped: usize) -> Self {
        let n = shard_count(kept.max(dropped));
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    kept: Fifo::new(kept.div_ceil(n)),
                    dropped: Fifo::new(dropped.div_ceil(n)),
                })
            })
            .collect();
        Self {
            shards,
            policies: Mutex::new(Vec::new()),
            evicted_kept: metrics::counter!("tailsift_decision_cache_evictions_total", "set" => "kept"),
            evicted_dropped: metrics::counter!("tailsift_decision_cache_evictions_total", "set" => "dropped"),
        }
    }

    fn shard(&self, fp: u64) -> MutexGuard<'_, Shard> {
        let i = (fp as usize) & (self.shards.len() - 1);
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn remember(&self, id: &TraceId, decision: &Decision, found: Found) {
        let fp = id.shard_hash();
        let evicted = if decision.keep {
            let meta = KeptMeta {
                policy: self.intern(&decision.policy),
                rate: decision.sample_rate as f32,
                found,
            };
            self.shard(fp).kept.insert(fp, meta)
        } else {
            self.shard(fp).dropped.insert(fp, found)
        };
        if evicted {
            let counter = match decision.keep {
                true => &self.evicted_kept,
                false => &self.evicted_dropped,
            };
            counter.increment(1);
        }
    }

    /// The remembered decision of `id`, and where it was made.
    pub fn lookup(&self, id: &TraceId) -> Option<(Remembered, Found)> {
        let fp = id.shard_hash();
        let (kept, dropped) = {
            let shard = self.shard(fp);
            (shard.kept.get(fp), shard.dropped.get(fp))
        };
        if let Some(meta) = kept {
            let decision = Decision::keep(self.policy_name(meta.policy), f64::from(meta.rate));
            return Some((Remembered::Kept(decision), meta.found));
        }
        dropped.map(|found| (Remembered::Dropped, found))
    }

    /// Remembered traces, kept and dropped.
    pub fn len(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(k, d), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (k + s.kept.len(), d + s.dropped.len())
        })
    }

    /// Policy names are few (they come from the config, or from the log of
    /// an earlier config), so a linear intern table under a mutex is fine:
    /// it is touched once per kept trace. Past `u16::MAX` names, further
    /// ones are remembered as "unknown".
    fn intern(&self, name: &Arc<str>) -> u16 {
        let mut names = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = names.iter().position(|n| n == name) {
            return i as u16;
        }
        if names.len() >= usize::from(u16::MAX) {
            return u16::MAX;
        }
        names.push(name.clone());
        (names.len() - 1) as u16
    }

    fn policy_name(&self, i: u16) -> Arc<str> {
        let names = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        names
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> TraceId {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&n.to_be_bytes());
        TraceId(b)
    }

    #[test]
    fn remembers_kept_and_dropped_with_their_origin() {
        let c = DecisionCache::new(1024, 1024);
        c.remember(&id(1), &Decision::keep("errors".into(), 1.0), Found::Memory);
        c.remember(&id(2), &Decision::drop("none".into()), Found::Log);
        c.remember(&id(3), &Decision::keep("baseline".into(), 10.0), Found::Log);
        assert_eq!(
            c.lookup(&id(1)),
            Some((
                Remembered::Kept(Decision::keep("errors".into(), 1.0)),
                Found::Memory
            ))
        );
        assert_eq!(c.lookup(&id(2)), Some((Remembered::Dropped, Found::Log)));
        assert_eq!(
            c.lookup(&id(3)),
            Some((
                Remembered::Kept(Decision::keep("baseline".into(), 10.0)),
                Found::Log
            ))
        );
        assert_eq!(c.lookup(&id(4)), None);
    }

    #[test]
    fn evicts_oldest_first_and_never_more_than_capacity() {
        let c = DecisionCache::new(4, 4);
        for n in 0..200 {
            c.remember(&id(n), &Decision::drop("none".into()), Found::Memory);
        }
        assert_eq!(c.len(), (0, 4));
        let remembered: Vec<u32> = (0..200).filter(|n| c.lookup(&id(*n)).is_some()).collect();
        assert_eq!(remembered, vec![196, 197, 198, 199]);
    }

    /// The measured failure of the direct-mapped cache: 60,000 kept traces,
    /// fewer than the 100,000 configured, then a late span for each of the
    /// 3,000 oldest. Every one must still find its decision.
    #[test]
    fn below_capacity_nothing_is_forgotten() {
        let c = DecisionCache::new(100_000, 1_000_000);
        let ids: Vec<TraceId> = (0..60_000).map(|_| TraceId(rand::random())).collect();
        for (i, t) in ids.iter().enumerate() {
            let policy: Arc<str> = format!("p{}", i % 3).into();
            c.remember(
                t,
                &Decision::keep(policy, 1.0 + (i % 3) as f64),
                Found::Memory,
            );
        }
        for (i, t) in ids.iter().take(3_000).enumerate() {
            let want = Decision::keep(format!("p{}", i % 3).into(), 1.0 + (i % 3) as f64);
            assert_eq!(c.lookup(t), Some((Remembered::Kept(want), Found::Memory)));
        }
    }

    /// Past capacity the oldest go, not random ones: the newest `capacity`
    /// entries (less a sharding margin) are all there.
    #[test]
    fn past_capacity_the_newest_stay() {
        let c = DecisionCache::new(50_000, 10);
        let ids: Vec<TraceId> = (0..120_000).map(|_| TraceId(rand::random())).collect();
        for t in &ids {
            c.remember(t, &Decision::keep("p".into(), 1.0), Found::Memory);
        }
        let newest = &ids[ids.len() - 45_000..];
        assert!(newest.iter().all(|t| c.lookup(t).is_some()));
        let oldest = &ids[..60_000];
        assert!(oldest.iter().all(|t| c.lookup(t).is_none()));
    }

    #[test]
    fn an_update_keeps_one_entry() {
        let c = DecisionCache::new(8, 8);
        c.remember(&id(1), &Decision::keep("a".into(), 1.0), Found::Log);
        c.remember(&id(1), &Decision::keep("b".into(), 2.0), Found::Memory);
        assert_eq!(c.len(), (1, 0));
        assert_eq!(
            c.lookup(&id(1)),
            Some((
                Remembered::Kept(Decision::keep("b".into(), 2.0)),
                Found::Memory
            ))
        );
    }
}
