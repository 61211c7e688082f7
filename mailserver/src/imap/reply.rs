//! Replies: the one place where command failures become `NO` / `BAD` lines with response codes.

use imap_codec::imap_types::core::{Tag, Text};
use imap_codec::imap_types::response::{Code, CodeOther, Status};
use tracing::warn;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command is malformed or not allowed in this state: `BAD`.
    #[error("{0}")]
    Bad(String),
    /// The client asked for something that cannot be done: `NO`, with a response code when one
    /// fits (`AUTHENTICATIONFAILED`, `NONEXISTENT`, `CANNOT`...).
    #[error("{text}")]
    No {
        code: Option<&'static str>,
        text: String,
    },
    /// The store failed; not the client's fault, so `NO [UNAVAILABLE]`.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("authentication backend: {0}")]
    Auth(#[from] AuthError),
}

impl CommandError {
    pub fn bad(text: impl Into<String>) -> Self {
        Self::Bad(text.into())
    }

    pub fn no(code: Option<&'static str>, text: impl Into<String>) -> Self {
        Self::No {
            code,
            text: text.into(),
        }
    }

    /// The tagged status line for this failure; internal causes go to the log, not the wire.
    pub fn into_status(self, tag: Tag<'static>) -> Status<'static> {
        match self {
            Self::Bad(text) => tagged_bad(tag, &text),
            Self::No { code, text } => tagged(tag, Kind::No, code.map(other_code), &text),
            Self::Store(err) => {
                warn!(error = %err, "imap: store failure");
                tagged(
                    tag,
                    Kind::No,
                    Some(other_code("UNAVAILABLE")),
                    "Temporary failure, try again later",
                )
            }
            Self::Auth(err) => {
                warn!(error = %err, "imap: authentication backend failure");
                tagged(
                    tag,
                    Kind::No,
                    Some(other_code("UNAVAILABLE")),
                    "Temporary authentication failure, try again later",
                )
            }
        }
    }
}

/// A response code imap-types has no variant for (RFC 5530 codes).
pub fn other_code(code: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(code.as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bad,
}

/// Text that is valid on the wire: no CR/LF, never empty.
pub fn text(s: &str) -> Text<'static> {
    let cleaned: String = s
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let cleaned = if cleaned.trim().is_empty() {
        "done".to_string()
    } else {
        cleaned
    };
    Text::try_from(cleaned).unwrap_or_else(|_| Text::unvalidated("done"))
}

pub fn tagged(
    tag: Tag<'static>,
    kind: Kind,
    code: Option<Code<'static>>,
    msg: &str,
) -> Status<'static> {
    let kind = match kind {
        Kind::Ok => imap_codec::imap_types::response::StatusKind::Ok,
        Kind::No => imap_codec::imap_types::response::StatusKind::No,
        Kind::Bad => imap_codec::imap_types::response::StatusKind::Bad,
    };
    Status::new(Some(tag), kind, code, text(msg)).unwrap_or_else(|_| {
        // Only a base64-looking text can fail, and `text` never yields one with a code.
        Status::Untagged(imap_codec::imap_types::response::StatusBody {
            kind,
            code: None,
            text: Text::unvalidated("done"),
        })
    })
}

pub fn tagged_ok(tag: Tag<'static>, code: Option<Code<'static>>, msg: &str) -> Status<'static> {
    tagged(tag, Kind::Ok, code, msg)
}

pub fn tagged_bad(tag: Tag<'static>, msg: &str) -> Status<'static> {
    tagged(tag, Kind::Bad, None, msg)
}

pub fn untagged_ok(code: Option<Code<'static>>, msg: &str) -> Status<'static> {
    Status::Untagged(imap_codec::imap_types::response::StatusBody {
        kind: imap_codec::imap_types::response::StatusKind::Ok,
        code,
        text: text(msg),
    })
}

pub fn untagged_bad(msg: &str) -> Status<'static> {
    Status::Untagged(imap_codec::imap_types::response::StatusBody {
        kind: imap_codec::imap_types::response::StatusKind::Bad,
        code: None,
        text: text(msg),
    })
}

pub fn bye(msg: &str) -> Status<'static> {
    Status::bye(None, text(msg)).unwrap_or_else(|_| untagged_ok(None, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::response::Response;

    fn wire(status: Status<'static>) -> String {
        let bytes = ResponseCodec::default()
            .encode(&Response::Status(status))
            .dump();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn failures_on_the_wire() {
        let tag = || Tag::try_from("a1").unwrap();
        let cases: Vec<(CommandError, &str)> = vec![
            (
                CommandError::bad("Unknown command"),
                "a1 BAD Unknown command\r\n",
            ),
            (
                CommandError::no(Some("AUTHENTICATIONFAILED"), "Invalid credentials"),
                "a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n",
            ),
            (
                CommandError::no(Some("NONEXISTENT"), "No such folder"),
                "a1 NO [NONEXISTENT] No such folder\r\n",
            ),
            (
                CommandError::Store(StoreError::MissingBlob {
                    bucket: "b".into(),
                    key: "secret-internal-key".into(),
                }),
                "a1 NO [UNAVAILABLE] Temporary failure, try again later\r\n",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(wire(err.into_status(tag())), want);
        }
    }

    #[test]
    fn text_is_always_valid() {
        assert_eq!(text("a\r\nb").inner(), "a  b");
        assert_eq!(text("").inner(), "done");
        assert_eq!(wire(untagged_bad("x\ny")), "* BAD x y\r\n");
    }
}
