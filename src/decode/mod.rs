//! Decoding Kafka messages into the few span facts sampling needs.
//!
//! Every message is first normalized to protobuf: protobuf input is kept
//! as-is (zero-copy, the `Bytes` are shared), JSON input is parsed and
//! re-encoded once. A hand-written wire scanner then extracts one
//! [`ScannedSpan`] per span plus the byte ranges of the span, its scope and
//! its resource, so buffered spans keep only a refcount on the message.
//! [`decode_span`] fully decodes a span from those ranges, only for the
//! traces that are kept.
//!
//! Layout: [`wire`] reads the protobuf wire format, [`otlp`] and [`jaeger`]
//! scan the two layouts (and `jaeger` holds the generated api_v2 types),
//! [`json`] normalizes JSON, [`full`] decodes kept spans, [`fixtures`]
//! builds realistic messages for tests, benches and the load generator.

pub mod fixtures;
mod full;
mod ids;
pub mod jaeger;
mod json;
mod otlp;
mod wire;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::config::{DEFAULT_MAX_SPANS_PER_MESSAGE, EncodingSetting};
use crate::model::{AttributeKeys, ScanBatch, WireFormat};
use crate::span_time::{TimeBounds, TimeLimits};

pub use full::{DecodedSpan, OtlpSpan, decode_span};

/// A concrete message encoding (what `auto` resolved to, for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    OtlpProto,
    OtlpJson,
    JaegerProto,
    JaegerJson,
}

impl Encoding {
    /// The config spelling, also used as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OtlpProto => "otlp_proto",
            Self::OtlpJson => "otlp_json",
            Self::JaegerProto => "jaeger_proto",
            Self::JaegerJson => "jaeger_json",
        }
    }

    fn wire_format(self) -> WireFormat {
        match self {
            Self::OtlpProto | Self::OtlpJson => WireFormat::Otlp,
            Self::JaegerProto | Self::JaegerJson => WireFormat::Jaeger,
        }
    }
}

/// Why a message could not be used. Every variant is bad input: the caller
/// counts it by [`DecodeError::reason`] and dead-letters the whole message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("invalid protobuf: {0}")]
    InvalidProtobuf(&'static str),
    #[error("truncated protobuf: a field runs past the end of its message")]
    Truncated,
    #[error("invalid UTF-8 in a protobuf string field")]
    InvalidUtf8,
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("span with an all-zero trace ID")]
    ZeroTraceId,
    #[error("span with a trace ID of {0} bytes")]
    InvalidTraceId(usize),
    #[error("span ID of {0} bytes (want 8)")]
    InvalidSpanId(usize),
    #[error("message holds no spans")]
    NoSpans,
    #[error("message holds more than {0} spans (kafka.max_spans_per_message)")]
    TooManySpans(usize),
    #[error("cannot detect the encoding: {0}")]
    UnknownEncoding(&'static str),
    #[error("span byte range lies outside its payload")]
    BadLayout,
    /// Every span of the message was cut out (see [`ScanBatch::rejected`]).
    #[error("{1}")]
    AllSpansRejected(&'static str, String),
    #[error("full decode failed: {0}")]
    FullDecode(#[from] prost::DecodeError),
}

impl DecodeError {
    /// Every value [`Self::reason`] returns, so the metric's series exist
    /// before the first bad message.
    pub const REASONS: &'static [&'static str] = &[
        "empty",
        "too_large",
        "invalid_protobuf",
        "truncated",
        "invalid_utf8",
        "invalid_json",
        "zero_trace_id",
        "invalid_id",
        "no_spans",
        "unknown_encoding",
        "invalid_layout",
    ];

    /// A short, stable label for the `reason` of the decode-error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidProtobuf(_) | Self::FullDecode(_) => "invalid_protobuf",
            Self::Truncated => "truncated",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson(_) => "invalid_json",
            Self::ZeroTraceId => "zero_trace_id",
            Self::InvalidTraceId(_) | Self::InvalidSpanId(_) => "invalid_id",
            Self::NoSpans => "no_spans",
            Self::TooManySpans(_) => "too_many_spans",
            Self::UnknownEncoding(_) => "unknown_encoding",
            Self::BadLayout => "invalid_layout",
            Self::AllSpansRejected(reason, _) => reason,
        }
    }
}

/// A message normalized to protobuf: `bytes` is what the scanned ranges
/// point into and what a [`crate::model::Payload`] should hold.
#[derive(Clone, Debug)]
pub struct Normalized {
    pub bytes: Bytes,
    pub format: WireFormat,
    pub encoding: Encoding,
}

/// Scans Kafka messages of the configured encoding. Cheap to clone and
/// share between partition tasks.
#[derive(Clone, Debug)]
pub struct Decoder {
    setting: EncodingSetting,
    keys: Arc<AttributeKeys>,
    max_message_bytes: usize,
    max_spans: usize,
    time_limits: TimeLimits,
}

impl Decoder {
    /// `keys` are the attribute keys the policies read; scans keep only
    /// those. Messages above `max_message_bytes` (at most 4 GiB, the reach
    /// of a [`crate::model::ByteRange`]) are rejected.
    pub fn new(setting: EncodingSetting, keys: AttributeKeys, max_message_bytes: usize) -> Self {
        Self {
            setting,
            keys: Arc::new(keys),
            max_message_bytes: max_message_bytes.min(u32::MAX as usize),
            max_spans: DEFAULT_MAX_SPANS_PER_MESSAGE,
            time_limits: TimeLimits::default(),
        }
    }

    /// This decoder scanning `other`'s attribute keys as well.
    pub fn with_keys_of(&self, other: &Decoder) -> Self {
        Self {
            keys: Arc::new(self.keys.merge(&other.keys)),
            ..self.clone()
        }
    }

    /// Messages with more spans are rejected whole (dead-lettered).
    pub fn with_max_spans(mut self, max_spans: usize) -> Self {
        self.max_spans = max_spans.max(1);
        self
    }

    /// Bounds for [`Decoder::correct_times`] other than the defaults.
    pub fn with_time_limits(mut self, limits: TimeLimits) -> Self {
        self.time_limits = limits;
        self
    }

    /// Corrects impossible span times in a scanned `batch` (see
    /// `span_time`), counting each by reason, and returns the bounds used,
    /// for the message's [`crate::model::Payload`]. `kafka_millis` is the
    /// message's Kafka timestamp.
    pub fn correct_times(&self, kafka_millis: Option<i64>, batch: &mut ScanBatch) -> TimeBounds {
        let bounds = TimeBounds::new(self.time_limits, kafka_millis, SystemTime::now());
        for span in &mut batch.spans {
            let c = bounds.correct(span.start_unix_nano, span.end_unix_nano);
            if let Some(fault) = c.fault {
                metrics::counter!("tailsift_span_time_corrections_total", "reason" => fault.as_str())
                    .increment(1);
                span.start_unix_nano = c.start;
                span.end_unix_nano = c.end;
            }
        }
        bounds
    }

    /// Normalizes one Kafka message to protobuf (JSON input is parsed and
    /// re-encoded once; protobuf input is kept as-is, zero-copy) and scans
    /// its spans into `batch` (cleared first). `content_type` is the value of
    /// a `content-type` header if the message had one (used by `auto`). On
    /// error `batch` may hold garbage; the caller discards it.
    pub fn scan(
        &self,
        raw: Bytes,
        content_type: Option<&str>,
        batch: &mut ScanBatch,
    ) -> Result<Normalized, DecodeError> {
        batch.clear();
        if raw.is_empty() {
            return Err(DecodeError::Empty);
        }
        self.check_size(raw.len())?;
        let encoding = match self.setting {
            EncodingSetting::OtlpProto => Encoding::OtlpProto,
            EncodingSetting::OtlpJson => Encoding::OtlpJson,
            EncodingSetting::JaegerProto => Encoding::JaegerProto,
            EncodingSetting::JaegerJson => Encoding::JaegerJson,
            EncodingSetting::Auto => return self.scan_auto(raw, content_type, batch),
        };
        self.scan_as(encoding, raw, batch)
    }

    fn check_size(&self, size: usize) -> Result<(), DecodeError> {
        if size > self.max_message_bytes {
            return Err(DecodeError::TooLarge {
                size,
                max: self.max_message_bytes,
            });
        }
        Ok(())
    }

    fn scan_as(
        &self,
        encoding: Encoding,
        raw: Bytes,
        batch: &mut ScanBatch,
    ) -> Result<Normalized, DecodeError> {
        let bytes = match encoding {
            Encoding::OtlpProto | Encoding::JaegerProto => raw,
            Encoding::OtlpJson => json::otlp_to_proto(&raw)?.into(),
            Encoding::JaegerJson => json::jaeger_to_proto(&raw)?.into(),
        };
        // Re-encoded JSON must also fit the ranges a scan stores.
        self.check_size(bytes.len())?;
        let format = encoding.wire_format();
        batch.clear();
        match format {
            WireFormat::Otlp => otlp::scan(&bytes, &self.keys, self.max_spans, batch)?,
            WireFormat::Jaeger => jaeger::scan(&bytes, &self.keys, batch)?,
        }
        if batch.spans.is_empty() {
            return Err(match batch.rejection_summary() {
                Some((reason, error)) => DecodeError::AllSpansRejected(reason, error),
                None => DecodeError::NoSpans,
            });
        }
        Ok(Normalized {
            bytes,
            format,
            encoding,
        })
    }

    /// `auto`: the content-type header if it says, else the bytes: JSON
    /// starts with `{`; protobuf is tried as OTLP first, then as a Jaeger
    /// span (the Jaeger collector sets no content type).
    fn scan_auto(
        &self,
        raw: Bytes,
        content_type: Option<&str>,
        batch: &mut ScanBatch,
    ) -> Result<Normalized, DecodeError> {
        let is_json = match content_type.and_then(media_type) {
            Some(Media::Json) => true,
            Some(Media::Protobuf) => false,
            None => raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        };
        if is_json {
            let encoding = json::sniff(&raw)?;
            return self.scan_as(encoding, raw, batch);
        }
        match self.scan_as(Encoding::OtlpProto, raw.clone(), batch) {
            Ok(n) => Ok(n),
            Err(otlp_err) => {
                let looks_jaeger = jaeger::looks_like_span(&raw);
                self.scan_as(Encoding::JaegerProto, raw, batch)
                    .map_err(|jaeger_err| if looks_jaeger { jaeger_err } else { otlp_err })
            }
        }
    }
}

enum Media {
    Json,
    Protobuf,
}

/// The media types producers set; anything else is sniffed.
fn media_type(content_type: &str) -> Option<Media> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Some(Media::Json)
    } else if essence.eq_ignore_ascii_case("application/x-protobuf")
        || essence.eq_ignore_ascii_case("application/protobuf")
    {
        Some(Media::Protobuf)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
