//! The DATA receiver: dot-unstuffing, the end-of-data marker, size and line limits.
//!
//! Line endings, and why (SMTP smuggling, CVE-2023-51764/51765/51766): only CRLF ends a line,
//! and only CRLF `.` CRLF ends the data. A bare LF or bare CR never ends a line, so vectors
//! such as `\n.\n`, `\r\n.\n`, `\n.\r\n` or `\r.\r` are message content and cannot end the
//! message early and smuggle a second one past us. So that stored messages keep RFC 5322 line
//! structure, each bare LF and bare CR is stored as CRLF (and starts a new stored line for the
//! length limit), but for the protocol it is still inside the current line: a dot after it is
//! not unstuffed and cannot end the data.

/// What the receiver made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// Every byte was consumed; the data goes on.
    More,
    /// The end-of-data marker was found after `consumed` bytes of the input; the rest belongs
    /// to the next command.
    Done { consumed: usize },
}

/// Why a complete message is refused (after its end was read, so the dialogue stays in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    TooBig,
    LineTooLong,
}

/// Receives the message after `354`, one chunk of bytes at a time, in any split.
#[derive(Debug)]
pub struct DataReceiver {
    message: Vec<u8>,
    max_size: usize,
    max_line: usize,
    /// At the start of a CRLF-delimited line (the DATA command's CRLF counts).
    line_start: bool,
    /// The line so far is only the dot removed by unstuffing.
    dot_only: bool,
    /// The previous byte was a CR, not yet known to be part of CRLF.
    cr: bool,
    /// Bytes of the current stored line, without its CRLF.
    line_len: usize,
    error: Option<DataError>,
}

impl DataReceiver {
    /// `max_size`: largest message kept; `max_line`: longest line, CRLF included.
    pub fn new(max_size: usize, max_line: usize) -> Self {
        Self {
            message: Vec::new(),
            max_size,
            max_line,
            line_start: true,
            dot_only: false,
            cr: false,
            line_len: 0,
            error: None,
        }
    }

    /// Feeds bytes of the data. After `Done`, take the result with [`DataReceiver::finish`].
    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        for (i, &b) in input.iter().enumerate() {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    if self.dot_only {
                        return DataProgress::Done { consumed: i + 1 };
                    }
                    self.push_line_break();
                    self.line_start = true;
                    continue;
                }
                // A bare CR: content, stored as a line break.
                self.push_line_break();
            }
            if self.line_start && b == b'.' {
                // Dot-unstuffing: the first dot of a line is dropped; alone, it ends the data.
                self.line_start = false;
                self.dot_only = true;
                continue;
            }
            self.line_start = false;
            match b {
                b'\r' => self.cr = true,
                b'\n' => {
                    // A bare LF: content, stored as a line break.
                    self.dot_only = false;
                    self.push_line_break();
                }
                _ => {
                    self.dot_only = false;
                    self.line_len += 1;
                    if self.line_len + 2 > self.max_line {
                        self.fail(DataError::LineTooLong);
                    }
                    self.push(&[b]);
                }
            }
        }
        DataProgress::More
    }

    /// The unstuffed message with CRLF line endings, or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.message),
        }
    }

    fn push_line_break(&mut self) {
        self.dot_only = false;
        self.line_len = 0;
        self.push(b"\r\n");
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.message.len() + bytes.len() > self.max_size {
            self.fail(DataError::TooBig);
            return;
        }
        self.message.extend_from_slice(bytes);
    }

    /// Keeps reading to the end marker but stores nothing more.
    fn fail(&mut self, error: DataError) {
        if self.error.is_none() {
            self.error = Some(error);
            self.message = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in every two-piece split and checks each gives the same outcome.
    fn receive(
        input: &[u8],
        max_size: usize,
        max_line: usize,
    ) -> (Result<Vec<u8>, DataError>, usize) {
        let whole = {
            let mut r = DataReceiver::new(max_size, max_line);
            match r.feed(input) {
                DataProgress::Done { consumed } => (r.finish(), consumed),
                DataProgress::More => (Ok(b"<unfinished>".to_vec()), input.len()),
            }
        };
        for split in 0..=input.len() {
            let mut r = DataReceiver::new(max_size, max_line);
            let (a, b) = input.split_at(split);
            let got = match r.feed(a) {
                DataProgress::Done { consumed } => (r.finish(), consumed),
                DataProgress::More => match r.feed(b) {
                    DataProgress::Done { consumed } => (r.finish(), split + consumed),
                    DataProgress::More => (Ok(b"<unfinished>".to_vec()), input.len()),
                },
            };
            assert_eq!(got, whole, "split at {split} of {input:?}");
        }
        whole
    }

    #[test]
    fn endings_and_unstuffing() {
        let ok = |s: &str| Ok(s.as_bytes().to_vec());
        let unfinished = || Ok(b"<unfinished>".to_vec());
        for (input, want, consumed) in [
            // The plain case; what follows the marker is left for the next command.
            ("a\r\nb\r\n.\r\nQUIT\r\n", ok("a\r\nb\r\n"), 9),
            // Empty message: the marker right after the DATA command's CRLF.
            (".\r\n", ok(""), 3),
            // Dot-stuffed lines lose one dot.
            ("..\r\n...x\r\n.\r\n", ok(".\r\n..x\r\n"), 13),
            (".a\r\n.\r\n", ok("a\r\n"), 7),
            // A dot not at the start of a line stays.
            ("a.b\r\n a.\r\n.\r\n", ok("a.b\r\n a.\r\n"), 13),
            // Smuggling vectors: none of these ends the data.
            ("a\n.\nMAIL FROM:<x@y>\r\n", unfinished(), 0),
            ("a\r\n.\nMAIL FROM:<x@y>\r\n", unfinished(), 0),
            ("a\n.\r\nMAIL FROM:<x@y>\r\n", unfinished(), 0),
            ("a\r.\r\nb\r\n", unfinished(), 0),
            ("a\r\n.\rb\r\n", unfinished(), 0),
            ("a\r\n.\r\r\n", unfinished(), 0),
            ("a\r\n. \r\n", unfinished(), 0),
            // ...and once the real marker comes, they are stored as content with CRLF endings.
            ("a\n.\nb\r\n.\r\n", ok("a\r\n.\r\nb\r\n"), 10),
            ("a\r\n.\nb\r\n.\r\n", ok("a\r\n\r\nb\r\n"), 11),
            ("a\n.\r\n.\r\n", ok("a\r\n.\r\n"), 8),
            ("a\rb\r\n.\r\n", ok("a\r\nb\r\n"), 8),
            ("a\r\r\n.\r\n", ok("a\r\n\r\n"), 7),
            // Data that ends without CRLF before the marker never ends.
            ("a.\r\n", unfinished(), 0),
        ] {
            let (got, used) = receive(input.as_bytes(), 1000, 1000);
            assert_eq!(got, want, "{input:?}");
            let consumed = if want == unfinished() {
                input.len()
            } else {
                consumed
            };
            assert_eq!(used, consumed, "{input:?}");
        }
    }

    #[test]
    fn limits() {
        // Size counts stored bytes: 6 fits in 6, not in 5; the data is still read to its end.
        assert_eq!(
            receive(b"abcd\r\n.\r\nX", 6, 100),
            (Ok(b"abcd\r\n".to_vec()), 9)
        );
        assert_eq!(
            receive(b"abcd\r\n.\r\nX", 5, 100),
            (Err(DataError::TooBig), 9)
        );
        // Line length counts the CRLF; a stuffed dot does not count twice.
        assert_eq!(
            receive(b"abc\r\n.\r\n", 100, 5),
            (Ok(b"abc\r\n".to_vec()), 8)
        );
        assert_eq!(
            receive(b"abcd\r\n.\r\n", 100, 5),
            (Err(DataError::LineTooLong), 9)
        );
        assert_eq!(
            receive(b"..bc\r\n.\r\n", 100, 5),
            (Ok(b".bc\r\n".to_vec()), 9)
        );
        // Bare line breaks start a new stored line.
        assert_eq!(
            receive(b"abc\nabc\r\n.\r\n", 100, 5).0,
            Ok(b"abc\r\nabc\r\n".to_vec())
        );
        // The first limit hit is the one reported.
        assert_eq!(
            receive(b"abcdefgh\r\n.\r\n", 4, 5).0,
            Err(DataError::LineTooLong)
        );
    }
}
