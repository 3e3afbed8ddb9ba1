//! The policy engine: decides whole traces with OpenTelemetry Collector
//! `tail_sampling` policies (accepted verbatim) plus tailsift's `throughput`.
//!
//! Every collector policy asks "does ANY span of the trace match X" or looks
//! at trace-level facts (duration, span count, trace ID). So each span-level
//! test compiles to one bit of a small per-trace [`TraceState`], set in
//! [`PolicyEngine::observe`] as spans are buffered; [`PolicyEngine::decide`]
//! then costs O(policies) and never re-reads spans.
//!
//! Semantics follow the collector (processor.go, internal/sampling):
//! - `drop` policies are evaluated first; if one matches (all its
//!   sub-policies sample), the trace is dropped and nothing else runs.
//! - Otherwise every policy is evaluated (stateful ones spend budget even
//!   when another policy already samples) and any sample keeps the trace.
//! - `invert_match` yields a plain sample / not-sample of the negated test,
//!   as in collector v0.144+ where the legacy "inverted decisions" (which
//!   vetoed other policies) were disabled and later removed. Use `drop` to
//!   veto.
//!
//! A keep reports the policy with the smallest sample rate (the first in
//! config order on ties): always_sample, latency, status_code, span_count,
//! attribute, trace_state, trace_flags, ottl_condition, rate_limiting and
//! bytes_limiting policies imply rate 1,
//! probabilistic 100/pct, throughput its key's rate, `and` the product of
//! its parts, `not` 1, composite the rate of the sub-policy that sampled.

mod filter;
pub mod ottl;
mod predicate;
mod rate;
mod rules;
mod syntax;
mod throughput;

#[cfg(test)]
mod tests;

use std::hash::Hasher as _;
use std::sync::Arc;
use std::time::Instant;

use fnv::FnvHasher;

use crate::model::{AttributeKeys, Decision, RawValue, SpanView, TraceId, TraceSummary};

pub use filter::{FilterError, SpanFilter};
use predicate::{LeafBits, SERVICE_NAME, SpanPredicates};
use rules::{Builder, Ctx, Policy, Rule};

/// A policy list that cannot be used. Messages name the policy, e.g.
/// `policy 'slow' (latency): unknown field `treshold_ms``; nested
/// sub-policies are named by their path, `'outer' (and) > 'inner' (...)`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("policy '{0}': duplicate policy name")]
    DuplicateName(String),
}

/// The policy name of decisions made without policies.
pub const ALWAYS: &str = "always";
/// The policy name of drops no `drop` policy caused.
pub const NONE: &str = "none";

/// Decides traces; shared as `Arc<PolicyEngine>` by all partition tasks.
pub struct PolicyEngine {
    /// `drop` policies first, then the others, each group in config order.
    policies: Vec<Counted>,
    preds: SpanPredicates,
    captures: Vec<Box<str>>,
    epoch: Instant,
    none: Arc<str>,
    /// The collector's `sample_on_first_match`.
    first_match: bool,
}

/// A top-level policy with its evaluation counters.
struct Counted {
    policy: Policy,
    hit: metrics::Counter,
    miss: metrics::Counter,
}

impl Counted {
    /// Counter handles are bound now: install the metrics recorder before
    /// building an engine.
    fn new(policy: Policy) -> Self {
        let name = policy.name.to_string();
        let hit_label = if matches!(policy.rule, Rule::Drop(_)) {
            "dropped"
        } else {
            "sampled"
        };
        let counter = |result: &'static str| metrics::counter!("tailsift_policy_evaluations_total", "policy" => name.clone(), "result" => result);
        Self {
            hit: counter(hit_label),
            miss: counter("not_sampled"),
            policy,
        }
    }
}

/// Per-trace policy state: which leaf predicates some span matched, and
/// the first values of throughput key attributes. Only meaningful to the
/// engine that created it (after a policy reload, keep deciding pending
/// traces with the engine that observed them).
#[derive(Clone, Debug, Default)]
pub struct TraceState {
    bits: LeafBits,
    captured: Box<[Option<Box<str>>]>,
}

/// FNV-1a 64 over the salt bytes, then the 16 trace-ID bytes: the
/// collector's `probabilistic` hash (Go's `fnv.New64a`).
pub fn probabilistic_hash(salt: &str, trace_id: &TraceId) -> u64 {
    let mut h = FnvHasher::default();
    h.write(salt.as_bytes());
    h.write(&trace_id.0);
    h.finish()
}

impl PolicyEngine {
    /// Compiles `sampling.policies`. An empty list keeps every trace under
    /// the policy name "always", like the Jaeger ingester it replaces.
    pub fn from_config(policies: &[serde_json::Value]) -> Result<Self, PolicyError> {
        let mut builder = Builder::default();
        let mut compiled = Vec::with_capacity(policies.len());
        for (i, v) in policies.iter().enumerate() {
            let p = builder.policy(i, v)?;
            if compiled.iter().any(|c: &Policy| c.name == p.name) {
                return Err(PolicyError::DuplicateName(p.name.to_string()));
            }
            compiled.push(p);
        }
        // Drops take precedence, so they run first (as in the collector).
        compiled.sort_by_key(|p| !matches!(p.rule, Rule::Drop(_)));
        Ok(Self {
            policies: compiled.into_iter().map(Counted::new).collect(),
            preds: builder.preds,
            captures: builder.captures,
            epoch: Instant::now(),
            none: NONE.into(),
            first_match: false,
        })
    }

    /// Like the collector's `sample_on_first_match`: after the drop
    /// policies, the first policy in config order that samples decides and
    /// later ones are not evaluated (so they spend no rate budget).
    pub fn sample_on_first_match(mut self, on: bool) -> Self {
        self.first_match = on;
        self
    }

    /// Attribute keys any policy reads; scanners keep only these.
    pub fn attribute_keys(&self) -> AttributeKeys {
        AttributeKeys::new(self.preds.keys().chain(self.captures.iter().map(|k| &**k)))
            .with_extras(self.preds.extras())
    }

    pub fn new_state(&self) -> TraceState {
        TraceState {
            bits: LeafBits::with_leaves(self.preds.len()),
            captured: vec![None; self.captures.len()].into_boxed_slice(),
        }
    }

    /// Called once per span as it is buffered.
    pub fn observe(&self, state: &mut TraceState, span: &SpanView<'_>) {
        self.preds.observe(&mut state.bits, span);
        if state.captured.iter().any(Option::is_none) {
            self.capture(state, span);
        }
    }

    /// Remembers the first value seen of each throughput key attribute.
    fn capture(&self, state: &mut TraceState, span: &SpanView<'_>) {
        for (key, slot) in self.captures.iter().zip(state.captured.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let service = span.span.service_name;
            *slot = if &**key == SERVICE_NAME && !service.is_empty() {
                Some(key_text(span, RawValue::Str(service)))
            } else {
                span.raw_attributes()
                    .find(|a| span.bytes_at(a.key) == key.as_bytes())
                    .map(|a| key_text(span, a.value))
            };
        }
    }

    /// Decides a whole trace; `now` drives the rate-based policies.
    pub fn decide(&self, summary: &TraceSummary, state: &TraceState, now: Instant) -> Decision {
        if self.policies.is_empty() {
            return Decision::keep(ALWAYS.into(), 1.0);
        }
        let cx = Ctx {
            summary,
            state,
            now,
            epoch: self.epoch,
        };
        let mut best: Option<(f64, &Arc<str>)> = None;
        for c in &self.policies {
            let outcome = match &c.policy.rule {
                Rule::Drop(nodes) => {
                    let matched = nodes.iter().all(|n| n.eval(&cx).is_some());
                    count(c, matched);
                    if matched {
                        return Decision::drop(c.policy.name.clone());
                    }
                    continue;
                }
                Rule::Sample(node) => node.eval(&cx),
                Rule::Composite(composite) => composite.eval(&cx),
            };
            count(c, outcome.is_some());
            if let Some(rate) = outcome
                && best.is_none_or(|(r, _)| rate < r)
            {
                best = Some((rate, &c.policy.name));
            }
            if self.first_match && best.is_some() {
                break;
            }
        }
        match best {
            Some((rate, name)) => Decision::keep(name.clone(), rate),
            None => Decision::drop(self.none.clone()),
        }
    }

    /// Top-level policy names in evaluation order, for metrics. Decisions
    /// may also name "always" (no policies) or "none" (nothing sampled).
    pub fn policy_names(&self) -> Vec<Arc<str>> {
        if self.policies.is_empty() {
            return vec![ALWAYS.into()];
        }
        self.policies
            .iter()
            .map(|c| c.policy.name.clone())
            .collect()
    }
}

fn count(c: &Counted, hit: bool) {
    if hit { &c.hit } else { &c.miss }.increment(1);
}

/// An attribute value as part of a throughput key.
fn key_text(span: &SpanView<'_>, v: RawValue) -> Box<str> {
    match v {
        RawValue::Str(r) => String::from_utf8_lossy(span.bytes_at(r)).into(),
        RawValue::Bool(b) => b.to_string().into(),
        RawValue::Int(i) => i.to_string().into(),
        RawValue::Double(d) => d.to_string().into(),
        RawValue::Bytes(r) => hex::encode(span.bytes_at(r)).into(),
    }
}
