//! tailsift: tail sampling from Kafka into Jaeger's Elasticsearch indices.
//!
//! Data flow, bottom to top: `model` and `offsets` are shared by all;
//! `decode` scans Kafka payloads, `policy` decides whole traces, `sink`
//! writes Jaeger documents to Elasticsearch, `window` buffers spans per trace
//! until a decision, `source` drives it all from a Kafka consumer group,
//! `app` wires it together behind the CLI; `retention` prunes old daily
//! indices; `memory` holds the allocator to `memory.limit`; `keying` checks
//! that input is keyed by trace ID; `baseline` creates every known metric
//! series at zero.

pub mod app;
pub mod baseline;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod keying;
pub mod loadgen;
pub mod memory;
pub mod model;
pub mod offsets;
pub mod policy;
pub mod repartition;
pub mod retention;
pub mod server;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod window;
