//! A single-node Garage (S3) for tests, shared by the test process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mail_blobstore::S3Config;
use mail_localpg::free_port;
use mail_localpg::guard::{GuardOptions, Guarded};
use rand::RngCore;

const REGION: &str = "garage";
const KEY_NAME: &str = "test";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at racy free ports before giving up.
const ATTEMPTS: usize = 5;

static GARAGE: OnceLock<Garage> = OnceLock::new();

/// The Garage shared by this test process, started on first use. Its key may create buckets.
pub fn garage() -> &'static Garage {
    GARAGE.get_or_init(|| Garage::start().unwrap_or_else(|e| panic!("test Garage: {e}")))
}

/// A running single-node Garage with one key (`test`) allowed to create buckets.
#[derive(Debug)]
pub struct Garage {
    s3: S3Config,
    bin: PathBuf,
    config: PathBuf,
    _server: Guarded,
    /// Removed by the watchdog once the server stopped; kept here so a drop removes it too.
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Where and how to reach the S3 API (path-style, region `garage`).
    pub fn s3_config(&self) -> S3Config {
        self.s3.clone()
    }

    /// The server's config file, for running `garage -c <config> ...` by hand.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Runs a `garage` CLI command against this node; its stdout, or the error text.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        run_cli(&self.bin, &self.config, args)
    }

    fn start() -> Result<Self, String> {
        let bin = find_garage();
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(&bin) {
                Ok(garage) => return Ok(garage),
                Err((error, retry)) => {
                    last_error = error;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    /// One attempt on fresh ports; the flag says a port clash made it fail.
    fn try_start(bin: &Path) -> Result<Self, (String, bool)> {
        let fail = |e: String| (e, false);
        let dir = tempfile::Builder::new()
            .prefix("garage-")
            .tempdir()
            .map_err(|e| fail(format!("temp dir: {e}")))?;
        let ports = distinct_ports().map_err(fail)?;
        let config = dir.path().join("garage.toml");
        std::fs::write(&config, config_text(dir.path(), ports))
            .map_err(|e| fail(format!("writing {}: {e}", config.display())))?;
        let log = dir.path().join("garage.log");
        let argv: Vec<OsString> = vec![
            bin.into(),
            "-c".into(),
            config.clone().into(),
            "server".into(),
        ];
        let options = GuardOptions {
            signal: "TERM",
            cleanup: Some(dir.path().to_path_buf()),
            log: log.clone(),
        };
        let mut server = Guarded::spawn(&argv, &options)
            .map_err(|e| fail(format!("spawning {}: {e}", bin.display())))?;

        // Up once the CLI can talk to it over RPC.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                let tail = log_tail(&log);
                let clash = tail.contains("in use");
                return Err((format!("garage server exited ({status}):\n{tail}"), clash));
            }
            if run_cli(bin, &config, &["status"]).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let tail = log_tail(&log);
                return Err(fail(format!(
                    "garage not up after {START_TIMEOUT:?}:\n{tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let setup = |args: &[&str]| {
            run_cli(bin, &config, args).map_err(|e| fail(format!("{e}\n{}", log_tail(&log))))
        };
        let node = setup(&["node", "id", "-q"])?;
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        setup(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        setup(&["layout", "apply", "--version", "1"])?;
        let key_id = format!("GK{}", random_hex(12));
        let secret = random_hex(32);
        setup(&["key", "import", "--yes", "-n", KEY_NAME, &key_id, &secret])?;
        setup(&["key", "allow", "--create-bucket", KEY_NAME])?;

        let s3 = S3Config {
            endpoint: format!("http://127.0.0.1:{}", ports.s3),
            region: REGION.to_string(),
            access_key_id: key_id,
            secret_access_key: secret,
            path_style: true,
        };
        Ok(Self {
            s3,
            bin: bin.to_path_buf(),
            config,
            _server: server,
            _dir: dir,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    rpc: u16,
    s3: u16,
    admin: u16,
}

fn distinct_ports() -> Result<Ports, String> {
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let port = free_port().map_err(|e| format!("picking a free port: {e}"))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(Ports {
        rpc: ports[0],
        s3: ports[1],
        admin: ports[2],
    })
}

fn config_text(dir: &Path, ports: Ports) -> String {
    let Ports { rpc, s3, admin } = ports;
    let dir = dir.display();
    let secret = random_hex(32);
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#
    )
}

fn run_cli(bin: &Path, config: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "garage {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `$GARAGE_BIN`, else `garage` on `PATH`, else `~/.cargo/bin/garage`.
fn find_garage() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN").map(PathBuf::from)
        && bin.is_file()
    {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    on_path
        .into_iter()
        .chain(home)
        .map(|dir| dir.join("garage"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| panic!("garage not found: run `cargo install garage --locked`"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_what_a_single_node_needs() {
        let ports = Ports {
            rpc: 1001,
            s3: 1002,
            admin: 1003,
        };
        let text = config_text(Path::new("/tmp/g"), ports);
        for line in [
            "replication_factor = 1",
            "db_engine = \"sqlite\"",
            "metadata_dir = \"/tmp/g/meta\"",
            "rpc_bind_addr = \"127.0.0.1:1001\"",
            "api_bind_addr = \"127.0.0.1:1002\"",
            "api_bind_addr = \"127.0.0.1:1003\"",
            "s3_region = \"garage\"",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("rpc_secret = \""))
            .and_then(|s| s.strip_suffix('"'))
            .unwrap();
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
