//! DATA: the receiver (dot-unstuffing, the end-of-data marker, size and line limits) and the
//! session's side of it (start, then refuse the message or ask for its delivery).
//!
//! Line endings, and why (SMTP smuggling, CVE-2023-51764/51765/51766): only CRLF ends a line,
//! and only CRLF `.` CRLF ends the data. A bare LF or bare CR never ends a line, so vectors
//! such as `\n.\n`, `\r\n.\n`, `\n.\r\n` or `\r.\r` are message content and cannot end the
//! message early and smuggle a second one past us. So that stored messages keep RFC 5322 line
//! structure, each bare LF and bare CR is stored as CRLF (and starts a new stored line for the
//! length limit), but for the protocol it is still inside the current line: a dot after it is
//! not unstuffed and cannot end the data.

//!
//! Memory: a message past the spool threshold leaves the receiver in [`SpoolChunk`]s that the
//! connection appends to a temporary file, so a session holds at most the threshold (or one
//! chunk) of it. The trace headers are written first, at DATA, so nothing is copied to prepend
//! them.

use super::reply::{Reject, Reply};
use super::session::{Action, Body, Delivery, Mode as SessionMode, Session, SpoolChunk};
use super::trace::{Trace, new_id};
use crate::pipeline::Envelope;

/// Once spooling, bytes are handed out in chunks of about this size.
pub const SPOOL_CHUNK: usize = 64 * 1024;

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
    /// The transaction id its trace headers name.
    id: String,
    /// What has not been handed out as a spool chunk yet: trace headers, then the message.
    message: Vec<u8>,
    /// Bytes handed out as spool chunks.
    spooled: u64,
    /// Past this many bytes the message goes to the spool.
    spool_threshold: usize,
    /// Bytes of the message proper, for the size limit (trace headers do not count).
    body_len: usize,
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
            id: String::new(),
            message: Vec::new(),
            spooled: 0,
            spool_threshold: usize::MAX,
            body_len: 0,
            max_size,
            max_line,
            line_start: true,
            dot_only: false,
            cr: false,
            line_len: 0,
            error: None,
        }
    }

    /// Starts the stored message with the trace headers of transaction `id`.
    pub fn with_head(mut self, id: String, head: Vec<u8>) -> Self {
        self.id = id;
        self.message = head;
        self
    }

    /// Hands the message out in [`SpoolChunk`]s once it holds more than `threshold` bytes.
    pub fn spool_past(mut self, threshold: usize) -> Self {
        self.spool_threshold = threshold;
        self
    }

    /// The bytes due for the spool: everything held once past the threshold, then whenever a
    /// chunk's worth has gathered, and the rest at the end (`done`).
    pub fn take_chunk(&mut self, done: bool) -> Option<SpoolChunk> {
        let spooling = self.spooled > 0 || self.message.len() > self.spool_threshold;
        let due = self.message.len() >= SPOOL_CHUNK || (done && !self.message.is_empty());
        if self.error.is_some() || !spooling || !due {
            return None;
        }
        let bytes = std::mem::take(&mut self.message);
        let first = self.spooled == 0;
        self.spooled += bytes.len() as u64;
        Some(SpoolChunk { first, bytes })
    }

    /// Feeds bytes of the data. After `Done`, take the last chunk with
    /// [`DataReceiver::take_chunk`] and then the result with [`DataReceiver::finish`].
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

    /// The transaction id and the unstuffed message with CRLF line endings (in memory or
    /// spooled), or why it is refused.
    pub fn finish(self) -> (String, Result<Body, DataError>) {
        let body = match self.error {
            Some(error) => Err(error),
            None if self.spooled > 0 => Ok(Body::Spooled {
                len: self.spooled + self.message.len() as u64,
            }),
            None => Ok(Body::Memory(self.message)),
        };
        (self.id, body)
    }

    /// Appends BDAT chunk bytes as they are (RFC 3030: no dot-stuffing, no line rules); only
    /// the size limit applies.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.push(bytes);
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
        if self.body_len + bytes.len() > self.max_size {
            self.fail(DataError::TooBig);
            return;
        }
        self.body_len += bytes.len();
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

/// DATA on the session's side: start the receiver, and at the end refuse the message or ask
/// for its delivery.
impl Session {
    pub(super) fn data_start(&mut self) {
        if self.bdat.is_some() {
            return self.reject(Reject::BadSequence("DATA after BDAT"));
        }
        let Some(tx) = &self.tx else {
            return self.reject(Reject::BadSequence("send MAIL first"));
        };
        if tx.rcpts.is_empty() {
            return self.reject(Reject::NoValidRecipients);
        }
        let receiver = self.receiver();
        self.reply(Reply::start_data());
        self.mode = SessionMode::Data(Box::new(receiver));
    }

    /// A receiver for the transaction's message, its trace headers written.
    pub(super) fn receiver(&self) -> DataReceiver {
        let Some(tx) = &self.tx else {
            return DataReceiver::new(0, 0);
        };
        // MAIL needs a HELO first, so a transaction always has one.
        let (helo, extended) = match &self.helo {
            Some(helo) => (helo.name.as_str(), helo.extended),
            None => ("", false),
        };
        let protocol = match (extended, tx.smtputf8) {
            (false, _) => "SMTP",
            (true, false) => "ESMTP",
            (true, true) => "UTF8SMTP",
        };
        let id = new_id();
        let head = Trace {
            sender: &tx.sender,
            helo,
            peer: self.peer,
            hostname: &self.hostname,
            protocol,
            id: &id,
            date: (self.clock)(),
        }
        .headers();
        DataReceiver::new(self.limits.max_message_size, self.limits.max_data_line)
            .with_head(id, head)
            .spool_past(self.limits.spool_threshold)
    }

    /// The end of DATA: refuse, or hand the message over for delivery.
    pub(super) fn data_end(&mut self, id: String, body: Result<Body, DataError>) {
        // The transaction ends with DATA's reply whatever it is.
        let Some(tx) = self.tx.take() else {
            return self.reject(Reject::BadSequence("send MAIL first"));
        };
        let message = match body {
            Ok(body) => body,
            Err(DataError::TooBig) => return self.reject(Reject::MessageTooBig),
            Err(DataError::LineTooLong) => {
                return self.reject(Reject::DataLineTooLong(self.limits.max_data_line));
            }
        };
        // One reply covers every recipient, so one full mailbox refuses the message; the
        // RCPT-time check with SIZE= usually catches this first.
        let size = message.len();
        if let Some(full) = tx
            .recipients
            .iter()
            .find_map(|r| Reject::quota(r, &r.address, size))
        {
            return self.reject(full);
        }
        let envelope = Envelope {
            client_ip: self.peer,
            helo: self
                .helo
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            tls: self.security.tls,
            submission: self.security.submission,
            authenticated: self.authenticated.clone(),
            sender: tx.sender,
            params: tx.params,
            recipients: tx.rcpts,
        };
        self.ask(Action::Deliver(Delivery {
            id,
            message,
            recipients: tx.recipients,
            envelope,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::session::tests::{EHLO, GREETING, limits, run, run_chunked, run_with};

    /// The finished receiver's message, which never spools here.
    fn memory(r: DataReceiver) -> Result<Vec<u8>, DataError> {
        r.finish().1.map(|body| body.bytes().to_vec())
    }

    /// Feeds `input` in every two-piece split and checks each gives the same outcome.
    fn receive(
        input: &[u8],
        max_size: usize,
        max_line: usize,
    ) -> (Result<Vec<u8>, DataError>, usize) {
        let whole = {
            let mut r = DataReceiver::new(max_size, max_line);
            match r.feed(input) {
                DataProgress::Done { consumed } => (memory(r), consumed),
                DataProgress::More => (Ok(b"<unfinished>".to_vec()), input.len()),
            }
        };
        for split in 0..=input.len() {
            let mut r = DataReceiver::new(max_size, max_line);
            let (a, b) = input.split_at(split);
            let got = match r.feed(a) {
                DataProgress::Done { consumed } => (memory(r), consumed),
                DataProgress::More => match r.feed(b) {
                    DataProgress::Done { consumed } => (memory(r), split + consumed),
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
    fn size_and_line_limits() {
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

    fn trace(protocol: &str, sender: &str) -> String {
        format!(
            "Return-Path: <{sender}>\r\nReceived: from c.test ([192.0.2.1])\r\n\
             \tby mx.test with {protocol} id ID;\r\n\tTue, 2 Jan 2024 03:04:05 +0000\r\n"
        )
    }

    #[test]
    fn delivery() {
        let input = "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=20 BODY=8BITMIME\r\n\
                     RCPT TO:<alice@example.test>\r\nRCPT TO:<Bob@Example.test>\r\nDATA\r\n\
                     Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";
        let outcome = run(input);
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as ID\r\n\
                 221 2.0.0 mx.test closing connection\r\n<close>"
            )
        );
        // One delivery for both recipients, trace headers + the unstuffed message.
        assert_eq!(outcome.deliveries.len(), 1);
        let delivery = &outcome.deliveries[0];
        let want = format!(
            "{}Subject: hi\r\n\r\n.dot\r\nbody\r\n",
            trace("ESMTP", "a@x.test")
        );
        assert_eq!(String::from_utf8_lossy(delivery.message.bytes()), want);
        let ids: Vec<i64> = delivery.recipients.iter().map(|r| r.mailbox_id).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn a_large_message_is_spooled_in_bounded_chunks() {
        let lines: String = (0..4000).map(|i| format!("..line {i:05}\r\n")).collect();
        let input = format!(
            "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
             Subject: big\r\n\r\n{lines}.\r\nQUIT\r\n"
        );
        let mut big = limits();
        big.max_message_size = 1 << 20;
        let in_memory = run_chunked(input.as_bytes(), 4096, big.clone(), true);
        assert_eq!(in_memory.spooled, 0);
        big.spool_threshold = 1000;
        for chunk in [1, 4096, usize::MAX] {
            let spooled = run_chunked(input.as_bytes(), chunk, big.clone(), true);
            assert_eq!(spooled.transcript, in_memory.transcript, "{chunk}");
            assert_eq!(spooled.spooled, 1, "{chunk}");
            // The same bytes, trace headers first, whichever way they travelled.
            assert_eq!(spooled.deliveries, in_memory.deliveries, "{chunk}");
            if chunk != usize::MAX {
                assert!(
                    spooled.largest_chunk <= SPOOL_CHUNK + chunk,
                    "{chunk}: a chunk of {}",
                    spooled.largest_chunk
                );
            }
        }
        let text = String::from_utf8_lossy(in_memory.deliveries[0].message.bytes()).into_owned();
        assert!(text.starts_with(&trace("ESMTP", "a@x.test")));
        assert!(text.ends_with("\r\n.line 03999\r\n"));
    }

    #[test]
    fn a_spooled_message_too_big_is_refused_and_not_delivered() {
        let mut small = limits();
        small.spool_threshold = 100;
        small.max_message_size = 1000;
        let input = format!(
            "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
             {}.\r\nNOOP\r\n",
            "y\r\n".repeat(600)
        );
        let outcome = run_with(&input, small, true);
        assert!(outcome.deliveries.is_empty());
        assert!(outcome.transcript.ends_with(
            "552 5.3.4 message exceeds the fixed maximum message size\r\n250 2.0.0 Ok\r\n"
        ));
    }

    #[test]
    fn store_failure_is_temporary_and_the_session_goes_on() {
        let input = "HELO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
                     x\r\n.\r\nMAIL FROM:<>\r\n";
        let outcome = run_with(input, limits(), false);
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}250 mx.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n\
                 451 4.3.0 message not stored, try again later\r\n250 2.1.0 Ok\r\n"
            )
        );
        assert_eq!(
            String::from_utf8_lossy(outcome.deliveries[0].message.bytes()),
            format!("{}x\r\n", trace("SMTP", ""))
        );
    }

    #[test]
    fn smuggling_does_not_split_a_message() {
        // Each vector tries to end DATA early and slip in a second transaction.
        for end in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r"] {
            let input = format!(
                "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
                 hello{end}MAIL FROM:<evil@x.test>\r\nRCPT TO:<Bob@Example.test>\r\nDATA\r\n\
                 evil\r\n.\r\nQUIT\r\n"
            );
            let outcome = run(&input);
            assert_eq!(
                outcome.transcript,
                format!(
                    "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
                     354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as ID\r\n\
                     221 2.0.0 mx.test closing connection\r\n<close>"
                ),
                "{end:?}"
            );
            assert_eq!(outcome.deliveries.len(), 1, "{end:?}");
            let delivery = &outcome.deliveries[0];
            assert_eq!(delivery.recipients.len(), 1, "{end:?}");
            let text = String::from_utf8_lossy(delivery.message.bytes());
            assert!(
                text.contains("MAIL FROM:<evil@x.test>\r\n"),
                "{end:?}: {text}"
            );
            assert!(text.ends_with("evil\r\n"), "{end:?}: {text}");
        }
    }

    #[test]
    fn refused_messages() {
        let start =
            "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n";
        let accepted = format!(
            "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        for (name, body, reply) in [
            (
                "too big",
                format!("{}\r\n.\r\n", "y\r\n".repeat(5000)),
                "552 5.3.4 message exceeds the fixed maximum message size",
            ),
            (
                "line too long",
                format!("{}\r\n.\r\n", "y".repeat(199)),
                "554 5.6.0 message has a line longer than 200 bytes",
            ),
        ] {
            // The data is read to its end and the session stays usable.
            let outcome = run(&format!("{start}{body}MAIL FROM:<a@x.test>\r\n"));
            assert_eq!(
                outcome.transcript,
                format!("{accepted}{reply}\r\n250 2.1.0 Ok\r\n"),
                "{name}"
            );
            assert!(outcome.deliveries.is_empty(), "{name}");
        }
        // 198 bytes and CRLF is the longest line allowed.
        let outcome = run(&format!("{start}{}\r\n.\r\n", "y".repeat(198)));
        assert_eq!(outcome.deliveries.len(), 1);
    }
}
