//! The SMTP session as a state machine without sockets.
//!
//! The connection [`Session::feed`]s it bytes and takes [`Action`]s from [`Session::next_action`] until
//! it returns `None` (more input needed, or a lookup or delivery outstanding). Replies come out in
//! command order, so pipelined commands (RFC 2920) need nothing special. A recipient lookup or a
//! delivery pauses the session until the connection reports the outcome with
//! [`Session::lookup_done`] or [`Session::delivered`].
//!
//! Commands are framed here (up to LF, at most `max_command_line` bytes) and then parsed whole by
//! `smtp_proto`, so a parser error never leaves the input half-consumed; a command line may end
//! in a bare LF, which is harmless outside DATA. Lines that are not UTF-8 are refused before
//! parsing.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use smtp_proto::{Error as ParseError, Request};

use super::Limits;
use super::data::{DataProgress, DataReceiver};
use super::reply::{Reject, Reply};
use crate::auth::SaslInput;
use crate::store::Recipient;

/// What the connection must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply.
    Reply(Reply),
    /// Find where this recipient address delivers; answer with [`Session::lookup_done`].
    Lookup(String),
    /// Append these bytes of the message being received to the connection's spool file.
    Spool(SpoolChunk),
    /// Store this message for these recipients in one go; answer with [`Session::delivered`].
    Deliver(Delivery),
    /// Run this SASL step through the login service; answer with [`Session::auth_done`].
    Auth(SaslInput),
    /// Close the connection (after sending the replies before this).
    Close,
    /// Run the TLS handshake, then call [`Session::tls_started`]. Input after STARTTLS was
    /// dropped (CVE-2011-0411).
    StartTls,
}

/// What the listener offers and requires (see [`Session::with_security`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// STARTTLS can be offered now.
    pub starttls: bool,
    /// TLS is active.
    pub tls: bool,
    /// A submission listener: mail needs authentication (and TLS first).
    pub submission: bool,
    /// Passwords may cross this connection without TLS (loopback, or a listener without TLS).
    pub plaintext_login: bool,
}

/// A complete message, trace headers included, and the mailboxes it goes to.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub message: Body,
    pub recipients: Vec<Recipient>,
}

/// A received message, trace headers first: in memory when small, else in the spool file
/// that the [`Action::Spool`] chunks filled (see `smtp::spool`).
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Memory(Vec<u8>),
    /// The first `len` bytes of the spool.
    Spooled {
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::Spooled { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes of a message past the spool threshold, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct SpoolChunk {
    /// The first chunk of a message: the spool starts afresh.
    pub first: bool,
    pub bytes: Vec<u8>,
}

/// Where a recipient address leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A local mailbox.
    Local(Recipient),
    /// The domain is hosted here but the address delivers nowhere.
    UnknownUser,
    /// The domain is not hosted here.
    NotHosted,
    /// The lookup failed (the database is unreachable).
    Failed,
}

/// The client's EHLO/HELO.
#[derive(Debug)]
pub(super) struct Helo {
    pub name: String,
    /// EHLO rather than HELO: extensions may be used.
    pub extended: bool,
}

/// A mail transaction, from MAIL to the end of DATA.
#[derive(Debug)]
pub(super) struct Transaction {
    pub sender: String,
    /// The `SIZE=` of MAIL, 0 when not given.
    pub declared_size: usize,
    pub smtputf8: bool,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug)]
pub(super) enum Mode {
    Command,
    Data(Box<DataReceiver>),
    /// A lookup for this RCPT address is outstanding.
    Lookup(String),
    /// The delivery of the transaction with this id is outstanding.
    Deliver(String),
    /// A SASL step is with the login service.
    Auth,
    /// A `334` challenge went out: the next line is the client's response.
    AuthResponse,
    Closed,
}

pub struct Session {
    pub(super) hostname: String,
    pub(super) peer: IpAddr,
    pub(super) limits: Limits,
    pub(super) clock: fn() -> DateTime<Utc>,
    input: Vec<u8>,
    /// How much of `input` has been worked through: many pipelined commands in one read cost
    /// one compaction, not one shift each.
    start: usize,
    pub(super) mode: Mode,
    /// Dropping an over-long command line up to its LF.
    discarding: bool,
    pub(super) helo: Option<Helo>,
    pub(super) tx: Option<Transaction>,
    errors: usize,
    out: VecDeque<Action>,
    security: Security,
    /// The address the client authenticated as (AUTH on submission).
    pub(super) authenticated: Option<String>,
}

impl Session {
    /// A new session; its first action is the `220` greeting.
    pub fn new(hostname: impl Into<String>, peer: IpAddr, limits: Limits) -> Self {
        let hostname = hostname.into();
        let mut out = VecDeque::new();
        out.push_back(Action::Reply(Reply::greeting(&hostname)));
        Self {
            hostname,
            peer,
            limits,
            clock: Utc::now,
            input: Vec::new(),
            start: 0,
            mode: Mode::Command,
            discarding: false,
            helo: None,
            tx: None,
            errors: 0,
            out,
            security: Security::default(),
            authenticated: None,
        }
    }

    /// Sets what the listener offers and requires.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// The handshake after [`Action::StartTls`] is done: back to the start (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.security.tls = true;
        self.security.starttls = false;
        self.helo = None;
        self.tx = None;
        self.authenticated = None;
    }

    pub(super) fn security(&self) -> Security {
        self.security
    }

    /// Uses `clock` for the `Received` date (tests).
    pub fn with_clock(mut self, clock: fn() -> DateTime<Utc>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.mode, Mode::Closed) {
            self.input.drain(..self.start);
            self.start = 0;
            self.input.extend_from_slice(bytes);
        }
    }

    /// The next thing to do, or `None` when the session waits for input or an outcome.
    pub fn next_action(&mut self) -> Option<Action> {
        loop {
            if let Some(action) = self.out.pop_front() {
                return Some(action);
            }
            if !self.step() {
                return None;
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Whether the client is sending a message (the connection may wait longer then).
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    /// The client was silent too long or the session too long: `421` and close.
    pub fn timed_out(&mut self) {
        self.close_with(Reject::Timeout);
    }

    /// The server is stopping: `421` and close.
    pub fn shutting_down(&mut self) {
        self.close_with(Reject::ShuttingDown);
    }

    /// The outcome of the [`Action::Lookup`] asked for last.
    pub fn lookup_done(&mut self, lookup: Lookup) {
        let Mode::Lookup(address) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        self.rcpt_found(address, lookup);
    }

    /// The outcome of the [`Action::Deliver`] asked for last: `ok` only once it is durable.
    pub fn delivered(&mut self, ok: bool) {
        let Mode::Deliver(id) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        if ok {
            self.reply(Reply::ok(format!("Ok: queued as {id}")));
        } else {
            self.reject(Reject::StoreFailed);
        }
    }

    pub(super) fn reply(&mut self, reply: Reply) {
        self.out.push_back(Action::Reply(reply));
    }

    /// Sends a refusal; too many of them end the session.
    pub(super) fn reject(&mut self, reject: Reject) {
        self.reply(reject.reply());
        self.errors_inc();
    }

    /// Counts a refused command; too many end the session.
    pub(super) fn errors_inc(&mut self) {
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            self.close_with(Reject::TooManyErrors);
        }
    }

    pub(super) fn ask(&mut self, action: Action) {
        match &action {
            Action::Lookup(address) => self.mode = Mode::Lookup(address.clone()),
            Action::Deliver(delivery) => self.mode = Mode::Deliver(delivery.id.clone()),
            Action::Auth(_) => self.mode = Mode::Auth,
            Action::Reply(_) | Action::Spool(_) | Action::Close | Action::StartTls => {}
        }
        self.out.push_back(action);
    }

    pub(super) fn close_with(&mut self, reject: Reject) {
        if self.is_closed() {
            return;
        }
        self.reply(reject.reply());
        self.close();
    }

    fn close(&mut self) {
        self.out.push_back(Action::Close);
        self.mode = Mode::Closed;
        self.input = Vec::new();
        self.start = 0;
    }

    /// Works through buffered input until it yields actions; `false` when nothing can be done.
    fn step(&mut self) -> bool {
        match &mut self.mode {
            Mode::Lookup(_) | Mode::Deliver(_) | Mode::Auth | Mode::Closed => false,
            Mode::Data(receiver) => match receiver.feed(&self.input[self.start..]) {
                DataProgress::More => {
                    self.input.clear();
                    self.start = 0;
                    let chunk = receiver.take_chunk(false);
                    chunk
                        .map(|chunk| self.out.push_back(Action::Spool(chunk)))
                        .is_some()
                }
                DataProgress::Done { consumed } => {
                    self.start += consumed;
                    if let Some(chunk) = receiver.take_chunk(true) {
                        self.out.push_back(Action::Spool(chunk));
                    }
                    let Mode::Data(receiver) = std::mem::replace(&mut self.mode, Mode::Command)
                    else {
                        return false;
                    };
                    let (id, body) = receiver.finish();
                    self.data_end(id, body);
                    true
                }
            },
            Mode::Command | Mode::AuthResponse => {
                let pending = &self.input[self.start..];
                let Some(lf) = pending.iter().position(|&b| b == b'\n') else {
                    if pending.len() > self.limits.max_command_line {
                        self.discarding = true;
                        self.input.clear();
                        self.start = 0;
                    }
                    return false;
                };
                let line = pending[..=lf].to_vec();
                self.start += lf + 1;
                self.command_line(&line);
                true
            }
        }
    }

    fn command_line(&mut self, line: &[u8]) {
        // A line after a `334` answers it, whatever it is; a bad one ends the exchange.
        let auth_response = matches!(self.mode, Mode::AuthResponse);
        if auth_response {
            self.mode = Mode::Command;
        }
        if std::mem::take(&mut self.discarding) || line.len() > self.limits.max_command_line {
            return self.reject(Reject::LineTooLong);
        }
        if std::str::from_utf8(line).is_err() {
            return self.reject(Reject::InvalidBytes);
        }
        if auth_response {
            return self.auth_response(line);
        }
        // AUTH is parsed here: smtp_proto knows only its own list of mechanisms, and an
        // unknown one deserves 504, not a syntax error.
        if let Some(args) = super::auth::auth_args(line) {
            return self.auth_command(args);
        }
        match Request::parse(&mut line.iter()) {
            Ok(request) => self.command(request),
            Err(error) => self.reject(parse_reject(error)),
        }
    }

    fn command(&mut self, request: Request<Cow<'_, str>>) {
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { .. }
                if self.security.submission
                    && !self.security.tls
                    && !self.security.plaintext_login =>
            {
                self.reply(Reply::new(
                    530,
                    Some([5, 7, 0]),
                    "Must issue a STARTTLS command first",
                ));
            }
            Request::Mail { .. } if self.security.submission && self.authenticated.is_none() => {
                self.reply(Reply::new(530, Some([5, 7, 0]), "Authentication required"));
            }
            Request::Mail { from } => self.mail(from),
            Request::StartTls if self.security.starttls => {
                self.reply(Reply::new(220, Some([2, 0, 0]), "Ready to start TLS"));
                self.out.push_back(Action::StartTls);
                // Nothing sent in clear text after STARTTLS may count after the handshake.
                self.input.clear();
                self.start = 0;
            }
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data_start(),
            Request::Rset => {
                self.tx = None;
                self.reply(Reply::ok("Ok"));
            }
            Request::Noop { .. } => self.reply(Reply::ok("Ok")),
            Request::Quit => {
                self.reply(Reply::bye(&self.hostname));
                self.close();
            }
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                Some([2, 0, 0]),
                "cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                Some([2, 0, 0]),
                "commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP; see RFC 5321",
            )),
            // LMTP's greeting has no place on an SMTP port.
            Request::Lhlo { .. } => self.reject(Reject::UnknownCommand),
            other @ (Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::StartTls
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }) => self.reject(Reject::NotImplemented(other.name())),
        }
    }

    fn hello(&mut self, host: &str, extended: bool) {
        // EHLO/HELO also ends any transaction (RFC 5321 section 4.1.4).
        self.tx = None;
        self.helo = Some(Helo {
            name: host.to_string(),
            extended,
        });
        let reply = if extended {
            let mut reply = Reply::ehlo(&self.hostname, host, self.limits.max_message_size);
            if self.security.starttls {
                reply.lines.push("STARTTLS".to_string());
            }
            if self.auth_offered() {
                reply.lines.push(super::auth::ehlo_keyword());
            }
            reply
        } else {
            Reply::new(250, None, self.hostname.clone())
        };
        self.reply(reply);
    }
}

/// The refusal for a command line `smtp_proto` could not parse.
fn parse_reject(error: ParseError) -> Reject {
    match error {
        ParseError::UnknownCommand => Reject::UnknownCommand,
        ParseError::InvalidSenderAddress => Reject::BadSenderAddress,
        ParseError::InvalidRecipientAddress => Reject::BadRecipientAddress,
        ParseError::SyntaxError { syntax } => Reject::Syntax(syntax),
        ParseError::InvalidParameter { param } => Reject::InvalidParameter(param),
        ParseError::UnsupportedParameter { param } => Reject::UnsupportedParameter(param),
        // The line is complete, so a parser still wanting more means it is malformed.
        ParseError::NeedsMoreData { .. }
        | ParseError::ResponseTooLong
        | ParseError::InvalidResponse { .. } => Reject::Syntax("command line incomplete"),
    }
}

#[cfg(test)]
pub(in crate::smtp) mod tests {

    use chrono::TimeZone;

    use super::*;

    pub const GREETING: &str = "220 mx.test ESMTP ready\r\n";
    pub const EHLO: &str = "250-mx.test greets c.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n\
                            250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";

    pub fn limits() -> Limits {
        Limits {
            max_message_size: 10_000,
            max_recipients: 3,
            max_command_line: 100,
            max_data_line: 200,
            max_errors: 10,
            ..Limits::default()
        }
    }

    fn recipient(mailbox_id: i64, address: &str, quota_bytes: i64, used_bytes: i64) -> Recipient {
        Recipient {
            mailbox_id,
            address: address.to_string(),
            bucket: "b".to_string(),
            quota_bytes,
            used_bytes,
        }
    }

    fn directory(address: &str) -> Lookup {
        match address {
            "alice@example.test" => Lookup::Local(recipient(1, "alice@example.test", 1 << 20, 0)),
            "Bob@Example.test" => Lookup::Local(recipient(2, "bob@example.test", 1 << 20, 0)),
            "small@example.test" => Lookup::Local(recipient(3, "small@example.test", 300, 0)),
            "full@example.test" => Lookup::Local(recipient(4, "full@example.test", 100, 100)),
            "half@example.test" => Lookup::Local(recipient(6, "half@example.test", 1000, 900)),
            "ünï@example.test" => Lookup::Local(recipient(5, "ünï@example.test", 1 << 20, 0)),
            "nobody@example.test" => Lookup::UnknownUser,
            "down@example.test" => Lookup::Failed,
            _ => Lookup::NotHosted,
        }
    }

    fn clock() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
    }

    /// What a script produced: the replies (ids replaced by `ID`), `<close>` where the session
    /// closed, and the deliveries asked for.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Outcome {
        pub transcript: String,
        pub deliveries: Vec<Delivery>,
        /// How many deliveries came from the spool.
        pub spooled: usize,
        /// The largest [`Action::Spool`] chunk.
        pub largest_chunk: usize,
    }

    impl Body {
        /// The bytes of a body the test harness has read back from its spool.
        pub fn bytes(&self) -> &[u8] {
            match self {
                Body::Memory(bytes) => bytes,
                Body::Spooled { .. } => panic!("the harness reads spooled bodies back"),
            }
        }
    }

    /// Runs `input` through a session fed `chunk` bytes at a time; deliveries succeed when
    /// `store_ok`.
    pub fn run_chunked(input: &[u8], chunk: usize, limits: Limits, store_ok: bool) -> Outcome {
        let mut session =
            Session::new("mx.test", "192.0.2.1".parse().unwrap(), limits).with_clock(clock);
        let mut transcript = String::new();
        let mut deliveries = Vec::new();
        let (mut spool, mut spooled, mut largest_chunk) = (Vec::new(), 0, 0);
        let mut chunks = input.chunks(chunk.max(1));
        loop {
            while let Some(action) = session.next_action() {
                match action {
                    Action::Reply(reply) => transcript.push_str(&reply.to_wire()),
                    Action::Lookup(address) => session.lookup_done(directory(&address)),
                    Action::Spool(chunk) => {
                        if chunk.first {
                            spool.clear();
                        }
                        spool.extend_from_slice(&chunk.bytes);
                        largest_chunk = largest_chunk.max(chunk.bytes.len());
                    }
                    Action::Deliver(mut delivery) => {
                        if let Body::Spooled { len } = delivery.message {
                            assert_eq!(len, spool.len() as u64, "spool holds the message");
                            delivery.message = Body::Memory(std::mem::take(&mut spool));
                            spooled += 1;
                        }
                        deliveries.push(delivery);
                        session.delivered(store_ok);
                    }
                    Action::Close => transcript.push_str("<close>"),
                    Action::StartTls => transcript.push_str("<starttls>"),
                    Action::Auth(_) => transcript.push_str("<auth>"),
                }
            }
            match chunks.next() {
                Some(bytes) => session.feed(bytes),
                None => break,
            }
        }
        for delivery in &mut deliveries {
            transcript = transcript.replace(&delivery.id, "ID");
            let text =
                String::from_utf8_lossy(delivery.message.bytes()).replace(&delivery.id, "ID");
            delivery.message = Body::Memory(text.into_bytes());
            delivery.id = "ID".to_string();
        }
        Outcome {
            transcript,
            deliveries,
            spooled,
            largest_chunk,
        }
    }

    /// Runs `input` whole and byte by byte; both must give the same outcome.
    pub fn run_with(input: &str, limits: Limits, store_ok: bool) -> Outcome {
        let whole = run_chunked(input.as_bytes(), usize::MAX, limits.clone(), store_ok);
        let bytewise = run_chunked(input.as_bytes(), 1, limits, store_ok);
        assert_eq!(
            (&whole.transcript, &whole.deliveries, whole.spooled),
            (&bytewise.transcript, &bytewise.deliveries, bytewise.spooled),
            "chunking changed the outcome of {input:?}"
        );
        whole
    }

    pub fn run(input: &str) -> Outcome {
        run_with(input, limits(), true)
    }

    #[test]
    fn dialogues() {
        let ok = "250 2.0.0 Ok\r\n";
        for (name, input, want) in [
            (
                "quit at once",
                "QUIT\r\nNOOP\r\n",
                format!("{GREETING}221 2.0.0 mx.test closing connection\r\n<close>"),
            ),
            (
                "helo, noop, rset, vrfy, help",
                "HELO c.test\r\nNOOP\r\nRSET\r\nVRFY alice\r\nHELP\r\n",
                format!(
                    "{GREETING}250 mx.test\r\n{ok}{ok}\
                     252 2.0.0 cannot VRFY user, but will accept message and attempt delivery\r\n\
                     214 2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP; see RFC 5321\r\n"
                ),
            ),
            (
                "commands in any case, bare LF tolerated",
                "ehlo c.test\nnoop\r\n",
                format!("{GREETING}{EHLO}{ok}"),
            ),
            (
                "unknown and not implemented",
                "EHLO c.test\r\nFOO bar\r\nBDAT 10 LAST\r\nSTARTTLS\r\nAUTH PLAIN\r\nEXPN staff\r\nLHLO x\r\n\r\n",
                format!(
                    "{GREETING}{EHLO}500 5.5.1 command not recognized\r\n\
                     502 5.5.1 BDAT not implemented\r\n502 5.5.1 STARTTLS not implemented\r\n\
                     502 5.5.1 AUTH not implemented\r\n502 5.5.1 EXPN not implemented\r\n\
                     500 5.5.1 command not recognized\r\n500 5.5.1 command not recognized\r\n"
                ),
            ),
            (
                "bad sequence",
                "MAIL FROM:<a@x.test>\r\nEHLO c.test\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
                 MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n",
                format!(
                    "{GREETING}503 5.5.1 send EHLO or HELO first\r\n{EHLO}\
                     503 5.5.1 send MAIL first\r\n503 5.5.1 send MAIL first\r\n\
                     250 2.1.0 Ok\r\n503 5.5.1 nested MAIL command\r\n\
                     554 5.5.1 no valid recipients\r\n"
                ),
            ),
            (
                "syntax errors",
                "EHLO\r\nEHLO c.test\r\nMAIL FROM:a@x.test\r\nMAIL FROM:<a@@x>\r\nRCPT TO:<alice@example.test>\r\n",
                format!(
                    "{GREETING}501 5.5.4 syntax: EHLO domain\r\n{EHLO}\
                     501 5.5.4 syntax: MAIL FROM:<reverse-path> [parameters]\r\n\
                     501 5.1.7 bad sender address syntax\r\n503 5.5.1 send MAIL first\r\n"
                ),
            ),
            (
                "control characters in NOOP, too long",
                &format!("NOOP \u{1}\u{7f}\r\nNOOP {}\r\nNOOP\r\n", "x".repeat(200)),
                format!("{GREETING}{ok}500 5.5.2 line too long\r\n{ok}"),
            ),
            (
                "recipients: found, unknown, foreign, failing, postmaster",
                "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\n\
                 RCPT TO:<nobody@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\n\
                 RCPT TO:<down@example.test>\r\nRCPT TO:<Postmaster>\r\n",
                format!(
                    "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
                     550 5.1.1 <nobody@example.test>: mailbox unavailable\r\n\
                     550 5.7.1 <x@elsewhere.test>: relaying denied\r\n\
                     451 4.3.0 recipient lookup failed, try again later\r\n\
                     550 5.1.1 <postmaster>: mailbox unavailable\r\n"
                ),
            ),
            (
                "too many recipients",
                "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\n\
                 RCPT TO:<alice@example.test>\r\nRCPT TO:<alice@example.test>\r\n\
                 RCPT TO:<alice@example.test>\r\n",
                format!(
                    "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
                     452 4.5.3 too many recipients\r\n"
                ),
            ),
            (
                "EHLO and RSET end the transaction",
                "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRSET\r\nRCPT TO:<alice@example.test>\r\n\
                 MAIL FROM:<a@x.test>\r\nEHLO c.test\r\nDATA\r\n",
                format!(
                    "{GREETING}{EHLO}250 2.1.0 Ok\r\n{ok}503 5.5.1 send MAIL first\r\n\
                     250 2.1.0 Ok\r\n{EHLO}503 5.5.1 send MAIL first\r\n"
                ),
            ),
        ] {
            let outcome = run(input);
            assert_eq!(outcome.transcript, want, "{name}");
            assert!(outcome.deliveries.is_empty(), "{name}");
        }
    }

    #[test]
    fn many_pipelined_commands_in_one_read() {
        let input = "NOOP\r\n".repeat(5000) + "QUIT\r\n";
        let outcome = run_chunked(input.as_bytes(), usize::MAX, limits(), true);
        let want = format!(
            "{GREETING}{}221 2.0.0 mx.test closing connection\r\n<close>",
            "250 2.0.0 Ok\r\n".repeat(5000)
        );
        assert_eq!(outcome.transcript, want);
    }

    #[test]
    fn invalid_bytes() {
        let input = b"NOOP \xff\xfe\r\nEHLO c.test\r\nMAIL FROM:<\xc3(@x.test>\r\nNOOP\r\n";
        let bad = "500 5.5.2 command line is not valid UTF-8\r\n";
        let want = format!("{GREETING}{bad}{EHLO}{bad}250 2.0.0 Ok\r\n");
        for chunk in [1, 7, usize::MAX] {
            assert_eq!(run_chunked(input, chunk, limits(), true).transcript, want);
        }
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let mut limits = limits();
        limits.max_errors = 3;
        let outcome = run_with("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n", limits, true);
        let unknown = "500 5.5.1 command not recognized\r\n";
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{unknown}{unknown}{unknown}\
                 421 4.7.0 too many errors, closing connection\r\n<close>"
            )
        );
    }

    #[test]
    fn timeout_and_shutdown_say_421() {
        for (stop, want) in [
            (
                Session::timed_out as fn(&mut Session),
                "421 4.4.2 timeout exceeded, closing connection",
            ),
            (Session::shutting_down, "421 4.3.2 service shutting down"),
        ] {
            let mut session = Session::new("mx.test", "192.0.2.1".parse().unwrap(), limits());
            assert_eq!(
                session.next_action(),
                Some(Action::Reply(Reply::greeting("mx.test")))
            );
            session.feed(b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n");
            stop(&mut session);
            let mut wire = String::new();
            while let Some(action) = session.next_action() {
                match action {
                    Action::Reply(reply) => wire.push_str(&reply.to_wire()),
                    Action::Close => wire.push_str("<close>"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            // Pending input is dropped: the 421 comes first and is the last word.
            assert_eq!(wire, format!("{want}\r\n<close>"));
            assert!(session.is_closed());
        }
    }
}
