//! Limits checked on the raw bytes before `imap-next` sees them. `imap-next` takes its limits
//! once, at creation, and they must fit APPEND after login. Before login: short lines and small
//! literals (a client that has not logged in must not get `+` for `{52428800}`). After login:
//! lines stay short outside literals, because `imap-codec` decodes a whole command before our
//! own bounds see it — a 50 MiB line of `1,1,1,…` would cost hundreds of MB — while literal
//! sizes are left to `imap-next` (the configured message size).

/// Longest command line before login, literals not counted.
pub const MAX_LINE: usize = 8 * 1024;
/// Largest literal before login (a user name or password).
pub const MAX_LITERAL: u64 = 8 * 1024;
/// Longest command line after login, literals not counted: room for a sequence set of 50,000
/// numbers (the most `imap::sequence` takes) and then some.
pub const MAX_LINE_AFTER_LOGIN: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("Command line too long")]
    LineTooLong,
    #[error("Literal too large before login")]
    LiteralTooLarge,
}

/// Follows lines and literal announcements across reads.
#[derive(Debug)]
pub struct Guard {
    /// The current line, up to `max_line` octets.
    line: Vec<u8>,
    /// Octets of an accepted literal still to pass.
    literal: u64,
    max_line: usize,
    max_literal: u64,
}

impl Default for Guard {
    /// The limits before login.
    fn default() -> Self {
        Self::new(MAX_LINE, MAX_LITERAL)
    }
}

impl Guard {
    pub fn new(max_line: usize, max_literal: u64) -> Self {
        Self {
            line: Vec::new(),
            literal: 0,
            max_line,
            max_literal,
        }
    }

    /// The limits after login: short lines, literals as large as `imap-next` allows.
    pub fn after_login() -> Self {
        Self::new(MAX_LINE_AFTER_LOGIN, u64::MAX)
    }

    /// Checks the next bytes from the client.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            if self.literal > 0 {
                let n = usize::try_from(self.literal).map_or(bytes.len(), |l| l.min(bytes.len()));
                self.literal -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let Some(lf) = bytes.iter().position(|&b| b == b'\n') else {
                self.push(bytes)?;
                return Ok(());
            };
            self.push(&bytes[..lf])?;
            bytes = &bytes[lf + 1..];
            self.literal = announced(&self.line).unwrap_or(0);
            if self.literal > self.max_literal {
                return Err(Refusal::LiteralTooLarge);
            }
            self.line.clear();
        }
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        if self.line.len() + bytes.len() > self.max_line {
            return Err(Refusal::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// The size of a literal announced at the end of `line` (`{N}` or `{N+}`, CR optional).
fn announced(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits for a u64 is too large anyway.
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let big = format!("a LOGIN {{{}}}\r\n", MAX_LITERAL + 1);
        let long = "x".repeat(MAX_LINE + 1);
        let cases: Vec<(&str, &[u8], Result<(), Refusal>)> = vec![
            ("plain login", b"a LOGIN alice secret\r\n", Ok(())),
            (
                "small literal passes",
                b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
                Ok(()),
            ),
            (
                "50 MiB literal",
                b"a LOGIN {52428800}\r\n",
                Err(Refusal::LiteralTooLarge),
            ),
            (
                "non-sync literal",
                b"a LOGIN {52428800+}\r\n",
                Err(Refusal::LiteralTooLarge),
            ),
            ("just over", big.as_bytes(), Err(Refusal::LiteralTooLarge)),
            (
                "20 digits",
                b"a LOGIN {99999999999999999999}\r\n",
                Err(Refusal::LiteralTooLarge),
            ),
            (
                "braces inside a literal are data",
                b"a LOGIN {8}\r\n{999999}\r\n",
                Ok(()),
            ),
            ("long line", long.as_bytes(), Err(Refusal::LineTooLong)),
            ("not a literal", b"a LOGIN x {abc}\r\n", Ok(())),
        ];
        for (name, input, want) in cases {
            // Every split point: the guard keeps its state across reads.
            for split in 0..=input.len() {
                let mut guard = Guard::default();
                let got = guard
                    .scan(&input[..split])
                    .and_then(|()| guard.scan(&input[split..]));
                assert_eq!(got, want, "{name} split at {split}");
            }
        }
    }

    #[test]
    fn after_login_lines_are_bounded_and_literals_pass() {
        let mut guard = Guard::after_login();
        let append = format!("a APPEND INBOX {{{}}}\r\n", 40 << 20);
        assert_eq!(guard.scan(append.as_bytes()), Ok(()));
        // The literal's bytes are data, however long their "lines".
        assert_eq!(guard.scan(&vec![b'1'; 40 << 20]), Ok(()));
        assert_eq!(guard.scan(b"\r\nb NOOP\r\n"), Ok(()));
        let set = vec!["1"; 50_000].join(",");
        assert_eq!(
            guard.scan(format!("c FETCH {set} FLAGS\r\n").as_bytes()),
            Ok(())
        );
        let huge = vec!["1"; 200_000].join(",");
        assert_eq!(
            Guard::after_login().scan(format!("d FETCH {huge} FLAGS\r\n").as_bytes()),
            Err(Refusal::LineTooLong)
        );
    }
}
