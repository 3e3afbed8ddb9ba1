//! What exists in Elasticsearch under an index prefix: the indices of the
//! Jaeger families, daily (`<prefix>jaeger-span-YYYY-MM-DD`) or rollover
//! (`<prefix>jaeger-span-000001`), with their creation times and aliases.
//! Retention (`prune-indices`) and rollover (`lookback`) decide from this
//! listing; the decisions are pure functions over it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::sink::SinkError;
use crate::sink::elasticsearch::EsClient;

/// The families, `<prefix><family>-…`: spans and services (tailsift's) and
/// the dependency links Jaeger's UI reads beside them.
pub const FAMILIES: [&str; 3] = ["jaeger-span", "jaeger-service", "jaeger-dependencies"];

const DATE_FORMAT: &str = "%Y-%m-%d";
/// `_rollover` numbers new indices with at least six digits.
const ROLLOVER_DIGITS: usize = 6;

/// One index as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexInfo {
    pub name: String,
    pub created: DateTime<Utc>,
    /// Alias name → its `is_write_index` flag (None: not set).
    pub aliases: BTreeMap<String, Option<bool>>,
}

impl IndexInfo {
    pub fn has_alias(&self, alias: &str) -> bool {
        self.aliases.contains_key(alias)
    }
}

/// What the name of an index under the prefix says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Daily {
        family: &'static str,
        day: NaiveDate,
    },
    /// `000001` and the numbers `_rollover` counts up from there.
    Rollover { family: &'static str, number: u64 },
}

/// The family and date or number of `index`, or None for anything else
/// (another prefix, archive indices, aliases, other suffixes).
pub fn parse(prefix: &str, index: &str) -> Option<Name> {
    let rest = index.strip_prefix(prefix)?;
    FAMILIES.iter().find_map(|&family| {
        let suffix = rest.strip_prefix(family)?.strip_prefix('-')?;
        if suffix.len() >= ROLLOVER_DIGITS && suffix.bytes().all(|b| b.is_ascii_digit()) {
            let number = suffix.parse().ok()?;
            return Some(Name::Rollover { family, number });
        }
        let day = NaiveDate::parse_from_str(suffix, DATE_FORMAT).ok()?;
        // Only the zero-padded form Jaeger and tailsift write, e.g. not `2024-3-1`.
        (day.format(DATE_FORMAT).to_string() == suffix).then_some(Name::Daily { family, day })
    })
}

/// The index `alias` writes to: the one flagged `is_write_index`, else the
/// only index holding it (Jaeger's and tailsift's rollover indices carry
/// no flag, so `_rollover` moves the alias). None when Elasticsearch would
/// find no write index either.
pub fn write_index<'a>(indices: &'a [IndexInfo], alias: &str) -> Option<&'a IndexInfo> {
    let holders: Vec<&IndexInfo> = indices.iter().filter(|i| i.has_alias(alias)).collect();
    if let Some(flagged) = holders.iter().find(|i| i.aliases[alias] == Some(true)) {
        return Some(flagged);
    }
    match holders.as_slice() {
        [one] if one.aliases[alias].is_none() => Some(one),
        _ => None,
    }
}

/// A rollover index that takes no more writes, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retired<'a> {
    pub index: &'a IndexInfo,
    pub since: DateTime<Utc>,
}

/// The rollover indices of `family` that no longer take writes. An index
/// takes writes from its creation until `_rollover` creates the next one,
/// so its newest documents are about as old as its successor: that
/// creation time is when it retired. Judging by its own creation time (as
/// Jaeger's tools do) would drop an index created long ago but rolled over
/// an hour ago, with an hour of recent spans. The write index and anything
/// numbered after it never retire; without a write index nothing does, as
/// nothing tells which index still takes writes.
pub fn retired<'a>(prefix: &str, family: &str, indices: &'a [IndexInfo]) -> Vec<Retired<'a>> {
    let write_alias = format!("{prefix}{family}-write");
    let Some(writing) = write_index(indices, &write_alias) else {
        return Vec::new();
    };
    let mut numbered: Vec<(u64, &IndexInfo)> = indices
        .iter()
        .filter_map(|i| match parse(prefix, &i.name) {
            Some(Name::Rollover { family: f, number }) if f == family => Some((number, i)),
            _ => None,
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let Some(current) = numbered.iter().position(|(_, i)| i.name == writing.name) else {
        return Vec::new();
    };
    numbered[..current]
        .iter()
        .zip(&numbered[1..=current])
        .map(|((_, index), (_, next))| Retired {
            index,
            since: next.created,
        })
        .collect()
}

/// The index patterns of every family under `prefix`.
pub fn patterns(prefix: &str) -> Vec<String> {
    FAMILIES.iter().map(|f| format!("{prefix}{f}-*")).collect()
}

#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    aliases: BTreeMap<String, ListedAlias>,
    #[serde(default)]
    settings: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ListedAlias {
    is_write_index: Option<bool>,
}

/// Every index of the families under `prefix`, open or closed (closed ones
/// still hold disk), in no particular order.
pub async fn list(client: &EsClient, prefix: &str) -> Result<Vec<IndexInfo>, SinkError> {
    let path = format!(
        "/{}?flat_settings=true&filter_path=*.aliases,*.settings&expand_wildcards=open,closed",
        patterns(prefix).join(",")
    );
    let Some(reply) = client.get_optional(&path).await? else {
        return Ok(Vec::new());
    };
    let listed: HashMap<String, Listed> =
        serde_json::from_value(reply).map_err(|e| SinkError::Response(format!("{path}: {e}")))?;
    listed
        .into_iter()
        .map(|(name, l)| {
            index_info(name, l).map_err(|e| SinkError::Response(format!("{path}: {e}")))
        })
        .collect()
}

fn index_info(name: String, listed: Listed) -> Result<IndexInfo, String> {
    let created = listed
        .settings
        .get("index.creation_date")
        .and_then(|v| v.as_str())
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| format!("{name} has no readable index.creation_date"))?;
    let aliases = listed
        .aliases
        .into_iter()
        .map(|(alias, a)| (alias, a.is_write_index))
        .collect();
    Ok(IndexInfo {
        name,
        created,
        aliases,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, DATE_FORMAT).unwrap()
    }

    /// An index created `minute` minutes after 2024-03-08T00:00Z.
    pub(crate) fn index(name: &str, minute: i64, aliases: &[(&str, Option<bool>)]) -> IndexInfo {
        IndexInfo {
            name: name.to_string(),
            created: DateTime::from_timestamp(1_709_856_000 + minute * 60, 0).unwrap(),
            aliases: aliases.iter().map(|(a, w)| (a.to_string(), *w)).collect(),
        }
    }

    #[test]
    fn names_by_family_date_and_number() {
        let daily = |family, d| {
            Some(Name::Daily {
                family,
                day: day(d),
            })
        };
        assert_eq!(
            parse("", "jaeger-span-2024-02-29"),
            daily("jaeger-span", "2024-02-29")
        );
        assert_eq!(
            parse("p-", "p-jaeger-dependencies-2024-02-29"),
            daily("jaeger-dependencies", "2024-02-29")
        );
        assert_eq!(
            parse("p-", "p-jaeger-service-000012"),
            Some(Name::Rollover {
                family: "jaeger-service",
                number: 12
            })
        );
        assert_eq!(
            parse("", "jaeger-span-1000000"),
            Some(Name::Rollover {
                family: "jaeger-span",
                number: 1_000_000
            })
        );
        for other in [
            "jaeger-span-2024-2-29",
            "jaeger-span-2023-02-29",
            "jaeger-span-2024-02-29-x",
            "jaeger-span-00001",
            "jaeger-span-write",
            "jaeger-span-archive-2024-02-29",
            "jaeger-span-archive-000001",
            "jaeger-sampling-2024-02-29",
            "prod-jaeger-span-2024-02-29",
            "jaeger-span-+2024-02-29",
            "jaeger-span-+000001",
        ] {
            assert_eq!(parse("", other), None, "{other}");
        }
        assert_eq!(parse("prod-", "jaeger-span-000001"), None);
    }

    #[test]
    fn the_write_index_is_flagged_or_alone() {
        let w = "jaeger-span-write";
        let moved = [
            index("jaeger-span-000001", 0, &[("jaeger-span-read", None)]),
            index("jaeger-span-000002", 1, &[(w, None)]),
        ];
        assert_eq!(
            write_index(&moved, w).map(|i| &*i.name),
            Some("jaeger-span-000002")
        );
        // is_write_index: the alias stays on old indices, flagged false.
        let flagged = [
            index("jaeger-span-000001", 0, &[(w, Some(false))]),
            index("jaeger-span-000002", 1, &[(w, Some(true))]),
        ];
        assert_eq!(
            write_index(&flagged, w).map(|i| &*i.name),
            Some("jaeger-span-000002")
        );
        let ambiguous = [
            index("jaeger-span-000001", 0, &[(w, None)]),
            index("jaeger-span-000002", 1, &[(w, None)]),
        ];
        assert_eq!(write_index(&ambiguous, w), None);
        let disabled = [index("jaeger-span-000001", 0, &[(w, Some(false))])];
        assert_eq!(write_index(&disabled, w), None);
        assert_eq!(write_index(&moved, "other-write"), None);
    }

    #[test]
    fn an_index_retires_when_its_successor_is_created() {
        let w = "p-jaeger-span-write";
        let indices = [
            index("p-jaeger-span-000003", 300, &[(w, None)]),
            index("p-jaeger-span-000001", 0, &[]),
            index("p-jaeger-span-000002", 100, &[]),
            index("p-jaeger-service-000001", 5, &[]),
            index("p-jaeger-span-2024-03-01", 0, &[]),
        ];
        let spans = retired("p-", "jaeger-span", &indices);
        let got: Vec<(&str, DateTime<Utc>)> = spans
            .iter()
            .map(|r| (r.index.name.as_str(), r.since))
            .collect();
        assert_eq!(
            got,
            [
                ("p-jaeger-span-000001", indices[2].created),
                ("p-jaeger-span-000002", indices[0].created),
            ]
        );
        // No write alias for services: nothing can be called retired.
        assert!(retired("p-", "jaeger-service", &indices).is_empty());
    }

    #[test]
    fn nothing_after_the_write_index_retires() {
        let w = "jaeger-span-write";
        // A stray index numbered past the write index (created by hand).
        let indices = [
            index("jaeger-span-000001", 0, &[]),
            index("jaeger-span-000002", 10, &[(w, Some(true))]),
            index("jaeger-span-000003", 20, &[]),
        ];
        let names: Vec<&str> = retired("", "jaeger-span", &indices)
            .iter()
            .map(|r| r.index.name.as_str())
            .collect();
        assert_eq!(names, ["jaeger-span-000001"]);
    }

    #[test]
    fn listing_replies_parse() {
        let reply = serde_json::json!({
            "p-jaeger-span-000001": {
                "aliases": {"p-jaeger-span-read": {}, "p-jaeger-span-write": {"is_write_index": true}},
                "settings": {"index.creation_date": "1709856000000", "index.number_of_shards": "1"}
            }
        });
        let listed: HashMap<String, Listed> = serde_json::from_value(reply).unwrap();
        let (name, l) = listed.into_iter().next().unwrap();
        let info = index_info(name, l).unwrap();
        assert_eq!(
            info,
            index(
                "p-jaeger-span-000001",
                0,
                &[
                    ("p-jaeger-span-read", None),
                    ("p-jaeger-span-write", Some(true)),
                ]
            )
        );
        let bad: HashMap<String, Listed> =
            serde_json::from_value(serde_json::json!({"x": {"settings": {}}})).unwrap();
        let (name, l) = bad.into_iter().next().unwrap();
        assert!(index_info(name, l).unwrap_err().contains("creation_date"));
    }
}
