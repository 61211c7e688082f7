//! A real clamd (Debian `clamav-daemon`) on a free loopback port, with a local signature
//! database that knows EICAR (no signature download is possible here, and clamd refuses an
//! empty database).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mail_localpg::free_port;
use mail_localpg::guard::{GuardOptions, Guarded};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `MD5:size:name` of the 68-byte EICAR test file.
const EICAR_HDB: &str = "44d88612fea8a8f36de82e1278abb02f:68:Local.EICAR.Test.HDB\n";
/// The EICAR string anywhere in a file (also once decoded from a base64 MIME part).
const EICAR_NDB: &str = "Local.EICAR.Test.NDB:0:*:45494341522d5354414e444152442d414e544956495255532d544553542d46494c45\n";

/// The 68-byte EICAR anti-virus test file.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

static CLAMD: OnceLock<Clamd> = OnceLock::new();

/// The clamd shared by this test process (StreamMaxLength 1 MB), started on first use.
pub fn clamd() -> &'static Clamd {
    CLAMD.get_or_init(|| Clamd::start(1024 * 1024).unwrap_or_else(|e| panic!("test clamd: {e}")))
}

#[derive(Debug)]
pub struct Clamd {
    port: u16,
    server: Option<Guarded>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Clamd {
    /// A clamd of its own (for tests that stop it), with `StreamMaxLength` in bytes.
    pub fn start(stream_max_length: u64) -> Result<Self, String> {
        let bin = find_clamd()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, stream_max_length) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(bin: &Path, stream_max_length: u64) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("clamd-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let d = dir.path();
        let db = d.join("db");
        let tmp = d.join("tmp");
        for sub in [&db, &tmp] {
            std::fs::create_dir_all(sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        }
        std::fs::write(db.join("local.hdb"), EICAR_HDB).map_err(|e| e.to_string())?;
        std::fs::write(db.join("local.ndb"), EICAR_NDB).map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| format!("free port: {e}"))?;
        let conf = d.join("clamd.conf");
        let text = format!(
            "Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {}\n\
             TemporaryDirectory {}\nPidFile {}\nStreamMaxLength {stream_max_length}\n\
             LogTime yes\nLogVerbose no\n",
            db.display(),
            tmp.display(),
            d.join("clamd.pid").display(),
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let log = d.join("clamd.log");
        let argv: Vec<OsString> = vec![bin.into(), "-c".into(), conf.into()];
        let options = GuardOptions {
            signal: "TERM",
            cleanup: None,
            log: log.clone(),
        };
        let mut server =
            Guarded::spawn(&argv, &options).map_err(|e| format!("spawning clamd: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!("clamd exited ({status}):\n{}", tail(&log)));
            }
            if ping(port) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "clamd not up after {START_TIMEOUT:?}:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            server: Some(server),
            log,
            _dir: dir,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops clamd and waits for it to exit: the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.stop(Duration::from_secs(10));
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"PONG"))
}

fn find_clamd() -> Result<PathBuf, String> {
    for p in ["/usr/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    Err("clamd not found: install clamav-daemon (scripts/deps.sh)".into())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
