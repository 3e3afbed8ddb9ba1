//! The small trace model every other module speaks: IDs, the facts a scan
//! extracts from one span, where a span's bytes live, trace summaries and
//! sampling decisions.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::span_time::TimeBounds;

/// A 128-bit trace ID. 64-bit IDs are stored in the low 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// Accepts 16 bytes, or 8 bytes (a 64-bit Jaeger ID, zero-extended).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let mut id = [0u8; 16];
        match b.len() {
            16 => id.copy_from_slice(b),
            8 => id[8..].copy_from_slice(b),
            _ => return None,
        }
        Some(Self(id))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 16]
    }

    /// True when the high 64 bits are zero (a 64-bit trace ID).
    pub fn is_64bit(&self) -> bool {
        self.0[..8] == [0u8; 8]
    }

    /// 32 lowercase hex chars.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 (or 16) hex chars.
    pub fn from_hex(s: &str) -> Option<Self> {
        let raw = hex::decode(s).ok()?;
        Self::from_slice(&raw)
    }

    /// A well-mixed 64-bit value for sharding and hash maps.
    pub fn shard_hash(&self) -> u64 {
        let hi = u64::from_be_bytes(self.0[..8].try_into().unwrap_or_default());
        let lo = u64::from_be_bytes(self.0[8..].try_into().unwrap_or_default());
        mix64(hi ^ mix64(lo))
    }
}

/// The SplitMix64 finalizer: every input bit affects every output bit, so
/// IDs from weak generators still spread evenly.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A 64-bit span ID; all-zero means "no span" (e.g. no parent).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl SpanId {
    /// Accepts exactly 8 bytes, or an empty slice (zero ID).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        match b.len() {
            0 => Some(Self::default()),
            8 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(b);
                Some(Self(id))
            }
            _ => None,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 8]
    }

    /// 16 lowercase hex chars.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", self.to_hex())
    }
}

/// Span status as policies see it. Jaeger's `error=true` tag maps to `Error`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum SpanStatus {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// A byte range inside a [`Payload`]; messages are far below 4 GiB.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ByteRange {
    pub start: u32,
    pub end: u32,
}

impl ByteRange {
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The bytes of this range, or an empty slice if it lies outside `buf`.
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// Protobuf layout of a normalized message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireFormat {
    /// An OTLP `ExportTraceServiceRequest`.
    Otlp,
    /// One `jaeger.api_v2.Span` with its process embedded.
    Jaeger,
}

/// The bytes one Kafka message carried, normalized to protobuf and shared by
/// every span scanned from it: buffered spans keep the message alive instead
/// of owning decoded copies.
#[derive(Debug)]
pub struct Payload {
    pub bytes: Bytes,
    pub format: WireFormat,
    pub partition: i32,
    pub offset: i64,
    /// The span times this message may carry, fixed at scan time so the
    /// documents get the corrections the policies saw.
    pub times: TimeBounds,
}

/// Where one span lives inside its payload. For OTLP, the span's enclosing
/// scope and resource messages are needed to fully decode it later; for
/// Jaeger the span range covers the whole message and the others are empty.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SpanLayout {
    pub span: ByteRange,
    pub scope: ByteRange,
    pub resource: ByteRange,
}

/// A buffered span: a refcounted payload plus its layout.
#[derive(Clone, Debug)]
pub struct SpanRef {
    pub payload: Arc<Payload>,
    pub layout: SpanLayout,
}

/// An attribute value borrowed from a payload.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
}

/// An attribute value as a scan stores it: ranges instead of borrows, so a
/// reusable [`ScanBatch`] needs no lifetime.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum RawValue {
    Str(ByteRange),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(ByteRange),
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ScannedAttr {
    pub key: ByteRange,
    pub value: RawValue,
}

/// The few fields of one span that sampling needs.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ScannedSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Zero for a root span.
    pub parent_span_id: SpanId,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: SpanStatus,
    pub trace_state: ByteRange,
    pub service_name: ByteRange,
    /// Indices into [`ScanBatch::attrs`]: the span's interesting attributes.
    pub span_attrs: (u32, u32),
    /// Indices into [`ScanBatch::attrs`]: the resource's (process's)
    /// interesting attributes.
    pub resource_attrs: (u32, u32),
    pub layout: SpanLayout,
}

/// Spans scanned from one message; reused across messages to avoid
/// allocating per message.
#[derive(Default, Debug)]
pub struct ScanBatch {
    pub spans: Vec<ScannedSpan>,
    pub attrs: Vec<ScannedAttr>,
    /// Spans cut out of the message for a bad ID; the others go on.
    pub rejected: Vec<RejectedSpan>,
}

/// A span of a multi-span message that cannot be sampled (a zero or
/// malformed ID): its bytes and why.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedSpan {
    pub span: ByteRange,
    /// The decode-error reason (a metric label).
    pub reason: &'static str,
    pub error: String,
}

impl ScanBatch {
    /// The error text of a dead letter for the rejected spans, naming each
    /// by its byte range in the message (at most ten of them).
    pub fn rejection_summary(&self) -> Option<(&'static str, String)> {
        let first = self.rejected.first()?;
        let mut text = self
            .rejected
            .iter()
            .take(10)
            .map(|r| {
                format!(
                    "span at bytes {}..{}: {}",
                    r.span.start, r.span.end, r.error
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if self.rejected.len() > 10 {
            text.push_str(&format!("; and {} more", self.rejected.len() - 10));
        }
        Some((first.reason, text))
    }
}

/// What a [`ScanBatch`] keeps between messages. One 16 MiB message of tiny
/// spans scans to ~560k spans (~70 MiB of facts); without a bound the
/// batch would keep that capacity for good, outside any budget.
const KEPT_SPANS: usize = 4096;
const KEPT_ATTRS: usize = 4 * KEPT_SPANS;

impl ScanBatch {
    /// Empties the batch, and frees what an outlier message made it grow
    /// beyond the usual.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.attrs.clear();
        self.rejected.clear();
        self.spans.shrink_to(KEPT_SPANS);
        self.attrs.shrink_to(KEPT_ATTRS);
    }

    /// A borrowed view of span `i` over the payload bytes it was scanned from.
    pub fn view<'a>(&'a self, i: usize, bytes: &'a [u8]) -> SpanView<'a> {
        SpanView {
            span: &self.spans[i],
            attrs: &self.attrs,
            bytes,
        }
    }
}

/// A scanned span plus access to its strings and attributes.
#[derive(Clone, Copy)]
pub struct SpanView<'a> {
    pub span: &'a ScannedSpan,
    attrs: &'a [ScannedAttr],
    bytes: &'a [u8],
}

impl<'a> SpanView<'a> {
    pub fn new(span: &'a ScannedSpan, attrs: &'a [ScannedAttr], bytes: &'a [u8]) -> Self {
        Self { span, attrs, bytes }
    }

    pub fn str_at(&self, r: ByteRange) -> &'a str {
        std::str::from_utf8(r.of(self.bytes)).unwrap_or("")
    }

    pub fn service_name(&self) -> &'a str {
        self.str_at(self.span.service_name)
    }

    pub fn trace_state(&self) -> &'a str {
        self.str_at(self.span.trace_state)
    }

    /// The raw bytes of a range of this span's payload (not UTF-8 checked).
    pub fn bytes_at(&self, r: ByteRange) -> &'a [u8] {
        r.of(self.bytes)
    }

    /// The span's interesting attributes, then its resource's.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, AttrValue<'a>)> + 'a {
        let this = *self;
        self.raw_attributes()
            .map(move |a| (this.str_at(a.key), this.value(a.value)))
    }

    /// Like [`Self::attributes`] but unresolved: per-span hot paths compare
    /// key bytes instead of UTF-8-checking every key and value.
    pub fn raw_attributes(&self) -> impl Iterator<Item = &'a ScannedAttr> + 'a {
        let (s0, s1) = self.span.span_attrs;
        let (r0, r1) = self.span.resource_attrs;
        let attrs = self.attrs;
        attrs
            .get(s0 as usize..s1 as usize)
            .unwrap_or_default()
            .iter()
            .chain(attrs.get(r0 as usize..r1 as usize).unwrap_or_default())
    }

    fn value(&self, v: RawValue) -> AttrValue<'a> {
        match v {
            RawValue::Str(r) => AttrValue::Str(self.str_at(r)),
            RawValue::Bool(b) => AttrValue::Bool(b),
            RawValue::Int(i) => AttrValue::Int(i),
            RawValue::Double(d) => AttrValue::Double(d),
            RawValue::Bytes(r) => AttrValue::Bytes(r.of(self.bytes)),
        }
    }
}

/// The attribute keys the policies look at; scans keep only these.
#[derive(Clone, Debug, Default)]
pub struct AttributeKeys {
    keys: Vec<Box<[u8]>>,
}

impl AttributeKeys {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> Self {
        let mut keys: Vec<Box<[u8]>> = keys
            .into_iter()
            .map(|k| k.as_ref().as_bytes().into())
            .collect();
        keys.sort();
        keys.dedup();
        Self { keys }
    }

    /// Linear search: policy sets name a handful of keys, so this beats
    /// hashing every attribute key of every span.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| **k == *key)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .map(|k| std::str::from_utf8(k).unwrap_or_default())
    }
}

/// Policy-independent facts about a buffered trace, updated per span.
#[derive(Clone, Debug)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    pub span_count: u32,
    pub bytes: u64,
    /// Earliest span start and latest span end (Unix ns) over all spans.
    pub min_start_unix_nano: u64,
    pub max_end_unix_nano: u64,
    pub root_seen: bool,
    pub error_seen: bool,
}

impl TraceSummary {
    pub fn new(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            span_count: 0,
            bytes: 0,
            min_start_unix_nano: u64::MAX,
            max_end_unix_nano: 0,
            root_seen: false,
            error_seen: false,
        }
    }

    pub fn observe(&mut self, span: &ScannedSpan, bytes: usize) {
        self.span_count += 1;
        self.bytes += bytes as u64;
        self.min_start_unix_nano = self.min_start_unix_nano.min(span.start_unix_nano);
        self.max_end_unix_nano = self.max_end_unix_nano.max(span.end_unix_nano);
        self.root_seen |= span.parent_span_id.is_zero();
        self.error_seen |= span.status == SpanStatus::Error;
    }

    /// Trace duration: latest end minus earliest start.
    pub fn duration_nanos(&self) -> u64 {
        self.max_end_unix_nano
            .saturating_sub(self.min_start_unix_nano.min(self.max_end_unix_nano))
    }
}

/// Why a trace was decided when it was.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum DecisionReason {
    /// `decision_wait` elapsed since the first span.
    Timeout,
    /// The root span arrived and nothing came for `root_idle`.
    Root,
    /// `max_spans_per_trace` or `max_bytes_per_trace` reached.
    Limit,
    /// Decided early to stay under `memory.limit`.
    Memory,
    /// Decided because the service is stopping.
    Shutdown,
}

impl DecisionReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Root => "root",
            Self::Limit => "limit",
            Self::Memory => "memory",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The outcome of evaluating the policies on a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// The policy that decided: the first sampling policy for a keep, the
    /// dropping policy (or "none") for a drop.
    pub policy: Arc<str>,
    /// How many traces this kept one stands for (1 / probability); 0 for drops.
    pub sample_rate: f64,
}

impl Decision {
    pub fn keep(policy: Arc<str>, sample_rate: f64) -> Self {
        Self {
            keep: true,
            policy,
            sample_rate,
        }
    }

    pub fn drop(policy: Arc<str>) -> Self {
        Self {
            keep: false,
            policy,
            sample_rate: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_accepts_64_and_128_bit() {
        let t = TraceId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert!(t.is_64bit());
        assert_eq!(t.to_hex(), "00000000000000000102030405060708");
        assert!(TraceId::from_slice(&[1; 5]).is_none());
        assert_eq!(TraceId::from_hex(&t.to_hex()), Some(t));
    }

    #[test]
    fn span_view_reads_attributes_from_ranges() {
        let bytes = b"http.status_code200svc";
        let mut batch = ScanBatch::default();
        batch.attrs.push(ScannedAttr {
            key: ByteRange::new(0, 16),
            value: RawValue::Int(200),
        });
        batch.spans.push(ScannedSpan {
            service_name: ByteRange::new(19, 22),
            span_attrs: (0, 1),
            resource_attrs: (1, 1),
            ..Default::default()
        });
        let v = batch.view(0, bytes);
        assert_eq!(v.service_name(), "svc");
        let attrs: Vec<_> = v.attributes().collect();
        assert_eq!(attrs, vec![("http.status_code", AttrValue::Int(200))]);
    }

    #[test]
    fn summary_tracks_duration_and_root() {
        let mut s = TraceSummary::new(TraceId([1; 16]));
        let mut span = ScannedSpan {
            start_unix_nano: 100,
            end_unix_nano: 300,
            parent_span_id: SpanId([1; 8]),
            ..Default::default()
        };
        s.observe(&span, 10);
        span.start_unix_nano = 50;
        span.end_unix_nano = 120;
        span.parent_span_id = SpanId::default();
        s.observe(&span, 10);
        assert_eq!(s.duration_nanos(), 250);
        assert!(s.root_seen);
        assert_eq!(s.bytes, 20);
    }
}
