//! Inbound SMTP (RFC 5321): an ESMTP server that delivers to local mailboxes and relays for
//! no one.
//!
//! - [`session`]: the state machine. Bytes in, [`Action`]s out (replies, a recipient lookup, a
//!   delivery); no sockets, so tests drive it with byte scripts.
//! - [`envelope`]: MAIL and RCPT; [`data`]: the DATA receiver; [`trace`]: `Received` headers;
//!   [`reply`]: every code and enhanced code.
//! - [`connection`]: the adapter between the connection driver, the session and the store.
//!
//! - [`auth`]: AUTH on submission listeners (RFC 4954), through the one login service.
//!
//! BDAT and relaying answer `502` for now; the session keeps the hooks for them (one `match`
//! arm each), and the checks of the delivery pipeline belong between the end of DATA and
//! [`Action::Deliver`].

pub mod auth;
pub mod connection;
pub mod data;
pub mod envelope;
#[cfg(test)]
mod noise;
pub mod reply;
pub mod session;
pub mod spool;
pub mod trace;

use std::time::Duration;

pub use reply::{Reject, Reply};
pub use session::{Action, Delivery, Lookup, Security, Session};

use crate::context::Settings;

/// The limits of one SMTP session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted (the `SIZE` advertised), trace headers not counted.
    pub max_message_size: usize,
    /// Most accepted recipients of one transaction.
    pub max_recipients: usize,
    /// Longest command line, CRLF included. RFC 5321 says 512; extensions make lines longer.
    pub max_command_line: usize,
    /// Longest message line, CRLF included. RFC 5321 says 1000, but real mail breaks that, so
    /// this is a lenient bound against abuse, not the RFC figure.
    pub max_data_line: usize,
    /// Refused commands after which the session is closed.
    pub max_errors: usize,
    /// How long the server waits for the client's next bytes (RFC 5321 section 4.5.3.2).
    pub idle_timeout: Duration,
    /// How long one connection may last in all.
    pub session_timeout: Duration,
    /// A message larger than this goes to a temporary file instead of staying in memory.
    pub spool_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_settings(&Settings::default())
    }
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_message_size: settings.max_message_size,
            max_recipients: settings.max_recipients,
            max_command_line: 4096,
            max_data_line: 32 * 1024,
            max_errors: 20,
            idle_timeout: Duration::from_secs(5 * 60),
            session_timeout: Duration::from_secs(30 * 60),
            spool_threshold: 256 * 1024,
        }
    }
}
