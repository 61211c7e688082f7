//! A child server that cannot outlive us.
//!
//! The server runs under a tiny `sh` watchdog whose stdin is a pipe from this process. We hold
//! the only write end, so when we exit, abort or are killed the kernel closes it, the watchdog's
//! `read` returns and it signals the server. No unsafe code, no `prctl`, and it works for servers
//! kept in statics (which are never dropped).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `$1` = signal, `$2` = dir to remove once stopped through the pipe ("" for none), rest = argv.
/// The dir is removed only when we asked for the stop (the marker exists): a server that died on
/// its own keeps its log for the error message.
const WATCHDOG: &str = r#"
sig=$1; cleanup=$2; shift 2
exec 3<&0 </dev/null
"$@" &
pid=$!
{ read -r _ <&3; [ -n "$cleanup" ] && : > "$cleanup/.stopping"; kill -"$sig" "$pid" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
if [ -n "$cleanup" ] && [ -e "$cleanup/.stopping" ]; then
    rm -rf -- "$cleanup"
else
    kill "$watcher" 2>/dev/null
fi
exit "$status"
"#;

/// How to run a guarded server.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    /// Signal name for `kill -SIG` that makes the server shut down (`INT`, `TERM`).
    pub signal: &'static str,
    /// A directory removed after the server stopped because we asked (or died).
    pub cleanup: Option<PathBuf>,
    /// Where the server's stdout and stderr go.
    pub log: PathBuf,
}

/// A running guarded server. Dropping it stops the server and waits for it.
#[derive(Debug)]
pub struct Guarded {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guarded {
    /// Starts `argv` under the watchdog. The working directory is `/`, so a server running as
    /// another user never trips over an unreadable current directory.
    pub fn spawn(argv: &[OsString], options: &GuardOptions) -> io::Result<Self> {
        if argv.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        }
        let log = File::create(&options.log)?;
        let cleanup = options
            .cleanup
            .as_deref()
            .map(Path::as_os_str)
            .unwrap_or_default();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(options.signal)
            .arg(cleanup)
            .args(argv)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// The watchdog's exit status once the server has exited, else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Asks the server to shut down and waits up to `timeout` for it to exit. On timeout the
    /// watchdog is killed (the server may linger) and an error says so.
    pub fn stop(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("server did not stop within {timeout:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.stop(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn stop_signals_the_server_and_removes_the_cleanup_dir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let options = GuardOptions {
            signal: "TERM",
            cleanup: Some(work.clone()),
            log: dir.path().join("log"),
        };
        let mut guarded = Guarded::spawn(&argv(&["sleep", "60"]), &options).unwrap();
        assert!(guarded.try_wait().unwrap().is_none());
        let started = Instant::now();
        let status = guarded.stop(Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        // sleep killed by TERM: the watchdog reports a non-zero status.
        assert!(!status.success());
        assert!(!work.exists(), "cleanup dir should be gone");
    }

    #[test]
    fn a_server_that_dies_alone_keeps_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let options = GuardOptions {
            signal: "INT",
            cleanup: Some(work.clone()),
            log: dir.path().join("log"),
        };
        let script = "echo boom >&2; exit 3";
        let mut guarded = Guarded::spawn(&argv(&["sh", "-c", script]), &options).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = guarded.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(3));
        assert!(work.exists());
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.contains("boom"), "{log}");
    }
}
