//! Per-partition offset watermarks.
//!
//! A message is resolved when every span scanned from it is resolved: dropped
//! by a decision, or written and acknowledged by Elasticsearch. The offset
//! safe to commit is the lowest unresolved one, so a crash replays exactly the
//! messages whose spans might not be in Elasticsearch yet.

use std::collections::VecDeque;

use tokio::sync::mpsc;

/// Spans resolved per source offset, sent back to the partition that owns
/// them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub offsets: Vec<(i64, u32)>,
}

impl Resolved {
    /// Adds `spans` resolved spans of message `offset`, merging with the last
    /// entry since a trace's spans usually come from few, adjacent messages.
    pub fn add(&mut self, offset: i64, spans: u32) {
        match self.offsets.last_mut() {
            Some((o, n)) if *o == offset => *n += spans,
            _ => self.offsets.push((offset, spans)),
        }
    }

    pub fn span_count(&self) -> u64 {
        self.offsets.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

/// Handed to the sink with a kept trace; acknowledging it resolves the
/// trace's spans in the partition that buffered them. Dropping it without
/// acknowledging leaves them unresolved (they will be replayed).
#[derive(Debug)]
pub struct AckHandle {
    tx: mpsc::UnboundedSender<Resolved>,
    resolved: Resolved,
}

impl AckHandle {
    pub fn new(tx: mpsc::UnboundedSender<Resolved>, resolved: Resolved) -> Self {
        Self { tx, resolved }
    }

    /// A handle whose acknowledgement goes nowhere, for tools and tests
    /// that have no partition behind them.
    pub fn detached() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self::new(tx, Resolved::default())
    }

    /// Whether nobody waits for this acknowledgement any more (the
    /// partition was revoked).
    pub fn is_orphaned(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn ack(self) {
        // A closed channel means the partition was revoked meanwhile; the new
        // owner replays from the committed watermark, so nothing is lost.
        let _ = self.tx.send(self.resolved);
    }
}

/// Tracks unresolved spans per message of one partition.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// Messages with unresolved spans, in offset order.
    pending: VecDeque<(i64, u32)>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// The watermark never passes this offset, resolved or not.
    held: Option<i64>,
}

impl PartitionOffsets {
    /// Records message `offset` with `spans` spans to resolve. Messages with
    /// no spans (bad input, sent to the dead-letter topic) pass 0.
    pub fn track(&mut self, offset: i64, spans: u32) {
        if spans > 0 {
            // Almost always appended (no search); a message the consumer's
            // main queue delivered late may belong a little further back.
            match self.pending.back() {
                Some((last, _)) if *last >= offset => {
                    let at = self.pending.partition_point(|(o, _)| *o < offset);
                    self.pending.insert(at, (offset, spans));
                }
                _ => self.pending.push_back((offset, spans)),
            }
        }
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Resolves `spans` spans of message `offset`. Unknown offsets are
    /// ignored: they belong to a previous assignment of the partition.
    pub fn resolve(&mut self, offset: i64, spans: u32) {
        if let Ok(i) = self.pending.binary_search_by_key(&offset, |(o, _)| *o) {
            let entry = &mut self.pending[i];
            entry.1 = entry.1.saturating_sub(spans);
        }
        while matches!(self.pending.front(), Some((_, 0))) {
            self.pending.pop_front();
        }
    }

    /// One more thing that must be resolved before message `offset` is,
    /// besides its spans (the decision records of the traces it starts).
    pub fn defer(&mut self, offset: i64) {
        match self.pending.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) => self.pending[i].1 += 1,
            Err(i) => self.pending.insert(i, (offset, 1)),
        }
    }

    pub fn resolve_all(&mut self, r: &Resolved) {
        for &(offset, spans) in &r.offsets {
            self.resolve(offset, spans);
        }
    }

    /// Keeps the watermark at or below `offset` from now on, even once
    /// everything is resolved: the next owner of the partition replays from
    /// there (see `PartitionTask::shutdown`).
    pub fn hold(&mut self, offset: i64) {
        self.held = Some(self.held.map_or(offset, |h| h.min(offset)));
    }

    /// The offset to commit: the lowest unresolved message, or one past the
    /// last seen message when everything is resolved; never past a hold.
    pub fn committable(&self) -> Option<i64> {
        let resolved_to = match self.pending.front() {
            Some((offset, _)) => Some(*offset),
            None => self.next,
        };
        match (resolved_to, self.held) {
            (Some(c), Some(h)) => Some(c.min(h)),
            (c, _) => c,
        }
    }

    /// Messages still holding unresolved spans.
    pub fn unresolved_messages(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_lowest_unresolved() {
        let mut p = PartitionOffsets::default();
        assert_eq!(p.committable(), None);
        p.track(10, 2);
        p.track(11, 0);
        p.track(12, 1);
        assert_eq!(p.committable(), Some(10));
        p.resolve(12, 1);
        assert_eq!(p.committable(), Some(10));
        p.resolve(10, 1);
        assert_eq!(p.committable(), Some(10));
        p.resolve(10, 1);
        assert_eq!(p.committable(), Some(13));
        assert_eq!(p.unresolved_messages(), 0);
    }

    #[test]
    fn out_of_order_tracking() {
        let mut p = PartitionOffsets::default();
        p.track(7, 1);
        p.track(5, 1);
        assert_eq!(p.committable(), Some(5));
        p.resolve(5, 1);
        assert_eq!(p.committable(), Some(7));
        p.resolve(7, 1);
        assert_eq!(p.committable(), Some(8));
    }

    #[test]
    fn gaps_and_unknown_offsets() {
        let mut p = PartitionOffsets::default();
        p.track(5, 1);
        p.track(9, 1);
        p.resolve(7, 1);
        p.resolve(5, 1);
        assert_eq!(p.committable(), Some(9));
        p.resolve(9, 3);
        assert_eq!(p.committable(), Some(10));
    }

    #[test]
    fn hold_caps_the_watermark() {
        let mut p = PartitionOffsets::default();
        p.track(10, 1);
        p.track(11, 2);
        p.track(12, 1);
        p.hold(11);
        p.hold(12);
        p.resolve(10, 1);
        p.resolve(11, 2);
        p.resolve(12, 1);
        assert_eq!(p.unresolved_messages(), 0);
        assert_eq!(p.committable(), Some(11));
        p.hold(5);
        assert_eq!(p.committable(), Some(5));
    }

    /// A trace decided from messages 10–11 has its decision record in
    /// flight: the watermark stays at 10 until the record is stored, even
    /// once every span is resolved.
    #[test]
    fn a_deferred_message_waits_for_its_record() {
        let mut p = PartitionOffsets::default();
        p.track(10, 2);
        p.track(11, 1);
        p.defer(10);
        p.resolve(10, 2);
        p.resolve(11, 1);
        assert_eq!(p.committable(), Some(10));
        p.resolve(10, 1);
        assert_eq!(p.committable(), Some(12));
    }

    #[test]
    fn ack_handle_delivers_resolution() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut r = Resolved::default();
        r.add(3, 1);
        r.add(3, 2);
        r.add(4, 1);
        assert_eq!(r.span_count(), 4);
        AckHandle::new(tx, r.clone()).ack();
        assert_eq!(rx.try_recv().unwrap(), r);
    }
}
