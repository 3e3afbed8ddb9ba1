//! The `tailsift` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use tailsift::app::Service;
use tailsift::config::Config;
use tailsift::decode::Encoding;
use tailsift::loadgen::{LoadOptions, generator::Profile};
use tailsift::sink::ElasticsearchSink;
use tailsift::sink::health::Monitored;
use tailsift::sink::null::NullSink;

/// jemalloc (see `tailsift::memory`), through its sized-deallocation API.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tailsift",
    version,
    about = "Tail sampling from Kafka into Jaeger's Elasticsearch indices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume, sample and write until SIGTERM/SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Where kept traces go: Elasticsearch, or nowhere (benchmarks).
        #[arg(long, value_enum, default_value_t = SinkKind::Elasticsearch)]
        sink: SinkKind,
    },
    /// Validate a config file, including every policy, and exit.
    CheckConfig { file: PathBuf },
    /// Print the tailsift configuration equivalent to an OpenTelemetry
    /// Collector configuration's `tail_sampling` and `filter` processors.
    ImportOtel { file: PathBuf },
    /// Produce realistic generated traces to Kafka and print the ground truth.
    Loadgen(LoadgenArgs),
    /// Delete daily span and service indices older than N days.
    PruneIndices(PruneArgs),
}

#[derive(clap::Args)]
struct PruneArgs {
    /// Keep this many most recent days (today included).
    #[arg(long)]
    keep_days: u32,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Take URLs, credentials, TLS and index prefix from this config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Elasticsearch URL (overrides the config file's).
    #[arg(long)]
    es_url: Option<String>,
    /// Index prefix (overrides the config file's).
    #[arg(long)]
    index_prefix: Option<String>,
}

#[derive(clap::Args)]
struct LoadgenArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "jaeger-spans")]
    topic: String,
    #[arg(long, value_enum, default_value_t = EncodingArg::OtlpProto)]
    encoding: EncodingArg,
    /// Do not key messages by trace ID (OTLP messages then batch traces).
    #[arg(long)]
    unkeyed: bool,
    /// Traces per message when unkeyed (OTLP).
    #[arg(long, default_value_t = 10)]
    traces_per_message: usize,
    /// Spans per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Stop after this many traces.
    #[arg(long)]
    traces: Option<u64>,
    #[arg(long, default_value_t = 8)]
    services: usize,
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
    #[arg(long, default_value_t = 0.02)]
    slow_rate: f64,
    /// Latency from which a trace counts as slow.
    #[arg(long, default_value_t = 1000)]
    slow_ms: u64,
    /// Share of traces with one span sent late.
    #[arg(long, default_value_t = 0.0)]
    late_rate: f64,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    late_delay: std::time::Duration,
    /// Shuffle the spans of each trace.
    #[arg(long)]
    out_of_order: bool,
    /// Share of messages preceded by a garbage message.
    #[arg(long, default_value_t = 0.0)]
    garbage_rate: f64,
    /// Generate 64-bit trace IDs.
    #[arg(long)]
    short_trace_ids: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// librdkafka producer property, KEY=VALUE (repeatable).
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Write the per-trace ground truth as JSON lines.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    OtlpProto,
    OtlpJson,
    JaegerProto,
    JaegerJson,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::OtlpProto => Encoding::OtlpProto,
            EncodingArg::OtlpJson => Encoding::OtlpJson,
            EncodingArg::JaegerProto => Encoding::JaegerProto,
            EncodingArg::JaegerJson => Encoding::JaegerJson,
        }
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

#[derive(Clone, Copy, ValueEnum)]
enum SinkKind {
    Elasticsearch,
    Null,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, sink } => run(config, sink),
        Command::CheckConfig { file } => check_config(&file),
        Command::ImportOtel { file } => import_otel(&file),
        Command::Loadgen(args) => loadgen(args),
        Command::PruneIndices(args) => prune_indices(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(file)?;
    let rules = tailsift::app::build_rules(&cfg)?;
    let names: Vec<String> = rules
        .engine
        .policy_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    println!("{}: ok", file.display());
    println!(
        "  kafka: brokers={} topic={} group={} encoding={:?}",
        cfg.kafka.brokers, cfg.kafka.topic, cfg.kafka.group_id, cfg.kafka.encoding
    );
    println!("  elasticsearch: {}", cfg.elasticsearch.urls.join(","));
    println!("  policies ({}): {}", names.len(), names.join(", "));
    match cfg.kafka.dead_letter_topic() {
        Some(topic) => println!("  dead letters: {topic}"),
        None => println!(
            "  warning: kafka.dead_letter_topic is none: undecodable messages and documents \
             Elasticsearch rejects are counted, then lost"
        ),
    }
    if let Some(spans) = &cfg.filter.spans {
        println!("  filter.spans: {} span condition(s)", spans.span.len());
    }
    if !cfg.sampling.collector_mapping.is_empty() {
        println!("  collector options:");
        for line in &cfg.sampling.collector_mapping {
            println!("    {line}");
        }
    }
    Ok(())
}

fn import_otel(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let out = tailsift::collector::import::import(&text, &file.display().to_string())?;
    print!("{out}");
    Ok(())
}

fn run(path: PathBuf, sink: SinkKind) -> anyhow::Result<()> {
    let cfg = Config::load(&path)?;
    tailsift::telemetry::init_logging(&cfg.logging);
    // Before anything registers a metric, or it would go to a no-op recorder.
    let metrics =
        tailsift::telemetry::install_metrics().context("cannot install the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let link_writer = match (sink, cfg.dependencies.enabled) {
            (SinkKind::Elasticsearch, true) => Some(
                tailsift::app::link_writer(&cfg).context("cannot start the dependency writer")?,
            ),
            _ => None,
        };
        let service = Service {
            dead_letters: tailsift::app::dead_letters(&cfg).await?,
            cfg,
            config_path: path,
            metrics,
            link_writer,
        };
        match sink {
            SinkKind::Null => service.serve(NullSink::default()).await,
            SinkKind::Elasticsearch => {
                let sink = ElasticsearchSink::start(
                    &service.cfg.elasticsearch,
                    &service.cfg.index_prefix(),
                    service.dead_letters.clone(),
                )
                .await
                .context("cannot start the Elasticsearch sink")?;
                service.serve(Monitored::new(sink).await).await
            }
        }
    });
    // Blocking work still running (a close stuck on an unreachable broker,
    // bounded by the source) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

fn loadgen(a: LoadgenArgs) -> anyhow::Result<()> {
    let opts = LoadOptions {
        brokers: a.brokers,
        topic: a.topic,
        encoding: a.encoding.into(),
        keyed: !a.unkeyed,
        traces_per_message: a.traces_per_message,
        rate: a.rate,
        duration: a.duration,
        max_traces: a.traces,
        profile: Profile {
            services: a.services,
            error_rate: a.error_rate,
            slow_rate: a.slow_rate,
            slow_ms: a.slow_ms,
            short_trace_ids: a.short_trace_ids,
            ..Profile::default()
        },
        seed: a.seed,
        late_rate: a.late_rate,
        late_delay: a.late_delay,
        out_of_order: a.out_of_order,
        garbage_rate: a.garbage_rate,
        properties: a.properties.into_iter().collect(),
        truth_file: a.truth,
        keep_truth: false,
        progress: !a.json,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let summary = runtime.block_on(tailsift::loadgen::run(&opts))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.table());
    }
    Ok(())
}

fn prune_indices(a: PruneArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(url) = a.es_url {
        cfg.elasticsearch.urls = vec![url];
    }
    if let Some(prefix) = a.index_prefix {
        cfg.elasticsearch.index_prefix = prefix;
    }
    let client = tailsift::sink::elasticsearch::EsClient::new(&cfg.elasticsearch)?;
    let today = chrono::Utc::now().date_naive();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(tailsift::retention::prune_indices(
        client.inner(),
        &cfg.elasticsearch.index_prefix,
        a.keep_days,
        today,
        a.dry_run,
    ))?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for index in &report.deleted {
        println!("{verb} {index}");
    }
    println!(
        "{} {} indices older than {}; kept {}",
        verb,
        report.deleted.len(),
        report.keep_from,
        report.kept.len()
    );
    Ok(())
}
