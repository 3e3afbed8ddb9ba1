//! One bad span in an OTLP message (an all-zero trace ID) beside a good
//! trace, through the whole service with the fault harness's load: the
//! good trace is written whole, the original message is in the dead-letter
//! topic with an error naming the bad span, and the message's offset is
//! committed (the lag drains: the dead letter resolved its unit).

mod common;
#[path = "faults/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tailsift::decode::Encoding;

use harness::load::Load;
use harness::results::Row;
use harness::scenario::{Scenario, Tuning};
use harness::{ONE_AT_A_TIME, log};

const GOOD_TRACE: [u8; 16] = [0x6d; 16];

fn message() -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let span = |trace: [u8; 16], id: u8, error: bool| Span {
        trace_id: trace.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: if id == 1 {
            vec![]
        } else {
            vec![0, 0, 0, 0, 0, 0, 0, 1]
        },
        name: format!("op-{id}"),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let spans = vec![
        span(GOOD_TRACE, 1, false),
        span([0; 16], 9, true),
        span(GOOD_TRACE, 2, true),
        span(GOOD_TRACE, 3, false),
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_span_is_cut_out_and_its_message_goes_on() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::new("bad_spans", Encoding::OtlpProto, Tuning::default()).await?;
    let a = s.spawn()?;
    s.wait_assigned(&[&a], 1, Duration::from_secs(60)).await?;
    let load = Load::start(&s, 400.0, 0.0, 41);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.env.brokers)
        .create()?;
    let payload = message();
    producer
        .send(
            FutureRecord::to(&s.topic).key("mixed").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("produce the mixed message")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let produced = load.stop().await?;
    s.wait_drained(&[&a], Duration::from_secs(180)).await?;
    let verdict = s.verify(&produced.truth).await?;

    let es = harness::verify::es_client(&s.env.es_url)?;
    let pattern = format!("{}-jaeger-span-*", s.prefix);
    es.indices()
        .refresh(elasticsearch::indices::IndicesRefreshParts::Index(&[
            &pattern,
        ]))
        .send()
        .await?;
    let r: Value = es
        .search(elasticsearch::SearchParts::Index(&[&pattern]))
        .body(json!({"query": {"term": {"traceID": hex::encode(GOOD_TRACE)}}, "size": 10}))
        .send()
        .await?
        .json()
        .await?;
    let written = r["hits"]["hits"].as_array().map_or(0, Vec::len);
    let letters = s.dead_letters().await?;
    let cut: Vec<_> = letters
        .iter()
        .filter(|l| l.header("tailsift.error.reason") == "zero_trace_id")
        .collect();
    log(format!(
        "good trace: {written} of 3 spans written; {} dead letters for the cut span",
        cut.len()
    ));
    s.account(&a).await;
    let (status, _) = a.terminate(Duration::from_secs(45)).await?;
    let mut row = Row::new(&s, 1, &verdict);
    row.note = "one zero-ID span cut out of a 4-span message".into();
    s.record(&row)?;
    ensure!(
        written == 3,
        "{written} of the good trace's 3 spans in Elasticsearch"
    );
    ensure!(
        cut.len() == 1,
        "{} dead letters for the cut span",
        cut.len()
    );
    let error = cut[0].header("tailsift.error");
    ensure!(error.contains("span at bytes"), "error header: {error}");
    ensure!(
        cut[0].len == payload.len(),
        "the dead letter holds {} bytes, the original {}",
        cut[0].len,
        payload.len()
    );
    ensure!(verdict.must_keep > 0, "the load produced nothing to check");
    ensure!(
        verdict.lost == 0 && verdict.duplicated == 0 && verdict.extra_spans == 0,
        "{verdict:?}"
    );
    // The good trace is not the load's: the one trace allowed beside it.
    ensure!(verdict.unexpected_traces == 1, "{verdict:?}");
    ensure!(status.success(), "tailsift exited with {status}");
    s.cleanup().await
}
