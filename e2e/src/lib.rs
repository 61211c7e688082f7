//! Helpers for the end-to-end tests and load tools: run the real Python mail clients in
//! `e2e/clients/` against a running server.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use mailserver::Addresses;

/// The repository's `examples/` folder, which the embedded default applies.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A script of `e2e/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Runs a Python client script with arguments; its stdout when it exits 0, else an error
/// carrying everything it printed.
pub fn run_python(script: &str, args: &[String]) -> anyhow::Result<String> {
    let path = client_script(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("cannot run python3 {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        );
    }
    Ok(stdout)
}

/// The arguments that point a client script at a server's listeners.
pub fn listener_args(addresses: &Addresses) -> Vec<String> {
    vec![
        "--smtp".into(),
        addresses.smtp.to_string(),
        "--imap".into(),
        addresses.imap.to_string(),
        "--pop3".into(),
        addresses.pop3.to_string(),
    ]
}
