//! JSON input, normalized once to protobuf so the rest of the pipeline
//! (scan, buffering, full decode) sees one wire format per layout.
//!
//! - OTLP/JSON (the Collector's `otlp_json`): hex trace/span IDs, camelCase
//!   names, 64-bit integers as strings, enums as integers; parsed by
//!   opentelemetry-proto's serde support. Enum names (`"SPAN_KIND_SERVER"`),
//!   which other OTLP/JSON writers use and the Collector also reads, are
//!   accepted through a slower fallback, for messages up to 1 MiB (the
//!   fallback builds a JSON tree of about ten times the input).
//! - Jaeger JSON (the Jaeger collector's `json`): protobuf-JSON of one
//!   api_v2 `Span` (base64 IDs, RFC 3339 timestamps, `"1.5s"` durations),
//!   parsed by the pbjson-generated serde impls.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::Message;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::{DecodeError, Encoding, jaeger};

/// The largest message the relaxed path parses: its JSON tree takes about
/// ten times the input, outside every budget, so only messages this small
/// may pay for it; larger ones must be in the Collector's own form.
const RELAXED_MAX_BYTES: usize = 1 << 20;

/// OTLP/JSON `ExportTraceServiceRequest` → its protobuf encoding.
pub(super) fn otlp_to_proto(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let request = match serde_json::from_slice::<ExportTraceServiceRequest>(raw) {
        Ok(request) => request,
        Err(strict) if raw.len() > RELAXED_MAX_BYTES => return Err(strict.into()),
        Err(strict) => otlp_relaxed(raw).map_err(|_| strict)?,
    };
    Ok(request.encode_to_vec())
}

/// Jaeger protobuf-JSON `Span` → its protobuf encoding.
pub(super) fn jaeger_to_proto(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let span: jaeger::Span = serde_json::from_slice(raw)?;
    Ok(span.encode_to_vec())
}

/// Which JSON layout a message holds, from its top-level keys (OTLP has
/// `resourceSpans`; a Jaeger span has its IDs and operation name).
pub(super) fn sniff(raw: &[u8]) -> Result<Encoding, DecodeError> {
    #[derive(Deserialize)]
    struct TopLevel {
        #[serde(rename = "resourceSpans", alias = "resource_spans")]
        resource_spans: Option<IgnoredAny>,
        #[serde(rename = "traceId", alias = "trace_id")]
        trace_id: Option<IgnoredAny>,
        #[serde(rename = "operationName", alias = "operation_name")]
        operation_name: Option<IgnoredAny>,
    }
    let top: TopLevel = serde_json::from_slice(raw)?;
    match top {
        TopLevel {
            resource_spans: Some(_),
            ..
        } => Ok(Encoding::OtlpJson),
        TopLevel {
            trace_id: Some(_), ..
        }
        | TopLevel {
            operation_name: Some(_),
            ..
        } => Ok(Encoding::JaegerJson),
        _ => Err(DecodeError::UnknownEncoding(
            "JSON object with neither resourceSpans nor traceId/operationName",
        )),
    }
}

/// Parses via a JSON tree, rewriting enum names to numbers and giving empty
/// `arrayValue`/`kvlistValue` objects their `values`, which
/// opentelemetry-proto's serde requires.
fn otlp_relaxed(raw: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let mut tree: Value = serde_json::from_slice(raw)?;
    relax(&mut tree);
    ExportTraceServiceRequest::deserialize(tree)
}

fn relax(node: &mut Value) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(relax),
        Value::Object(fields) => {
            for (name, child) in fields.iter_mut() {
                if let Some(number) = enum_number(name, child) {
                    *child = number.into();
                    continue;
                }
                if let ("arrayValue" | "kvlistValue", Value::Object(inner)) =
                    (name.as_str(), &mut *child)
                {
                    inner
                        .entry("values")
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
                relax(child);
            }
        }
        _ => {}
    }
}

/// The number of an enum given by name: span `kind` or status `code`.
/// Object keys in OTLP/JSON are field names only (attribute keys are
/// values), so matching on the key name is safe.
fn enum_number(field: &str, value: &Value) -> Option<i32> {
    let name = value.as_str()?;
    match field {
        "kind" => SpanKind::from_str_name(name).map(|k| k as i32),
        "code" => StatusCode::from_str_name(name).map(|c| c as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_the_layouts_apart() {
        assert_eq!(
            sniff(br#"{"resourceSpans":[]}"#).unwrap(),
            Encoding::OtlpJson
        );
        assert_eq!(
            sniff(br#"{"traceId":"AAAA","operationName":"x"}"#).unwrap(),
            Encoding::JaegerJson
        );
        assert!(matches!(
            sniff(br#"{"foo":1}"#),
            Err(DecodeError::UnknownEncoding(_))
        ));
        assert!(matches!(sniff(b"{"), Err(DecodeError::InvalidJson(_))));
    }

    #[test]
    fn relaxed_otlp_accepts_enum_names_and_empty_arrays() {
        let raw = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
            "kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"},
            "attributes":[{"key":"a","value":{"arrayValue":{}}}]}]}]}]}"#;
        let proto = otlp_to_proto(raw).unwrap();
        let request = ExportTraceServiceRequest::decode(&proto[..]).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);

        // The same beyond the relaxed path's bound: refused, no JSON tree.
        let mut big = raw.to_vec();
        big.resize(RELAXED_MAX_BYTES + 1, b' ');
        assert!(matches!(
            otlp_to_proto(&big),
            Err(DecodeError::InvalidJson(_))
        ));
    }
}
