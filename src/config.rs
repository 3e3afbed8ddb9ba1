//! The configuration file (YAML) and its `TAILSIFT_…` environment overrides.
//!
//! Every key has a default, so a file only names what it changes. Keys are
//! documented in `config/tailsift.yaml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::sink::index::IndexNames;
use crate::span_time::TimeLimits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration from {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration value: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub sampling: SamplingConfig,
    pub elasticsearch: ElasticsearchConfig,
    pub memory: MemoryConfig,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
    pub shutdown: ShutdownConfig,
    /// Spans dropped before buffering (the collector's `filter` processor).
    pub filter: FilterConfig,
    /// RED metrics from every span (`span_metrics`).
    pub span_metrics: crate::span_metrics::SpanMetricsConfig,
    /// Service dependency links from every trace (`dependencies`).
    pub dependencies: crate::dependencies::DependenciesConfig,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub spans: Option<SpanFilterConfig>,
}

/// The `filter` processor's `traces` block: a span matching any `span`
/// condition is dropped. `spanevent` is parsed so that its use is reported
/// (tailsift writes spans as they came and cannot remove single events).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpanFilterConfig {
    pub error_mode: crate::policy::ottl::ErrorMode,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

/// How Kafka message payloads are encoded.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSetting {
    #[default]
    OtlpProto,
    OtlpJson,
    JaegerProto,
    JaegerJson,
    /// Detect per message from the content-type header or the bytes.
    Auto,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub encoding: EncodingSetting,
    /// Unset: `<topic>-dlq`; `none`: no dead-letter topic (see
    /// [`KafkaConfig::dead_letter_topic`]).
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties, passed through to consumer and producers.
    pub properties: BTreeMap<String, String>,
    /// Messages larger than this are rejected as bad input.
    pub max_message_bytes: ByteSize,
    /// Messages with more spans are rejected as bad input: the scan of one
    /// message is held in memory at once, outside the trace budget.
    pub max_spans_per_message: usize,
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Input not keyed by trace ID: re-key it (see [`Repartition`]); unset:
    /// `topic` is keyed by trace ID.
    pub repartition: Option<Repartition>,
    /// Static group membership (`group.instance.id`): a restarted member
    /// with the same ID takes its partitions back at once, without a
    /// rebalance. Unset: `<host name>-<metrics port>`, stable across
    /// restarts on one host and distinct between instances sharing it.
    /// Set it from the pod name on Kubernetes; `""` turns it off.
    pub group_instance_id: Option<String>,
    /// `classic` (any broker) or `consumer` (Kafka 4's KIP-848 protocol).
    pub group_protocol: GroupProtocol,
    /// How long the group waits for a member that stopped heartbeating
    /// (classic protocol; with `consumer` the broker's
    /// `group.consumer.session.timeout.ms` applies).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

/// `kafka.repartition`: how input not keyed by trace ID is re-keyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repartition {
    /// `auto`: `topic` is read as usual, and each message the keying check
    /// finds not keyed by its trace ID (see `keying`) is split by trace and
    /// produced back to `topic`, one message per trace keyed by its ID,
    /// instead of being sampled from its part.
    Auto,
    /// `{input_topic: …}`: every message of `input_topic` is re-keyed into
    /// `topic`, which the sampler reads.
    Topic(RepartitionConfig),
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepartitionConfig {
    /// The unkeyed topic producers write to; `topic` becomes the internal,
    /// trace-keyed topic the sampler reads.
    pub input_topic: String,
}

impl<'de> Deserialize<'de> for Repartition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Repartition;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto` or `{input_topic: <topic>}`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Repartition, E> {
                match v {
                    "auto" => Ok(Repartition::Auto),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Repartition, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                RepartitionConfig::deserialize(d).map(Repartition::Topic)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `kafka.max_spans_per_message` unless set: a message's scan is ~120 bytes
/// per span, 8 MiB at this many.
pub const DEFAULT_MAX_SPANS_PER_MESSAGE: usize = 65_536;

/// The `kafka.dead_letter_topic` value that switches dead letters off.
pub const NO_DEAD_LETTER_TOPIC: &str = "none";

impl KafkaConfig {
    /// The explicit repartition mode's input topic.
    pub fn repartition_input(&self) -> Option<&str> {
        match &self.repartition {
            Some(Repartition::Topic(r)) => Some(&r.input_topic),
            _ => None,
        }
    }

    /// `repartition: auto`: misplaced messages are re-keyed into `topic`.
    pub fn rekeys_unkeyed(&self) -> bool {
        self.repartition == Some(Repartition::Auto)
    }

    /// Where bad input and rejected documents go: the set topic, by default
    /// `<topic>-dlq`; `None` after the explicit opt-out (`none`), when they
    /// are only counted and then lost.
    pub fn dead_letter_topic(&self) -> Option<String> {
        match self.dead_letter_topic.as_deref().map(str::trim) {
            None => Some(format!("{}-dlq", self.topic)),
            Some(t) if t.eq_ignore_ascii_case(NO_DEAD_LETTER_TOPIC) || t.is_empty() => None,
            Some(t) => Some(t.to_string()),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "jaeger-spans".into(),
            group_id: "tailsift".into(),
            encoding: EncodingSetting::default(),
            dead_letter_topic: None,
            properties: BTreeMap::new(),
            max_message_bytes: ByteSize::mib(16),
            max_spans_per_message: DEFAULT_MAX_SPANS_PER_MESSAGE,
            commit_interval: Duration::from_secs(1),
            repartition: None,
            group_instance_id: None,
            group_protocol: GroupProtocol::default(),
            session_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    #[serde(with = "humantime_serde")]
    pub decision_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub root_idle: Duration,
    pub max_spans_per_trace: u32,
    pub max_bytes_per_trace: ByteSize,
    /// Spans starting earlier than this before their message's Kafka
    /// timestamp (or now) get corrected times (see `span_time`).
    #[serde(with = "humantime_serde")]
    pub max_span_age: Duration,
    /// Spans starting (or ending) later than now plus this get corrected
    /// times.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    pub decision_cache: DecisionCacheConfig,
    pub decision_log: DecisionLogConfig,
    /// Write every trace; tag spans of traces the policies would drop.
    pub dry_run: bool,
    /// OpenTelemetry `tail_sampling` policies, verbatim; parsed by `policy`.
    pub policies: Vec<serde_json::Value>,
    /// The first sampling policy in order decides (the collector's option).
    pub sample_on_first_match: bool,
    /// The rest of the collector's `tail_sampling` options, accepted as
    /// pasted; `crate::collector` maps each onto its tailsift equivalent.
    pub num_traces: Option<u64>,
    pub expected_new_traces_per_sec: Option<u64>,
    #[serde(with = "humantime_serde::option")]
    pub decision_wait_after_root_received: Option<Duration>,
    pub drop_pending_traces_on_shutdown: Option<bool>,
    pub maximum_trace_size_bytes: Option<u64>,
    pub block_on_overflow: Option<bool>,
    pub num_shards: Option<u64>,
    pub sampling_strategy: Option<String>,
    /// What the collector options above became, for `check-config`.
    #[serde(skip)]
    pub collector_mapping: Vec<String>,
}

impl SamplingConfig {
    pub fn time_limits(&self) -> TimeLimits {
        TimeLimits {
            max_span_age: self.max_span_age,
            max_clock_skew: self.max_clock_skew,
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(10),
            root_idle: Duration::from_secs(2),
            max_spans_per_trace: 10_000,
            max_bytes_per_trace: ByteSize::mib(8),
            max_span_age: TimeLimits::default().max_span_age,
            max_clock_skew: TimeLimits::default().max_clock_skew,
            decision_cache: DecisionCacheConfig::default(),
            decision_log: DecisionLogConfig::default(),
            dry_run: false,
            policies: Vec::new(),
            sample_on_first_match: false,
            num_traces: None,
            expected_new_traces_per_sec: None,
            decision_wait_after_root_received: None,
            drop_pending_traces_on_shutdown: None,
            maximum_trace_size_bytes: None,
            block_on_overflow: None,
            num_shards: None,
            sampling_strategy: None,
            collector_mapping: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Kept traces remembered (oldest forgotten first).
    pub kept: usize,
    /// Dropped traces remembered (oldest forgotten first).
    pub dropped: usize,
    /// How far back a newly assigned partition reads the decision log.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The collector's names for `kept` and `dropped`.
    pub sampled_cache_size: Option<usize>,
    pub non_sampled_cache_size: Option<usize>,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self {
            kept: 300_000,
            dropped: 1_000_000,
            horizon: Duration::from_secs(600),
            sampled_cache_size: None,
            non_sampled_cache_size: None,
        }
    }
}

/// Decisions recorded on Kafka, so late spans follow them in whichever
/// process owns the partition next (see `decision_log`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    pub enabled: bool,
    /// Unset: `<kafka.topic>-decisions`.
    pub topic: Option<String>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchConfig {
    pub urls: Vec<String>,
    pub index_prefix: String,
    pub create_templates: bool,
    /// Replace same-named templates tailsift did not create.
    pub overwrite_templates: bool,
    /// Write to `<prefix>jaeger-span-write` / `jaeger-service-write` aliases.
    pub use_aliases: bool,
    /// Write 64-bit trace IDs in their 16-hex form (what Jaeger v1 expects).
    pub short_trace_ids: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    /// PEM file of a CA to trust for https URLs.
    pub ca_file: Option<String>,
    pub gzip: bool,
    pub shards: u32,
    pub replicas: u32,
    pub bulk: BulkConfig,
    /// Bytes of kept spans waiting for Elasticsearch before Kafka is paused;
    /// unset: a share of `memory.limit` (see [`MemoryPlan`]).
    pub queue_bytes: Option<ByteSize>,
    /// Attributes deleted or hashed before documents are written.
    pub redaction: RedactionConfig,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Mixed into hashes, so hashed values cannot be looked up in a table
    /// of hashes of likely values.
    pub salt: String,
    pub rules: Vec<RedactionRule>,
    /// Rules over attribute values: what they find inside a string value is
    /// replaced or hashed, the rest of the value stays.
    pub values: Vec<ValueRule>,
}

/// Finds secrets inside string values: a built-in detector or a regex.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Names the rule in `tailsift_redacted_values_total{rule}` and in the
    /// default replacement; default: the detector's name, else "pattern".
    pub name: Option<String>,
    pub detect: Option<ValueDetector>,
    pub pattern: Option<String>,
    /// Only matches whose digits pass the Luhn check (card numbers).
    #[serde(default)]
    pub luhn: bool,
    pub action: ValueAction,
    /// Text for `replace`; default `[redacted:<name>]`.
    pub replacement: Option<String>,
}

impl ValueRule {
    pub fn name(&self) -> String {
        match (&self.name, self.detect) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => d.name().to_string(),
            (None, None) => "pattern".into(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.detect, &self.pattern) {
            (Some(_), Some(_)) => Err("set `detect` or `pattern`, not both".into()),
            (None, None) => Err("needs `detect` or `pattern`".into()),
            (None, Some(p)) => regex::Regex::new(p)
                .map(|_| ())
                .map_err(|e| format!("pattern: {e}")),
            (Some(_), None) => Ok(()),
        }
    }
}

/// Built-in detectors (their patterns and checks are in `sink::scrub`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueDetector {
    /// `local@domain.tld`.
    Email,
    /// 13–19 digits, optionally grouped by spaces or dashes, passing Luhn.
    CardNumber,
    /// US social security numbers `AAA-GG-SSSS`, without the never-issued
    /// areas 000, 666, 9xx, group 00 or serial 0000.
    Ssn,
    /// `Bearer <token>` with a token of 8 characters or more
    /// (Authorization header values).
    BearerToken,
}

impl ValueDetector {
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::CardNumber => "card_number",
            Self::Ssn => "ssn",
            Self::BearerToken => "bearer_token",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueAction {
    /// Replace the match with `replacement`.
    Replace,
    /// Replace the match with `sha256:<hex>` of salt + match, so equal
    /// values still group together.
    Hash,
}

/// Matches attribute keys (span and resource attributes, event fields,
/// Jaeger tags and log fields) exactly or by regex.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    #[serde(default)]
    pub keys: Vec<String>,
    pub key_pattern: Option<String>,
    pub action: RedactionAction,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactionAction {
    /// Remove the attribute.
    Delete,
    /// Replace the value with `sha256:<hex>` of salt + value.
    Hash,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:9200".into()],
            index_prefix: String::new(),
            create_templates: true,
            overwrite_templates: false,
            use_aliases: false,
            short_trace_ids: false,
            username: None,
            password: None,
            api_key: None,
            ca_file: None,
            gzip: false,
            shards: 1,
            // One copy besides the primary: losing a node must not lose
            // acknowledged (committed) spans. A single node needs 0.
            replicas: 1,
            bulk: BulkConfig::default(),
            queue_bytes: None,
            redaction: RedactionConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    pub max_bytes: ByteSize,
    pub max_docs: usize,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(5),
            max_docs: 5_000,
            linger: Duration::from_millis(200),
            concurrency: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// What the whole process may use (RSS); split by [`MemoryPlan`].
    pub limit: ByteSize,
}

/// How `memory.limit` is shared out. The limit is the budget of the whole
/// process, so that it can be the container's limit minus a margin; the
/// parts that grow with load get fixed shares of it:
///
/// - buffered traces: an eighth, as the windows count them (the messages
///   their spans keep alive plus bookkeeping). Hash maps, vectors and the
///   allocator's partly used pages make their resident memory a multiple
///   of that count (see the README's fault injection section). Beyond it
///   the oldest traces of the windows over their share are decided early
///   (reason `memory`);
/// - the sink queue (`elasticsearch.queue_bytes` unless set): a sixteenth,
///   at most 64 MiB. Beyond it partitions are paused;
/// - dead letters in flight to Kafka, and in repartition mode the pieces
///   in flight: a sixteenth (each). Beyond it the producing partition
///   waits, so a refusing broker cannot hold bad input without bound;
/// - librdkafka's prefetch: a sixteenth, divided over the topic's
///   partitions, as an instance may be assigned all of them and librdkafka
///   applies its bounds to each partition's queue; half of a partition's
///   share is its `queued.max.messages.kbytes` unless set in
///   `kafka.properties`, the rest one fetch's overshoot and librdkafka's
///   memory per message (see `source::plan_prefetch`). A
///   catching-up consumer needs room here: on the benchmark topic (6
///   partitions), 4 MiB per partition consumed at 1.07 M spans/s, 16 MiB
///   at 1.62 M;
/// - the decision cache: at most a sixteenth. The configured counts are
///   scaled down to fit it (and the scaling logged) so that a small limit
///   cannot be overrun by remembered decisions; at the default 1 GiB the
///   default counts fit (about 55 MiB). Its tables are allocated whole at
///   the start and touched at random, so it costs its share early;
/// - the rest, over half, covers what does not scale with the load or is
///   not counted: runtime, librdkafka, partition channels,
///   the binary's pages (~40 MiB for a debug build), the windows' maps and
///   vectors and allocator slack (above), bulk request bodies in flight
///   (twice each).
///
/// Checked by the fault suite's burst (debug build, 6 partitions, a fresh
/// instance catching up a backlog with the windows and the sink queue
/// full, a 128 MiB limit; figures in the README's fault table). Freed
/// pages are returned at once above 90 % of the limit (see `memory.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub traces: u64,
    pub sink_queue: u64,
    /// Payload bytes of dead letters (and repartitioned pieces) on their way
    /// to Kafka; beyond it the producing partition waits.
    pub dead_letters: u64,
    /// All partitions together; see [`MemoryPlan::prefetch_per_partition`].
    pub prefetch: u64,
    /// The most the decision cache may take.
    pub decision_cache: u64,
}

const MIB: u64 = 1024 * 1024;

impl MemoryPlan {
    pub fn new(cfg: &Config) -> Self {
        let limit = cfg.memory.limit.as_u64();
        let sink_queue = cfg
            .elasticsearch
            .queue_bytes
            .map_or((limit / 16).min(64 * MIB), |q| q.as_u64());
        Self {
            traces: limit / 8,
            sink_queue,
            dead_letters: limit / 16,
            prefetch: limit / 16,
            decision_cache: limit / 16,
        }
    }

    /// One partition's prefetch when the topic has `partitions`: the set
    /// `kafka.properties` value, else an equal part of the plan's.
    pub fn prefetch_per_partition(&self, cfg: &KafkaConfig, partitions: usize) -> u64 {
        cfg.properties
            .get(PREFETCH_PROPERTY)
            .and_then(|k| k.parse::<u64>().ok())
            .map_or_else(
                || (self.prefetch / partitions.max(1) as u64).clamp(MIB / 4, 16 * MIB),
                |kib| kib * 1024,
            )
    }
}

/// librdkafka's prefetch bound (per partition with split partition queues).
pub const PREFETCH_PROPERTY: &str = "queued.max.messages.kbytes";

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            limit: ByteSize::gib(1),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PendingOnShutdown {
    /// Decide buffered traces with the policies and flush the kept ones.
    /// Their messages are not committed: they may be incomplete, so the
    /// next owner replays and decides them whole (overwriting, same `_id`).
    #[default]
    Decide,
    /// Forget them; they are replayed from Kafka by the next owner.
    Drop,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    pub pending: PendingOnShutdown,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            pending: PendingOnShutdown::Decide,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RedactionRule {
    fn validate(&self) -> Result<(), String> {
        if self.keys.is_empty() && self.key_pattern.is_none() {
            return Err("needs `keys` or `key_pattern`".into());
        }
        match &self.key_pattern {
            Some(p) => regex::Regex::new(p)
                .map(|_| ())
                .map_err(|e| format!("key_pattern: {e}")),
            None => Ok(()),
        }
    }
}

impl Config {
    /// Loads a YAML file, then applies `TAILSIFT_SECTION__KEY=value`
    /// environment overrides (e.g. `TAILSIFT_KAFKA__BROKERS`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_from(Some(path))
    }

    /// The defaults with the environment overrides, for the index tools run
    /// without a file (credentials then still come from
    /// `TAILSIFT_ELASTICSEARCH__USERNAME` and the like).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load_from(None)
    }

    fn load_from(path: Option<&Path>) -> Result<Self, ConfigError> {
        // Only `SECTION__KEY` variables are overrides: other TAILSIFT_*
        // variables (scripts' settings) must not break loading.
        let overrides: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("TAILSIFT_") && k.contains("__"))
            .collect();
        let env = config::Environment::with_prefix("TAILSIFT")
            .source(Some(overrides))
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("elasticsearch.urls")
            .try_parsing(true);
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Yaml));
        }
        let cfg: Config = builder
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|source| ConfigError::Load {
                path: path.map_or("the environment".into(), |p| p.display().to_string()),
                source,
            })?;
        let mut cfg = cfg;
        crate::collector::apply_options(&mut cfg);
        cfg.validate()?;
        cfg.apply_memory_plan();
        Ok(cfg)
    }

    /// Writes the sink queue's part of the [`MemoryPlan`] into its section
    /// unless set there; the prefetch needs the topic's partition count and
    /// is applied by the source (`source::plan_prefetch`).
    pub fn apply_memory_plan(&mut self) {
        let plan = MemoryPlan::new(self);
        self.elasticsearch.queue_bytes = Some(ByteSize::b(plan.sink_queue));
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers must not be empty");
        }
        if self.kafka.topic.trim().is_empty() {
            return invalid("kafka.topic must not be empty");
        }
        if self.kafka.repartition_input() == Some(self.kafka.topic.as_str()) {
            return invalid("kafka.repartition.input_topic must differ from kafka.topic");
        }
        if self.kafka.dead_letter_topic() == Some(self.kafka.topic.clone()) {
            return invalid("kafka.dead_letter_topic must differ from kafka.topic");
        }
        let names = IndexNames::new(&self.index_prefix(), self.elasticsearch.use_aliases);
        names
            .validate()
            .map_err(|m| ConfigError::Invalid(format!("elasticsearch.index_prefix: {m}")))?;
        if self.sampling.decision_wait.is_zero() {
            return invalid("sampling.decision_wait must be greater than 0");
        }
        if self.kafka.max_spans_per_message == 0 {
            return invalid("kafka.max_spans_per_message must be at least 1");
        }
        if self.sampling.max_span_age.is_zero() {
            return invalid("sampling.max_span_age must be greater than 0");
        }
        if self.sampling.max_spans_per_trace == 0 {
            return invalid("sampling.max_spans_per_trace must be at least 1");
        }
        if self.elasticsearch.urls.is_empty() {
            return invalid("elasticsearch.urls must list at least one URL");
        }
        for u in &self.elasticsearch.urls {
            if url::Url::parse(u).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "elasticsearch.urls: '{u}' is not a URL"
                )));
            }
        }
        for (i, rule) in self.elasticsearch.redaction.rules.iter().enumerate() {
            rule.validate().map_err(|m| {
                ConfigError::Invalid(format!("elasticsearch.redaction.rules[{i}]: {m}"))
            })?;
        }
        for (i, rule) in self.elasticsearch.redaction.values.iter().enumerate() {
            rule.validate().map_err(|m| {
                ConfigError::Invalid(format!("elasticsearch.redaction.values[{i}]: {m}"))
            })?;
        }
        if self.memory.limit.as_u64() < 32 * MIB {
            return invalid("memory.limit must be at least 32MiB");
        }
        if self.elasticsearch.bulk.concurrency == 0 {
            return invalid("elasticsearch.bulk.concurrency must be at least 1");
        }
        self.span_metrics.validate().map_err(ConfigError::Invalid)?;
        self.dependencies.validate().map_err(ConfigError::Invalid)?;
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "metrics.listen: '{}' is not a socket address",
                self.metrics.listen
            )));
        }
        Ok(())
    }

    /// The index prefix with the `-` separator Jaeger appends.
    pub fn index_prefix(&self) -> String {
        let p = &self.elasticsearch.index_prefix;
        if p.is_empty() || p.ends_with('-') {
            p.clone()
        } else {
            format!("{p}-")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn write(yaml: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(yaml)
    }

    /// A throwaway file under the system temp dir, removed on drop.
    pub(crate) mod tempfile_path {
        use super::Write;
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(content: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "tailsift-cfg-{}-{}.yaml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&p).expect("create temp config");
                f.write_all(content.as_bytes()).expect("write temp config");
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn shipped_config_file_loads() {
        let cfg = Config::load(Path::new("config/tailsift.yaml")).expect("config/tailsift.yaml");
        assert_eq!(cfg.kafka.topic, "jaeger-spans");
        assert!(!cfg.sampling.policies.is_empty());
    }

    #[test]
    fn defaults_and_units_parse() {
        let f = write(
            "kafka:\n  properties:\n    security.protocol: plaintext\n\
             sampling:\n  decision_wait: 3s\n  root_idle: 500ms\nmemory:\n  limit: 256MiB\n",
        );
        let cfg = Config::load(&f.0).unwrap();
        assert_eq!(cfg.sampling.decision_wait, Duration::from_secs(3));
        assert_eq!(cfg.sampling.root_idle, Duration::from_millis(500));
        assert_eq!(cfg.memory.limit, ByteSize::mib(256));
        assert_eq!(
            cfg.kafka
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("plaintext")
        );
        assert_eq!(cfg.kafka.group_id, "tailsift");
    }

    #[test]
    fn repartition_is_auto_or_an_input_topic() {
        let auto = Config::load(&write("kafka:\n  repartition: auto\n").0).unwrap();
        assert!(auto.kafka.rekeys_unkeyed());
        assert_eq!(auto.kafka.repartition_input(), None);
        let topic = write("kafka:\n  repartition:\n    input_topic: otlp-spans\n");
        let topic = Config::load(&topic.0).unwrap();
        assert_eq!(topic.kafka.repartition_input(), Some("otlp-spans"));
        assert!(!topic.kafka.rekeys_unkeyed());
        assert_eq!(Config::default().kafka.repartition, None);
        for (bad, named) in [
            ("  repartition: yes\n", "`auto` or `{input_topic"),
            ("  repartition:\n    topic: x\n", "expected `input_topic`"),
        ] {
            let err = Config::load(&write(&format!("kafka:\n{bad}")).0).unwrap_err();
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("kafka:\n  brokerz: x\n");
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let f = write("sampling:\n  decision_wait: soon\n");
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("decision_wait"), "{err}");
    }

    #[test]
    fn bad_redaction_rule_is_named() {
        let f = write(
            "elasticsearch:\n  redaction:\n    rules:\n      - key_pattern: '(unclosed'\n        action: hash\n",
        );
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("redaction.rules[0]"), "{err}");
    }

    #[test]
    fn memory_limit_is_shared_out_unless_parts_are_set() {
        let f = write("memory:\n  limit: 128MiB\n");
        let cfg = Config::load(&f.0).unwrap();
        let plan = MemoryPlan::new(&cfg);
        assert_eq!(plan.traces, 128 * MIB / 8);
        assert_eq!(plan.sink_queue, 128 * MIB / 16);
        assert_eq!(plan.prefetch, 8 * MIB);
        assert_eq!(plan.dead_letters, 8 * MIB);
        assert_eq!(
            cfg.elasticsearch.queue_bytes,
            Some(ByteSize::b(128 * MIB / 16))
        );
        // Prefetch: the plan's share over the topic's partitions, bounded.
        assert_eq!(plan.prefetch_per_partition(&cfg.kafka, 8), MIB);
        assert_eq!(plan.prefetch_per_partition(&cfg.kafka, 512), MIB / 4);
        let d = Config::default();
        let plan = MemoryPlan::new(&d);
        assert_eq!(plan.prefetch_per_partition(&d.kafka, 1), 16 * MIB);
        assert_eq!(plan.prefetch_per_partition(&d.kafka, 16), 4 * MIB);

        // The defaults of a 1 GiB limit, and explicit settings win.
        let f = write(
            "kafka:\n  properties:\n    queued.max.messages.kbytes: \"4096\"\n\
             elasticsearch:\n  queue_bytes: 100MiB\n",
        );
        let cfg = Config::load(&f.0).unwrap();
        let plan = MemoryPlan::new(&cfg);
        assert_eq!(plan.traces, 1024 * MIB / 8);
        assert_eq!(plan.sink_queue, 100 * MIB);
        assert_eq!(plan.prefetch_per_partition(&cfg.kafka, 100), 4 * MIB);
        let mut d = Config::default();
        d.apply_memory_plan();
        assert_eq!(MemoryPlan::new(&d).sink_queue, 64 * MIB);

        let f = write("memory:\n  limit: 16MiB\n");
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("memory.limit"), "{err}");
    }

    #[test]
    fn dead_letters_go_to_a_topic_unless_switched_off() {
        let mut k = KafkaConfig::default();
        assert_eq!(k.dead_letter_topic().as_deref(), Some("jaeger-spans-dlq"));
        k.dead_letter_topic = Some("bad-spans".into());
        assert_eq!(k.dead_letter_topic().as_deref(), Some("bad-spans"));
        k.dead_letter_topic = Some("none".into());
        assert_eq!(k.dead_letter_topic(), None);
        let f = write("kafka:\n  dead_letter_topic: jaeger-spans\n");
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("kafka.dead_letter_topic"), "{err}");
    }

    #[test]
    fn bad_index_prefixes_are_named() {
        for bad in [
            "Prod", "a b", "a*", "-x", "_x", "+x", "a#b", "a,b", "a\\\\b", ".",
        ] {
            let f = write(&format!("elasticsearch:\n  index_prefix: '{bad}'\n"));
            let err = Config::load(&f.0).unwrap_err().to_string();
            assert!(err.contains("elasticsearch.index_prefix"), "{bad}: {err}");
        }
        let long = "p".repeat(240);
        let f = write(&format!("elasticsearch:\n  index_prefix: {long}\n"));
        let err = Config::load(&f.0).unwrap_err().to_string();
        assert!(err.contains("255"), "{err}");
        let f = write("elasticsearch:\n  index_prefix: prod.eu-1\n");
        assert!(Config::load(&f.0).is_ok());
    }

    #[test]
    fn index_prefix_gets_a_dash() {
        let mut cfg = Config::default();
        assert_eq!(cfg.index_prefix(), "");
        cfg.elasticsearch.index_prefix = "prod".into();
        assert_eq!(cfg.index_prefix(), "prod-");
    }
}
