//! A SASL exchange under the login policy: the engine (`sasl.rs`) says what it needs, this
//! runs it (password checks through the source chain, SCRAM keys from the local row or fake
//! ones for an unknown user) and ends it with the same [`Login`] outcomes as a password login.

use std::net::IpAddr;

use tokio::time::Instant;

use super::sasl::{Exchange, Malformed, Mechanism, ScramKeys, Step};
use super::{Account, AuthError, Authenticator, Login};

/// An exchange in progress; the protocol keeps it between client lines.
#[derive(Debug)]
pub struct SaslLogin {
    exchange: Exchange,
    ip: IpAddr,
    protocol: &'static str,
    /// SCRAM: the account whose proof was right, logged in once the client acknowledges.
    proven: Option<Account>,
}

/// A step of an exchange as a sans-I/O protocol session asks its connection to run it.
#[derive(PartialEq, Eq)]
pub enum SaslInput {
    /// Start `mechanism` with the client's initial response, if any.
    Start {
        mechanism: Mechanism,
        initial: Option<Vec<u8>>,
    },
    /// The client's answer to the last challenge.
    Respond(Vec<u8>),
}

// Hand-written so credentials never reach a log line or an assertion's output.
impl std::fmt::Debug for SaslInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslInput::Start { mechanism, initial } => f
                .debug_struct("Start")
                .field("mechanism", mechanism)
                .field("initial", &initial.as_ref().map(|_| "<redacted>"))
                .finish(),
            SaslInput::Respond(_) => f.write_str("Respond(<redacted>)"),
        }
    }
}

/// What the protocol sends next.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslReply {
    /// A challenge (raw: the protocol base64-encodes it); the client's answer goes to
    /// [`Authenticator::sasl_respond`].
    Challenge(Vec<u8>),
    /// The exchange is over.
    Done(Login),
    /// The client's response was malformed: a protocol error, not a failed password.
    Malformed(Malformed),
}

impl SaslLogin {
    pub fn mechanism(&self) -> Mechanism {
        self.exchange.mechanism()
    }
}

impl Authenticator {
    /// A new exchange, `None` when the mechanism is not offered.
    pub fn sasl_start(
        &self,
        mechanism: Mechanism,
        ip: IpAddr,
        protocol: &'static str,
    ) -> Option<SaslLogin> {
        Some(SaslLogin {
            exchange: Exchange::new(mechanism)?,
            ip,
            protocol,
            proven: None,
        })
    }

    /// The first step, with the client's initial response if it sent one (SASL-IR, `AUTH
    /// PLAIN <b64>`).
    pub async fn sasl_begin(&self, sasl: &mut SaslLogin, initial: Option<Vec<u8>>) -> SaslReply {
        let step = sasl.exchange.start(initial);
        self.drive(sasl, step).await
    }

    /// Runs `input` on the exchange in `slot`, starting a new one for [`SaslInput::Start`]
    /// (the slot is emptied when the exchange ends).
    pub async fn sasl_run(
        &self,
        slot: &mut Option<SaslLogin>,
        input: SaslInput,
        ip: IpAddr,
        protocol: &'static str,
    ) -> SaslReply {
        let reply = match input {
            SaslInput::Start { mechanism, initial } => {
                *slot = self.sasl_start(mechanism, ip, protocol);
                match slot.as_mut() {
                    Some(sasl) => self.sasl_begin(sasl, initial).await,
                    None => SaslReply::Malformed(Malformed::Syntax),
                }
            }
            SaslInput::Respond(data) => match slot.as_mut() {
                Some(sasl) => self.sasl_respond(sasl, &data).await,
                None => SaslReply::Malformed(Malformed::Syntax),
            },
        };
        if !matches!(reply, SaslReply::Challenge(_)) {
            *slot = None;
        }
        reply
    }

    /// The client's (decoded) answer to the last challenge.
    pub async fn sasl_respond(&self, sasl: &mut SaslLogin, response: &[u8]) -> SaslReply {
        let step = sasl.exchange.respond(response);
        self.drive(sasl, step).await
    }

    async fn drive(&self, sasl: &mut SaslLogin, mut step: Step) -> SaslReply {
        let started = Instant::now();
        let (ip, protocol) = (sasl.ip, sasl.protocol);
        loop {
            step = match step {
                Step::Challenge(challenge) => return SaslReply::Challenge(challenge),
                Step::Malformed(why) => return SaslReply::Malformed(why),
                Step::Verify { login, password } => {
                    if let Some(refused) = self.admit(ip, &login).await {
                        return SaslReply::Done(refused);
                    }
                    let result = self.check(&login, &password).await;
                    let login = self.conclude(ip, protocol, &login, result, started).await;
                    return SaslReply::Done(login);
                }
                Step::Rejected { login } => {
                    let login = self.conclude(ip, protocol, &login, Ok(None), started).await;
                    return SaslReply::Done(login);
                }
                Step::NeedKeys { login } => {
                    if let Some(refused) = self.admit(ip, &login).await {
                        return SaslReply::Done(refused);
                    }
                    match self.scram_keys(&login).await {
                        Ok(keys) => sasl.exchange.keys(keys),
                        Err(err) => {
                            let login =
                                self.conclude(ip, protocol, &login, Err(err), started).await;
                            return SaslReply::Done(login);
                        }
                    }
                }
                Step::Proven {
                    login,
                    server_final,
                } => match self.account(&login, "scram").await {
                    Ok(Some(account)) => {
                        sasl.proven = Some(account);
                        return SaslReply::Challenge(server_final);
                    }
                    other => {
                        let login = self.conclude(ip, protocol, &login, other, started).await;
                        return SaslReply::Done(login);
                    }
                },
                Step::Accepted => {
                    let Some(account) = sasl.proven.take() else {
                        return SaslReply::Malformed(Malformed::Syntax);
                    };
                    let login = account.address.clone();
                    let login = self
                        .conclude(ip, protocol, &login, Ok(Some(account)), started)
                        .await;
                    return SaslReply::Done(login);
                }
            };
        }
    }

    /// The user's stored SCRAM keys, or fake ones that fail the same way as a wrong password
    /// (unknown user, or no keys yet: they are written at the first password login).
    async fn scram_keys(&self, login: &str) -> Result<ScramKeys, AuthError> {
        match self.local.scram_keys(login).await? {
            Some(keys) => Ok(keys),
            None => Ok(ScramKeys::fake(login, self.fake_key().await?)),
        }
    }
}
