//! POP3 replies on the wire: `+OK` / `-ERR` status lines (with RFC 2449 response codes) and
//! multi-line bodies, dot-stuffed and ended by `.CRLF`.

use super::stuffing::Stuffer;

/// RFC 2449 / RFC 3206 response codes this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The credentials were wrong (RFC 3206).
    Auth,
    /// A store failure the client may retry later (RFC 3206).
    SysTemp,
    /// Another session holds the maildrop (RFC 2449).
    InUse,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
            Code::InUse => "IN-USE",
        }
    }
}

/// `+OK text`
pub fn ok(text: &str) -> Vec<u8> {
    format!("+OK {}\r\n", clean(text)).into_bytes()
}

/// `-ERR text`
pub fn err(text: &str) -> Vec<u8> {
    format!("-ERR {}\r\n", clean(text)).into_bytes()
}

/// `-ERR [CODE] text`
pub fn err_code(code: Code, text: &str) -> Vec<u8> {
    format!("-ERR [{}] {}\r\n", code.as_str(), clean(text)).into_bytes()
}

/// The reply to a store failure; the cause goes to the log, not to the client.
pub fn unavailable() -> Vec<u8> {
    err_code(Code::SysTemp, "mail store unavailable, try again later")
}

/// `+OK text` followed by short lines (LIST, UIDL, CAPA) and the terminating `.`.
pub fn ok_lines<I, L>(text: &str, lines: I) -> Vec<u8>
where
    I: IntoIterator<Item = L>,
    L: AsRef<str>,
{
    let mut out = ok(text);
    for line in lines {
        stuff_line(&mut out, clean(line.as_ref()).as_bytes());
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The status line of RETR (the message's size) or TOP (`body_lines` set).
pub fn message_status(size: u64, body_lines: Option<u64>) -> Vec<u8> {
    match body_lines {
        None => ok(&format!("{size} octets")),
        Some(_) => ok("top of message follows"),
    }
}

/// `+OK` and a whole message (RETR) or its header and first `body_lines` body lines (TOP),
/// dot-stuffed as [`Stuffer`] does it piece by piece.
pub fn message(raw: &[u8], body_lines: Option<u64>) -> Vec<u8> {
    let mut out = message_status(raw.len() as u64, body_lines);
    let mut stuffer = Stuffer::new(body_lines);
    stuffer.feed(raw, &mut out);
    stuffer.finish(&mut out);
    out
}

fn stuff_line(out: &mut Vec<u8>, line: &[u8]) {
    if line.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Keeps a status line one line: a CR or LF in the text would let it forge another reply.
fn clean(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (ok("ready"), b"+OK ready\r\n"),
            (err("no such message"), b"-ERR no such message\r\n"),
            (
                err_code(Code::Auth, "bad password"),
                b"-ERR [AUTH] bad password\r\n",
            ),
            (
                unavailable(),
                b"-ERR [SYS/TEMP] mail store unavailable, try again later\r\n",
            ),
            (ok("a\r\n+OK forged"), b"+OK a  +OK forged\r\n"),
            (
                ok_lines("2 messages", ["1 10", "2 20"]),
                b"+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n",
            ),
            (ok_lines("none", Vec::<String>::new()), b"+OK none\r\n.\r\n"),
            (ok_lines("x", [".dot"]), b"+OK x\r\n..dot\r\n.\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
        }
    }

    #[test]
    fn messages_are_stuffed_and_normalized() {
        let cases: Vec<(&[u8], Option<u64>, &[u8])> = vec![
            // Already CRLF: sent as is.
            (
                b"Subject: a\r\n\r\nbody\r\n",
                None,
                b"+OK 20 octets\r\nSubject: a\r\n\r\nbody\r\n.\r\n",
            ),
            // A bare CR ends a line too (found by the fuzzer): none reaches the client, and
            // what follows it is stuffed like any line.
            (
                b"S: a\r\n\r\nx\ry\r\n.\rz\r\n",
                None,
                b"+OK 18 octets\r\nS: a\r\n\r\nx\r\ny\r\n..\r\nz\r\n.\r\n",
            ),
            // Bare LF becomes CRLF; a missing final line end is added.
            (
                b"Subject: a\n\nline1\nline2",
                None,
                b"+OK 23 octets\r\nSubject: a\r\n\r\nline1\r\nline2\r\n.\r\n",
            ),
            // Dots at line starts are doubled, elsewhere untouched.
            (
                b"S: x\r\n\r\n.\r\n..two\r\na.b\r\n.",
                None,
                b"+OK 24 octets\r\nS: x\r\n\r\n..\r\n...two\r\na.b\r\n..\r\n.\r\n",
            ),
            // A lone CR ends a line as well: sent as it was, `x\r.` would read as the end of
            // the message to a client that breaks lines at CR.
            (
                b"A: 1\r\n\r\nx\r.\r\n",
                None,
                b"+OK 13 octets\r\nA: 1\r\n\r\nx\r\n..\r\n.\r\n",
            ),
            (b"", None, b"+OK 0 octets\r\n.\r\n"),
            // TOP: header, blank line, then n body lines.
            (
                b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n",
                Some(0),
                b"+OK top of message follows\r\nA: 1\r\nB: 2\r\n\r\n.\r\n",
            ),
            (
                b"A: 1\r\n\r\nl1\r\n.l2\r\nl3\r\n",
                Some(2),
                b"+OK top of message follows\r\nA: 1\r\n\r\nl1\r\n..l2\r\n.\r\n",
            ),
            (
                b"A: 1\n\nl1\n",
                Some(u64::MAX),
                b"+OK top of message follows\r\nA: 1\r\n\r\nl1\r\n.\r\n",
            ),
            // No blank line: all of it is header.
            (
                b"A: 1\r\nB: 2",
                Some(0),
                b"+OK top of message follows\r\nA: 1\r\nB: 2\r\n.\r\n",
            ),
            // An empty body line counts as a line.
            (
                b"A: 1\r\n\r\n\r\nx\r\n",
                Some(1),
                b"+OK top of message follows\r\nA: 1\r\n\r\n\r\n.\r\n",
            ),
        ];
        for (raw, lines, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&message(raw, lines)),
                String::from_utf8_lossy(want),
                "{:?} {lines:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn unstuffing_gives_back_a_crlf_message() {
        // What a client recovers equals the original when it was CRLF already.
        let raw = b"From: a@b\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n";
        let wire = message(raw, None);
        let body = &wire[wire.iter().position(|&b| b == b'\n').unwrap() + 1..];
        let mut back = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"." {
                break;
            }
            back.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            back.extend_from_slice(b"\r\n");
        }
        assert_eq!(back, raw);
    }
}
