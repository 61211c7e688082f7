//! The adapter between the connection driver and the [`Session`]: frames lines, answers STLS
//! and refuses clear-text logins before TLS, runs the store work the session asks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::reply;
use super::retrieve::Retrieval;
use super::session::{Action, Credentials, LoginOutcome, Maildrop, Session};
use crate::Context;
use crate::auth::{Account, Attempt, Login, SaslInput, SaslLogin, SaslReply};
use crate::driver::{self, Adapter, Connection, Flow, Shutdown, Stream, Timeouts, Transport};
use crate::store::{MaildropLease, MessageMeta, StoreError};

/// Longest line read, line end included. RFC 2449 limits commands to 255 octets but RFC 5034
/// lifts that for SASL responses; this is enough for both and bounds memory per connection.
pub const MAX_LINE: usize = 4096;

/// Splits input into lines of at most `max` octets; a longer line is dropped up to its LF.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    pending: Vec<u8>,
    /// Dropping the rest of an over-long line.
    discarding: bool,
}

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line without its LF (a CR before it is left for the parser).
    Complete(Vec<u8>),
    /// A line over the limit; it was dropped.
    TooLong,
}

impl Lines {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Whether a whole line is buffered (left while a message was being sent).
    fn has_line(&self) -> bool {
        self.pending.contains(&b'\n')
    }

    /// The next complete line, if one is buffered.
    pub(crate) fn next(&mut self, max: usize) -> Option<Line> {
        let Some(lf) = self.pending.iter().position(|&b| b == b'\n') else {
            if self.pending.len() > max {
                self.discarding = true;
                self.pending.clear();
            }
            return None;
        };
        let line: Vec<u8> = self.pending.drain(..=lf).take(lf).collect();
        if std::mem::take(&mut self.discarding) || line.len() + 1 > max {
            return Some(Line::TooLong);
        }
        Some(Line::Complete(line))
    }

    fn clear(&mut self) {
        self.pending.clear();
        self.discarding = false;
    }
}

/// One POP3 connection as the driver sees it.
pub struct Pop3 {
    ctx: Arc<Context>,
    transport: Transport,
    session: Session,
    lines: Lines,
    /// The maildrop lock, held from login to QUIT or disconnect (then released on drop).
    lease: Option<MaildropLease>,
    /// A RETR or TOP whose message is still being read; no line is read meanwhile.
    retrieval: Option<Retrieval>,
    /// An AUTH exchange in progress.
    sasl: Option<SaslLogin>,
}

impl Pop3 {
    pub fn new(ctx: Arc<Context>, transport: Transport) -> Self {
        let session = Session::new(&ctx.settings.hostname);
        Self {
            ctx,
            transport,
            session,
            lines: Lines::default(),
            lease: None,
            retrieval: None,
            sasl: None,
        }
    }

    /// What the connection layer answers itself: STLS, and logins refused before TLS.
    fn intercept(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Flow> {
        if !self.session.in_authorization() {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "STLS" if self.transport.starttls && !self.transport.tls => {
                out.extend_from_slice(&reply::ok("Begin TLS negotiation"));
                // Nothing sent in clear text after STLS may count after the handshake.
                self.lines.clear();
                Some(Flow::StartTls)
            }
            "STLS" => {
                out.extend_from_slice(&reply::err("STLS not available"));
                Some(Flow::Continue)
            }
            "USER" | "PASS" | "AUTH" if !self.transport.login_allowed() => {
                out.extend_from_slice(&reply::err(
                    "clear-text login is disabled; use STLS or the TLS port first",
                ));
                Some(Flow::Continue)
            }
            _ => None,
        }
    }

    /// CAPA as this connection can honour it: STLS when offered, no logins before TLS.
    fn capabilities(&self, bytes: Vec<u8>) -> Vec<u8> {
        if !bytes.starts_with(b"+OK capability list follows\r\n") {
            return bytes;
        }
        let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        if !self.transport.login_allowed() {
            lines.retain(|l| !l.starts_with(b"USER\r") && !l.starts_with(b"SASL "));
        }
        if self.transport.starttls && !self.transport.tls {
            let end = lines.len().saturating_sub(1);
            lines.insert(end, b"STLS\r\n");
        }
        lines.concat()
    }

    /// Runs the session's action for one line, with its store work, to the reply.
    async fn line(&mut self, line: Line, out: &mut Vec<u8>) -> Flow {
        if self.session.in_transaction() && !self.lease.as_ref().is_some_and(|l| l.is_held()) {
            // Renewals failed for most of the TTL: another session may own the maildrop now.
            warn!(peer = %self.transport.peer, "pop3 maildrop lease lapsed; closing");
            out.extend_from_slice(&lock_lost());
            return Flow::Close;
        }
        let mut action = match line {
            Line::Complete(line) => {
                if let Some(flow) = self.intercept(&line, out) {
                    return flow;
                }
                self.session.line(&line)
            }
            Line::TooLong => self.session.line_too_long(),
        };
        loop {
            action = match action {
                Action::Reply(bytes) => {
                    out.extend_from_slice(&self.capabilities(bytes));
                    return Flow::Continue;
                }
                Action::Close(bytes) => {
                    out.extend_from_slice(&bytes);
                    return Flow::Close;
                }
                Action::Login(credentials) => {
                    let (outcome, lease) =
                        login(&self.ctx, self.transport.peer.ip(), &credentials).await;
                    self.lease = lease;
                    self.session.login_done(outcome)
                }
                Action::Sasl(input) => self.sasl(input).await,
                Action::Retrieve {
                    message,
                    body_lines,
                } => return self.retrieve(&message, body_lines, out).await,
                Action::Update { folder_id, uids } => {
                    let Some(lease) = self.lease.take() else {
                        out.extend_from_slice(&lock_lost());
                        return Flow::Close;
                    };
                    match lease.confirm().await {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!(peer = %self.transport.peer, "pop3 maildrop lease lost before UPDATE");
                            out.extend_from_slice(&lock_lost());
                            return Flow::Close;
                        }
                        Err(err) => {
                            warn!(folder = folder_id, %err, "cannot check the maildrop lock at QUIT");
                            out.extend_from_slice(&reply::err_code(
                                reply::Code::SysTemp,
                                "mail store unavailable, nothing deleted",
                            ));
                            return Flow::Close;
                        }
                    }
                    let removed = match self.ctx.store.delete_messages(folder_id, &uids).await {
                        Ok(removed) => Ok(removed.len()),
                        Err(err) => {
                            warn!(folder = folder_id, %err, "cannot delete messages at QUIT");
                            Err(())
                        }
                    };
                    // Released before the reply: a client that reconnects at once finds it free.
                    lease.release().await;
                    self.session.update_done(removed)
                }
            };
        }
    }

    /// Opens the message's body and sends the status line; the body follows piece by piece
    /// through [`Adapter::resume`].
    async fn retrieve(
        &mut self,
        message: &MessageMeta,
        body_lines: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Flow {
        match self.ctx.store.open_body(message).await {
            Ok(reader) => {
                let size = u64::try_from(message.size).unwrap_or(0);
                out.extend_from_slice(&reply::message_status(size, body_lines));
                self.retrieval = Some(Retrieval::new(reader, body_lines));
            }
            Err(StoreError::MissingBlob { .. }) => {
                // Expunged over IMAP (and collected) since this session's login.
                out.extend_from_slice(&reply::err("message was removed by another session"));
            }
            Err(err) => {
                warn!(uid = message.uid, folder = message.folder_id, %err, "cannot read message body");
                out.extend_from_slice(&reply::unavailable());
            }
        }
        Flow::Continue
    }

    /// Answers the buffered lines until one starts a message (or asks to close).
    async fn lines(&mut self, out: &mut Vec<u8>) -> Flow {
        while self.retrieval.is_none() {
            let Some(line) = self.lines.next(MAX_LINE) else {
                break;
            };
            let flow = self.line(line, out).await;
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }
}

/// The reply when the maildrop lock was lost: nothing is deleted.
fn lock_lost() -> Vec<u8> {
    reply::err_code(
        reply::Code::SysTemp,
        "maildrop lock lost, nothing deleted; reconnect",
    )
}

impl Pop3 {
    /// Runs one step of an AUTH exchange through the login service.
    async fn sasl(&mut self, input: SaslInput) -> Action {
        let ip = self.transport.peer.ip();
        let reply = self
            .ctx
            .auth
            .sasl_run(&mut self.sasl, input, ip, "pop3")
            .await;
        match reply {
            SaslReply::Challenge(challenge) => self.session.sasl_challenge(&challenge),
            SaslReply::Malformed(why) => self.session.sasl_malformed(why),
            SaslReply::Done(login) => {
                let (outcome, lease) = open(&self.ctx, login).await;
                self.lease = lease;
                self.session.login_done(outcome)
            }
        }
    }
}

#[async_trait::async_trait]
impl Adapter for Pop3 {
    fn start(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.session.greeting());
    }

    async fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        self.lines.push(bytes);
        self.lines(out).await
    }

    fn has_more(&self) -> bool {
        self.retrieval.is_some() || self.lines.has_line()
    }

    async fn resume(&mut self, out: &mut Vec<u8>) -> Flow {
        let Some(retrieval) = self.retrieval.as_mut() else {
            // Lines pipelined behind a message: answer them now.
            return self.lines(out).await;
        };
        match retrieval.next_piece(out).await {
            Ok(false) => Flow::Continue,
            Ok(true) => {
                self.retrieval = None;
                Flow::Continue
            }
            Err(err) => {
                // Half a message is out: closing is the only way the client can tell.
                warn!(peer = %self.transport.peer, %err, "pop3 message body read failed; closing");
                self.retrieval = None;
                Flow::Close
            }
        }
    }

    fn tls_started(&mut self, _out: &mut Vec<u8>) {
        self.transport.tls = true;
        self.transport.starttls = false;
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) -> Flow {
        // RFC 1939: a timed-out session closes without entering UPDATE.
        debug!(peer = %self.transport.peer, "pop3 idle timeout");
        out.extend_from_slice(&reply::err("idle timeout, closing"));
        Flow::Close
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) -> Flow {
        // Closed without UPDATE: messages marked with DELE stay.
        out.extend_from_slice(&reply::err_code(
            reply::Code::SysTemp,
            "server shutting down, nothing deleted; reconnect",
        ));
        Flow::Close
    }

    fn authenticated(&self) -> bool {
        !self.session.in_authorization()
    }
}

/// Serves one clear-text POP3 connection on any stream under the driver (tests, tools).
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<Context>,
    idle: Duration,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut timeouts = Timeouts::new(idle);
    timeouts.login_idle = idle;
    let conn = Connection {
        peer,
        protocol: "pop3",
        starttls: None,
        timeouts,
        shutdown: Shutdown::never(),
        refuse_proxy_header: false,
    };
    driver::run(
        Pop3::new(ctx, Transport::plain(peer)),
        Stream::plain(stream),
        conn,
    )
    .await
}

/// Verifies the credentials (USER/PASS), locks the maildrop and snapshots the INBOX.
async fn login(
    ctx: &Context,
    ip: std::net::IpAddr,
    credentials: &Credentials,
) -> (LoginOutcome, Option<MaildropLease>) {
    let login = ctx
        .auth
        .login(Attempt {
            ip,
            protocol: "pop3",
            login: &credentials.user,
            password: &credentials.password,
        })
        .await;
    open(ctx, login).await
}

/// After a login: the locked maildrop of the account, or why there is none.
async fn open(ctx: &Context, login: Login) -> (LoginOutcome, Option<MaildropLease>) {
    let account = match login {
        Login::Ok(account) => account,
        Login::Failed => return (LoginOutcome::Rejected, None),
        Login::Refused { .. } => return (LoginOutcome::Refused, None),
        Login::Unavailable => return (LoginOutcome::Unavailable, None),
    };
    match open_maildrop(ctx, &account).await {
        Ok((maildrop, lease)) => (LoginOutcome::Opened(maildrop), Some(lease)),
        Err(outcome) => (outcome, None),
    }
}

/// The TRANSACTION state's start for a logged-in account: the maildrop lock, then the INBOX as
/// it is now (listed after the lock, so no other POP3 session changes it meanwhile).
async fn open_maildrop(
    ctx: &Context,
    account: &Account,
) -> Result<(Maildrop, MaildropLease), LoginOutcome> {
    let lease = match ctx.store.maildrop_locks().acquire(account.mailbox_id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            info!(user = %account.address, "pop3 maildrop in use");
            return Err(LoginOutcome::InUse);
        }
        Err(err) => {
            warn!(mailbox = account.mailbox_id, %err, "cannot lock the maildrop");
            return Err(LoginOutcome::Unavailable);
        }
    };
    let folder = match ctx.store.folder(account.mailbox_id, "INBOX").await {
        Ok(Some(folder)) => folder,
        Ok(None) => {
            warn!(mailbox = account.mailbox_id, "mailbox has no INBOX");
            return Err(LoginOutcome::Unavailable);
        }
        Err(err) => {
            warn!(mailbox = account.mailbox_id, %err, "cannot open INBOX");
            return Err(LoginOutcome::Unavailable);
        }
    };
    match ctx.store.messages(folder.id).await {
        Ok(messages) => {
            debug!(user = %account.address, count = messages.len(), "pop3 login");
            Ok((Maildrop::new(&folder, messages), lease))
        }
        Err(err) => {
            warn!(folder = folder.id, %err, "cannot list INBOX");
            Err(LoginOutcome::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn lines() {
        let cases: Vec<(&[u8], usize, Vec<Line>)> = vec![
            (
                b"STAT\r\nLIST 1\n",
                64,
                vec![
                    Line::Complete(b"STAT\r".to_vec()),
                    Line::Complete(b"LIST 1".to_vec()),
                ],
            ),
            // Exactly at the limit (LF counted) passes; one more octet does not.
            (
                b"abcd\nabcde\nok\n",
                5,
                vec![
                    Line::Complete(b"abcd".to_vec()),
                    Line::TooLong,
                    Line::Complete(b"ok".to_vec()),
                ],
            ),
            // An unterminated last line is not a command.
            (b"QUIT", 64, vec![]),
            (b"", 64, vec![]),
            (b"\n", 64, vec![Line::Complete(Vec::new())]),
        ];
        for (input, max, want) in cases {
            // Fed two octets at a time: lines span several reads.
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for chunk in input.chunks(2) {
                lines.push(chunk);
                while let Some(line) = lines.next(max) {
                    got.push(line);
                }
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn long_line_is_dropped_without_growing() {
        let mut lines = Lines::default();
        for _ in 0..256 {
            lines.push(&[b'x'; 4096]);
            assert_eq!(lines.next(MAX_LINE), None);
            assert!(lines.pending.len() <= 2 * MAX_LINE, "memory stays bounded");
        }
        lines.push(b"\nNOOP\n");
        assert_eq!(lines.next(MAX_LINE), Some(Line::TooLong));
        assert_eq!(lines.next(MAX_LINE), Some(Line::Complete(b"NOOP".to_vec())));
    }

    /// A context whose database does not answer: enough for everything before a login, and
    /// for checking that a store failure becomes `[SYS/TEMP]`.
    fn unreachable_store() -> Arc<Context> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("url parses");
        let blobs = Arc::new(mail_blobstore::FsBlobStore::new("/nonexistent"));
        Arc::new(Context {
            store: crate::store::Store::new(pool.clone(), blobs),
            auth: crate::auth::Authenticator::new(pool),
            settings: crate::context::Settings {
                hostname: "mx.test".into(),
                ..Default::default()
            },
        })
    }

    /// Sends `input`, then reads everything the server says until it closes.
    async fn converse(input: &[u8], idle: Duration) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer = "127.0.0.1:1100".parse().unwrap();
        let task = tokio::spawn(serve(server, peer, unreachable_store(), idle));
        client.write_all(input).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut out))
            .await
            .expect("server closes")
            .unwrap();
        task.await.unwrap().unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn conversations() {
        let long = format!("{}\r\nNOOP\r\nQUIT\r\n", "x".repeat(MAX_LINE));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "idle timeout closes",
                b"CAPA\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+OK capability list follows\r\nTOP\r\nUIDL\r\n\
                 USER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n\
                 IMPLEMENTATION kubemail\r\n.\r\n-ERR idle timeout, closing\r\n",
            ),
            (
                "long line is refused, the session goes on",
                long.into_bytes(),
                "+OK mx.test POP3 server ready\r\n-ERR line too long\r\n\
                 -ERR not allowed before login\r\n+OK mx.test POP3 server signing off\r\n",
            ),
            (
                "store down at login",
                b"USER a@b\r\nPASS c\r\nQUIT\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+OK send PASS\r\n\
                 -ERR [SYS/TEMP] mail store unavailable, try again later\r\n\
                 +OK mx.test POP3 server signing off\r\n",
            ),
            (
                "sasl over the wire, store down",
                b"AUTH PLAIN\r\nAGEAYg==\r\nQUIT\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+ \r\n\
                 -ERR [SYS/TEMP] mail store unavailable, try again later\r\n\
                 +OK mx.test POP3 server signing off\r\n",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(
                converse(&input, Duration::from_millis(300)).await,
                want,
                "{name}"
            );
        }
    }
}
