//! The Jaeger api_v2 model: the prost/pbjson types generated from
//! `proto/jaeger/model.proto`, and the scan of one `Span` message (what the
//! Jaeger collector writes to Kafka, process embedded).
//!
//! Field numbers: Span { trace_id = 1; span_id = 2; operation_name = 3;
//! repeated SpanRef references = 4; uint32 flags = 5; repeated Log logs = 9; Timestamp start_time = 6; Duration duration = 7;
//! repeated KeyValue tags = 8; Process process = 10 }, SpanRef { trace_id = 1;
//! span_id = 2; ref_type = 3 }, Timestamp/Duration { seconds = 1; nanos = 2 },
//! KeyValue { key = 1; v_type = 2; v_str = 3; v_bool = 4; v_int64 = 5;
//! v_float64 = 6; v_binary = 7 }, Process { service_name = 1; tags = 2 }.

use std::ops::Range;

use super::wire::{Reader, Value, str_range};
use super::{DecodeError, ids};
use crate::model::{
    AttributeKeys, ByteRange, RawValue, ScanBatch, ScannedAttr, ScannedEvent, ScannedSpan, SpanId,
    SpanLayout, SpanStatus, TraceId,
};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/jaeger.api_v2.rs"));
    include!(concat!(env!("OUT_DIR"), "/jaeger.api_v2.serde.rs"));
}

pub use generated::*;

const CHILD_OF: u64 = SpanRefType::ChildOf as u64;

/// Appends the one span of a Jaeger `Span` message to `batch`.
pub(super) fn scan(
    buf: &[u8],
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let mut span = ScannedSpan {
        layout: SpanLayout {
            span: ByteRange::new(0, buf.len()),
            ..Default::default()
        },
        ..Default::default()
    };
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    let (mut has_refs, mut process) = (false, None);
    let (mut start, mut duration) = (0u64, 0i64);
    let first_attr = batch.attrs.len() as u32;
    let mut fields = Reader::new(buf, 0..buf.len());
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => trace_id = value.byte_range()?.of(buf),
            2 => span_id = value.byte_range()?.of(buf),
            3 => span.name = value.byte_range()?,
            4 => {
                value.len_range()?;
                has_refs = true;
            }
            5 => span.flags = value.varint()? as u32,
            6 => start = unix_nanos(buf, value.len_range()?)?,
            7 => duration = signed_nanos(buf, value.len_range()?)?,
            8 => span_tag(buf, value.len_range()?, keys, &mut span, batch)?,
            // Read after the loop so the span's tags stay contiguous.
            10 => process = Some(value.len_range()?),
            _ => {}
        }
    }
    span.trace_id = ids::trace_id(trace_id, true)?;
    span.span_id = ids::span_id(span_id)?;
    if has_refs {
        span.parent_span_id = parent_from_refs(buf, span.trace_id)?;
    }
    span.start_unix_nano = start;
    span.end_unix_nano = start.saturating_add_signed(duration);
    span.span_attrs = (first_attr, batch.attrs.len() as u32);
    let first_process_attr = batch.attrs.len() as u32;
    if let Some(range) = process {
        span.service_name = scan_process(buf, range, keys, batch)?;
    }
    span.resource_attrs = (first_process_attr, batch.attrs.len() as u32);
    if keys.extras().events {
        span.events = scan_logs(buf, keys, batch)?;
    }
    batch.spans.push(span);
    Ok(())
}

/// A cheap hint that `buf` is a Jaeger span rather than something else:
/// it starts with a trace ID of 16 or 8 bytes followed by an 8-byte span ID,
/// the order every Jaeger producer writes. Only used to pick which error to
/// report when `auto` fails; the scan itself decides acceptance.
pub(super) fn looks_like_span(buf: &[u8]) -> bool {
    match buf {
        [0x0a, len @ (8 | 16), rest @ ..] => {
            rest.get(usize::from(*len)..usize::from(*len) + 2) == Some(&[0x12, 0x08])
        }
        _ => false,
    }
}

/// Jaeger's parent: among references into the same trace, the first
/// CHILD_OF one, else the first one; zero (a root) if there is none.
/// A second walk, because the trace ID may follow the references.
fn parent_from_refs(buf: &[u8], trace_id: TraceId) -> Result<SpanId, DecodeError> {
    let mut first = None;
    let mut fields = Reader::new(buf, 0..buf.len());
    while let Some((number, value)) = fields.next_field()? {
        if number != 4 {
            continue;
        }
        let (ref_trace, ref_span, ref_type) = span_ref(buf, value.len_range()?)?;
        // Links into other traces and empty references are no parents.
        if ref_trace != trace_id || ref_span.is_zero() {
            continue;
        }
        if ref_type == CHILD_OF {
            return Ok(ref_span);
        }
        first.get_or_insert(ref_span);
    }
    Ok(first.unwrap_or_default())
}

fn span_ref(buf: &[u8], range: Range<usize>) -> Result<(TraceId, SpanId, u64), DecodeError> {
    let (mut trace_id, mut span_id, mut ref_type): (&[u8], &[u8], u64) = (&[], &[], 0);
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => trace_id = value.byte_range()?.of(buf),
            2 => span_id = value.byte_range()?.of(buf),
            3 => ref_type = value.varint()?,
            _ => {}
        }
    }
    let trace_id =
        TraceId::from_slice(trace_id).ok_or(DecodeError::InvalidTraceId(trace_id.len()))?;
    Ok((trace_id, ids::optional_span_id(span_id)?, ref_type))
}

/// `Timestamp` as Unix nanoseconds; times before 1970 clamp to 0.
fn unix_nanos(buf: &[u8], range: Range<usize>) -> Result<u64, DecodeError> {
    Ok(signed_nanos(buf, range)?.max(0) as u64)
}

/// `Timestamp` or `Duration` { int64 seconds = 1; int32 nanos = 2 } as
/// nanoseconds, saturating.
fn signed_nanos(buf: &[u8], range: Range<usize>) -> Result<i64, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => seconds = value.varint()? as i64,
            // A negative int32 is sign-extended to 64 bits on the wire.
            2 => nanos = i64::from(value.varint()? as i32),
            _ => {}
        }
    }
    Ok(protobuf_nanos(seconds, nanos))
}

/// A protobuf `Timestamp` or `Duration` as nanoseconds, saturating: how the
/// scan reads Jaeger times, and how corrections read them back.
pub fn protobuf_nanos(seconds: i64, nanos: i64) -> i64 {
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// One decoded `KeyValue`; strings and bytes stay ranges.
#[derive(Default)]
struct Tag {
    key: ByteRange,
    v_type: u64,
    v_str: Option<Value>,
    v_bool: bool,
    v_int64: i64,
    v_float64: f64,
    v_binary: ByteRange,
}

impl Tag {
    fn read(buf: &[u8], range: Range<usize>) -> Result<Self, DecodeError> {
        let mut tag = Tag::default();
        let mut fields = Reader::new(buf, range);
        while let Some((number, value)) = fields.next_field()? {
            match number {
                1 => tag.key = value.byte_range()?,
                2 => tag.v_type = value.varint()?,
                3 => tag.v_str = Some(value),
                4 => tag.v_bool = value.varint()? != 0,
                5 => tag.v_int64 = value.varint()? as i64,
                6 => tag.v_float64 = f64::from_bits(value.fixed64()?),
                7 => tag.v_binary = value.byte_range()?,
                _ => {}
            }
        }
        Ok(tag)
    }

    fn str(&self, buf: &[u8]) -> Result<ByteRange, DecodeError> {
        self.v_str
            .map_or(Ok(ByteRange::default()), |v| str_range(buf, v))
    }

    /// The typed value; `None` for a value type this model does not know.
    fn value(&self, buf: &[u8]) -> Result<Option<RawValue>, DecodeError> {
        Ok(match self.v_type {
            0 => Some(RawValue::Str(self.str(buf)?)),
            1 => Some(RawValue::Bool(self.v_bool)),
            2 => Some(RawValue::Int(self.v_int64)),
            3 => Some(RawValue::Double(self.v_float64)),
            4 => Some(RawValue::Bytes(self.v_binary)),
            _ => None,
        })
    }

    /// Keeps the tag in `batch` when its key is one the policies read.
    fn keep_if_wanted(
        &self,
        buf: &[u8],
        keys: &AttributeKeys,
        batch: &mut ScanBatch,
    ) -> Result<(), DecodeError> {
        if keys.contains(self.key.of(buf))
            && let Some(value) = self.value(buf)?
        {
            batch.attrs.push(ScannedAttr {
                key: self.key,
                value,
            });
        }
        Ok(())
    }
}

/// A span tag: besides being a possible policy attribute, `error`,
/// `otel.status_code` and `w3c.tracestate` carry the span's status and
/// trace state (how OTLP spans look once translated to Jaeger).
fn span_tag(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    span: &mut ScannedSpan,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let tag = Tag::read(buf, range)?;
    let status = match tag.key.of(buf) {
        b"error" if is_true(&tag, buf)? => SpanStatus::Error,
        b"otel.status_code" => match tag.str(buf)?.of(buf) {
            b"ERROR" => SpanStatus::Error,
            b"OK" => SpanStatus::Ok,
            _ => SpanStatus::Unset,
        },
        b"w3c.tracestate" => {
            span.trace_state = tag.str(buf)?;
            SpanStatus::Unset
        }
        // The tags Jaeger's OTLP translation writes for OTLP-only fields.
        b"span.kind" => {
            span.kind = span_kind(tag.str(buf)?.of(buf));
            SpanStatus::Unset
        }
        b"otel.status_description" => {
            span.status_message = tag.str(buf)?;
            SpanStatus::Unset
        }
        b"otel.scope.name" | b"otel.library.name" => {
            span.scope_name = tag.str(buf)?;
            SpanStatus::Unset
        }
        _ => SpanStatus::Unset,
    };
    // An error from either tag wins over OK.
    if status as u8 > span.status as u8 {
        span.status = status;
    }
    tag.keep_if_wanted(buf, keys, batch)
}

/// The span's logs as events, in a walk of their own so that the span's
/// tags and its process's stay contiguous in `batch.attrs`.
fn scan_logs(
    buf: &[u8],
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<(u32, u32), DecodeError> {
    let first = batch.events.len() as u32;
    let mut fields = Reader::new(buf, 0..buf.len());
    while let Some((number, value)) = fields.next_field()? {
        if number == 9 {
            let event = scan_log(buf, value.len_range()?, keys, batch)?;
            batch.events.push(event);
        }
    }
    Ok((first, batch.events.len() as u32))
}

/// Log { Timestamp timestamp = 1; repeated KeyValue fields = 2 }. Like
/// Jaeger's OTLP translation, the `event` field is the event's name.
fn scan_log(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<ScannedEvent, DecodeError> {
    let mut event = ScannedEvent::default();
    let first_attr = batch.attrs.len() as u32;
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => event.time_unix_nano = unix_nanos(buf, value.len_range()?)?,
            2 => {
                let tag = Tag::read(buf, value.len_range()?)?;
                let key = tag.key.of(buf);
                if key == b"event" {
                    event.name = tag.str(buf)?;
                } else if keys.event_key(key)
                    && let Some(value) = tag.value(buf)?
                {
                    batch.attrs.push(ScannedAttr {
                        key: tag.key,
                        value,
                    });
                }
            }
            _ => {}
        }
    }
    event.attrs = (first_attr, batch.attrs.len() as u32);
    Ok(event)
}

/// The OTLP `SpanKind` number of a Jaeger `span.kind` tag value.
fn span_kind(value: &[u8]) -> u8 {
    match value {
        b"internal" => 1,
        b"server" => 2,
        b"client" => 3,
        b"producer" => 4,
        b"consumer" => 5,
        _ => 0,
    }
}

/// `error=true` as a bool tag, or as the string "true" some clients write.
fn is_true(tag: &Tag, buf: &[u8]) -> Result<bool, DecodeError> {
    Ok(match tag.v_type {
        1 => tag.v_bool,
        0 => tag.str(buf)?.of(buf).eq_ignore_ascii_case(b"true"),
        _ => false,
    })
}

/// Reads the process: its tags are the span's resource attributes. Returns
/// the service name.
fn scan_process(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<ByteRange, DecodeError> {
    let mut service_name = ByteRange::default();
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => service_name = str_range(buf, value)?,
            2 if !keys.is_empty() => {
                Tag::read(buf, value.len_range()?)?.keep_if_wanted(buf, keys, batch)?
            }
            _ => {}
        }
    }
    Ok(service_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_convert_to_nanos() {
        // { seconds = 2, nanos = 500 }
        let ts = [0x08, 0x02, 0x10, 0xf4, 0x03];
        assert_eq!(unix_nanos(&ts, 0..ts.len()).unwrap(), 2_000_000_500);
        // { seconds = -1 } before 1970 clamps to 0.
        let neg = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(unix_nanos(&neg, 0..neg.len()).unwrap(), 0);
        assert_eq!(signed_nanos(&neg, 0..neg.len()).unwrap(), -1_000_000_000);
    }

    #[test]
    fn looks_like_span_checks_id_sizes() {
        let mut buf = vec![0x0a, 16];
        buf.extend([1; 16]);
        buf.extend([0x12, 8]);
        buf.extend([2; 8]);
        assert!(looks_like_span(&buf));
        buf[1] = 15;
        assert!(!looks_like_span(&buf));
        assert!(!looks_like_span(&[0x0a, 8, 1]));
        assert!(!looks_like_span(b"{}"));
    }
}
