//! Impossible span times through the whole service (a child process on the
//! real broker and Elasticsearch, with the fault harness's generated load
//! beside them): spans starting at 0, 30 days ahead and at `i64::MAX`
//! seconds, and one ending before it starts. Each is kept (an error span),
//! written to today's index with its corrected start and the original
//! values as tags, and counted by reason; no index outside
//! [now − max_span_age, now + max_clock_skew] is created; the load's spans
//! are all there.

mod common;
#[path = "faults/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::{NaiveDate, Utc};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tailsift::decode::{Encoding, jaeger};

use harness::load::Load;
use harness::results::Row;
use harness::scenario::{Scenario, Tuning};
use harness::{ONE_AT_A_TIME, log};

const DAY: i64 = 86_400;

/// (name, start seconds, duration seconds, expected reason)
fn bad_spans(now: i64) -> Vec<(&'static str, i64, i64, &'static str)> {
    vec![
        ("epoch", 0, 1, "start_too_old"),
        ("month_ahead", now + 30 * DAY, 1, "start_in_future"),
        ("i64_max", i64::MAX, 0, "start_in_future"),
        ("reversed", now - 60, -30, "end_before_start"),
    ]
}

fn jaeger_span(trace: [u8; 16], start: i64, duration: i64, name: &str) -> Vec<u8> {
    jaeger::Span {
        trace_id: trace.to_vec(),
        span_id: trace[8..].to_vec(),
        operation_name: name.to_string(),
        start_time: Some(pbjson_types::Timestamp {
            seconds: start,
            nanos: 0,
        }),
        duration: Some(pbjson_types::Duration {
            seconds: duration,
            nanos: 0,
        }),
        tags: vec![jaeger::KeyValue {
            key: "error".into(),
            v_type: 1, // BOOL
            v_bool: true,
            ..Default::default()
        }],
        process: Some(jaeger::Process {
            service_name: "clockless".into(),
            tags: vec![],
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_times_are_corrected_tagged_and_kept_in_range() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::new("span_times", Encoding::JaegerProto, Tuning::default()).await?;
    let a = s.spawn()?;
    s.wait_assigned(&[&a], 1, Duration::from_secs(60)).await?;
    let load = Load::start(&s, 400.0, 0.0, 21);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.env.brokers)
        .create()?;
    let now = Utc::now().timestamp();
    let mut sent = HashMap::new();
    for (i, (name, start, duration, reason)) in bad_spans(now).into_iter().enumerate() {
        let mut trace = [0xa5u8; 16];
        trace[15] = i as u8 + 1;
        let key = hex::encode(trace);
        let payload = jaeger_span(trace, start, duration, name);
        producer
            .send(
                FutureRecord::to(&s.topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("produce {name}"))?;
        sent.insert(key, (name, start, reason));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let produced = load.stop().await?;
    s.wait_drained(&[&a], Duration::from_secs(180)).await?;
    let metrics = a.metrics().await?;
    let verdict = s.verify(&produced.truth).await?;

    let es = harness::verify::es_client(&s.env.es_url)?;
    es.indices()
        .refresh(elasticsearch::indices::IndicesRefreshParts::Index(&[
            &format!("{}-jaeger-*", s.prefix),
        ]))
        .send()
        .await?;
    let r: Value = es
        .search(elasticsearch::SearchParts::Index(&[&format!(
            "{}-jaeger-span-*",
            s.prefix
        )]))
        .body(json!({"query": {"term": {"process.serviceName": "clockless"}}, "size": 100}))
        .send()
        .await?
        .json()
        .await?;
    let hits = r["hits"]["hits"].as_array().cloned().unwrap_or_default();
    log(format!("{} corrected spans found", hits.len()));
    let today = Utc::now().date_naive();
    for hit in &hits {
        let doc = &hit["_source"];
        let trace = doc["traceID"].as_str().unwrap_or_default();
        let (name, _, reason) = sent
            .remove(trace)
            .with_context(|| format!("unexpected document {doc}"))?;
        let tag = |k: &str| {
            doc["tags"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["key"] == k))
                .map(|t| t["value"].clone())
        };
        ensure!(
            tag("tailsift.time_corrected") == Some(json!(reason)),
            "{name}: {doc}"
        );
        ensure!(
            tag("tailsift.original_start_unix_nano").is_some(),
            "{name}: no original start: {doc}"
        );
        let start_secs = doc["startTime"].as_i64().unwrap_or(0) / 1_000_000;
        ensure!(
            (start_secs - now).abs() < 3600,
            "{name}: start {start_secs} is not near now {now}: {doc}"
        );
        ensure!(
            doc["duration"]
                .as_i64()
                .is_some_and(|d| (0..=1_000_000).contains(&d)),
            "{name}: duration {}",
            doc["duration"]
        );
        let index = hit["_index"].as_str().unwrap_or_default();
        ensure!(
            index.ends_with(&today.to_string())
                || index.ends_with(&(today.succ_opt().unwrap_or(today)).to_string()),
            "{name} in {index}"
        );
    }
    ensure!(
        sent.is_empty(),
        "spans missing from Elasticsearch: {sent:?}"
    );

    // Every index under the prefix is within the window.
    let cat: Value = es
        .cat()
        .indices(elasticsearch::cat::CatIndicesParts::Index(&[&format!(
            "{}-jaeger-*",
            s.prefix
        )]))
        .format("json")
        .send()
        .await?
        .json()
        .await?;
    for i in cat.as_array().into_iter().flatten() {
        let name = i["index"].as_str().unwrap_or_default();
        let date = name.rsplit_once("-jaeger-").map_or("", |(_, r)| r);
        let date = date.split_once('-').map_or("", |(_, d)| d);
        let day =
            NaiveDate::parse_from_str(date, "%Y-%m-%d").with_context(|| format!("index {name}"))?;
        let age = (today - day).num_days();
        ensure!((-1..=7).contains(&age), "index {name} is {age} days old");
    }

    for reason in ["start_too_old", "start_in_future", "end_before_start"] {
        let n = harness::instance::metric_sum(
            &metrics,
            "tailsift_span_time_corrections_total",
            &[("reason", reason)],
        );
        ensure!(n >= 1.0, "no correction counted for {reason}");
    }
    s.account(&a).await;
    let (status, _) = a.terminate(Duration::from_secs(45)).await?;
    let mut row = Row::new(&s, 1, &verdict);
    row.note = "spans at 0, +30 d, i64::MAX s and reversed: corrected and tagged".into();
    s.record(&row)?;
    // The four traces above are not the load's: the only traces allowed
    // beside its ground truth.
    ensure!(verdict.must_keep > 0, "the load produced nothing to check");
    ensure!(
        verdict.lost == 0 && verdict.duplicated == 0 && verdict.extra_spans == 0,
        "{verdict:?}"
    );
    ensure!(verdict.unexpected_traces == 4, "{verdict:?}");
    ensure!(status.success(), "tailsift exited with {status}");
    s.cleanup().await
}
