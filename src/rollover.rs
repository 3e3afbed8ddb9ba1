//! Rollover without ILM, for alias mode (`elasticsearch.use_aliases`), on
//! the core `_rollover` API, as Jaeger's `es-rollover` does it for the span
//! and service indices. This module owns the three steps of the
//! `tailsift rollover` command:
//! - `init`: the index templates and, per family, the first index
//!   `<prefix>jaeger-span-000001` behind the write alias
//!   `<prefix>jaeger-span-write` (where tailsift writes) and the read alias
//!   `<prefix>jaeger-span-read` (what Jaeger Query reads with `use_aliases`);
//! - `rollover`: `POST <write alias>/_rollover` with conditions
//!   (`max_age`, `max_docs`, `max_primary_shard_size`); Elasticsearch creates
//!   `…-000002` and moves the write alias to it atomically, so writes go on;
//!   the new index joins the read alias;
//! - `lookback`: indices that stopped taking writes before a cutoff leave
//!   the read alias, so Query no longer searches them.
//!
//! Deleting old indices is retention's (`prune-indices`). Run from cron or
//! a Kubernetes CronJob (deploy/kubernetes/cronjob-rollover.yaml).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Days, DurationRound, Months, NaiveTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ElasticsearchConfig;
use crate::index_catalog;
use crate::sink::SinkError;
use crate::sink::elasticsearch::EsClient;
use crate::sink::index::{IndexNames, Kind};
use crate::sink::templates::{self, IndexSettings};

/// The families rolled over: every one tailsift writes (spans, services,
/// dependency links), as Jaeger's es-rollover does.
pub const KINDS: [Kind; 3] = Kind::ALL;

#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    #[error(transparent)]
    Elasticsearch(#[from] SinkError),
    #[error(
        "no rollover condition: give max_age, max_docs or max_primary_shard_size \
         (an unconditional rollover every run is never what a schedule wants)"
    )]
    NoCondition,
    #[error("{name} '{value}' is not {expected}")]
    Condition {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the write alias {0} does not exist: run `tailsift rollover init` first")]
    NoWriteAlias(String),
}

/// When `_rollover` starts a new index; any one met is enough.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// The write index's age, in Elasticsearch time units (`1d`, `12h`).
    pub max_age: Option<String>,
    /// Documents in the write index (those refreshed, i.e. searchable).
    pub max_docs: Option<u64>,
    /// Its largest primary shard, in byte units (`50gb`).
    pub max_primary_shard_size: Option<String>,
}

const TIME_UNITS: &[&str] = &["d", "h", "m", "s", "ms", "micros", "nanos"];
const SIZE_UNITS: &[&str] = &["b", "kb", "mb", "gb", "tb", "pb"];

impl Conditions {
    /// The `_rollover` request body; checks the values first, so a typo
    /// fails here rather than as Elasticsearch's 400 in a nightly job.
    pub fn body(&self) -> Result<Value, RolloverError> {
        let mut conditions = serde_json::Map::new();
        if let Some(age) = &self.max_age {
            check_unit("max_age", age, false, TIME_UNITS, "a time like 1d or 12h")?;
            conditions.insert("max_age".into(), json!(age));
        }
        if let Some(docs) = self.max_docs {
            conditions.insert("max_docs".into(), json!(docs));
        }
        if let Some(size) = &self.max_primary_shard_size {
            let expected = "a size like 50gb or 1.5tb";
            check_unit("max_primary_shard_size", size, true, SIZE_UNITS, expected)?;
            conditions.insert("max_primary_shard_size".into(), json!(size));
        }
        if conditions.is_empty() {
            return Err(RolloverError::NoCondition);
        }
        Ok(json!({ "conditions": conditions }))
    }
}

/// `<number><unit>` with one of `units` (lowercase, as Elasticsearch wants).
fn check_unit(
    name: &'static str,
    value: &str,
    fraction: bool,
    units: &[&str],
    expected: &'static str,
) -> Result<(), RolloverError> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || (fraction && c == '.')))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number_ok = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    match number_ok && units.contains(&unit) {
        true => Ok(()),
        false => Err(RolloverError::Condition {
            name,
            value: value.to_string(),
            expected,
        }),
    }
}

/// Index names in alias mode for `prefix` (empty, or ending in `-`).
pub fn names(prefix: &str) -> IndexNames {
    IndexNames::new(prefix, true)
}

/// `init`: installs the templates (unless `create_templates` is off; in
/// alias mode they put every new index of a family into its read alias)
/// and creates each missing first index with both aliases. Returns the
/// indices created; none when run again.
pub async fn init(
    client: &EsClient,
    cfg: &ElasticsearchConfig,
    names: &IndexNames,
) -> Result<Vec<String>, RolloverError> {
    if cfg.create_templates {
        let settings = IndexSettings {
            shards: cfg.shards,
            replicas: cfg.replicas,
        };
        templates::install(client, names, settings, cfg.overwrite_templates).await?;
    }
    Ok(templates::ensure_write_aliases(client, names).await?)
}

/// What `_rollover` did for one write alias.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RolledOver {
    #[serde(skip)]
    pub alias: String,
    pub old_index: String,
    pub new_index: String,
    pub rolled_over: bool,
    /// Each condition as Elasticsearch names it (`[max_docs: 1]`) and
    /// whether it was met.
    #[serde(default)]
    pub conditions: BTreeMap<String, bool>,
}

impl RolledOver {
    /// The index the write alias points to now.
    pub fn write_index(&self) -> &str {
        match self.rolled_over {
            true => &self.new_index,
            false => &self.old_index,
        }
    }
}

/// `rollover`: for each family, `_rollover` of the write alias when a
/// condition is met, then the write index (new or not) is added to the
/// read alias. The templates do that for new indices already; adding it
/// here too covers templates managed elsewhere and repairs a run that
/// stopped between the two calls.
pub async fn rollover(
    client: &EsClient,
    names: &IndexNames,
    conditions: &Conditions,
) -> Result<Vec<RolledOver>, RolloverError> {
    let body = conditions.body()?;
    let mut outcomes = Vec::new();
    for kind in KINDS {
        let alias = names.write_alias(kind);
        if !client.exists(&format!("/_alias/{alias}")).await? {
            return Err(RolloverError::NoWriteAlias(alias));
        }
        let path = format!("/{alias}/_rollover");
        let reply = client.post_json(&path, &body).await?;
        let mut outcome: RolledOver = serde_json::from_value(reply)
            .map_err(|e| SinkError::Response(format!("{path}: {e}")))?;
        outcome.alias = alias;
        let add = json!({"add": {"index": outcome.write_index(), "alias": names.read_alias(kind)}});
        client
            .post_json("/_aliases", &json!({ "actions": [add] }))
            .await?;
        if outcome.rolled_over {
            tracing::info!(alias = %outcome.alias, old = %outcome.old_index, new = %outcome.new_index, "rolled over");
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// `lookback`: takes the indices that stopped taking writes before
/// `cutoff` out of each read alias (see `index_catalog::retired`: an index
/// stops when the next one is created, so none holding spans newer than
/// the cutoff leaves). Jaeger's lookback judges by an index's own creation
/// time instead. Returns the indices removed.
pub async fn lookback(
    client: &EsClient,
    names: &IndexNames,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, RolloverError> {
    let indices = index_catalog::list(client, names.prefix()).await?;
    let actions = lookback_actions(names, &indices, cutoff);
    if actions.is_empty() {
        return Ok(Vec::new());
    }
    client
        .post_json("/_aliases", &json!({ "actions": actions }))
        .await?;
    Ok(actions
        .iter()
        .filter_map(|a| a["remove"]["index"].as_str().map(str::to_string))
        .collect())
}

fn lookback_actions(
    names: &IndexNames,
    indices: &[index_catalog::IndexInfo],
    cutoff: DateTime<Utc>,
) -> Vec<Value> {
    KINDS
        .iter()
        .flat_map(|&kind| {
            let read = names.read_alias(kind);
            index_catalog::retired(names.prefix(), kind.base(), indices)
                .into_iter()
                .filter(|r| r.since < cutoff && r.index.has_alias(&read))
                .map(|r| json!({"remove": {"index": r.index.name, "alias": read}}))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The unit of `lookback`'s count, as in Jaeger's `--unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookbackUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl FromStr for LookbackUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "seconds" => Self::Seconds,
            "minutes" => Self::Minutes,
            "hours" => Self::Hours,
            "days" => Self::Days,
            "weeks" => Self::Weeks,
            "months" => Self::Months,
            "years" => Self::Years,
            _ => {
                return Err(format!(
                    "'{s}': one of seconds, minutes, hours, days, weeks, months, years"
                ));
            }
        })
    }
}

/// The lookback cutoff, Jaeger's way: `count` units back from `now`
/// truncated to the unit; days and weeks count from tomorrow's midnight
/// (UTC, the indices' calendar), so 1 day keeps today, months and years
/// from today's. Saturates at the beginning of time.
pub fn cutoff(now: DateTime<Utc>, unit: LookbackUnit, count: u32) -> DateTime<Utc> {
    // Clock units: truncate to the unit, then step back.
    let clock = |unit: TimeDelta| {
        let start = now.duration_trunc(unit).ok()?;
        start.checked_sub_signed(unit.checked_mul(i32::try_from(count).ok()?)?)
    };
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let tomorrow = midnight + Days::new(1);
    let days = |per_count: u64| tomorrow.checked_sub_days(Days::new(per_count * u64::from(count)));
    let result = match unit {
        LookbackUnit::Seconds => clock(TimeDelta::seconds(1)),
        LookbackUnit::Minutes => clock(TimeDelta::minutes(1)),
        LookbackUnit::Hours => clock(TimeDelta::hours(1)),
        LookbackUnit::Days => days(1),
        LookbackUnit::Weeks => days(7),
        LookbackUnit::Months => midnight.checked_sub_months(Months::new(count)),
        LookbackUnit::Years => midnight.checked_sub_months(Months::new(count.saturating_mul(12))),
    };
    result.unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_catalog::tests::index;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn conditions_become_the_rollover_body() {
        let c = Conditions {
            max_age: Some("1d".into()),
            max_docs: Some(5_000_000),
            max_primary_shard_size: Some("50gb".into()),
        };
        assert_eq!(
            c.body().unwrap(),
            json!({"conditions": {"max_age": "1d", "max_docs": 5_000_000, "max_primary_shard_size": "50gb"}})
        );
        let size = Conditions {
            max_primary_shard_size: Some("1.5tb".into()),
            ..Default::default()
        };
        assert!(size.body().is_ok());
        assert!(matches!(
            Conditions::default().body(),
            Err(RolloverError::NoCondition)
        ));
    }

    #[test]
    fn malformed_conditions_are_named() {
        for age in ["1", "d", "1D", "1.5h", "-1d", "1 d", "1w"] {
            let c = Conditions {
                max_age: Some(age.into()),
                ..Default::default()
            };
            let err = c.body().expect_err(age).to_string();
            assert!(err.contains("max_age") && err.contains(age), "{err}");
        }
        for size in ["50", "gb", "50GB", ".5gb", "5.gb", "1.2.3gb", "50gib"] {
            let c = Conditions {
                max_primary_shard_size: Some(size.into()),
                ..Default::default()
            };
            assert!(c.body().is_err(), "{size}");
        }
    }

    #[test]
    fn the_write_index_follows_the_outcome() {
        let reply = json!({"acknowledged": true, "shards_acknowledged": true,
            "old_index": "jaeger-span-000001", "new_index": "jaeger-span-000002",
            "rolled_over": false, "dry_run": false, "conditions": {"[max_docs: 10]": false}});
        let mut r: RolledOver = serde_json::from_value(reply).unwrap();
        assert_eq!(r.write_index(), "jaeger-span-000001");
        assert!(!r.conditions["[max_docs: 10]"]);
        r.rolled_over = true;
        assert_eq!(r.write_index(), "jaeger-span-000002");
    }

    #[test]
    fn lookback_removes_retired_indices_from_the_read_alias() {
        let names = names("p-");
        let (read, write) = ("p-jaeger-span-read", "p-jaeger-span-write");
        let indices = [
            index("p-jaeger-span-000001", 0, &[(read, None)]),
            // Already out of the read alias: no action.
            index("p-jaeger-span-000002", 10, &[]),
            index("p-jaeger-span-000003", 20, &[(read, None)]),
            index("p-jaeger-span-000004", 30, &[(read, None), (write, None)]),
            index(
                "p-jaeger-service-000001",
                0,
                &[("p-jaeger-service-read", None)],
            ),
            index(
                "p-jaeger-service-000002",
                40,
                &[
                    ("p-jaeger-service-read", None),
                    ("p-jaeger-service-write", None),
                ],
            ),
        ];
        // 2024-03-08T00:25Z: 000001 retired at 00:10, 000003 at 00:30.
        let actions = lookback_actions(&names, &indices, at("2024-03-08T00:25:00Z"));
        assert_eq!(
            actions,
            [json!({"remove": {"index": "p-jaeger-span-000001", "alias": read}})]
        );
        let later = lookback_actions(&names, &indices, at("2024-03-08T01:00:00Z"));
        let removed: Vec<&str> = later
            .iter()
            .filter_map(|a| a["remove"]["index"].as_str())
            .collect();
        assert_eq!(
            removed,
            [
                "p-jaeger-span-000001",
                "p-jaeger-span-000003",
                "p-jaeger-service-000001"
            ]
        );
    }

    #[test]
    fn cutoffs_follow_jaegers_units() {
        let now = at("2024-03-08T13:45:30.250Z");
        let cases = [
            (LookbackUnit::Seconds, 10, "2024-03-08T13:45:20Z"),
            (LookbackUnit::Minutes, 5, "2024-03-08T13:40:00Z"),
            (LookbackUnit::Hours, 2, "2024-03-08T11:00:00Z"),
            // 1 day keeps today: from tomorrow's midnight.
            (LookbackUnit::Days, 1, "2024-03-08T00:00:00Z"),
            (LookbackUnit::Days, 8, "2024-03-01T00:00:00Z"),
            (LookbackUnit::Weeks, 1, "2024-03-02T00:00:00Z"),
            (LookbackUnit::Months, 1, "2024-02-08T00:00:00Z"),
            (LookbackUnit::Years, 1, "2023-03-08T00:00:00Z"),
        ];
        for (unit, n, want) in cases {
            assert_eq!(cutoff(now, unit, n), at(want), "{unit:?} {n}");
        }
        assert_eq!(
            cutoff(now, LookbackUnit::Years, u32::MAX),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!("weeks".parse(), Ok(LookbackUnit::Weeks));
        assert!("fortnights".parse::<LookbackUnit>().is_err());
    }
}
