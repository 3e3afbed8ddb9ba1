//! TEMPORARY stand-in for `crate::decode`, which is written on the `decode`
//! branch. It mirrors that module's API (`DecodedSpan`, `OtlpSpan`,
//! `decode_span`, `DecodeError`, and the `jaeger` prost types) so the sink
//! compiles and is tested before the branches merge.
//!
//! At merge: delete this file, drop `mod decode_temporary` from
//! `sink/mod.rs`, and replace `super::decode_temporary` with `crate::decode`
//! in `sink/document.rs`, `sink/encode.rs` and the sink tests.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::model::{SpanRef, WireFormat};

/// A fully decoded span of either encoding.
#[derive(Debug)]
pub enum DecodedSpan {
    Otlp(Box<OtlpSpan>),
    Jaeger(Box<jaeger::Span>),
}

/// An OTLP span with its enclosing scope and resource.
#[derive(Debug, Default)]
pub struct OtlpSpan {
    pub span: Span,
    pub scope: Option<InstrumentationScope>,
    pub resource: Option<Resource>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode span: {0}")]
pub struct DecodeError(#[from] prost::DecodeError);

/// Decodes one buffered span. Layout assumption: for OTLP, `layout.scope`
/// and `layout.resource` cover the `InstrumentationScope` and `Resource`
/// messages themselves (empty when absent).
pub fn decode_span(r: &SpanRef) -> Result<DecodedSpan, DecodeError> {
    let bytes = &r.payload.bytes[..];
    let l = &r.layout;
    Ok(match r.payload.format {
        WireFormat::Jaeger => {
            DecodedSpan::Jaeger(Box::new(jaeger::Span::decode(l.span.of(bytes))?))
        }
        WireFormat::Otlp => {
            let scope = match l.scope.is_empty() {
                true => None,
                false => Some(InstrumentationScope::decode(l.scope.of(bytes))?),
            };
            let resource = match l.resource.is_empty() {
                true => None,
                false => Some(Resource::decode(l.resource.of(bytes))?),
            };
            DecodedSpan::Otlp(Box::new(OtlpSpan {
                span: Span::decode(l.span.of(bytes))?,
                scope,
                resource,
            }))
        }
    })
}

/// TEMPORARY: prost types of `jaeger.api_v2` model.proto (only what spans
/// need), hand-written until `crate::decode::jaeger` lands.
pub mod jaeger {
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(int32, tag = "2")]
        pub v_type: i32,
        #[prost(string, tag = "3")]
        pub v_str: String,
        #[prost(bool, tag = "4")]
        pub v_bool: bool,
        #[prost(int64, tag = "5")]
        pub v_int64: i64,
        #[prost(double, tag = "6")]
        pub v_float64: f64,
        #[prost(bytes = "vec", tag = "7")]
        pub v_binary: Vec<u8>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Log {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<pbjson_types::Timestamp>,
        #[prost(message, repeated, tag = "2")]
        pub fields: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct SpanRef {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(int32, tag = "3")]
        pub ref_type: i32,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Process {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(message, repeated, tag = "2")]
        pub tags: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub operation_name: String,
        #[prost(message, repeated, tag = "4")]
        pub references: Vec<SpanRef>,
        #[prost(uint32, tag = "5")]
        pub flags: u32,
        #[prost(message, optional, tag = "6")]
        pub start_time: Option<pbjson_types::Timestamp>,
        #[prost(message, optional, tag = "7")]
        pub duration: Option<pbjson_types::Duration>,
        #[prost(message, repeated, tag = "8")]
        pub tags: Vec<KeyValue>,
        #[prost(message, repeated, tag = "9")]
        pub logs: Vec<Log>,
        #[prost(message, optional, tag = "10")]
        pub process: Option<Process>,
        #[prost(string, tag = "11")]
        pub process_id: String,
        #[prost(string, repeated, tag = "12")]
        pub warnings: Vec<String>,
    }
}
