//! `mail-operator local` as a user runs it: the examples against a real PostgreSQL.

use std::path::Path;
use std::process::{Command, Output};

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mail-operator"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mail-operator")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn local_applies_the_examples_once_and_then_changes_nothing() {
    let url = mail_testkit::fresh_database();
    let blobs = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let args = [
        "local",
        "--manifests",
        examples.to_str().expect("utf-8 path"),
        "--database-url",
        &url,
        "--blob-dir",
        blobs.path().to_str().expect("utf-8 path"),
    ];
    let first = operator(&args);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let report = text(&first.stdout);
    assert!(report.contains("MailDomain: 1 created"), "{report}");
    assert!(report.contains("Mailbox: 2 created"), "{report}");
    assert!(report.contains("DkimKey: 1 created"), "{report}");
    assert!(blobs.path().join("mail-example-test").is_dir());

    let second = operator(&args);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let report = text(&second.stdout);
    assert!(
        report.contains("MailDomain: 0 created, 0 updated, 1 unchanged, 0 removed")
            && report.contains("Mailbox: 0 created, 0 updated, 2 unchanged, 0 removed"),
        "{report}"
    );
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let url = mail_testkit::fresh_database();
    let dir = tempfile::tempdir().expect("tempdir");
    // A hosted domain, so that the run gets as far as validating the rest.
    std::fs::write(
        dir.path().join("domain.yaml"),
        "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\nmetadata: {name: o}\n\
         spec: {domain: other.test}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: mail.kubemail.io/v1alpha1\nkind: Mailbox\nmetadata: {name: x}\n\
         spec: {address: x@nowhere.test}\n---\n\
         apiVersion: mail.kubemail.io/v1alpha1\nkind: DkimKey\nmetadata: {name: k}\n\
         spec: {domain: nowhere.test, selector: s}\n",
    )
    .expect("write");
    let no_domains = tempfile::tempdir().expect("tempdir");
    let no_domains = no_domains.path().to_str().expect("utf-8 path");
    let blob_dir = dir.path().join("blobs");
    let manifests = dir.path().to_str().expect("utf-8 path");
    let blob_dir = blob_dir.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "local",
                "--manifests",
                manifests,
                "--database-url",
                &url,
                "--blob-dir",
                blob_dir,
            ],
            "invalid manifests: Mailbox default/x: spec.address x@nowhere.test: domain \
             nowhere.test is not hosted by any MailDomain; add one; DkimKey default/k",
        ),
        (
            &[
                "local",
                "--manifests",
                "/nonexistent",
                "--database-url",
                &url,
                "--blob-dir",
                blob_dir,
            ],
            "reading /nonexistent",
        ),
        (
            &[
                "local",
                "--manifests",
                no_domains,
                "--database-url",
                &url,
                "--blob-dir",
                blob_dir,
            ],
            "defines no MailDomain; applying it would remove every hosted domain",
        ),
        (
            &["local", "--manifests", manifests, "--database-url", &url],
            "give --blob-dir, or --s3-endpoint",
        ),
        (
            &[
                "local",
                "--manifests",
                manifests,
                "--database-url",
                "postgres://nobody@127.0.0.1:1/none",
                "--blob-dir",
                blob_dir,
            ],
            "connecting to PostgreSQL",
        ),
    ];
    for (args, want) in cases {
        let out = operator(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// Kills the watched child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_follows_edits() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let url = mail_testkit::fresh_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&examples).expect("examples") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, manifests.join(path.file_name().expect("name"))).expect("copy");
    }
    let blob_dir = dir.path().join("blobs");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_mail-operator"))
            .args(["local", "--watch", "1", "--database-url", &url])
            .arg("--manifests")
            .arg(&manifests)
            .arg("--blob-dir")
            .arg(&blob_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn mail-operator"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a report").expect("utf-8");
    assert!(first.contains("Mailbox: 2 created"), "{first}");

    std::fs::remove_file(manifests.join("10-bob.yaml")).expect("remove bob");
    let removed = lines
        .by_ref()
        .map_while(Result::ok)
        .take(10)
        .find(|line| line.contains("Mailbox: 0 created, 0 updated, 1 unchanged, 1 removed"));
    assert!(removed.is_some(), "bob's removal was never reported");
}
