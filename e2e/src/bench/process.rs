//! The real `mailserver` binary in embedded mode (its own PostgreSQL, filesystem blobs, nothing
//! kept), run as a child process so that its resident memory is its own and can be read from
//! `/proc`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `mailserver`; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// `<name> listening on <address>` lines, by lower-case name (`smtp`, `imap`, `pop3`, `http`...).
    pub listeners: HashMap<String, SocketAddr>,
}

/// The `mailserver` binary built beside the running program (`cargo build --release -p mailserver`
/// puts both in the same directory).
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("own path")?;
    let path = exe.parent().context("own directory")?.join("mailserver");
    if !path.exists() {
        bail!(
            "{} is missing: build it first with the same profile (cargo build --release -p mailserver)",
            path.display()
        );
    }
    Ok(path)
}

/// Every listener on a free loopback port.
fn free_port_args() -> Vec<String> {
    ["smtp", "imap", "pop3"]
        .into_iter()
        .flat_map(|kind| ["--listen".to_string(), format!("{kind}=127.0.0.1:0")])
        .chain(["--http-listen".to_string(), "127.0.0.1:0".to_string()])
        .collect()
}

impl ServerProcess {
    /// Starts the embedded default on `manifests` with `extra` arguments and waits for `ready`.
    pub fn start(manifests: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(server_binary()?)
            .arg("--ephemeral")
            .arg("--manifests")
            .arg(manifests)
            .args(free_port_args())
            .args(extra)
            .env_remove("DATABASE_URL")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .context("start mailserver")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut server = Self {
            child,
            listeners: HashMap::new(),
        };
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let Some(line) = lines.next() else {
                bail!("mailserver exited before it was ready");
            };
            let line = line?;
            if line == "ready" {
                break;
            }
            if let Some((name, addr)) = line.split_once(" listening on ")
                && let Ok(addr) = addr.trim().parse()
            {
                server.listeners.insert(name.trim().to_lowercase(), addr);
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(server)
    }

    /// The address of the listener `name` (`smtp`, `imap`, `pop3`, `http`).
    pub fn addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.listeners
            .get(name)
            .copied()
            .with_context(|| format!("the server printed no {name} listener"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still the one that was started (it never restarted or died).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn memory(&self) -> Memory {
        Memory { pid: self.pid() }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("mailserver did not exit within {grace:?} of SIGTERM")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a process's resident memory from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pid: u32,
}

impl Memory {
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// Highest resident memory since start or the last [`Memory::reset_peak`], in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// Starts a new peak measurement (Linux: `5` into `clear_refs` resets VmHWM; needs the
    /// right to write there, i.e. the same user or root). Falls back to sampling otherwise.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// Resident memory once it has stopped falling for two seconds (allocators give memory
    /// back over several seconds), at most `wait`.
    pub fn settled_rss_mib(&self, wait: Duration) -> f64 {
        let deadline = Instant::now() + wait;
        let mut low = self.rss_mib();
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.rss_mib();
            if now < low - 0.5 {
                low = now;
                since = Instant::now();
            }
        }
        low.min(self.rss_mib())
    }
}

/// Samples resident memory every 20 ms on a thread while alive; the highest figure seen.
/// VmHWM already keeps the peak; this is the fallback where it cannot be reset.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<f64>,
}

impl PeakSampler {
    pub fn start(memory: Memory) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0f64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(memory.rss_mib());
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(memory.rss_mib())
        });
        Self { stop, handle }
    }

    pub fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0.0)
    }
}
