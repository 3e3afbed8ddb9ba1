//! Budgets shared by every partition task: the `rate_limiting` token bucket
//! and the per-second span counters of `composite`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every update is a single assignment).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token bucket of spans (or bytes), as the collector's `rate_limiting`
/// (`bytes_limiting`) builds with `golang.org/x/time/rate`: refills at
/// `rate` per second up to `burst`, starts full, and a trace passes only if
/// all its spans (bytes) fit.
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(per_second: u64, burst: u64) -> Self {
        Self {
            rate: per_second as f64,
            burst: burst as f64,
            state: Mutex::new(Bucket {
                tokens: burst as f64,
                last: None,
            }),
        }
    }

    /// Takes `amount` tokens if available at `now`.
    pub(crate) fn allow(&self, amount: u64, now: Instant) -> bool {
        let mut b = lock(&self.state);
        let tokens = match b.last {
            None => self.burst,
            Some(last) => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
                (b.tokens + refill).min(self.burst)
            }
        };
        let need = amount as f64;
        if need > tokens {
            // Like x/time/rate: a refused request leaves the bucket as it was.
            return false;
        }
        b.tokens = tokens - need;
        // Tasks may pass slightly older instants; never move time back.
        b.last = Some(b.last.map_or(now, |l| l.max(now)));
        true
    }
}

/// Spans a composite policy sampled in the current second, per sub-policy.
pub(crate) struct SecondWindow {
    state: Mutex<Window>,
}

struct Window {
    second: u64,
    total: u64,
    per_sub: Vec<u64>,
}

impl SecondWindow {
    pub(crate) fn new(subs: usize) -> Self {
        Self {
            state: Mutex::new(Window {
                second: 0,
                total: 0,
                per_sub: vec![0; subs],
            }),
        }
    }

    /// Counts `spans` against sub-policy `sub` in `second` if both its
    /// allocation and the total stay within budget.
    pub(crate) fn admit(
        &self,
        second: u64,
        sub: usize,
        spans: u64,
        allocated: u64,
        max_total: u64,
    ) -> bool {
        let mut w = lock(&self.state);
        if w.second != second {
            w.second = second;
            w.total = 0;
            w.per_sub.fill(0);
        }
        let Some(used) = w.per_sub.get(sub).copied() else {
            return false;
        };
        if used + spans > allocated || w.total + spans > max_total {
            return false;
        }
        w.per_sub[sub] = used + spans;
        w.total += spans;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_starts_full_and_refills() {
        let t0 = Instant::now();
        let b = TokenBucket::new(10, 20);
        assert!(b.allow(15, t0));
        assert!(!b.allow(10, t0), "only 5 left");
        assert!(b.allow(5, t0));
        assert!(!b.allow(1, t0));
        // Half a second refills 5 spans.
        assert!(b.allow(5, t0 + Duration::from_millis(500)));
        assert!(!b.allow(1, t0 + Duration::from_millis(500)));
        // Never more than the burst.
        assert!(!b.allow(21, t0 + Duration::from_secs(100)));
        assert!(b.allow(20, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn window_resets_each_second() {
        let w = SecondWindow::new(2);
        assert!(w.admit(1, 0, 5, 5, 8));
        assert!(!w.admit(1, 0, 1, 5, 8), "sub budget");
        assert!(!w.admit(1, 1, 4, 5, 8), "total budget");
        assert!(w.admit(1, 1, 3, 5, 8));
        assert!(w.admit(2, 0, 5, 5, 8));
    }
}
