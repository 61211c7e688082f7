//! The remote side of the queue tests: a DNS server (named) with the test zones, a test CA and
//! certificate, aiosmtpd sinks playing remote MX hosts and relays, an HTTPS server for MTA-STS
//! policies, and a queue runner on the test's database pointed at all of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_localpg::guard::{GuardOptions, Guarded};
use mail_testkit::Named;
use mailserver::outbound::{Outbound, OutboundConfig};
use mailserver::queue::runner::{Runner, RunnerSettings};
use mailserver::queue::{Queue, QueueSettings};
use mailserver::store::Store;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use tokio::sync::watch;

/// The system Python, which has Debian's aiosmtpd and dkimpy (not a pyenv one).
pub const PYTHON: &str = "/usr/bin/python3";

/// Names the test certificate carries (every remote host of the zones below).
const CERT_NAMES: [&str; 6] = [
    "mx.remote.test",
    "mx.sts-ok.test",
    "mx.sts-bad.test",
    "mta-sts.sts-ok.test",
    "mta-sts.sts-bad.test",
    "relay.test",
];

/// The zones: every host is 127.0.0.1, told apart by name only.
pub fn zones(dkim_txt: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "remote.test",
            "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.1\n".to_string(),
        ),
        ("implicit.test", "@ IN A 127.0.0.1\n".to_string()),
        ("nullmx.test", "@ IN MX 0 .\n".to_string()),
        (
            "sts-ok.test",
            "@ IN MX 10 mx.sts-ok.test.\nmx IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n\
             _mta-sts IN TXT \"v=STSv1; id=1\"\n"
                .to_string(),
        ),
        (
            "sts-bad.test",
            "@ IN MX 10 mx.sts-bad.test.\nmx IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n\
             _mta-sts IN TXT \"v=STSv1; id=1\"\n"
                .to_string(),
        ),
        ("relay.test", "@ IN A 127.0.0.1\n".to_string()),
        (
            "example.test",
            format!("sel._domainkey IN TXT {dkim_txt}\n"),
        ),
    ]
}

/// A CA and one certificate for [`CERT_NAMES`] signed by it, as PEM files in `dir`.
pub struct Certs {
    pub ca: CertificateDer<'static>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "queue test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = CERT_NAMES.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let ca_file = dir.join("ca.pem");
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("ca.pem");
        std::fs::write(&cert_file, cert.pem()).expect("cert.pem");
        std::fs::write(&key_file, key.serialize_pem()).expect("key.pem");
        Self {
            ca: ca_cert.der().clone(),
            cert_file,
            key_file,
        }
    }
}

/// A Python server under the watchdog; its first output line is its port.
pub struct PyServer {
    _guard: Guarded,
    pub port: u16,
}

impl PyServer {
    pub fn start(dir: &Path, name: &str, script: &str, args: &[OsString]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/queue")
            .join(script);
        let mut argv: Vec<OsString> = vec![PYTHON.into(), "-u".into(), script.into()];
        argv.extend(args.iter().cloned());
        let guard = Guarded::spawn(
            &argv,
            &GuardOptions {
                signal: "TERM",
                cleanup: None,
                log: log.clone(),
            },
        )
        .expect("python starts");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return Self {
                    _guard: guard,
                    port,
                };
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One message an aiosmtpd sink accepted.
#[derive(Clone, Debug, Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
    pub tls: bool,
    pub auth: bool,
}

/// An aiosmtpd sink recording into a JSON-lines file.
pub struct Sink {
    pub server: PyServer,
    out: PathBuf,
}

impl Sink {
    pub fn start(dir: &Path, name: &str, extra: &[OsString]) -> Self {
        let out = dir.join(format!("{name}.jsonl"));
        let mut args: Vec<OsString> = vec![out.clone().into()];
        args.extend(extra.iter().cloned());
        Self {
            server: PyServer::start(dir, name, "sink.py", &args),
            out,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What was received for `rcpt` (each message once per recipient it named).
    pub fn received_for(&self, rcpt: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.rcpt_tos.iter().any(|t| t.eq_ignore_ascii_case(rcpt)))
            .collect()
    }
}

/// Everything remote, started for one test.
pub struct Remote {
    pub dns: Named,
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub mx: Sink,
}

impl Remote {
    pub fn start(dkim_txt: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = Certs::make(dir.path());
        let zones = zones(dkim_txt);
        let refs: Vec<(&str, &str)> = zones.iter().map(|(o, r)| (*o, r.as_str())).collect();
        let dns = Named::start(&refs);
        let tls: Vec<OsString> = vec![
            "--tls".into(),
            certs.cert_file.clone().into(),
            certs.key_file.clone().into(),
        ];
        let mx = Sink::start(dir.path(), "mx", &tls);
        Self {
            dns,
            dir,
            certs,
            mx,
        }
    }

    /// The outbound configuration reaching this remote world (MX port = the sink's).
    pub fn outbound(&self) -> OutboundConfig {
        OutboundConfig {
            hostname: "mail.example.test".into(),
            dns_server: Some(self.dns.address()),
            smtp_port: self.mx.server.port,
            extra_ca: vec![self.certs.ca.clone()],
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            ..OutboundConfig::default()
        }
    }
}

/// Queue settings for tests: quick retries.
pub fn quick_settings() -> QueueSettings {
    QueueSettings {
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        hostname: "mail.example.test".into(),
        ..QueueSettings::default()
    }
}

/// A running queue runner; stopped on drop.
pub struct RunningRunner {
    stop: watch::Sender<bool>,
}

impl Drop for RunningRunner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn start_runner(
    store: &Store,
    settings: QueueSettings,
    outbound: OutboundConfig,
) -> RunningRunner {
    let queue = Queue::new(store.clone(), settings);
    let outbound = Arc::new(Outbound::new(outbound).expect("outbound"));
    let runner = Arc::new(Runner::new(
        queue,
        outbound,
        RunnerSettings {
            poll: Duration::from_millis(50),
            ..RunnerSettings::default()
        },
    ));
    let (stop, stopped) = watch::channel(false);
    let _task = runner.clone().spawn(stopped);
    RunningRunner { stop }
}

/// Polls `check` every 50 ms until it gives `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
