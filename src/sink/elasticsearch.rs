//! The Elasticsearch HTTP client: connection pool, auth, TLS and gzip from
//! the configuration, and the handful of raw calls the sink makes.

use std::time::Duration;

use bytes::Bytes;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::transport::{
    MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder,
};
use elasticsearch::http::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::SinkError;
use crate::config::ElasticsearchConfig;

/// A request hanging longer than this is treated as a connection error
/// and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server says it is; picks the template API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    pub major: u32,
    pub opensearch: bool,
}

/// A bulk call that reached the server: status and raw response body.
#[derive(Debug)]
pub struct BulkReply {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct EsClient {
    client: Elasticsearch,
}

impl EsClient {
    pub fn new(cfg: &ElasticsearchConfig) -> Result<Self, SinkError> {
        let urls = cfg
            .urls
            .iter()
            .map(|u| {
                Url::parse(u)
                    .map_err(|e| SinkError::Config(format!("elasticsearch.urls: '{u}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = match urls.as_slice() {
            [] => return Err(SinkError::Config("elasticsearch.urls is empty".into())),
            [one] => TransportBuilder::new(SingleNodeConnectionPool::new(one.clone())),
            _ => TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls, None)),
        };
        builder = builder
            .request_body_compression(cfg.gzip)
            .timeout(REQUEST_TIMEOUT);
        if let Some(creds) = credentials(cfg)? {
            builder = builder.auth(creds);
        }
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| SinkError::Config(format!("elasticsearch.ca_file '{path}': {e}")))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| SinkError::Config(format!("elasticsearch.ca_file '{path}': {e}")))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| SinkError::Config(format!("elasticsearch client: {e}")))?;
        Ok(Self {
            client: Elasticsearch::new(transport),
        })
    }

    /// `GET /`, or the local node's info where the root endpoint is missing
    /// (minimal distributions answer 405 there).
    pub async fn server_info(&self) -> Result<ServerInfo, SinkError> {
        #[derive(Deserialize)]
        struct Root {
            version: RootVersion,
        }
        #[derive(Deserialize)]
        struct RootVersion {
            number: String,
            distribution: Option<String>,
        }
        #[derive(Deserialize)]
        struct Nodes {
            nodes: std::collections::HashMap<String, NodeVersion>,
        }
        #[derive(Deserialize)]
        struct NodeVersion {
            version: String,
        }

        let (version, distribution) = match self.get_json::<Root>("/").await {
            Ok(root) => (root.version.number, root.version.distribution),
            Err(SinkError::Status { .. }) => {
                let nodes: Nodes = self
                    .get_json("/_nodes/_local?filter_path=nodes.*.version")
                    .await?;
                let node = nodes.nodes.into_values().next();
                (node.map(|n| n.version).unwrap_or_default(), None)
            }
            Err(e) => return Err(e),
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        Ok(ServerInfo {
            opensearch: distribution.as_deref() == Some("opensearch"),
            version,
            major,
        })
    }

    /// Readiness: the server answers and accepts our credentials.
    pub async fn ping(&self) -> bool {
        let resp = self.send(Method::Head, "/", None).await;
        resp.is_ok_and(|(s, _)| {
            !s.is_server_error() && s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN
        })
    }

    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| SinkError::Config(e.to_string()))?);
        let (status, reply) = self.send(Method::Put, path, Some(body)).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(SinkError::status(path, status, &reply)),
        }
    }

    /// `POST path` with a JSON body; the reply as JSON.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, SinkError> {
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| SinkError::Config(e.to_string()))?);
        let (status, reply) = self.send(Method::Post, path, Some(body)).await?;
        if !status.is_success() {
            return Err(SinkError::status(path, status, &reply));
        }
        serde_json::from_slice(&reply).map_err(|e| SinkError::Response(format!("{path}: {e}")))
    }

    /// `DELETE path`; a 404 (already gone) counts as done.
    pub async fn delete(&self, path: &str) -> Result<(), SinkError> {
        let (status, reply) = self.send(Method::Delete, path, None).await?;
        match status.is_success() || status == StatusCode::NOT_FOUND {
            true => Ok(()),
            false => Err(SinkError::status(path, status, &reply)),
        }
    }

    /// `HEAD path`: 200 → true, 404 → false.
    pub async fn exists(&self, path: &str) -> Result<bool, SinkError> {
        let (status, reply) = self.send(Method::Head, path, None).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(SinkError::status(path, status, &reply)),
        }
    }

    /// `POST /_bulk` with a ready NDJSON body.
    pub async fn bulk(&self, body: Bytes) -> Result<BulkReply, elasticsearch::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        let resp = self
            .client
            .send(
                Method::Post,
                "/_bulk",
                headers,
                None::<&()>,
                Some(body),
                None,
            )
            .await?;
        let status = resp.status_code();
        Ok(BulkReply {
            status,
            body: resp.bytes().await?,
        })
    }

    /// `GET path` as JSON; `None` on 404.
    pub async fn get_optional(&self, path: &str) -> Result<Option<serde_json::Value>, SinkError> {
        let (status, body) = self.send(Method::Get, path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| SinkError::Response(format!("{path}: {e}"))),
            s => Err(SinkError::status(path, s, &body)),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, SinkError> {
        let (status, body) = self.send(Method::Get, path, None).await?;
        if !status.is_success() {
            return Err(SinkError::status(path, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| SinkError::Response(format!("{path}: {e}")))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), SinkError> {
        let resp = self
            .client
            .send(method, path, HeaderMap::new(), None::<&()>, body, None)
            .await?;
        let status = resp.status_code();
        Ok((status, resp.bytes().await?))
    }
}

fn credentials(cfg: &ElasticsearchConfig) -> Result<Option<Credentials>, SinkError> {
    match (&cfg.api_key, &cfg.username, &cfg.password) {
        (Some(_), Some(_), _) => Err(SinkError::Config(
            "elasticsearch: set either api_key or username/password, not both".into(),
        )),
        // The encoded form ("base64(id:secret)") is what Kibana hands out.
        (Some(key), None, _) => Ok(Some(Credentials::EncodedApiKey(key.clone()))),
        (None, Some(user), pass) => Ok(Some(Credentials::Basic(
            user.clone(),
            pass.clone().unwrap_or_default(),
        ))),
        (None, None, Some(_)) => Err(SinkError::Config(
            "elasticsearch.password is set without a username".into(),
        )),
        (None, None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_config() {
        let mut cfg = ElasticsearchConfig::default();
        assert!(credentials(&cfg).unwrap().is_none());
        cfg.username = Some("u".into());
        cfg.password = Some("p".into());
        assert!(
            matches!(credentials(&cfg), Ok(Some(Credentials::Basic(u, p))) if u == "u" && p == "p")
        );
        cfg.api_key = Some("k".into());
        assert!(credentials(&cfg).is_err());
        cfg.username = None;
        cfg.password = None;
        assert!(matches!(credentials(&cfg), Ok(Some(Credentials::EncodedApiKey(k))) if k == "k"));
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let cfg = ElasticsearchConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = EsClient::new(&cfg).err().expect("error");
        assert!(err.to_string().contains("ca_file"), "{err}");
    }
}
