//! `filter.spans`: the collector's `filter` processor for traces, applied
//! before spans are buffered. A span matching any `span` condition is
//! dropped; its message still resolves (the caller resolves the span as
//! handled), and drops are counted per rule in
//! `tailsift_spans_filtered_total{rule}`.
//!
//! `error_mode` follows the processor: under `propagate` a failing
//! condition would fail the whole batch in the collector; here the span is
//! kept (nothing is lost) and the error counted in
//! `tailsift_ottl_errors_total{rule="filter"}`.

use super::ottl::{OttlError, SpanConditions};
use crate::config::FilterConfig;
use crate::model::{AttributeKeys, SpanView};

/// The name errors of the filter are counted under.
const RULE: &str = "filter";

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter.spans: {0}")]
    Condition(#[from] OttlError),
    #[error(
        "filter.spans.spanevent: dropping single span events is not supported (tailsift writes spans as they came); move the condition to `span` to drop whole spans"
    )]
    SpanEvents,
}

/// Compiled `filter.spans`, shared by all partition tasks.
#[derive(Default)]
pub struct SpanFilter {
    rules: Option<Rules>,
}

struct Rules {
    conditions: SpanConditions,
    /// One counter per `span` condition, in config order.
    dropped: Vec<metrics::Counter>,
}

impl SpanFilter {
    /// Counter handles are bound now: install the metrics recorder first.
    pub fn from_config(cfg: &FilterConfig) -> Result<Self, FilterError> {
        let Some(spans) = &cfg.spans else {
            return Ok(Self::default());
        };
        if !spans.spanevent.is_empty() {
            return Err(FilterError::SpanEvents);
        }
        let conditions = SpanConditions::compile(&spans.span, &[], spans.error_mode, RULE)?;
        let dropped = spans
            .span
            .iter()
            .map(|rule| metrics::counter!("tailsift_spans_filtered_total", "rule" => rule.clone()))
            .collect();
        Ok(Self {
            rules: Some(Rules {
                conditions,
                dropped,
            }),
        })
    }

    /// The attribute keys and scan extras the conditions read.
    pub fn attribute_keys(&self) -> AttributeKeys {
        match &self.rules {
            None => AttributeKeys::default(),
            Some(r) => AttributeKeys::new(r.conditions.attribute_keys())
                .with_extras(r.conditions.extras().clone()),
        }
    }

    /// Whether `span` is dropped before buffering (and counted if so).
    pub fn drops(&self, span: &SpanView<'_>) -> bool {
        let Some(r) = &self.rules else {
            return false;
        };
        match r.conditions.first_match(span) {
            Ok(Some(i)) => {
                if let Some(c) = r.dropped.get(i) {
                    c.increment(1);
                }
                true
            }
            Ok(None) | Err(_) => false,
        }
    }
}
