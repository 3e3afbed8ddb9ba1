//! A byte budget that makes producers wait: what bounds the sink queue,
//! dead letters in flight and repartitioned pieces in flight, so that each
//! is a fixed share of `memory.limit` (see `plan::MemoryPlan`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone, Debug)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    capacity: usize,
}

impl ByteBudget {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Waits until `bytes` fit and takes them until the permit is dropped.
    /// More than the whole budget takes all of it rather than waiting
    /// forever.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = bytes.min(self.capacity) as u32;
        self.bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the budget's semaphore is never closed")
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.capacity - self.bytes.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_room_and_caps_outliers() {
        let b = ByteBudget::new(100);
        let first = b.reserve(60).await;
        assert_eq!(b.used(), 60);
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.reserve(60)).await;
        assert!(waiting.is_err(), "the second reservation must wait");
        drop(first);
        let big = b.reserve(1_000).await;
        assert_eq!(b.used(), 100, "an outlier takes the whole budget");
        drop(big);
        assert_eq!(b.used(), 0);
    }
}
