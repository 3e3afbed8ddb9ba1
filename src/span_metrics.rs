//! Span metrics: calls, errors and a duration histogram from every span,
//! before sampling, by service, operation (span name), span kind and status
//! code, plus configured attribute dimensions.
//!
//! Names and labels are the OpenTelemetry spanmetrics connector's as its
//! Prometheus exporter writes them, which is what Jaeger's Monitor tab
//! queries with `normalize_calls` and `normalize_duration` on:
//! `traces_span_metrics_calls_total` and
//! `traces_span_metrics_duration_milliseconds_{bucket,sum,count}` with
//! `service_name`, `span_name`, `span_kind` (`SPAN_KIND_SERVER`, …) and
//! `status_code` (`STATUS_CODE_ERROR`, …). Errors are the calls with
//! `status_code="STATUS_CODE_ERROR"`, as Jaeger computes them.
//!
//! Owns: the config section, the per-partition aggregation (no lock on the
//! hot path), the shared store with its series cap and overflow series,
//! and the exposition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::model::{RawValue, SpanStatus, SpanView};
use crate::series::{self, Bounds, Cell, Exposition};

/// The spanmetrics connector's default buckets, in ms.
const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];
/// Distinct series a partition aggregates before it merges early: bounds
/// its map under a burst of new label values.
const LOCAL_MAX: usize = 4096;
/// Label values longer than this are cut (keys stay small; a label value
/// that long is a bug in the instrumentation).
const MAX_VALUE: usize = 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    pub enabled: bool,
    /// Family name prefix; Jaeger's `metric_namespace` must match.
    pub namespace: String,
    /// Extra labels from span (then resource) attributes, e.g.
    /// `http.route`; the label name is the key with `.` as `_`.
    pub dimensions: Vec<String>,
    pub histogram_buckets_ms: Vec<f64>,
    /// Series beyond this many go to one overflow series
    /// (`otel_metric_overflow="true"`) and are counted in
    /// `tailsift_span_metrics_overflow_spans_total`.
    pub max_series: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            namespace: "traces_span_metrics".into(),
            dimensions: Vec::new(),
            histogram_buckets_ms: DEFAULT_BUCKETS_MS.to_vec(),
            max_series: 20_000,
        }
    }
}

impl SpanMetricsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.namespace.is_empty() || series::label_name(&self.namespace) != self.namespace {
            return Err(format!(
                "span_metrics.namespace '{}' is not a metric name prefix ([a-zA-Z0-9_], not starting with a digit)",
                self.namespace
            ));
        }
        if Bounds::new(&self.histogram_buckets_ms).is_empty() {
            return Err("span_metrics.histogram_buckets_ms needs at least one bound".into());
        }
        Ok(())
    }
}

type SeriesMap = HashMap<Box<[u8]>, Cell, foldhash::fast::RandomState>;

/// A series of the shared store, its labels rendered once.
struct Series {
    labels: Box<str>,
    cell: Cell,
}

type StoreMap = HashMap<Box<[u8]>, Series, foldhash::fast::RandomState>;

/// The instance's span metrics: what every partition merged so far.
pub struct SpanMetrics {
    bounds: Bounds,
    dimensions: Vec<(Box<[u8]>, String)>,
    calls: String,
    duration: String,
    max_series: usize,
    store: Mutex<Store>,
    overflows: metrics::Counter,
}

/// New series are shown at zero for one scrape (`fresh`) before their
/// counts: Prometheus' `rate()` and `increase()` take a series' first
/// sample as its starting point, so the spans that created it would
/// otherwise never count.
#[derive(Default)]
struct Store {
    series: StoreMap,
    fresh: StoreMap,
    overflow: Option<Cell>,
}

impl SpanMetrics {
    pub fn new(cfg: &SpanMetricsConfig) -> Self {
        Self {
            bounds: Bounds::new(&cfg.histogram_buckets_ms),
            dimensions: cfg
                .dimensions
                .iter()
                .map(|k| (k.as_bytes().into(), series::label_name(k)))
                .collect(),
            calls: format!("{}_calls_total", cfg.namespace),
            duration: format!("{}_duration_milliseconds", cfg.namespace),
            max_series: cfg.max_series,
            store: Mutex::default(),
            overflows: metrics::counter!("tailsift_span_metrics_overflow_spans_total"),
        }
    }

    /// The attribute keys the scan must keep for the dimensions.
    pub fn attribute_keys(cfg: &SpanMetricsConfig) -> crate::model::AttributeKeys {
        crate::model::AttributeKeys::new(&cfg.dimensions)
    }

    pub fn local(self: &Arc<Self>) -> LocalSpanMetrics {
        LocalSpanMetrics {
            shared: self.clone(),
            key: Vec::with_capacity(128),
            series: SeriesMap::default(),
        }
    }

    /// Adds a partition's counts and zeroes them, keeping its keys.
    fn merge(&self, local: &mut SeriesMap) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let store = &mut *store;
        for (key, cell) in local.iter_mut() {
            let n = cell.count();
            if n == 0 {
                continue;
            }
            let full = store.series.len() + store.fresh.len() >= self.max_series;
            let known = match store.series.get_mut(key) {
                Some(total) => Some(total),
                None => store.fresh.get_mut(key),
            };
            match known {
                Some(total) => total.cell.merge(cell),
                None if !full => {
                    let mut labels = String::new();
                    self.key_labels(key, &mut labels);
                    let labels = labels.into_boxed_str();
                    let cell = cell.clone();
                    store.fresh.insert(key.clone(), Series { labels, cell });
                }
                None => {
                    let overflow = store
                        .overflow
                        .get_or_insert_with(|| Cell::new(&self.bounds));
                    overflow.merge(cell);
                    self.overflows.increment(n);
                }
            }
            *cell = Cell::new(&self.bounds);
        }
    }

    /// One series' calls line and histogram lines, each to its family.
    fn render_series(&self, calls: &mut String, durations: &mut String, labels: &str, cell: &Cell) {
        let bare = labels.trim_end_matches(',');
        let mut int = itoa::Buffer::new();
        for part in [&self.calls, "{", bare, "} ", int.format(cell.count()), "\n"] {
            calls.push_str(part);
        }
        cell.render(durations, &self.duration, labels, &self.bounds);
    }
}

impl Exposition for SpanMetrics {
    fn render(&self, out: &mut String) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let (mut calls, mut durations) = (String::new(), String::new());
        let zero = Cell::new(&self.bounds);
        let shown = store.series.values().map(|s| (&s.labels, &s.cell));
        let fresh = store.fresh.values().map(|s| (&s.labels, &zero));
        for (labels, cell) in shown.chain(fresh) {
            self.render_series(&mut calls, &mut durations, labels, cell);
        }
        if let Some(cell) = &store.overflow {
            let labels = "otel_metric_overflow=\"true\",";
            self.render_series(&mut calls, &mut durations, labels, cell);
        }
        let help = "Spans (calls) by service, operation, kind and status, before sampling.";
        series::header(out, &self.calls, "counter", help);
        out.push_str(&calls);
        let help = "Span durations in milliseconds, before sampling.";
        series::header(out, &self.duration, "histogram", help);
        out.push_str(&durations);
        let fresh = std::mem::take(&mut store.fresh);
        store.series.extend(fresh);
    }
}

impl SpanMetrics {
    /// Renders the labels a key encodes (see `LocalSpanMetrics::encode`).
    fn key_labels(&self, key: &[u8], out: &mut String) {
        let mut r = KeyReader { key, at: 2 };
        let (kind, status) = (key.first().copied(), key.get(1).copied());
        series::label(out, "service_name", r.field());
        series::label(out, "span_name", r.field());
        series::label(out, "span_kind", kind_name(kind.unwrap_or(0)).as_bytes());
        series::label(
            out,
            "status_code",
            status_name(status.unwrap_or(0)).as_bytes(),
        );
        for (_, label) in &self.dimensions {
            let present = r.byte() == 1;
            let value = r.field();
            if present {
                series::label(out, label, value);
            }
        }
    }
}

struct KeyReader<'a> {
    key: &'a [u8],
    at: usize,
}

impl<'a> KeyReader<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.key.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn field(&mut self) -> &'a [u8] {
        let len = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        let end = (self.at + len).min(self.key.len());
        let v = self.key.get(self.at..end).unwrap_or_default();
        self.at = end;
        v
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_name(status: u8) -> &'static str {
    match status {
        s if s == SpanStatus::Ok as u8 => "STATUS_CODE_OK",
        s if s == SpanStatus::Error as u8 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// One partition's counts since its last merge.
pub struct LocalSpanMetrics {
    shared: Arc<SpanMetrics>,
    key: Vec<u8>,
    series: SeriesMap,
}

impl LocalSpanMetrics {
    pub fn observe(&mut self, view: &SpanView<'_>) {
        self.encode(view);
        let span = view.span;
        let ms = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e6;
        let bounds = &self.shared.bounds;
        if let Some(cell) = self.series.get_mut(self.key.as_slice()) {
            cell.observe(bounds, ms);
            return;
        }
        let mut cell = Cell::new(bounds);
        cell.observe(bounds, ms);
        self.series.insert(self.key.as_slice().into(), cell);
        if self.series.len() >= LOCAL_MAX {
            self.flush();
            self.series.clear();
        }
    }

    /// Hands the counts to the shared store (every tick).
    pub fn flush(&mut self) {
        if !self.series.is_empty() {
            self.shared.merge(&mut self.series);
        }
    }

    /// kind, status, service, name, then per dimension a presence byte and
    /// the value; fields are u16-length-prefixed.
    fn encode(&mut self, view: &SpanView<'_>) {
        let span = view.span;
        let key = &mut self.key;
        key.clear();
        key.push(span.kind);
        key.push(span.status as u8);
        push_field(key, view.bytes_at(span.service_name));
        push_field(key, view.bytes_at(span.name));
        for (dim, _) in &self.shared.dimensions {
            let found = view
                .raw_attributes()
                .find(|a| view.bytes_at(a.key) == &**dim);
            let Some(attr) = found else {
                key.push(0);
                push_field(key, b"");
                continue;
            };
            key.push(1);
            match attr.value {
                RawValue::Str(r) | RawValue::Bytes(r) => push_field(key, view.bytes_at(r)),
                RawValue::Bool(b) => push_field(key, if b { b"true" } else { b"false" }),
                RawValue::Int(i) => push_field(key, itoa::Buffer::new().format(i).as_bytes()),
                RawValue::Double(d) => push_field(key, ryu::Buffer::new().format(d).as_bytes()),
            }
        }
    }
}

fn push_field(key: &mut Vec<u8>, value: &[u8]) {
    let value = &value[..value.len().min(MAX_VALUE)];
    key.extend_from_slice(&(value.len() as u16).to_le_bytes());
    key.extend_from_slice(value);
}

impl Drop for LocalSpanMetrics {
    /// A revoked or stopped partition hands in what it counted.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
