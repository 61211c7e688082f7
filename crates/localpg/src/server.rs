//! Start, use and stop one PostgreSQL cluster.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

use crate::guard::{GuardOptions, Guarded};
use crate::{Error, find_bin_dir, free_port, io_error};

/// How long a start may take (a persistent cluster may replay WAL first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a start waits for an older server on the same data dir to finish stopping (after
/// a SIGKILL of its owner it is still writing its shutdown checkpoint).
const OLD_SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries at a racy free port before giving up on "address in use".
const PORT_ATTEMPTS: usize = 5;
/// `sun_path` is 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How to run the cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the cluster lives; reused when it holds `PG_VERSION`, else initialised.
    /// `None`: a temp dir, removed on stop.
    pub data_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Off for tests: much faster, and a crash may lose the cluster.
    pub fsync: bool,
}

/// The system user the server runs as, when we are root (postgres refuses to run as root).
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

/// A running PostgreSQL cluster; stopped by [`LocalPostgres::stop`] or on drop, and in any case
/// when this process exits.
#[derive(Debug)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    server: Option<Guarded>,
    /// Socket dir and log, plus the data when it is temporary. Declared after `server` so it is
    /// removed only once the server is gone.
    runtime: tempfile::TempDir,
}

impl LocalPostgres {
    /// Initialises the cluster if needed, starts it and waits until it accepts connections.
    pub fn start(options: Options) -> Result<Self, Error> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let runtime = runtime_dir()?;
        if let Some(user) = run_as {
            chown(runtime.path(), user)?;
        }
        let data_dir = match &options.data_dir {
            Some(dir) => std::path::absolute(dir).map_err(io_error("data dir path"))?,
            None => runtime.path().join("data"),
        };
        if !data_dir.join("PG_VERSION").is_file() {
            init_cluster(&bin_dir, &data_dir, run_as, options.fsync)?;
        }
        wait_for_old_server(&data_dir, OLD_SERVER_TIMEOUT)?;
        let attempts = if options.port == 0 { PORT_ATTEMPTS } else { 1 };
        let mut last_error = None;
        for _ in 0..attempts {
            let port = match options.port {
                0 => free_port().map_err(io_error("picking a free port"))?,
                port => port,
            };
            let launch = Launch {
                bin_dir: &bin_dir,
                data_dir: &data_dir,
                runtime: runtime.path(),
                port,
                run_as,
                fsync: options.fsync,
            };
            match launch.run() {
                Ok(server) => {
                    tracing::info!(
                        port,
                        data_dir = %data_dir.display(),
                        log = %runtime.path().join("postgres.log").display(),
                        "PostgreSQL started"
                    );
                    return Ok(Self {
                        bin_dir,
                        data_dir,
                        port,
                        server: Some(server),
                        runtime,
                    });
                }
                Err((error, true)) => last_error = Some(error),
                Err((error, false)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(Error::Stop("no start attempt".into())))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE` (trust auth: no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (in the runtime dir, removed on stop).
    pub fn log_path(&self) -> PathBuf {
        self.runtime.path().join("postgres.log")
    }

    /// Directory of the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.runtime.path()
    }

    /// Creates the database; succeeds when it exists already.
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-w", "-p"])
            .arg(self.port.to_string())
            .arg("--")
            .arg(name)
            .env("LC_ALL", "C")
            .output()
            .map_err(io_error("running createdb"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || stderr.contains("already exists") {
            Ok(())
        } else {
            Err(Error::Command {
                what: format!("createdb {name}"),
                message: stderr.trim().to_string(),
            })
        }
    }

    /// Fast shutdown (`SIGINT`: clients are disconnected) and waits for the server to exit.
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        match self.server.take() {
            Some(mut server) => server
                .stop(STOP_TIMEOUT)
                .map(drop)
                .map_err(|e| Error::Stop(format!("{e} (data in {})", self.data_dir.display()))),
            None => Ok(()),
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// `Some(postgres user)` when we are root, `None` otherwise (run as ourselves).
fn run_as() -> Result<Option<RunAs>, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        })),
        _ => Err(Error::NoPostgresUser),
    }
}

/// argv prefix that runs `program` as `run_as` (setpriv execs, so the pid is the server's).
fn as_user(run_as: Option<RunAs>, program: PathBuf) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(user) = run_as {
        argv.extend([
            "setpriv".into(),
            format!("--reuid={}", user.uid).into(),
            format!("--regid={}", user.gid).into(),
            "--clear-groups".into(),
            "--".into(),
        ]);
    }
    argv.push(program.into_os_string());
    argv
}

fn chown(path: &Path, user: RunAs) -> Result<(), Error> {
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(io_error(format!("chown {} to postgres", path.display())))
}

/// A fresh private dir for the socket and log, short enough for a unix socket path.
fn runtime_dir() -> Result<tempfile::TempDir, Error> {
    let socket_name_len = "/.s.PGSQL.65535".len() + "/pg-XXXXXX".len();
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() + socket_name_len <= MAX_SOCKET_PATH {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    tempfile::Builder::new()
        .prefix("pg-")
        .tempdir_in(&base)
        .map_err(io_error(format!(
            "creating a temp dir in {}",
            base.display()
        )))
}

fn init_cluster(
    bin_dir: &Path,
    data_dir: &Path,
    run_as: Option<RunAs>,
    fsync: bool,
) -> Result<(), Error> {
    std::fs::create_dir_all(data_dir)
        .map_err(io_error(format!("creating {}", data_dir.display())))?;
    if let Some(user) = run_as {
        chown(data_dir, user)?;
    }
    let mut argv = as_user(run_as, bin_dir.join("initdb"));
    argv.extend([
        "-D".into(),
        data_dir.as_os_str().to_owned(),
        "--auth=trust".into(),
        "-U".into(),
        "postgres".into(),
        "--encoding=UTF8".into(),
        "--locale=C".into(),
    ]);
    if !fsync {
        argv.push("--no-sync".into());
    }
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .env("LC_ALL", "C")
        .output()
        .map_err(io_error("running initdb"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        what: format!("initdb -D {}", data_dir.display()),
        message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Who holds the data dir's `postmaster.pid`.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// No lock file, or its process is gone (postgres removes such a file itself).
    Nobody,
    /// A server on this data dir, still running or stopping.
    Server(i32),
    /// The pid now belongs to some other process: the file is stale.
    Stranger(i32),
}

fn holder(data_dir: &Path) -> Holder {
    let lock = data_dir.join("postmaster.pid");
    let Some(pid) = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
    else {
        return Holder::Nobody;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return Holder::Nobody,
    }
    // A postmaster works in its data dir. When that cannot be read (a zombie, another
    // user's process), assume the server, which is only waited for.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    let ours = std::fs::canonicalize(data_dir).ok();
    match (cwd, ours) {
        (Ok(cwd), Some(ours)) if cwd != ours => Holder::Stranger(pid),
        _ => Holder::Server(pid),
    }
}

/// Waits (up to `timeout`) for a server that still holds `data_dir` to exit, and removes a
/// lock file whose pid was reused by another process, so that a start right after a crash
/// neither fails on `postmaster.pid` nor runs two servers on one data dir.
fn wait_for_old_server(data_dir: &Path, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match holder(data_dir) {
            Holder::Nobody => return Ok(()),
            Holder::Stranger(pid) => {
                tracing::warn!(pid, data_dir = %data_dir.display(), "removing a stale postmaster.pid");
                let lock = data_dir.join("postmaster.pid");
                return std::fs::remove_file(&lock)
                    .map_err(io_error(format!("removing the stale {}", lock.display())));
            }
            Holder::Server(pid) if Instant::now() >= deadline => {
                return Err(Error::Command {
                    what: format!("waiting for the PostgreSQL on {}", data_dir.display()),
                    message: format!("it (pid {pid}) still runs after {timeout:?}"),
                });
            }
            Holder::Server(pid) => {
                tracing::debug!(pid, "waiting for the previous PostgreSQL to stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The last lines of the server log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One attempt at starting the server on one port.
struct Launch<'a> {
    bin_dir: &'a Path,
    data_dir: &'a Path,
    runtime: &'a Path,
    port: u16,
    run_as: Option<RunAs>,
    fsync: bool,
}

impl Launch<'_> {
    /// Spawns the server and waits for readiness. The flag says the failure was a port clash,
    /// worth another try on another port. A failed server is stopped on return.
    fn run(&self) -> Result<Guarded, (Error, bool)> {
        let log = self.runtime.join("postgres.log");
        let mut argv = as_user(self.run_as, self.bin_dir.join("postgres"));
        argv.extend([
            "-D".into(),
            self.data_dir.as_os_str().to_owned(),
            "-p".into(),
            self.port.to_string().into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-k".into(),
            self.runtime.as_os_str().to_owned(),
            "-c".into(),
            "max_connections=200".into(),
        ]);
        if !self.fsync {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                argv.extend(["-c".into(), setting.into()]);
            }
        }
        let options = GuardOptions {
            signal: "INT",
            cleanup: Some(self.runtime.to_path_buf()),
            log: log.clone(),
        };
        let mut server = Guarded::spawn(&argv, &options)
            .map_err(|e| (io_error("spawning postgres")(e), false))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                let tail = log_tail(&log);
                let in_use = tail.contains("already in use") || tail.contains("could not bind");
                let message = format!("postgres exited ({status})");
                return Err((Error::Start { message, log, tail }, in_use));
            }
            if self.is_ready() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                let message = format!("not accepting connections after {START_TIMEOUT:?}");
                let tail = log_tail(&log);
                return Err((Error::Start { message, log, tail }, false));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        Command::new(self.bin_dir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args(["-t", "2", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}
