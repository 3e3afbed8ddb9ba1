//! `prune_indices` against a REAL Elasticsearch: daily span, service and
//! dependencies indices of a unique prefix over several days, and rollover
//! indices made by `tailsift::rollover` (one retired, one the write index).
//! A dry run deletes nothing; a real run deletes exactly the old daily
//! indices and leaves recent, rollover, archive and other-prefix indices
//! alone; a run whose cutoff lies after the rollover deletes the retired
//! rollover indices and never the write index.
//!
//! Needs `deploy/local/stack.sh up` and `ES_URL` (see tests/common/mod.rs).

mod common;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Days, NaiveDate, Utc};
use elasticsearch::Elasticsearch;
use elasticsearch::cat::CatIndicesParts;
use elasticsearch::indices::IndicesCreateParts;
use serde_json::{Value, json};

use common::es::Es;
use tailsift::config::ElasticsearchConfig;
use tailsift::retention::{PruneReport, client, prune_indices};
use tailsift::rollover::{self, Conditions};

const KEEP_DAYS: u32 = 7;

/// The day the daily fixture is judged on (7 days kept: 03-02 … 03-08).
fn fixture_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-08T12:00:00Z")
        .expect("valid time")
        .to_utc()
}

/// One fixture: which indices exist before pruning and what must happen to them.
struct Fixture {
    /// Passed without the trailing `-`, which prune_indices adds.
    prefix: String,
    other_prefix: String,
    old: Vec<String>,
    recent: Vec<String>,
    /// Rollover indices: the first retired by a rollover, the second the write index.
    retired: Vec<String>,
    writing: Vec<String>,
    untouchable: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        let prefix = common::unique_name("tailsift-retention");
        let other_prefix = common::unique_name("tailsift-retention-other");
        let daily = |days: &[&str]| -> Vec<String> {
            let mut names: Vec<String> = days
                .iter()
                .flat_map(|d| {
                    ["span", "service", "dependencies"]
                        .map(|family| format!("{prefix}-jaeger-{family}-{d}"))
                })
                .collect();
            names.sort();
            names
        };
        let rollover = |n: &str| -> Vec<String> {
            ["dependencies", "service", "span"]
                .map(|family| format!("{prefix}-jaeger-{family}-{n}"))
                .to_vec()
        };
        Self {
            old: daily(&["2024-02-01", "2024-03-01"]),
            recent: daily(&["2024-03-02", "2024-03-07", "2024-03-08"]),
            retired: rollover("000001"),
            writing: rollover("000002"),
            untouchable: vec![
                format!("{prefix}-jaeger-span-archive-000001"),
                format!("{other_prefix}-jaeger-span-2024-02-01"),
            ],
            prefix,
            other_prefix,
        }
    }

    fn created_by_hand(&self) -> Vec<String> {
        [&self.old, &self.recent, &self.untouchable]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<String> {
        sorted(
            self.created_by_hand()
                .into_iter()
                .chain(self.retired.iter().cloned())
                .chain(self.writing.iter().cloned()),
        )
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

/// `<prefix>-jaeger-{span,service,dependencies}-000001` behind the aliases, rolled over to
/// `000002`, with tailsift's own commands.
async fn rolled_over(fixture: &Fixture) -> Result<()> {
    let cfg = ElasticsearchConfig {
        urls: vec![common::es_url()],
        replicas: 0,
        ..Default::default()
    };
    let es = tailsift::sink::elasticsearch::EsClient::new(&cfg)?;
    let names = rollover::names(&format!("{}-", fixture.prefix));
    let created = rollover::init(&es, &cfg, &names).await?;
    ensure!(created.len() == 3, "init created {created:?}");
    let now = Conditions {
        max_age: Some("1ms".into()),
        ..Default::default()
    };
    let outcomes = rollover::rollover(&es, &names, &now).await?;
    ensure!(
        outcomes.iter().all(|o| o.rolled_over),
        "not rolled over: {outcomes:?}"
    );
    Ok(())
}

/// Sorted names of the existing indices under both prefixes.
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
    let names = rows
        .as_array()
        .context("cat indices returns an array")?
        .iter()
        .filter_map(|r| r["index"].as_str().map(str::to_string));
    Ok(sorted(names))
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
    // The rollover indices were created now, long after the fixture's day.
    let kept = sorted(
        fixture
            .recent
            .iter()
            .chain(&fixture.retired)
            .chain(&fixture.writing)
            .cloned(),
    );
    ensure!(report.kept == kept, "kept {:?}", report.kept);
    Ok(())
}

async fn scenario(es: &Elasticsearch, fixture: &Fixture) -> Result<()> {
    for index in fixture.created_by_hand() {
        create(es, &index).await?;
    }
    rolled_over(fixture).await?;
    ensure!(existing(es, fixture).await? == fixture.all());
    let ts = client(&common::es_url())?;

    let dry = prune_indices(&ts, &fixture.prefix, KEEP_DAYS, fixture_now(), true).await?;
    check_report(&dry, fixture)?;
    ensure!(
        existing(es, fixture).await? == fixture.all(),
        "a dry run deleted something"
    );

    let real = prune_indices(&ts, &fixture.prefix, KEEP_DAYS, fixture_now(), false).await?;
    check_report(&real, fixture)?;
    let left = existing(es, fixture).await?;
    let expected: Vec<String> = fixture
        .all()
        .into_iter()
        .filter(|i| !fixture.old.contains(i))
        .collect();
    ensure!(left == expected, "left {left:?}, expected {expected:?}");

    let again = prune_indices(&ts, &fixture.prefix, KEEP_DAYS, fixture_now(), false).await?;
    ensure!(
        again.deleted.is_empty(),
        "second run deleted {:?}",
        again.deleted
    );

    // Days later, with one day kept: the indices retired by the rollover go,
    // and every daily one; the write indices stay, however old the cutoff makes
    // them.
    let later = Utc::now() + Days::new(3);
    let report = prune_indices(&ts, &fixture.prefix, 1, later, false).await?;
    let gone = sorted(fixture.recent.iter().chain(&fixture.retired).cloned());
    ensure!(report.deleted == gone, "deleted {:?}", report.deleted);
    ensure!(report.kept == fixture.writing, "kept {:?}", report.kept);
    let left = existing(es, fixture).await?;
    let expected = sorted(fixture.writing.iter().chain(&fixture.untouchable).cloned());
    ensure!(left == expected, "left {left:?}, expected {expected:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_old_daily_and_retired_rollover_indices_of_the_prefix() -> Result<()> {
    let es = common::es::client(&common::es_url())?;
    let fixture = Fixture::new();
    let outcome = scenario(&es, &fixture).await;
    if outcome.is_ok() {
        let cleanup = Es::new(&common::es_url())?;
        cleanup.delete_run(&format!("{}-", fixture.prefix)).await;
        cleanup
            .delete_run(&format!("{}-", fixture.other_prefix))
            .await;
    }
    outcome
}

#[tokio::test]
async fn unreachable_elasticsearch_is_an_error_naming_the_request() {
    // A port nothing listens on: the listing fails before anything is deleted.
    let es = client("http://127.0.0.1:9").expect("valid URL");
    let err = prune_indices(&es, "", KEEP_DAYS, fixture_now(), false)
        .await
        .expect_err("nothing answers on port 9");
    let err = err.to_string();
    assert!(err.contains("jaeger-span-*"), "{err}");
    assert!(err.contains("jaeger-dependencies-*"), "{err}");
}
