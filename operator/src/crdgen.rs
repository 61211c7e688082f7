//! `crdgen`: the CRD YAML in `crds/` comes from the Rust types and nowhere else.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// The directory the CRD files go to.
    #[arg(long, default_value = "crds")]
    out: PathBuf,
    /// Write nothing; fail naming the files that differ from what the types generate.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.check {
        let stale = stale_files(&args.out)?;
        if !stale.is_empty() {
            bail!(
                "stale CRD files in {}: {} (run `mail-operator crdgen --out {}`)",
                args.out.display(),
                stale.join(", "),
                args.out.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, yaml) in mail_resources::crd_files() {
        let path = args.out.join(name);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The generated files that are missing or differ in `dir`.
pub fn stale_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut stale = Vec::new();
    for (name, yaml) in mail_resources::crd_files() {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == yaml => {}
            Ok(_) => stale.push(name.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stale.push(format!("{name} (missing)"))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when a resource type changed and `crds/` was not regenerated.
    #[test]
    fn committed_crds_are_current() {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let stale = stale_files(&crds).expect("crds/ readable");
        assert!(
            stale.is_empty(),
            "stale: {stale:?}; run `cargo run -p mail-operator -- crdgen`"
        );
    }

    #[test]
    fn check_names_changed_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().to_path_buf();
        run(&Args {
            out: out.clone(),
            check: false,
        })
        .expect("writes");
        assert!(stale_files(&out).expect("reads").is_empty());
        run(&Args {
            out: out.clone(),
            check: true,
        })
        .expect("current");

        std::fs::write(out.join("mailbox.yaml"), "edited by hand").expect("write");
        std::fs::remove_file(out.join("dkimkey.yaml")).expect("remove");
        assert_eq!(
            stale_files(&out).expect("reads"),
            ["mailbox.yaml", "dkimkey.yaml (missing)"]
        );
        let err = run(&Args { out, check: true })
            .expect_err("stale")
            .to_string();
        assert!(
            err.contains("mailbox.yaml, dkimkey.yaml (missing)"),
            "{err}"
        );
    }
}
