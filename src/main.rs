//! The `tailsift` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use tailsift::app::Service;
use tailsift::config::{Config, Repartition};
use tailsift::decode::Encoding;
use tailsift::loadgen::{LoadOptions, generator::Profile};
use tailsift::plan::Plan;
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
    /// Delete span, service and dependencies indices older than N days
    /// (daily ones by their date, rollover ones by when they stopped taking
    /// writes; never a write index).
    PruneIndices(PruneArgs),
    /// Alias mode without ILM: create, roll over and look back the indices
    /// behind the write and read aliases.
    #[command(subcommand)]
    Rollover(RolloverCommand),
}

/// Where the index tools connect: a config file and/or flags. URLs,
/// credentials (also as TAILSIFT_ELASTICSEARCH__* variables, with or
/// without a file), TLS and the index prefix come from the config.
#[derive(clap::Args)]
struct EsTarget {
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
struct PruneArgs {
    /// Keep this many most recent days (today included).
    #[arg(long)]
    keep_days: u32,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: EsTarget,
}

#[derive(Subcommand)]
enum RolloverCommand {
    /// Install the templates and create each first index
    /// (<prefix>jaeger-span-000001) behind its write and read aliases.
    Init(EsTarget),
    /// Move each write alias to a new index when a condition is met.
    Rollover(RolloverArgs),
    /// Take the indices that stopped taking writes before now minus
    /// COUNT UNITs out of the read aliases.
    Lookback(LookbackArgs),
}

#[derive(clap::Args)]
struct RolloverArgs {
    #[command(flatten)]
    target: EsTarget,
    /// Roll over once the write index is this old (e.g. 1d, 12h).
    #[arg(long)]
    max_age: Option<String>,
    /// Roll over once the write index holds this many documents.
    #[arg(long)]
    max_docs: Option<u64>,
    /// Roll over once its largest primary shard is this big (e.g. 50gb).
    #[arg(long)]
    max_primary_shard_size: Option<String>,
}

#[derive(clap::Args)]
struct LookbackArgs {
    #[command(flatten)]
    target: EsTarget,
    /// seconds, minutes, hours, days, weeks, months or years.
    #[arg(long, default_value = "days")]
    unit: tailsift::rollover::LookbackUnit,
    #[arg(long, default_value_t = 1)]
    unit_count: u32,
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
        Command::Rollover(command) => rollover(command),
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
    match &cfg.kafka.repartition {
        None => {}
        Some(Repartition::Auto) => println!(
            "  repartition: auto (messages not keyed by trace ID are re-keyed into {})",
            cfg.kafka.topic
        ),
        Some(Repartition::Topic(r)) => println!(
            "  repartition: {} re-keyed into {}",
            r.input_topic, cfg.kafka.topic
        ),
    }
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
    let plan = Plan::resolve(&cfg)?;
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
                tailsift::app::link_writer(&plan.sink)
                    .context("cannot start the dependency writer")?,
            ),
            _ => None,
        };
        let service = Service {
            dead_letters: tailsift::app::dead_letters(&cfg, &plan).await?,
            cfg,
            plan,
            config_path: path,
            metrics,
            link_writer,
        };
        match sink {
            SinkKind::Null => service.serve(NullSink::default()).await,
            SinkKind::Elasticsearch => {
                let sink =
                    ElasticsearchSink::start(&service.plan.sink, service.dead_letters.clone())
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

/// The configuration an index tool runs with: the file (or the defaults)
/// with the environment's overrides, then the flags'.
fn es_config(target: &EsTarget) -> anyhow::Result<Config> {
    let mut cfg = match &target.config {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    if let Some(url) = &target.es_url {
        cfg.elasticsearch.urls = vec![url.clone()];
    }
    if let Some(prefix) = &target.index_prefix {
        cfg.elasticsearch.index_prefix = prefix.clone();
    }
    Ok(cfg)
}

fn prune_indices(a: PruneArgs) -> anyhow::Result<()> {
    let cfg = es_config(&a.target)?;
    let client = tailsift::sink::elasticsearch::EsClient::new(&cfg.elasticsearch)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(tailsift::retention::prune_indices(
        &client,
        &cfg.elasticsearch.index_prefix,
        a.keep_days,
        chrono::Utc::now(),
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

fn rollover(command: RolloverCommand) -> anyhow::Result<()> {
    use tailsift::rollover::{self, Conditions};
    let target = match &command {
        RolloverCommand::Init(t) => t,
        RolloverCommand::Rollover(a) => &a.target,
        RolloverCommand::Lookback(a) => &a.target,
    };
    let cfg = es_config(target)?;
    // Without a file alias mode is implied; a file that writes daily
    // indices would not read what this creates.
    anyhow::ensure!(
        target.config.is_none() || cfg.elasticsearch.use_aliases,
        "elasticsearch.use_aliases is false in the config: tailsift writes daily indices, \
         which need no rollover (set use_aliases: true for alias mode)"
    );
    let client = tailsift::sink::elasticsearch::EsClient::new(&cfg.elasticsearch)?;
    let names = rollover::names(&cfg.index_prefix());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            RolloverCommand::Init(_) => {
                let created = rollover::init(&client, &cfg.elasticsearch, &names).await?;
                for index in &created {
                    println!("created {index}");
                }
                println!("aliases ready; created {} indices", created.len());
            }
            RolloverCommand::Rollover(a) => {
                let conditions = Conditions {
                    max_age: a.max_age,
                    max_docs: a.max_docs,
                    max_primary_shard_size: a.max_primary_shard_size,
                };
                for r in rollover::rollover(&client, &names, &conditions).await? {
                    let met: Vec<String> = r
                        .conditions
                        .iter()
                        .map(|(c, met)| format!("{c}={met}"))
                        .collect();
                    match r.rolled_over {
                        true => println!(
                            "{}: rolled over {} -> {} ({})",
                            r.alias,
                            r.old_index,
                            r.new_index,
                            met.join(", ")
                        ),
                        false => {
                            println!("{}: stays on {} ({})", r.alias, r.old_index, met.join(", "))
                        }
                    }
                }
            }
            RolloverCommand::Lookback(a) => {
                let cutoff = rollover::cutoff(chrono::Utc::now(), a.unit, a.unit_count);
                let removed = rollover::lookback(&client, &names, cutoff).await?;
                for index in &removed {
                    println!("removed {index} from its read alias");
                }
                println!(
                    "{} indices retired before {cutoff} left the read aliases",
                    removed.len()
                );
            }
        }
        anyhow::Ok(())
    })
}
