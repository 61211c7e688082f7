//! `mail-operator`: `crdgen` writes the CRD YAML; `local` applies manifests from a directory to
//! PostgreSQL and a blob store without Kubernetes (the embedded default and development).
#![forbid(unsafe_code)]

mod crdgen;
mod local;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write crds/<kind>.yaml from the resource types, or check they are current.
    Crdgen(crdgen::Args),
    /// Apply manifests from a directory to PostgreSQL and a blob store, once or every N seconds.
    Local(local::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Crdgen(args) => crdgen::run(&args),
        Command::Local(args) => local::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mail-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
