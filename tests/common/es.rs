//! Direct Elasticsearch/OpenSearch calls the end-to-end tests need besides the sink:
//! refresh, and removing a run's indices and templates.

use anyhow::{Context, Result, ensure};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use serde_json::Value;

pub struct Es(Elasticsearch);

/// An Elasticsearch client straight to `url`, whatever proxy the environment names.
pub fn client(url: &str) -> Result<Elasticsearch> {
    let url = url::Url::parse(url).with_context(|| format!("'{url}' is not a URL"))?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .disable_proxy()
        .build()?;
    Ok(Elasticsearch::new(transport))
}

impl Es {
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self(client(url)?))
    }

    async fn call(&self, method: Method, path: &str) -> Result<Value> {
        self.call_with(method, path, None).await
    }

    async fn call_with(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(
            elasticsearch::http::headers::CONTENT_TYPE,
            elasticsearch::http::headers::HeaderValue::from_static("application/json"),
        );
        let resp = self
            .0
            .send::<Vec<u8>, ()>(method, path, headers, None, body, None)
            .await
            .with_context(|| format!("Elasticsearch {path}"))?;
        let status = resp.status_code();
        let text = resp.text().await?;
        ensure!(
            status.is_success(),
            "Elasticsearch {path}: HTTP {status}: {text}"
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn refresh(&self, pattern: &str) -> Result<()> {
        self.call(Method::Post, &format!("/{pattern}/_refresh"))
            .await
            .map(drop)
    }

    /// Documents in `target` (an index or alias) matching `query` (all without one).
    pub async fn count(&self, target: &str, query: Option<Value>) -> Result<u64> {
        let body = query.map(|q| serde_json::json!({ "query": q }));
        let reply = self
            .call_with(Method::Post, &format!("/{target}/_count"), body.as_ref())
            .await?;
        reply["count"]
            .as_u64()
            .with_context(|| format!("{target}/_count: {reply}"))
    }

    /// The aliases of the indices matching `pattern`: index → alias names.
    pub async fn aliases(
        &self,
        pattern: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        let reply = self
            .call(Method::Get, &format!("/{pattern}/_alias"))
            .await?;
        let indices = reply.as_object().context("GET _alias: not an object")?;
        Ok(indices
            .iter()
            .map(|(index, v)| {
                let names = v["aliases"]
                    .as_object()
                    .map(|a| a.keys().cloned().collect())
                    .unwrap_or_default();
                (index.clone(), names)
            })
            .collect())
    }

    /// Removes this run's indices and templates (kept when the test fails, to inspect).
    pub async fn delete_run(&self, prefix: &str) {
        // By name: wildcard deletes are refused where action.destructive_requires_name is on.
        let listed = self
            .call(
                Method::Get,
                &format!("/_cat/indices/{prefix}jaeger-*?format=json&h=index"),
            )
            .await;
        for index in listed
            .iter()
            .flat_map(|l| l.as_array().cloned().unwrap_or_default())
        {
            if let Some(name) = index["index"].as_str() {
                let _ = self.call(Method::Delete, &format!("/{name}")).await;
            }
        }
        // Composable templates on Elasticsearch 8/9, legacy ones on OpenSearch.
        for api in ["_index_template", "_template"] {
            for kind in ["span", "service", "dependencies"] {
                let _ = self
                    .call(Method::Delete, &format!("/{api}/{prefix}jaeger-{kind}"))
                    .await;
            }
        }
    }
}
