//! An LDAP directory the test controls: Debian's OpenLDAP `slapd` from a temp dir on a free
//! loopback port, with `dc=example,dc=test` and `ou=people` seeded, the `cn=Monitor` backend
//! on (to count binds), and optionally LDAPS/StartTLS with a self-signed certificate. It runs
//! under [`mail_localpg::guard`], so it stops on drop and never outlives the test process.
//!
//! ```no_run
//! let ldap = mail_testkit::Slapd::start(false);
//! ldap.add(&mail_testkit::Slapd::person("carol", &["carol@corp.test"], "pw", &[]));
//! let url = ldap.url(); // ldap://127.0.0.1:PORT
//! ```
//!
//! Recipe (also in docs/testing.md): `slapd.conf` with the core, cosine, inetorgperson and nis
//! schemas, `moduleload back_mdb`, one `mdb` database for the suffix with a `rootpw` from
//! `slappasswd`, then `database monitor`; `slapd -d 0 -h "ldap://127.0.0.1:PORT/" -f conf`;
//! seed with `ldapadd -x`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mail_localpg::guard::{GuardOptions, Guarded};

/// A running slapd; stopped (and its directory removed) on drop.
pub struct Slapd {
    server: Option<Guarded>,
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Slapd {
    pub const SUFFIX: &'static str = "dc=example,dc=test";
    pub const PEOPLE: &'static str = "ou=people,dc=example,dc=test";
    pub const ADMIN_DN: &'static str = "cn=admin,dc=example,dc=test";
    pub const ADMIN_PASSWORD: &'static str = "admin-secret";

    /// Starts slapd with the base entries; with `tls`, also LDAPS on a second port and
    /// StartTLS on the first, with a self-signed certificate for 127.0.0.1 ([`Slapd::ca_file`]).
    /// Panics with the log when it is not up within 10 s: a test cannot run without it.
    pub fn start(tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("slapd-")
            .tempdir()
            .expect("tempdir for slapd");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        let port = free_port();
        let tls_port = tls.then(free_port);
        let rootpw = run("slappasswd", &["-s", Self::ADMIN_PASSWORD]);
        let mut conf = String::new();
        for schema in ["core", "cosine", "inetorgperson", "nis"] {
            conf.push_str(&format!("include /etc/ldap/schema/{schema}.schema\n"));
        }
        conf.push_str(&format!(
            "pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n",
            d = d.display()
        ));
        if tls {
            make_certificate(d);
            conf.push_str(&format!(
                "TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = d.display()
            ));
        }
        conf.push_str(&format!(
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             database mdb\nmaxsize 104857600\nsuffix \"{suffix}\"\nrootdn \"{admin}\"\n\
             rootpw {rootpw}\ndirectory {d}/db\n\
             access to attrs=userPassword by self =xw by anonymous auth by * none\n\
             access to * by * read\n\
             database monitor\n\
             access to dn.subtree=\"cn=Monitor\" by dn.exact=\"{admin}\" read by * none\n",
            suffix = Self::SUFFIX,
            admin = Self::ADMIN_DN,
            rootpw = rootpw.trim(),
            d = d.display(),
        ));
        let conf_path = d.join("slapd.conf");
        std::fs::write(&conf_path, conf).expect("slapd.conf");
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if let Some(tls_port) = tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{tls_port}/"));
        }
        let argv: Vec<OsString> = vec![
            "/usr/sbin/slapd".into(),
            "-d".into(),
            "0".into(),
            "-h".into(),
            urls.into(),
            "-f".into(),
            conf_path.into(),
        ];
        let log = d.join("slapd.log");
        let server = Guarded::spawn(
            &argv,
            &GuardOptions {
                signal: "INT",
                cleanup: None,
                log: log.clone(),
            },
        )
        .unwrap_or_else(|e| panic!("starting /usr/sbin/slapd (Debian slapd): {e}"));
        let mut slapd = Slapd {
            server: Some(server),
            port,
            tls_port,
            dir,
        };
        slapd.wait_up(&log);
        slapd.add(&format!(
            "dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\no: Example\n\
             dc: example\n\ndn: {people}\nobjectClass: organizationalUnit\nou: people\n",
            suffix = Self::SUFFIX,
            people = Self::PEOPLE
        ));
        slapd
    }

    fn wait_up(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(server) = &mut self.server
                && let Ok(Some(status)) = server.try_wait()
            {
                panic!("slapd exited ({status}):\n{}", tail(log));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
                && self
                    .tls_port
                    .is_none_or(|p| TcpStream::connect((Ipv4Addr::LOCALHOST, p)).is_ok())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slapd not up after 10 s:\n{}",
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    pub fn ldaps_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    /// The self-signed certificate (PEM) a client must trust for TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// A file holding the admin password (for a `bindPasswordFile`).
    pub fn admin_password_file(&self) -> PathBuf {
        let path = self.dir.path().join("admin-password");
        std::fs::write(&path, format!("{}\n", Self::ADMIN_PASSWORD)).expect("password file");
        path
    }

    /// An `inetOrgPerson` under `ou=people` in LDIF: `uid`, each of `mail`, `userPassword`,
    /// and `extra` attribute lines (`("employeeNumber", "5000")`).
    pub fn person(uid: &str, mail: &[&str], password: &str, extra: &[(&str, &str)]) -> String {
        let mut ldif = format!(
            "dn: uid={uid},{people}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n\
             sn: {uid}\nuserPassword: {password}\n",
            people = Self::PEOPLE
        );
        for m in mail {
            ldif.push_str(&format!("mail: {m}\n"));
        }
        for (name, value) in extra {
            ldif.push_str(&format!("{name}: {value}\n"));
        }
        ldif
    }

    /// The DN of the person `uid`.
    pub fn dn_of(uid: &str) -> String {
        format!("uid={uid},{}", Self::PEOPLE)
    }

    /// Adds LDIF entries as the admin (`ldapadd -x`); panics with the tool's output on error.
    pub fn add(&self, ldif: &str) {
        let path = self.dir.path().join("add.ldif");
        std::fs::write(&path, ldif).expect("ldif");
        self.admin_tool("ldapadd", &["-f", &path.display().to_string()]);
    }

    /// Deletes the entry `dn`.
    pub fn delete(&self, dn: &str) {
        self.admin_tool("ldapdelete", &[dn]);
    }

    /// Binds the server has completed so far (the monitor's `cn=Bind,cn=Operations`); the
    /// admin bind of this query itself counts once.
    pub fn binds(&self) -> u64 {
        let out = self.admin_tool(
            "ldapsearch",
            &[
                "-LLL",
                "-b",
                "cn=Bind,cn=Operations,cn=Monitor",
                "-s",
                "base",
                "monitorOpCompleted",
            ],
        );
        out.lines()
            .find_map(|l| l.strip_prefix("monitorOpCompleted: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no bind count in:\n{out}"))
    }

    fn admin_tool(&self, tool: &str, args: &[&str]) -> String {
        let mut all = vec!["-x", "-H"];
        let url = self.url();
        all.push(&url);
        all.extend(["-D", Self::ADMIN_DN, "-w", Self::ADMIN_PASSWORD]);
        all.extend(args);
        run(tool, &all)
    }

    /// Stops the server now (the tests of an unreachable directory); its port stays closed.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `tool args`, panicking with its output unless it succeeds; its stdout.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (Debian slapd/ldap-utils): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed certificate for 127.0.0.1 and localhost: `cert.pem`, `key.pem` in `dir`.
fn make_certificate(dir: &Path) {
    let key = dir.join("key.pem").display().to_string();
    let cert = dir.join("cert.pem").display().to_string();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
    );
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
