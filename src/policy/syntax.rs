//! The OpenTelemetry Collector `tail_sampling` policy syntax, read from the
//! verbatim YAML values in `sampling.policies`: a list of
//! `{name, type, <type>: {...}}`. Field names and zero-value defaults follow
//! the collector's `config.go`; every block rejects unknown fields.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ottl::ErrorMode;

/// Every policy type tailsift knows: the collector's, plus `throughput`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PolicyType {
    AlwaysSample,
    Latency,
    StatusCode,
    Probabilistic,
    StringAttribute,
    NumericAttribute,
    BooleanAttribute,
    SpanCount,
    RateLimiting,
    TraceState,
    And,
    Not,
    Drop,
    Composite,
    OttlCondition,
    TraceFlags,
    BytesLimiting,
    /// tailsift's own: a per-key throughput target.
    Throughput,
}

impl PolicyType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "always_sample" => Self::AlwaysSample,
            "latency" => Self::Latency,
            "status_code" => Self::StatusCode,
            "probabilistic" => Self::Probabilistic,
            "string_attribute" => Self::StringAttribute,
            "numeric_attribute" => Self::NumericAttribute,
            "boolean_attribute" => Self::BooleanAttribute,
            "span_count" => Self::SpanCount,
            "rate_limiting" => Self::RateLimiting,
            "trace_state" => Self::TraceState,
            "and" => Self::And,
            "not" => Self::Not,
            "drop" => Self::Drop,
            "composite" => Self::Composite,
            "ottl_condition" => Self::OttlCondition,
            "trace_flags" => Self::TraceFlags,
            "bytes_limiting" => Self::BytesLimiting,
            "throughput" => Self::Throughput,
            _ => return None,
        })
    }

    /// The type name, which is also the key of its settings block.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AlwaysSample => "always_sample",
            Self::Latency => "latency",
            Self::StatusCode => "status_code",
            Self::Probabilistic => "probabilistic",
            Self::StringAttribute => "string_attribute",
            Self::NumericAttribute => "numeric_attribute",
            Self::BooleanAttribute => "boolean_attribute",
            Self::SpanCount => "span_count",
            Self::RateLimiting => "rate_limiting",
            Self::TraceState => "trace_state",
            Self::And => "and",
            Self::Not => "not",
            Self::Drop => "drop",
            Self::Composite => "composite",
            Self::OttlCondition => "ottl_condition",
            Self::TraceFlags => "trace_flags",
            Self::BytesLimiting => "bytes_limiting",
            Self::Throughput => "throughput",
        }
    }
}

/// Settings blocks the collector accepts on every policy whatever its type
/// (its `PolicyCfg` has one field per type). Pasted configs may carry one
/// that belongs to another type; the collector ignores it, and so do we.
const OTEL_BLOCKS: &[&str] = &[
    "latency",
    "numeric_attribute",
    "probabilistic",
    "status_code",
    "string_attribute",
    "rate_limiting",
    "bytes_limiting",
    "span_count",
    "trace_state",
    "boolean_attribute",
    "ottl_condition",
    "composite",
    "and",
    "not",
    "drop",
];

/// One policy entry split into its parts. `block` is its type's settings
/// (an empty mapping when absent, as the collector zero-fills it).
pub(crate) struct Entry<'a> {
    pub name: Option<&'a str>,
    pub type_name: &'a str,
    pub kind: Result<PolicyType, String>,
    fields: &'a Map<String, Value>,
}

impl<'a> Entry<'a> {
    /// Splits a policy mapping; errors here cannot name the policy yet.
    pub(crate) fn split(v: &'a Value) -> Result<Self, String> {
        let fields = v
            .as_object()
            .ok_or("expected a mapping with `name` and `type`")?;
        let name = match fields.get("name") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err("`name` must be a string".into()),
        };
        let type_name = match fields.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err("`type` must be a string".into()),
            None => return Err("missing field `type`".into()),
        };
        let kind = PolicyType::parse(type_name)
            .ok_or_else(|| format!("unknown policy type `{type_name}`"));
        Ok(Self {
            name,
            type_name,
            kind,
            fields,
        })
    }

    /// Rejects keys that are neither ours nor a collector settings block.
    pub(crate) fn check_fields(&self, kind: PolicyType) -> Result<(), String> {
        let own = kind.as_str();
        match self.fields.keys().find(|k| {
            !matches!(k.as_str(), "name" | "type")
                && *k != own
                && !OTEL_BLOCKS.contains(&k.as_str())
        }) {
            Some(k) => Err(format!("unknown field `{k}`")),
            None => Ok(()),
        }
    }

    /// Deserializes this policy's settings block.
    pub(crate) fn settings<T: for<'de> Deserialize<'de>>(
        &self,
        kind: PolicyType,
    ) -> Result<T, String> {
        let block = match self.fields.get(kind.as_str()) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v) => v.clone(),
        };
        serde_json::from_value(block).map_err(|e| format!("{}: {e}", kind.as_str()))
    }
}

/// `always_sample` takes no settings.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptyCfg {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LatencyCfg {
    pub threshold_ms: i64,
    /// 0 means no upper bound.
    pub upper_threshold_ms: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StatusCodeCfg {
    pub status_codes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProbabilisticCfg {
    pub hash_salt: String,
    pub sampling_percentage: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StringAttributeCfg {
    pub key: String,
    pub values: Vec<String>,
    pub enabled_regex_matching: bool,
    /// The collector's regex-result LRU size; accepted and unused.
    #[serde(rename = "cache_max_size")]
    pub _cache_max_size: i64,
    pub invert_match: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NumericAttributeCfg {
    pub key: String,
    /// 0 means unbounded, as in the collector.
    pub min_value: i64,
    /// 0 means unbounded, as in the collector.
    pub max_value: i64,
    pub invert_match: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BooleanAttributeCfg {
    pub key: String,
    pub value: bool,
    pub invert_match: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SpanCountCfg {
    pub min_spans: i64,
    /// 0 means no maximum.
    pub max_spans: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitingCfg {
    pub spans_per_second: i64,
    /// Token bucket size; 0 means twice `spans_per_second`.
    pub burst_capacity: i64,
}

/// `ottl_condition`: sampled when a `span` condition holds on some span,
/// or a `spanevent` condition on some event.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OttlConditionCfg {
    pub error_mode: ErrorMode,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BytesLimitingCfg {
    pub bytes_per_second: i64,
    /// Token bucket size in bytes; 0 means twice `bytes_per_second`.
    pub burst_capacity: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TraceStateCfg {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AndCfg {
    pub and_sub_policy: Vec<Value>,
}

/// The collector's `not: {not_sub_policy: {...}}`: one wrapped policy.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NotCfg {
    pub not_sub_policy: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DropCfg {
    pub drop_sub_policy: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CompositeCfg {
    pub max_total_spans_per_second: i64,
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<Value>,
    pub rate_allocation: Vec<RateAllocationCfg>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateAllocationCfg {
    pub policy: String,
    pub percent: i64,
}

/// tailsift's throughput target (Refinery's EMA throughput sampler).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ThroughputCfg {
    pub goal_traces_per_second: f64,
    pub key_attributes: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub adjust_interval: Duration,
    pub ema_weight: f64,
    /// Keys tracked at once; traces with further keys share one bucket.
    pub max_keys: usize,
}

impl Default for ThroughputCfg {
    fn default() -> Self {
        Self {
            goal_traces_per_second: 0.0,
            key_attributes: Vec::new(),
            adjust_interval: Duration::from_secs(5),
            ema_weight: 0.5,
            max_keys: 1000,
        }
    }
}
