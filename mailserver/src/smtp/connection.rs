//! The adapter between the connection driver, the session, the pipeline and the store: bytes
//! into the session, its lookups run against the store, its messages through the pipeline's
//! checks and router, its replies out. Replies to pipelined commands
//! leave together once the session needs more input.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use mail_blobstore::BlobSource;

use super::Limits;
use super::reply::Reply;
use super::session::{Action, Delivery, Lookup, Security, Session};
use super::spool::Spool;
use crate::Context;
use crate::driver::{self, Adapter, Connection, Flow, Role, Shutdown, Stream, Timeouts, Transport};
use crate::pipeline::authentication::results;
use crate::pipeline::router::{self, RouteError};
use crate::pipeline::{Disposition, IncomingMessage, Pipeline};
use crate::store::{Route, Store};

/// One SMTP connection as the driver sees it.
pub struct Smtp {
    ctx: Arc<Context>,
    transport: Transport,
    session: Session,
    /// Where a large message's body goes while DATA is read.
    spool: Spool,
    pipeline: Pipeline,
}

impl Smtp {
    pub fn new(ctx: Arc<Context>, transport: Transport) -> Self {
        let limits = Limits::from_settings(&ctx.settings);
        Self::with_limits(ctx, transport, limits)
    }

    pub fn with_limits(ctx: Arc<Context>, transport: Transport, limits: Limits) -> Self {
        let session = Session::new(ctx.settings.hostname.clone(), transport.peer.ip(), limits)
            .with_security(Security {
                starttls: transport.starttls,
                tls: transport.tls,
                submission: transport.role == Role::Submission,
            })
            .with_outbound(ctx.settings.pipeline.outbound.is_some());
        let pipeline = Pipeline::from_settings(&ctx.settings.pipeline);
        Self {
            ctx,
            transport,
            session,
            spool: Spool::default(),
            pipeline,
        }
    }

    /// Runs the session's actions until it needs input; store work is awaited here.
    async fn pump(&mut self, out: &mut Vec<u8>) -> Flow {
        let peer = self.transport.peer;
        while let Some(action) = self.session.next_action() {
            match action {
                Action::Reply(reply) => reply.write_to(out),
                Action::Lookup(address) => {
                    let found = lookup(&self.ctx.store, &address).await;
                    self.session.lookup_done(found);
                }
                Action::Spool(chunk) => self.spool.write(chunk).await,
                Action::Deliver(delivery) => {
                    let id = delivery.id.clone();
                    let size = delivery.message.len();
                    let result = self.deliver(delivery).await;
                    self.spool.clear();
                    match result {
                        Ok(copies) => {
                            info!(%peer, %id, size, mailboxes = copies, "message delivered");
                            self.session.delivered(true);
                        }
                        Err(Failure::Refused(reply)) => {
                            info!(%peer, %id, size, reply = %reply.to_wire().trim_end(), "message refused");
                            self.session.refused(reply);
                        }
                        Err(Failure::Route(error)) => {
                            warn!(%peer, %id, %error, "delivery failed; client told to retry");
                            self.session.delivered(false);
                        }
                    }
                }
                Action::Close => return Flow::Close,
                Action::StartTls => return Flow::StartTls,
            }
        }
        Flow::Continue
    }

    /// Runs the pipeline's checks on a message and routes it; returns the local copies made.
    async fn deliver(&mut self, delivery: Delivery) -> Result<usize, Failure> {
        let Delivery {
            id,
            message: body,
            envelope,
            recipients: _,
        } = delivery;
        let mut incoming = IncomingMessage { id, envelope, body };
        let hostname = self.ctx.settings.hostname.as_str();
        let mut junk = false;
        let source = if self.pipeline.applies(&incoming) {
            let raw = self
                .spool
                .read(&incoming.body)
                .await
                .map_err(RouteError::from)?;
            let decision = self.pipeline.run(&incoming, &raw, hostname).await;
            match decision.disposition {
                Disposition::Accept => {}
                Disposition::Quarantine(_) => junk = true,
                Disposition::Reject(reply) | Disposition::TempFail(reply) => {
                    return Err(Failure::Refused(reply));
                }
            }
            let raw = results::strip_forged(&raw, hostname).unwrap_or(raw);
            let mut message = decision.headers.concat().into_bytes();
            message.extend_from_slice(&raw);
            // The header changed the size the RCPT-time quota check saw; the store checks
            // again in its transaction.
            BlobSource::Bytes(message.into())
        } else {
            self.spool
                .source(&mut incoming.body)
                .await
                .map_err(RouteError::from)?
        };
        let settings = &self.ctx.settings;
        let delivered = router::deliver(
            &self.ctx.store,
            settings.pipeline.outbound.as_deref(),
            settings.pipeline.srs_secret.as_deref(),
            &incoming,
            &source,
            junk,
        )
        .await?;
        Ok(delivered.len())
    }

    /// The replies of a session that is closing (no store work can be asked for then).
    fn replies(&mut self, out: &mut Vec<u8>) -> Flow {
        while let Some(action) = self.session.next_action() {
            match action {
                Action::Reply(reply) => reply.write_to(out),
                Action::Close => return Flow::Close,
                Action::Lookup(_) | Action::Spool(_) | Action::Deliver(_) | Action::StartTls => {}
            }
        }
        Flow::Close
    }
}

#[async_trait::async_trait]
impl Adapter for Smtp {
    fn start(&mut self, out: &mut Vec<u8>) {
        // The greeting only: nothing else is queued before input.
        while let Some(Action::Reply(reply)) = self.session.next_action() {
            reply.write_to(out);
        }
    }

    async fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        self.session.feed(bytes);
        self.pump(out).await
    }

    fn tls_started(&mut self, _out: &mut Vec<u8>) {
        self.transport.tls = true;
        self.session.tls_started();
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) -> Flow {
        self.session.timed_out();
        self.replies(out)
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) -> Flow {
        // A message being sent is received and stored first; `421` follows its `250`.
        if self.session.in_data() {
            return Flow::Continue;
        }
        self.session.shutting_down();
        self.replies(out)
    }

    fn authenticated(&self) -> bool {
        // No login on an MX: the RFC 5321 command timer applies from the start.
        true
    }
}

/// Serves one clear-text SMTP connection on any stream under the driver, with `limits`' timers
/// (tests and tools; the listeners build their connections themselves).
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<Context>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut timeouts = Timeouts::new(limits.idle_timeout);
    timeouts.login_idle = limits.idle_timeout;
    timeouts.session = limits.session_timeout;
    let conn = Connection {
        peer,
        protocol: "smtp",
        starttls: None,
        timeouts,
        shutdown: Shutdown::after(shutdown),
        refuse_proxy_header: false,
    };
    let adapter = Smtp::with_limits(ctx, Transport::plain(peer), limits);
    driver::run(adapter, Stream::plain(stream), conn).await
}

/// Where `address` delivers, as the session needs to know it.
pub async fn lookup(store: &Store, address: &str) -> Lookup {
    match store.route(address).await {
        Ok(Route::Local(recipient)) => Lookup::Local(recipient),
        Ok(Route::UnknownUser) => Lookup::UnknownUser,
        Ok(Route::NotHosted) => Lookup::NotHosted,
        Ok(Route::Remote(targets)) => Lookup::Remote(targets),
        Err(error) => {
            warn!(%error, "recipient lookup failed");
            Lookup::Failed
        }
    }
}

/// Why a message was not taken.
enum Failure {
    /// A check refused it with this reply.
    Refused(Reply),
    /// Storing or queueing failed (a temporary failure).
    Route(RouteError),
}

impl From<RouteError> for Failure {
    fn from(error: RouteError) -> Self {
        Failure::Route(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(session: &mut Session) -> String {
        let mut text = String::new();
        while let Some(action) = session.next_action() {
            match action {
                Action::Reply(reply) => text.push_str(&reply.to_wire()),
                Action::StartTls => text.push_str("<starttls>"),
                Action::Close => text.push_str("<close>"),
                Action::Lookup(_) | Action::Spool(_) | Action::Deliver(_) => {
                    text.push_str("<store>")
                }
            }
        }
        text
    }

    fn session(security: Security) -> Session {
        let mut session = Session::new("mx.test", "192.0.2.1".parse().unwrap(), Limits::default())
            .with_security(security);
        transcript(&mut session);
        session
    }

    #[test]
    fn starttls_drops_what_was_pipelined_after_it() {
        let mut s = session(Security {
            starttls: true,
            ..Security::default()
        });
        s.feed(b"EHLO c.test\r\nSTARTTLS\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\n");
        let before = transcript(&mut s);
        assert!(
            before.contains("250-STARTTLS\r\n") || before.contains("250 STARTTLS\r\n"),
            "{before}"
        );
        assert!(
            before.ends_with("220 2.0.0 Ready to start TLS\r\n<starttls>"),
            "{before}"
        );
        s.tls_started();
        assert_eq!(
            transcript(&mut s),
            "",
            "NOOP and MAIL sent before the handshake are gone"
        );
        s.feed(b"MAIL FROM:<a@b.test>\r\n");
        let after = transcript(&mut s);
        assert!(
            after.starts_with("503 "),
            "EHLO again first (RFC 3207): {after}"
        );
        s.feed(b"EHLO c.test\r\nSTARTTLS\r\n");
        let after = transcript(&mut s);
        assert!(
            !after.contains("STARTTLS\r\n"),
            "not offered twice: {after}"
        );
        assert!(!after.contains("<starttls>"), "{after}");
    }

    #[test]
    fn submission_refuses_mail_without_tls_and_auth() {
        let mut s = session(Security {
            starttls: true,
            submission: true,
            ..Security::default()
        });
        s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
        let text = transcript(&mut s);
        assert!(
            text.ends_with("530 5.7.0 Must issue a STARTTLS command first\r\n"),
            "{text}"
        );
        s.tls_started();
        s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
        let text = transcript(&mut s);
        assert!(
            text.ends_with("530 5.7.0 Authentication required\r\n"),
            "{text}"
        );
    }

    #[test]
    fn mx_without_tls_offers_no_starttls() {
        let mut s = session(Security::default());
        s.feed(b"EHLO c.test\r\nSTARTTLS\r\n");
        let text = transcript(&mut s);
        assert!(
            !text.contains("250-STARTTLS") && !text.contains("250 STARTTLS"),
            "{text}"
        );
        assert!(text.contains("502 "), "{text}");
        assert!(!text.contains("<starttls>"), "{text}");
    }
}
