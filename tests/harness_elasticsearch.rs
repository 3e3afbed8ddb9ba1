//! Proves the local harness runs a REAL Elasticsearch: create an index, bulk-index raw
//! NDJSON (as the sink does), refresh, search, check per-item bulk statuses, delete.
//!
//! Needs `deploy/local/stack.sh up` and `ES_URL` (see tests/common/mod.rs).

mod common;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use elasticsearch::cluster::ClusterHealthParts;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesRefreshParts};
use elasticsearch::nodes::NodesInfoParts;
use elasticsearch::{BulkOperation, BulkParts, Elasticsearch, SearchParts};
use serde_json::{Value, json};

fn client() -> Result<Elasticsearch> {
    let url = url::Url::parse(&common::es_url()).context("ES_URL is not a URL")?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .disable_proxy()
        .build()?;
    Ok(Elasticsearch::new(transport))
}

async fn json_ok(resp: elasticsearch::http::response::Response, what: &str) -> Result<Value> {
    let status = resp.status_code();
    let body: Value = resp.json().await.with_context(|| format!("{what}: body"))?;
    ensure!(status.is_success(), "{what}: HTTP {status}: {body}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_create_bulk_search_delete() -> Result<()> {
    let es = client()?;
    let url = common::es_url();

    // `GET /` answers 405 on the integ-test distribution (no rest-root module), so ask
    // the nodes info API who we are talking to.
    let info = json_ok(
        es.nodes()
            .info(NodesInfoParts::NodeId(&["_local"]))
            .send()
            .await
            .with_context(|| format!("no Elasticsearch at {url}; {}", common::START_HINT))?,
        "nodes info",
    )
    .await?;
    let node = info["nodes"]
        .as_object()
        .and_then(|m| m.values().next())
        .context("nodes info lists no node")?;
    let health = json_ok(
        es.cluster().health(ClusterHealthParts::None).send().await?,
        "cluster health",
    )
    .await?;
    common::report(&format!(
        "elasticsearch at {url}: version {}, node {}, cluster {} ({}), build {}",
        node["version"],
        node["name"],
        health["cluster_name"],
        health["status"],
        node["build_flavor"]
    ));
    // The default stack runs Elasticsearch 8; scripts/matrix.sh names the exact version
    // each of its stacks runs, so a matrix entry cannot pass on another engine.
    let expected = std::env::var("ES_EXPECT_VERSION").unwrap_or_else(|_| "8.".to_string());
    ensure!(
        node["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&expected)),
        "expected version {expected}…, got {}",
        node["version"]
    );

    let index = common::unique_name("tailsift-harness");
    json_ok(
        es.indices()
            .create(IndicesCreateParts::Index(&index))
            .body(json!({
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {
                    "traceID": {"type": "keyword"},
                    "operationName": {"type": "keyword"},
                    "duration": {"type": "long"},
                }}
            }))
            .send()
            .await?,
        "create index",
    )
    .await?;

    // Raw NDJSON body, as the sink writes it: action line + document line per span.
    let mut ndjson = String::new();
    for i in 0..5 {
        let action = json!({"index": {"_id": format!("t{i}_s{i}")}});
        let doc = json!({"traceID": format!("{i:032x}"), "operationName": format!("op-{}", i % 2), "duration": 1000 * i});
        ndjson.push_str(&format!("{action}\n{doc}\n"));
    }
    let bulk = json_ok(
        es.bulk(BulkParts::Index(&index))
            .body(vec![Bytes::from(ndjson)])
            .send()
            .await?,
        "bulk (raw ndjson)",
    )
    .await?;
    ensure!(
        bulk["errors"] == json!(false),
        "bulk reported errors: {bulk}"
    );
    ensure!(
        bulk["items"].as_array().map(Vec::len) == Some(5),
        "bulk items: {bulk}"
    );

    // Typed operations, including one the mapping rejects: HTTP 200 with `errors: true`
    // and a per-item 400 -- callers must read item statuses.
    let ops: Vec<BulkOperation<Value>> = vec![
        BulkOperation::index(
            json!({"traceID": "f".repeat(32), "operationName": "op-1", "duration": 7}),
        )
        .id("typed_ok")
        .into(),
        BulkOperation::index(json!({"traceID": "e".repeat(32), "duration": "not-a-number"}))
            .id("typed_bad")
            .into(),
    ];
    let resp = es.bulk(BulkParts::Index(&index)).body(ops).send().await?;
    ensure!(
        resp.status_code().is_success(),
        "bulk HTTP {}",
        resp.status_code()
    );
    let typed: Value = resp.json().await?;
    ensure!(
        typed["errors"] == json!(true),
        "expected a rejected item: {typed}"
    );
    let statuses: Vec<u64> = typed["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|it| it["index"]["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![201, 400], "per-item statuses: {typed}");

    json_ok(
        es.indices()
            .refresh(IndicesRefreshParts::Index(&[&index]))
            .send()
            .await?,
        "refresh",
    )
    .await?;

    let found = json_ok(
        es.search(SearchParts::Index(&[&index]))
            .body(json!({
                "query": {"term": {"operationName": "op-1"}},
                "sort": [{"duration": "asc"}],
                "size": 100
            }))
            .send()
            .await?,
        "search",
    )
    .await?;
    let hits: Vec<(String, i64)> = found["hits"]["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .map(|h| {
            (
                h["_id"].as_str().unwrap_or_default().to_string(),
                h["_source"]["duration"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    common::report(&format!("search op-1 in {index}: {hits:?}"));
    assert_eq!(
        hits,
        vec![
            ("typed_ok".to_string(), 7),
            ("t1_s1".to_string(), 1000),
            ("t3_s3".to_string(), 3000)
        ]
    );
    assert_eq!(
        found["hits"]["hits"][1]["_source"]["traceID"],
        json!(format!("{:032x}", 1))
    );

    let count = json_ok(
        es.count(elasticsearch::CountParts::Index(&[&index]))
            .send()
            .await?,
        "count",
    )
    .await?;
    assert_eq!(count["count"], json!(6), "5 raw + 1 typed document");

    json_ok(
        es.indices()
            .delete(IndicesDeleteParts::Index(&[&index]))
            .send()
            .await?,
        "delete index",
    )
    .await?;
    let gone = es
        .indices()
        .exists(elasticsearch::indices::IndicesExistsParts::Index(&[&index]))
        .send()
        .await?;
    assert_eq!(
        gone.status_code().as_u16(),
        404,
        "index still exists after delete"
    );
    Ok(())
}
