//! A PostgreSQL server run from the system's binaries (Debian's `postgresql` package).
//!
//! Used by the mail server's embedded default (persistent data dir, fsync on) and by the test
//! harness (throwaway temp dir, fsync off). Synchronous on purpose: it is started once, before any
//! runtime exists, and stopped at exit. The server is tied to this process through a watchdog
//! ([`guard`]), so it never outlives us, even when we are killed.
#![forbid(unsafe_code)]

pub mod guard;
mod server;

pub use server::{LocalPostgres, Options};

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// What went wrong starting or talking to the local PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries not found (looked in $PG_BIN_DIR, /usr/lib/postgresql/*/bin, PATH): install them with 'apt-get install postgresql'"
    )]
    BinariesNotFound,
    #[error("running as root, but there is no 'postgres' system user to run PostgreSQL as")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error("PostgreSQL did not start: {message} (log {}):\n{tail}", log.display())]
    Start {
        message: String,
        log: PathBuf,
        tail: String,
    },
    #[error("PostgreSQL did not stop: {0}")]
    Stop(String),
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The directory holding `initdb`, `postgres`, `pg_isready`, `createdb`: `$PG_BIN_DIR`, else the
/// highest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from)
        && has_initdb(&dir)
    {
        return Ok(dir);
    }
    if let Some(dir) = highest_version_dir(Path::new("/usr/lib/postgresql"))
        && has_initdb(&dir)
    {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_initdb(&dir) {
                return Ok(dir);
            }
        }
    }
    Err(Error::BinariesNotFound)
}

/// `root/<n>/bin` for the numerically highest `<n>` (so 16 beats 9.6).
fn highest_version_dir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, e.path().join("bin")))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, dir)| dir)
}

/// A port that was free on 127.0.0.1 a moment ago. Racy by nature: callers retry on
/// "address in use".
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where PostgreSQL can keep the data asked for at `requested`. As root the server runs as the
/// `postgres` user, which cannot enter a private directory such as `/root`; the data then goes
/// under `/var/lib/kubemail/` instead, in a folder named for the requested path, so the same
/// `requested` always finds the same data. Otherwise `requested` itself.
pub fn reachable_data_dir(requested: &Path) -> PathBuf {
    if !nix::unistd::geteuid().is_root() {
        return requested.to_path_buf();
    }
    let absolute = std::path::absolute(requested).unwrap_or_else(|_| requested.to_path_buf());
    if others_can_reach(&absolute) {
        return absolute;
    }
    let name: String = absolute
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    PathBuf::from("/var/lib/kubemail").join(name.trim_matches('-'))
}

/// Whether every existing ancestor of `path` lets others through (`o+x`), so a user other
/// than the owner can reach `path` itself.
fn others_can_reach(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .skip(1)
        .filter_map(|dir| std::fs::metadata(dir).ok())
        .all(|meta| meta.permissions().mode() & 0o001 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_version_wins_numerically() {
        let root = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "16", "notaversion"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).unwrap();
        }
        assert_eq!(
            highest_version_dir(root.path()),
            Some(root.path().join("16").join("bin"))
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(highest_version_dir(empty.path()), None);
        assert_eq!(highest_version_dir(&empty.path().join("missing")), None);
    }

    #[test]
    fn reachability_follows_the_ancestors() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        let private = root.path().join("private");
        for (dir, mode) in [(&open, 0o755), (&private, 0o700)] {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // tempdir() itself is 0700: open it up so only our two folders differ.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(others_can_reach(&open.join("data")));
        assert!(!others_can_reach(&private.join("data")));
        assert!(!others_can_reach(&private.join("deeper/data")));
    }

    #[test]
    fn missing_binaries_message_says_what_to_install() {
        let message = Error::BinariesNotFound.to_string();
        assert!(!message.contains('\n'));
        assert!(message.contains("apt-get install postgresql"), "{message}");
    }

    #[test]
    fn finds_the_system_binaries() {
        let dir = find_bin_dir().expect("postgresql installed on this machine");
        assert!(dir.join("initdb").is_file());
        assert!(dir.join("pg_isready").is_file());
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
