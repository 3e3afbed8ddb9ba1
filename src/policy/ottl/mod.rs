//! OTTL (the OpenTelemetry Transformation Language) conditions, the subset
//! that `ottl_condition` policies and `filter` span rules use: this module
//! owns their lexer, parser, compiler and evaluator.
//!
//! Conditions are compiled once, when policies are built, and evaluated per
//! span on the scanned span facts ([`SpanView`]), never on a decoded span.
//! A compiled set reports what it reads ([`SpanConditions::attribute_keys`],
//! [`SpanConditions::extras`]) so the scanner records exactly that. What the
//! subset lacks (a path, a function, an enum) is a compile error naming it:
//! a pasted condition fails `check-config` instead of quietly matching
//! nothing.
//!
//! Semantics follow the collector's `pkg/ottl`: a list of conditions
//! matches when any of them does; `spanevent` conditions are evaluated once
//! per event of the span; `error_mode` decides what an evaluation error
//! (e.g. `ToLowerCase` of an int) means:
//! - `propagate` (the default): the evaluation stops and reports it;
//! - `ignore`: the failing condition counts as false, and it is logged;
//! - `silent`: the same, without the log.

mod compile;
mod eval;
mod lexer;
mod parser;

#[cfg(test)]
mod tests;

use serde::Deserialize;

use crate::model::{ScanExtras, SpanView};

pub use compile::OttlContext;
pub use eval::EvalError;

use compile::{AttrScope, Cond, Field};
use eval::Target;

/// A condition that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OttlError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("not supported by tailsift: {0}")]
    Unsupported(String),
    /// Which condition of which list failed.
    #[error("{list}[{index}] `{source_text}`: {error}")]
    In {
        list: &'static str,
        index: usize,
        source_text: String,
        error: Box<OttlError>,
    },
    #[error("expected at least one OTTL condition")]
    Empty,
}

impl OttlError {
    pub(crate) fn syntax(m: impl Into<String>) -> Self {
        Self::Syntax(m.into())
    }

    pub(crate) fn unsupported(m: impl Into<String>) -> Self {
        Self::Unsupported(m.into())
    }
}

/// The collector's `error_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    #[default]
    Propagate,
    Ignore,
    Silent,
}

/// A condition with the text it came from, for logs.
struct Compiled {
    text: Box<str>,
    cond: Cond,
}

/// `span` and `spanevent` condition lists, compiled for one policy or rule.
pub struct SpanConditions {
    span: Vec<Compiled>,
    event: Vec<Compiled>,
    mode: ErrorMode,
    keys: Vec<Box<str>>,
    extras: ScanExtras,
    errors: metrics::Counter,
}

impl SpanConditions {
    /// Compiles both lists; `rule` names the policy or filter rule in the
    /// `tailsift_ottl_errors_total` counter.
    pub fn compile(
        span: &[String],
        spanevent: &[String],
        mode: ErrorMode,
        rule: &str,
    ) -> Result<Self, OttlError> {
        if span.is_empty() && spanevent.is_empty() {
            return Err(OttlError::Empty);
        }
        let mut keys: Vec<Box<str>> = Vec::new();
        let mut extras = ScanExtras {
            events: !spanevent.is_empty(),
            ..ScanExtras::default()
        };
        let mut seen = |f: &Field| match f {
            Field::Attr(AttrScope::Event, k) => {
                extras.event_keys.push(k.clone());
            }
            Field::Attr(_, k) => keys.push(k.clone()),
            Field::ScopeName => extras.scope_name = true,
            _ => {}
        };
        let span = compile_list("span", span, OttlContext::Span, &mut seen)?;
        let event = compile_list("spanevent", spanevent, OttlContext::SpanEvent, &mut seen)?;
        extras.event_keys.sort();
        extras.event_keys.dedup();
        Ok(Self {
            span,
            event,
            mode,
            keys,
            extras,
            errors: metrics::counter!("tailsift_ottl_errors_total", "rule" => rule.to_string()),
        })
    }

    /// Span and resource attribute keys the conditions read.
    pub fn attribute_keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &**k)
    }

    /// Facts beyond the default scan that the conditions read.
    pub fn extras(&self) -> &ScanExtras {
        &self.extras
    }

    /// Whether any span condition, or any spanevent condition on any of
    /// the span's events, holds. An error stops the evaluation only under
    /// `propagate`.
    pub fn matches(&self, span: &SpanView<'_>) -> Result<bool, EvalError> {
        Ok(self.first_match(span)?.is_some())
    }

    /// Like [`Self::matches`], naming the condition that held: its index in
    /// `span`, or `span.len()` plus its index in `spanevent`.
    pub fn first_match(&self, span: &SpanView<'_>) -> Result<Option<usize>, EvalError> {
        let target = Target { span, event: None };
        if let Some(i) = self.first(&self.span, target)? {
            return Ok(Some(i));
        }
        if self.event.is_empty() {
            return Ok(None);
        }
        for event in span.events() {
            let target = Target {
                span,
                event: Some(event),
            };
            if let Some(i) = self.first(&self.event, target)? {
                return Ok(Some(self.span.len() + i));
            }
        }
        Ok(None)
    }

    fn first(&self, list: &[Compiled], target: Target<'_, '_>) -> Result<Option<usize>, EvalError> {
        for (i, c) in list.iter().enumerate() {
            match eval::cond(&c.cond, target) {
                Ok(true) => return Ok(Some(i)),
                Ok(false) => {}
                Err(e) => {
                    self.errors.increment(1);
                    match self.mode {
                        ErrorMode::Propagate => return Err(e),
                        ErrorMode::Ignore => {
                            tracing::warn!(condition = &*c.text, error = %e, "OTTL condition failed; counted as false");
                        }
                        ErrorMode::Silent => {}
                    }
                }
            }
        }
        Ok(None)
    }
}

fn compile_list(
    list: &'static str,
    sources: &[String],
    ctx: OttlContext,
    seen: &mut dyn FnMut(&Field),
) -> Result<Vec<Compiled>, OttlError> {
    sources
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let wrap = |error| OttlError::In {
                list,
                index,
                source_text: text.clone(),
                error: Box::new(error),
            };
            let expr = parser::parse(text).map_err(wrap)?;
            let cond = compile::condition(&expr, ctx, seen).map_err(wrap)?;
            Ok(Compiled {
                text: text.as_str().into(),
                cond,
            })
        })
        .collect()
}
