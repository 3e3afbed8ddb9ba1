//! Retention: deletes the span, service and dependencies indices older than
//! N days, as Jaeger's `es-index-cleaner` does for the same indices. Daily
//! indices go by the date in their name; rollover indices
//! (`<prefix>jaeger-span-000001`, see `rollover`) by when they stopped taking
//! writes, and the current write index never goes. Elasticsearch has no
//! TTL, so `tailsift prune-indices` runs daily from cron or a Kubernetes
//! CronJob (deploy/kubernetes/cronjob-prune-indices.yaml).

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::index_catalog::{self, FAMILIES, IndexInfo, Name};
use crate::sink::SinkError;
use crate::sink::elasticsearch::EsClient;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("keep_days must be at least 1: 0 would delete the indices written today")]
    KeepDaysZero,
    #[error("Elasticsearch request to {action} failed: {source}")]
    Request {
        action: String,
        #[source]
        source: SinkError,
    },
}

/// What a prune deleted (or, in a dry run, would delete) and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneReport {
    /// The oldest day whose indices are kept.
    pub keep_from: NaiveDate,
    /// Sorted names of the indices older than `keep_from`.
    pub deleted: Vec<String>,
    /// Sorted names of the other daily and rollover indices.
    pub kept: Vec<String>,
}

/// A client for one Elasticsearch node without credentials (tests, local
/// use; the command builds its client from the configuration).
pub fn client(url: &str) -> Result<EsClient, SinkError> {
    EsClient::new(&crate::config::ElasticsearchConfig {
        urls: vec![url.to_string()],
        ..Default::default()
    })
}

/// Deletes the indices of `<prefix>jaeger-span-`, `jaeger-service-` and
/// `jaeger-dependencies-` older than the `keep_days` most recent days (see
/// `first_kept_day`); with `dry_run` only reports them. Other names
/// (aliases, archive indices, other prefixes) are never touched. `now`
/// fixes the current UTC day, the calendar the daily indices are named by.
pub async fn prune_indices(
    client: &EsClient,
    index_prefix: &str,
    keep_days: u32,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport, RetentionError> {
    let keep_from = first_kept_day(now.date_naive(), keep_days)?;
    let prefix = normalize_prefix(index_prefix);
    let indices = index_catalog::list(client, &prefix)
        .await
        .map_err(|source| RetentionError::Request {
            action: format!("list {}", index_catalog::patterns(&prefix).join(",")),
            source,
        })?;
    let report = plan(&prefix, &indices, keep_from);
    if !dry_run {
        for index in &report.deleted {
            delete_index(client, index).await?;
            tracing::info!(index, "deleted index");
        }
    }
    Ok(report)
}

/// "Older than N days" means dated before the N most recent days, today
/// included: N = 7 on 2024-03-08 keeps 03-02 … 03-08 and deletes 03-01 and
/// before. That is the set `es-index-cleaner N` deletes (indices created
/// before tomorrow's midnight minus N days). Daily indices are judged by
/// the name's date rather than the creation time, so a restored or
/// re-created index keeps its age.
fn first_kept_day(today: NaiveDate, keep_days: u32) -> Result<NaiveDate, RetentionError> {
    let back = keep_days
        .checked_sub(1)
        .ok_or(RetentionError::KeepDaysZero)?;
    Ok(today
        .checked_sub_days(Days::new(u64::from(back)))
        .unwrap_or(NaiveDate::MIN))
}

/// The same rule as `Config::index_prefix`: a non-empty prefix is joined with `-`.
fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('-') {
        prefix.to_string()
    } else {
        format!("{prefix}-")
    }
}

/// Daily indices dated before `keep_from`, and rollover indices that
/// stopped taking writes before its midnight, are deleted; the other
/// indices of the families are kept.
fn plan(prefix: &str, indices: &[IndexInfo], keep_from: NaiveDate) -> PruneReport {
    let cutoff = keep_from.and_time(chrono::NaiveTime::MIN).and_utc();
    let retired: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|family| index_catalog::retired(prefix, family, indices))
        .filter(|r| r.since < cutoff)
        .map(|r| r.index.name.as_str())
        .collect();
    let (mut deleted, mut kept) = (Vec::new(), Vec::new());
    for index in indices {
        let old = match index_catalog::parse(prefix, &index.name) {
            None => continue,
            Some(Name::Daily { day, .. }) => day < keep_from,
            Some(Name::Rollover { .. }) => retired.contains(&index.name.as_str()),
        };
        match old {
            true => deleted.push(index.name.clone()),
            false => kept.push(index.name.clone()),
        }
    }
    deleted.sort();
    kept.sort();
    PruneReport {
        keep_from,
        deleted,
        kept,
    }
}

async fn delete_index(client: &EsClient, index: &str) -> Result<(), RetentionError> {
    // Already gone (a concurrent run) is what we wanted.
    let path = format!("/{index}?ignore_unavailable=true");
    client
        .delete(&path)
        .await
        .map_err(|source| RetentionError::Request {
            action: format!("delete {index}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::index_catalog::tests::index;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn prefix_rule_matches_the_config() {
        for p in ["", "prod", "prod-", "a-b"] {
            let mut cfg = Config::default();
            cfg.elasticsearch.index_prefix = p.into();
            assert_eq!(normalize_prefix(p), cfg.index_prefix(), "{p:?}");
        }
    }

    #[test]
    fn keep_days_counts_today() {
        let today = day("2024-03-01");
        assert_eq!(first_kept_day(today, 1).unwrap(), today);
        // Across the leap day: 02-24 … 03-01 are 7 days.
        assert_eq!(first_kept_day(today, 7).unwrap(), day("2024-02-24"));
        assert_eq!(
            first_kept_day(today, u32::MAX).unwrap(),
            NaiveDate::MIN,
            "saturates instead of failing"
        );
        assert!(matches!(
            first_kept_day(today, 0),
            Err(RetentionError::KeepDaysZero)
        ));
    }

    #[test]
    fn plan_splits_daily_indices_at_the_first_kept_day() {
        let names = [
            "p-jaeger-span-2024-02-24",
            "p-jaeger-service-2024-02-23",
            "p-jaeger-span-2024-02-23",
            "p-jaeger-dependencies-2024-02-23",
            "p-jaeger-dependencies-2024-02-24",
            "p-jaeger-span-archive-2024-02-01",
            "p-jaeger-service-2024-03-01",
            "p-jaeger-span-2023-12-31",
        ];
        let indices: Vec<IndexInfo> = names.iter().map(|n| index(n, 0, &[])).collect();
        let report = plan("p-", &indices, day("2024-02-24"));
        assert_eq!(
            report.deleted,
            [
                "p-jaeger-dependencies-2024-02-23",
                "p-jaeger-service-2024-02-23",
                "p-jaeger-span-2023-12-31",
                "p-jaeger-span-2024-02-23"
            ]
        );
        assert_eq!(
            report.kept,
            [
                "p-jaeger-dependencies-2024-02-24",
                "p-jaeger-service-2024-03-01",
                "p-jaeger-span-2024-02-24"
            ]
        );
    }

    #[test]
    fn rollover_indices_go_when_their_successor_is_older_than_the_cutoff() {
        // Creation times in minutes from 2024-03-08T00:00Z, the cutoff.
        let w = "jaeger-span-write";
        let indices = [
            index("jaeger-span-000001", -3 * 1440, &[]),
            // Retired when 000003 was created, just after the cutoff.
            index("jaeger-span-000002", -2 * 1440, &[]),
            index("jaeger-span-000003", 1, &[]),
            index("jaeger-span-000004", 2, &[(w, None)]),
            // No write alias: nothing can be judged.
            index("jaeger-service-000001", -3 * 1440, &[]),
            index("jaeger-service-000002", -2 * 1440, &[]),
        ];
        let report = plan("", &indices, day("2024-03-08"));
        assert_eq!(report.deleted, ["jaeger-span-000001"]);
        assert_eq!(
            report.kept,
            [
                "jaeger-service-000001",
                "jaeger-service-000002",
                "jaeger-span-000002",
                "jaeger-span-000003",
                "jaeger-span-000004"
            ]
        );
        // However far the cutoff, the write index stays.
        let report = plan("", &indices, day("2030-01-01"));
        assert!(!report.deleted.contains(&"jaeger-span-000004".to_string()));
        assert!(report.kept.contains(&"jaeger-span-000004".to_string()));
        assert_eq!(report.deleted.len(), 3, "{:?}", report.deleted);
    }
}
