//! A domain of benchmark users written as manifests (the same YAML a platform team applies), so
//! the server under test is set up exactly as in production.

use std::fmt::Write as _;
use std::path::Path;

/// The domain every benchmark user lives in.
pub const DOMAIN: &str = "bench.test";

/// One mailbox: `local@bench.test`, password `<local>-bench-pw`, a quota in Kubernetes notation.
pub struct User<'a> {
    pub local: &'a str,
    pub quota: &'a str,
}

impl User<'_> {
    pub fn address(&self) -> String {
        format!("{}@{DOMAIN}", self.local)
    }
    pub fn password(&self) -> String {
        password(self.local)
    }
}

pub fn password(local: &str) -> String {
    format!("{local}-bench-pw")
}

/// Writes the domain and `users` into `dir` as one manifest file.
pub fn write(dir: &Path, users: &[User<'_>]) -> std::io::Result<()> {
    let mut yaml = format!(
        "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\nmetadata:\n  name: bench-test\n\
         spec:\n  domain: {DOMAIN}\n  reclaimPolicy: Delete\n"
    );
    for user in users {
        let name = user.local.replace(['.', '_'], "-");
        let _ = write!(
            yaml,
            "---\napiVersion: mail.kubemail.io/v1alpha1\nkind: Mailbox\nmetadata:\n  name: {name}\n\
             spec:\n  address: {}\n  quota: {}\n  passwordSecretRef:\n    name: {name}-pw\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-pw\n\
             stringData:\n  password: {}\n",
            user.address(),
            user.quota,
            user.password(),
        );
    }
    std::fs::write(dir.join("bench.yaml"), yaml)
}
