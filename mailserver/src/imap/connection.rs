//! The I/O loop: bytes from the socket into `imap-next`, decoded commands into the session,
//! responses back out. Nothing here knows IMAP semantics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{CommandContinuationRequest, Response};
use imap_next::server::{Error as ServerError, Event, Options, Server};
use imap_next::{Interrupt, Io, State as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::auth::AuthStep;
use super::reply;
use super::session::{Session, State};
use crate::Context;

/// A client silent this long is logged out (RFC 3501 asks for at least 30 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Room for the longest command line besides literals.
const MAX_COMMAND_LINE: u32 = 64 * 1024;

fn options(ctx: &Context) -> Options {
    let mut options = Options::default();
    // Hand-typed sessions (telnet, nc) end lines with a bare LF.
    options.crlf_relaxed = true;
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

/// Writes everything queued, stopping at the first thing that is not output.
async fn drain<S: AsyncWrite + Unpin>(server: &mut Server, stream: &mut S) -> anyhow::Result<()> {
    loop {
        match server.next() {
            Err(Interrupt::Io(Io::Output(bytes))) => stream.write_all(&bytes).await?,
            Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
            _ => break,
        }
    }
    stream.flush().await?;
    Ok(())
}

/// What `server.next()` gave while a long answer was being written, kept for the main loop.
type Pending = VecDeque<Result<Event, Interrupt<ServerError>>>;

/// Writes everything queued, keeping any event that comes up meanwhile (a pipelined command).
async fn write_queued<S: AsyncWrite + Unpin>(
    server: &mut Server,
    stream: &mut S,
    pending: &mut Pending,
) -> anyhow::Result<()> {
    loop {
        match server.next() {
            Err(Interrupt::Io(Io::Output(bytes))) => stream.write_all(&bytes).await?,
            Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
            Err(Interrupt::Io(Io::NeedMoreInput)) => break,
            other => {
                pending.push_back(other);
                break;
            }
        }
    }
    stream.flush().await?;
    Ok(())
}

/// Serves one connection until the client logs out, hangs up or falls silent.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session::new(ctx.clone(), peer);
    let mut server = Server::new(options(&ctx), session.greeting());
    let mut buffer = vec![0u8; 64 * 1024];
    let mut pending = Pending::new();
    loop {
        let next = pending.pop_front().unwrap_or_else(|| server.next());
        let event = match next {
            Ok(event) => event,
            Err(Interrupt::Io(Io::Output(bytes))) => {
                stream.write_all(&bytes).await?;
                continue;
            }
            Err(Interrupt::Io(Io::NeedMoreInput)) => {
                stream.flush().await?;
                let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buffer)).await;
                match read {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => server.enqueue_input(&buffer[..n]),
                    Ok(Err(err)) => return Err(err.into()),
                    Err(_) => {
                        server.enqueue_status(reply::bye("Autologout: idle for too long"));
                        drain(&mut server, &mut stream).await?;
                        break;
                    }
                }
                continue;
            }
            Err(Interrupt::Error(err)) => {
                debug!(%peer, error = %err, "imap: unreadable input");
                match err {
                    ServerError::MalformedMessage { discarded_bytes }
                    | ServerError::ExpectedCrlfGotLf { discarded_bytes } => {
                        // A bad AUTHENTICATE response ends that exchange with its own tag.
                        if let Some(tag) = session.abort_authenticate() {
                            let bad = reply::tagged_bad(tag, "Unknown command or bad syntax");
                            let _ = server.authenticate_finish(bad);
                            continue;
                        }
                        let status = match tag_of(discarded_bytes.declassify()) {
                            Some(tag) => reply::tagged_bad(tag, "Unknown command or bad syntax"),
                            None => reply::untagged_bad("Unknown command or bad syntax"),
                        };
                        server.enqueue_status(status);
                    }
                    ServerError::CommandTooLong { .. } => {
                        server.enqueue_status(reply::bye("Command too long"));
                        drain(&mut server, &mut stream).await?;
                        break;
                    }
                    // imap-next has already answered the tag with BAD.
                    ServerError::LiteralTooLong { .. } => {}
                }
                continue;
            }
        };
        match event {
            Event::CommandReceived { command } => {
                session.command(command).await;
                // A long answer (FETCH) goes out a batch at a time.
                loop {
                    queue(&mut server, session.take_output());
                    if !session.has_more() {
                        break;
                    }
                    write_queued(&mut server, &mut stream, &mut pending).await?;
                    session.resume().await;
                }
                if session.state() == State::Logout {
                    // Say goodbye and leave; anything the client sent after LOGOUT is ignored.
                    drain(&mut server, &mut stream).await?;
                    break;
                }
            }
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let step = session
                    .authenticate_start(
                        command_authenticate.tag,
                        command_authenticate.mechanism,
                        command_authenticate.initial_response,
                    )
                    .await;
                match step {
                    AuthStep::Continue => {
                        let ccr = CommandContinuationRequest::basic(None, " ")
                            .or_else(|_| CommandContinuationRequest::basic(None, "ready"))
                            .map_err(|_| anyhow::anyhow!("continuation request"))?;
                        let _ = server.authenticate_continue(ccr);
                    }
                    AuthStep::Done(status) => {
                        let _ = server.authenticate_finish(status);
                    }
                }
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let status = session.authenticate_data(authenticate_data).await;
                let _ = server.authenticate_finish(status);
            }
            Event::IdleCommandReceived { tag } => {
                let _ = server.idle_reject(reply::tagged_bad(tag, "IDLE is not supported yet"));
            }
            Event::GreetingSent { .. } | Event::ResponseSent { .. } | Event::IdleDoneReceived => {}
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}
