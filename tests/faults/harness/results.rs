//! A scenario's row of the results table (scripts/faults.sh prints it).

use super::scenario::Scenario;
use super::verify::Verdict;

/// One line of the results table.
#[derive(Debug, Default, serde::Serialize)]
pub struct Row {
    pub scenario: String,
    pub cycles: u32,
    pub spans_checked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub peak_rss_mib: f64,
    pub memory_limit_mib: u64,
    pub early_decisions: u64,
    pub dlq: u64,
    pub secs: f64,
    pub note: String,
}

impl Row {
    pub fn new(s: &Scenario, cycles: u32, v: &Verdict) -> Self {
        Self {
            scenario: s.name.to_string(),
            cycles,
            spans_checked: v.spans_checked,
            lost: v.lost,
            duplicated: v.duplicated,
            peak_rss_mib: (s.monitor.peak_kib() as f64 / 1024.0 * 10.0).round() / 10.0,
            memory_limit_mib: s.tuning.memory_limit_mib,
            secs: s.elapsed().as_secs_f64().round(),
            ..Default::default()
        }
    }
}

impl Row {
    /// One tab-separated line (scripts/faults.sh prints the table).
    pub fn tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{}\t{}\t{:.0}\t{}",
            self.scenario,
            self.cycles,
            self.spans_checked,
            self.lost,
            self.duplicated,
            self.peak_rss_mib,
            self.memory_limit_mib,
            self.early_decisions,
            self.dlq,
            self.secs,
            self.note
        )
    }
}
