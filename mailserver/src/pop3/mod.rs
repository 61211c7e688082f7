//! POP3 (RFC 1939) with CAPA (RFC 2449), response codes (RFC 3206) and AUTH PLAIN (RFC 5034).
//! The maildrop is the mailbox's INBOX, locked and snapshotted at login (one session per mailbox
//! across all processes, `[IN-USE]` for a second); messages marked with DELE are removed only
//! when the client says QUIT; RETR and TOP stream the body from the blob store.

mod command;
pub mod connection;
mod maildrop;
#[cfg(test)]
mod noise;
pub(crate) mod reply;
mod retrieve;
pub(crate) mod session;
pub(crate) mod stuffing;
