//! Every SMTP reply the server sends, with its basic and enhanced status code (RFC 5321, 3463).
//!
//! Refusals are [`Reject`] variants; whether a refusal is temporary or permanent decides both
//! the first digit of the code (4 or 5) and the class of the enhanced code, in one place.
//! The text tells the client what it can fix; causes stay in the logs.

use std::fmt::Write as _;

use crate::store::Recipient;

/// One reply, possibly multi-line (EHLO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (RFC 3463), left out of the greeting, EHLO/HELO and 354.
    pub enhanced: Option<[u8; 3]>,
    /// The text lines; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<[u8; 3]>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// `250 2.0.0 <text>`
    pub fn ok(text: impl Into<String>) -> Self {
        Self::new(250, Some([2, 0, 0]), text)
    }

    /// `220 <host> ESMTP ready`
    pub fn greeting(hostname: &str) -> Self {
        Self::new(220, None, format!("{hostname} ESMTP ready"))
    }

    /// `221 2.0.0 <host> closing connection`
    pub fn bye(hostname: &str) -> Self {
        Self::new(
            221,
            Some([2, 0, 0]),
            format!("{hostname} closing connection"),
        )
    }

    /// `354` after DATA (no enhanced code: RFC 2034 gives them to 2xx, 4xx and 5xx only).
    pub fn start_data() -> Self {
        Self::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }

    /// The multi-line EHLO reply: the greeting line, then one extension keyword a line.
    pub fn ehlo(hostname: &str, client: &str, max_message_size: usize) -> Self {
        let mut lines = vec![format!("{hostname} greets {client}")];
        lines.extend([
            "PIPELINING".to_string(),
            format!("SIZE {max_message_size}"),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ]);
        Self {
            code: 250,
            enhanced: None,
            lines,
        }
    }

    /// Whether the server closes the connection after sending this reply.
    pub fn closes(&self) -> bool {
        self.code == 221 || self.code == 421
    }

    /// Appends the wire form (`250-first`, ..., `250 last`, each ending in CRLF) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut text = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(text, "{}{sep}", self.code);
            if let Some([a, b, c]) = self.enhanced {
                let _ = write!(text, "{a}.{b}.{c} ");
            }
            // A reply line must never carry a line break a client could read as a new reply.
            text.extend(line.chars().filter(|c| *c != '\r' && *c != '\n'));
            text.push_str("\r\n");
        }
        out.extend_from_slice(text.as_bytes());
    }

    /// The wire form as a string (tests and logs).
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Why the server refuses a command or a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A command the server does not know.
    UnknownCommand,
    /// A command line that is not UTF-8.
    InvalidBytes,
    /// A command line longer than the limit.
    LineTooLong,
    /// A known command the server does not offer (yet): BDAT, AUTH, STARTTLS, EXPN...
    NotImplemented(&'static str),
    /// A command at the wrong point of the dialogue.
    BadSequence(&'static str),
    /// Arguments that do not parse; the text is the expected syntax.
    Syntax(&'static str),
    /// A MAIL FROM address that does not parse.
    BadSenderAddress,
    /// A RCPT TO address that does not parse.
    BadRecipientAddress,
    /// A MAIL or RCPT parameter with a bad value.
    InvalidParameter(&'static str),
    /// A MAIL or RCPT parameter the server does not offer.
    UnsupportedParameter(String),
    /// A non-ASCII address without `SMTPUTF8` (RFC 6531).
    NeedsSmtputf8,
    /// Declared or actual message size over the server's limit.
    MessageTooBig,
    /// A message line longer than the limit.
    DataLineTooLong(usize),
    /// The recipient address is in a hosted domain but delivers nowhere.
    MailboxUnavailable(String),
    /// The recipient's domain is not hosted here, and this server relays for no one.
    RelayDenied(String),
    /// The recipient's mailbox has no room for the message now (it would fit an empty one).
    MailboxFull(String),
    /// The message alone is larger than the recipient's quota: retrying cannot help.
    ExceedsQuota(String),
    TooManyRecipients,
    /// DATA after MAIL whose recipients were all refused.
    NoValidRecipients,
    /// The recipient lookup failed (database down): try again later.
    LookupFailed,
    /// The message could not be stored: try again later; nothing was delivered.
    StoreFailed,
    TooManyErrors,
    /// Too many failed logins from the client's address (the login guard's ban).
    Banned,
    Timeout,
    ShuttingDown,
}

impl Reject {
    /// The refusal for a recipient whose mailbox cannot take `size` more bytes now: temporary
    /// while the message would fit the empty mailbox (RFC 3463 4.2.2), permanent once it alone
    /// is larger than the quota (5.2.2). `None` when it fits.
    pub fn quota(recipient: &Recipient, address: &str, size: u64) -> Option<Reject> {
        if recipient.fits(size) {
            None
        } else if i64::try_from(size).is_ok_and(|size| size <= recipient.quota_bytes) {
            Some(Reject::MailboxFull(address.to_string()))
        } else {
            Some(Reject::ExceedsQuota(address.to_string()))
        }
    }

    /// Temporary refusals (4xx) invite the client to retry; permanent ones (5xx) do not.
    pub fn temporary(&self) -> bool {
        matches!(
            self,
            Reject::TooManyRecipients
                | Reject::MailboxFull(_)
                | Reject::LookupFailed
                | Reject::StoreFailed
                | Reject::TooManyErrors
                | Reject::Banned
                | Reject::Timeout
                | Reject::ShuttingDown
        )
    }

    /// The last two digits of the basic code, the subject and detail of the enhanced code, and
    /// the text.
    fn parts(&self) -> (u16, [u8; 2], String) {
        match self {
            Reject::UnknownCommand => (0, [5, 1], "command not recognized".into()),
            Reject::InvalidBytes => (0, [5, 2], "command line is not valid UTF-8".into()),
            Reject::LineTooLong => (0, [5, 2], "line too long".into()),
            Reject::NotImplemented(what) => (2, [5, 1], format!("{what} not implemented")),
            Reject::BadSequence(why) => (3, [5, 1], (*why).into()),
            Reject::Syntax(syntax) => (1, [5, 4], format!("syntax: {syntax}")),
            Reject::BadSenderAddress => (1, [1, 7], "bad sender address syntax".into()),
            Reject::BadRecipientAddress => (1, [1, 3], "bad recipient address syntax".into()),
            Reject::InvalidParameter(param) => (1, [5, 4], format!("invalid {param} parameter")),
            Reject::UnsupportedParameter(param) => {
                (55, [5, 4], format!("parameter {param} not supported"))
            }
            Reject::NeedsSmtputf8 => (
                53,
                [6, 7],
                "non-ASCII address needs the SMTPUTF8 parameter".into(),
            ),
            Reject::MessageTooBig => (
                52,
                [3, 4],
                "message exceeds the fixed maximum message size".into(),
            ),
            Reject::DataLineTooLong(max) => (
                54,
                [6, 0],
                format!("message has a line longer than {max} bytes"),
            ),
            Reject::MailboxUnavailable(addr) => {
                (50, [1, 1], format!("<{addr}>: mailbox unavailable"))
            }
            Reject::RelayDenied(addr) => (50, [7, 1], format!("<{addr}>: relaying denied")),
            Reject::MailboxFull(addr) => (
                52,
                [2, 2],
                format!("<{addr}>: mailbox full, try again later"),
            ),
            Reject::ExceedsQuota(addr) => (
                52,
                [2, 2],
                format!("<{addr}>: message exceeds the mailbox quota"),
            ),
            Reject::TooManyRecipients => (52, [5, 3], "too many recipients".into()),
            Reject::NoValidRecipients => (54, [5, 1], "no valid recipients".into()),
            Reject::LookupFailed => (
                51,
                [3, 0],
                "recipient lookup failed, try again later".into(),
            ),
            Reject::StoreFailed => (51, [3, 0], "message not stored, try again later".into()),
            Reject::TooManyErrors => (21, [7, 0], "too many errors, closing connection".into()),
            Reject::Banned => (
                21,
                [7, 0],
                "too many failed logins from your address, try again later".into(),
            ),
            Reject::Timeout => (21, [4, 2], "timeout exceeded, closing connection".into()),
            Reject::ShuttingDown => (21, [3, 2], "service shutting down".into()),
        }
    }

    pub fn reply(&self) -> Reply {
        let class: u8 = if self.temporary() { 4 } else { 5 };
        let (rest, [subject, detail], text) = self.parts();
        Reply::new(
            u16::from(class) * 100 + rest,
            Some([class, subject, detail]),
            text,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections() {
        let addr = || "a@b.test".to_string();
        for (reject, wire) in [
            (Reject::UnknownCommand, "500 5.5.1 command not recognized"),
            (
                Reject::InvalidBytes,
                "500 5.5.2 command line is not valid UTF-8",
            ),
            (Reject::LineTooLong, "500 5.5.2 line too long"),
            (
                Reject::NotImplemented("BDAT"),
                "502 5.5.1 BDAT not implemented",
            ),
            (
                Reject::BadSequence("send MAIL first"),
                "503 5.5.1 send MAIL first",
            ),
            (
                Reject::Syntax("HELO domain"),
                "501 5.5.4 syntax: HELO domain",
            ),
            (
                Reject::BadSenderAddress,
                "501 5.1.7 bad sender address syntax",
            ),
            (
                Reject::BadRecipientAddress,
                "501 5.1.3 bad recipient address syntax",
            ),
            (
                Reject::InvalidParameter("SIZE"),
                "501 5.5.4 invalid SIZE parameter",
            ),
            (
                Reject::UnsupportedParameter("RET".into()),
                "555 5.5.4 parameter RET not supported",
            ),
            (
                Reject::NeedsSmtputf8,
                "553 5.6.7 non-ASCII address needs the SMTPUTF8 parameter",
            ),
            (
                Reject::MessageTooBig,
                "552 5.3.4 message exceeds the fixed maximum message size",
            ),
            (
                Reject::DataLineTooLong(998),
                "554 5.6.0 message has a line longer than 998 bytes",
            ),
            (
                Reject::MailboxUnavailable(addr()),
                "550 5.1.1 <a@b.test>: mailbox unavailable",
            ),
            (
                Reject::RelayDenied(addr()),
                "550 5.7.1 <a@b.test>: relaying denied",
            ),
            (
                Reject::MailboxFull(addr()),
                "452 4.2.2 <a@b.test>: mailbox full, try again later",
            ),
            (
                Reject::ExceedsQuota(addr()),
                "552 5.2.2 <a@b.test>: message exceeds the mailbox quota",
            ),
            (Reject::TooManyRecipients, "452 4.5.3 too many recipients"),
            (Reject::NoValidRecipients, "554 5.5.1 no valid recipients"),
            (
                Reject::LookupFailed,
                "451 4.3.0 recipient lookup failed, try again later",
            ),
            (
                Reject::StoreFailed,
                "451 4.3.0 message not stored, try again later",
            ),
            (
                Reject::TooManyErrors,
                "421 4.7.0 too many errors, closing connection",
            ),
            (
                Reject::Banned,
                "421 4.7.0 too many failed logins from your address, try again later",
            ),
            (
                Reject::Timeout,
                "421 4.4.2 timeout exceeded, closing connection",
            ),
            (Reject::ShuttingDown, "421 4.3.2 service shutting down"),
        ] {
            let reply = reject.reply();
            assert_eq!(reply.to_wire(), format!("{wire}\r\n"), "{reject:?}");
            // The basic and enhanced codes agree, and both follow temporary().
            let class = if reject.temporary() { 4 } else { 5 };
            assert_eq!(reply.code / 100, class, "{reject:?}");
            assert_eq!(
                reply.enhanced.map(|e| e[0]),
                Some(class as u8),
                "{reject:?}"
            );
        }
    }

    #[test]
    fn wire_forms() {
        for (reply, wire) in [
            (Reply::greeting("mx.test"), "220 mx.test ESMTP ready\r\n"),
            (Reply::ok("Ok"), "250 2.0.0 Ok\r\n"),
            (
                Reply::start_data(),
                "354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            (
                Reply::ehlo("mx.test", "client.test", 1000),
                "250-mx.test greets client.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
                 250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
            ),
            // Line breaks in the text cannot forge a second reply.
            (Reply::ok("a\r\n250 b"), "250 2.0.0 a250 b\r\n"),
        ] {
            assert_eq!(reply.to_wire(), wire);
        }
        assert!(Reply::bye("x").closes());
        assert!(Reject::Timeout.reply().closes());
        assert!(!Reply::ok("x").closes());
    }
}
