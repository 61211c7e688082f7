//! A DNS server the test controls: Debian's BIND `named` serving zones written from text, on a
//! free loopback port, stopped on drop. For SPF/DKIM/DMARC/MX/MTA-STS lookups in tests.
//!
//! ```no_run
//! let dns = mail_testkit::Named::start(&[("example.test", "@ IN MX 10 mx.example.test.\n")]);
//! dns.set_zone("example.test", "@ IN TXT \"v=spf1 -all\"\n"); // reloaded in place
//! let server: std::net::SocketAddr = dns.address();
//! ```

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `named`, authoritative for the zones it was given (no recursion).
pub struct Named {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
    serial: std::sync::atomic::AtomicU32,
}

impl Named {
    /// Starts `named` with one primary zone per `(origin, records)`; `records` are zone-file
    /// lines relative to the origin (an SOA and NS are added). Panics with the log when it does
    /// not come up within 10 s: a test cannot run without it.
    pub fn start(zones: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for named");
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display().to_string();
        let mut conf = format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
             listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
             recursion no; dnssec-validation no; notify no; }};\n"
        );
        for (origin, records) in zones {
            let file = zone_path(dir.path(), origin);
            std::fs::write(&file, zone_text(origin, 1, records)).expect("zone file");
            conf.push_str(&format!(
                "zone \"{origin}\" {{ type primary; file \"{}\"; }};\n",
                file.display()
            ));
        }
        let conf_path = dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).expect("named.conf");
        let log = dir.path().join("named.log");
        let child = Command::new("/usr/sbin/named")
            .args(["-g", "-4", "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("named log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting /usr/sbin/named (Debian bind9): {e}"));
        let named = Named {
            child,
            address: (Ipv4Addr::LOCALHOST, port).into(),
            dir,
            serial: std::sync::atomic::AtomicU32::new(1),
        };
        named.wait_for_log("running", &log);
        named
    }

    /// Where to send queries (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the records of a zone given to [`Named::start`] and reloads it; returns when
    /// named has loaded the new serial.
    pub fn set_zone(&self, origin: &str, records: &str) {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let file = zone_path(self.dir.path(), origin);
        std::fs::write(&file, zone_text(origin, serial, records)).expect("zone file");
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP named");
        assert!(status.success(), "kill -HUP named failed");
        let log = self.dir.path().join("named.log");
        self.wait_for_log(&format!("zone {origin}/IN: loaded serial {serial}"), &log);
    }

    fn wait_for_log(&self, needle: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(needle) {
                return;
            }
            if Instant::now() > deadline {
                panic!("named did not report {needle:?} within 10 s; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zone_path(dir: &Path, origin: &str) -> PathBuf {
    dir.join(format!("{}.zone", origin.trim_end_matches('.')))
}

fn zone_text(origin: &str, serial: u32, records: &str) -> String {
    let origin = origin.trim_end_matches('.');
    format!(
        "$ORIGIN {origin}.\n$TTL 1\n\
         @ IN SOA ns1.{origin}. hostmaster.{origin}. {serial} 7200 3600 1209600 1\n\
         @ IN NS ns1.{origin}.\nns1 IN A 127.0.0.1\n{records}\n"
    )
}
