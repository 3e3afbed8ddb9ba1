//! Remembered decisions, so spans arriving after their trace was decided
//! follow that decision at once instead of starting a new, partial trace.
//!
//! Both sets are direct-mapped tables of 64-bit trace fingerprints in atomics:
//! 8–16 bytes per entry, lock-free, shared by all partition tasks. A newer
//! trace landing on the same slot evicts the older one, which approximates
//! LRU at a fraction of its memory and without a lock on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::{Decision, TraceId};

/// What the cache remembers about a decided trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Remembered {
    Kept(Decision),
    Dropped,
}

pub struct DecisionCache {
    kept_ids: Box<[AtomicU64]>,
    /// Per kept slot: policy index (high 32 bits) and sample rate as f32.
    kept_meta: Box<[AtomicU64]>,
    dropped_ids: Box<[AtomicU64]>,
    policies: Mutex<Vec<Arc<str>>>,
}

/// Zero marks an empty slot, so fingerprints are never zero. `scope`
/// separates the decisions of different windows sharing the table.
fn fingerprint(id: &TraceId, scope: u64) -> u64 {
    (id.shard_hash() ^ scope).max(1)
}

fn table(entries: usize) -> Box<[AtomicU64]> {
    let n = entries.max(1).next_power_of_two();
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn slot(table: &[AtomicU64], fp: u64) -> &AtomicU64 {
    // Use the high bits for the slot: the low bits are what the map uses.
    &table[(fp.rotate_left(32) as usize) & (table.len() - 1)]
}

impl DecisionCache {
    pub fn new(kept: usize, dropped: usize) -> Self {
        Self {
            kept_ids: table(kept),
            kept_meta: table(kept),
            dropped_ids: table(dropped),
            policies: Mutex::new(Vec::new()),
        }
    }

    pub fn remember(&self, id: &TraceId, decision: &Decision) {
        self.remember_in(0, id, decision);
    }

    pub fn lookup(&self, id: &TraceId) -> Option<Remembered> {
        self.lookup_in(0, id)
    }

    /// Remembers a decision within `scope`: only lookups in the same scope
    /// see it.
    pub fn remember_in(&self, scope: u64, id: &TraceId, decision: &Decision) {
        let fp = fingerprint(id, scope);
        if decision.keep {
            let meta = (u64::from(self.intern(&decision.policy)) << 32)
                | u64::from((decision.sample_rate as f32).to_bits());
            slot(&self.kept_meta, fp).store(meta, Ordering::Relaxed);
            slot(&self.kept_ids, fp).store(fp, Ordering::Release);
        } else {
            slot(&self.dropped_ids, fp).store(fp, Ordering::Relaxed);
        }
    }

    pub fn lookup_in(&self, scope: u64, id: &TraceId) -> Option<Remembered> {
        let fp = fingerprint(id, scope);
        if slot(&self.kept_ids, fp).load(Ordering::Acquire) == fp {
            let meta = slot(&self.kept_meta, fp).load(Ordering::Relaxed);
            let policy = self.policy_name((meta >> 32) as u32);
            let rate = f64::from(f32::from_bits(meta as u32));
            return Some(Remembered::Kept(Decision::keep(policy, rate)));
        }
        (slot(&self.dropped_ids, fp).load(Ordering::Relaxed) == fp).then_some(Remembered::Dropped)
    }

    /// Policy names are few (they come from the config), so a linear intern
    /// table under a mutex is fine: it is touched once per kept trace.
    fn intern(&self, name: &Arc<str>) -> u32 {
        let mut names = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        match names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                names.push(name.clone());
                (names.len() - 1) as u32
            }
        }
    }

    fn policy_name(&self, i: u32) -> Arc<str> {
        let names = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"))
    }

    /// Approximate memory of the tables, for the memory budget.
    pub fn bytes(&self) -> usize {
        8 * (self.kept_ids.len() + self.kept_meta.len() + self.dropped_ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        TraceId([n; 16])
    }

    #[test]
    fn remembers_kept_and_dropped() {
        let c = DecisionCache::new(1024, 1024);
        c.remember(&id(1), &Decision::keep("errors".into(), 1.0));
        c.remember(&id(2), &Decision::drop("none".into()));
        c.remember(&id(3), &Decision::keep("baseline".into(), 10.0));
        assert_eq!(
            c.lookup(&id(1)),
            Some(Remembered::Kept(Decision::keep("errors".into(), 1.0)))
        );
        assert_eq!(c.lookup(&id(2)), Some(Remembered::Dropped));
        assert_eq!(
            c.lookup(&id(3)),
            Some(Remembered::Kept(Decision::keep("baseline".into(), 10.0)))
        );
        assert_eq!(c.lookup(&id(4)), None);
    }

    #[test]
    fn scopes_do_not_see_each_other() {
        let c = DecisionCache::new(1024, 1024);
        c.remember_in(7, &id(1), &Decision::drop("none".into()));
        assert_eq!(c.lookup_in(7, &id(1)), Some(Remembered::Dropped));
        assert_eq!(c.lookup_in(8, &id(1)), None);
        assert_eq!(c.lookup(&id(1)), None);
    }

    #[test]
    fn bounded_by_capacity() {
        let c = DecisionCache::new(4, 4);
        for n in 0..200u8 {
            c.remember(&id(n), &Decision::drop("none".into()));
        }
        let remembered = (0..200u8).filter(|n| c.lookup(&id(*n)).is_some()).count();
        assert!(remembered <= 4, "{remembered}");
        assert!(c.lookup(&id(199)).is_some());
    }
}
