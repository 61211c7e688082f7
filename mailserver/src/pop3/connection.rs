//! The thin I/O loop: reads lines, feeds them to the [`Session`], runs the store work the
//! session asks for and writes the replies.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tracing::{debug, info, warn};

use super::reply;
use super::session::{Action, Credentials, LoginOutcome, Maildrop, Session};
use crate::Context;

/// RFC 1939 section 3: the autologout timer is at least 10 minutes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Longest line read, line end included. RFC 2449 limits commands to 255 octets but RFC 5034
/// lifts that for SASL responses; this is enough for both and bounds memory per connection.
pub const MAX_LINE: usize = 4096;

/// What reading one line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its LF (a CR before it is left for the parser).
    Complete(Vec<u8>),
    /// A line over the limit; it was read and dropped up to its end.
    TooLong,
    /// The client closed the connection.
    Eof,
}

/// Reads one LF-terminated line of at most `max` octets, discarding the rest of a longer one.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            // A final line without LF is not a command: the client is gone.
            return Ok(Line::Eof);
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() + usize::from(found.is_some()) > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete(line)
            });
        }
    }
}

/// Serves one connection until QUIT, a closed connection, or the idle timeout.
pub async fn run<S>(stream: S, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve(stream, ctx, IDLE_TIMEOUT).await
}

async fn serve<S>(stream: S, ctx: Arc<Context>, idle: Duration) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let mut session = Session::new(&ctx.settings.hostname);
    send(&mut writer, &session.greeting()).await?;
    loop {
        let line = match tokio::time::timeout(idle, read_line(&mut reader, MAX_LINE)).await {
            Ok(line) => line?,
            Err(_) => {
                // RFC 1939: a timed-out session closes without entering UPDATE.
                debug!("idle timeout");
                send(&mut writer, &reply::err("idle timeout, closing")).await?;
                return Ok(());
            }
        };
        let mut action = match line {
            Line::Complete(line) => session.line(&line),
            Line::TooLong => session.line_too_long(),
            // Dropped without QUIT: nothing marked is deleted.
            Line::Eof => return Ok(()),
        };
        // Store work may lead to one more action (its reply); loop until there is something
        // to send.
        loop {
            action = match action {
                Action::Reply(bytes) => {
                    // Pipelined commands already buffered are answered in one write.
                    if reader.buffer().is_empty() {
                        send(&mut writer, &bytes).await?;
                    } else {
                        write(&mut writer, &bytes).await?;
                    }
                    break;
                }
                Action::Close(bytes) => {
                    send(&mut writer, &bytes).await?;
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                Action::Login(credentials) => session.login_done(login(&ctx, &credentials).await),
                Action::Retrieve {
                    message,
                    body_lines,
                } => {
                    let bytes = match ctx.store.read_body(&message).await {
                        Ok(raw) => reply::message(&raw, body_lines),
                        Err(err) => {
                            warn!(uid = message.uid, folder = message.folder_id, %err, "cannot read message body");
                            reply::unavailable()
                        }
                    };
                    Action::Reply(bytes)
                }
                Action::Update { folder_id, uids } => {
                    let removed = match ctx.store.delete_messages(folder_id, &uids).await {
                        Ok(removed) => Ok(removed.len()),
                        Err(err) => {
                            warn!(folder = folder_id, %err, "cannot delete messages at QUIT");
                            Err(())
                        }
                    };
                    session.update_done(removed)
                }
            };
        }
    }
}

/// Verifies the credentials and snapshots the INBOX.
async fn login(ctx: &Context, credentials: &Credentials) -> LoginOutcome {
    let account = match ctx
        .auth
        .verify(&credentials.user, &credentials.password)
        .await
    {
        Ok(Some(account)) => account,
        Ok(None) => {
            info!(user = ?credentials.user, "pop3 login failed");
            return LoginOutcome::Rejected;
        }
        Err(err) => {
            warn!(user = ?credentials.user, %err, "pop3 login could not be checked");
            return LoginOutcome::Unavailable;
        }
    };
    let folder = match ctx.store.folder(account.mailbox_id, "INBOX").await {
        Ok(Some(folder)) => folder,
        Ok(None) => {
            warn!(mailbox = account.mailbox_id, "mailbox has no INBOX");
            return LoginOutcome::Unavailable;
        }
        Err(err) => {
            warn!(mailbox = account.mailbox_id, %err, "cannot open INBOX");
            return LoginOutcome::Unavailable;
        }
    };
    match ctx.store.messages(folder.id).await {
        Ok(messages) => {
            debug!(user = %account.address, count = messages.len(), "pop3 login");
            LoginOutcome::Opened(Maildrop::new(&folder, messages))
        }
        Err(err) => {
            warn!(folder = folder.id, %err, "cannot list INBOX");
            LoginOutcome::Unavailable
        }
    }
}

/// Writes without flushing (more replies follow at once).
async fn write<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(IDLE_TIMEOUT, writer.write_all(bytes))
        .await
        .map_err(|_| anyhow::anyhow!("client stopped reading"))??;
    Ok(())
}

/// Writes and flushes; a client that stops reading for the idle timeout is dropped.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(IDLE_TIMEOUT, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| anyhow::anyhow!("client stopped reading"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn lines() {
        let cases: Vec<(&[u8], usize, Vec<Line>)> = vec![
            (
                b"STAT\r\nLIST 1\n",
                64,
                vec![
                    Line::Complete(b"STAT\r".to_vec()),
                    Line::Complete(b"LIST 1".to_vec()),
                    Line::Eof,
                ],
            ),
            // Exactly at the limit (LF counted) passes; one more octet does not.
            (
                b"abcd\nabcde\nok\n",
                5,
                vec![
                    Line::Complete(b"abcd".to_vec()),
                    Line::TooLong,
                    Line::Complete(b"ok".to_vec()),
                    Line::Eof,
                ],
            ),
            // An unterminated last line is not a command.
            (b"QUIT", 64, vec![Line::Eof]),
            (b"", 64, vec![Line::Eof]),
            (b"\n", 64, vec![Line::Complete(Vec::new()), Line::Eof]),
        ];
        for (input, max, want) in cases {
            // A tiny buffer makes lines span several reads.
            let mut reader = BufReader::with_capacity(2, input);
            let mut got = Vec::new();
            loop {
                let line = read_line(&mut reader, max).await.unwrap();
                let eof = line == Line::Eof;
                got.push(line);
                if eof {
                    break;
                }
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[tokio::test]
    async fn long_line_is_dropped_without_growing() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nNOOP\n");
        let mut reader = BufReader::new(input.as_slice());
        assert_eq!(
            read_line(&mut reader, MAX_LINE).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(
            read_line(&mut reader, MAX_LINE).await.unwrap(),
            Line::Complete(b"NOOP".to_vec())
        );
    }

    /// A context whose database does not answer: enough for everything before a login, and
    /// for checking that a store failure becomes `[SYS/TEMP]`.
    fn unreachable_store() -> Arc<Context> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("url parses");
        let blobs = Arc::new(mail_blobstore::FsBlobStore::new("/nonexistent"));
        Arc::new(Context {
            store: crate::store::Store::new(pool.clone(), blobs),
            auth: crate::auth::Authenticator::new(pool),
            settings: crate::context::Settings {
                hostname: "mx.test".into(),
                ..Default::default()
            },
        })
    }

    /// Sends `input`, then reads everything the server says until it closes.
    async fn converse(input: &[u8], idle: Duration) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, unreachable_store(), idle));
        client.write_all(input).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut out))
            .await
            .expect("server closes")
            .unwrap();
        task.await.unwrap().unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn conversations() {
        let long = format!("{}\r\nNOOP\r\nQUIT\r\n", "x".repeat(MAX_LINE));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "idle timeout closes",
                b"CAPA\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+OK capability list follows\r\nTOP\r\nUIDL\r\n\
                 USER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n\
                 IMPLEMENTATION kubemail\r\n.\r\n-ERR idle timeout, closing\r\n",
            ),
            (
                "long line is refused, the session goes on",
                long.into_bytes(),
                "+OK mx.test POP3 server ready\r\n-ERR line too long\r\n\
                 -ERR not allowed before login\r\n+OK mx.test POP3 server signing off\r\n",
            ),
            (
                "store down at login",
                b"USER a@b\r\nPASS c\r\nQUIT\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+OK send PASS\r\n\
                 -ERR [SYS/TEMP] mail store unavailable, try again later\r\n\
                 +OK mx.test POP3 server signing off\r\n",
            ),
            (
                "sasl over the wire, store down",
                b"AUTH PLAIN\r\nAGEAYg==\r\nQUIT\r\n".to_vec(),
                "+OK mx.test POP3 server ready\r\n+ \r\n\
                 -ERR [SYS/TEMP] mail store unavailable, try again later\r\n\
                 +OK mx.test POP3 server signing off\r\n",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(
                converse(&input, Duration::from_millis(300)).await,
                want,
                "{name}"
            );
        }
    }
}
