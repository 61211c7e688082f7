//! Local mode's input: YAML manifests in a directory, as `kubectl apply -f DIR` would read them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use serde_yaml::Value;

use crate::desired::{DEFAULT_NAMESPACE, Desired, SecretData};
use mail_resources::{DkimKey, GROUP, MailDomain, Mailbox, VERSION};

/// Why the manifests could not be loaded. Each names the file, and the document when it is
/// about one (0-based index in a `---` separated file, and the line it is on).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}, {}: {message}", path.display(), place(*index, *line))]
    Document {
        path: PathBuf,
        index: usize,
        /// 1-based line of the field at fault, or of the document's start.
        line: Option<usize>,
        message: String,
    },
    #[error(
        "{dir} defines no MailDomain; applying it would remove every hosted domain, so nothing \
         was changed (a half-written checkout or a wrong path looks like this)"
    )]
    NoDomains { dir: PathBuf },
}

/// What loading found: the desired state and warnings about what it skipped (for the caller
/// to show).
#[derive(Debug, Default)]
pub struct Loaded {
    pub desired: Desired,
    pub warnings: Vec<String>,
}

/// Loads every `*.yaml` / `*.yml` file under `dir` (recursively, in sorted path order). A
/// directory that defines no MailDomain is an error: syncing it would remove everything.
pub fn load_dir(dir: &Path) -> Result<Loaded, ManifestError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut loaded = Loaded::default();
    let mut seen = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        load_text(&path, &text, &mut loaded, &mut seen)?;
    }
    // Local mode removes what the directory no longer names; an empty directory would take
    // every domain with it. Remove domains by deleting their files one at a time instead.
    if loaded.desired.domains.is_empty() {
        return Err(ManifestError::NoDomains {
            dir: dir.to_path_buf(),
        });
    }
    Ok(loaded)
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            collect_files(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    Ok(())
}

fn place(index: usize, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("line {line} (document {index})"),
        None => format!("document {index}"),
    }
}

/// The kinds of our API group that local mode applies.
const KINDS: [&str; 3] = ["MailDomain", "Mailbox", "DkimKey"];

/// Why a document was refused, and the top-level field it is about (for the line number).
struct Refusal {
    field: Option<&'static str>,
    message: String,
}

impl<T: Into<String>> From<T> for Refusal {
    fn from(message: T) -> Self {
        Refusal {
            field: None,
            message: message.into(),
        }
    }
}

/// The lines of each `---` separated document of `text`, numbered from 1, as the YAML parser
/// counts documents: text before the first separator that is only blanks and comments is no
/// document of its own.
fn document_lines(text: &str) -> Vec<Vec<(usize, &str)>> {
    let mut documents = vec![Vec::new()];
    for (number, line) in text.lines().enumerate() {
        let separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if separator {
            let first = documents.len() == 1;
            let empty = documents[0].iter().all(|(_, l): &(usize, &str)| {
                let l = l.trim();
                l.is_empty() || l.starts_with('#')
            });
            if first && empty {
                documents[0].clear();
            } else {
                documents.push(Vec::new());
            }
            continue;
        }
        documents
            .last_mut()
            .expect("one at least")
            .push((number + 1, line));
    }
    documents
}

/// The line of `field:` at the top level of a document, else its first line with content.
fn line_of(document: &[(usize, &str)], field: Option<&str>) -> Option<usize> {
    let content = |(_, l): &&(usize, &str)| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    };
    field
        .and_then(|field| {
            document.iter().find(|(_, l)| {
                l.strip_prefix(field)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
        })
        .or_else(|| document.iter().find(content))
        .map(|(number, _)| *number)
}

/// Adds the documents of one file. `seen` holds (kind, namespace, name) of objects so far, so
/// a second definition of one object is an error rather than a silent override.
pub fn load_text(
    path: &Path,
    text: &str,
    loaded: &mut Loaded,
    seen: &mut BTreeSet<(String, String, String)>,
) -> Result<(), ManifestError> {
    let lines = document_lines(text);
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let line = |field| line_of(lines.get(index)?, field);
        let error = |refusal: Refusal| ManifestError::Document {
            path: path.to_path_buf(),
            index,
            line: line(refusal.field),
            message: refusal.message,
        };
        let value = Value::deserialize(document)
            .map_err(|e| error(Refusal::from(format!("not YAML: {e}"))))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        if let Some(warning) = add_document(value, loaded, seen).map_err(error)? {
            let warning = format!(
                "{}, {}: {warning}",
                path.display(),
                place(index, line(None))
            );
            loaded.warnings.push(warning);
        }
    }
    Ok(())
}

/// Adds one document; returns a warning when it was skipped.
fn add_document(
    mut value: Value,
    loaded: &mut Loaded,
    seen: &mut BTreeSet<(String, String, String)>,
) -> Result<Option<String>, Refusal> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("has no {name}"))
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let ours = api_version == format!("{GROUP}/{VERSION}");
    let known = matches!(
        (ours, api_version.as_str(), kind.as_str()),
        (true, _, "MailDomain" | "Mailbox" | "DkimKey") | (_, "v1", "Secret")
    );
    // A typo in our group, version or kind must not pass as "some other kind": the sync
    // would then remove the object the document was meant to keep.
    let our_group = api_version.split_once('/').map(|(group, _)| group) == Some(GROUP);
    let our_kind = KINDS.iter().any(|k| k.eq_ignore_ascii_case(&kind));
    if !known && (our_group || our_kind) {
        let field = if our_group && !KINDS.contains(&kind.as_str()) {
            "kind"
        } else {
            "apiVersion"
        };
        return Err(Refusal {
            field: Some(field),
            message: format!(
                "unknown {field}: {kind} ({api_version}); local mode applies {} of apiVersion \
                 {GROUP}/{VERSION}, so nothing was applied",
                KINDS.join(", ")
            ),
        });
    }
    if !known {
        return Ok(Some(format!(
            "skipped {kind} ({api_version}): not a kind local mode applies"
        )));
    }

    // Default the namespace in the document itself, so every later lookup sees it.
    let metadata = value
        .get_mut("metadata")
        .and_then(Value::as_mapping_mut)
        .ok_or("has no metadata")?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("has no metadata.name")?
        .to_string();
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => {
            metadata.insert("namespace".into(), DEFAULT_NAMESPACE.into());
            DEFAULT_NAMESPACE.to_string()
        }
        Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
        Some(_) => return Err("metadata.namespace is not a name".into()),
    };
    if !seen.insert((kind.clone(), namespace.clone(), name.clone())) {
        return Err(format!("{kind} {namespace}/{name} is defined twice").into());
    }

    let invalid = |e: serde_yaml::Error| format!("{kind} {namespace}/{name}: {e}");
    match kind.as_str() {
        "MailDomain" => loaded
            .desired
            .domains
            .push(serde_yaml::from_value::<MailDomain>(value).map_err(invalid)?),
        "Mailbox" => loaded
            .desired
            .mailboxes
            .push(serde_yaml::from_value::<Mailbox>(value).map_err(invalid)?),
        "DkimKey" => loaded
            .desired
            .dkim_keys
            .push(serde_yaml::from_value::<DkimKey>(value).map_err(invalid)?),
        _ => {
            let data =
                secret_data(&value).map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
            loaded.desired.secrets.insert((namespace, name), data);
        }
    }
    Ok(None)
}

/// A Secret's `data` (base64) and `stringData` (plain; wins over `data`, as in Kubernetes).
fn secret_data(secret: &Value) -> Result<SecretData, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Secret {
        #[serde(default)]
        data: Option<BTreeMap<String, String>>,
        #[serde(default)]
        string_data: Option<BTreeMap<String, String>>,
    }
    let secret: Secret = serde_yaml::from_value(secret.clone())
        .map_err(|e| format!("data and stringData must map keys to strings: {e}"))?;
    let mut out = SecretData::new();
    for (key, encoded) in secret.data.unwrap_or_default() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("data.{key} is not base64: {e}"))?;
        out.insert(key, bytes);
    }
    for (key, text) in secret.string_data.unwrap_or_default() {
        out.insert(key, text.into_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, ManifestError> {
        let mut loaded = Loaded::default();
        load_text(Path::new("m.yaml"), text, &mut loaded, &mut BTreeSet::new())?;
        Ok(loaded)
    }

    const DOMAIN: &str = "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\n\
        metadata: {name: ex}\nspec: {domain: example.test, reclaimPolicy: Delete}\n";

    #[test]
    fn documents() {
        let text = format!(
            "{DOMAIN}---\napiVersion: mail.kubemail.io/v1alpha1\nkind: Mailbox\n\
             metadata: {{name: alice, namespace: mail}}\n\
             spec: {{address: alice@example.test, passwordSecretRef: {{name: pw}}}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: pw, namespace: mail}}\n\
             data: {{password: aGlkZGVu, other: eA==}}\nstringData: {{password: plain}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n"
        );
        let loaded = load(&text).expect("loads");
        let d = &loaded.desired;
        assert_eq!(d.domains.len(), 1);
        assert_eq!(d.domains[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(d.domains[0].spec.domain, "example.test");
        assert_eq!(d.mailboxes[0].metadata.namespace.as_deref(), Some("mail"));
        assert_eq!(d.password_of(&d.mailboxes[0]), Some(&b"plain"[..]));
        let secret = &d.secrets[&("mail".to_string(), "pw".to_string())];
        assert_eq!(secret["other"], b"x");
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].starts_with("m.yaml, line 17 (document 3): ")
                && loaded.warnings[0].contains("ConfigMap"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn bad_documents_name_file_and_index() {
        let cases: &[(&str, &str)] = &[
            (
                "kind: MailDomain\nmetadata: {name: a}\n",
                "has no apiVersion",
            ),
            ("apiVersion: v1\nmetadata: {name: a}\n", "has no kind"),
            ("apiVersion: v1\nkind: Secret\n", "has no metadata"),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {namespace: x}\n",
                "has no metadata.name",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {k: '!!'}\n",
                "not base64",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: [1]\n",
                "must map keys",
            ),
            (
                "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\nmetadata: {name: a}\nspec: {}\n",
                "MailDomain default/a: ",
            ),
            (
                "apiVersion: mail.kubemail.io/v1alpha1\nkind: DkimKey\nmetadata: {name: a}\n\
                 spec: {domain: a.b, selector: s, algorithm: dsa}\n",
                "unknown variant",
            ),
            (": : :\n", "not YAML"),
        ];
        for (doc, want) in cases {
            let text = format!("{DOMAIN}---\n{doc}");
            let err = load(&text).expect_err(doc).to_string();
            assert!(err.starts_with("m.yaml, line 6 (document 1): "), "{err}");
            assert!(err.contains(want), "{doc:?}: {err}");
        }
        let twice = format!("{DOMAIN}---\n{DOMAIN}");
        assert!(
            load(&twice)
                .expect_err("twice")
                .to_string()
                .contains("defined twice")
        );
    }

    #[test]
    fn directories_recurse_sorted_and_skip_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(
            dir.path().join("b.yml"),
            DOMAIN.replace("ex}", "b}").replace("example", "b"),
        )
        .expect("write");
        std::fs::write(dir.path().join("a.yaml"), DOMAIN).expect("write");
        std::fs::write(
            dir.path().join("sub/c.yaml"),
            DOMAIN.replace("ex}", "c}").replace("example", "c"),
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not: yaml: at all").expect("write");
        let loaded = load_dir(dir.path()).expect("loads");
        let names: Vec<_> = loaded
            .desired
            .domains
            .iter()
            .map(|d| d.spec.domain.as_str())
            .collect();
        assert_eq!(names, ["example.test", "b.test", "c.test"]);
        let missing = load_dir(&dir.path().join("nope")).expect_err("missing dir");
        assert!(missing.to_string().contains("nope"));
    }

    #[test]
    fn a_directory_without_domains_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = load_dir(dir.path()).expect_err("empty dir");
        assert!(matches!(empty, ManifestError::NoDomains { .. }), "{empty}");
        assert!(
            empty.to_string().contains("defines no MailDomain"),
            "{empty}"
        );
        // Mailboxes alone do not count: without their domain they would all be removed too.
        std::fs::write(
            dir.path().join("secret.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pw\nstringData:\n  password: x\n",
        )
        .expect("write");
        let secrets_only = load_dir(dir.path()).expect_err("no domain");
        assert!(matches!(secrets_only, ManifestError::NoDomains { .. }));
        std::fs::write(dir.path().join("domain.yaml"), DOMAIN).expect("write");
        assert_eq!(
            load_dir(dir.path()).expect("loads").desired.domains.len(),
            1
        );
    }
}
