//! One SASL engine for SMTP, IMAP and POP3, without I/O: PLAIN (RFC 4616), LOGIN, and
//! SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding. The protocols move base64 lines;
//! the engine takes decoded responses and says what it needs next: a challenge sent, a
//! password checked, a user's SCRAM keys. The [`Authenticator`](super::Authenticator) does
//! those checks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest decoded client response: far more than any real PLAIN or SCRAM message.
pub const MAX_RESPONSE: usize = 8 * 1024;
/// Longest login name or password taken from a response.
const MAX_FIELD: usize = 1024;
/// SCRAM iteration count written for new keys (RFC 7677's minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// SCRAM keys with more iterations than this are not used (a client would spin on them).
pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// A SASL mechanism. XOAUTH2 and OAUTHBEARER are known by name but not offered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    ScramSha256,
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    /// What every protocol offers, in the order announced.
    pub const OFFERED: [Mechanism; 3] =
        [Mechanism::Plain, Mechanism::Login, Mechanism::ScramSha256];

    /// The mechanism named `name` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "XOAUTH2" => Mechanism::XOAuth2,
            "OAUTHBEARER" => Mechanism::OAuthBearer,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn offered(self) -> bool {
        Self::OFFERED.contains(&self)
    }

    /// Whether the client sends the password itself (so TLS must protect it).
    pub fn sends_password(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }
}

/// A client's line in an exchange, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    Data(Vec<u8>),
    /// `*`: the client gives up (RFC 4954, RFC 5034, RFC 3501).
    Cancel,
}

/// Why a response or exchange is malformed; the text is safe to show the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("invalid base64 in SASL response")]
    Base64,
    #[error("SASL response too long")]
    TooLong,
    #[error("malformed SASL response")]
    Syntax,
    #[error("channel binding is not supported")]
    ChannelBinding,
}

/// Decodes a client response line (CR/LF already or still attached); `initial` makes `=` an
/// empty response (an initial response on the command line, RFC 4954).
pub fn decode_line(line: &[u8], initial: bool) -> Result<Response, Malformed> {
    let line = line.trim_ascii();
    if line == b"*" {
        return Ok(Response::Cancel);
    }
    if initial && line == b"=" {
        return Ok(Response::Data(Vec::new()));
    }
    if line.len() > MAX_RESPONSE.div_ceil(3) * 4 {
        return Err(Malformed::TooLong);
    }
    BASE64
        .decode(line)
        .map(Response::Data)
        .map_err(|_| Malformed::Base64)
}

/// A challenge as the protocols send it.
pub fn encode(challenge: &[u8]) -> String {
    BASE64.encode(challenge)
}

/// A user's SCRAM-SHA-256 secret (RFC 5802 section 3), stored as
/// `iterations,salt,StoredKey,ServerKey` in base64 (the layout Dovecot uses).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ScramKeys {
    /// The keys for `password` (SASLprep'd when it can be) with `salt` and `iterations`.
    /// Thousands of HMACs: run it on the password pool.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Fresh keys with a random salt.
    pub fn generate(password: &str) -> Self {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        Self::derive(password, &salt, SCRAM_ITERATIONS)
    }

    /// Keys that match no password, with a salt that depends only on `login` and `secret`:
    /// an unknown user answers like a known one, and the same way every time.
    pub fn fake(login: &str, secret: &[u8]) -> Self {
        let salt = hmac(
            secret,
            format!("scram salt {}", login.to_lowercase()).as_bytes(),
        );
        Self {
            iterations: SCRAM_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: hmac(secret, format!("scram stored {login}").as_bytes()),
            server_key: hmac(secret, format!("scram server {login}").as_bytes()),
        }
    }

    pub fn to_stored(&self) -> String {
        format!(
            "{},{},{},{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Parses [`ScramKeys::to_stored`]'s text; `None` when malformed or too costly.
    pub fn from_stored(text: &str) -> Option<Self> {
        let mut parts = text.trim().split(',');
        let iterations: u32 = parts.next()?.parse().ok()?;
        let salt = BASE64.decode(parts.next()?).ok()?;
        let stored_key = BASE64.decode(parts.next()?).ok()?.try_into().ok()?;
        let server_key = BASE64.decode(parts.next()?).ok()?.try_into().ok()?;
        if parts.next().is_some()
            || !(1..=MAX_SCRAM_ITERATIONS).contains(&iterations)
            || salt.is_empty()
            || salt.len() > 64
        {
            return None;
        }
        Some(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

/// What the engine needs next.
#[derive(PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (the protocol base64-encodes it) and pass the answer to
    /// [`Exchange::respond`].
    Challenge(Vec<u8>),
    /// Check this password (PLAIN, LOGIN); the exchange is over.
    Verify { login: String, password: String },
    /// Find this user's SCRAM keys and pass them (or fake ones) to [`Exchange::keys`].
    NeedKeys { login: String },
    /// SCRAM: the proof is right. Send `server_final` as a challenge; the client's (empty)
    /// answer ends the exchange with [`Step::Accepted`].
    Proven {
        login: String,
        server_final: Vec<u8>,
    },
    /// The client acknowledged the server's signature: logged in.
    Accepted,
    /// The credentials are wrong for `login` (a failed login, counted).
    Rejected { login: String },
    /// The exchange broke off: the protocol says so (not counted as a failed password).
    Malformed(Malformed),
}

// Hand-written so a password never reaches a log line.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Challenge(c) => f
                .debug_tuple("Challenge")
                .field(&String::from_utf8_lossy(c))
                .finish(),
            Step::Verify { login, .. } => write!(f, "Verify({login}, <redacted>)"),
            Step::NeedKeys { login } => write!(f, "NeedKeys({login})"),
            Step::Proven { login, .. } => write!(f, "Proven({login})"),
            Step::Accepted => f.write_str("Accepted"),
            Step::Rejected { login } => write!(f, "Rejected({login})"),
            Step::Malformed(m) => write!(f, "Malformed({m:?})"),
        }
    }
}

#[derive(Debug)]
enum State {
    Start,
    /// PLAIN without an initial response: the empty challenge went out.
    PlainResponse,
    LoginUser,
    LoginPassword {
        login: String,
    },
    ScramFirst,
    ScramKeys(ScramFirst),
    ScramFinal {
        first: ScramFirst,
        server_first: String,
        keys: ScramKeys,
    },
    ScramAck,
    Done,
}

/// What the server keeps of a SCRAM client-first message.
#[derive(Debug)]
struct ScramFirst {
    gs2_header: String,
    bare: String,
    login: String,
    nonce: String,
}

/// One authentication exchange.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
    server_nonce: String,
}

impl Exchange {
    /// An exchange for an offered mechanism (`None` for others).
    pub fn new(mechanism: Mechanism) -> Option<Self> {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let mut nonce = [0u8; 18];
        OsRng.fill_bytes(&mut nonce);
        Self::with_nonce(mechanism, &BASE64.encode(nonce))
    }

    /// An exchange whose SCRAM server nonce is `nonce` (tests with RFC vectors).
    pub fn with_nonce(mechanism: Mechanism, nonce: &str) -> Option<Self> {
        mechanism.offered().then(|| Self {
            mechanism,
            state: State::Start,
            server_nonce: nonce.to_string(),
        })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Starts the exchange with the client's initial response, if it sent one.
    pub fn start(&mut self, initial: Option<Vec<u8>>) -> Step {
        if !matches!(self.state, State::Start) {
            return self.broken(Malformed::Syntax);
        }
        match (self.mechanism, initial) {
            (Mechanism::Plain, Some(response)) => self.plain(&response),
            (Mechanism::Plain, None) => {
                self.state = State::PlainResponse;
                Step::Challenge(Vec::new())
            }
            (Mechanism::Login, Some(user)) if !user.is_empty() => self.login_user(&user),
            (Mechanism::Login, _) => {
                self.state = State::LoginUser;
                Step::Challenge(b"Username:".to_vec())
            }
            (Mechanism::ScramSha256, Some(first)) if !first.is_empty() => self.scram_first(&first),
            (Mechanism::ScramSha256, _) => {
                self.state = State::ScramFirst;
                Step::Challenge(Vec::new())
            }
            _ => self.broken(Malformed::Syntax),
        }
    }

    /// The client's answer to the last challenge.
    pub fn respond(&mut self, response: &[u8]) -> Step {
        if response.len() > MAX_RESPONSE {
            return self.broken(Malformed::TooLong);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::PlainResponse => self.plain(response),
            State::LoginUser => self.login_user(response),
            State::LoginPassword { login } => match field(response) {
                Some(password) => Step::Verify {
                    login,
                    password: password.to_string(),
                },
                None => self.broken(Malformed::Syntax),
            },
            State::ScramFirst => self.scram_first(response),
            State::ScramFinal {
                first,
                server_first,
                keys,
            } => self.scram_final(&first, &server_first, &keys, response),
            State::ScramAck => Step::Accepted,
            State::Start | State::ScramKeys(_) | State::Done => self.broken(Malformed::Syntax),
        }
    }

    /// The keys asked for by [`Step::NeedKeys`] (fake ones for an unknown user).
    pub fn keys(&mut self, keys: ScramKeys) -> Step {
        let State::ScramKeys(first) = std::mem::replace(&mut self.state, State::Done) else {
            return self.broken(Malformed::Syntax);
        };
        let server_first = format!(
            "r={}{},s={},i={}",
            first.nonce,
            self.server_nonce,
            BASE64.encode(&keys.salt),
            keys.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::ScramFinal {
            first,
            server_first,
            keys,
        };
        Step::Challenge(challenge)
    }

    fn broken(&mut self, why: Malformed) -> Step {
        self.state = State::Done;
        Step::Malformed(why)
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`; acting as someone else is not offered, so
    /// an authzid other than the authcid is refused like a wrong password.
    fn plain(&mut self, response: &[u8]) -> Step {
        self.state = State::Done;
        let mut fields = response.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return self.broken(Malformed::Syntax);
        };
        let (Some(authzid), Some(login), Some(password)) =
            (field(authzid), field(authcid), field(password))
        else {
            return self.broken(Malformed::Syntax);
        };
        if login.is_empty() {
            return self.broken(Malformed::Syntax);
        }
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(login) {
            return Step::Rejected {
                login: login.to_string(),
            };
        }
        Step::Verify {
            login: login.to_string(),
            password: password.to_string(),
        }
    }

    fn login_user(&mut self, response: &[u8]) -> Step {
        match field(response) {
            Some(login) if !login.is_empty() => {
                self.state = State::LoginPassword {
                    login: login.to_string(),
                };
                Step::Challenge(b"Password:".to_vec())
            }
            _ => self.broken(Malformed::Syntax),
        }
    }

    /// `gs2-header client-first-message-bare`, e.g. `n,,n=user,r=nonce`.
    fn scram_first(&mut self, response: &[u8]) -> Step {
        let Some(text) = field(response) else {
            return self.broken(Malformed::Syntax);
        };
        let mut parts = text.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return self.broken(Malformed::Syntax);
        };
        match cbind {
            // `y`: the client could bind but believes we cannot; we offer no -PLUS, so fine.
            "n" | "y" => {}
            _ if cbind.starts_with("p=") => return self.broken(Malformed::ChannelBinding),
            _ => return self.broken(Malformed::Syntax),
        }
        let gs2_header = format!("{cbind},{authzid},");
        let authzid = match authzid.strip_prefix("a=") {
            Some(name) => match unescape(name) {
                Some(name) => Some(name),
                None => return self.broken(Malformed::Syntax),
            },
            None if authzid.is_empty() => None,
            None => return self.broken(Malformed::Syntax),
        };
        // `m=` (mandatory extensions) are none we know: refuse.
        let mut attrs = bare.split(',');
        let (Some(user), Some(nonce)) = (attrs.next(), attrs.next()) else {
            return self.broken(Malformed::Syntax);
        };
        let (Some(user), Some(nonce)) = (user.strip_prefix("n="), nonce.strip_prefix("r=")) else {
            return self.broken(Malformed::Syntax);
        };
        let Some(login) = unescape(user) else {
            return self.broken(Malformed::Syntax);
        };
        if login.is_empty()
            || nonce.is_empty()
            || nonce.len() > 256
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return self.broken(Malformed::Syntax);
        }
        if authzid.is_some_and(|a| !a.eq_ignore_ascii_case(&login)) {
            return Step::Rejected { login };
        }
        let first = ScramFirst {
            gs2_header,
            bare: bare.to_string(),
            login: login.clone(),
            nonce: nonce.to_string(),
        };
        self.state = State::ScramKeys(first);
        Step::NeedKeys { login }
    }

    /// `c=biws,r=nonce,p=proof`: checks the channel binding echo, the nonce and the proof.
    fn scram_final(
        &mut self,
        first: &ScramFirst,
        server_first: &str,
        keys: &ScramKeys,
        response: &[u8],
    ) -> Step {
        let Some(text) = field(response) else {
            return self.broken(Malformed::Syntax);
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return self.broken(Malformed::Syntax);
        };
        let mut attrs = without_proof.split(',');
        let (Some(binding), Some(nonce)) = (attrs.next(), attrs.next()) else {
            return self.broken(Malformed::Syntax);
        };
        let (Some(binding), Some(nonce)) = (binding.strip_prefix("c="), nonce.strip_prefix("r="))
        else {
            return self.broken(Malformed::Syntax);
        };
        let Ok(proof) = BASE64.decode(proof) else {
            return self.broken(Malformed::Syntax);
        };
        let full_nonce = format!("{}{}", first.nonce, self.server_nonce);
        let binding_ok =
            BASE64.decode(binding).ok().as_deref() == Some(first.gs2_header.as_bytes());
        if !binding_ok || nonce != full_nonce || proof.len() != 32 {
            return Step::Rejected {
                login: first.login.clone(),
            };
        }
        let auth_message = format!("{},{server_first},{without_proof}", first.bare);
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !bool::from(stored.ct_eq(&keys.stored_key)) {
            return Step::Rejected {
                login: first.login.clone(),
            };
        }
        let verifier = hmac(&keys.server_key, auth_message.as_bytes());
        self.state = State::ScramAck;
        Step::Proven {
            login: first.login.clone(),
            server_final: format!("v={}", BASE64.encode(verifier)).into_bytes(),
        }
    }
}

/// A UTF-8 field of bounded length without NULs.
fn field(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_FIELD || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
#[path = "sasl_tests.rs"]
mod tests;
