//! The `relaxed` canonicalizations of RFC 6376 §3.4.2 and §3.4.4, and splitting a message into
//! header fields. CRLF and bare LF line ends are treated alike (the SMTP client sends CRLF).

/// One header field as it appears, folding and line end included.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub raw: &'a str,
}

impl Field<'_> {
    pub fn name_is(&self, name: &str) -> bool {
        self.raw
            .split_once(':')
            .is_some_and(|(n, _)| n.trim_end().eq_ignore_ascii_case(name))
    }
}

/// The header section (with its last line end) and the body, split at the first empty line;
/// `None` when there is no empty line and so no header section.
pub fn split_message(message: &[u8]) -> Option<(&str, &[u8])> {
    let mut start = 0;
    loop {
        let end = message[start..].iter().position(|&b| b == b'\n')? + start;
        let line = &message[start..end];
        if line.is_empty() || line == b"\r" {
            // Header fields are ASCII (or UTF-8 with SMTPUTF8); anything else is not signed.
            let header = std::str::from_utf8(&message[..start]).ok()?;
            return Some((header, &message[end + 1..]));
        }
        start = end + 1;
    }
}

/// The header fields of a header section, folded lines joined to their field.
pub fn fields(header: &str) -> Vec<Field<'_>> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    for line in header.split_inclusive('\n') {
        let continued = line.starts_with([' ', '\t']);
        match out.last_mut() {
            Some(last) if continued => last.1 = pos + line.len(),
            _ => out.push((pos, pos + line.len())),
        }
        pos += line.len();
    }
    out.into_iter()
        .map(|(a, b)| Field { raw: &header[a..b] })
        .collect()
}

/// `name:value\r\n` with the name lower case, folding removed, runs of blanks made one space
/// and blanks at the ends of the value removed.
pub fn relaxed_header(raw: &str) -> String {
    let (name, value) = raw.split_once(':').unwrap_or((raw, ""));
    let mut out = name.trim_end().to_ascii_lowercase();
    out.push(':');
    let mut blank = false;
    let mut value_out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\r' | '\n' => {}
            ' ' | '\t' => blank = true,
            c => {
                if blank && !value_out.is_empty() {
                    value_out.push(' ');
                }
                blank = false;
                value_out.push(c);
            }
        }
    }
    out.push_str(&value_out);
    out.push_str("\r\n");
    out
}

/// The body with blanks at line ends removed, runs of blanks made one space, empty lines at
/// the end removed and every line ending in CRLF (an empty body stays empty).
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut empty_lines = 0usize;
    let lines = body.split(|&b| b == b'\n');
    let count = body.split(|&b| b == b'\n').count();
    for (i, line) in lines.enumerate() {
        // The piece after the last LF is a line only when it holds something.
        if i + 1 == count && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut canon = Vec::with_capacity(line.len());
        let mut blank = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                blank = true;
            } else {
                if blank {
                    canon.push(b' ');
                }
                blank = false;
                canon.push(b);
            }
        }
        if canon.is_empty() {
            empty_lines += 1;
            continue;
        }
        for _ in 0..empty_lines {
            out.extend_from_slice(b"\r\n");
        }
        empty_lines = 0;
        out.extend_from_slice(&canon);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_relaxed() {
        for (raw, want) in [
            ("Subject: hi\r\n", "subject:hi\r\n"),
            ("SUBJECT :  a  \t b \r\n", "subject:a b\r\n"),
            ("To: a@x,\r\n\tb@y\r\n", "to:a@x, b@y\r\n"),
            ("X:\r\n", "x:\r\n"),
        ] {
            assert_eq!(relaxed_header(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn bodies_relaxed() {
        // RFC 6376 §3.4.6's example, and edge cases.
        for (body, want) in [
            (&b" C \r\nD \t E\r\n\r\n\r\n"[..], &b" C\r\nD E\r\n"[..]),
            (b"", b""),
            (b"\r\n\r\n", b""),
            (b"a", b"a\r\n"),
            (b"a\n\nb\n", b"a\r\n\r\nb\r\n"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&relaxed_body(body)),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn split_and_fields() {
        let msg = b"A: 1\r\nB: 2\r\n  more\r\n\r\nbody\r\n";
        let (header, body) = split_message(msg).expect("split");
        assert_eq!(body, b"body\r\n");
        let f = fields(header);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].raw, "B: 2\r\n  more\r\n");
        assert!(f[1].name_is("b"));
        assert!(split_message(b"no header end").is_none());
    }
}
