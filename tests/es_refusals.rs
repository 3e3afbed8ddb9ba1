//! Elasticsearch refusing writes for a cluster reason, under load, with the
//! fault harness (tailsift as a child process, generated load with ground
//! truth): a write block on today's index, and `action.auto_create_index`
//! forbidding the index a new day (here: a new prefix) needs. In each the
//! documents are retried, not dead-lettered: nothing is acknowledged while
//! the refusal lasts, the reason shows in `tailsift_es_retries_total`, and
//! once it is lifted every span of every trace the policies keep is in
//! Elasticsearch. Those two settings only touch the scenario's own
//! indices, so they run on the shared stack (and in every `scripts/test.sh`).
//! The third, a low `cluster.max_shards_per_node`, stops every index
//! creation in the cluster: it only runs on a stack of its own
//! (`bash scripts/faults.sh shard_limit`, which sets FAULTS_STACK_DIR).

mod common;
#[path = "faults/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use elasticsearch::indices::IndicesPutSettingsParts;
use serde_json::{Value, json};
use tailsift::decode::Encoding;

use harness::instance::Instance;
use harness::load::Load;
use harness::results::Row;
use harness::scenario::{Scenario, Tuning};
use harness::{ONE_AT_A_TIME, log};

const RATE: f64 = 800.0;
const SETTLE: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(180);
/// How long the refusal lasts.
const REFUSAL: Duration = Duration::from_secs(30);

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Retries of one reason, and documents dead-lettered for Elasticsearch.
async fn refusal_counters(i: &Instance, reason: &str) -> Result<(f64, f64)> {
    let m = i.metrics().await?;
    Ok((
        harness::instance::metric_sum(&m, "tailsift_es_retries_total", &[("reason", reason)]),
        harness::instance::metric_sum(&m, "tailsift_es_documents_total", &[("result", "rejected")]),
    ))
}

/// Holds the refusal for [`REFUSAL`] and checks what it must look like:
/// the instance alive, retries with `reason`, no document rejected.
async fn hold_refusal(i: &mut Instance, reason: &str) -> Result<f64> {
    let since = Instant::now();
    while since.elapsed() < REFUSAL {
        ensure!(i.alive(), "{} died{}", i.name(), i.log_tail(30));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (retries, rejected) = refusal_counters(i, reason).await?;
    log(format!(
        "after {}s of refusal: {retries} documents retried for {reason}, {rejected} rejected",
        REFUSAL.as_secs()
    ));
    ensure!(
        retries > 0.0,
        "no retry with reason {reason}:\n{}",
        i.log_tail(20)
    );
    ensure!(
        rejected == 0.0,
        "{rejected} documents were dead-lettered for a cluster reason"
    );
    Ok(retries)
}

/// After the refusal: the load stops, the lag drains, Elasticsearch holds
/// every must-keep span, the dead-letter topic has no document in it.
async fn finish(mut s: Scenario, a: Instance, load: Load, note: String) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let produced = load.stop().await?;
    s.wait_drained(&[&a], DRAIN).await?;
    let verdict = s.verify(&produced.truth).await?;
    let rejected = s
        .dead_letters()
        .await?
        .iter()
        .filter(|d| d.header("tailsift.error.reason") == "es_rejected")
        .count();
    s.account(&a).await;
    let (status, _) = a.terminate(Duration::from_secs(45)).await?;
    let mut row = Row::new(&s, 1, &verdict);
    row.note = note;
    s.record(&row)?;
    verdict.ensure()?;
    ensure!(status.success(), "tailsift exited with {status}");
    ensure!(
        rejected == 0,
        "{rejected} documents in the dead-letter topic"
    );
    s.cleanup().await
}

/// `index.blocks.write: true` on today's span index under load, lifted
/// after 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_block_on_todays_index() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::new("write_block", Encoding::OtlpProto, Tuning::default()).await?;
    let mut a = s.spawn()?;
    s.wait_assigned(&[&a], 1, SETTLE).await?;
    let load = Load::start(&s, RATE, 0.0, 11);
    let es = harness::verify::es_client(&s.env.es_url)?;
    let index = format!("{}-jaeger-span-{}", s.prefix, today());
    // Let today's index be created and written to first.
    let deadline = Instant::now() + SETTLE;
    while !exists(&es, &index).await? {
        ensure!(Instant::now() < deadline, "{index} never appeared");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    set_write_block(&es, &index, true).await?;
    log(format!("write block set on {index}"));
    let held = hold_refusal(&mut a, "write_block").await;
    // Lifted whatever happened, or the index could not be cleaned up.
    set_write_block(&es, &index, false).await?;
    log("write block lifted");
    let retries = held?;
    let note = format!(
        "write block {}s; {retries} documents retried",
        REFUSAL.as_secs()
    );
    finish(s, a, load, note).await
}

/// `action.auto_create_index` forbidding the scenario's indices while it
/// starts writing (the situation of a new day's index under a restrictive
/// setting), restored after 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_index_forbids_the_new_index() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("auto_create", Encoding::JaegerProto, Tuning::default()).await?;
    let es = harness::verify::es_client(&s.env.es_url)?;
    let previous = cluster_setting(&es, AUTO_CREATE).await?;
    let pattern = format!("-{}-*,+*", s.prefix);
    put_cluster_setting(&es, AUTO_CREATE, json!(pattern)).await?;
    log(format!(
        "action.auto_create_index: {pattern} (was {previous})"
    ));
    let run = refused_run(s, "index_missing").await;
    put_cluster_setting(&es, AUTO_CREATE, previous.clone()).await?;
    log(format!("action.auto_create_index restored to {previous}"));
    let (s, a, load, retries) = run?;
    let note = format!(
        "auto_create_index refused {}s; {retries} documents retried",
        REFUSAL.as_secs()
    );
    finish(s, a, load, note).await
}

/// An instance and its load started while today's index cannot be
/// created; the refusal held with retries for `reason`.
async fn refused_run(mut s: Scenario, reason: &str) -> Result<(Scenario, Instance, Load, f64)> {
    let mut a = s.spawn()?;
    s.wait_assigned(&[&a], 1, SETTLE).await?;
    let load = Load::start(&s, RATE, 0.0, 12);
    let retries = hold_refusal(&mut a, reason).await?;
    let es = harness::verify::es_client(&s.env.es_url)?;
    let index = format!("{}-jaeger-span-{}", s.prefix, today());
    ensure!(
        !exists(&es, &index).await?,
        "{index} was created despite the refusal"
    );
    Ok((s, a, load, retries))
}

async fn exists(es: &elasticsearch::Elasticsearch, index: &str) -> Result<bool> {
    let r = es
        .indices()
        .exists(elasticsearch::indices::IndicesExistsParts::Index(&[index]))
        .send()
        .await?;
    Ok(r.status_code().is_success())
}

async fn set_write_block(es: &elasticsearch::Elasticsearch, index: &str, on: bool) -> Result<()> {
    let value = if on { json!(true) } else { Value::Null };
    let r = es
        .indices()
        .put_settings(IndicesPutSettingsParts::Index(&[index]))
        .body(json!({"index.blocks.write": value}))
        .send()
        .await?;
    let status = r.status_code();
    ensure!(
        status.is_success(),
        "put_settings {index}: {}",
        r.text().await?
    );
    Ok(())
}

const AUTO_CREATE: &str = "action.auto_create_index";

/// A persistent cluster setting, `null` when unset.
async fn cluster_setting(es: &elasticsearch::Elasticsearch, key: &str) -> Result<Value> {
    let r: Value = es
        .cluster()
        .get_settings()
        .flat_settings(true)
        .send()
        .await?
        .json()
        .await?;
    Ok(r["persistent"][key].clone())
}

async fn put_cluster_setting(
    es: &elasticsearch::Elasticsearch,
    key: &str,
    value: Value,
) -> Result<()> {
    let r = es
        .cluster()
        .put_settings()
        .body(json!({"persistent": {key: value}}))
        .send()
        .await
        .context("cluster settings")?;
    let status = r.status_code();
    ensure!(status.is_success(), "cluster settings: {}", r.text().await?);
    Ok(())
}

/// `cluster.max_shards_per_node` at the cluster's current shard count, so
/// that today's index cannot be created, restored after 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster-wide setting: run on a stack of its own with scripts/faults.sh shard_limit"]
async fn long_shard_limit_stops_the_new_index() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("shard_limit", Encoding::OtlpProto, Tuning::default()).await?;
    ensure!(
        s.env.stack_dir.is_some(),
        "a cluster-wide setting: run with FAULTS_STACK_DIR (scripts/faults.sh shard_limit), \
         never on a stack others use"
    );
    let es = harness::verify::es_client(&s.env.es_url)?;
    // One shard open before the limit is set at the open count: with none
    // open, the limit (at least 1) would let one new index through, and
    // which of the day's indices wins that slot is a race.
    let holder = format!("{}-shard-holder", s.prefix);
    let body = json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0}});
    let created = es
        .indices()
        .create(elasticsearch::indices::IndicesCreateParts::Index(&holder))
        .body(body)
        .send()
        .await?;
    ensure!(
        created.status_code().is_success(),
        "create {holder}: {}",
        created.text().await?
    );
    let stats: Value = es
        .cluster()
        .stats(elasticsearch::cluster::ClusterStatsParts::None)
        .send()
        .await?
        .json()
        .await?;
    let shards = stats["indices"]["shards"]["total"].as_u64().unwrap_or(0);
    let previous = cluster_setting(&es, "cluster.max_shards_per_node").await?;
    // At least 1: the setting refuses 0 (the holder makes it at least 1).
    let limit = shards.max(1);
    put_cluster_setting(&es, "cluster.max_shards_per_node", json!(limit)).await?;
    log(format!(
        "cluster.max_shards_per_node: {limit} ({shards} shards open; was {previous})"
    ));
    let run = refused_run(s, "shard_limit").await;
    put_cluster_setting(&es, "cluster.max_shards_per_node", previous.clone()).await?;
    es.indices()
        .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[
            &holder,
        ]))
        .send()
        .await?;
    log(format!(
        "cluster.max_shards_per_node restored to {previous}"
    ));
    let (s, a, load, retries) = run?;
    let note = format!(
        "max_shards_per_node reached {}s; {retries} documents retried",
        REFUSAL.as_secs()
    );
    finish(s, a, load, note).await
}
