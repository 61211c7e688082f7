//! The adapter between the connection driver, the session and the store: bytes into the
//! session, its lookups and deliveries run, its replies out. Replies to pipelined commands
//! leave together once the session needs more input.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::Limits;
use super::session::{Action, Lookup, Security, Session};
use super::spool::Spool;
use crate::Context;
use crate::auth::SaslLogin;
use crate::driver::{self, Adapter, Connection, Flow, Role, Shutdown, Stream, Timeouts, Transport};
use crate::store::{Store, normalize_address};

/// One SMTP connection as the driver sees it.
pub struct Smtp {
    ctx: Arc<Context>,
    transport: Transport,
    session: Session,
    /// Where a large message's body goes while DATA is read.
    spool: Spool,
    /// An AUTH exchange in progress.
    sasl: Option<SaslLogin>,
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
                plaintext_login: transport.plaintext_login,
            });
        Self {
            ctx,
            transport,
            session,
            spool: Spool::default(),
            sasl: None,
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
                Action::Deliver(mut delivery) => {
                    let result = self.spool.deliver(&self.ctx.store, &mut delivery).await;
                    match &result {
                        Ok(copies) => info!(
                            %peer, id = %delivery.id, size = delivery.message.len(),
                            mailboxes = copies.len(), "message delivered"
                        ),
                        Err(error) => warn!(
                            %peer, id = %delivery.id, %error, "delivery failed; client told to retry"
                        ),
                    }
                    self.session.delivered(result.is_ok());
                }
                Action::Auth(input) => {
                    let reply = self
                        .ctx
                        .auth
                        .sasl_run(&mut self.sasl, input, peer.ip(), "smtp")
                        .await;
                    self.session.auth_done(reply);
                }
                Action::Close => return Flow::Close,
                Action::StartTls => return Flow::StartTls,
            }
        }
        Flow::Continue
    }

    /// The replies of a session that is closing (no store work can be asked for then).
    fn replies(&mut self, out: &mut Vec<u8>) -> Flow {
        while let Some(action) = self.session.next_action() {
            match action {
                Action::Reply(reply) => reply.write_to(out),
                Action::Close => return Flow::Close,
                Action::Lookup(_)
                | Action::Spool(_)
                | Action::Deliver(_)
                | Action::Auth(_)
                | Action::StartTls => {}
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

/// Where `address` delivers: a local mailbox, an unknown user of a hosted domain, or a domain
/// that is not ours (no relaying).
pub async fn lookup(store: &Store, address: &str) -> Lookup {
    match store.resolve_recipient(address).await {
        Ok(Some(recipient)) => Lookup::Local(recipient),
        Ok(None) => {
            let address = normalize_address(address);
            let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
            let hosted: Result<bool, sqlx::Error> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND deleted_at IS NULL)",
            )
            .bind(domain)
            .fetch_one(store.db())
            .await;
            match hosted {
                Ok(true) => Lookup::UnknownUser,
                Ok(false) => Lookup::NotHosted,
                Err(error) => {
                    warn!(%error, "domain lookup failed");
                    Lookup::Failed
                }
            }
        }
        Err(error) => {
            warn!(%error, "recipient lookup failed");
            Lookup::Failed
        }
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
                Action::Auth(input) => text.push_str(&format!("<auth {input:?}>")),
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
    fn auth_on_submission_step_by_step() {
        use crate::auth::{Account, Login, SaslReply};
        let mut s = session(Security {
            tls: true,
            submission: true,
            ..Security::default()
        });
        s.feed(b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        assert_eq!(transcript(&mut s), "503 5.5.1 send EHLO first\r\n");
        s.feed(b"EHLO c.test\r\n");
        let ehlo = transcript(&mut s);
        assert!(
            ehlo.contains("250 AUTH PLAIN LOGIN SCRAM-SHA-256\r\n"),
            "{ehlo}"
        );
        s.feed(b"AUTH login\r\n");
        assert_eq!(
            transcript(&mut s),
            "<auth Start { mechanism: Login, initial: None }>"
        );
        s.auth_done(SaslReply::Challenge(b"Username:".to_vec()));
        assert_eq!(transcript(&mut s), "334 VXNlcm5hbWU6\r\n");
        s.feed(b"YWxpY2U=\r\n");
        assert_eq!(transcript(&mut s), "<auth Respond(<redacted>)>");
        s.auth_done(SaslReply::Challenge(b"Password:".to_vec()));
        assert_eq!(transcript(&mut s), "334 UGFzc3dvcmQ6\r\n");
        s.feed(b"*\r\n");
        assert_eq!(transcript(&mut s), "501 5.0.0 Authentication cancelled\r\n");
        // A response line too long ends the exchange; the next line is a command again.
        s.feed(b"AUTH LOGIN\r\n");
        transcript(&mut s);
        s.auth_done(SaslReply::Challenge(b"Username:".to_vec()));
        transcript(&mut s);
        s.feed(format!("{}\r\nNOOP\r\n", "A".repeat(5000)).as_bytes());
        assert_eq!(
            transcript(&mut s),
            "500 5.5.2 line too long\r\n250 2.0.0 Ok\r\n"
        );
        s.feed(b"AUTH PLAIN =\r\n");
        assert_eq!(
            transcript(&mut s),
            "<auth Start { mechanism: Plain, initial: Some(\"<redacted>\") }>"
        );
        s.auth_done(SaslReply::Done(Login::Failed));
        assert_eq!(
            transcript(&mut s),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
        s.feed(b"MAIL FROM:<alice@example.test>\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !\r\n");
        assert_eq!(
            transcript(&mut s),
            "530 5.7.0 Authentication required\r\n\
             504 5.5.4 Unrecognized authentication type\r\n\
             501 5.5.2 invalid base64 in SASL response\r\n"
        );
        s.feed(b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        transcript(&mut s);
        s.auth_done(SaslReply::Done(Login::Ok(Account {
            mailbox_id: 1,
            address: "alice@example.test".into(),
        })));
        assert_eq!(
            transcript(&mut s),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(s.authenticated(), Some("alice@example.test"));
        s.feed(b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\nMAIL FROM:<alice@example.test>\r\n");
        let text = transcript(&mut s);
        assert!(!text.contains("AUTH"), "not offered again: {text}");
        assert!(
            text.ends_with("503 5.5.1 already authenticated\r\n250 2.1.0 Ok\r\n"),
            "{text}"
        );
        s.feed(b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        assert!(transcript(&mut s).starts_with("503 5.5.1"));
        // TLS starts the session over: the authentication is forgotten (RFC 3207).
        s.tls_started();
        assert_eq!(s.authenticated(), None);
    }

    #[test]
    fn auth_needs_tls_or_an_allowed_clear_text_channel() {
        use crate::auth::{Login, SaslReply};
        let mut s = session(Security {
            starttls: true,
            submission: true,
            ..Security::default()
        });
        s.feed(b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
        let text = transcript(&mut s);
        assert!(!text.contains("AUTH PLAIN"), "{text}");
        assert!(
            text.ends_with(
                "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
            ),
            "{text}"
        );
        // Loopback without TLS, where clear-text logins are allowed.
        let mut s = session(Security {
            submission: true,
            plaintext_login: true,
            ..Security::default()
        });
        s.feed(b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
        let text = transcript(&mut s);
        assert!(
            text.contains("250 AUTH PLAIN LOGIN SCRAM-SHA-256"),
            "{text}"
        );
        assert!(text.ends_with("<auth Start { mechanism: Plain, initial: Some(\"<redacted>\") }>"));
        // A banned address is told and the connection closes.
        s.auth_done(SaslReply::Done(Login::Refused {
            remaining: std::time::Duration::from_secs(60),
        }));
        assert_eq!(
            transcript(&mut s),
            "421 4.7.0 too many failed logins from your address, try again later\r\n<close>"
        );
        // No AUTH on an MX listener at all.
        let mut s = session(Security {
            tls: true,
            ..Security::default()
        });
        s.feed(b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
        let text = transcript(&mut s);
        assert!(!text.contains("AUTH PLAIN"), "{text}");
        assert!(
            text.ends_with("502 5.5.1 AUTH not implemented\r\n"),
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
