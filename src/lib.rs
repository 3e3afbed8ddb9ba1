//! tailsift: tail sampling from Kafka into Jaeger's Elasticsearch indices.
//!
//! Data flow, bottom to top: `model`, `span_time` and `offsets` are shared
//! by all;
//! `decode` scans Kafka payloads, `policy` decides whole traces, `sink`
//! writes Jaeger documents to Elasticsearch, `window` buffers spans per trace
//! until a decision, `decision_log` records decisions on Kafka for the
//! partition's next owner, `source` drives it all from a Kafka consumer group,
//! `plan` resolves the validated `config` into what each stage is built
//! from, and `app` builds and wires the stages behind the CLI; `index_catalog` lists the
//! indices under a prefix, `retention` prunes old ones and `rollover` rolls
//! the alias mode's indices over; `memory` holds the allocator to
//! `memory.limit`; `collector` reads OpenTelemetry Collector
//! configurations; `keying` checks that input is keyed by trace ID,
//! `rekey` re-keys it by trace ID and `repartition` runs the stage that
//! does so for an input topic;
//! `baseline` creates every known metric series at zero; `span_metrics`
//! counts RED metrics from every span and `dependencies` the service links
//! of every trace, both before sampling, on `series`' hand-kept Prometheus
//! series.

pub mod app;
pub mod baseline;
pub mod budget;
pub mod collector;
pub mod config;
pub mod deadletter;
pub mod decision_log;
pub mod decode;
pub mod dependencies;
pub mod index_catalog;
pub mod keying;
pub mod loadgen;
pub mod memory;
pub mod model;
pub mod offsets;
pub mod plan;
pub mod policy;
pub mod rekey;
pub mod repartition;
pub mod retention;
pub mod rollover;
pub mod series;
pub mod server;
pub mod sink;
pub mod source;
pub mod span_metrics;
pub mod span_time;
pub mod telemetry;
pub mod topics;
pub mod window;
