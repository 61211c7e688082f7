//! A real Rspamd (Debian `rspamd`) with a redis for Bayes, on free loopback ports. The stock
//! configuration is kept with its directories moved; the database directory (compiled patterns,
//! 11 s to build) is shared under a cache dir so later starts take under a second.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mail_localpg::free_port;
use mail_localpg::guard::{GuardOptions, Guarded};

const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The controller password of the test Rspamd.
pub const RSPAMD_PASSWORD: &str = "test-controller-password";

static RSPAMD: OnceLock<Rspamd> = OnceLock::new();

/// The Rspamd (and its redis) shared by this test process, started on first use.
pub fn rspamd() -> &'static Rspamd {
    RSPAMD.get_or_init(|| Rspamd::start().unwrap_or_else(|e| panic!("test rspamd: {e}")))
}

#[derive(Debug)]
pub struct Rspamd {
    normal_port: u16,
    controller_port: u16,
    _rspamd: Guarded,
    _redis: Guarded,
    log_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    fn start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("rspamd-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let d = dir.path();
        // World-accessible: rspamd drops to _rspamd and must reach its dirs.
        chmod(d, "0755")?;
        let (etc, run, log) = (d.join("etc"), d.join("run"), d.join("log"));
        for sub in [
            etc.join("override.d"),
            etc.join("local.d"),
            run.clone(),
            log.clone(),
        ] {
            std::fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        }
        let db = shared_db_dir()?;

        let redis_port = free_port().map_err(|e| e.to_string())?;
        let redis_log = log.join("redis.log");
        let redis_argv: Vec<OsString> = [
            "redis-server",
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &d.display().to_string(),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let redis = Guarded::spawn(
            &redis_argv,
            &GuardOptions {
                signal: "TERM",
                cleanup: None,
                log: redis_log,
            },
        )
        .map_err(|e| format!("spawning redis-server: {e}"))?;

        let normal_port = free_port().map_err(|e| e.to_string())?;
        let controller_port = free_port().map_err(|e| e.to_string())?;
        // `secure_ip` replaced by an address no test uses: the stock loopback entry would let
        // requests pass without the password, and the password is what the client is tested with.
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(
            etc.join("override.d/worker-normal.inc"),
            format!("bind_socket = \"127.0.0.1:{normal_port}\";\ncount = 1;\n"),
        )?;
        write(
            etc.join("override.d/worker-controller.inc"),
            format!(
                "bind_socket = \"127.0.0.1:{controller_port}\";\ncount = 1;\n\
                 password = \"{RSPAMD_PASSWORD}\";\nenable_password = \"{RSPAMD_PASSWORD}\";\n\
                 secure_ip = \"192.0.2.254\";\n"
            ),
        )?;
        write(
            etc.join("override.d/worker-proxy.inc"),
            "count = -1;\n".into(),
        )?;
        write(
            etc.join("override.d/worker-fuzzy.inc"),
            "count = -1;\n".into(),
        )?;
        write(
            etc.join("local.d/redis.conf"),
            format!("servers = \"127.0.0.1:{redis_port}\";\n"),
        )?;
        write(
            etc.join("local.d/options.inc"),
            "dns { timeout = 0.1s; retransmits = 1; }\n".into(),
        )?;
        // Learn from the first messages (the stock minimum is 200 learns before classifying;
        // learning itself has no minimum).
        write(
            etc.join("local.d/classifier-bayes.conf"),
            "min_learns = 1;\nautolearn = false;\n".into(),
        )?;
        chown_rspamd(&[&run, &log])?;

        let rspamd_log = log.join("rspamd.stderr");
        let argv: Vec<OsString> = vec![
            "rspamd".into(),
            "-f".into(),
            "-u".into(),
            "_rspamd".into(),
            "-g".into(),
            "_rspamd".into(),
            "-c".into(),
            "/etc/rspamd/rspamd.conf".into(),
            format!("--var=LOCAL_CONFDIR={}", etc.display()).into(),
            format!("--var=DBDIR={}", db.display()).into(),
            format!("--var=RUNDIR={}", run.display()).into(),
            format!("--var=LOGDIR={}", log.display()).into(),
        ];
        let mut server = Guarded::spawn(
            &argv,
            &GuardOptions {
                signal: "TERM",
                cleanup: None,
                log: rspamd_log.clone(),
            },
        )
        .map_err(|e| format!("spawning rspamd: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!("rspamd exited ({status}):\n{}", tail(&log)));
            }
            if http_ok(normal_port, "/ping") && http_ok(controller_port, "/ping") {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "rspamd not up after {START_TIMEOUT:?}:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            normal_port,
            controller_port,
            _rspamd: server,
            _redis: redis,
            log_dir: log,
            _dir: dir,
        })
    }

    /// The normal worker (`/checkv2`), `127.0.0.1:<port>`.
    pub fn scan_address(&self) -> String {
        format!("127.0.0.1:{}", self.normal_port)
    }

    /// The controller (`/learnspam`, `/stat`), `127.0.0.1:<port>`.
    pub fn controller_address(&self) -> String {
        format!("127.0.0.1:{}", self.controller_port)
    }

    pub fn password(&self) -> &'static str {
        RSPAMD_PASSWORD
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

/// `$XDG_CACHE_HOME` or `~/.cache`, `/kubemail/rspamd-db`, owned by `_rspamd`.
fn shared_db_dir() -> Result<PathBuf, String> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let db = base.join("kubemail").join("rspamd-db");
    std::fs::create_dir_all(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    // _rspamd must be able to walk down to it (a home directory is often 0700).
    let mut p = db.clone();
    while let Some(parent) = p.parent() {
        if parent == Path::new("/") || parent.as_os_str().is_empty() {
            break;
        }
        let _ = Command::new("chmod").arg("o+x").arg(parent).status();
        p = parent.to_path_buf();
    }
    chown_rspamd(&[&db])?;
    Ok(db)
}

fn chown_rspamd(dirs: &[&Path]) -> Result<(), String> {
    let status = Command::new("chown")
        .arg("-R")
        .arg("_rspamd:_rspamd")
        .args(dirs)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown -R _rspamd {dirs:?} failed ({status})"))
    }
}

fn chmod(path: &Path, mode: &str) -> Result<(), String> {
    Command::new("chmod")
        .arg(mode)
        .arg(path)
        .status()
        .map_err(|e| format!("chmod: {e}"))
        .map(|_| ())
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
}

fn tail(log_dir: &Path) -> String {
    let mut out = String::new();
    for name in ["rspamd.stderr", "rspamd.log"] {
        let text = std::fs::read_to_string(log_dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "== {name}\n{}\n",
            lines[lines.len().saturating_sub(30)..].join("\n")
        ));
    }
    out
}
