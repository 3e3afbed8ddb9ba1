//! Scrapes a Prometheus text endpoint: the contenders' own metrics are how
//! the harness knows how far each one got.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// One client for every scrape (the harness runs no async runtime, hence
/// the blocking one); straight to the address, whatever proxy the
/// environment names.
static HTTP: LazyLock<reqwest::blocking::Client> = LazyLock::new(|| {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client without TLS builds")
});

/// One scrape of a `/metrics` page.
pub struct Metrics(String);

impl Metrics {
    /// `GET http://<addr>/metrics`.
    pub fn scrape(addr: &str) -> Result<Self> {
        let resp = HTTP
            .get(format!("http://{addr}/metrics"))
            .send()
            .with_context(|| format!("GET {addr}/metrics"))?;
        if resp.status() != reqwest::StatusCode::OK {
            bail!("{addr}/metrics: {}", resp.status());
        }
        Ok(Self(resp.text()?))
    }

    /// The sum over all series of the first of `names` that is present
    /// (exporters differ in suffixes such as `_total`), or 0.
    pub fn sum(&self, names: &[&str]) -> f64 {
        names
            .iter()
            .find_map(|n| self.sum_of(n, None))
            .unwrap_or(0.0)
    }

    /// Like [`Self::sum`], over the series whose labels contain `label`
    /// (e.g. `result="indexed"`).
    pub fn sum_where(&self, name: &str, label: &str) -> f64 {
        self.sum_of(name, Some(label)).unwrap_or(0.0)
    }

    fn sum_of(&self, name: &str, label: Option<&str>) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            if metric != name || label.is_some_and(|l| !labels.contains(l)) {
                continue;
            }
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_and_filters_labels() {
        let m = Metrics(
            "# TYPE a counter\na_total{p=\"0\"} 2\na_total{p=\"1\"} 3\nb 1.5\nab 9\n".into(),
        );
        assert_eq!(m.sum(&["a", "a_total"]), 5.0);
        assert_eq!(m.sum(&["b"]), 1.5);
        assert_eq!(m.sum_where("a_total", "p=\"1\""), 3.0);
        assert_eq!(m.sum(&["c"]), 0.0);
    }
}
