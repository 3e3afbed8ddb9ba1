//! Impossible span times and how they are corrected.
//!
//! A span's start decides its daily index and its times feed the latency
//! policies, so a start at 0, in the far future or near `i64::MAX` would
//! write to an index Jaeger never reads (or that overflows `long`) and
//! make a 55-year trace that the latency policy keeps. The window of sane
//! starts for a message is `[max(Kafka timestamp, now) − max_span_age,
//! now + max_clock_skew]`; the Kafka timestamp is the producer's (or the
//! broker's) clock when the message was sent, a witness independent of
//! the span's own clock.
//!
//! The choice is correct-and-tag, not dead-letter: the span is still
//! evidence for its trace, and a Jaeger user looking for it finds it. A
//! start outside the window becomes the message's Kafka timestamp (moved
//! into the window), an end before the start or past the window becomes
//! the start; the document keeps the original values as tags
//! (`tailsift.original_start_unix_nano`, `tailsift.original_end_unix_nano`,
//! `tailsift.time_corrected` = the reason). The correction is applied at
//! scan time, so policies see the corrected values, and again, with the
//! same bounds (kept with the message), when the document is written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `sampling.max_span_age` and `sampling.max_clock_skew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimits {
    pub max_span_age: Duration,
    pub max_clock_skew: Duration,
}

impl Default for TimeLimits {
    fn default() -> Self {
        Self {
            max_span_age: Duration::from_secs(7 * 86_400),
            max_clock_skew: Duration::from_secs(3600),
        }
    }
}

/// The sane span times for one message, in Unix nanoseconds; fixed when
/// the message is scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBounds {
    earliest: u64,
    latest: u64,
    /// What an impossible start becomes.
    anchor: u64,
}

/// Why a span's times were corrected; the `reason` label of
/// `tailsift_span_time_corrections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    StartTooOld,
    StartInFuture,
    EndBeforeStart,
    EndInFuture,
}

impl Fault {
    /// Every reason, for the metric series created at start.
    pub const ALL: [Fault; 4] = [
        Self::StartTooOld,
        Self::StartInFuture,
        Self::EndBeforeStart,
        Self::EndInFuture,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTooOld => "start_too_old",
            Self::StartInFuture => "start_in_future",
            Self::EndBeforeStart => "end_before_start",
            Self::EndInFuture => "end_in_future",
        }
    }
}

/// Sane times for a span, and what was wrong with the original ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrected {
    pub start: u64,
    pub end: u64,
    pub fault: Option<Fault>,
}

impl TimeBounds {
    /// Bounds accepting every time: for spans that never came from Kafka
    /// (tests, tools).
    pub const UNBOUNDED: Self = Self {
        earliest: 0,
        latest: u64::MAX,
        anchor: 0,
    };

    /// The bounds of a message with Kafka timestamp `kafka_millis` (none
    /// or negative: unknown) scanned at `now`.
    pub fn new(limits: TimeLimits, kafka_millis: Option<i64>, now: SystemTime) -> Self {
        let now = nanos_since_epoch(now);
        let latest = now.saturating_add(as_nanos(limits.max_clock_skew));
        // A Kafka timestamp past the window is as bogus as such a span.
        let sent = kafka_millis
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| ms.saturating_mul(1_000_000).min(latest));
        let earliest = sent
            .unwrap_or(now)
            .max(now)
            .saturating_sub(as_nanos(limits.max_span_age));
        let anchor = sent.unwrap_or(now).clamp(earliest, latest);
        Self {
            earliest,
            latest,
            anchor,
        }
    }

    pub fn correct(&self, start: u64, end: u64) -> Corrected {
        let start_fault = match start {
            s if s < self.earliest => Some(Fault::StartTooOld),
            s if s > self.latest => Some(Fault::StartInFuture),
            _ => None,
        };
        let new_start = match start_fault {
            Some(_) => self.anchor,
            None => start,
        };
        let end_fault = match end {
            e if e < new_start => Some(Fault::EndBeforeStart),
            e if e > self.latest => Some(Fault::EndInFuture),
            _ => None,
        };
        let new_end = match end_fault {
            Some(_) => new_start,
            None => end,
        };
        Corrected {
            start: new_start,
            end: new_end,
            fault: start_fault.or(end_fault),
        }
    }
}

fn as_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, as_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;
    const DAY: u64 = 24 * HOUR;

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Now is day 20 000 (2024-10-04); the message was sent a minute ago.
    fn bounds() -> (TimeBounds, u64, u64) {
        let now = 20_000 * DAY;
        let sent = now - 60_000_000_000;
        let b = TimeBounds::new(
            TimeLimits::default(),
            Some((sent / 1_000_000) as i64),
            at(now),
        );
        (b, now, sent)
    }

    #[test]
    fn sane_times_stay() {
        let (b, now, _) = bounds();
        let c = b.correct(now - 6 * DAY, now - 6 * DAY + 5);
        assert_eq!(
            (c.start, c.end, c.fault),
            (now - 6 * DAY, now - 6 * DAY + 5, None)
        );
        let c = b.correct(now + HOUR - 10, now + HOUR);
        assert_eq!(c.fault, None);
    }

    #[test]
    fn impossible_starts_become_the_kafka_timestamp() {
        let (b, now, sent) = bounds();
        for start in [0, now - 8 * DAY] {
            let c = b.correct(start, now);
            assert_eq!(
                (c.start, c.end, c.fault),
                (sent, now, Some(Fault::StartTooOld))
            );
        }
        // i64::MAX seconds as nanos saturates to u64::MAX in the scan.
        for start in [now + 2 * HOUR, u64::MAX] {
            let c = b.correct(start, u64::MAX);
            assert_eq!((c.start, c.end), (sent, sent), "{start}");
            assert_eq!(c.fault, Some(Fault::StartInFuture));
        }
    }

    #[test]
    fn bad_ends_become_the_start() {
        let (b, now, _) = bounds();
        let c = b.correct(now - 5, now - 10);
        assert_eq!(
            (c.start, c.end, c.fault),
            (now - 5, now - 5, Some(Fault::EndBeforeStart))
        );
        let c = b.correct(now, now + 30 * DAY);
        assert_eq!((c.end, c.fault), (now, Some(Fault::EndInFuture)));
    }

    #[test]
    fn a_bogus_kafka_timestamp_cannot_widen_the_window() {
        let now = 20_000 * DAY;
        let limits = TimeLimits::default();
        for ts in [Some(0), Some(-1), None, Some(i64::MAX)] {
            let b = TimeBounds::new(limits, ts, at(now));
            let c = b.correct(0, 0);
            assert!(c.start >= now - 7 * DAY && c.start <= now + HOUR, "{ts:?}");
        }
        // An old message (a backlog) keeps its old, sane spans.
        let sent = now - 6 * DAY;
        let b = TimeBounds::new(limits, Some((sent / 1_000_000) as i64), at(now));
        assert_eq!(b.correct(sent - DAY / 2, sent).fault, None);
        assert_eq!(b.correct(sent - 2 * DAY, sent).start, sent);
    }

    #[test]
    fn unbounded_accepts_everything_but_reversed_ends() {
        let b = TimeBounds::UNBOUNDED;
        assert_eq!(b.correct(0, 5).fault, None);
        assert_eq!(b.correct(u64::MAX - 1, u64::MAX).fault, None);
        assert_eq!(b.correct(5, 4).fault, Some(Fault::EndBeforeStart));
    }
}
