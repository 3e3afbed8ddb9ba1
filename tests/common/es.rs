//! Direct Elasticsearch/OpenSearch calls the end-to-end tests need besides the sink:
//! refresh, and removing a run's indices and templates.

use anyhow::{Context, Result, ensure};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use serde_json::Value;

pub struct Es(Elasticsearch);

impl Es {
    pub fn new(url: &str) -> Result<Self> {
        let url = url::Url::parse(url).with_context(|| format!("'{url}' is not a URL"))?;
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .disable_proxy()
            .build()?;
        Ok(Self(Elasticsearch::new(transport)))
    }

    async fn call(&self, method: Method, path: &str) -> Result<Value> {
        let resp = self
            .0
            .send::<Vec<u8>, ()>(method, path, HeaderMap::new(), None, None, None)
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
            for kind in ["span", "service"] {
                let _ = self
                    .call(Method::Delete, &format!("/{api}/{prefix}jaeger-{kind}"))
                    .await;
            }
        }
    }
}
