//! Span-level leaf predicates ("does ANY span of the trace match X"),
//! evaluated once per span as it is buffered. Each predicate owns one bit of
//! [`LeafBits`]; a set bit means some span matched, so deciding a trace never
//! re-reads its spans.

use std::collections::HashSet;

use regex::bytes::RegexSet;

use super::ottl::SpanConditions;
use crate::model::{RawValue, ScanExtras, SpanView};

/// The W3C `sampled` trace flag.
const FLAG_SAMPLED: u32 = 0x01;

/// OpenTelemetry spans carry the service as a resource attribute; Jaeger
/// spans only in their process, which the scan exposes as `service_name`.
pub(crate) const SERVICE_NAME: &str = "service.name";

/// One bit per leaf predicate: inline for the usual ≤ 64, spilled beyond.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeafBits {
    low: u64,
    high: Box<[u64]>,
}

impl LeafBits {
    pub(crate) fn with_leaves(n: usize) -> Self {
        let words = n.saturating_sub(64).div_ceil(64);
        Self {
            low: 0,
            high: vec![0; words].into_boxed_slice(),
        }
    }

    pub(crate) fn get(&self, bit: u32) -> bool {
        match bit.checked_sub(64) {
            None => self.low >> bit & 1 == 1,
            Some(b) => self
                .high
                .get(b as usize / 64)
                .is_some_and(|w| w >> (b % 64) & 1 == 1),
        }
    }

    pub(crate) fn set(&mut self, bit: u32) {
        match bit.checked_sub(64) {
            None => self.low |= 1 << bit,
            Some(b) => {
                if let Some(w) = self.high.get_mut(b as usize / 64) {
                    *w |= 1 << (b % 64);
                }
            }
        }
    }
}

/// How a string attribute's value is matched. Values are compared as
/// bytes: validating UTF-8 of every attribute dominated `observe`.
pub(crate) enum StrMatch {
    /// Sorted: value lists are short, a binary search beats hashing.
    Exact(Vec<Box<[u8]>>),
    /// Unanchored search, like Go's `regexp.MatchString` in the collector.
    Regex(RegexSet),
}

impl StrMatch {
    pub(crate) fn exact<'v>(values: impl IntoIterator<Item = &'v str>) -> Self {
        let mut v: Vec<Box<[u8]>> = values.into_iter().map(|s| s.as_bytes().into()).collect();
        v.sort();
        v.dedup();
        Self::Exact(v)
    }

    fn matches(&self, s: &[u8]) -> bool {
        match self {
            Self::Exact(values) => values.binary_search_by(|v| (**v).cmp(s)).is_ok(),
            Self::Regex(set) => set.is_match(s),
        }
    }
}

/// A test on one attribute value.
pub(crate) enum AttrTest {
    /// Only string values count (the collector reads others as "").
    Str(StrMatch),
    /// Only integer values count, within `min..=max`.
    Int { min: i64, max: i64 },
    /// Only boolean values count.
    Bool(bool),
}

impl AttrTest {
    fn matches(&self, span: &SpanView<'_>, v: RawValue) -> bool {
        match (self, v) {
            (Self::Str(m), RawValue::Str(r)) => !r.is_empty() && m.matches(span.bytes_at(r)),
            (Self::Int { min, max }, RawValue::Int(i)) => (*min..=*max).contains(&i),
            (Self::Bool(want), RawValue::Bool(b)) => *want == b,
            _ => false,
        }
    }
}

/// The attribute predicates that read one key.
struct AttrGroup {
    key: Box<str>,
    tests: Vec<(u32, AttrTest)>,
}

impl AttrGroup {
    fn apply(&self, bits: &mut LeafBits, span: &SpanView<'_>, v: RawValue) {
        for (bit, test) in &self.tests {
            // A set bit stays set: skip the (possibly regex) test.
            if !bits.get(*bit) && test.matches(span, v) {
                bits.set(*bit);
            }
        }
    }
}

/// A `trace_state` test: the W3C tracestate member `key` has one of `values`.
struct TraceStateTest {
    key: Box<str>,
    values: HashSet<Box<str>>,
}

impl TraceStateTest {
    fn matches(&self, trace_state: &str) -> bool {
        trace_state
            .split(',')
            .filter_map(|member| member.trim().split_once('='))
            .find(|(k, _)| *k == &*self.key)
            .is_some_and(|(_, v)| self.values.contains(v))
    }
}

/// An `ottl_condition` leaf. Like the collector, evaluation stops at the
/// first span that matches or fails (under `error_mode: propagate`); a
/// failure leaves the policy not sampled.
struct OttlLeaf {
    hit: u32,
    failed: u32,
    conditions: SpanConditions,
}

impl OttlLeaf {
    fn observe(&self, bits: &mut LeafBits, span: &SpanView<'_>) {
        if bits.get(self.hit) || bits.get(self.failed) {
            return;
        }
        match self.conditions.matches(span) {
            Ok(true) => bits.set(self.hit),
            Ok(false) => {}
            Err(_) => bits.set(self.failed),
        }
    }
}

/// All leaf predicates of an engine, grouped by what of a span they read.
#[derive(Default)]
pub(crate) struct SpanPredicates {
    count: u32,
    /// (bit, mask of `1 << SpanStatus`).
    status: Vec<(u32, u8)>,
    trace_state: Vec<(u32, TraceStateTest)>,
    /// Bits of `trace_flags` policies.
    sampled_flag: Vec<u32>,
    attrs: Vec<AttrGroup>,
    ottl: Vec<OttlLeaf>,
}

impl SpanPredicates {
    /// Number of leaf bits handed out.
    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    fn next_bit(&mut self) -> u32 {
        self.count += 1;
        self.count - 1
    }

    pub(crate) fn add_status(&mut self, mask: u8) -> u32 {
        let bit = self.next_bit();
        self.status.push((bit, mask));
        bit
    }

    pub(crate) fn add_trace_state(&mut self, key: &str, values: HashSet<Box<str>>) -> u32 {
        let bit = self.next_bit();
        let test = TraceStateTest {
            key: key.into(),
            values,
        };
        self.trace_state.push((bit, test));
        bit
    }

    pub(crate) fn add_sampled_flag(&mut self) -> u32 {
        let bit = self.next_bit();
        self.sampled_flag.push(bit);
        bit
    }

    /// Returns the bit set when some span matches.
    pub(crate) fn add_ottl(&mut self, conditions: SpanConditions) -> u32 {
        let hit = self.next_bit();
        let failed = self.next_bit();
        self.ottl.push(OttlLeaf {
            hit,
            failed,
            conditions,
        });
        hit
    }

    /// The facts beyond the default scan that OTTL conditions read.
    pub(crate) fn extras(&self) -> ScanExtras {
        self.ottl.iter().fold(ScanExtras::default(), |out, leaf| {
            out.merge(leaf.conditions.extras())
        })
    }

    pub(crate) fn add_attr(&mut self, key: &str, test: AttrTest) -> u32 {
        let bit = self.next_bit();
        match self.attrs.iter_mut().find(|g| &*g.key == key) {
            Some(g) => g.tests.push((bit, test)),
            None => self.attrs.push(AttrGroup {
                key: key.into(),
                tests: vec![(bit, test)],
            }),
        }
        bit
    }

    /// The attribute keys the predicates read.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.attrs
            .iter()
            .map(|g| &*g.key)
            .chain(self.ottl.iter().flat_map(|l| l.conditions.attribute_keys()))
    }

    /// Sets the bit of every predicate this span satisfies.
    pub(crate) fn observe(&self, bits: &mut LeafBits, span: &SpanView<'_>) {
        let status = 1u8 << span.span.status as u8;
        for &(bit, mask) in &self.status {
            if mask & status != 0 {
                bits.set(bit);
            }
        }
        if !self.trace_state.is_empty() {
            self.observe_trace_state(bits, span.trace_state());
        }
        if span.span.flags & FLAG_SAMPLED != 0 {
            for &bit in &self.sampled_flag {
                bits.set(bit);
            }
        }
        for leaf in &self.ottl {
            leaf.observe(bits, span);
        }
        if self.attrs.is_empty() {
            return;
        }
        if let Some(g) = self.attrs.iter().find(|g| &*g.key == SERVICE_NAME) {
            g.apply(bits, span, RawValue::Str(span.span.service_name));
        }
        for attr in span.raw_attributes() {
            let key = span.bytes_at(attr.key);
            if let Some(g) = self.attrs.iter().find(|g| g.key.as_bytes() == key) {
                g.apply(bits, span, attr.value);
            }
        }
    }

    fn observe_trace_state(&self, bits: &mut LeafBits, trace_state: &str) {
        if trace_state.is_empty() {
            return;
        }
        for (bit, test) in &self.trace_state {
            if !bits.get(*bit) && test.matches(trace_state) {
                bits.set(*bit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_bits_spill_past_64() {
        let mut b = LeafBits::with_leaves(130);
        for bit in [0, 63, 64, 127, 129] {
            assert!(!b.get(bit));
            b.set(bit);
            assert!(b.get(bit));
        }
        assert!(!b.get(128));
        // Out of range: ignored, reads false.
        b.set(500);
        assert!(!b.get(500));
    }

    #[test]
    fn trace_state_member_lookup() {
        let t = TraceStateTest {
            key: "ot".into(),
            values: ["th:8".into()].into_iter().collect(),
        };
        assert!(t.matches("vendor=x, ot=th:8"));
        assert!(!t.matches("vendor=ot, ot=th:4"));
        assert!(!t.matches("garbage"));
    }
}
