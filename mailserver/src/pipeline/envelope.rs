//! The envelope of an incoming message: who sent it from where, and to whom, with the ESMTP
//! parameters the outbound queue needs later (DSN, REQUIRETLS).

use std::net::IpAddr;

use crate::store::Recipient;

/// Everything SMTP learned about a transaction besides the message text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub client_ip: IpAddr,
    /// The EHLO/HELO name.
    pub helo: String,
    /// TLS was active for the transaction.
    pub tls: bool,
    /// Received on a submission listener.
    pub submission: bool,
    /// The account the session authenticated as.
    pub authenticated: Option<String>,
    /// MAIL FROM, `""` for the null sender.
    pub sender: String,
    pub params: MailParams,
    /// The accepted recipients, in RCPT order.
    pub recipients: Vec<Rcpt>,
}

/// MAIL FROM's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`, 0 when not given.
    pub size: usize,
    pub body: BodyType,
    pub smtputf8: bool,
    /// RFC 3461 `RET=`.
    pub ret: Option<Ret>,
    /// RFC 3461 `ENVID=` (xtext decoded).
    pub envid: Option<String>,
    /// RFC 8689: the message must travel over verified TLS only.
    pub requiretls: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// RFC 3461 `RET=`: what a DSN returns of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// RFC 3461 `NOTIFY=`: when a DSN is wanted (`NEVER` is all false).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// One recipient's RFC 3461 parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dsn {
    /// `None`: no NOTIFY given (the default, failure and perhaps delay, applies).
    pub notify: Option<Notify>,
    /// `ORCPT=`: the address type and the original recipient (xtext decoded).
    pub orcpt: Option<(String, String)>,
}

/// An accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rcpt {
    /// The address as RCPT gave it.
    pub address: String,
    pub dsn: Dsn,
    pub target: Target,
}

/// Where a recipient goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A mailbox here.
    Local(Recipient),
    /// A remote address, relayed for an authenticated session.
    Relay,
    /// An address of ours forwarding to these remote addresses (sender rewritten by SRS).
    Forward(Vec<String>),
}

impl Envelope {
    /// A plain MX envelope from `sender` (tests).
    #[cfg(test)]
    pub fn test(sender: &str) -> Self {
        Self {
            client_ip: [192, 0, 2, 1].into(),
            helo: "c.test".into(),
            tls: false,
            submission: false,
            authenticated: None,
            sender: sender.into(),
            params: MailParams::default(),
            recipients: Vec::new(),
        }
    }

    /// The mailboxes here among the recipients.
    pub fn local_recipients(&self) -> Vec<Recipient> {
        self.recipients
            .iter()
            .filter_map(|r| match &r.target {
                Target::Local(recipient) => Some(recipient.clone()),
                Target::Relay | Target::Forward(_) => None,
            })
            .collect()
    }
}
