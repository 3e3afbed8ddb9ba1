//! ID validation shared by both scanners. A Jaeger message (one span) with
//! a bad ID is rejected whole; an OTLP span with one is cut out of its
//! message (see `otlp::scan_span`).

use super::DecodeError;
use crate::model::{SpanId, TraceId};

/// OTLP trace IDs are 16 bytes; Jaeger also allows 8 (a 64-bit ID).
pub(super) fn trace_id(bytes: &[u8], allow_64bit: bool) -> Result<TraceId, DecodeError> {
    let len = bytes.len();
    if len != 16 && !(allow_64bit && len == 8) {
        return Err(DecodeError::InvalidTraceId(len));
    }
    let id = TraceId::from_slice(bytes).ok_or(DecodeError::InvalidTraceId(len))?;
    if id.is_zero() {
        return Err(DecodeError::ZeroTraceId);
    }
    Ok(id)
}

/// A span's own ID: exactly 8 bytes.
pub(super) fn span_id(bytes: &[u8]) -> Result<SpanId, DecodeError> {
    if bytes.len() != 8 {
        return Err(DecodeError::InvalidSpanId(bytes.len()));
    }
    SpanId::from_slice(bytes).ok_or(DecodeError::InvalidSpanId(bytes.len()))
}

/// A parent or referenced span ID: 8 bytes, or empty for none.
pub(super) fn optional_span_id(bytes: &[u8]) -> Result<SpanId, DecodeError> {
    SpanId::from_slice(bytes).ok_or(DecodeError::InvalidSpanId(bytes.len()))
}
