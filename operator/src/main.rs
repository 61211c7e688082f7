//! `mail-operator`: `run` is the Kubernetes controller; `crdgen` writes the CRD YAML; `local`
//! applies manifests from a directory to PostgreSQL and a blob store without Kubernetes (the
//! embedded default and development).
#![forbid(unsafe_code)]

#[cfg(test)]
mod cel_rules;
mod conditions;
mod context;
mod controller;
mod crdgen;
mod dkimkey;
mod error;
#[cfg(test)]
mod fixtures;
mod fleet;
mod http;
mod leader;
mod local;
mod logging;
mod mailbox;
mod maildomain;
mod metrics;
#[cfg(test)]
mod rbac;
mod reconcile;
mod status;
mod stores;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log lines as `plain` text (colour only on a terminal) or `json`, one object a line.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "plain")]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster (in-cluster config or KUBECONFIG).
    Run(Box<controller::Args>),
    /// Write crds/<kind>.yaml from the resource types, or check they are current.
    Crdgen(crdgen::Args),
    /// Apply manifests from a directory to PostgreSQL and a blob store, once or every N seconds.
    Local(local::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => controller::run(*args).await,
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
