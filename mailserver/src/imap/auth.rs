//! LOGIN and AUTHENTICATE PLAIN (RFC 4616), with SASL-IR's initial response.

use std::borrow::Cow;
use std::time::Duration;

use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::core::{AString, Tag};
use imap_codec::imap_types::response::{Code, Status};
use imap_codec::imap_types::secret::Secret;
use tracing::{info, warn};

use super::reply::{self, CommandError};
use super::session::{Outcome, Session, State};
use crate::auth::guard::Admission;

/// Every failed login waits this long before the answer, which slows password guessing.
/// (Blocking repeat offenders is the job of the limits module.)
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);

/// What the connection does after an AUTHENTICATE step.
#[derive(Debug)]
pub enum AuthStep {
    /// Send an empty `+ ` continuation and wait for the client's response.
    Continue,
    /// The exchange is over; send this tagged status.
    Done(Status<'static>),
}

/// The authentication and authorization identities and the password of a PLAIN response.
pub fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut fields = response.split(|&b| b == 0);
    let authzid = fields.next()?;
    let authcid = std::str::from_utf8(fields.next()?).ok()?;
    let password = std::str::from_utf8(fields.next()?).ok()?;
    if fields.next().is_some() || authcid.is_empty() {
        return None;
    }
    // Acting as another user is not offered: the authorization identity must be empty or self.
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid.as_bytes()) {
        return None;
    }
    Some((authcid.to_string(), password.to_string()))
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
        self.verify(tag, &user, &pass).await
    }

    async fn verify(&mut self, tag: Tag<'static>, user: &str, password: &str) -> Outcome {
        // The login guard, until the one login service calls it for every protocol.
        let ip = self.peer.ip();
        if self.ctx.guard.admit(ip).await != Admission::Allowed {
            return Err(CommandError::no(
                Some("UNAVAILABLE"),
                "Too many failed logins from your address; try later",
            ));
        }
        tokio::time::sleep(self.ctx.guard.delay(ip, user).await).await;
        let verified = self.ctx.auth.verify(user, password).await?;
        match &verified {
            Some(_) => self.ctx.guard.succeeded(ip, user).await,
            None => self.ctx.guard.failed(ip, user).await,
        }
        match verified {
            Some(account) => {
                info!(peer = %self.peer, user = %account.address, "imap: logged in");
                self.account = Some(account);
                let caps = Code::Capability(self.capabilities());
                Ok(reply::tagged_ok(tag, Some(caps), "Logged in"))
            }
            None => {
                warn!(peer = %self.peer, user, "imap: failed login");
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                Err(CommandError::no(
                    Some("AUTHENTICATIONFAILED"),
                    "Invalid credentials",
                ))
            }
        }
    }

    /// AUTHENTICATE: PLAIN only, with or without an initial response.
    pub async fn authenticate_start(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial_response: Option<Secret<Cow<'static, [u8]>>>,
    ) -> AuthStep {
        if self.state() != State::NotAuthenticated {
            return AuthStep::Done(reply::tagged_bad(tag, "Already logged in"));
        }
        if mechanism != AuthMechanism::Plain {
            return AuthStep::Done(
                CommandError::no(Some("CANNOT"), "Only AUTHENTICATE PLAIN is supported")
                    .into_status(tag),
            );
        }
        match initial_response {
            Some(response) => AuthStep::Done(self.finish_plain(tag, response.declassify()).await),
            None => {
                self.pending_auth = Some(tag);
                AuthStep::Continue
            }
        }
    }

    /// The client's answer to the `+ ` of an AUTHENTICATE.
    pub async fn authenticate_data(&mut self, data: AuthenticateData<'static>) -> Status<'static> {
        let Some(tag) = self.pending_auth.take() else {
            return reply::untagged_bad("No authentication in progress");
        };
        match data {
            AuthenticateData::Cancel => reply::tagged_bad(tag, "Authentication cancelled"),
            AuthenticateData::Continue(response) => {
                self.finish_plain(tag, response.declassify()).await
            }
        }
    }

    /// Ends an AUTHENTICATE whose response could not be decoded; its tag, if one was pending.
    pub fn abort_authenticate(&mut self) -> Option<Tag<'static>> {
        self.pending_auth.take()
    }

    async fn finish_plain(&mut self, tag: Tag<'static>, response: &[u8]) -> Status<'static> {
        let result = match parse_plain(response) {
            Some((user, password)) => self.verify(tag.clone(), &user, &password).await,
            None => {
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                Err(CommandError::no(
                    Some("AUTHENTICATIONFAILED"),
                    "Invalid credentials",
                ))
            }
        };
        result.unwrap_or_else(|err| err.into_status(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        let ok = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        for (input, want) in [
            (
                &b"\0alice@example.test\0s3cret"[..],
                ok("alice@example.test", "s3cret"),
            ),
            (
                b"alice@example.test\0alice@example.test\0pw",
                ok("alice@example.test", "pw"),
            ),
            (b"\0alice@example.test\0", ok("alice@example.test", "")),
            (b"bob@example.test\0alice@example.test\0pw", None),
            (b"\0\0pw", None),
            (b"alice\0pw", None),
            (b"\0a\0b\0c", None),
            (b"", None),
            (b"\0\xff\0pw", None),
        ] {
            assert_eq!(parse_plain(input), want, "{input:?}");
        }
    }
}
