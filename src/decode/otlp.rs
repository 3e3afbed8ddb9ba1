//! Scan of an OTLP `ExportTraceServiceRequest` straight from the wire.
//!
//! Field numbers (opentelemetry-proto):
//! - ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }
//! - ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }
//! - ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }
//! - Resource { repeated KeyValue attributes = 1 }
//! - InstrumentationScope { name = 1 }
//! - Span { trace_id = 1; span_id = 2; trace_state = 3; parent_span_id = 4;
//!   name = 5; SpanKind kind = 6; fixed64 start = 7; fixed64 end = 8;
//!   repeated KeyValue attributes = 9; repeated Event events = 11;
//!   Status status = 15; fixed32 flags = 16 }, Status { message = 2; code = 3 },
//!   Event { fixed64 time_unix_nano = 1; name = 2; repeated KeyValue attributes = 3 }
//! - KeyValue { key = 1; AnyValue value = 2 }, AnyValue oneof { string = 1;
//!   bool = 2; int = 3; double = 4; array = 5; kvlist = 6; bytes = 7 }

use std::ops::Range;

use super::wire::{Reader, str_range};
use super::{DecodeError, ids};
use crate::model::{
    AttributeKeys, ByteRange, RawValue, RejectedSpan, ScanBatch, ScannedAttr, ScannedEvent,
    ScannedSpan, SpanLayout, SpanStatus,
};

const SERVICE_NAME: &[u8] = b"service.name";

/// What every span of a ResourceSpans shares.
#[derive(Clone, Copy, Default)]
struct ResourceInfo {
    range: ByteRange,
    service_name: ByteRange,
    attrs: (u32, u32),
}

/// Appends one [`ScannedSpan`] per span of the request to `batch`.
/// `max_spans`: more spans than this reject the message, before the scan
/// holds them all (a 16 MiB message of tiny spans holds ~560k).
pub(super) fn scan(
    buf: &[u8],
    keys: &AttributeKeys,
    max_spans: usize,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let mut fields = Reader::new(buf, 0..buf.len());
    while let Some((number, value)) = fields.next_field()? {
        if number == 1 {
            scan_resource_spans(buf, value.len_range()?, keys, max_spans, batch)?;
        }
    }
    Ok(())
}

fn scan_resource_spans(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    max_spans: usize,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let first_span = batch.spans.len();
    let mut resource = ResourceInfo::default();
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => resource = scan_resource(buf, value.len_range()?, keys, batch)?,
            2 => scan_scope_spans(buf, value.len_range()?, keys, max_spans, batch)?,
            _ => {}
        }
    }
    // Field order is not guaranteed: the resource may follow its spans, so
    // spans learn their resource once the whole ResourceSpans is read.
    for span in &mut batch.spans[first_span..] {
        span.layout.resource = resource.range;
        span.service_name = resource.service_name;
        span.resource_attrs = resource.attrs;
    }
    Ok(())
}

fn scan_resource(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<ResourceInfo, DecodeError> {
    let mut info = ResourceInfo {
        range: ByteRange::new(range.start, range.end),
        ..Default::default()
    };
    let first_attr = batch.attrs.len() as u32;
    let wanted = |key: &[u8]| key == SERVICE_NAME || keys.contains(key);
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        if number != 1 {
            continue;
        }
        let Some(attr) = key_value(buf, value.len_range()?, wanted)? else {
            continue;
        };
        let key = attr.key.of(buf);
        if key == SERVICE_NAME
            && let RawValue::Str(name) = attr.value
        {
            info.service_name = name;
        }
        if keys.contains(key) {
            batch.attrs.push(attr);
        }
    }
    info.attrs = (first_attr, batch.attrs.len() as u32);
    Ok(info)
}

fn scan_scope_spans(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    max_spans: usize,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let first_span = batch.spans.len();
    let mut scope = ByteRange::default();
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => scope = value.byte_range()?,
            2 => {
                if batch.spans.len() + batch.rejected.len() >= max_spans {
                    return Err(DecodeError::TooManySpans(max_spans));
                }
                scan_span(buf, value.len_range()?, keys, batch)?
            }
            _ => {}
        }
    }
    let scope_name = if keys.extras().scope_name {
        scope_name(buf, scope)?
    } else {
        ByteRange::default()
    };
    for span in &mut batch.spans[first_span..] {
        span.layout.scope = scope;
        span.scope_name = scope_name;
    }
    Ok(())
}

fn scope_name(buf: &[u8], scope: ByteRange) -> Result<ByteRange, DecodeError> {
    let mut name = ByteRange::default();
    let mut fields = Reader::new(buf, scope.start as usize..scope.end as usize);
    while let Some((number, value)) = fields.next_field()? {
        if number == 1 {
            name = value.byte_range()?;
        }
    }
    Ok(name)
}

fn scan_span(
    buf: &[u8],
    range: Range<usize>,
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<(), DecodeError> {
    let mut span = ScannedSpan {
        layout: SpanLayout {
            span: ByteRange::new(range.start, range.end),
            ..Default::default()
        },
        ..Default::default()
    };
    let (mut trace_id, mut span_id, mut parent_id): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let first_attr = batch.attrs.len() as u32;
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => trace_id = value.byte_range()?.of(buf),
            2 => span_id = value.byte_range()?.of(buf),
            3 => span.trace_state = str_range(buf, value)?,
            4 => parent_id = value.byte_range()?.of(buf),
            // Recorded unchecked: a range costs nothing, and readers of the
            // name check UTF-8 themselves (a kept span's decode does too).
            5 => span.name = value.byte_range()?,
            6 => span.kind = value.varint()?.min(u64::from(u8::MAX)) as u8,
            7 => span.start_unix_nano = value.fixed64()?,
            8 => span.end_unix_nano = value.fixed64()?,
            // With no keys wanted, attributes are skipped unread.
            9 if !keys.is_empty() => {
                if let Some(attr) = key_value(buf, value.len_range()?, |k| keys.contains(k))? {
                    batch.attrs.push(attr);
                }
            }
            15 => (span.status, span.status_message) = status(buf, value.len_range()?)?,
            16 => span.flags = value.fixed32()?,
            _ => {}
        }
    }
    let ids = ids::trace_id(trace_id, false)
        .and_then(|t| Ok((t, ids::span_id(span_id)?, ids::optional_span_id(parent_id)?)));
    match ids {
        Ok((trace_id, span_id, parent_span_id)) => {
            span.trace_id = trace_id;
            span.span_id = span_id;
            span.parent_span_id = parent_span_id;
            span.span_attrs = (first_attr, batch.attrs.len() as u32);
            if keys.extras().events {
                span.events = scan_events(buf, span.layout.span, keys, batch)?;
            }
            batch.spans.push(span);
        }
        // One bad span must not take the message's other traces with it.
        Err(e) => {
            batch.attrs.truncate(first_attr as usize);
            batch.rejected.push(RejectedSpan {
                span: span.layout.span,
                reason: e.reason(),
                error: e.to_string(),
            });
        }
    }
    Ok(())
}

/// A second walk over the span for its events, so that the span's own
/// attributes stay contiguous in `batch.attrs`.
fn scan_events(
    buf: &[u8],
    span: ByteRange,
    keys: &AttributeKeys,
    batch: &mut ScanBatch,
) -> Result<(u32, u32), DecodeError> {
    let first = batch.events.len() as u32;
    let mut fields = Reader::new(buf, span.start as usize..span.end as usize);
    while let Some((number, value)) = fields.next_field()? {
        if number == 11 {
            let event = scan_event(buf, value.len_range()?, keys, batch)?;
            batch.events.push(event);
        }
    }
    Ok((first, batch.events.len() as u32))
}

fn scan_event(
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
            1 => event.time_unix_nano = value.fixed64()?,
            2 => event.name = value.byte_range()?,
            3 => {
                if let Some(attr) = key_value(buf, value.len_range()?, |k| keys.event_key(k))? {
                    batch.attrs.push(attr);
                }
            }
            _ => {}
        }
    }
    event.attrs = (first_attr, batch.attrs.len() as u32);
    Ok(event)
}

fn status(buf: &[u8], range: Range<usize>) -> Result<(SpanStatus, ByteRange), DecodeError> {
    let (mut code, mut message) = (SpanStatus::Unset, ByteRange::default());
    let mut fields = Reader::new(buf, range);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            2 => message = value.byte_range()?,
            3 => {
                code = match value.varint()? {
                    1 => SpanStatus::Ok,
                    2 => SpanStatus::Error,
                    _ => SpanStatus::Unset,
                }
            }
            _ => {}
        }
    }
    Ok((code, message))
}

/// Reads one `KeyValue`; its value is decoded only when `wanted(key)`.
/// `None` when unwanted or not a scalar (arrays and kvlists are skipped).
fn key_value(
    buf: &[u8],
    range: Range<usize>,
    wanted: impl Fn(&[u8]) -> bool,
) -> Result<Option<ScannedAttr>, DecodeError> {
    // The value may precede the key on the wire: note both, decide after.
    let (mut key, mut value) = (ByteRange::default(), None);
    let mut fields = Reader::new(buf, range);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => key = v.byte_range()?,
            2 => value = Some(v.len_range()?),
            _ => {}
        }
    }
    match value {
        Some(value) if wanted(key.of(buf)) => {
            Ok(any_value(buf, value)?.map(|value| ScannedAttr { key, value }))
        }
        _ => Ok(None),
    }
}

fn any_value(buf: &[u8], range: Range<usize>) -> Result<Option<RawValue>, DecodeError> {
    let mut out = None;
    let mut fields = Reader::new(buf, range);
    while let Some((number, v)) = fields.next_field()? {
        // A oneof: the last member on the wire wins.
        out = match number {
            1 => Some(RawValue::Str(str_range(buf, v)?)),
            2 => Some(RawValue::Bool(v.varint()? != 0)),
            3 => Some(RawValue::Int(v.varint()? as i64)),
            4 => Some(RawValue::Double(f64::from_bits(v.fixed64()?))),
            7 => Some(RawValue::Bytes(v.byte_range()?)),
            5 | 6 | 8 => None,
            _ => out,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(bytes: &[u8]) -> Option<RawValue> {
        any_value(bytes, 0..bytes.len()).unwrap()
    }

    #[test]
    fn any_value_reads_scalars_and_skips_containers() {
        assert_eq!(value_of(&[0x10, 0x01]), Some(RawValue::Bool(true)));
        // int_value -1 is a 10-byte varint.
        let minus_one = [
            0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(value_of(&minus_one), Some(RawValue::Int(-1)));
        let mut double = vec![0x21];
        double.extend(2.5f64.to_le_bytes());
        assert_eq!(value_of(&double), Some(RawValue::Double(2.5)));
        assert_eq!(
            value_of(&[0x0a, 0x01, b'x']),
            Some(RawValue::Str(ByteRange::new(2, 3)))
        );
        // An array value (field 5) after a string replaces it: skipped.
        assert_eq!(value_of(&[0x0a, 0x01, b'x', 0x2a, 0x00]), None);
        assert_eq!(value_of(&[]), None);
    }

    #[test]
    fn any_value_rejects_invalid_utf8_and_wrong_wire_types() {
        assert!(matches!(
            any_value(&[0x0a, 0x01, 0xff], 0..3),
            Err(DecodeError::InvalidUtf8)
        ));
        assert!(matches!(
            any_value(&[0x0d, 0, 0, 0, 0], 0..5),
            Err(DecodeError::InvalidProtobuf(_))
        ));
    }

    #[test]
    fn key_value_accepts_value_before_key() {
        // KeyValue { value = { int 7 }, key = "k" }
        let bytes = [0x12, 0x02, 0x18, 0x07, 0x0a, 0x01, b'k'];
        let attr = key_value(&bytes, 0..bytes.len(), |k| k == b"k").unwrap();
        assert_eq!(
            attr,
            Some(ScannedAttr {
                key: ByteRange::new(6, 7),
                value: RawValue::Int(7)
            })
        );
        assert_eq!(key_value(&bytes, 0..bytes.len(), |_| false).unwrap(), None);
    }
}
