//! Realistic multi-service traces with known ground truth: a tree of spans
//! across services with depth and fan-out, errors, a slow tail and
//! attributes of varied cardinality.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::model::{SpanId, TraceId};

/// The shape of generated traffic.
#[derive(Clone, Debug)]
pub struct Profile {
    pub services: usize,
    pub max_depth: u32,
    pub max_fanout: u32,
    /// Share of traces with an error span (0..=1).
    pub error_rate: f64,
    /// Share of traces slower than `slow_ms` (0..=1).
    pub slow_rate: f64,
    /// The latency a trace must reach to count as slow, in ms.
    pub slow_ms: u64,
    /// Distinct values of the high-cardinality `user.id` attribute.
    pub user_cardinality: u32,
    /// Use 64-bit trace IDs (older Jaeger clients) instead of 128-bit.
    pub short_trace_ids: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            services: 8,
            max_depth: 4,
            max_fanout: 3,
            error_rate: 0.05,
            slow_rate: 0.02,
            slow_ms: 1000,
            user_cardinality: 10_000,
            short_trace_ids: false,
        }
    }
}

/// An attribute value of a generated span.
#[derive(Clone, Debug, PartialEq)]
pub enum GenValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

#[derive(Clone, Debug)]
pub struct GenSpan {
    pub span_id: SpanId,
    /// Zero for the root.
    pub parent: SpanId,
    pub service: String,
    pub name: String,
    /// OTLP span kind: 2 server, 3 client, 1 internal.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub error: bool,
    pub attributes: Vec<(String, GenValue)>,
}

/// A generated trace and what the default policies must do with it.
#[derive(Clone, Debug)]
pub struct GenTrace {
    pub trace_id: TraceId,
    pub spans: Vec<GenSpan>,
    pub error: bool,
    pub slow: bool,
}

impl GenTrace {
    pub fn duration_ms(&self) -> u64 {
        let start = self
            .spans
            .iter()
            .map(|s| s.start_unix_nano)
            .min()
            .unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| s.end_unix_nano)
            .max()
            .unwrap_or(0);
        end.saturating_sub(start) / 1_000_000
    }
}

const OPERATIONS: &[&str] = &[
    "GET /api/cart",
    "POST /api/checkout",
    "GET /api/products",
    "GET /api/products/{id}",
    "POST /api/login",
    "GET /healthz",
    "SELECT orders",
    "publish order.created",
];

pub struct TraceGenerator {
    profile: Profile,
    rng: StdRng,
    services: Vec<String>,
}

impl TraceGenerator {
    pub fn new(profile: Profile, seed: u64) -> Self {
        let services = (0..profile.services.max(1))
            .map(|i| format!("svc-{}", SERVICE_NAMES[i % SERVICE_NAMES.len()]))
            .collect();
        Self {
            profile,
            rng: StdRng::seed_from_u64(seed),
            services,
        }
    }

    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// One trace starting at `start_unix_nano`.
    pub fn trace(&mut self, start_unix_nano: u64) -> GenTrace {
        let trace_id = self.trace_id();
        let error = self
            .rng
            .random_bool(self.profile.error_rate.clamp(0.0, 1.0));
        let slow = self.rng.random_bool(self.profile.slow_rate.clamp(0.0, 1.0));
        let total_ms = if slow {
            self.profile.slow_ms + self.rng.random_range(0..=self.profile.slow_ms * 3)
        } else {
            // Fast traces stay clearly below the slow threshold.
            self.rng.random_range(5..=(self.profile.slow_ms / 2).max(6))
        };
        let mut spans = Vec::new();
        let root = self.span(SpanId::default(), 0, start_unix_nano, total_ms * 1_000_000);
        spans.push(root);
        self.children(&mut spans, 0, 1);
        if error {
            let i = self.rng.random_range(0..spans.len());
            spans[i].error = true;
        }
        GenTrace {
            trace_id,
            spans,
            error,
            slow,
        }
    }

    fn trace_id(&mut self) -> TraceId {
        let mut id = [0u8; 16];
        let from = if self.profile.short_trace_ids { 8 } else { 0 };
        while id == [0u8; 16] {
            self.rng.fill_bytes(&mut id[from..]);
        }
        TraceId(id)
    }

    fn span_id(&mut self) -> SpanId {
        let mut id = [0u8; 8];
        while id == [0u8; 8] {
            self.rng.fill_bytes(&mut id);
        }
        SpanId(id)
    }

    /// Adds children under `spans[parent]` within its time range.
    fn children(&mut self, spans: &mut Vec<GenSpan>, parent: usize, depth: u32) {
        if depth >= self.profile.max_depth {
            return;
        }
        let fanout = self.rng.random_range(0..=self.profile.max_fanout);
        let (p_start, p_end, p_id) = {
            let p = &spans[parent];
            (p.start_unix_nano, p.end_unix_nano, p.span_id)
        };
        let room = p_end - p_start;
        for _ in 0..fanout {
            let offset = self.rng.random_range(0..=room / 4);
            let len = self.rng.random_range(room / 8..=room / 2).max(1_000);
            let child = self.span(p_id, depth, p_start + offset, len.min(room - offset));
            spans.push(child);
            let at = spans.len() - 1;
            self.children(spans, at, depth + 1);
        }
    }

    fn span(&mut self, parent: SpanId, depth: u32, start: u64, len: u64) -> GenSpan {
        let service = self.services[self.rng.random_range(0..self.services.len())].clone();
        let name = OPERATIONS[self.rng.random_range(0..OPERATIONS.len())].to_string();
        let user = self
            .rng
            .random_range(0..self.profile.user_cardinality.max(1));
        let status = if self.rng.random_bool(0.9) { 200 } else { 404 };
        GenSpan {
            span_id: self.span_id(),
            parent,
            service,
            name: name.clone(),
            kind: if depth == 0 {
                2
            } else if depth % 2 == 1 {
                3
            } else {
                1
            },
            start_unix_nano: start,
            end_unix_nano: start + len,
            error: false,
            attributes: vec![
                ("http.route".into(), GenValue::Str(name)),
                ("http.status_code".into(), GenValue::Int(status)),
                ("user.id".into(), GenValue::Str(format!("user-{user}"))),
                (
                    "cache.hit".into(),
                    GenValue::Bool(self.rng.random_bool(0.5)),
                ),
                (
                    "db.rows".into(),
                    GenValue::Double(self.rng.random_range(0.0..500.0)),
                ),
            ],
        }
    }
}

const SERVICE_NAMES: &[&str] = &[
    "frontend", "cart", "checkout", "catalog", "payment", "shipping", "auth", "email", "ads",
    "currency",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_trees_with_ground_truth() {
        let mut g = TraceGenerator::new(
            Profile {
                error_rate: 0.5,
                slow_rate: 0.5,
                ..Default::default()
            },
            7,
        );
        let (mut errors, mut slow) = (0, 0);
        for _ in 0..400 {
            let t = g.trace(1_700_000_000_000_000_000);
            assert!(!t.trace_id.is_zero());
            assert_eq!(t.spans.iter().filter(|s| s.parent.is_zero()).count(), 1);
            let ids: Vec<_> = t.spans.iter().map(|s| s.span_id).collect();
            for s in &t.spans {
                assert!(s.parent.is_zero() || ids.contains(&s.parent));
                assert!(s.end_unix_nano >= s.start_unix_nano);
            }
            assert_eq!(t.error, t.spans.iter().any(|s| s.error));
            assert_eq!(t.slow, t.duration_ms() >= 1000, "{}", t.duration_ms());
            errors += usize::from(t.error);
            slow += usize::from(t.slow);
        }
        assert!((150..250).contains(&errors), "{errors}");
        assert!((150..250).contains(&slow), "{slow}");
    }

    #[test]
    fn same_seed_same_traffic() {
        let a = TraceGenerator::new(Profile::default(), 1).trace(0);
        let b = TraceGenerator::new(Profile::default(), 1).trace(0);
        assert_eq!(a.trace_id, b.trace_id);
        assert_eq!(a.spans.len(), b.spans.len());
    }
}
