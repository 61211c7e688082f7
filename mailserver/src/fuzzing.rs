//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpora:
//! arbitrary bytes in, through the same code a client reaches, with the database answered by
//! fixed stand-ins where the protocol is sans-I/O. Each returns what the client would have
//! received, so the replay test can check it is well formed.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::{MessageDataItemName, Part, Section};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::{ResponseCodec, encode::Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::sasl::{Exchange, Malformed, ScramKeys, Step};
use crate::auth::{Authenticator, SaslInput};
use crate::context::{Context, Settings};
use crate::pop3::connection::{Line, Lines, MAX_LINE};
use crate::pop3::session::{Action as PopAction, LoginOutcome, Maildrop, Session as PopSession};
use crate::smtp::session::Body;
use crate::smtp::{Action, Limits, Lookup, Session as SmtpSession};
use crate::store::{Folder, MessageMeta, Recipient, Store};

/// Runs an SMTP session over `data`: the first byte picks the read size (1 to 256 bytes),
/// the rest is what the client sends. Recipients starting with `u` are unknown, `f` fail, `n`
/// are not hosted, others are local; deliveries fail when the message holds `FAIL`.
pub fn smtp(data: &[u8]) -> Vec<u8> {
    let Some((&first, input)) = data.split_first() else {
        return Vec::new();
    };
    let limits = Limits {
        max_message_size: 64 * 1024,
        ..Limits::default()
    };
    let mut session = SmtpSession::new("mx.fuzz.test", [192, 0, 2, 1].into(), limits);
    let mut out = Vec::new();
    let mut chunks = input.chunks(usize::from(first) + 1);
    loop {
        while let Some(action) = session.next_action() {
            match action {
                Action::Reply(reply) => out.extend_from_slice(reply.to_wire().as_bytes()),
                Action::Lookup(address) => session.lookup_done(lookup(&address)),
                // The spool is the connection's; only what stays in memory can be looked at.
                Action::Spool(_) | Action::StartTls => {}
                // An MX session offers no AUTH; were it asked, it fails.
                Action::Auth(_) => {
                    session.auth_done(crate::auth::SaslReply::Done(crate::auth::Login::Failed))
                }
                Action::Deliver(delivery) => {
                    let failed = match &delivery.message {
                        Body::Memory(bytes) => bytes.windows(4).any(|w| w == b"FAIL"),
                        Body::Spooled { .. } => false,
                    };
                    session.delivered(!failed);
                }
                Action::Close => return out,
            }
        }
        match chunks.next() {
            Some(bytes) => session.feed(bytes),
            None => return out,
        }
    }
}

fn lookup(address: &str) -> Lookup {
    match address.bytes().next() {
        Some(b'u') => Lookup::UnknownUser,
        Some(b'f') => Lookup::Failed,
        Some(b'n') => Lookup::NotHosted,
        _ => Lookup::Local(Recipient {
            mailbox_id: 1,
            address: address.to_ascii_lowercase(),
            bucket: "fuzz".into(),
            quota_bytes: 1 << 20,
            used_bytes: 1000,
        }),
    }
}

/// Runs a POP3 session over `data` as the connection reads it (LF-terminated lines, bounded).
/// A login with the password `secret` opens a maildrop of three messages whose body is the
/// first 2 KiB of `data`; `down` finds the store unavailable; others are rejected.
pub fn pop3(data: &[u8]) -> Vec<u8> {
    let body = &data[..data.len().min(2048)];
    let mut session = PopSession::new("pop.fuzz.test");
    let mut out = session.greeting();
    let mut lines = Lines::default();
    let mut exchange: Option<Exchange> = None;
    lines.push(data);
    // A last line without LF is not a command: the client is gone.
    while let Some(line) = lines.next(MAX_LINE) {
        let mut action = match line {
            Line::Complete(line) => session.line(&line),
            Line::TooLong => session.line_too_long(),
        };
        loop {
            action = match action {
                PopAction::Reply(bytes) => {
                    out.extend_from_slice(&bytes);
                    break;
                }
                PopAction::Close(bytes) => {
                    out.extend_from_slice(&bytes);
                    return out;
                }
                PopAction::Login(credentials) => session.login_done(match &*credentials.password {
                    "secret" => LoginOutcome::Opened(maildrop([body.len(); 3])),
                    "down" => LoginOutcome::Unavailable,
                    "busy" => LoginOutcome::InUse,
                    _ => LoginOutcome::Rejected,
                }),
                PopAction::Sasl(input) => sasl_input(&mut session, &mut exchange, input, body),
                PopAction::Retrieve { body_lines, .. } => {
                    let whole = crate::pop3::reply::message(body, body_lines);
                    // Streamed in pieces as RETR sends it, the bytes must be the same.
                    let piece = usize::from(data.first().copied().unwrap_or(1).max(1));
                    let mut streamed =
                        crate::pop3::reply::message_status(body.len() as u64, body_lines);
                    let mut stuffer = crate::pop3::stuffing::Stuffer::new(body_lines);
                    for chunk in body.chunks(piece) {
                        stuffer.feed(chunk, &mut streamed);
                    }
                    stuffer.finish(&mut streamed);
                    assert_eq!(whole, streamed, "streamed RETR differs");
                    PopAction::Reply(whole)
                }
                PopAction::Update { uids, .. } => session.update_done(match uids.len() {
                    2 => Err(()),
                    n => Ok(n),
                }),
            };
        }
    }
    out
}

/// Runs an AUTH step through the SASL engine as the login service would (see [`sasl_step`]).
pub(crate) fn sasl_input(
    session: &mut PopSession,
    exchange: &mut Option<Exchange>,
    input: SaslInput,
    body: &[u8],
) -> PopAction {
    let step = match (input, exchange.as_mut()) {
        (SaslInput::Start { mechanism, initial }, _) => {
            *exchange = Exchange::new(mechanism);
            match exchange.as_mut() {
                Some(ex) => ex.start(initial),
                None => Step::Malformed(Malformed::Syntax),
            }
        }
        (SaslInput::Respond(data), Some(ex)) => ex.respond(&data),
        (SaslInput::Respond(_), None) => Step::Malformed(Malformed::Syntax),
    };
    sasl_step(session, exchange, step, body)
}

/// Runs the SASL engine's `step` as the login service would, with the fuzz logins: a right
/// password `secret`, SCRAM keys fake ones (so a proof never matches).
fn sasl_step(
    session: &mut PopSession,
    exchange: &mut Option<Exchange>,
    mut step: Step,
    body: &[u8],
) -> PopAction {
    loop {
        step = match step {
            Step::Challenge(challenge)
            | Step::Proven {
                server_final: challenge,
                ..
            } => {
                return session.sasl_challenge(&challenge);
            }
            Step::NeedKeys { login } => match exchange.as_mut() {
                Some(ex) => ex.keys(ScramKeys::fake(&login, b"fuzz")),
                None => Step::Malformed(Malformed::Syntax),
            },
            Step::Malformed(why) => return session.sasl_malformed(why),
            Step::Verify { password, .. } if password == "secret" => {
                return session.login_done(LoginOutcome::Opened(maildrop([body.len(); 3])));
            }
            Step::Verify { .. } | Step::Rejected { .. } | Step::Accepted => {
                return session.login_done(LoginOutcome::Rejected);
            }
        };
    }
}

/// A maildrop of three messages of the given sizes in a fixed INBOX (fuzzing, noise tests).
pub(crate) fn maildrop(sizes: [usize; 3]) -> Maildrop {
    let folder = Folder {
        id: 7,
        mailbox_id: 1,
        name: "INBOX".into(),
        special_use: Some("inbox".into()),
        uid_validity: 1234,
        uid_next: 4,
        highest_modseq: 1,
        subscribed: true,
    };
    let meta = |uid: i64| MessageMeta {
        id: uid,
        folder_id: 7,
        uid,
        modseq: 1,
        size: i64::try_from(sizes[usize::try_from(uid - 1).unwrap_or(0) % 3]).unwrap_or(i64::MAX),
        internal_date: Utc::now(),
        flags: Vec::new(),
        bucket: "b".into(),
        blob_key: format!("k{uid}"),
    };
    Maildrop::new(&folder, vec![meta(1), meta(2), meta(3)])
}

/// Runs an IMAP connection (imap-next framing and decoding, then the session) over `data`,
/// sent as one burst, and returns everything the server wrote. The database is unreachable:
/// what runs is all a client can reach before logging in (LOGIN and AUTHENTICATE reach the
/// store and fail as they would with it down).
pub fn imap(data: &[u8]) -> Vec<u8> {
    // The syntax the session reads beyond imap-codec's (it runs after login, which the store
    // being down never reaches), one line at a time.
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = crate::imap::extended::parse(line);
    }
    let (runtime, ctx) = imap_world();
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer: SocketAddr = ([192, 0, 2, 1], 5555).into();
        let task = tokio::spawn(crate::imap::handle(server, peer, ctx.clone()));
        let (mut read, mut write) = tokio::io::split(client);
        let input = data.to_vec();
        // Written while the replies are read, so a client that sends a lot never blocks
        // on a server waiting for its replies to be read.
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&input).await;
            let _ = write.shutdown().await;
        });
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        let _ = writer.await;
        let _ = task.await;
        out
    })
}

fn imap_world() -> &'static (tokio::runtime::Runtime, Arc<Context>) {
    static WORLD: OnceLock<(tokio::runtime::Runtime, Arc<Context>)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ctx = runtime.block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                // The database is never there: fail at once rather than retry, for throughput.
                .acquire_timeout(Duration::from_millis(1))
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .expect("lazy pool");
            let blobs = std::env::temp_dir().join("kubemail-fuzz-blobs");
            Arc::new(Context {
                store: Store::new(
                    pool.clone(),
                    Arc::new(mail_blobstore::FsBlobStore::new(blobs)),
                ),
                auth: Authenticator::new(pool),
                settings: Settings {
                    hostname: "imap.fuzz.test".into(),
                    max_message_size: 64 * 1024,
                    ..Settings::default()
                },
            })
        });
        (runtime, ctx)
    })
}

/// Builds what FETCH answers for a message of these bytes — ENVELOPE, BODY, BODYSTRUCTURE and
/// several sections — and encodes it as IMAP would send it.
pub fn mime(raw: &[u8]) -> Vec<u8> {
    let part = |path: &[u32]| {
        let path: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
        Part(Vec1::try_from(path).expect("non-empty path"))
    };
    let names = vec![
        MessageDataItemName::Envelope,
        MessageDataItemName::Body,
        MessageDataItemName::BodyStructure,
        MessageDataItemName::Rfc822Header,
        MessageDataItemName::Rfc822Text,
        section(Some(Section::Part(part(&[1])))),
        section(Some(Section::Part(part(&[2, 1])))),
        section(Some(Section::Header(Some(part(&[1]))))),
        section(Some(Section::Text(Some(part(&[2]))))),
        section(Some(Section::Mime(part(&[1, 1])))),
        section(Some(Section::Text(None))),
        // BINARY undoes transfer encodings: the decoders see the part bytes as they are.
        MessageDataItemName::Binary {
            section: vec![NonZeroU32::MIN],
            partial: None,
            peek: true,
        },
        MessageDataItemName::BinarySize {
            section: [2, 1].iter().filter_map(|&n| NonZeroU32::new(n)).collect(),
        },
    ];
    let meta = MessageMeta {
        id: 1,
        folder_id: 1,
        uid: 1,
        modseq: 1,
        size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
        internal_date: Utc::now(),
        flags: Vec::new(),
        bucket: "b".into(),
        blob_key: "k".into(),
    };
    let items = crate::imap::fetch::items(&names, &meta, Some(raw));
    let Ok(items) = Vec1::try_from(items) else {
        return Vec::new();
    };
    let response = Response::Data(Data::Fetch {
        seq: NonZeroU32::MIN,
        items,
    });
    ResponseCodec::default().encode(&response).dump()
}

fn section(section: Option<Section<'static>>) -> MessageDataItemName<'static> {
    MessageDataItemName::BodyExt {
        section,
        partial: None,
        peek: true,
    }
}

/// Loads `data` as one manifests file; the error text when it is refused.
pub fn manifests(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let mut loaded = mail_provision::manifests::Loaded::default();
    mail_provision::manifests::load_text(
        std::path::Path::new("fuzz.yaml"),
        text,
        &mut loaded,
        &mut Default::default(),
    )
    .map_err(|e| e.to_string())
}
