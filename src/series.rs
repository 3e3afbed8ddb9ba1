//! Hand-kept Prometheus series for the families whose label values come
//! from the spans (span metrics, the service graph): histogram cells that a
//! partition task fills without locks and merges into a shared store, and
//! their text exposition.
//!
//! The `metrics` crate registry hashes and allocates a label set per
//! update; at a few updates per span that would cost more than deciding the
//! span (benches/window.rs measures both sides). Here a span costs one
//! lookup in a partition-local map.

use std::fmt::Write as _;

/// Upper bounds of histogram buckets (without `+Inf`), ascending, with
/// their `le` label text (formatted once, not at every scrape).
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    bounds: Box<[f64]>,
    les: Box<[Box<str>]>,
}

impl Bounds {
    /// Sorted and deduplicated; NaN and negative bounds are dropped.
    pub fn new(bounds: &[f64]) -> Self {
        let mut b: Vec<f64> = bounds
            .iter()
            .copied()
            .filter(|b| b.is_finite() && *b >= 0.0)
            .collect();
        b.sort_by(f64::total_cmp);
        b.dedup();
        let les = b
            .iter()
            .map(|b| format!("le=\"{b}\"").into())
            .chain(std::iter::once("le=\"+Inf\"".into()))
            .collect();
        Self {
            bounds: b.into_boxed_slice(),
            les,
        }
    }

    /// The bucket a value falls in; `len()` is the `+Inf` bucket.
    fn index(&self, value: f64) -> usize {
        self.bounds.partition_point(|b| *b < value)
    }

    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
}

/// One histogram series: counts per bucket (not cumulative) and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    buckets: Vec<u64>,
    sum: f64,
}

impl Cell {
    pub fn new(bounds: &Bounds) -> Self {
        Self {
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, bounds: &Bounds, value: f64) {
        let i = bounds.index(value);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, other: &Cell) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// `<name>_bucket`, `_sum` and `_count` lines with `labels` (already
    /// rendered, `k="v",` each with a trailing comma, or empty). Written
    /// piece by piece: a scrape renders thousands of these lines.
    pub fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &Bounds) {
        let mut int = itoa::Buffer::new();
        let mut cumulative = 0;
        for (n, le) in self.buckets.iter().zip(bounds.les.iter()) {
            cumulative += n;
            for part in [
                name,
                "_bucket{",
                labels,
                le,
                "} ",
                int.format(cumulative),
                "\n",
            ] {
                out.push_str(part);
            }
        }
        let labels = labels.trim_end_matches(',');
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            ryu::Buffer::new().format(self.sum)
        );
        for part in [name, "_count{", labels, "} ", int.format(cumulative), "\n"] {
            out.push_str(part);
        }
    }
}

/// Families rendered by their owner next to the registry's on `/metrics`.
pub trait Exposition: Send + Sync {
    fn render(&self, out: &mut String);
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends `name="value",` with the value escaped as the text format asks
/// (backslash, quote, newline); invalid UTF-8 is replaced.
pub fn label(out: &mut String, name: &str, value: &[u8]) {
    out.push_str(name);
    out.push_str("=\"");
    for c in String::from_utf8_lossy(value).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\",");
}

/// An attribute key as a label name: what is not `[a-zA-Z0-9_]` becomes
/// `_`, and a leading digit gets a `_` before it (as the collector's
/// Prometheus exporter does).
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c,
            false => '_',
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_cumulative() {
        let bounds = Bounds::new(&[10.0, 2.0, 2.0, f64::NAN]);
        let mut cell = Cell::new(&bounds);
        for v in [1.0, 2.0, 2.5, 10.0, 11.0] {
            cell.observe(&bounds, v);
        }
        let mut out = String::new();
        cell.render(&mut out, "d", "a=\"b\",", &bounds);
        assert_eq!(
            out,
            "d_bucket{a=\"b\",le=\"2\"} 2\nd_bucket{a=\"b\",le=\"10\"} 4\n\
             d_bucket{a=\"b\",le=\"+Inf\"} 5\nd_sum{a=\"b\"} 26.5\nd_count{a=\"b\"} 5\n"
        );
    }

    #[test]
    fn merge_adds_counts_and_sums() {
        let bounds = Bounds::new(&[1.0]);
        let (mut a, mut b) = (Cell::new(&bounds), Cell::new(&bounds));
        a.observe(&bounds, 0.5);
        b.observe(&bounds, 3.0);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.sum, 3.5);
    }

    #[test]
    fn labels_are_escaped_and_names_sanitized() {
        let mut out = String::new();
        label(&mut out, "x", b"a\"b\\c\nd\xff");
        assert_eq!(out, "x=\"a\\\"b\\\\c\\nd\u{fffd}\",");
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("9lives"), "_9lives");
    }
}
