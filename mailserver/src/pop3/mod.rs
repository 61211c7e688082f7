//! POP3 (RFC 1939) with CAPA (RFC 2449), response codes (RFC 3206) and AUTH PLAIN (RFC 5034).
//! The maildrop is the mailbox's INBOX, snapshotted at login; messages marked with DELE are
//! removed only when the client says QUIT.

mod command;
pub mod connection;
mod maildrop;
#[cfg(test)]
mod noise;
pub(crate) mod reply;
pub(crate) mod session;
