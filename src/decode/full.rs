//! Full (prost) decode of one buffered span, from the byte ranges its scan
//! recorded. Only spans of kept traces pay for this.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::{DecodeError, jaeger};
use crate::model::{ByteRange, SpanRef, WireFormat};

/// A fully decoded span, in the layout it arrived in.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodedSpan {
    Otlp(Box<OtlpSpan>),
    Jaeger(Box<jaeger::Span>),
}

/// An OTLP span with the scope and resource it was sent under.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSpan {
    pub span: Span,
    /// `None` when the ScopeSpans had no (or an empty) scope.
    pub scope: Option<InstrumentationScope>,
    /// `None` when the ResourceSpans had no (or an empty) resource.
    pub resource: Option<Resource>,
}

/// Full decode of one buffered span (only for kept traces).
pub fn decode_span(r: &SpanRef) -> Result<DecodedSpan, DecodeError> {
    let buf = &r.payload.bytes[..];
    let span = slice(buf, r.layout.span)?;
    Ok(match r.payload.format {
        WireFormat::Otlp => DecodedSpan::Otlp(Box::new(OtlpSpan {
            span: Span::decode(span)?,
            scope: optional(buf, r.layout.scope)?,
            resource: optional(buf, r.layout.resource)?,
        })),
        WireFormat::Jaeger => DecodedSpan::Jaeger(Box::new(jaeger::Span::decode(span)?)),
    })
}

fn slice(buf: &[u8], range: ByteRange) -> Result<&[u8], DecodeError> {
    buf.get(range.start as usize..range.end as usize)
        .ok_or(DecodeError::BadLayout)
}

fn optional<M: Message + Default>(buf: &[u8], range: ByteRange) -> Result<Option<M>, DecodeError> {
    if range.is_empty() {
        return Ok(None);
    }
    Ok(Some(M::decode(slice(buf, range)?)?))
}
