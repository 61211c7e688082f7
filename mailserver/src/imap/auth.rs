//! LOGIN and AUTHENTICATE (PLAIN, LOGIN, SCRAM-SHA-256, with SASL-IR's initial response),
//! both through the one login service; the answers are IMAP's, the policy is `auth`'s.

use std::borrow::Cow;

use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::core::{AString, Tag};
use imap_codec::imap_types::response::{Code, Status};
use imap_codec::imap_types::secret::Secret;

use super::reply::{self, CommandError, Kind};
use super::session::{Outcome, Session, State};
use crate::auth::{Attempt, Login, Mechanism, SaslLogin, SaslReply};

/// What the connection does after an AUTHENTICATE step.
#[derive(Debug)]
pub enum AuthStep {
    /// Send this challenge in a `+` continuation (base64; an empty one as `+ `) and wait for
    /// the client's response.
    Continue(Vec<u8>),
    /// The exchange is over; send this tagged status.
    Done(Status<'static>),
}

/// The mechanism of an AUTHENTICATE, when it is one the engine knows.
fn mechanism(mechanism: &AuthMechanism<'_>) -> Option<Mechanism> {
    match mechanism {
        AuthMechanism::Plain => Some(Mechanism::Plain),
        AuthMechanism::Login => Some(Mechanism::Login),
        AuthMechanism::ScramSha256 => Some(Mechanism::ScramSha256),
        _ => None,
    }
}

impl Session {
    pub(super) async fn login(
        &mut self,
        tag: Tag<'static>,
        username: AString<'static>,
        password: Secret<AString<'static>>,
    ) -> Outcome {
        let user = String::from_utf8_lossy(username.as_ref()).into_owned();
        let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
        let login = self
            .ctx
            .auth
            .login(Attempt {
                ip: self.peer.ip(),
                protocol: "imap",
                login: &user,
                password: &pass,
            })
            .await;
        self.logged_in(tag, login)
    }

    /// The tagged answer to a finished login.
    fn logged_in(&mut self, tag: Tag<'static>, login: Login) -> Outcome {
        match login {
            Login::Ok(account) => {
                self.account = Some(account);
                let caps = Code::Capability(self.capabilities());
                Ok(reply::tagged_ok(tag, Some(caps), "Logged in"))
            }
            Login::Failed => Err(CommandError::no(
                Some("AUTHENTICATIONFAILED"),
                "Invalid credentials",
            )),
            Login::Refused { .. } => {
                // BYE, this answer, and the connection closes.
                self.push_status(reply::bye("Too many failed logins"));
                self.logout();
                Err(CommandError::no(
                    Some("UNAVAILABLE"),
                    "Too many failed logins from your address; try again later",
                ))
            }
            Login::Unavailable => Err(CommandError::no(
                Some("UNAVAILABLE"),
                "Temporary authentication failure, try again later",
            )),
        }
    }

    /// AUTHENTICATE, with or without an initial response.
    pub async fn authenticate_start(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial_response: Option<Secret<Cow<'static, [u8]>>>,
    ) -> AuthStep {
        if self.state() != State::NotAuthenticated {
            return AuthStep::Done(reply::tagged_bad(tag, "Already logged in"));
        }
        let sasl = self::mechanism(&mechanism)
            .and_then(|m| self.ctx.auth.sasl_start(m, self.peer.ip(), "imap"));
        let Some(mut sasl) = sasl else {
            return AuthStep::Done(
                CommandError::no(
                    Some("CANNOT"),
                    "Supported mechanisms: PLAIN, LOGIN, SCRAM-SHA-256",
                )
                .into_status(tag),
            );
        };
        let initial = initial_response.map(|r| r.declassify().to_vec());
        let reply = self.ctx.auth.sasl_begin(&mut sasl, initial).await;
        self.sasl_reply(tag, sasl, reply)
    }

    /// The client's answer to a `+` of an AUTHENTICATE.
    pub async fn authenticate_data(&mut self, data: AuthenticateData<'static>) -> AuthStep {
        let Some((tag, mut sasl)) = self.pending_auth.take() else {
            return AuthStep::Done(reply::untagged_bad("No authentication in progress"));
        };
        match data {
            AuthenticateData::Cancel => {
                AuthStep::Done(reply::tagged_bad(tag, "Authentication cancelled"))
            }
            AuthenticateData::Continue(response) => {
                let reply = self
                    .ctx
                    .auth
                    .sasl_respond(&mut sasl, response.declassify())
                    .await;
                self.sasl_reply(tag, sasl, reply)
            }
        }
    }

    fn sasl_reply(&mut self, tag: Tag<'static>, sasl: SaslLogin, reply: SaslReply) -> AuthStep {
        match reply {
            SaslReply::Challenge(challenge) => {
                self.pending_auth = Some((tag, sasl));
                AuthStep::Continue(challenge)
            }
            SaslReply::Malformed(why) => {
                AuthStep::Done(reply::tagged(tag, Kind::Bad, None, &why.to_string()))
            }
            SaslReply::Done(login) => AuthStep::Done(
                self.logged_in(tag.clone(), login)
                    .unwrap_or_else(|err| err.into_status(tag)),
            ),
        }
    }

    /// Ends an AUTHENTICATE whose response could not be decoded; its tag, if one was pending.
    pub fn abort_authenticate(&mut self) -> Option<Tag<'static>> {
        self.pending_auth.take().map(|(tag, _)| tag)
    }
}
