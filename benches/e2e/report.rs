//! What a run measured, and the table it prints and writes as Markdown:
//! absolute figures per contender, then the ratios the targets are about.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bulk::BulkResult;
use crate::machine::Machine;
use crate::scan::ScanResult;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Load {
    pub traces: u64,
    pub spans: u64,
    pub messages: u64,
    pub seconds: f64,
}

/// A sampling run with a short decision wait.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Throughput {
    pub spans: u64,
    /// First span consumed to the last.
    pub seconds: f64,
    /// The whole process until every trace was decided.
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

/// A run that holds every trace: memory per buffered span.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    pub buffered_spans: u64,
    /// Resident set with everything buffered minus before consuming.
    pub rss_delta: u64,
    /// What the process itself accounts as buffered (tailsift only).
    pub accounted_bytes: Option<u64>,
    pub peak_rss: u64,
}

/// tailsift with the Elasticsearch sink.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SinkRun {
    /// Span documents counted in Elasticsearch afterwards.
    pub span_docs: u64,
    /// First possible decision (first span + decision wait) to the last
    /// document indexed.
    pub seconds: f64,
    pub consume_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub label: String,
    pub machine: Machine,
    pub load: Load,
    /// Every run of a contender; the report shows medians.
    pub scan: Vec<ScanResult>,
    pub tailsift: Vec<Throughput>,
    /// The same with span metrics and dependency links off.
    #[serde(default)]
    pub tailsift_plain: Vec<Throughput>,
    pub otelcol: Vec<Throughput>,
    pub tailsift_memory: Option<Memory>,
    pub otelcol_memory: Option<Memory>,
    pub bulk: Vec<BulkResult>,
    pub es_keep_all: Vec<SinkRun>,
    pub es_keep_10: Vec<SinkRun>,
    /// tailsift with the Elasticsearch sink and the default policies: its
    /// side of the Jaeger v2 comparison.
    #[serde(default)]
    pub es_policies: Vec<SinkRun>,
    /// Jaeger v2 as an ingester with tail sampling, the same policies.
    #[serde(default)]
    pub jaeger: Vec<SinkRun>,
    /// Each of the two killed mid-run and started again.
    #[serde(default)]
    pub crashes: Vec<Crash>,
    /// The sustained run (`--sustain`), which replaces all of the above.
    #[serde(default)]
    pub sustained: Option<Sustained>,
}

/// tailsift with the Elasticsearch sink fed live: a steady rate, then a
/// burst, then the drain.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sustained {
    /// Asked of loadgen, spans/s.
    pub rate: f64,
    /// Length of the steady phase.
    pub seconds: f64,
    /// What loadgen achieved, spans/s.
    pub produced_rate: f64,
    /// What tailsift consumed over the steady phase, spans/s.
    pub consumed_rate: f64,
    /// Most messages behind (end offsets minus committed) in the steady phase.
    pub max_lag: u64,
    pub burst_rate: f64,
    pub burst_seconds: f64,
    pub burst_produced_rate: f64,
    pub max_lag_burst: u64,
    /// End of the burst until the group had committed the whole topic.
    pub drain_seconds: f64,
    pub peak_rss: u64,
    pub memory_limit: u64,
    /// Traces decided early to stay under `memory.limit`.
    pub memory_decisions: u64,
    pub cpu_seconds: f64,
    pub span_docs: u64,
}

/// A contender SIGKILLed mid-run, restarted on the same consumer group and
/// run to the end: what reached Elasticsearch against a run without a crash.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Crash {
    pub contender: String,
    /// Span documents of the runs without a crash.
    pub expected: u64,
    /// Span documents it reported written when it was killed.
    pub written_at_kill: u64,
    /// Span documents in Elasticsearch at the end.
    pub docs: u64,
    /// Distinct (traceID, spanID) among them.
    pub distinct: u64,
}

impl Crash {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.distinct)
    }

    pub fn duplicates(&self) -> u64 {
        self.docs.saturating_sub(self.distinct)
    }
}

impl Results {
    /// Why the Jaeger v2 comparison is void: both sample with the same
    /// policies and the same hash, so every run must write the same spans.
    pub fn docs_mismatch(&self) -> Option<String> {
        let counts: Vec<u64> = (self.es_policies.iter().chain(&self.jaeger))
            .map(|r| r.span_docs)
            .collect();
        let differ = counts.windows(2).any(|w| w[0] != w[1]);
        differ.then(|| {
            format!(
                "span documents differ: tailsift {:?}, Jaeger v2 {:?}",
                self.es_policies
                    .iter()
                    .map(|r| r.span_docs)
                    .collect::<Vec<_>>(),
                self.jaeger.iter().map(|r| r.span_docs).collect::<Vec<_>>()
            )
        })
    }

    /// Kafka payload bytes per span: what a zero-copy consumer holds.
    fn wire_bytes_per_span(&self) -> Option<f64> {
        self.scan
            .first()
            .map(|s| s.payload_bytes as f64 / s.spans.max(1) as f64)
    }
}

/// One contender's runs, reduced to medians.
struct Runs {
    count: usize,
    units: u64,
    seconds: f64,
    rate: f64,
    rate_min: f64,
    rate_max: f64,
    cpu_seconds: f64,
    per_cpu: f64,
    per_cpu_max: f64,
    peak_rss: u64,
}

/// One run of a contender as (units of work, seconds, CPU seconds, peak RSS).
trait Run {
    fn figures(&self) -> (u64, f64, f64, u64);
}

impl Run for ScanResult {
    fn figures(&self) -> (u64, f64, f64, u64) {
        (self.spans, self.seconds, self.cpu_seconds, self.peak_rss)
    }
}

impl Run for Throughput {
    fn figures(&self) -> (u64, f64, f64, u64) {
        (self.spans, self.seconds, self.cpu_seconds, self.peak_rss)
    }
}

impl Run for BulkResult {
    fn figures(&self) -> (u64, f64, f64, u64) {
        (
            self.span_docs,
            self.seconds,
            self.cpu_seconds,
            self.peak_rss,
        )
    }
}

impl Run for SinkRun {
    fn figures(&self) -> (u64, f64, f64, u64) {
        (
            self.span_docs,
            self.seconds,
            self.cpu_seconds,
            self.peak_rss,
        )
    }
}

impl Runs {
    /// `runs` as (units of work, seconds, CPU seconds, peak RSS).
    fn of(runs: &[(u64, f64, f64, u64)]) -> Option<Self> {
        let (units, ..) = *runs.first()?;
        let rates: Vec<f64> = runs.iter().map(|r| r.0 as f64 / r.1).collect();
        Some(Self {
            count: runs.len(),
            units,
            seconds: median(runs.iter().map(|r| r.1)),
            rate: median(rates.iter().copied()),
            rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            rate_max: rates.iter().copied().fold(0.0, f64::max),
            cpu_seconds: median(runs.iter().map(|r| r.2)),
            per_cpu: median(runs.iter().map(|r| r.0 as f64 / r.2)),
            per_cpu_max: runs.iter().map(|r| r.0 as f64 / r.2).fold(0.0, f64::max),
            peak_rss: median(runs.iter().map(|r| r.3 as f64)) as u64,
        })
    }

    fn over<R: Run>(runs: &[R]) -> Option<Self> {
        let v: Vec<_> = runs.iter().map(Run::figures).collect();
        Self::of(&v)
    }

    /// The median rate and, over several runs, their spread.
    fn rate_cell(&self) -> String {
        match self.count {
            1 => int(self.rate),
            n => format!(
                "{} ({}-{}, n={n})",
                int(self.rate),
                int(self.rate_min),
                int(self.rate_max)
            ),
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Rows of cells with a header; rendered aligned or as Markdown.
struct Table {
    title: String,
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: impl Into<String>, head: Vec<&'static str>) -> Self {
        Self {
            title: title.into(),
            head,
            rows: Vec::new(),
        }
    }

    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.head.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| match i {
                    0 => format!("{c:<w$}"),
                    _ => format!("{c:>w$}"),
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![self.title.clone(), line(self.head.clone())];
        out.extend(
            self.rows
                .iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        );
        out.join("\n")
    }

    fn markdown(&self) -> String {
        let mut out = format!("**{}**\n\n| {} |\n", self.title, self.head.join(" | "));
        let align: Vec<&str> = (0..self.head.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        out += &format!("| {} |\n", align.join(" | "));
        for r in &self.rows {
            out += &format!("| {} |\n", r.join(" | "));
        }
        out
    }
}

/// The tables with something in them.
fn tables(r: &Results) -> Vec<Table> {
    let all = [
        jaeger(r),
        crashes(r),
        sustained(r),
        throughput(r),
        memory(r),
        elasticsearch(r),
        ratios(r),
    ];
    all.into_iter().filter(|t| !t.rows.is_empty()).collect()
}

/// Medians of sink runs, per input span (every span of the topic is
/// consumed and sampled, whether kept or not).
struct SinkMedians {
    docs: u64,
    seconds: f64,
    cpu_seconds: f64,
    per_cpu: f64,
    per_cpu_max: f64,
    peak_rss: f64,
}

impl SinkMedians {
    fn of(runs: &[SinkRun], spans: u64) -> Option<Self> {
        let per_cpu: Vec<f64> = runs.iter().map(|r| spans as f64 / r.cpu_seconds).collect();
        Some(Self {
            docs: runs.first()?.span_docs,
            seconds: median(runs.iter().map(|r| r.seconds)),
            cpu_seconds: median(runs.iter().map(|r| r.cpu_seconds)),
            per_cpu: median(per_cpu.iter().copied()),
            per_cpu_max: per_cpu.iter().copied().fold(0.0, f64::max),
            peak_rss: median(runs.iter().map(|r| r.peak_rss as f64)),
        })
    }
}

fn jaeger(r: &Results) -> Table {
    let mut t = Table::new(
        "Jaeger v2 and tailsift, Kafka -> tail sampling (errors, slow, 10%) -> Elasticsearch; \
         medians; spans/CPU-s counts every span consumed",
        vec![
            "contender",
            "runs",
            "span docs",
            "kept",
            "drain s",
            "CPU s",
            "spans/CPU-s",
            "peak RSS",
        ],
    );
    let spans = r.load.spans;
    let (ts, jg) = (
        SinkMedians::of(&r.es_policies, spans),
        SinkMedians::of(&r.jaeger, spans),
    );
    let version = format!("Jaeger v2 (module {})", r.machine.jaeger);
    for (name, m, n) in [
        ("tailsift", &ts, r.es_policies.len()),
        (version.as_str(), &jg, r.jaeger.len()),
    ] {
        if let Some(m) = m {
            t.rows.push(vec![
                name.into(),
                n.to_string(),
                int(m.docs as f64),
                pct(m.docs as f64 / spans.max(1) as f64),
                fixed(m.seconds),
                fixed(m.cpu_seconds),
                int(m.per_cpu),
                mib(m.peak_rss as u64),
            ]);
        }
    }
    if let (Some(ts), Some(jg)) = (&ts, &jg) {
        let equal = if r.docs_mismatch().is_none() {
            "equal"
        } else {
            "DIFFER"
        };
        t.rows.push(vec![
            "Jaeger v2 / tailsift".into(),
            "-".into(),
            equal.into(),
            "-".into(),
            times(jg.seconds / ts.seconds),
            times(jg.cpu_seconds / ts.cpu_seconds),
            times(jg.per_cpu / ts.per_cpu),
            times(jg.peak_rss / ts.peak_rss),
        ]);
    }
    t
}

fn sustained(r: &Results) -> Table {
    let mut t = Table::new(
        "Sustained run: tailsift with the Elasticsearch sink, fed live by loadgen",
        vec![
            "phase",
            "asked spans/s",
            "produced spans/s",
            "s",
            "max lag (messages)",
        ],
    );
    let Some(s) = &r.sustained else {
        return t;
    };
    t.rows.push(vec![
        format!(
            "steady (tailsift consumed {} spans/s)",
            int(s.consumed_rate)
        ),
        int(s.rate),
        int(s.produced_rate),
        fixed(s.seconds),
        int(s.max_lag as f64),
    ]);
    t.rows.push(vec![
        "burst".into(),
        int(s.burst_rate),
        int(s.burst_produced_rate),
        fixed(s.burst_seconds),
        int(s.max_lag_burst as f64),
    ]);
    t.rows.push(vec![
        format!(
            "drain: {} s; peak RSS {} of memory.limit {}; {} memory decisions; {} CPU-s; {} span docs",
            fixed(s.drain_seconds),
            mib(s.peak_rss),
            mib(s.memory_limit),
            int(s.memory_decisions as f64),
            fixed(s.cpu_seconds),
            int(s.span_docs as f64)
        ),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    t
}

fn crashes(r: &Results) -> Table {
    let mut t = Table::new(
        "SIGKILL mid-run, then restarted on the same consumer group (span documents)",
        vec![
            "contender",
            "expected",
            "written at kill",
            "in Elasticsearch",
            "distinct",
            "lost",
            "duplicates",
        ],
    );
    for c in &r.crashes {
        t.rows.push(vec![
            c.contender.clone(),
            int(c.expected as f64),
            int(c.written_at_kill as f64),
            int(c.docs as f64),
            int(c.distinct as f64),
            int(c.lost() as f64),
            int(c.duplicates() as f64),
        ]);
    }
    t
}

fn throughput(r: &Results) -> Table {
    let mut t = Table::new(
        "Sampling throughput (Kafka -> decisions); medians, spans/s with min-max",
        vec![
            "contender",
            "spans",
            "s",
            "spans/s",
            "CPU s",
            "spans/CPU-s",
            "peak RSS",
        ],
    );
    let collector = format!("(c) OTel Collector {}", r.machine.collector);
    for (name, runs) in [
        ("(a) bare consume + scan", Runs::over(&r.scan)),
        ("(b) tailsift, null sink", Runs::over(&r.tailsift)),
        (
            "(b) the same, span metrics and dependencies off",
            Runs::over(&r.tailsift_plain),
        ),
        (collector.as_str(), Runs::over(&r.otelcol)),
    ] {
        if let Some(x) = runs {
            t.rows.push(vec![
                name.into(),
                int(x.units as f64),
                fixed(x.seconds),
                x.rate_cell(),
                fixed(x.cpu_seconds),
                int(x.per_cpu),
                mib(x.peak_rss),
            ]);
        }
    }
    t
}

fn memory(r: &Results) -> Table {
    let mut t = Table::new(
        "Memory with every trace buffered (decision_wait 1h)",
        vec![
            "contender",
            "buffered spans",
            "wire B/span",
            "RSS delta B/span",
            "x wire",
            "accounted B/span",
            "peak RSS",
        ],
    );
    let wire = r.wire_bytes_per_span();
    let mut row = |name: &str, m: &Memory| {
        let per_span = m.rss_delta as f64 / m.buffered_spans.max(1) as f64;
        t.rows.push(vec![
            name.into(),
            int(m.buffered_spans as f64),
            wire.map_or("-".into(), int),
            int(per_span),
            wire.map_or("-".into(), |w| times(per_span / w)),
            m.accounted_bytes.map_or("-".into(), |b| {
                int(b as f64 / m.buffered_spans.max(1) as f64)
            }),
            mib(m.peak_rss),
        ]);
    };
    if let Some(m) = &r.tailsift_memory {
        row("(b) tailsift", m);
    }
    if let Some(m) = &r.otelcol_memory {
        row("(c) OTel Collector", m);
    }
    t
}

fn elasticsearch(r: &Results) -> Table {
    let mut t = Table::new(
        "Elasticsearch (span documents indexed); medians, docs/s with min-max",
        vec!["contender", "span docs", "s", "docs/s", "CPU s", "peak RSS"],
    );
    for (name, runs) in [
        (
            "(e) bare bulk loader (CPU incl. encoding)",
            Runs::over(&r.bulk),
        ),
        ("(d) tailsift, 100% kept", Runs::over(&r.es_keep_all)),
        ("(d) tailsift, 10% kept", Runs::over(&r.es_keep_10)),
    ] {
        if let Some(x) = runs {
            t.rows.push(vec![
                name.into(),
                int(x.units as f64),
                fixed(x.seconds),
                x.rate_cell(),
                fixed(x.cpu_seconds),
                mib(x.peak_rss),
            ]);
        }
    }
    t
}

/// Each ratio from the best run of either side (interference from the
/// shared machine only ever slows a run down) and from the medians; the
/// target is judged on the best runs.
fn ratios(r: &Results) -> Table {
    let mut t = Table::new(
        "Targets (best runs; medians in parentheses)",
        vec!["ratio", "measured", "target", "met"],
    );
    let spans = r.load.spans;
    if let (Some(ts), Some(jg)) = (
        SinkMedians::of(&r.es_policies, spans),
        SinkMedians::of(&r.jaeger, spans),
    ) {
        let (best, med) = (ts.per_cpu_max / jg.per_cpu_max, ts.per_cpu / jg.per_cpu);
        t.rows.push(target_row(
            "tailsift / Jaeger v2, spans per CPU-s, Elasticsearch sink",
            format!("{} ({})", times(best), times(med)),
            ">= 10x",
            best >= 10.0,
        ));
    }
    let (scan, tailsift, collector) = (
        Runs::over(&r.scan),
        Runs::over(&r.tailsift),
        Runs::over(&r.otelcol),
    );
    if let (Some(ts), Some(oc)) = (&tailsift, &collector) {
        let (best, med) = (ts.per_cpu_max / oc.per_cpu_max, ts.per_cpu / oc.per_cpu);
        let measured = format!("{} ({})", times(best), times(med));
        t.rows.push(target_row(
            "tailsift / Collector, spans per CPU-s",
            measured,
            ">= 5x",
            best >= 5.0,
        ));
    }
    if let (Some(ts), Some(s)) = (&tailsift, &scan) {
        let (best, med) = (ts.rate_max / s.rate_max, ts.rate / s.rate);
        let measured = format!("{} ({})", pct(best), pct(med));
        t.rows.push(target_row(
            "tailsift / bare scan, spans/s",
            measured,
            ">= 50%",
            best >= 0.5,
        ));
    }
    if let (Some(on), Some(off)) = (&tailsift, Runs::over(&r.tailsift_plain)) {
        // CPU per span is 1 / (spans per CPU-s): the added share is off/on - 1.
        let (best, med) = (
            off.per_cpu_max / on.per_cpu_max - 1.0,
            off.per_cpu / on.per_cpu - 1.0,
        );
        t.rows.push(target_row(
            "span metrics + dependencies, added CPU per span",
            format!("{} ({})", pct(best), pct(med)),
            "<= 15%",
            best <= 0.15,
        ));
    }
    if let (Some(m), Some(wire)) = (&r.tailsift_memory, r.wire_bytes_per_span()) {
        let v = m.rss_delta as f64 / m.buffered_spans.max(1) as f64 / wire;
        t.rows.push(target_row(
            "tailsift bytes per buffered span / wire",
            times(v),
            "<= 2x",
            v <= 2.0,
        ));
    }
    if let (Some(d), Some(b)) = (Runs::over(&r.es_keep_all), Runs::over(&r.bulk)) {
        let (best, med) = (d.rate_max / b.rate_max, d.rate / b.rate);
        let measured = format!("{} ({})", pct(best), pct(med));
        t.rows.push(target_row(
            "ES sink (100% kept) / bare bulk, docs/s",
            measured,
            ">= 90%",
            best >= 0.9,
        ));
    }
    t
}

fn target_row(name: &str, measured: String, target: &str, met: bool) -> Vec<String> {
    let met = if met { "yes" } else { "NO" };
    vec![name.into(), measured, target.into(), met.into()]
}

fn headline(r: &Results) -> String {
    format!(
        "{} run: {} spans in {} traces / {} messages on 6 partitions",
        r.label,
        int(r.load.spans as f64),
        int(r.load.traces as f64),
        int(r.load.messages as f64)
    )
}

pub fn text(r: &Results) -> String {
    let mut parts = vec![headline(r)];
    parts.extend(tables(r).iter().map(Table::text));
    parts.join("\n\n")
}

pub fn markdown(r: &Results) -> String {
    let mut out = format!(
        "## {}\n\n{}\n\n{}\n",
        r.label,
        headline(r),
        r.machine.markdown()
    );
    for t in tables(r) {
        out += "\n";
        out += &t.markdown();
    }
    out
}

/// Replaces this label's section of `path` (or appends it), so the quick
/// and the full run each keep their latest results.
pub fn write_markdown(path: &Path, r: &Results) -> Result<()> {
    let (open, close) = (
        format!("<!-- e2e:{} -->", r.label),
        format!("<!-- /e2e:{} -->", r.label),
    );
    let section = format!("{open}\n{}{close}\n", markdown(r));
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| HEADER.to_string());
    let new = match (old.find(&open), old.find(&close)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{section}{}",
                &old[..a],
                old[b + close.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

const HEADER: &str = "# End-to-end benchmark results

Written by `bash scripts/bench.sh` (full run) and `bash scripts/bench.sh --quick`;
see `benches/e2e/README.md` for what each contender and figure means.
";

fn int(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn fixed(v: f64) -> String {
    format!("{v:.2}")
}

fn times(v: f64) -> String {
    format!("{v:.2}x")
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(int(1_234_567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(f64::INFINITY), "-");
    }

    #[test]
    fn markdown_sections_are_replaced_in_place() {
        let path = std::env::temp_dir().join(format!("e2e-md-{}.md", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut r = Results {
            label: "quick".into(),
            ..Default::default()
        };
        write_markdown(&path, &r).unwrap();
        r.label = "full".into();
        write_markdown(&path, &r).unwrap();
        r.load.spans = 42;
        write_markdown(&path, &r).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("<!-- e2e:full -->").count(), 1);
        assert_eq!(text.matches("<!-- e2e:quick -->").count(), 1);
        assert!(text.contains("42 spans"));
        std::fs::remove_file(path).unwrap();
    }
}
