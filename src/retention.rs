//! Retention: deletes the daily span and service indices older than N days,
//! as Jaeger's `es-index-cleaner` does for the same indices. Elasticsearch
//! has no TTL, so `tailsift prune-indices` runs daily from cron or a
//! Kubernetes CronJob (deploy/kubernetes/cronjob-prune-indices.yaml).

use chrono::{Days, NaiveDate};
use elasticsearch::Elasticsearch;
use elasticsearch::cat::CatIndicesParts;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{BuildError, SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesDeleteParts;
use elasticsearch::params::ExpandWildcards;
use serde::Deserialize;

/// The daily index families tailsift writes: `<prefix><family>YYYY-MM-DD`.
const FAMILIES: [&str; 2] = ["jaeger-span-", "jaeger-service-"];
const DATE_FORMAT: &str = "%Y-%m-%d";

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("invalid Elasticsearch URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("cannot build the Elasticsearch client: {0}")]
    Client(#[from] BuildError),
    #[error("keep_days must be at least 1: 0 would delete the indices written today")]
    KeepDaysZero,
    #[error("Elasticsearch request to {action} failed: {source}")]
    Request {
        action: String,
        #[source]
        source: elasticsearch::Error,
    },
    #[error("Elasticsearch answered HTTP {status} to {action}: {body}")]
    Status {
        action: String,
        status: u16,
        body: String,
    },
}

/// What a prune deleted (or, in a dry run, would delete) and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneReport {
    /// The oldest day whose indices are kept.
    pub keep_from: NaiveDate,
    /// Sorted index names older than `keep_from`.
    pub deleted: Vec<String>,
    /// Sorted dated index names from `keep_from` on.
    pub kept: Vec<String>,
}

/// A client for one Elasticsearch node, for the `prune-indices` command.
pub fn client(url: &str) -> Result<Elasticsearch, RetentionError> {
    let pool = SingleNodeConnectionPool::new(url::Url::parse(url)?);
    Ok(Elasticsearch::new(TransportBuilder::new(pool).build()?))
}

/// Deletes `<prefix>jaeger-span-YYYY-MM-DD` and `<prefix>jaeger-service-YYYY-MM-DD`
/// indices dated before the `keep_days` most recent days (see `first_kept_day`);
/// with `dry_run` only reports them. Indices whose name does not end in a date
/// (rollover indices, aliases, other prefixes) are never touched. `today` is
/// the current UTC date, the calendar tailsift names its daily indices by.
pub async fn prune_indices(
    client: &Elasticsearch,
    index_prefix: &str,
    keep_days: u32,
    today: NaiveDate,
    dry_run: bool,
) -> Result<PruneReport, RetentionError> {
    let keep_from = first_kept_day(today, keep_days)?;
    let prefix = normalize_prefix(index_prefix);
    let report = plan(&prefix, list_indices(client, &prefix).await?, keep_from);
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
/// before tomorrow's midnight minus N days), judged by the name's date
/// rather than the creation time, so a restored or re-created index keeps
/// its age.
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

/// The day of a tailsift daily index, or None for anything else.
fn index_date(prefix: &str, index: &str) -> Option<NaiveDate> {
    let rest = index.strip_prefix(prefix)?;
    let suffix = FAMILIES.iter().find_map(|f| rest.strip_prefix(f))?;
    let date = NaiveDate::parse_from_str(suffix, DATE_FORMAT).ok()?;
    // Only the zero-padded form tailsift writes, e.g. not `2024-3-1`.
    (date.format(DATE_FORMAT).to_string() == suffix).then_some(date)
}

fn plan(prefix: &str, indices: Vec<String>, keep_from: NaiveDate) -> PruneReport {
    let (mut deleted, mut kept): (Vec<_>, Vec<_>) = indices
        .into_iter()
        .filter_map(|i| index_date(prefix, &i).map(|d| (i, d)))
        .partition(|(_, day)| *day < keep_from);
    deleted.sort();
    kept.sort();
    PruneReport {
        keep_from,
        deleted: deleted.into_iter().map(|(i, _)| i).collect(),
        kept: kept.into_iter().map(|(i, _)| i).collect(),
    }
}

#[derive(Deserialize)]
struct CatRow {
    index: String,
}

async fn list_indices(client: &Elasticsearch, prefix: &str) -> Result<Vec<String>, RetentionError> {
    let patterns = FAMILIES.map(|f| format!("{prefix}{f}*"));
    let patterns = patterns.each_ref().map(String::as_str);
    let action = format!("list {}", patterns.join(","));
    let response = client
        .cat()
        .indices(CatIndicesParts::Index(&patterns))
        .format("json")
        .h(&["index"])
        // Closed indices still hold disk.
        .expand_wildcards(&[ExpandWildcards::Open, ExpandWildcards::Closed])
        .send()
        .await;
    let rows: Vec<CatRow> = checked(response, &action)
        .await?
        .json()
        .await
        .map_err(|source| RetentionError::Request { action, source })?;
    Ok(rows.into_iter().map(|r| r.index).collect())
}

async fn delete_index(client: &Elasticsearch, index: &str) -> Result<(), RetentionError> {
    let response = client
        .indices()
        .delete(IndicesDeleteParts::Index(&[index]))
        // Already gone (a concurrent run) is what we wanted.
        .ignore_unavailable(true)
        .send()
        .await;
    checked(response, &format!("delete {index}")).await?;
    Ok(())
}

/// Turns transport errors and non-2xx answers into errors naming `action`.
async fn checked(
    response: Result<Response, elasticsearch::Error>,
    action: &str,
) -> Result<Response, RetentionError> {
    let response = response.map_err(|source| RetentionError::Request {
        action: action.to_string(),
        source,
    })?;
    let status = response.status_code();
    if status.is_success() {
        return Ok(response);
    }
    Err(RetentionError::Status {
        action: action.to_string(),
        status: status.as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, DATE_FORMAT).unwrap()
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
    fn only_daily_span_and_service_indices_have_a_date() {
        let d = Some(day("2024-02-29"));
        assert_eq!(index_date("", "jaeger-span-2024-02-29"), d);
        assert_eq!(index_date("", "jaeger-service-2024-02-29"), d);
        assert_eq!(index_date("prod-", "prod-jaeger-span-2024-02-29"), d);
        for other in [
            "jaeger-span-2024-2-29",
            "jaeger-span-2023-02-29",
            "jaeger-span-2024-02-29-x",
            "jaeger-span-000001",
            "jaeger-span-write",
            "jaeger-span-archive-2024-02-29",
            "jaeger-dependencies-2024-02-29",
            "prod-jaeger-span-2024-02-29",
            "jaeger-span-+2024-02-29",
        ] {
            assert_eq!(index_date("", other), None, "{other}");
        }
        assert_eq!(index_date("prod-", "jaeger-span-2024-02-29"), None);
    }

    #[test]
    fn plan_splits_at_the_first_kept_day() {
        let names = [
            "p-jaeger-span-2024-02-24",
            "p-jaeger-service-2024-02-23",
            "p-jaeger-span-2024-02-23",
            "p-jaeger-span-write",
            "p-jaeger-service-2024-03-01",
            "p-jaeger-span-2023-12-31",
        ];
        let report = plan(
            "p-",
            names.iter().map(|s| s.to_string()).collect(),
            day("2024-02-24"),
        );
        assert_eq!(
            report.deleted,
            [
                "p-jaeger-service-2024-02-23",
                "p-jaeger-span-2023-12-31",
                "p-jaeger-span-2024-02-23"
            ]
        );
        assert_eq!(
            report.kept,
            ["p-jaeger-service-2024-03-01", "p-jaeger-span-2024-02-24"]
        );
    }
}
