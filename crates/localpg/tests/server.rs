//! Real PostgreSQL servers from the system binaries: start, use, stop, restart on a kept data dir,
//! and never outlive the process that started them.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mail_localpg::{LocalPostgres, Options, find_bin_dir};

const CHILD_ENV: &str = "LOCALPG_TEST_CHILD";
/// The kept data dir a child should use (a temp dir when unset).
const DATA_ENV: &str = "LOCALPG_TEST_DATA";

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// Runs SQL through psql; returns trimmed stdout or the error text.
fn psql(pg: &LocalPostgres, database: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(find_bin_dir().unwrap().join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(pg.url(database))
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn temp_cluster_starts_serves_and_stops() {
    let pg = LocalPostgres::start(Options::default()).unwrap();
    let port = pg.port();
    assert!(accepts(port));
    assert_eq!(
        pg.url("x"),
        format!("postgres://postgres@127.0.0.1:{port}/x")
    );
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{port}"))
            .as_os_str()
            .len()
            <= 107
    );

    pg.create_database("t_one").unwrap();
    // Idempotent: the embedded default calls it on every start.
    pg.create_database("t_one").unwrap();
    assert_eq!(
        psql(&pg, "t_one", "SELECT current_database()").unwrap(),
        "t_one"
    );
    assert_eq!(psql(&pg, "t_one", "SHOW max_connections").unwrap(), "200");
    assert_eq!(psql(&pg, "t_one", "SHOW fsync").unwrap(), "off");
    assert_eq!(psql(&pg, "t_one", "SHOW server_encoding").unwrap(), "UTF8");
    assert!(psql(&pg, "missing", "SELECT 1").is_err());
    let bad = pg.create_database("").unwrap_err().to_string();
    assert!(bad.contains("createdb"), "{bad}");

    let data = pg.data_dir().to_path_buf();
    assert!(data.join("PG_VERSION").is_file());
    pg.stop().unwrap();
    assert!(!accepts(port), "port {port} still open after stop");
    assert!(
        !data.exists(),
        "temp data dir {} left behind",
        data.display()
    );
}

#[test]
fn kept_data_dir_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pgdata");
    if nix::unistd::geteuid().is_root() {
        // The postgres user must be able to reach the data dir.
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), None).unwrap();
    }
    let options = Options {
        data_dir: Some(data.clone()),
        port: 0,
        fsync: true,
    };
    let pg = LocalPostgres::start(options.clone()).unwrap();
    assert_eq!(psql(&pg, "postgres", "SHOW fsync").unwrap(), "on");
    pg.create_database("mail").unwrap();
    psql(
        &pg,
        "mail",
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')",
    )
    .unwrap();
    pg.stop().unwrap();
    assert!(data.join("PG_VERSION").is_file());

    let pg = LocalPostgres::start(options).unwrap();
    assert_eq!(psql(&pg, "mail", "SELECT v FROM kept").unwrap(), "yes");
    drop(pg);
    assert!(data.join("PG_VERSION").is_file(), "kept data dir removed");
}

#[test]
fn fixed_port_in_use_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let error = LocalPostgres::start(Options {
        port,
        ..Options::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("did not start"), "{error}");
    assert!(
        error.contains("in use") || error.contains("bind"),
        "{error}"
    );
}

/// Re-invoked as a child process by `server_dies_with_its_process`: starts a server, prints where
/// it lives, then leaves without running any destructor.
#[test]
fn child_entry() {
    let Ok(how) = std::env::var(CHILD_ENV) else {
        return;
    };
    let options = match std::env::var_os(DATA_ENV) {
        Some(data) => Options {
            data_dir: Some(data.into()),
            port: 0,
            fsync: true,
        },
        None => Options::default(),
    };
    let pg = LocalPostgres::start(options).unwrap();
    println!("PORT={} DIR={}", pg.port(), pg.socket_dir().display());
    match how.as_str() {
        "abort" => std::process::abort(),
        // Waits to be killed.
        "hang" => loop {
            std::thread::park();
        },
        _ => {
            // As a static would be: never dropped.
            std::mem::forget(pg);
            std::process::exit(0)
        }
    }
}

fn run_child(how: &str) -> (u16, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, how)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest prints "test child_entry ... " on the same line.
        if let Some((_, rest)) = line.split_once("PORT=") {
            let (port, dir) = rest.split_once(" DIR=").unwrap();
            found = Some((port.parse().unwrap(), PathBuf::from(dir)));
        }
    }
    let output = child.wait_with_output().unwrap();
    found.unwrap_or_else(|| {
        panic!(
            "child printed no port: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn assert_gone(port: u16, dir: &Path) {
    wait_until(
        &format!("port {port} closes"),
        Duration::from_secs(15),
        || !accepts(port),
    );
    wait_until(
        &format!("{} is removed", dir.display()),
        Duration::from_secs(15),
        || !dir.exists(),
    );
}

#[test]
fn server_dies_with_its_process() {
    for how in ["exit", "abort"] {
        let (port, dir) = run_child(how);
        assert_gone(port, &dir);
    }
}

/// A kept data dir the server (run as `postgres` when we are root) can use.
fn kept_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), None).unwrap();
    }
    let data = dir.path().join("pgdata");
    (dir, data)
}

fn kept(data: &Path) -> Options {
    Options {
        data_dir: Some(data.to_path_buf()),
        port: 0,
        fsync: true,
    }
}

/// After a SIGKILL the old server is still shutting down when the next start comes: the
/// start waits for it instead of failing on `postmaster.pid`.
#[test]
fn a_killed_servers_data_starts_again_at_once() {
    let (_dir, data) = kept_data_dir();
    let pg = LocalPostgres::start(kept(&data)).unwrap();
    psql(&pg, "postgres", "CREATE TABLE rounds (n int)").unwrap();
    pg.stop().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "hang")
            .env(DATA_ENV, &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let started = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("PORT="));
        assert!(started, "round {round}: the child did not start its server");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let pg = LocalPostgres::start(kept(&data))
            .unwrap_or_else(|e| panic!("round {round}: no restart right after SIGKILL: {e}"));
        psql(
            &pg,
            "postgres",
            &format!("INSERT INTO rounds VALUES ({round})"),
        )
        .unwrap();
        assert_eq!(
            psql(&pg, "postgres", "SELECT count(*) FROM rounds").unwrap(),
            (round + 1).to_string()
        );
        pg.stop().unwrap();
    }
}

/// A `postmaster.pid` left by a server that is gone, whose pid now belongs to some other live
/// process of the server's user, is stale: the start takes it over.
#[test]
fn a_stale_lock_file_is_taken_over() {
    let (_dir, data) = kept_data_dir();
    LocalPostgres::start(kept(&data)).unwrap().stop().unwrap();
    // A process postgres may signal, so it counts as alive to it: same user.
    let mut stranger = if nix::unistd::geteuid().is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ])
            .args(["sleep", "600"])
            .spawn()
            .unwrap()
    } else {
        Command::new("sleep").arg("600").spawn().unwrap()
    };
    let lock = data.join("postmaster.pid");
    let text = format!(
        "{}\n{}\n0\n5432\n\n127.0.0.1\n",
        stranger.id(),
        data.display()
    );
    std::fs::write(&lock, text).unwrap();
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(&lock, Some(user.uid.as_raw()), None).unwrap();
    }
    let started = LocalPostgres::start(kept(&data));
    let _ = stranger.kill();
    let _ = stranger.wait();
    let pg = started.expect("a stale lock file is taken over");
    assert!(accepts(pg.port()));
    pg.stop().unwrap();
}
