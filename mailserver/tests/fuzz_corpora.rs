//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the same entry points the fuzz
//! targets call: every input the fuzzers kept must still run without a panic and give the
//! client well-formed output. No fuzzing here; `scripts/fuzz.sh` does that.

use std::path::PathBuf;

use mailserver::fuzzing;

/// The inputs of one target's corpus, with their file names.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// The CRLF-terminated lines of `output`; a bare LF or CR is a defect.
fn lines(output: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    assert!(
        output.is_empty() || text.ends_with("\r\n"),
        "{name}: output ends mid-line"
    );
    text.split_terminator("\r\n")
        .map(|line| {
            assert!(
                !line.contains('\n') && !line.contains('\r'),
                "{name}: bare line end"
            );
            line.to_string()
        })
        .collect()
}

#[test]
fn smtp_corpus_gets_smtp_replies() {
    for (name, input) in corpus("smtp") {
        let output = fuzzing::smtp(&input);
        let lines = lines(&output, &name);
        assert!(
            lines.first().is_some_and(|l| l.starts_with("220")),
            "{name}"
        );
        for line in lines {
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            assert!(
                code.is_some_and(|c| (200..600).contains(&c)),
                "{name}: {line:?}"
            );
            assert!(
                matches!(line.as_bytes().get(3), Some(b' ' | b'-')),
                "{name}: {line:?}"
            );
        }
    }
}

#[test]
fn imap_corpus_gets_imap_responses() {
    for (name, input) in corpus("imap") {
        let output = fuzzing::imap(&input);
        let lines = lines(&output, &name);
        assert!(
            lines.first().is_some_and(|l| l.starts_with("* OK")),
            "{name}"
        );
        for line in lines {
            // Literal data inside a response would break this check; before login the
            // server sends none.
            let tagged = line.split_once(' ').is_some_and(|(tag, rest)| {
                !tag.is_empty()
                    && ["OK", "NO", "BAD", "BYE"]
                        .iter()
                        .any(|s| rest.starts_with(s))
            });
            assert!(
                line.starts_with("* ") || line.starts_with("+ ") || tagged,
                "{name}: {line:?}"
            );
        }
    }
}

#[test]
fn pop3_corpus_gets_pop3_replies() {
    for (name, input) in corpus("pop3") {
        let output = fuzzing::pop3(&input);
        assert!(output.starts_with(b"+OK "), "{name}");
        // Multi-line replies carry message lines; check the first line of each reply only
        // where it can be told apart: every status line starts a reply.
        let text = String::from_utf8_lossy(&output);
        let statuses = text
            .split_terminator("\r\n")
            .filter(|l| l.starts_with("+OK") || l.starts_with("-ERR"))
            .count();
        assert!(statuses >= 1, "{name}");
        lines(&output, &name);
    }
}

#[test]
fn mime_corpus_gets_a_fetch_response() {
    for (name, input) in corpus("mime") {
        let output = fuzzing::mime(&input);
        assert!(output.starts_with(b"* 1 FETCH ("), "{name}");
        assert!(output.ends_with(b")\r\n"), "{name}");
    }
}

#[test]
fn manifests_corpus_loads_or_names_the_place() {
    let mut loaded = 0;
    for (name, input) in corpus("manifests") {
        match fuzzing::manifests(&input) {
            Ok(()) => loaded += 1,
            Err(err) => assert!(
                err.starts_with("fuzz.yaml, ") || std::str::from_utf8(&input).is_err(),
                "{name}: {err}"
            ),
        }
    }
    assert!(loaded > 0, "no manifest in the corpus loads");
}
