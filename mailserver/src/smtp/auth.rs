//! SMTP AUTH (RFC 4954) on submission listeners: PLAIN, LOGIN and SCRAM-SHA-256 through the
//! one login service. The session stays sans-I/O: it asks for each SASL step with
//! [`Action::Auth`] and the connection reports the service's answer with
//! [`Session::auth_done`].

use crate::auth::sasl::{self, Mechanism, Response};
use crate::auth::{Login, SaslInput, SaslReply};

use super::reply::{Reject, Reply};
use super::session::{Action, Mode, Session};

/// What EHLO announces on a listener where AUTH may be used now.
pub fn ehlo_keyword() -> String {
    let names = Mechanism::OFFERED.map(Mechanism::name);
    format!("AUTH {}", names.join(" "))
}

/// What follows `AUTH ` on a command line, if it is one (any case, CRLF or LF removed).
pub(super) fn auth_args(line: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case("AUTH") {
        return None;
    }
    match line.as_bytes().get(4) {
        None => Some(""),
        Some(b' ') => Some(&line[5..]),
        Some(_) => None,
    }
}

impl Session {
    /// Whether AUTH is offered now: a submission listener, not yet authenticated, and a
    /// channel a password may cross (TLS, or clear text where the listener allows it).
    pub(super) fn auth_offered(&self) -> bool {
        let security = self.security();
        security.submission
            && self.authenticated.is_none()
            && (security.tls || security.plaintext_login)
    }

    /// `AUTH mechanism [initial-response]`, `args` being what follows the verb.
    pub(super) fn auth_command(&mut self, args: &str) {
        let security = self.security();
        if !security.submission {
            return self.reject(Reject::NotImplemented("AUTH"));
        }
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return self.reject(Reject::BadSequence("send EHLO first"));
        }
        if self.authenticated.is_some() {
            return self.reject(Reject::BadSequence("already authenticated"));
        }
        if self.tx.is_some() {
            return self.reject(Reject::BadSequence(
                "AUTH is not permitted during a mail transaction",
            ));
        }
        if !security.tls && !security.plaintext_login {
            self.errors_inc();
            return self.reply(Reply::new(
                538,
                Some([5, 7, 11]),
                "Encryption required for requested authentication mechanism",
            ));
        }
        let mut words = args.split_ascii_whitespace();
        let (Some(name), initial, None) = (words.next(), words.next(), words.next()) else {
            return self.reject(Reject::Syntax("AUTH mechanism [initial-response]"));
        };
        let Some(mechanism) = Mechanism::parse(name).filter(|m| m.offered()) else {
            self.errors_inc();
            return self.reply(Reply::new(
                504,
                Some([5, 5, 4]),
                "Unrecognized authentication type",
            ));
        };
        let initial = match initial.map(|i| sasl::decode_line(i.as_bytes(), true)) {
            None => None,
            Some(Ok(Response::Data(data))) => Some(data),
            Some(Ok(Response::Cancel)) => return self.cancelled(),
            Some(Err(why)) => return self.malformed(why),
        };
        self.ask(Action::Auth(SaslInput::Start { mechanism, initial }));
    }

    /// A line after a `334` challenge: the client's response, or `*`.
    pub(super) fn auth_response(&mut self, line: &[u8]) {
        match sasl::decode_line(line, false) {
            Ok(Response::Data(data)) => self.ask(Action::Auth(SaslInput::Respond(data))),
            Ok(Response::Cancel) => self.cancelled(),
            Err(why) => self.malformed(why),
        }
    }

    /// The login service's answer to the last [`Action::Auth`].
    pub fn auth_done(&mut self, reply: SaslReply) {
        if !matches!(self.mode, Mode::Auth) {
            return;
        }
        self.mode = Mode::Command;
        match reply {
            SaslReply::Challenge(challenge) => {
                self.mode = Mode::AuthResponse;
                self.reply(Reply::new(334, None, sasl::encode(&challenge)));
            }
            SaslReply::Malformed(why) => self.malformed(why),
            SaslReply::Done(Login::Ok(account)) => {
                self.authenticated = Some(account.address);
                self.reply(Reply::new(
                    235,
                    Some([2, 7, 0]),
                    "Authentication successful",
                ));
            }
            SaslReply::Done(Login::Failed) => self.reply(Reply::new(
                535,
                Some([5, 7, 8]),
                "Authentication credentials invalid",
            )),
            SaslReply::Done(Login::Refused { .. }) => self.close_with(Reject::Banned),
            SaslReply::Done(Login::Unavailable) => self.reply(Reply::new(
                454,
                Some([4, 7, 0]),
                "Temporary authentication failure, try again later",
            )),
        }
    }

    /// The address the client authenticated as.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    fn cancelled(&mut self) {
        self.errors_inc();
        self.reply(Reply::new(501, Some([5, 0, 0]), "Authentication cancelled"));
    }

    fn malformed(&mut self, why: sasl::Malformed) {
        self.errors_inc();
        self.reply(Reply::new(501, Some([5, 5, 2]), why.to_string()));
    }
}
