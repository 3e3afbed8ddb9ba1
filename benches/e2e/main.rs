//! End-to-end benchmark of tailsift against the OpenTelemetry Collector and
//! bare loops, on one pre-loaded Kafka topic. `bash scripts/bench.sh` builds
//! everything and runs `e2e run`; see benches/e2e/README.md.
//!
//! Subcommands `scan` and `bulk` are the bare contenders; `run` starts them
//! as child processes of their own so that each one's CPU time and peak
//! memory are its alone.

mod bulk;
mod es;
mod kafka;
mod machine;
mod procstat;
mod prom;
mod report;
mod run;
mod scan;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "e2e", about = "tailsift end-to-end benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load a fresh topic and measure every contender in turn.
    Run(Box<run::Args>),
    /// (a) Consume the config's topic and scan every message; prints JSON.
    Scan { config: PathBuf },
    /// (e) Bulk-index the config's topic as documents; prints JSON.
    Bulk {
        config: PathBuf,
        /// Stop taking traces once this many spans are encoded.
        #[arg(long, default_value_t = u64::MAX)]
        max_spans: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run(args) => run::run(*args),
        Cmd::Scan { config } => print_json(&scan::run(&config)?),
        Cmd::Bulk { config, max_spans } => print_json(&bulk::run(&config, max_spans)?),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
