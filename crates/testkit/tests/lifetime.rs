//! The servers in the harness's statics (never dropped) are gone soon after the test process
//! exits: a child test process starts both, prints their ports and exits.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "TESTKIT_LIFETIME_CHILD";

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

fn port_of(url: &str) -> u16 {
    let after_host = url.rsplit_once("127.0.0.1:").unwrap().1;
    let digits: String = after_host
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// Runs only as the child of `servers_stop_when_the_test_process_exits`.
#[test]
fn child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let pg = port_of(&mail_testkit::fresh_database());
    let s3 = port_of(&mail_testkit::garage().s3_config().endpoint);
    println!("PORTS={pg},{s3}");
    std::process::exit(0);
}

#[test]
fn servers_stop_when_the_test_process_exits() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = BufReader::new(&output.stdout[..]);
    let ports: Vec<u16> = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("PORTS=").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| panic!("no ports: {}", String::from_utf8_lossy(&output.stderr)))
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in ports {
        while accepts(port) {
            assert!(Instant::now() < deadline, "port {port} still open");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
