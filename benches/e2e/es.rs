//! Elasticsearch chores around the sink runs: counting what a run indexed
//! and removing its indices and templates afterwards (the node is shared).

use anyhow::{Context as _, Result, bail};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::Transport;
use serde::Deserialize;
use serde_json::Value;
use tailsift::config::ElasticsearchConfig;
use tailsift::sink::elasticsearch::EsClient;

pub struct Es {
    client: Elasticsearch,
    url: String,
}

impl Es {
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            client: Elasticsearch::new(Transport::single_node(url)?),
            url: url.to_string(),
        })
    }

    async fn call(&self, method: Method, path: &str) -> Result<(u16, Value)> {
        self.call_with(method, path, None).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let resp = self
            .client
            .send(
                method,
                path,
                HeaderMap::new(),
                None::<&()>,
                body.map(JsonBody::new),
                None,
            )
            .await?;
        let status = resp.status_code().as_u16();
        let body = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// The server's version, as the sink reads it.
    pub async fn version(&self) -> Result<String> {
        let cfg = ElasticsearchConfig {
            urls: vec![self.url.clone()],
            ..Default::default()
        };
        Ok(EsClient::new(&cfg)?.server_info().await?.version)
    }

    /// Span documents under `prefix`, after a refresh.
    pub async fn span_docs(&self, prefix: &str) -> Result<u64> {
        let pattern = format!("{prefix}jaeger-span-*");
        self.call(Method::Post, &format!("/{pattern}/_refresh"))
            .await?;
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let (status, body) = self
            .call(Method::Get, &format!("/{pattern}/_count"))
            .await?;
        if status != 200 {
            bail!("count {pattern}: {status} {body}");
        }
        Ok(serde_json::from_value::<Count>(body)
            .context("count reply")?
            .count)
    }

    /// Distinct (traceID, spanID) pairs among the span documents under
    /// `prefix`: what survived a crash, whatever was written twice. Pages
    /// through a composite aggregation, so the count is exact.
    pub async fn distinct_spans(&self, prefix: &str) -> Result<u64> {
        const PAGE: usize = 10_000;
        let pattern = format!("{prefix}jaeger-span-*");
        self.call(Method::Post, &format!("/{pattern}/_refresh"))
            .await?;
        let (mut distinct, mut after) = (0, None);
        loop {
            let mut composite = serde_json::json!({
                "size": PAGE,
                "sources": [
                    {"t": {"terms": {"field": "traceID"}}},
                    {"s": {"terms": {"field": "spanID"}}}
                ]
            });
            if let Some(key) = after.take() {
                composite["after"] = key;
            }
            let query = serde_json::json!({"size": 0, "aggs": {"ids": {"composite": composite}}});
            let (status, body) = self
                .call_with(Method::Post, &format!("/{pattern}/_search"), Some(query))
                .await?;
            if status != 200 {
                bail!("distinct spans in {pattern}: {status} {body}");
            }
            let ids = &body["aggregations"]["ids"];
            let page = ids["buckets"].as_array().map_or(0, Vec::len);
            distinct += page as u64;
            match ids.get("after_key") {
                Some(key) if page == PAGE => after = Some(key.clone()),
                _ => return Ok(distinct),
            }
        }
    }

    /// Deletes the indices and templates of `prefix` by name (wildcard
    /// deletes may be forbidden on a shared node).
    pub async fn remove(&self, prefix: &str) -> Result<()> {
        let (_, indices) = self
            .call(
                Method::Get,
                &format!("/_cat/indices/{prefix}jaeger-*?format=json&h=index"),
            )
            .await?;
        for index in indices.as_array().into_iter().flatten() {
            if let Some(name) = index["index"].as_str() {
                self.call(Method::Delete, &format!("/{name}")).await?;
            }
        }
        for kind in ["span", "service"] {
            let name = format!("{prefix}jaeger-{kind}");
            self.call(Method::Delete, &format!("/_index_template/{name}"))
                .await?;
            self.call(Method::Delete, &format!("/_template/{name}"))
                .await?;
        }
        Ok(())
    }
}
