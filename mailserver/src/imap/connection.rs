//! The adapter between the connection driver, `imap-next` and the session: bytes in, decoded
//! commands to the session, responses out. It answers STARTTLS and refuses clear-text logins
//! before TLS and big literals before login itself; nothing else here knows IMAP semantics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{CommandContinuationRequest, Response};
use imap_next::server::{Error as ServerError, Event, Options, Server};
use imap_next::{Interrupt, Io, State as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::auth::AuthStep;
use super::prelogin::Guard;
use super::reply::{self, Kind};
use super::session::{Session, State};
use crate::Context;
use crate::driver::{self, Adapter, Connection, Flow, Shutdown, Stream, Timeouts, Transport};

/// A client silent this long is logged out (RFC 3501 asks for at least 30 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Room for the longest command line besides literals.
const MAX_COMMAND_LINE: u32 = 64 * 1024;

fn options(ctx: &Context) -> Options {
    let mut options = Options::default();
    // Hand-typed sessions (telnet, nc) end lines with a bare LF.
    options.crlf_relaxed = true;
    // The limits after login; before it, `prelogin::Guard` keeps lines and literals short.
    options.max_literal_size = u32::try_from(ctx.settings.max_message_size).unwrap_or(u32::MAX);
    options.max_command_size = options.max_literal_size.saturating_add(MAX_COMMAND_LINE);
    // Both texts are constants that imap-types accepts.
    let _ = options.set_literal_accept_text("Ready for literal data".to_string());
    let _ = options.set_literal_reject_text("Literal is too large".to_string());
    options
}

/// The tag at the front of a line that did not parse, so the BAD can carry it.
fn tag_of(line: &[u8]) -> Option<Tag<'static>> {
    let end = line.iter().position(|&b| b == b' ')?;
    Tag::try_from(line[..end].to_vec()).ok()
}

fn queue(server: &mut Server, responses: Vec<Response<'static>>) {
    for response in responses {
        match response {
            Response::Data(data) => {
                server.enqueue_data(data);
            }
            Response::Status(status) => {
                server.enqueue_status(status);
            }
            Response::CommandContinuationRequest(ccr) => {
                server.enqueue_continuation_request(ccr);
            }
        }
    }
}

/// Adds encoded output to `out`, taking the buffer itself when `out` is empty: a FETCH literal
/// is as large as its message, and a copy of it would be one more message in memory.
fn append(out: &mut Vec<u8>, bytes: Vec<u8>) {
    if out.is_empty() {
        *out = bytes;
    } else {
        out.extend_from_slice(&bytes);
    }
}

/// Moves everything queued to `out`, stopping at the first thing that is not output (used
/// only where the connection ends or restarts, so what follows does not matter).
fn flush(server: &mut Server, out: &mut Vec<u8>) {
    loop {
        match server.next() {
            Err(Interrupt::Io(Io::Output(bytes))) => append(out, bytes),
            Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
            _ => break,
        }
    }
}

/// What `server.next()` gave while a long answer was being emitted (a command pipelined behind
/// a FETCH), kept for [`Imap::process`].
type Pending = VecDeque<Result<Event, Interrupt<ServerError>>>;

/// One IMAP connection as the driver sees it.
pub struct Imap {
    ctx: Arc<Context>,
    transport: Transport,
    session: Session,
    server: Server,
    guard: Guard,
    /// Line lengths after login (see [`Guard::after_login`]).
    guard_after_login: Guard,
    pending: Pending,
}

impl Imap {
    pub fn new(ctx: Arc<Context>, transport: Transport) -> Self {
        let mut session = Session::new(ctx.clone(), transport.peer);
        session.set_security(
            transport.starttls && !transport.tls,
            !transport.login_allowed(),
        );
        let server = Server::new(options(&ctx), session.greeting());
        Self {
            ctx,
            transport,
            session,
            server,
            guard: Guard::default(),
            guard_after_login: Guard::after_login(),
            pending: Pending::new(),
        }
    }

    /// Moves the responses queued so far to `out`, keeping any event that comes up meanwhile
    /// for [`Imap::process`]: `imap-next` hands out a pipelined command as soon as its send
    /// queue is empty.
    fn emit(&mut self, out: &mut Vec<u8>) {
        loop {
            match self.server.next() {
                Err(Interrupt::Io(Io::Output(bytes))) => append(out, bytes),
                Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
                Err(Interrupt::Io(Io::NeedMoreInput)) => break,
                other => {
                    self.pending.push_back(other);
                    break;
                }
            }
        }
    }

    fn refuse(&mut self, tag: Tag<'static>, text: &str) {
        let status = reply::tagged(
            tag,
            Kind::No,
            Some(reply::other_code("PRIVACYREQUIRED")),
            text,
        );
        self.server.enqueue_status(status);
    }

    /// STARTTLS: `OK`, then a fresh `imap-next` state with nothing the client sent after the
    /// command in it (CVE-2011-0411).
    fn starttls(&mut self, tag: Tag<'static>, out: &mut Vec<u8>) -> Option<Flow> {
        if !self.transport.starttls
            || self.transport.tls
            || self.session.state() != State::NotAuthenticated
        {
            self.server
                .enqueue_status(reply::tagged_bad(tag, "STARTTLS is not offered here"));
            return None;
        }
        self.server
            .enqueue_status(reply::tagged_ok(tag, None, "Begin TLS negotiation now"));
        flush(&mut self.server, out);
        let mut fresh = Server::new(options(&self.ctx), self.session.greeting());
        // The greeting was said once, in clear text; the new state's copy is dropped.
        let mut greeting = Vec::new();
        flush(&mut fresh, &mut greeting);
        self.server = fresh;
        self.guard = Guard::default();
        Some(Flow::StartTls)
    }

    /// Runs `imap-next` over the input queued, the session over each command.
    async fn process(&mut self, out: &mut Vec<u8>) -> Flow {
        loop {
            let next = self
                .pending
                .pop_front()
                .unwrap_or_else(|| self.server.next());
            let event = match next {
                Ok(event) => event,
                Err(Interrupt::Io(Io::Output(bytes))) => {
                    append(out, bytes);
                    continue;
                }
                Err(Interrupt::Io(Io::NeedMoreInput)) => return Flow::Continue,
                Err(Interrupt::Error(err)) => {
                    debug!(peer = %self.transport.peer, error = %err, "imap: unreadable input");
                    match err {
                        ServerError::MalformedMessage { discarded_bytes }
                        | ServerError::ExpectedCrlfGotLf { discarded_bytes } => {
                            // A bad AUTHENTICATE response ends that exchange with its own tag.
                            if let Some(tag) = self.session.abort_authenticate() {
                                let bad = reply::tagged_bad(tag, "Unknown command or bad syntax");
                                let _ = self.server.authenticate_finish(bad);
                                continue;
                            }
                            let line = discarded_bytes.declassify();
                            if self.authenticated()
                                && let Some((command, extension)) = super::extended::parse(line)
                            {
                                self.session.command_extended(command, extension).await;
                                queue(&mut self.server, self.session.take_output());
                                continue;
                            }
                            let status = match tag_of(line) {
                                Some(tag) => {
                                    reply::tagged_bad(tag, "Unknown command or bad syntax")
                                }
                                None => reply::untagged_bad("Unknown command or bad syntax"),
                            };
                            self.server.enqueue_status(status);
                        }
                        ServerError::CommandTooLong { .. } => {
                            self.server.enqueue_status(reply::bye("Command too long"));
                            flush(&mut self.server, out);
                            return Flow::Close;
                        }
                        // imap-next has already answered the tag with BAD.
                        ServerError::LiteralTooLong { .. } => {}
                    }
                    continue;
                }
            };
            match event {
                Event::CommandReceived { command } => {
                    if let Some(flow) = self.command(command, out).await {
                        return flow;
                    }
                }
                Event::CommandAuthenticateReceived {
                    command_authenticate,
                } => {
                    if !self.transport.login_allowed() {
                        let status = reply::tagged(
                            command_authenticate.tag,
                            Kind::No,
                            Some(reply::other_code("PRIVACYREQUIRED")),
                            "Use STARTTLS or the TLS port before authenticating",
                        );
                        let _ = self.server.authenticate_finish(status);
                        continue;
                    }
                    let step = self
                        .session
                        .authenticate_start(
                            command_authenticate.tag,
                            command_authenticate.mechanism,
                            command_authenticate.initial_response,
                        )
                        .await;
                    if let Some(flow) = self.auth_step(step, out) {
                        return flow;
                    }
                }
                Event::AuthenticateDataReceived { authenticate_data } => {
                    let step = self.session.authenticate_data(authenticate_data).await;
                    if let Some(flow) = self.auth_step(step, out) {
                        return flow;
                    }
                }
                Event::IdleCommandReceived { tag } => {
                    let _ = self
                        .server
                        .idle_reject(reply::tagged_bad(tag, "IDLE is not supported yet"));
                }
                Event::GreetingSent { .. }
                | Event::ResponseSent { .. }
                | Event::IdleDoneReceived => {}
            }
        }
    }

    /// Sends an AUTHENTICATE challenge or its end; `Some` when the connection must close (a
    /// banned client).
    fn auth_step(&mut self, step: AuthStep, out: &mut Vec<u8>) -> Option<Flow> {
        match step {
            AuthStep::Continue(challenge) => {
                let ccr = if challenge.is_empty() {
                    CommandContinuationRequest::basic(None, " ")
                        .or_else(|_| CommandContinuationRequest::basic(None, "ready"))
                        .ok()
                } else {
                    Some(CommandContinuationRequest::base64(challenge))
                };
                if let Some(ccr) = ccr {
                    let _ = self.server.authenticate_continue(ccr);
                }
                None
            }
            AuthStep::Done(status) => {
                let _ = self.server.authenticate_finish(status);
                if self.session.state() != State::Logout {
                    return None;
                }
                // Refused: the session's BYE goes out after the tagged answer here.
                let _ = self.session.take_output();
                Some(self.goodbye("Too many failed logins", out))
            }
        }
    }

    /// One command; `Some` when the connection must close or start TLS.
    async fn command(&mut self, command: Command<'static>, out: &mut Vec<u8>) -> Option<Flow> {
        match &command.body {
            CommandBody::StartTLS => return self.starttls(command.tag, out),
            CommandBody::Login { .. } if !self.transport.login_allowed() => {
                self.refuse(command.tag, "LOGIN is disabled before STARTTLS");
                return None;
            }
            _ => {}
        }
        self.session.command(command).await;
        queue(&mut self.server, self.session.take_output());
        if self.session.has_more() {
            // A long answer (FETCH) goes out a batch at a time: the driver writes this one
            // and calls [`Adapter::resume`] for the next; pipelined commands wait.
            self.emit(out);
            return Some(Flow::Continue);
        }
        if self.session.state() == State::Logout {
            // Say goodbye and leave; anything the client sent after LOGOUT is ignored.
            flush(&mut self.server, out);
            return Some(Flow::Close);
        }
        None
    }

    fn goodbye(&mut self, text: &str, out: &mut Vec<u8>) -> Flow {
        self.server.enqueue_status(reply::bye(text));
        flush(&mut self.server, out);
        Flow::Close
    }
}

#[async_trait::async_trait]
impl Adapter for Imap {
    fn start(&mut self, out: &mut Vec<u8>) {
        flush(&mut self.server, out);
    }

    async fn input(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        // Before login, one line at a time: the limits hold until the login has happened,
        // and a command pipelined after LOGIN gets the limits of a logged-in session.
        while !self.authenticated() && !bytes.is_empty() {
            let end = bytes
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |lf| lf + 1);
            let (line, rest) = bytes.split_at(end);
            bytes = rest;
            if let Err(refusal) = self.guard.scan(line) {
                info!(peer = %self.transport.peer, %refusal, "imap: refused before login");
                return self.goodbye(&refusal.to_string(), out);
            }
            self.server.enqueue_input(line);
            let flow = self.process(out).await;
            if flow != Flow::Continue {
                return flow;
            }
        }
        if bytes.is_empty() {
            return Flow::Continue;
        }
        if let Err(refusal) = self.guard_after_login.scan(bytes) {
            info!(peer = %self.transport.peer, %refusal, "imap: refused");
            return self.goodbye(&refusal.to_string(), out);
        }
        self.server.enqueue_input(bytes);
        self.process(out).await
    }

    fn has_more(&self) -> bool {
        self.session.has_more() || !self.pending.is_empty()
    }

    async fn resume(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.session.has_more() {
            self.session.resume().await;
            queue(&mut self.server, self.session.take_output());
            if self.session.has_more() {
                self.emit(out);
                return Flow::Continue;
            }
            if self.session.state() == State::Logout {
                flush(&mut self.server, out);
                return Flow::Close;
            }
        }
        // The long answer is complete: go on with what the client pipelined behind it.
        self.process(out).await
    }

    fn tls_started(&mut self, _out: &mut Vec<u8>) {
        self.transport.tls = true;
        self.transport.starttls = false;
        self.session.set_security(false, false);
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) -> Flow {
        self.goodbye("Autologout: idle for too long", out)
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) -> Flow {
        self.goodbye("Server shutting down, reconnect", out)
    }

    fn authenticated(&self) -> bool {
        self.session.state() != State::NotAuthenticated
    }
}

/// Serves one clear-text IMAP connection on any stream under the driver (tests, tools).
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Connection {
        peer,
        protocol: "imap",
        starttls: None,
        timeouts: Timeouts::new(IDLE_TIMEOUT),
        shutdown: Shutdown::never(),
        refuse_proxy_header: false,
    };
    driver::run(
        Imap::new(ctx, Transport::plain(peer)),
        Stream::plain(stream),
        conn,
    )
    .await
}
