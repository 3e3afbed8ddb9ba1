//! Applies `span_time`'s correction to a fully decoded span before its
//! document is written: the same bounds as at scan time (kept with the
//! message), so the document shows what the policies saw, plus tags with
//! the original values.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::decode::{DecodedSpan, jaeger};
use crate::span_time::{Corrected, TimeBounds};

pub const ORIGINAL_START_TAG: &str = "tailsift.original_start_unix_nano";
pub const ORIGINAL_END_TAG: &str = "tailsift.original_end_unix_nano";
pub const REASON_TAG: &str = "tailsift.time_corrected";

/// Corrects `span`'s times in place if they are impossible.
pub fn apply(span: &mut DecodedSpan, bounds: &TimeBounds) {
    let (start, end) = times(span);
    let c = bounds.correct(start, end);
    let Some(fault) = c.fault else {
        return;
    };
    let tags = [
        (ORIGINAL_START_TAG, start.to_string()),
        (ORIGINAL_END_TAG, end.to_string()),
        (REASON_TAG, fault.as_str().to_string()),
    ];
    match span {
        DecodedSpan::Otlp(s) => {
            s.span.start_time_unix_nano = c.start;
            s.span.end_time_unix_nano = c.end;
            s.span
                .attributes
                .extend(tags.into_iter().map(|(k, v)| otlp_string(k, v)));
        }
        DecodedSpan::Jaeger(s) => {
            set_jaeger_times(s, c);
            s.tags
                .extend(tags.into_iter().map(|(k, v)| jaeger_string(k, v)));
        }
    }
}

/// Start and end in Unix nanoseconds, read as the scan reads them.
fn times(span: &DecodedSpan) -> (u64, u64) {
    match span {
        DecodedSpan::Otlp(s) => (s.span.start_time_unix_nano, s.span.end_time_unix_nano),
        DecodedSpan::Jaeger(s) => {
            let start = s
                .start_time
                .as_ref()
                .map_or(0, |t| jaeger::protobuf_nanos(t.seconds, i64::from(t.nanos)));
            let duration = s
                .duration
                .as_ref()
                .map_or(0, |d| jaeger::protobuf_nanos(d.seconds, i64::from(d.nanos)));
            let start = start.max(0) as u64;
            (start, start.saturating_add_signed(duration))
        }
    }
}

fn set_jaeger_times(s: &mut jaeger::Span, c: Corrected) {
    const NANOS: u64 = 1_000_000_000;
    let duration = c.end.saturating_sub(c.start);
    s.start_time = Some(pbjson_types::Timestamp {
        seconds: (c.start / NANOS) as i64,
        nanos: (c.start % NANOS) as i32,
    });
    s.duration = Some(pbjson_types::Duration {
        seconds: (duration / NANOS) as i64,
        nanos: (duration % NANOS) as i32,
    });
}

fn otlp_string(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn jaeger_string(key: &str, value: String) -> jaeger::KeyValue {
    jaeger::KeyValue {
        key: key.to_string(),
        v_str: value,
        ..Default::default()
    }
}
