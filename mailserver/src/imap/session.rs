//! The IMAP session state machine (RFC 3501 §3): NotAuthenticated → Authenticated ⇄ Selected →
//! Logout. It takes decoded commands and queues responses; it never touches a socket, so tests
//! and the connection loop drive it the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{IString, NString, Tag, Vec1};
use imap_codec::imap_types::response::{Capability, Code, Data, Greeting, Response, Status};

use super::enable::Enabled;
use super::extended::Extension;
use super::fetch::FetchJob;
use super::mailbox::Selected;
use super::reply::{self, CommandError, text};
use crate::Context;
use crate::auth::{Account, SaslLogin};

/// Where the session is in RFC 3501's state diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// One client's IMAP session.
pub struct Session {
    pub(super) ctx: Arc<Context>,
    pub(super) peer: SocketAddr,
    pub(super) account: Option<Account>,
    pub(super) selected: Option<Selected>,
    /// An AUTHENTICATE waiting for the client's response: its tag and exchange.
    pub(super) pending_auth: Option<(Tag<'static>, SaslLogin)>,
    logged_out: bool,
    out: Vec<Response<'static>>,
    /// A FETCH answered a batch at a time (see [`Session::resume`]).
    pub(super) fetching: Option<FetchJob>,
    /// What the connection offers: STARTTLS, and whether clear-text logins are refused.
    starttls: bool,
    login_disabled: bool,
    /// Extensions the client turned on with ENABLE (CONDSTORE, QRESYNC).
    pub(super) enabled: Enabled,
    /// What the running command had beyond imap-codec's syntax (see [`super::extended`]).
    pub(super) extension: Option<Extension>,
}

/// What a tagged command handler returns: the final OK (untagged data was queued on the way).
pub(super) type Outcome = Result<Status<'static>, CommandError>;

impl Session {
    pub fn new(ctx: Arc<Context>, peer: SocketAddr) -> Self {
        Self {
            ctx,
            peer,
            account: None,
            selected: None,
            pending_auth: None,
            logged_out: false,
            out: Vec::new(),
            fetching: None,
            starttls: false,
            login_disabled: false,
            enabled: Enabled::default(),
            extension: None,
        }
    }

    /// What the connection offers now (set again after STARTTLS).
    pub fn set_security(&mut self, starttls: bool, login_disabled: bool) {
        self.starttls = starttls;
        self.login_disabled = login_disabled;
    }

    pub fn state(&self) -> State {
        if self.logged_out {
            State::Logout
        } else if self.selected.is_some() {
            State::Selected
        } else if self.account.is_some() {
            State::Authenticated
        } else {
            State::NotAuthenticated
        }
    }

    /// The first line the client sees.
    pub fn greeting(&self) -> Greeting<'static> {
        let code = Code::Capability(self.capabilities());
        let msg = format!("{} IMAP4rev1 ready", self.ctx.settings.hostname);
        Greeting {
            kind: imap_codec::imap_types::response::GreetingKind::Ok,
            code: Some(code),
            text: text(&msg),
        }
    }

    /// Responses queued since the last call, in order.
    pub fn take_output(&mut self) -> Vec<Response<'static>> {
        std::mem::take(&mut self.out)
    }

    pub(super) fn push(&mut self, data: Data<'static>) {
        self.out.push(Response::Data(data));
    }

    pub(super) fn push_status(&mut self, status: Status<'static>) {
        self.out.push(Response::Status(status));
    }

    pub(super) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.account.is_none() && self.starttls {
            caps.push(Capability::StartTls);
        }
        if self.account.is_none() && self.login_disabled {
            caps.push(Capability::LoginDisabled);
        } else if self.account.is_none() {
            caps.extend([
                Capability::Auth(AuthMechanism::Plain),
                Capability::Auth(AuthMechanism::Login),
                Capability::Auth(AuthMechanism::ScramSha256),
                Capability::SaslIr,
            ]);
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Id,
            Capability::Namespace,
            Capability::Unselect,
            Capability::UidPlus,
            Capability::Move,
        ]);
        if self.account.is_some() {
            caps.extend(super::capabilities::after_login());
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    /// Runs one command and queues its responses, the tagged status last. A command with much
    /// to say (FETCH) queues only its first batch: see [`Session::has_more`].
    pub async fn command(&mut self, command: Command<'static>) {
        let tag = command.tag.clone();
        let result = self.dispatch(tag.clone(), command.body).await;
        let status = result.unwrap_or_else(|err| err.into_status(tag));
        match self.fetching.as_mut() {
            Some(job) => {
                job.status = status;
                self.resume().await;
            }
            None => self.push_status(status),
        }
    }

    /// Runs a command that came with syntax imap-codec does not read (see [`super::extended`]).
    pub async fn command_extended(&mut self, command: Command<'static>, extension: Extension) {
        self.extension = Some(extension);
        self.command(command).await;
        self.extension = None;
    }

    /// Whether the last command has more responses to queue: write what
    /// [`Session::take_output`] gave, then call [`Session::resume`].
    pub fn has_more(&self) -> bool {
        self.fetching.is_some()
    }

    /// Queues the next batch of the command in progress, its tagged status after the last.
    pub async fn resume(&mut self) {
        let Some(mut job) = self.fetching.take() else {
            return;
        };
        match self.fetch_batch(&mut job).await {
            Ok(true) => self.fetching = Some(job),
            Ok(false) => self.push_status(job.status),
            Err(err) => self.push_status(err.into_status(job.tag())),
        }
    }

    /// Marks the session as logged out (the connection closes once the output is written).
    pub(super) fn logout(&mut self) {
        self.logged_out = true;
        self.selected = None;
    }

    /// The account, or `BAD` when the command needs one.
    pub(super) fn account(&self) -> Result<&Account, CommandError> {
        self.account
            .as_ref()
            .ok_or_else(|| CommandError::bad("Log in first"))
    }

    pub(super) fn selected_mut(&mut self) -> Result<&mut Selected, CommandError> {
        self.selected
            .as_mut()
            .ok_or_else(|| CommandError::bad("Select a folder first"))
    }

    /// The selected folder when it may be changed (SELECT, not EXAMINE).
    pub(super) fn selected_writable(&mut self) -> Result<&mut Selected, CommandError> {
        let selected = self.selected_mut()?;
        if selected.read_only {
            return Err(CommandError::no(
                Some("READ-ONLY"),
                "The folder is open read-only (EXAMINE)",
            ));
        }
        Ok(selected)
    }

    async fn dispatch(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Outcome {
        let state = self.state();
        let authenticated = matches!(state, State::Authenticated | State::Selected);
        let selected = state == State::Selected;
        match body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.push(Data::Capability(caps));
                Ok(reply::tagged_ok(tag, None, "CAPABILITY completed"))
            }
            CommandBody::Noop | CommandBody::Check => {
                if selected {
                    self.sync().await?;
                }
                Ok(reply::tagged_ok(tag, None, "NOOP completed"))
            }
            CommandBody::Logout => {
                self.push_status(reply::bye("Logging out"));
                self.logout();
                Ok(reply::tagged_ok(tag, None, "LOGOUT completed"))
            }
            CommandBody::Id { .. } => {
                let name = |s: &'static str| IString::try_from(s).expect("constant is valid");
                self.push(Data::Id {
                    parameters: Some(vec![(name("name"), NString(Some(name("kubemail"))))]),
                });
                Ok(reply::tagged_ok(tag, None, "ID completed"))
            }
            CommandBody::StartTLS => Err(CommandError::bad("STARTTLS is not offered here")),
            CommandBody::Login { username, password } => {
                if state != State::NotAuthenticated {
                    return Err(CommandError::bad("Already logged in"));
                }
                self.login(tag, username, password).await
            }
            CommandBody::Authenticate { .. } => {
                // The connection routes AUTHENTICATE to `authenticate_start`.
                Err(CommandError::bad("AUTHENTICATE is not expected here"))
            }
            _ if !authenticated => Err(CommandError::bad("Log in first")),
            CommandBody::Select { mailbox, .. } => self.select(tag, &mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(tag, &mailbox, true).await,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, false).await,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, true).await,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(tag, &mailbox, &item_names).await,
            CommandBody::Namespace => self.namespace(tag),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                self.append(tag, &mailbox, &flags, date.as_ref(), &message)
                    .await
            }
            CommandBody::Subscribe { mailbox } => self.subscribe(tag, &mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, &mailbox, false).await,
            CommandBody::Create { mailbox } => self.create(tag, &mailbox).await,
            CommandBody::Delete { mailbox } => self.delete(tag, &mailbox).await,
            CommandBody::Rename { from, to } => self.rename(tag, &from, &to).await,
            CommandBody::Enable { capabilities } => self.enable(tag, capabilities),
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(tag, &mailbox).await,
            CommandBody::GetQuota { root } => self.get_quota(tag, &root).await,
            CommandBody::SetQuota { .. } => Err(CommandError::no(
                Some("NOPERM"),
                "Quotas are set by the administrator",
            )),
            _ if !selected => Err(CommandError::bad("Select a folder first")),
            CommandBody::Close => self.close(tag).await,
            CommandBody::Unselect => {
                self.selected = None;
                Ok(reply::tagged_ok(tag, None, "UNSELECT completed"))
            }
            CommandBody::Expunge => self.expunge(tag, None).await,
            CommandBody::ExpungeUid { sequence_set } => {
                self.expunge(tag, Some(&sequence_set)).await
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(tag, &sequence_set, macro_or_item_names, uid)
                    .await
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                self.store(tag, &sequence_set, kind, response, &flags, uid)
                    .await
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(tag, charset.as_ref(), &criteria, uid).await,
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                self.sort(tag, &sort_criteria, &charset, &search_criteria, uid)
                    .await
            }
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                self.thread(tag, &algorithm, &charset, &search_criteria, uid)
                    .await
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(tag, &sequence_set, &mailbox, uid, false)
                    .await
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(tag, &sequence_set, &mailbox, uid, true)
                    .await
            }
            _ => Err(CommandError::bad("Command not supported")),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::Authenticator;
    use crate::context::Settings;
    use crate::store::Store;

    /// A context whose database cannot be reached: everything before login is pure, and a
    /// store failure shows as it would in production.
    pub(in crate::imap) fn offline_context(dir: &std::path::Path) -> Arc<Context> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Arc::new(Context {
            store: Store::new(
                pool.clone(),
                Arc::new(mail_blobstore::FsBlobStore::new(dir)),
            ),
            auth: Authenticator::new(pool),
            settings: Settings {
                hostname: "mx.example.test".into(),
                ..Settings::default()
            },
        })
    }

    /// Feeds `input` to a connection as one burst, closes the sending side, returns all output.
    async fn converse(input: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let ctx = offline_context(dir.path());
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let task = tokio::spawn(crate::imap::handle(server, peer, ctx));
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
            .await
            .expect("server answered in time")
            .unwrap();
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    const GREETING: &str = "* OK [CAPABILITY IMAP4REV1 AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR LITERAL+ ID NAMESPACE UNSELECT UIDPLUS MOVE] mx.example.test IMAP4rev1 ready\r\n";

    #[tokio::test]
    async fn conversations_before_login() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (
                b"a1 CAPABILITY\r\n",
                "* CAPABILITY IMAP4REV1 AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR LITERAL+ ID NAMESPACE UNSELECT UIDPLUS MOVE\r\na1 OK CAPABILITY completed\r\n",
            ),
            (b"a1 NOOP\r\n", "a1 OK NOOP completed\r\n"),
            (b"a1 noop\n", "a1 OK NOOP completed\r\n"),
            (
                b"a1 FROBNICATE\r\n",
                "a1 BAD Unknown command or bad syntax\r\n",
            ),
            (b"\x01\x02\r\n", "* BAD Unknown command or bad syntax\r\n"),
            (b"a1 SELECT INBOX\r\n", "a1 BAD Log in first\r\n"),
            (b"a1 LIST \"\" *\r\n", "a1 BAD Log in first\r\n"),
            (b"a1 FETCH 1 FLAGS\r\n", "a1 BAD Log in first\r\n"),
            (b"a1 EXPUNGE\r\n", "a1 BAD Log in first\r\n"),
            (
                b"a1 STARTTLS\r\n",
                "a1 BAD STARTTLS is not offered here\r\n",
            ),
            (
                b"a1 ID (\"name\" \"test\")\r\n",
                "* ID (\"name\" \"kubemail\")\r\na1 OK ID completed\r\n",
            ),
            (
                b"a1 LOGOUT\r\na2 NOOP\r\n",
                "* BYE Logging out\r\na1 OK LOGOUT completed\r\n",
            ),
            (
                b"a1 AUTHENTICATE CRAM-MD5\r\n",
                "a1 NO [CANNOT] Supported mechanisms: PLAIN, LOGIN, SCRAM-SHA-256\r\n",
            ),
            (
                b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 NOOP\r\n",
                "+  \r\na1 BAD Authentication cancelled\r\na2 OK NOOP completed\r\n",
            ),
            // The store is down: a login is a temporary failure, not a wrong password.
            (
                b"a1 LOGIN alice@example.test secret\r\n",
                "a1 NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n",
            ),
            // A synchronizing literal gets a continuation; a non-synchronizing one does not.
            (
                b"a1 LOGIN {18}\r\nalice@example.test secret\r\n",
                "+ Ready for literal data\r\na1 NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n",
            ),
            (
                b"a1 LOGIN {18+}\r\nalice@example.test secret\r\n",
                "a1 NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n",
            ),
            (
                b"a1 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
                "a1 NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n",
            ),
        ];
        for (input, want) in cases {
            let got = converse(input).await;
            assert_eq!(
                got,
                format!("{GREETING}{want}"),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn huge_literal_is_refused_without_reading_it() {
        // Before login the connection layer says goodbye at the announcement: no `+`.
        let got = converse(b"a1 LOGIN {999999999}\r\na2 NOOP\r\n").await;
        assert_eq!(
            got,
            format!("{GREETING}* BYE Literal too large before login\r\n")
        );
    }

    #[tokio::test]
    async fn malformed_base64_in_authenticate_is_bad() {
        let got = converse(b"a1 AUTHENTICATE PLAIN\r\n!!!notbase64\r\n").await;
        assert_eq!(
            got,
            format!("{GREETING}+  \r\na1 BAD Unknown command or bad syntax\r\n")
        );
    }
}
