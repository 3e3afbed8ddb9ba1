//! Where a partition task's messages come from: its own librdkafka queue
//! (read without a task in between) and the hand-over channel, and the
//! pause that stops fetching while the task is stuck.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use rdkafka::consumer::stream_consumer::{MessageStream, StreamPartitionQueue};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use std::time::Duration;
use tokio::sync::mpsc;

use super::Incoming;
use crate::source::Pause;
use crate::source::context::SourceContext;

/// A partition's own librdkafka queue, split from the consumer's.
/// How long the task may be stuck on one message (or tick) before its
/// partition is paused, so that librdkafka stops fetching it.
const STUCK: Duration = Duration::from_millis(200);

pub(crate) type PartitionQueue = StreamPartitionQueue<SourceContext>;
pub(super) type PartitionStream<'a> = MessageStream<'a, SourceContext>;

/// Where a partition task's messages come from.
pub(crate) struct Input {
    /// The partition's own queue, and how to pause fetching it; None in
    /// tests, and if the queue could not be split.
    pub(crate) queue: Option<(PartitionQueue, Pause)>,
    /// Messages the consumer's main queue delivered before the split
    /// (and, in tests, every message).
    pub(crate) handover: mpsc::Receiver<Incoming>,
}

/// The next message of the partition's queue (never, without one).
pub(super) async fn next_message<'a>(
    stream: &mut Option<PartitionStream<'a>>,
) -> KafkaResult<BorrowedMessage<'a>> {
    match stream {
        Some(s) => futures::StreamExt::next(s)
            .await
            .expect("kafka streams never terminate"),
        None => std::future::pending().await,
    }
}

/// A message already in the queue, or None without waiting. An empty poll
/// leaves a no-op waker behind; the loop's next `next_message` installs
/// the task's own before it waits.
pub(super) fn ready_message<'a>(
    stream: &mut PartitionStream<'a>,
) -> Option<KafkaResult<BorrowedMessage<'a>>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_next(&mut cx) {
        Poll::Ready(m) => m,
        Poll::Pending => None,
    }
}

/// Pauses the partition while its task is stuck on one piece of work for
/// longer than `STUCK` (the sink is full, memory is short, the decision
/// log is slow): librdkafka stops fetching it, instead of holding a full
/// prefetch for it. Resumed once the work is done.
pub(super) struct Backpressure {
    pause: Option<Pause>,
    paused: bool,
}

impl Backpressure {
    pub(super) fn new(pause: Option<Pause>) -> Self {
        Self {
            pause,
            paused: false,
        }
    }

    pub(super) async fn around<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        // Most work completes without waiting: no timer for it.
        let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = first {
            return out;
        }
        if self.pause.is_none() {
            return work.await;
        }
        if let Ok(out) = tokio::time::timeout(STUCK, work.as_mut()).await {
            return out;
        }
        self.set(true);
        let out = work.await;
        self.set(false);
        out
    }

    fn set(&mut self, paused: bool) {
        if let Some(pause) = &self.pause
            && self.paused != paused
        {
            pause.set(paused);
            self.paused = paused;
        }
    }
}

impl Drop for Backpressure {
    /// A task that ends while stuck (revoked, stopped) leaves nothing paused.
    fn drop(&mut self) {
        self.set(false);
    }
}
