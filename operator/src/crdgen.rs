//! `crdgen`: the CRD YAML in `crds/` and in the chart comes from the Rust types and nowhere
//! else.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// The directories the CRD files go to (repeat the flag for several).
    #[arg(long, default_values = ["crds", "charts/mail-platform/crds"])]
    out: Vec<PathBuf>,
    /// Write nothing; fail naming the files that differ from what the types generate.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    for out in &args.out {
        if args.check {
            let stale = stale_files(out)?;
            if !stale.is_empty() {
                bail!(
                    "stale CRD files in {}: {} (run `mail-operator crdgen --out {}`)",
                    out.display(),
                    stale.join(", "),
                    out.display()
                );
            }
            continue;
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (name, yaml) in mail_resources::crd_files() {
            let path = out.join(name);
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
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

    /// Fails when a resource type changed and `crds/` or the chart's copy was not regenerated.
    #[test]
    fn committed_crds_are_current() {
        for dir in ["../crds", "../charts/mail-platform/crds"] {
            let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            let stale = stale_files(&crds).expect("crds readable");
            assert!(
                stale.is_empty(),
                "{dir} stale: {stale:?}; run `cargo run -p mail-operator -- crdgen`"
            );
        }
    }

    #[test]
    fn check_names_changed_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().to_path_buf();
        run(&Args {
            out: vec![out.clone()],
            check: false,
        })
        .expect("writes");
        assert!(stale_files(&out).expect("reads").is_empty());
        run(&Args {
            out: vec![out.clone()],
            check: true,
        })
        .expect("current");

        std::fs::write(out.join("mailbox.yaml"), "edited by hand").expect("write");
        std::fs::remove_file(out.join("dkimkey.yaml")).expect("remove");
        assert_eq!(
            stale_files(&out).expect("reads"),
            ["mailbox.yaml", "dkimkey.yaml (missing)"]
        );
        let err = run(&Args {
            out: vec![out],
            check: true,
        })
        .expect_err("stale")
        .to_string();
        assert!(
            err.contains("mailbox.yaml, dkimkey.yaml (missing)"),
            "{err}"
        );
    }
}
