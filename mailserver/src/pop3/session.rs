//! The POP3 session as a state machine without sockets (RFC 1939 section 3): AUTHORIZATION,
//! TRANSACTION, UPDATE. It takes command lines and answers with an [`Action`]: a reply to send,
//! or store work for the connection loop to do and report back.

use super::command::{self, Command, ParseError};
pub use super::maildrop::Maildrop;
use super::maildrop::transaction;
use super::reply::{self, Code};
use crate::auth::SaslInput;
use crate::auth::sasl::{self, Malformed, Mechanism, Response};
use crate::store::MessageMeta;

/// What the connection loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes and read the next line.
    Reply(Vec<u8>),
    /// Check the credentials and open the maildrop, then call [`Session::login_done`].
    Login(Credentials),
    /// Run this SASL step, then call [`Session::sasl_challenge`], [`Session::sasl_malformed`]
    /// or (logged in, or not) [`Session::login_done`].
    Sasl(SaslInput),
    /// Read the message's body and send [`reply::message`] with this line limit (TOP), or the
    /// whole message (RETR).
    Retrieve {
        message: MessageMeta,
        body_lines: Option<u64>,
    },
    /// The UPDATE state: delete these UIDs of the folder, then call [`Session::update_done`].
    Update { folder_id: i64, uids: Vec<i64> },
    /// Send these bytes and close the connection.
    Close(Vec<u8>),
}

/// A user name and password, printed without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How a [`Action::Login`] ended.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Right credentials; the maildrop as it is now.
    Opened(Maildrop),
    /// Unknown user or wrong password.
    Rejected,
    /// Right credentials, but another session holds the maildrop lock (RFC 1939 section 4).
    InUse,
    /// The store could not answer (logged by the caller).
    Unavailable,
    /// The client's address is banned: say so and close.
    Refused,
}

#[derive(Debug)]
enum State {
    /// Waiting for USER/PASS or AUTH; `user` is set after a USER.
    Authorization {
        user: Option<String>,
    },
    /// An AUTH exchange sent a challenge: the next line is the client's response.
    Sasl,
    /// A [`Action::Login`] is out.
    LoggingIn,
    Transaction(Maildrop),
    /// An [`Action::Update`] is out.
    Updating,
    /// The connection is to be closed.
    Done,
}

/// One client's POP3 session.
#[derive(Debug)]
pub struct Session {
    state: State,
    hostname: String,
}

impl Session {
    pub fn new(hostname: &str) -> Self {
        Self {
            state: State::Authorization { user: None },
            hostname: hostname.to_string(),
        }
    }

    /// Waiting for a login (USER/PASS, AUTH or STLS may come now).
    pub fn in_authorization(&self) -> bool {
        matches!(self.state, State::Authorization { .. })
    }

    /// In the TRANSACTION state: the maildrop is open and locked.
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The greeting sent when the connection opens.
    pub fn greeting(&self) -> Vec<u8> {
        reply::ok(&format!("{} POP3 server ready", self.hostname))
    }

    /// Handles one line from the client (without its line ending).
    pub fn line(&mut self, line: &[u8]) -> Action {
        if matches!(self.state, State::Sasl) {
            return self.sasl_response(line);
        }
        match command::parse(line) {
            Ok(command) => self.command(command),
            Err(ParseError::Unknown) => Action::Reply(reply::err("unknown command")),
            Err(e) => Action::Reply(reply::err(&e.to_string())),
        }
    }

    /// A line too long to be a command; it was discarded.
    pub fn line_too_long(&mut self) -> Action {
        if matches!(self.state, State::Sasl) {
            self.state = State::Authorization { user: None };
        }
        Action::Reply(reply::err("line too long"))
    }

    fn command(&mut self, command: Command) -> Action {
        match (&mut self.state, command) {
            (_, Command::Capa) => Action::Reply(capabilities()),
            (State::Authorization { .. }, Command::Quit) => {
                self.state = State::Done;
                Action::Close(reply::ok(&format!(
                    "{} POP3 server signing off",
                    self.hostname
                )))
            }
            (State::Authorization { user }, Command::User(name)) => {
                // Accepted whatever the name: PASS answers, so names cannot be probed here.
                *user = Some(name);
                Action::Reply(reply::ok("send PASS"))
            }
            (State::Authorization { user }, Command::Pass(password)) => match user.take() {
                Some(user) => self.login(Credentials { user, password }),
                None => Action::Reply(reply::err("send USER first")),
            },
            (State::Authorization { .. }, Command::Auth { mechanism, initial }) => {
                self.auth(mechanism, initial)
            }
            (State::Transaction(drop), command) => {
                let action = transaction(drop, command);
                if matches!(action, Action::Update { .. }) {
                    self.state = State::Updating;
                }
                action
            }
            (State::Authorization { .. }, _) => {
                Action::Reply(reply::err("not allowed before login"))
            }
            // Lines read while store work is out or after QUIT cannot arrive from the loop.
            (State::Sasl | State::LoggingIn | State::Updating | State::Done, _) => {
                Action::Reply(reply::err("command not allowed now"))
            }
        }
    }

    fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) -> Action {
        let Some(name) = mechanism else {
            let names = Mechanism::OFFERED.map(Mechanism::name);
            return Action::Reply(reply::ok_lines("SASL mechanisms follow", names));
        };
        let Some(mechanism) = Mechanism::parse(&name).filter(|m| m.offered()) else {
            return Action::Reply(reply::err("unsupported SASL mechanism"));
        };
        // RFC 5034: `=` is an empty initial response.
        let initial = match initial.map(|i| sasl::decode_line(i.as_bytes(), true)) {
            None => None,
            Some(Ok(Response::Data(data))) => Some(data),
            Some(Ok(Response::Cancel)) => {
                return Action::Reply(reply::err("authentication cancelled"));
            }
            Some(Err(why)) => return Action::Reply(reply::err(&why.to_string())),
        };
        self.state = State::LoggingIn;
        Action::Sasl(SaslInput::Start { mechanism, initial })
    }

    /// The client's line after a `+` challenge: base64, or `*` to cancel.
    fn sasl_response(&mut self, line: &[u8]) -> Action {
        self.state = State::Authorization { user: None };
        match sasl::decode_line(line, false) {
            Ok(Response::Data(data)) => {
                self.state = State::LoggingIn;
                Action::Sasl(SaslInput::Respond(data))
            }
            Ok(Response::Cancel) => Action::Reply(reply::err("authentication cancelled")),
            Err(why) => Action::Reply(reply::err(&why.to_string())),
        }
    }

    /// The login service's challenge after an [`Action::Sasl`].
    pub fn sasl_challenge(&mut self, challenge: &[u8]) -> Action {
        self.state = State::Sasl;
        Action::Reply(format!("+ {}\r\n", sasl::encode(challenge)).into_bytes())
    }

    /// The exchange after an [`Action::Sasl`] broke off on a malformed response.
    pub fn sasl_malformed(&mut self, why: Malformed) -> Action {
        self.state = State::Authorization { user: None };
        Action::Reply(reply::err(&why.to_string()))
    }

    fn login(&mut self, credentials: Credentials) -> Action {
        self.state = State::LoggingIn;
        Action::Login(credentials)
    }

    /// Reports how an [`Action::Login`] ended; returns what to send.
    pub fn login_done(&mut self, outcome: LoginOutcome) -> Action {
        match outcome {
            LoginOutcome::Opened(maildrop) => {
                let (count, size) = maildrop.totals();
                self.state = State::Transaction(maildrop);
                Action::Reply(reply::ok(&format!(
                    "maildrop has {count} messages ({size} octets)"
                )))
            }
            LoginOutcome::Rejected => self.reject(),
            LoginOutcome::InUse => {
                // Not a failed login: the client may retry once the other session ends.
                self.state = State::Authorization { user: None };
                Action::Reply(reply::err_code(Code::InUse, "maildrop already locked"))
            }
            LoginOutcome::Unavailable => {
                self.state = State::Authorization { user: None };
                Action::Reply(reply::unavailable())
            }
            LoginOutcome::Refused => {
                self.state = State::Done;
                Action::Close(reply::err_code(
                    Code::Auth,
                    "too many failed logins from your address; try again later",
                ))
            }
        }
    }

    /// A failed login; the pace of retries is the login service's business (one delay for
    /// every protocol, bans for repeat offenders), not this connection's.
    fn reject(&mut self) -> Action {
        self.state = State::Authorization { user: None };
        Action::Reply(reply::err_code(Code::Auth, "invalid user name or password"))
    }
}

impl Session {
    /// Reports how an [`Action::Update`] ended (`Ok` with the number of messages removed);
    /// the connection closes after the reply either way.
    pub fn update_done(&mut self, removed: Result<usize, ()>) -> Action {
        self.state = State::Done;
        match removed {
            Ok(n) => Action::Close(reply::ok(&format!(
                "{} POP3 server signing off ({n} messages deleted)",
                self.hostname
            ))),
            Err(()) => Action::Close(reply::err_code(
                Code::SysTemp,
                "some deleted messages not removed",
            )),
        }
    }
}

/// RFC 2449 CAPA.
pub(super) fn capabilities() -> Vec<u8> {
    reply::ok_lines(
        "capability list follows",
        [
            "TOP",
            "UIDL",
            "USER",
            "SASL PLAIN LOGIN SCRAM-SHA-256",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "IMPLEMENTATION kubemail",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Folder;
    use chrono::Utc;

    fn folder() -> Folder {
        Folder {
            id: 7,
            mailbox_id: 1,
            name: "INBOX".into(),
            special_use: Some("inbox".into()),
            uid_validity: 1234,
            uid_next: 20,
            highest_modseq: 1,
            subscribed: true,
        }
    }

    fn meta(uid: i64, size: i64) -> MessageMeta {
        MessageMeta {
            id: uid * 100,
            folder_id: 7,
            uid,
            modseq: 1,
            size,
            internal_date: Utc::now(),
            flags: Vec::new(),
            bucket: "b".into(),
            blob_key: format!("k{uid}"),
        }
    }

    /// Three messages: UIDs 3, 5, 9 with sizes 100, 200, 300.
    fn maildrop() -> Maildrop {
        Maildrop::new(&folder(), vec![meta(3, 100), meta(5, 200), meta(9, 300)])
    }

    enum Step {
        /// A client line and the action it must give.
        Line(&'static [u8], Want),
        LoginDone(fn() -> LoginOutcome, Want),
        UpdateDone(Result<usize, ()>, Want),
        /// The login service's challenge after an [`Action::Sasl`].
        Challenge(&'static [u8], Want),
        /// The exchange broke off on a malformed response.
        Malformed(Want),
    }

    #[derive(Debug)]
    enum Want {
        Reply(&'static str),
        Close(&'static str),
        Action(Action),
    }

    fn creds(user: &str, password: &str) -> Want {
        Want::Action(Action::Login(Credentials {
            user: user.into(),
            password: password.into(),
        }))
    }

    fn sasl_start(mechanism: Mechanism, initial: Option<&[u8]>) -> Want {
        Want::Action(Action::Sasl(SaslInput::Start {
            mechanism,
            initial: initial.map(<[u8]>::to_vec),
        }))
    }

    fn opened() -> LoginOutcome {
        LoginOutcome::Opened(maildrop())
    }

    fn run(name: &str, steps: Vec<Step>) {
        let mut session = Session::new("mx.test");
        assert_eq!(
            String::from_utf8_lossy(&session.greeting()),
            "+OK mx.test POP3 server ready\r\n"
        );
        for (i, step) in steps.into_iter().enumerate() {
            let (got, want) = match step {
                Step::Line(line, want) => (session.line(line), want),
                Step::LoginDone(outcome, want) => (session.login_done(outcome()), want),
                Step::UpdateDone(result, want) => (session.update_done(result), want),
                Step::Challenge(challenge, want) => (session.sasl_challenge(challenge), want),
                Step::Malformed(want) => (session.sasl_malformed(Malformed::Syntax), want),
            };
            let ok = match (&got, &want) {
                (Action::Reply(bytes), Want::Reply(text))
                | (Action::Close(bytes), Want::Close(text)) => bytes == text.as_bytes(),
                (got, Want::Action(want)) => got == want,
                _ => false,
            };
            let shown = match &got {
                Action::Reply(b) => format!("Reply({:?})", String::from_utf8_lossy(b)),
                Action::Close(b) => format!("Close({:?})", String::from_utf8_lossy(b)),
                other => format!("{other:?}"),
            };
            assert!(ok, "{name}, step {i}: got {shown}, want {want:?}");
        }
    }

    const LOGGED_IN: &str = "+OK maildrop has 3 messages (600 octets)\r\n";
    const CAPA: &str = "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\n\
                        RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION kubemail\r\n.\r\n";
    const IN_USE: &str = "-ERR [IN-USE] maildrop already locked\r\n";
    const BAD_LOGIN: &str = "-ERR [AUTH] invalid user name or password\r\n";

    fn login() -> Vec<Step> {
        vec![
            Step::Line(b"USER alice@example.test", Want::Reply("+OK send PASS\r\n")),
            Step::Line(b"PASS pw", creds("alice@example.test", "pw")),
            Step::LoginDone(opened, Want::Reply(LOGGED_IN)),
        ]
    }

    fn after_login(steps: Vec<Step>) -> Vec<Step> {
        let mut all = login();
        all.extend(steps);
        all
    }

    #[test]
    fn authorization() {
        use Step::*;
        let cases: Vec<(&str, Vec<Step>)> = vec![
            ("user pass", login()),
            ("capa before login", vec![Line(b"CAPA", Want::Reply(CAPA))]),
            (
                "quit before login",
                vec![Line(
                    b"QUIT",
                    Want::Close("+OK mx.test POP3 server signing off\r\n"),
                )],
            ),
            (
                "pass without user",
                vec![Line(b"PASS pw", Want::Reply("-ERR send USER first\r\n"))],
            ),
            (
                "transaction commands need login",
                vec![
                    Line(b"STAT", Want::Reply("-ERR not allowed before login\r\n")),
                    Line(b"RETR 1", Want::Reply("-ERR not allowed before login\r\n")),
                    Line(b"NOOP", Want::Reply("-ERR not allowed before login\r\n")),
                ],
            ),
            (
                "garbage",
                vec![
                    Line(b"HELLO", Want::Reply("-ERR unknown command\r\n")),
                    Line(b"", Want::Reply("-ERR empty command\r\n")),
                    Line(b"\xc3\x28", Want::Reply("-ERR command is not UTF-8\r\n")),
                ],
            ),
            (
                "wrong password, then right",
                vec![
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS x y", creds("a", "x y")),
                    LoginDone(|| LoginOutcome::Rejected, Want::Reply(BAD_LOGIN)),
                    // The failed PASS forgot the user.
                    Line(b"PASS x", Want::Reply("-ERR send USER first\r\n")),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS y", creds("a", "y")),
                    LoginDone(opened, Want::Reply(LOGGED_IN)),
                ],
            ),
            (
                "failures do not close the connection",
                vec![
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS 1", creds("a", "1")),
                    LoginDone(|| LoginOutcome::Rejected, Want::Reply(BAD_LOGIN)),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS 2", creds("a", "2")),
                    LoginDone(|| LoginOutcome::Rejected, Want::Reply(BAD_LOGIN)),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS 3", creds("a", "3")),
                    LoginDone(|| LoginOutcome::Rejected, Want::Reply(BAD_LOGIN)),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS 4", creds("a", "4")),
                    LoginDone(opened, Want::Reply(LOGGED_IN)),
                ],
            ),
            (
                "a banned address is told and closed",
                vec![
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS 1", creds("a", "1")),
                    LoginDone(
                        || LoginOutcome::Refused,
                        Want::Close(
                            "-ERR [AUTH] too many failed logins from your address; try again later\r\n",
                        ),
                    ),
                ],
            ),
            (
                "maildrop locked by another session: no failure counted, retry works",
                vec![
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS b", creds("a", "b")),
                    LoginDone(|| LoginOutcome::InUse, Want::Reply(IN_USE)),
                    Line(b"STAT", Want::Reply("-ERR not allowed before login\r\n")),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS b", creds("a", "b")),
                    LoginDone(|| LoginOutcome::InUse, Want::Reply(IN_USE)),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS b", creds("a", "b")),
                    LoginDone(|| LoginOutcome::InUse, Want::Reply(IN_USE)),
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS b", creds("a", "b")),
                    LoginDone(opened, Want::Reply(LOGGED_IN)),
                ],
            ),
            (
                "store down at login",
                vec![
                    Line(b"USER a", Want::Reply("+OK send PASS\r\n")),
                    Line(b"PASS b", creds("a", "b")),
                    LoginDone(
                        || LoginOutcome::Unavailable,
                        Want::Reply("-ERR [SYS/TEMP] mail store unavailable, try again later\r\n"),
                    ),
                    Line(b"STAT", Want::Reply("-ERR not allowed before login\r\n")),
                ],
            ),
            (
                "auth lists mechanisms",
                vec![Line(
                    b"AUTH",
                    Want::Reply(
                        "+OK SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\n.\r\n",
                    ),
                )],
            ),
            (
                "auth plain with initial response",
                // "\0alice\0secret"
                vec![
                    Line(
                        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                        sasl_start(Mechanism::Plain, Some(b"\0alice\0secret")),
                    ),
                    LoginDone(opened, Want::Reply(LOGGED_IN)),
                ],
            ),
            (
                "auth with challenges",
                vec![
                    Line(b"auth login", sasl_start(Mechanism::Login, None)),
                    Challenge(b"Username:", Want::Reply("+ VXNlcm5hbWU6\r\n")),
                    Line(
                        b"YWxpY2U=\r",
                        Want::Action(Action::Sasl(SaslInput::Respond(b"alice".to_vec()))),
                    ),
                    Challenge(b"", Want::Reply("+ \r\n")),
                    // An empty line is an empty response.
                    Line(
                        b"",
                        Want::Action(Action::Sasl(SaslInput::Respond(Vec::new()))),
                    ),
                    LoginDone(|| LoginOutcome::Rejected, Want::Reply(BAD_LOGIN)),
                    Line(
                        b"AUTH SCRAM-SHA-256 =",
                        sasl_start(Mechanism::ScramSha256, Some(b"")),
                    ),
                ],
            ),
            (
                "auth cancelled, bad base64, malformed, unknown mechanisms",
                vec![
                    Line(b"AUTH PLAIN", sasl_start(Mechanism::Plain, None)),
                    Challenge(b"", Want::Reply("+ \r\n")),
                    Line(b"*", Want::Reply("-ERR authentication cancelled\r\n")),
                    Line(b"AUTH PLAIN", sasl_start(Mechanism::Plain, None)),
                    Challenge(b"", Want::Reply("+ \r\n")),
                    Line(
                        b"!!!!",
                        Want::Reply("-ERR invalid base64 in SASL response\r\n"),
                    ),
                    Line(
                        b"AUTH PLAIN !!",
                        Want::Reply("-ERR invalid base64 in SASL response\r\n"),
                    ),
                    Line(
                        b"AUTH PLAIN *",
                        Want::Reply("-ERR authentication cancelled\r\n"),
                    ),
                    Line(b"AUTH PLAIN", sasl_start(Mechanism::Plain, None)),
                    Malformed(Want::Reply("-ERR malformed SASL response\r\n")),
                    Line(
                        b"AUTH CRAM-MD5",
                        Want::Reply("-ERR unsupported SASL mechanism\r\n"),
                    ),
                    // Known to the engine but not offered yet.
                    Line(
                        b"AUTH XOAUTH2",
                        Want::Reply("-ERR unsupported SASL mechanism\r\n"),
                    ),
                    Line(
                        b"QUIT",
                        Want::Close("+OK mx.test POP3 server signing off\r\n"),
                    ),
                ],
            ),
        ];
        for (name, steps) in cases {
            run(name, steps);
        }
    }

    #[test]
    fn transaction() {
        use Step::*;
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "listings",
                after_login(vec![
                    Line(b"STAT", Want::Reply("+OK 3 600\r\n")),
                    Line(
                        b"LIST",
                        Want::Reply(
                            "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n",
                        ),
                    ),
                    Line(b"LIST 2", Want::Reply("+OK 2 200\r\n")),
                    Line(b"LIST 4", Want::Reply("-ERR no such message\r\n")),
                    Line(
                        b"UIDL",
                        Want::Reply(
                            "+OK unique-id listing follows\r\n1 1234.3\r\n2 1234.5\r\n3 1234.9\r\n.\r\n",
                        ),
                    ),
                    Line(b"UIDL 3", Want::Reply("+OK 3 1234.9\r\n")),
                    Line(b"UIDL 9", Want::Reply("-ERR no such message\r\n")),
                    Line(b"NOOP", Want::Reply("+OK \r\n")),
                    Line(b"CAPA", Want::Reply(CAPA)),
                    Line(b"USER x", Want::Reply("-ERR already logged in\r\n")),
                    Line(b"RETR 0", Want::Reply("-ERR invalid message number\r\n")),
                ]),
            ),
            (
                "dele, rset, quit",
                after_login(vec![
                    Line(b"DELE 2", Want::Reply("+OK message 2 deleted\r\n")),
                    Line(b"DELE 2", Want::Reply("-ERR message 2 already deleted\r\n")),
                    Line(b"RETR 2", Want::Reply("-ERR message 2 already deleted\r\n")),
                    Line(b"LIST 2", Want::Reply("-ERR message 2 already deleted\r\n")),
                    Line(b"STAT", Want::Reply("+OK 2 400\r\n")),
                    // Numbers do not shift after a DELE.
                    Line(
                        b"LIST",
                        Want::Reply("+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n"),
                    ),
                    Line(
                        b"UIDL",
                        Want::Reply(
                            "+OK unique-id listing follows\r\n1 1234.3\r\n3 1234.9\r\n.\r\n",
                        ),
                    ),
                    Line(b"RSET", Want::Reply(LOGGED_IN)),
                    Line(b"STAT", Want::Reply("+OK 3 600\r\n")),
                    Line(b"DELE 1", Want::Reply("+OK message 1 deleted\r\n")),
                    Line(b"DELE 3", Want::Reply("+OK message 3 deleted\r\n")),
                    Line(
                        b"QUIT",
                        Want::Action(Action::Update {
                            folder_id: 7,
                            uids: vec![3, 9],
                        }),
                    ),
                    UpdateDone(
                        Ok(2),
                        Want::Close("+OK mx.test POP3 server signing off (2 messages deleted)\r\n"),
                    ),
                ]),
            ),
            (
                "quit with nothing marked",
                after_login(vec![Line(
                    b"QUIT",
                    Want::Action(Action::Update {
                        folder_id: 7,
                        uids: vec![],
                    }),
                )]),
            ),
            (
                "update fails",
                after_login(vec![
                    Line(b"DELE 1", Want::Reply("+OK message 1 deleted\r\n")),
                    Line(
                        b"QUIT",
                        Want::Action(Action::Update {
                            folder_id: 7,
                            uids: vec![3],
                        }),
                    ),
                    UpdateDone(
                        Err(()),
                        Want::Close("-ERR [SYS/TEMP] some deleted messages not removed\r\n"),
                    ),
                ]),
            ),
        ];
        for (name, steps) in cases {
            run(name, steps);
        }
    }

    #[test]
    fn retrieve_asks_for_the_right_message() {
        let mut session = Session::new("mx.test");
        for step in login() {
            match step {
                Step::Line(line, _) => drop(session.line(line)),
                Step::LoginDone(outcome, _) => drop(session.login_done(outcome())),
                Step::UpdateDone(..) | Step::Challenge(..) | Step::Malformed(_) => {}
            }
        }
        for (line, uid, body_lines) in [
            (&b"RETR 2"[..], 5, None),
            (b"retr 3", 9, None),
            (b"TOP 1 0", 3, Some(0)),
            (b"TOP 3 25", 9, Some(25)),
        ] {
            match session.line(line) {
                Action::Retrieve {
                    message,
                    body_lines: got,
                } => {
                    assert_eq!(message.uid, uid, "{line:?}");
                    assert_eq!(got, body_lines, "{line:?}");
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
        assert_eq!(
            session.line(b"TOP 4 1"),
            Action::Reply(b"-ERR no such message\r\n".to_vec())
        );
    }

    #[test]
    fn password_is_not_printed() {
        let shown = format!(
            "{:?}",
            Credentials {
                user: "a".into(),
                password: "hunter2".into()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
