//! A message on the POP3 wire (RFC 1939 section 3), made piece by piece as its body is read:
//! every line end becomes CRLF (a bare LF or a bare CR too, so no lone CR reaches a client that
//! splits lines at CR), a line starting with `.` gets one more, and `.CRLF` ends it. For TOP it
//! stops after the header and the first n body lines, so the rest need not be read at all.
//!
//! The state between pieces is a few flags, so memory is bounded by one piece whatever the
//! message's size.

/// Dot-stuffs one message fed in pieces of any size.
#[derive(Debug)]
pub struct Stuffer {
    /// The next byte begins a line.
    line_start: bool,
    /// The line being sent has no bytes yet (an empty line ends the header).
    line_empty: bool,
    /// The last line ended at a CR: an LF right after it belongs to that line end.
    after_cr: bool,
    in_header: bool,
    /// Body lines still to send (TOP); `u64::MAX` for the whole message.
    body_lines_left: u64,
    /// TOP has sent all it asked for.
    done: bool,
}

impl Stuffer {
    /// For RETR (`None`) or `TOP n` (`Some(n)`).
    pub fn new(body_lines: Option<u64>) -> Self {
        Self {
            line_start: true,
            line_empty: true,
            after_cr: false,
            in_header: true,
            body_lines_left: body_lines.unwrap_or(u64::MAX),
            done: false,
        }
    }

    /// Whether all that will be sent is out: nothing more need be read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Stuffs the next piece of the message into `out`.
    pub fn feed(&mut self, mut piece: &[u8], out: &mut Vec<u8>) {
        out.reserve(piece.len() + piece.len() / 32 + 4);
        while !piece.is_empty() && !self.done {
            if std::mem::take(&mut self.after_cr) && piece[0] == b'\n' {
                piece = &piece[1..];
                continue;
            }
            if self.line_start && !self.begin_line(piece[0], out) {
                return;
            }
            // The run of bytes up to the line's end (or the piece's) goes out unchanged.
            match piece.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    out.extend_from_slice(&piece[..end]);
                    self.line_empty &= end == 0;
                    self.end_line(piece[end] == b'\r', out);
                    piece = &piece[end + 1..];
                }
                None => {
                    out.extend_from_slice(piece);
                    self.line_empty = false;
                    piece = &[];
                }
            }
        }
    }

    /// Ends the message: a last line without its line end gets one, then `.CRLF`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start && !self.done {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// A new line begins with `first`; false when TOP has sent its last line.
    fn begin_line(&mut self, first: u8, out: &mut Vec<u8>) -> bool {
        if !self.in_header {
            if self.body_lines_left == 0 {
                self.done = true;
                return false;
            }
            self.body_lines_left -= 1;
        }
        if first == b'.' {
            out.push(b'.');
        }
        self.line_start = false;
        self.line_empty = true;
        true
    }

    fn end_line(&mut self, at_cr: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        if self.in_header && self.line_empty {
            self.in_header = false;
        }
        self.line_start = true;
        self.after_cr = at_cr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(raw: &[u8], lines: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = Stuffer::new(lines);
        s.feed(raw, &mut out);
        s.finish(&mut out);
        out
    }

    /// Every split into two pieces, and one byte at a time, gives what one piece gives: the
    /// state carried between pieces (a CR at a piece's end, a dot, the header's end) is right.
    #[test]
    fn pieces_give_what_the_whole_gives() {
        let samples: &[&[u8]] = &[
            b"A: 1\r\n\r\nx\ry\r\n.\rz\r\n",
            b"S: x\r\n\r\n.\r\n..two\r\na.b\r\n.",
            b"A: 1\n\nl1\n.l2\nl3",
            b"A: 1\r\rB\r\n\r\n\r\n\r\n.\r.\n.",
            b"\r\n\r\n\r\r\n\n.",
            b"",
            b".",
            b"no header end\r\n.dot",
        ];
        for raw in samples {
            for lines in [None, Some(0), Some(1), Some(2), Some(5)] {
                let want = whole(raw, lines);
                for cut in 0..=raw.len() {
                    let mut out = Vec::new();
                    let mut s = Stuffer::new(lines);
                    s.feed(&raw[..cut], &mut out);
                    s.feed(&raw[cut..], &mut out);
                    s.finish(&mut out);
                    assert_eq!(out, want, "{raw:?} {lines:?} cut at {cut}");
                }
                let mut out = Vec::new();
                let mut s = Stuffer::new(lines);
                for byte in raw.iter() {
                    s.feed(std::slice::from_ref(byte), &mut out);
                }
                s.finish(&mut out);
                assert_eq!(out, want, "{raw:?} {lines:?} byte by byte");
            }
        }
    }

    #[test]
    fn top_stops_reading() {
        let mut s = Stuffer::new(Some(1));
        let mut out = Vec::new();
        s.feed(b"A: 1\r\n\r\nfirst\r\nsec", &mut out);
        assert!(s.is_done(), "the second body line is not wanted");
        s.feed(b"ond\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"A: 1\r\n\r\nfirst\r\n.\r\n");
        let mut s = Stuffer::new(None);
        s.feed(b"A: 1\r\n\r\nx\r\n", &mut Vec::new());
        assert!(!s.is_done(), "RETR reads to the end");
    }
}
