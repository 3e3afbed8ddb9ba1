//! The `tailsift` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use tailsift::config::Config;

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
    println!(
        "{}: ok ({} policies: {})",
        file.display(),
        rules.engine.policy_names().len(),
        rules
            .engine
            .policy_names()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn run(path: PathBuf, sink: SinkKind) -> anyhow::Result<()> {
    let cfg = Config::load(&path)?;
    tailsift::telemetry::init_logging(&cfg.logging);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match sink {
            SinkKind::Null => {
                tailsift::app::serve(cfg, path, tailsift::sink::null::NullSink::default()).await
            }
            SinkKind::Elasticsearch => anyhow::bail!("the Elasticsearch sink is not wired yet"),
        }
    })
}
