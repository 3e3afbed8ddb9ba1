//! Is the input keyed by trace ID? The default mode samples each partition
//! on its own, which is only right when every span of a trace is on one
//! partition: producers must key each message by its trace ID and put one
//! trace in it (the Jaeger collector does; the OpenTelemetry kafka exporter
//! with `partition_traces_by_id`). Otherwise traces are decided from the
//! part one partition saw, and kept traces lose spans without any error.
//! Such input needs repartition mode (`kafka.repartition`).
//!
//! Every scanned message is checked: no key, a key that is not its trace ID
//! (hex or raw bytes), or several traces in one message. Each is counted,
//! warned about (rate-limited), and `/readyz` says so for a while. With
//! `kafka.repartition: auto` such messages are re-keyed instead of sampled
//! (see `rekey`); they are still counted, and logged and noted as handled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{ScanBatch, TraceId};
use crate::telemetry::LogLimiter;

/// Values of the `reason` label of `tailsift_unkeyed_messages_total`.
pub const REASONS: &[&str] = &["no_key", "other_key", "several_traces"];

/// What `/readyz` adds while unkeyed input was seen within [`NOTE_FOR`].
pub const NOTE: &str = "input not keyed by trace ID: use repartition mode";

/// The same, where `kafka.repartition: auto` re-keys it.
pub const NOTE_REKEYED: &str =
    "input not keyed by trace ID: re-keyed by trace ID (kafka.repartition: auto)";

/// How long after the last unkeyed message `/readyz` keeps the note.
const NOTE_FOR: Duration = Duration::from_secs(600);

/// When an unkeyed message was last seen, in seconds since the epoch (0:
/// never). Process-wide, as the readiness endpoint reports for the process;
/// an atomic store per unkeyed message, nothing for keyed ones.
static LAST_SEEN: AtomicU64 = AtomicU64::new(0);
/// The same for unkeyed messages that were re-keyed (`auto`).
static LAST_REKEYED: AtomicU64 = AtomicU64::new(0);

/// Why a message's key does not place its trace, if it does not.
fn misplaced(key: Option<&[u8]>, batch: &ScanBatch) -> Option<&'static str> {
    let first = batch.spans.first()?.trace_id;
    if batch.spans.iter().any(|s| s.trace_id != first) {
        return Some("several_traces");
    }
    match key {
        None | Some([]) => Some("no_key"),
        Some(k) if names(k, first) => None,
        Some(_) => Some("other_key"),
    }
}

/// The key is the trace ID: hex of up to 32 chars, any case (the Jaeger
/// collector writes it without leading zeros, `%x%016x`; the OpenTelemetry
/// exporter as 32 chars), or its 16 or 8 raw bytes (8 for a 64-bit ID).
fn names(key: &[u8], trace: TraceId) -> bool {
    let as_hex = key.len() <= 32 && key.iter().all(u8::is_ascii_hexdigit) && {
        let mut padded = [b'0'; 32];
        padded[32 - key.len()..].copy_from_slice(key);
        // Into a stack buffer: this runs for every message.
        let mut id = [0u8; 16];
        hex::decode_to_slice(padded, &mut id).is_ok() && id == trace.0
    };
    as_hex || TraceId::from_slice(key) == Some(trace)
}

/// Checks one scanned message of `partition` (called for every message the
/// default and `auto` modes consume); `rekeying`: `auto`, which re-keys the
/// message when this returns why it is misplaced.
pub fn check(
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    batch: &ScanBatch,
    rekeying: bool,
    log: &LogLimiter,
) -> Option<&'static str> {
    let reason = misplaced(key, batch)?;
    metrics::counter!("tailsift_unkeyed_messages_total", "reason" => reason).increment(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    match rekeying {
        true => LAST_REKEYED.store(now, Ordering::Relaxed),
        false => LAST_SEEN.store(now, Ordering::Relaxed),
    }
    log.warn("unkeyed_input", || match rekeying {
        true => tracing::info!(
            partition,
            offset,
            reason,
            "{NOTE_REKEYED}: such messages are split by trace and produced back to the topic"
        ),
        false => tracing::warn!(
            partition,
            offset,
            reason,
            "{NOTE}: traces are spread over partitions and decided from parts \
             (set kafka.repartition: auto, or kafka.repartition.input_topic)"
        ),
    });
    Some(reason)
}

/// [`NOTE`] while unkeyed input was seen recently, else [`NOTE_REKEYED`]
/// while it was re-keyed recently.
pub fn note() -> Option<&'static str> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    note_at(
        now,
        LAST_SEEN.load(Ordering::Relaxed),
        LAST_REKEYED.load(Ordering::Relaxed),
    )
}

/// Unhandled input wins: it is the one that needs an operator.
fn note_at(now: u64, last_seen: u64, last_rekeyed: u64) -> Option<&'static str> {
    let recent = |last: u64| last > 0 && now.saturating_sub(last) < NOTE_FOR.as_secs();
    match (recent(last_seen), recent(last_rekeyed)) {
        (true, _) => Some(NOTE),
        (false, true) => Some(NOTE_REKEYED),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScannedSpan;

    fn batch(traces: &[TraceId]) -> ScanBatch {
        ScanBatch {
            spans: traces
                .iter()
                .map(|&trace_id| ScannedSpan {
                    trace_id,
                    ..Default::default()
                })
                .collect(),
            ..ScanBatch::default()
        }
    }

    fn id(last: u8) -> TraceId {
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[15] = last;
        TraceId(b)
    }

    #[test]
    fn keys_naming_the_trace_pass() {
        let t = id(7);
        let one = batch(&[t, t]);
        let hex = t.to_hex();
        assert_eq!(misplaced(Some(hex.as_bytes()), &one), None);
        assert_eq!(misplaced(Some(hex.to_uppercase().as_bytes()), &one), None);
        assert_eq!(misplaced(Some(&t.0), &one), None);
        // A 64-bit (Jaeger) ID: 16 hex chars, 8 raw bytes, or zero-padded.
        let short = TraceId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("8 bytes");
        let jaeger = batch(&[short]);
        assert_eq!(misplaced(Some(b"0102030405060708"), &jaeger), None);
        assert_eq!(misplaced(Some(&[1, 2, 3, 4, 5, 6, 7, 8]), &jaeger), None);
        assert_eq!(misplaced(Some(short.to_hex().as_bytes()), &jaeger), None);
        // Without leading zeros, as the Jaeger collector writes it.
        assert_eq!(misplaced(Some(b"102030405060708"), &jaeger), None);
        let long = TraceId::from_hex("00000000000000ab0000000000000001").expect("hex");
        assert_eq!(
            misplaced(Some(b"ab0000000000000001"), &batch(&[long])),
            None
        );
        assert_eq!(
            misplaced(None, &batch(&[])),
            None,
            "no spans: nothing to place"
        );
    }

    #[test]
    fn unkeyed_and_batched_input_is_named() {
        let t = id(7);
        assert_eq!(misplaced(None, &batch(&[t])), Some("no_key"));
        assert_eq!(misplaced(Some(b""), &batch(&[t])), Some("no_key"));
        let other = id(8).to_hex();
        assert_eq!(
            misplaced(Some(other.as_bytes()), &batch(&[t])),
            Some("other_key")
        );
        assert_eq!(misplaced(Some(b"user-42"), &batch(&[t])), Some("other_key"));
        let hex = t.to_hex();
        assert_eq!(
            misplaced(Some(hex.as_bytes()), &batch(&[t, id(9)])),
            Some("several_traces")
        );
        for r in [Some("no_key"), Some("other_key"), Some("several_traces")] {
            assert!(REASONS.contains(&r.expect("reason")));
        }
    }

    #[test]
    fn a_report_sets_the_readiness_note() {
        let log = LogLimiter::default();
        let keyed = id(1).to_hex();
        let one = batch(&[id(1)]);
        assert_eq!(check(0, 1, Some(keyed.as_bytes()), &one, false, &log), None);
        assert_eq!(check(0, 2, None, &one, true, &log), Some("no_key"));
        assert_eq!(check(0, 3, None, &one, false, &log), Some("no_key"));
        assert_eq!(note(), Some(NOTE));
    }

    #[test]
    fn notes_last_ten_minutes_and_unhandled_input_wins() {
        let now = 1_000_000;
        assert_eq!(note_at(now, 0, 0), None);
        assert_eq!(note_at(now, 0, now - 10), Some(NOTE_REKEYED));
        assert_eq!(note_at(now, now - 10, now - 5), Some(NOTE));
        assert_eq!(note_at(now, now - 600, now - 599), Some(NOTE_REKEYED));
        assert_eq!(note_at(now, now - 600, now - 600), None);
    }
}
