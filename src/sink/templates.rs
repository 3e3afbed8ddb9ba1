//! Index templates for the span, service and dependency indices, installed at start so
//! every daily index gets the mapping Jaeger Query searches: keywords for IDs
//! and names, `nested` tags/logs/references, `startTimeMillis` as a date.
//!
//! ES 8/9 get composable `_index_template`s; ES 7 and OpenSearch the legacy
//! `_template` API, which every version of them understands.
//!
//! Our templates carry a marker in `_meta` (composable) or `mappings._meta`
//! (legacy, which has no top-level `_meta`). A same-named template without
//! it belongs to someone else — a Jaeger installation's, with its ILM
//! `lifecycle`, `rollover_alias` and `tag.*` dynamic templates — and is left
//! alone unless `elasticsearch.overwrite_templates` says otherwise.

use serde_json::{Value, json};

use super::SinkError;
use super::elasticsearch::{EsClient, ServerInfo};
use super::index::{IndexNames, Kind};

/// Above 0 so a catch-all template at the default priority does not clash
/// with ours on overlapping patterns.
const PRIORITY: u32 = 300;

/// `_meta` of the templates tailsift installs.
const MARKER_KEY: &str = "managed_by";
const MARKER: &str = "tailsift";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateApi {
    /// `PUT _template/<name>`: ES 7, OpenSearch.
    Legacy,
    /// `PUT _index_template/<name>`: ES 8 and later.
    Composable,
}

impl TemplateApi {
    pub fn for_server(info: &ServerInfo) -> Self {
        match !info.opensearch && info.major >= 8 {
            true => Self::Composable,
            false => Self::Legacy,
        }
    }

    pub fn path(self, name: &str) -> String {
        match self {
            Self::Legacy => format!("/_template/{name}"),
            Self::Composable => format!("/_index_template/{name}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct IndexSettings {
    pub shards: u32,
    pub replicas: u32,
}

/// The template body for `kind` in the form `api` expects.
pub fn template(
    api: TemplateApi,
    kind: Kind,
    names: &IndexNames,
    settings: IndexSettings,
) -> Value {
    let settings = json!({
        "index.number_of_shards": settings.shards,
        "index.number_of_replicas": settings.replicas,
        "index.requests.cache.enable": true,
    });
    let mappings = match kind {
        Kind::Span => span_mappings(),
        Kind::Service => service_mappings(),
        Kind::Dependencies => dependencies_mappings(),
    };
    let mut body = json!({"settings": settings, "mappings": mappings});
    if api == TemplateApi::Legacy {
        body["mappings"]["_meta"] = json!({ MARKER_KEY: MARKER });
    }
    if names.uses_aliases() {
        // Rollover indices created later join the read alias Query uses.
        body["aliases"] = json!({ names.read_alias(kind): {} });
    }
    let patterns = json!([names.pattern(kind)]);
    match api {
        TemplateApi::Legacy => {
            body["index_patterns"] = patterns;
            body
        }
        TemplateApi::Composable => {
            json!({
                "index_patterns": patterns,
                "priority": PRIORITY,
                "template": body,
                "_meta": { MARKER_KEY: MARKER },
            })
        }
    }
}

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 256})
}

/// A `nested` list of objects whose listed fields are keywords; other fields
/// are kept in `_source` but not indexed (`dynamic: false`).
fn nested_keywords(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> =
        fields.iter().map(|f| (f.to_string(), keyword())).collect();
    json!({"type": "nested", "dynamic": false, "properties": props})
}

fn span_mappings() -> Value {
    let key_values = || nested_keywords(&["key", "value", "type"]);
    let mut logs = nested_keywords(&[]);
    logs["properties"] = json!({"timestamp": {"type": "long"}, "fields": key_values()});
    json!({
        "properties": {
            "traceID": keyword(),
            "spanID": keyword(),
            "parentSpanID": keyword(),
            "operationName": keyword(),
            "flags": {"type": "integer"},
            "startTime": {"type": "long"},
            "startTimeMillis": {"type": "date", "format": "epoch_millis"},
            "duration": {"type": "long"},
            "references": nested_keywords(&["refType", "traceID", "spanID"]),
            "tags": key_values(),
            "logs": logs,
            "process": {"properties": {"serviceName": keyword(), "tags": key_values()}},
        }
    })
}

fn service_mappings() -> Value {
    json!({"properties": {"serviceName": keyword(), "operationName": keyword()}})
}

/// Jaeger's dependency documents: `timestamp` is what its reader filters on.
fn dependencies_mappings() -> Value {
    json!({"properties": {
        "timestamp": {"type": "date"},
        "dependencies": {"properties": {
            "parent": keyword(),
            "child": keyword(),
            "callCount": {"type": "long"},
        }},
    }})
}

/// Who owns the template a name already points to, from its `GET` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    None,
    Ours,
    Foreign,
}

impl Existing {
    fn from_reply(api: TemplateApi, name: &str, reply: Option<&Value>) -> Self {
        let Some(reply) = reply else {
            return Self::None;
        };
        let meta = match api {
            TemplateApi::Composable => reply["index_templates"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["name"] == name))
                .map(|t| &t["index_template"]["_meta"]),
            TemplateApi::Legacy => reply.get(name).map(|t| &t["mappings"]["_meta"]),
        };
        match meta {
            None => Self::None,
            Some(m) if m[MARKER_KEY] == MARKER => Self::Ours,
            Some(_) => Self::Foreign,
        }
    }
}

/// Installs both templates in the API the server speaks: creates missing
/// ones, updates ours, and leaves foreign ones alone unless `overwrite`.
pub async fn install(
    client: &EsClient,
    names: &IndexNames,
    settings: IndexSettings,
    overwrite: bool,
) -> Result<TemplateApi, SinkError> {
    let info = client.server_info().await?;
    let api = TemplateApi::for_server(&info);
    for kind in Kind::ALL {
        let name = names.template(kind);
        let path = api.path(&name);
        let existing = Existing::from_reply(api, &name, client.get_optional(&path).await?.as_ref());
        if existing == Existing::Foreign && !overwrite {
            tracing::warn!(template = %name, "an index template of that name exists and was not created by tailsift; left as it is (elasticsearch.overwrite_templates: true replaces it)");
            continue;
        }
        client
            .put_json(&path, &template(api, kind, names, settings))
            .await?;
    }
    tracing::info!(version = %info.version, opensearch = info.opensearch, ?api, "index templates installed");
    Ok(api)
}

/// Alias mode: creates the first rollover index behind each write alias
/// unless the alias exists, as Jaeger's `es-rollover init` does; writing to
/// a missing alias would otherwise create a plain index of that name.
/// Returns the indices it created.
///
/// The write alias carries no `is_write_index` flag, as in Jaeger's
/// rollover without ILM: `_rollover` then moves it to the new index, and
/// exactly one index holds it. With the flag the alias stays on every old
/// index, which Jaeger's rollover, lookback and index cleaner all take for
/// write indices.
pub async fn ensure_write_aliases(
    client: &EsClient,
    names: &IndexNames,
) -> Result<Vec<String>, SinkError> {
    let mut created = Vec::new();
    for kind in Kind::ALL {
        let alias = names.write_alias(kind);
        if client.exists(&format!("/_alias/{alias}")).await? {
            continue;
        }
        let first = names.initial_rollover_index(kind);
        if client.exists(&format!("/{first}")).await? {
            // Guessing which index the alias belonged to could send writes
            // to an old one.
            return Err(SinkError::Config(format!(
                "{first} exists but the write alias {alias} does not: add {alias} to the newest \
                 {}-NNNNNN index (POST _aliases) instead of creating one",
                kind.base()
            )));
        }
        let body = json!({"aliases": { alias.as_str(): {}, names.read_alias(kind): {} }});
        match client.put_json(&format!("/{first}"), &body).await {
            Ok(()) => {
                tracing::info!(%alias, index = %first, "created the initial rollover index");
                created.push(first);
            }
            // Another instance starting at the same time won the race.
            Err(SinkError::Status {
                status: 400,
                ref body,
                ..
            }) if body.contains("resource_already_exists_exception")
                && client.exists(&format!("/_alias/{alias}")).await? => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: u32, opensearch: bool) -> ServerInfo {
        ServerInfo {
            version: format!("{major}.0.0"),
            major,
            opensearch,
        }
    }

    #[test]
    fn api_follows_the_server() {
        assert_eq!(
            TemplateApi::for_server(&info(7, false)),
            TemplateApi::Legacy
        );
        assert_eq!(
            TemplateApi::for_server(&info(8, false)),
            TemplateApi::Composable
        );
        assert_eq!(
            TemplateApi::for_server(&info(9, false)),
            TemplateApi::Composable
        );
        assert_eq!(TemplateApi::for_server(&info(2, true)), TemplateApi::Legacy);
    }

    #[test]
    fn span_template_shapes() {
        let names = IndexNames::new("p-", false);
        let settings = IndexSettings {
            shards: 3,
            replicas: 1,
        };
        let legacy = template(TemplateApi::Legacy, Kind::Span, &names, settings);
        assert_eq!(legacy["index_patterns"], json!(["p-jaeger-span-*"]));
        assert_eq!(legacy["settings"]["index.number_of_shards"], 3);
        let props = &legacy["mappings"]["properties"];
        assert_eq!(props["tags"]["type"], "nested");
        assert_eq!(props["tags"]["dynamic"], false);
        assert_eq!(props["tags"]["properties"]["value"], keyword());
        assert_eq!(props["logs"]["properties"]["fields"]["type"], "nested");
        assert_eq!(props["logs"]["properties"]["timestamp"]["type"], "long");
        assert_eq!(props["process"]["properties"]["tags"]["type"], "nested");
        assert_eq!(props["startTimeMillis"]["format"], "epoch_millis");
        assert!(legacy.get("aliases").is_none());

        let composable = template(TemplateApi::Composable, Kind::Span, &names, settings);
        assert_eq!(composable["priority"], PRIORITY);
        assert_eq!(
            composable["template"]["mappings"]["properties"],
            legacy["mappings"]["properties"]
        );
    }

    #[test]
    fn templates_carry_the_marker_and_foreign_ones_are_told_apart() {
        let names = IndexNames::new("p-", false);
        let settings = IndexSettings {
            shards: 1,
            replicas: 1,
        };
        let composable = template(TemplateApi::Composable, Kind::Span, &names, settings);
        let reply =
            json!({"index_templates": [{"name": "p-jaeger-span", "index_template": composable}]});
        let ours = Existing::from_reply(TemplateApi::Composable, "p-jaeger-span", Some(&reply));
        assert_eq!(ours, Existing::Ours);
        // Jaeger's own template: no marker (or another one).
        let jaeger = json!({"index_templates": [{"name": "p-jaeger-span", "index_template":
            {"index_patterns": ["p-jaeger-span-*"], "template": {"settings": {"index.lifecycle.name": "jaeger"}}}}]});
        let foreign = Existing::from_reply(TemplateApi::Composable, "p-jaeger-span", Some(&jaeger));
        assert_eq!(foreign, Existing::Foreign);
        assert_eq!(
            Existing::from_reply(TemplateApi::Composable, "p-jaeger-span", None),
            Existing::None
        );

        let legacy = template(TemplateApi::Legacy, Kind::Span, &names, settings);
        let reply = json!({ "p-jaeger-span": legacy });
        let ours = Existing::from_reply(TemplateApi::Legacy, "p-jaeger-span", Some(&reply));
        assert_eq!(ours, Existing::Ours);
        let reply = json!({"p-jaeger-span": {"mappings": {"dynamic_templates": []}}});
        let foreign = Existing::from_reply(TemplateApi::Legacy, "p-jaeger-span", Some(&reply));
        assert_eq!(foreign, Existing::Foreign);
    }

    #[test]
    fn alias_mode_adds_the_read_alias() {
        let names = IndexNames::new("", true);
        let settings = IndexSettings {
            shards: 1,
            replicas: 0,
        };
        let t = template(TemplateApi::Composable, Kind::Service, &names, settings);
        assert_eq!(t["template"]["aliases"], json!({"jaeger-service-read": {}}));
        assert_eq!(
            t["template"]["mappings"]["properties"]["serviceName"],
            keyword()
        );
    }
}
