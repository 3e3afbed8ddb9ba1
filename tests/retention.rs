//! `prune_indices` against a REAL Elasticsearch: daily indices of a unique
//! prefix over several days, a dry run that deletes nothing, a real run that
//! deletes exactly the old ones and leaves recent, undated and other-prefix
//! indices alone.
//!
//! Needs `deploy/local/stack.sh up` and `ES_URL` (see tests/common/mod.rs).

mod common;

use anyhow::{Context, Result, ensure};
use chrono::NaiveDate;
use elasticsearch::Elasticsearch;
use elasticsearch::cat::CatIndicesParts;
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts};
use serde_json::{Value, json};
use tailsift::retention::{PruneReport, client, prune_indices};

const KEEP_DAYS: u32 = 7;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 8).expect("valid date")
}

/// One fixture: which indices exist before pruning and what must happen to them.
struct Fixture {
    /// Passed without the trailing `-`, which prune_indices adds.
    prefix: String,
    other_prefix: String,
    old: Vec<String>,
    recent: Vec<String>,
    untouchable: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        let prefix = common::unique_name("tailsift-retention");
        let other_prefix = common::unique_name("tailsift-retention-other");
        let daily = |days: &[&str]| -> Vec<String> {
            let mut names: Vec<String> = days
                .iter()
                .flat_map(|d| ["span", "service"].map(|kind| format!("{prefix}-jaeger-{kind}-{d}")))
                .collect();
            names.sort();
            names
        };
        Self {
            // 7 days kept on 2024-03-08: 03-02 … 03-08.
            old: daily(&["2024-02-01", "2024-03-01"]),
            recent: daily(&["2024-03-02", "2024-03-07", "2024-03-08"]),
            untouchable: vec![
                format!("{prefix}-jaeger-span-000001"),
                format!("{other_prefix}-jaeger-span-2024-02-01"),
            ],
            prefix,
            other_prefix,
        }
    }

    fn all(&self) -> Vec<String> {
        [&self.old, &self.recent, &self.untouchable]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

async fn ok_json(resp: elasticsearch::http::response::Response, what: &str) -> Result<Value> {
    let status = resp.status_code();
    let body: Value = resp.json().await.with_context(|| format!("{what}: body"))?;
    ensure!(status.is_success(), "{what}: HTTP {status}: {body}");
    Ok(body)
}

async fn create(es: &Elasticsearch, index: &str) -> Result<()> {
    let resp = es
        .indices()
        .create(IndicesCreateParts::Index(index))
        .body(json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0}}))
        .send()
        .await
        .with_context(|| {
            format!(
                "no Elasticsearch at {}; {}",
                common::es_url(),
                common::START_HINT
            )
        })?;
    ok_json(resp, &format!("create {index}")).await?;
    Ok(())
}

/// Sorted names of the existing indices among `fixture.all()`.
async fn existing(es: &Elasticsearch, fixture: &Fixture) -> Result<Vec<String>> {
    let patterns = [
        format!("{}-*", fixture.prefix),
        format!("{}-*", fixture.other_prefix),
    ];
    let patterns = patterns.each_ref().map(String::as_str);
    let resp = es
        .cat()
        .indices(CatIndicesParts::Index(&patterns))
        .format("json")
        .h(&["index"])
        .send()
        .await?;
    let rows = ok_json(resp, "list indices").await?;
    let mut names: Vec<String> = rows
        .as_array()
        .context("cat indices returns an array")?
        .iter()
        .filter_map(|r| r["index"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names
}

fn check_report(report: &PruneReport, fixture: &Fixture) -> Result<()> {
    ensure!(report.keep_from == NaiveDate::from_ymd_opt(2024, 3, 2).expect("valid date"));
    ensure!(
        report.deleted == fixture.old,
        "deleted {:?}",
        report.deleted
    );
    ensure!(report.kept == fixture.recent, "kept {:?}", report.kept);
    Ok(())
}

async fn scenario(es: &Elasticsearch, fixture: &Fixture) -> Result<()> {
    for index in fixture.all() {
        create(es, &index).await?;
    }
    ensure!(existing(es, fixture).await? == sorted(fixture.all()));

    let dry = prune_indices(es, &fixture.prefix, KEEP_DAYS, today(), true).await?;
    check_report(&dry, fixture)?;
    ensure!(
        existing(es, fixture).await? == sorted(fixture.all()),
        "a dry run deleted something"
    );

    let real = prune_indices(es, &fixture.prefix, KEEP_DAYS, today(), false).await?;
    check_report(&real, fixture)?;
    let left = existing(es, fixture).await?;
    let expected = sorted(fixture.recent.iter().chain(&fixture.untouchable).cloned());
    ensure!(left == expected, "left {left:?}, expected {expected:?}");

    let again = prune_indices(es, &fixture.prefix, KEEP_DAYS, today(), false).await?;
    ensure!(
        again.deleted.is_empty(),
        "second run deleted {:?}",
        again.deleted
    );
    Ok(())
}

async fn cleanup(es: &Elasticsearch, fixture: &Fixture) -> Result<()> {
    let names = fixture.all();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let resp = es
        .indices()
        .delete(IndicesDeleteParts::Index(&names))
        .ignore_unavailable(true)
        .send()
        .await?;
    ok_json(resp, "cleanup").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_old_daily_indices_of_the_prefix() -> Result<()> {
    let es = client(&common::es_url())?;
    let fixture = Fixture::new();
    let outcome = scenario(&es, &fixture).await;
    let cleaned = cleanup(&es, &fixture).await;
    outcome?;
    cleaned
}

#[tokio::test]
async fn unreachable_elasticsearch_is_an_error_naming_the_request() {
    // A port nothing listens on: the listing fails before anything is deleted.
    let es = client("http://127.0.0.1:9").expect("valid URL");
    let err = prune_indices(&es, "", KEEP_DAYS, today(), false)
        .await
        .expect_err("nothing answers on port 9");
    assert!(err.to_string().contains("jaeger-span-*"), "{err}");
}
