//! What an Elasticsearch bulk reply means for the documents sent: one pure
//! function, [`classify`], from a reply (or its absence) to acknowledge,
//! retry or dead-letter, for the whole request and for each item.
//!
//! Only errors about a document itself are permanent: it cannot be parsed
//! or mapped, or a field value is illegal. Sending it again gives the same
//! answer, so it goes to the dead-letter topic and stops blocking the rest.
//! Everything else is about the cluster — credentials and privileges,
//! write blocks, a missing index or alias, shard limits, index creation
//! races, overload, server errors, no reply at all — and is retried with
//! backoff until an operator fixes it; meanwhile nothing is acknowledged
//! and the partitions pause. An error type this module does not know is
//! retried too: blocking is visible and recoverable, a dead letter written
//! for a cluster problem is neither.

use serde::Deserialize;

/// Why documents are retried; the `reason` label of
/// `tailsift_es_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No reply: connection refused or reset, timeout.
    Connection,
    /// 429 or a rejected execution / circuit breaker: the cluster is busy.
    Overloaded,
    /// 5xx: a node or shard is unavailable.
    ServerError,
    /// 401: the credentials are refused.
    Unauthorized,
    /// 403 `security_exception`: the user lacks a privilege (say
    /// `create_index` for the next day's index).
    Forbidden,
    /// `cluster_block_exception`: `index.blocks.write`, read-only after a
    /// full disk, a cluster-wide block.
    WriteBlock,
    /// `index_not_found_exception`: `action.auto_create_index` forbids the
    /// index, or a deleted write alias.
    IndexMissing,
    /// An alias without a write index.
    Alias,
    /// `index_closed_exception`.
    IndexClosed,
    /// `cluster.max_shards_per_node` stops the new index from being created.
    ShardLimit,
    /// A concurrent creation of the same index lost the race.
    IndexCreation,
    /// A 2xx reply that cannot be read: what was stored is unknown.
    Unreadable,
    /// An error this module does not know.
    Unclassified,
}

impl Reason {
    /// Every reason, for the metric series created at start.
    pub const ALL: [Reason; 13] = [
        Self::Connection,
        Self::Overloaded,
        Self::ServerError,
        Self::Unauthorized,
        Self::Forbidden,
        Self::WriteBlock,
        Self::IndexMissing,
        Self::Alias,
        Self::IndexClosed,
        Self::ShardLimit,
        Self::IndexCreation,
        Self::Unreadable,
        Self::Unclassified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::WriteBlock => "write_block",
            Self::IndexMissing => "index_missing",
            Self::Alias => "alias",
            Self::IndexClosed => "index_closed",
            Self::ShardLimit => "shard_limit",
            Self::IndexCreation => "index_creation",
            Self::Unreadable => "unreadable",
            Self::Unclassified => "unclassified",
        }
    }
}

/// What to do with one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Retry(Reason),
    /// Refused for what it contains: `kind` is the Elasticsearch error type,
    /// `error` the text for the dead letter's header.
    DeadLetter {
        kind: String,
        error: String,
    },
}

/// What to do with the documents of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every item stored.
    Acknowledge,
    /// The whole request again, after a backoff.
    Retry(Reason),
    /// The body was refused for its content as a whole (too large, not
    /// parsable): send the halves apart to find the culprit.
    Split,
    /// One item per document, in request order.
    Items(Vec<Action>),
}

/// A bulk reply as far as classification needs it.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// The decision for a request of `docs` documents; `reply` is `None` when
/// no reply came.
pub fn classify(reply: Option<Reply<'_>>, docs: usize) -> Verdict {
    let Some(reply) = reply else {
        return Verdict::Retry(Reason::Connection);
    };
    if (200..300).contains(&reply.status) {
        return items(reply.body, docs);
    }
    let error = top_level_error(reply.body);
    match whole(reply.status, &error) {
        Action::Retry(reason) => Verdict::Retry(reason),
        Action::DeadLetter { .. } if docs > 1 => Verdict::Split,
        Action::DeadLetter { kind, error } => Verdict::Items(vec![Action::DeadLetter {
            kind,
            error: format!("http {}: {error}", reply.status),
        }]),
        Action::Acknowledge => Verdict::Acknowledge,
    }
}

/// A refused request: 413 and a body Elasticsearch cannot parse are about
/// the documents (with one document left, it is the culprit); any other
/// refusal is about the cluster, classified like an item.
fn whole(status: u16, error: &ItemError) -> Action {
    let unparsable = status == 400 && is_parse_error(&error.kind);
    match status == 413 || unparsable {
        true => Action::DeadLetter {
            kind: format!("http_{status}"),
            error: error.text(),
        },
        false => item(status, error),
    }
}

fn items(body: &[u8], docs: usize) -> Verdict {
    let Ok(reply) = serde_json::from_slice::<BulkItems>(body) else {
        return Verdict::Retry(Reason::Unreadable);
    };
    if !reply.errors {
        return Verdict::Acknowledge;
    }
    let Some(items) = reply.items.filter(|i| i.len() == docs) else {
        return Verdict::Retry(Reason::Unreadable);
    };
    Verdict::Items(
        items
            .iter()
            .map(|i| match i.result.status {
                200..=299 => Action::Acknowledge,
                s => item(s, &i.result.error.clone().unwrap_or_default()),
            })
            .collect(),
    )
}

/// One failed item (or a refused request) by error type, then status.
fn item(status: u16, e: &ItemError) -> Action {
    let why = format!("{} {}", e.reason, e.caused_by_reason()).to_ascii_lowercase();
    let reason = match e.kind.as_str() {
        "es_rejected_execution_exception" | "circuit_breaking_exception" => Reason::Overloaded,
        "security_exception" if status == 401 => Reason::Unauthorized,
        "security_exception" => Reason::Forbidden,
        "cluster_block_exception" => Reason::WriteBlock,
        "index_not_found_exception" => Reason::IndexMissing,
        "index_closed_exception" => Reason::IndexClosed,
        "resource_already_exists_exception" => Reason::IndexCreation,
        "validation_exception" if why.contains("shards") => Reason::ShardLimit,
        "illegal_argument_exception" if why.contains("alias") || why.contains("write index") => {
            Reason::Alias
        }
        kind if is_document_error(kind) => {
            return Action::DeadLetter {
                kind: kind.to_string(),
                error: e.text(),
            };
        }
        _ => by_status(status),
    };
    Action::Retry(reason)
}

fn by_status(status: u16) -> Reason {
    match status {
        429 => Reason::Overloaded,
        500.. => Reason::ServerError,
        401 => Reason::Unauthorized,
        403 => Reason::Forbidden,
        404 => Reason::IndexMissing,
        _ => Reason::Unclassified,
    }
}

/// Errors about the document: its JSON, its fields against the mapping, an
/// illegal field value (not about an alias, caught before), a conflict on
/// its `_id` (not expected: the op is `index`, which overwrites).
fn is_document_error(kind: &str) -> bool {
    matches!(
        kind,
        "mapper_parsing_exception"
            | "document_parsing_exception"
            | "strict_dynamic_mapping_exception"
            | "illegal_argument_exception"
            | "version_conflict_engine_exception"
    ) || is_parse_error(kind)
}

fn is_parse_error(kind: &str) -> bool {
    matches!(
        kind,
        "parse_exception"
            | "json_parse_exception"
            | "x_content_parse_exception"
            | "not_x_content_exception"
            | "action_request_validation_exception"
    )
}

#[derive(Deserialize)]
struct BulkItems {
    errors: bool,
    items: Option<Vec<Item>>,
}

/// One reply item, keyed by its op (we only send `index`).
#[derive(Deserialize)]
struct Item {
    #[serde(alias = "index", alias = "create", alias = "update", alias = "delete")]
    result: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    error: Option<ItemError>,
}

#[derive(Deserialize, Default, Clone, Debug)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
    caused_by: Option<Box<ItemError>>,
}

impl ItemError {
    fn caused_by_reason(&self) -> &str {
        self.caused_by.as_ref().map_or("", |c| c.reason.as_str())
    }

    fn text(&self) -> String {
        match &self.caused_by {
            Some(c) => format!("{}: {} ({}: {})", self.kind, self.reason, c.kind, c.reason),
            None => format!("{}: {}", self.kind, self.reason),
        }
    }
}

/// The `error` object of a refused request; its text when it has none.
fn top_level_error(body: &[u8]) -> ItemError {
    #[derive(Deserialize)]
    struct Refusal {
        error: ItemError,
    }
    serde_json::from_slice::<Refusal>(body).map_or_else(
        |_| ItemError {
            reason: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            ..Default::default()
        },
        |r| r.error,
    )
}

#[cfg(test)]
mod tests;
