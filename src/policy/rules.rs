//! Policies compiled into trees whose span-level leaves are bits set during
//! `observe`, so evaluating a trace reads only those bits, the trace summary
//! and the shared rate state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::bytes::{Regex, RegexSet};
use serde_json::Value;

use super::ottl::SpanConditions;
use super::predicate::{AttrTest, SpanPredicates, StrMatch};
use super::rate::{SecondWindow, TokenBucket};
use super::syntax::*;
use super::throughput::{Throughput, ThroughputSettings};
use super::{PolicyError, TraceState, probabilistic_hash};
use crate::model::{SpanStatus, TraceSummary};

/// The collector's salt when `hash_salt` is empty.
const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// What a node needs to evaluate a trace.
pub(crate) struct Ctx<'a> {
    pub summary: &'a TraceSummary,
    pub state: &'a TraceState,
    pub now: Instant,
    /// Origin of the composite policies' one-second windows.
    pub epoch: Instant,
}

/// A sampling rule. `eval` returns the sample rate the trace was kept at
/// (1 / probability), or `None` for "not sampled".
pub(crate) enum Node {
    Always,
    /// A span-level predicate: some span matched (`invert`: none did).
    /// `on_error` also counts the summary's error flag as a match.
    Leaf {
        bit: u32,
        invert: bool,
        on_error: bool,
    },
    /// Trace duration in whole ms: `>= lo`, or `lo < d <= hi` with an upper bound.
    Latency {
        lo: i64,
        hi: Option<i64>,
    },
    SpanCount {
        min: u32,
        max: Option<u32>,
    },
    Probabilistic(Probabilistic),
    RateLimit(TokenBucket),
    /// `bytes_limiting`: a token bucket of trace bytes.
    ByteLimit(TokenBucket),
    Throughput(Box<Throughput>),
    /// All sampled; the rate is the product (independent samplers).
    And(Vec<Node>),
    /// Sampled when the inner node is not.
    Not(Box<Node>),
}

pub(crate) struct Probabilistic {
    salt: Box<str>,
    threshold: u64,
    rate: f64,
}

impl Node {
    pub(crate) fn eval(&self, cx: &Ctx<'_>) -> Option<f64> {
        let keep = |hit: bool| hit.then_some(1.0);
        match self {
            Self::Always => Some(1.0),
            Self::Leaf {
                bit,
                invert,
                on_error,
            } => {
                let hit = cx.state.bits.get(*bit) || (*on_error && cx.summary.error_seen);
                keep(hit != *invert)
            }
            Self::Latency { lo, hi } => {
                let ms = (cx.summary.duration_nanos() / 1_000_000) as i64;
                keep(match hi {
                    None => ms >= *lo,
                    Some(hi) => *lo < ms && ms <= *hi,
                })
            }
            Self::SpanCount { min, max } => {
                let n = cx.summary.span_count;
                keep(n >= *min && max.is_none_or(|m| n <= m))
            }
            Self::Probabilistic(p) => {
                let h = probabilistic_hash(&p.salt, &cx.summary.trace_id);
                (p.rate.is_finite() && h <= p.threshold).then_some(p.rate)
            }
            Self::RateLimit(bucket) => keep(bucket.allow(cx.summary.span_count.into(), cx.now)),
            Self::ByteLimit(bucket) => keep(bucket.allow(cx.summary.bytes, cx.now)),
            Self::Throughput(t) => t.decide(&cx.summary.trace_id, &cx.state.captured, cx.now),
            // In order, stopping at the first miss: later stateful nodes
            // spend budget only on traces the earlier ones let through.
            Self::And(nodes) => nodes
                .iter()
                .try_fold(1.0, |rate, n| n.eval(cx).map(|r| rate * r)),
            Self::Not(inner) => keep(inner.eval(cx).is_none()),
        }
    }
}

/// A composite: sub-policies in order, each with a spans-per-second budget.
pub(crate) struct Composite {
    subs: Vec<(Node, u64)>,
    max_total: u64,
    window: SecondWindow,
}

impl Composite {
    /// The first sampling sub-policy decides, within its budget.
    pub(crate) fn eval(&self, cx: &Ctx<'_>) -> Option<f64> {
        let (i, rate) = self
            .subs
            .iter()
            .enumerate()
            .find_map(|(i, (n, _))| n.eval(cx).map(|r| (i, r)))?;
        let second = cx.now.saturating_duration_since(cx.epoch).as_secs();
        let spans = u64::from(cx.summary.span_count);
        self.window
            .admit(second, i, spans, self.subs[i].1, self.max_total)
            .then_some(rate)
    }
}

/// A top-level policy.
pub(crate) enum Rule {
    Sample(Node),
    /// Drops the trace when every sub-policy samples it.
    Drop(Vec<Node>),
    Composite(Composite),
}

pub(crate) struct Policy {
    pub name: Arc<str>,
    pub rule: Rule,
}

/// Compiles policy values, handing out leaf bits and capture slots.
#[derive(Default)]
pub(crate) struct Builder {
    pub preds: SpanPredicates,
    /// Attribute keys whose first value a trace remembers (throughput keys).
    pub captures: Vec<Box<str>>,
}

type Result<T> = std::result::Result<T, PolicyError>;

/// Where in the config a policy sits, for error messages.
struct Path(String);

impl Path {
    fn err(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            path: self.0.clone(),
            message: message.into(),
        }
    }

    fn child(&self, entry: &Entry<'_>, index: usize) -> Path {
        Path(format!("{} > {}", self.0, describe(entry, index)))
    }
}

fn describe(entry: &Entry<'_>, index: usize) -> String {
    match entry.name {
        Some(name) if !name.is_empty() => format!("'{name}' ({})", entry.type_name),
        _ => format!("#{} ({})", index + 1, entry.type_name),
    }
}

impl Builder {
    /// Compiles the top-level policy at `index`.
    pub(crate) fn policy(&mut self, index: usize, v: &Value) -> Result<Policy> {
        let entry = Entry::split(v).map_err(|m| Path(format!("#{}", index + 1)).err(m))?;
        let path = Path(describe(&entry, index));
        let name = match entry.name {
            Some(n) if !n.trim().is_empty() => n,
            _ => return Err(path.err("`name` must not be empty")),
        };
        let kind = entry.kind.clone().map_err(|m| path.err(m))?;
        entry.check_fields(kind).map_err(|m| path.err(m))?;
        let rule = match kind {
            PolicyType::Drop => {
                let cfg: DropCfg = entry.settings(kind).map_err(|m| path.err(m))?;
                Rule::Drop(self.sub_policies(&path, &cfg.drop_sub_policy, "drop_sub_policy")?)
            }
            PolicyType::Composite => Rule::Composite(self.composite(&path, &entry)?),
            _ => Rule::Sample(self.node(&path, name, &entry, kind)?),
        };
        Ok(Policy {
            name: name.into(),
            rule,
        })
    }

    fn sub_policies(&mut self, path: &Path, values: &[Value], field: &str) -> Result<Vec<Node>> {
        if values.is_empty() {
            return Err(path.err(format!("`{field}` must list at least one policy")));
        }
        values
            .iter()
            .enumerate()
            .map(|(i, v)| self.sub_policy(path, i, v))
            .collect()
    }

    fn sub_policy(&mut self, parent: &Path, index: usize, v: &Value) -> Result<Node> {
        let entry =
            Entry::split(v).map_err(|m| Path(format!("{} > #{}", parent.0, index + 1)).err(m))?;
        let path = parent.child(&entry, index);
        let kind = entry.kind.clone().map_err(|m| path.err(m))?;
        entry.check_fields(kind).map_err(|m| path.err(m))?;
        let name = entry.name.unwrap_or(entry.type_name);
        self.node(&path, name, &entry, kind)
    }

    fn node(&mut self, path: &Path, name: &str, e: &Entry<'_>, kind: PolicyType) -> Result<Node> {
        let err = |m: String| path.err(m);
        Ok(match kind {
            PolicyType::AlwaysSample => {
                e.settings::<EmptyCfg>(kind).map_err(err)?;
                Node::Always
            }
            PolicyType::Latency => latency(path, e.settings(kind).map_err(err)?)?,
            PolicyType::StatusCode => self.status_code(path, e.settings(kind).map_err(err)?)?,
            PolicyType::Probabilistic => probabilistic(path, e.settings(kind).map_err(err)?)?,
            PolicyType::StringAttribute => {
                self.string_attribute(path, e.settings(kind).map_err(err)?)?
            }
            PolicyType::NumericAttribute => {
                self.numeric_attribute(path, e.settings(kind).map_err(err)?)?
            }
            PolicyType::BooleanAttribute => {
                self.boolean_attribute(path, e.settings(kind).map_err(err)?)?
            }
            PolicyType::SpanCount => span_count(path, e.settings(kind).map_err(err)?)?,
            PolicyType::RateLimiting => rate_limiting(path, e.settings(kind).map_err(err)?)?,
            PolicyType::TraceState => self.trace_state(path, e.settings(kind).map_err(err)?)?,
            PolicyType::TraceFlags => {
                e.settings::<EmptyCfg>(kind).map_err(err)?;
                leaf(self.preds.add_sampled_flag())
            }
            PolicyType::OttlCondition => {
                self.ottl_condition(path, name, e.settings(kind).map_err(err)?)?
            }
            PolicyType::BytesLimiting => bytes_limiting(path, e.settings(kind).map_err(err)?)?,
            PolicyType::Throughput => {
                self.throughput(path, name, e.settings(kind).map_err(err)?)?
            }
            PolicyType::And => {
                let cfg: AndCfg = e.settings(kind).map_err(err)?;
                Node::And(self.sub_policies(path, &cfg.and_sub_policy, "and_sub_policy")?)
            }
            PolicyType::Not => {
                let cfg: NotCfg = e.settings(kind).map_err(err)?;
                let inner = cfg
                    .not_sub_policy
                    .ok_or_else(|| path.err("`not_sub_policy` is required"))?;
                Node::Not(Box::new(self.sub_policy(path, 0, &inner)?))
            }
            // Top-level drops and composites never get here.
            PolicyType::Drop | PolicyType::Composite => {
                return Err(path.err(format!(
                    "`{}` is only allowed as a top-level policy",
                    kind.as_str()
                )));
            }
        })
    }

    fn status_code(&mut self, path: &Path, cfg: StatusCodeCfg) -> Result<Node> {
        if cfg.status_codes.is_empty() {
            return Err(path.err("`status_codes` must list at least one of OK, ERROR, UNSET"));
        }
        let mut mask = 0u8;
        for code in &cfg.status_codes {
            let status = match code.as_str() {
                "OK" => SpanStatus::Ok,
                "ERROR" => SpanStatus::Error,
                "UNSET" => SpanStatus::Unset,
                other => {
                    return Err(path.err(format!(
                        "unknown status code `{other}`, supported: OK, ERROR, UNSET"
                    )));
                }
            };
            mask |= 1 << status as u8;
        }
        let on_error = mask & (1 << SpanStatus::Error as u8) != 0;
        let bit = self.preds.add_status(mask);
        Ok(Node::Leaf {
            bit,
            invert: false,
            on_error,
        })
    }

    fn string_attribute(&mut self, path: &Path, cfg: StringAttributeCfg) -> Result<Node> {
        require_key(path, &cfg.key)?;
        let matcher = if cfg.enabled_regex_matching {
            StrMatch::Regex(regex_set(path, &cfg.values)?)
        } else {
            // The collector ignores empty values: they never match.
            StrMatch::exact(
                cfg.values
                    .iter()
                    .filter(|v| !v.is_empty())
                    .map(String::as_str),
            )
        };
        Ok(self.attr_leaf(&cfg.key, AttrTest::Str(matcher), cfg.invert_match))
    }

    fn numeric_attribute(&mut self, path: &Path, cfg: NumericAttributeCfg) -> Result<Node> {
        require_key(path, &cfg.key)?;
        if cfg.min_value == 0 && cfg.max_value == 0 {
            return Err(
                path.err("at least one of `min_value` or `max_value` must be set (non-zero)")
            );
        }
        // As in the collector, 0 leaves that side of the range open.
        let min = if cfg.min_value == 0 {
            i64::MIN
        } else {
            cfg.min_value
        };
        let max = if cfg.max_value == 0 {
            i64::MAX
        } else {
            cfg.max_value
        };
        if min > max {
            return Err(path.err(format!(
                "`min_value` {min} is greater than `max_value` {max}"
            )));
        }
        Ok(self.attr_leaf(&cfg.key, AttrTest::Int { min, max }, cfg.invert_match))
    }

    fn boolean_attribute(&mut self, path: &Path, cfg: BooleanAttributeCfg) -> Result<Node> {
        require_key(path, &cfg.key)?;
        Ok(self.attr_leaf(&cfg.key, AttrTest::Bool(cfg.value), cfg.invert_match))
    }

    fn attr_leaf(&mut self, key: &str, test: AttrTest, invert: bool) -> Node {
        Node::Leaf {
            bit: self.preds.add_attr(key, test),
            invert,
            on_error: false,
        }
    }

    fn ottl_condition(&mut self, path: &Path, name: &str, cfg: OttlConditionCfg) -> Result<Node> {
        let conditions = SpanConditions::compile(&cfg.span, &cfg.spanevent, cfg.error_mode, name)
            .map_err(|e| path.err(format!("ottl_condition: {e}")))?;
        Ok(leaf(self.preds.add_ottl(conditions)))
    }

    fn trace_state(&mut self, path: &Path, cfg: TraceStateCfg) -> Result<Node> {
        require_key(path, &cfg.key)?;
        // A tracestate member ("key=value") is at most 256 characters: the
        // collector drops longer values, they could never match.
        let values: HashSet<Box<str>> = cfg
            .values
            .iter()
            .filter(|v| !v.is_empty() && cfg.key.len() + v.len() < 256)
            .map(|v| v.as_str().into())
            .collect();
        Ok(Node::Leaf {
            bit: self.preds.add_trace_state(&cfg.key, values),
            invert: false,
            on_error: false,
        })
    }

    fn throughput(&mut self, path: &Path, name: &str, cfg: ThroughputCfg) -> Result<Node> {
        if !(cfg.goal_traces_per_second > 0.0 && cfg.goal_traces_per_second.is_finite()) {
            return Err(path.err("`goal_traces_per_second` must be greater than 0"));
        }
        if !(cfg.ema_weight > 0.0 && cfg.ema_weight <= 1.0) {
            return Err(path.err("`ema_weight` must be in (0, 1]"));
        }
        if cfg.adjust_interval < Duration::from_millis(100) {
            return Err(path.err("`adjust_interval` must be at least 100ms"));
        }
        if cfg.max_keys == 0 {
            return Err(path.err("`max_keys` must be at least 1"));
        }
        let slots = cfg
            .key_attributes
            .iter()
            .map(|k| self.capture_slot(k))
            .collect();
        let settings = ThroughputSettings {
            goal_traces_per_second: cfg.goal_traces_per_second,
            interval: cfg.adjust_interval,
            weight: cfg.ema_weight,
            max_keys: cfg.max_keys,
        };
        Ok(Node::Throughput(Box::new(Throughput::new(
            name, slots, settings,
        ))))
    }

    fn capture_slot(&mut self, key: &str) -> usize {
        match self.captures.iter().position(|k| &**k == key) {
            Some(i) => i,
            None => {
                self.captures.push(key.into());
                self.captures.len() - 1
            }
        }
    }

    fn composite(&mut self, path: &Path, entry: &Entry<'_>) -> Result<Composite> {
        let cfg: CompositeCfg = entry
            .settings(PolicyType::Composite)
            .map_err(|m| path.err(m))?;
        if cfg.max_total_spans_per_second <= 0 {
            return Err(path.err("`max_total_spans_per_second` must be greater than 0"));
        }
        let max_total = cfg.max_total_spans_per_second as u64;
        let nodes = self.sub_policies(path, &cfg.composite_sub_policy, "composite_sub_policy")?;
        let names = sub_names(&cfg.composite_sub_policy);
        let budgets = allocations(path, &cfg, &names, max_total)?;
        let order = evaluation_order(path, &cfg.policy_order, &names)?;
        let mut slots: Vec<Option<(Node, u64)>> =
            nodes.into_iter().zip(budgets).map(Some).collect();
        let subs: Vec<(Node, u64)> = order.iter().filter_map(|&i| slots[i].take()).collect();
        Ok(Composite {
            window: SecondWindow::new(subs.len()),
            subs,
            max_total,
        })
    }
}

/// A plain span-level leaf: sampled when some span matched.
fn leaf(bit: u32) -> Node {
    Node::Leaf {
        bit,
        invert: false,
        on_error: false,
    }
}

fn require_key(path: &Path, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(path.err("`key` must not be empty"));
    }
    Ok(())
}

fn regex_set(path: &Path, patterns: &[String]) -> Result<RegexSet> {
    // Compile one by one first so the error names the bad pattern.
    for p in patterns {
        Regex::new(p).map_err(|e| path.err(format!("invalid regex `{p}`: {e}")))?;
    }
    RegexSet::new(patterns).map_err(|e| path.err(format!("invalid regex set: {e}")))
}

fn latency(path: &Path, cfg: LatencyCfg) -> Result<Node> {
    if cfg.threshold_ms < 0 || cfg.upper_threshold_ms < 0 {
        return Err(path.err("`threshold_ms` and `upper_threshold_ms` must not be negative"));
    }
    let hi = (cfg.upper_threshold_ms > 0).then_some(cfg.upper_threshold_ms);
    if let Some(hi) = hi
        && cfg.threshold_ms > hi
    {
        return Err(path.err(format!(
            "`threshold_ms` {} is greater than `upper_threshold_ms` {hi}",
            cfg.threshold_ms
        )));
    }
    Ok(Node::Latency {
        lo: cfg.threshold_ms,
        hi,
    })
}

fn span_count(path: &Path, cfg: SpanCountCfg) -> Result<Node> {
    let fits = |n: i64| u32::try_from(n).ok();
    let (Some(min), Some(max)) = (fits(cfg.min_spans), fits(cfg.max_spans)) else {
        return Err(path.err("`min_spans` and `max_spans` must be between 0 and 4294967295"));
    };
    let max = (max > 0).then_some(max);
    if let Some(max) = max
        && min > max
    {
        return Err(path.err(format!(
            "`min_spans` {min} is greater than `max_spans` {max}"
        )));
    }
    Ok(Node::SpanCount { min, max })
}

fn probabilistic(path: &Path, cfg: ProbabilisticCfg) -> Result<Node> {
    let pct = cfg.sampling_percentage;
    if !(0.0..=100.0).contains(&pct) {
        return Err(path.err(format!("`sampling_percentage` {pct} is outside [0, 100]")));
    }
    let salt = if cfg.hash_salt.is_empty() {
        DEFAULT_HASH_SALT
    } else {
        &cfg.hash_salt
    };
    Ok(Node::Probabilistic(Probabilistic {
        salt: salt.into(),
        threshold: probabilistic_threshold(pct),
        // 0% keeps nothing: an infinite rate marks "never".
        rate: 100.0 / pct,
    }))
}

/// `u64::MAX × pct / 100`, computed as the collector does with `big.Float`:
/// the exact product rounded to 64 significant bits (nearest even), then
/// truncated, so both pick the same threshold for every percentage.
pub(crate) fn probabilistic_threshold(pct: f64) -> u64 {
    let ratio = pct / 100.0;
    if ratio >= 1.0 {
        return u64::MAX;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    // ratio = mantissa × 2^-shift exactly.
    let bits = ratio.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1 << 52) - 1);
    let (mantissa, shift) = if exp == 0 {
        (frac, 1074)
    } else {
        (frac | 1 << 52, 1075 - exp)
    };
    let product = round_to_64_bits(u128::from(mantissa) * u128::from(u64::MAX));
    u32::try_from(shift)
        .ok()
        .and_then(|s| product.checked_shr(s))
        .map_or(0, |v| v as u64)
}

fn round_to_64_bits(p: u128) -> u128 {
    let extra = (128 - p.leading_zeros()).saturating_sub(64);
    if extra == 0 {
        return p;
    }
    let half = 1u128 << (extra - 1);
    let low = p & ((1u128 << extra) - 1);
    let mut high = p >> extra;
    if low > half || (low == half && high & 1 == 1) {
        high += 1;
    }
    high << extra
}

fn rate_limiting(path: &Path, cfg: RateLimitingCfg) -> Result<Node> {
    let bucket = token_bucket(
        path,
        "spans_per_second",
        cfg.spans_per_second,
        cfg.burst_capacity,
    )?;
    Ok(Node::RateLimit(bucket))
}

/// The trace's bytes are its spans' wire bytes, where the collector
/// estimates the size of its in-memory spans; budgets are comparable, not
/// byte-identical.
fn bytes_limiting(path: &Path, cfg: BytesLimitingCfg) -> Result<Node> {
    let bucket = token_bucket(
        path,
        "bytes_per_second",
        cfg.bytes_per_second,
        cfg.burst_capacity,
    )?;
    Ok(Node::ByteLimit(bucket))
}

/// The collector's limiter: `rate` per second, a bucket of `burst_capacity`
/// or, when that is 0, of two seconds' worth.
fn token_bucket(
    path: &Path,
    rate_field: &str,
    rate: i64,
    burst_capacity: i64,
) -> Result<TokenBucket> {
    if rate <= 0 {
        return Err(path.err(format!("`{rate_field}` must be greater than 0")));
    }
    if burst_capacity < 0 {
        return Err(path.err("`burst_capacity` must not be negative"));
    }
    let rate = rate as u64;
    let burst = if burst_capacity > 0 {
        burst_capacity as u64
    } else {
        rate.saturating_mul(2)
    };
    Ok(TokenBucket::new(rate, burst))
}

fn sub_names(values: &[Value]) -> Vec<Option<&str>> {
    values
        .iter()
        .map(|v| v.get("name").and_then(Value::as_str))
        .collect()
}

fn position(path: &Path, names: &[Option<&str>], name: &str, field: &str) -> Result<usize> {
    names.iter().position(|n| *n == Some(name)).ok_or_else(|| {
        path.err(format!(
            "`{field}` names `{name}`, which is not a composite_sub_policy"
        ))
    })
}

/// Spans per second per sub-policy, as the collector computes them: a
/// positive `percent` of the total, a zero or negative one an equal share,
/// and no allocation at all nothing (that sub-policy never samples).
fn allocations(
    path: &Path,
    cfg: &CompositeCfg,
    names: &[Option<&str>],
    max_total: u64,
) -> Result<Vec<u64>> {
    let mut budgets = vec![0u64; names.len()];
    let equal_share = max_total / names.len() as u64;
    for a in &cfg.rate_allocation {
        let i = position(path, names, &a.policy, "rate_allocation")?;
        budgets[i] = if a.percent > 0 {
            (a.percent as f64 / 100.0 * max_total as f64) as u64
        } else {
            equal_share
        };
    }
    for (name, _) in names.iter().zip(&budgets).filter(|(_, b)| **b == 0) {
        tracing::warn!(
            policy = %path.0,
            sub_policy = name.unwrap_or("?"),
            "composite sub-policy has no rate_allocation and will never sample"
        );
    }
    Ok(budgets)
}

/// `policy_order` first (the collector parses but ignores it; tailsift
/// honours it), then any unlisted sub-policies in their listed order.
fn evaluation_order(path: &Path, order: &[String], names: &[Option<&str>]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(names.len());
    for name in order {
        let i = position(path, names, name, "policy_order")?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.extend(
        (0..names.len())
            .filter(|i| !out.contains(i))
            .collect::<Vec<_>>(),
    );
    Ok(out)
}
