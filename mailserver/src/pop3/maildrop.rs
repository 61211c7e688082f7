//! The TRANSACTION state (RFC 1939 section 5): the maildrop snapshot and the commands that
//! read it and mark messages for deletion.

use super::command::Command;
use super::reply;
use super::session::Action;
use crate::store::{Folder, MessageMeta};

/// The messages of the INBOX as they were at login, numbered from 1, with their DELE marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maildrop {
    folder_id: i64,
    uid_validity: i64,
    messages: Vec<MessageMeta>,
    deleted: Vec<bool>,
}

impl Maildrop {
    pub fn new(folder: &Folder, messages: Vec<MessageMeta>) -> Self {
        Self {
            folder_id: folder.id,
            uid_validity: folder.uid_validity,
            deleted: vec![false; messages.len()],
            messages,
        }
    }

    /// The message numbered `n` unless it is out of range or marked deleted.
    fn get(&self, n: u32) -> Result<&MessageMeta, Vec<u8>> {
        let index = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or_else(|| reply::err("no such message"))?;
        if self.deleted[index] {
            return Err(reply::err(&format!("message {n} already deleted")));
        }
        Ok(&self.messages[index])
    }

    /// Number and message of every message not marked deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, m)| (i + 1, m))
    }

    pub(super) fn totals(&self) -> (usize, i64) {
        self.live()
            .fold((0, 0), |(count, size), (_, m)| (count + 1, size + m.size))
    }

    /// Unique ids stable across sessions for as long as the folder's UIDVALIDITY holds.
    fn unique_id(&self, message: &MessageMeta) -> String {
        format!("{}.{}", self.uid_validity, message.uid)
    }
}

/// A command in the TRANSACTION state.
pub(super) fn transaction(drop: &mut Maildrop, command: Command) -> Action {
    let reply = match command {
        Command::Stat => {
            let (count, size) = drop.totals();
            reply::ok(&format!("{count} {size}"))
        }
        Command::List(None) => {
            let (count, size) = drop.totals();
            let lines = drop.live().map(|(n, m)| format!("{n} {}", m.size));
            reply::ok_lines(&format!("{count} messages ({size} octets)"), lines)
        }
        Command::List(Some(n)) => match drop.get(n) {
            Ok(m) => reply::ok(&format!("{n} {}", m.size)),
            Err(e) => e,
        },
        Command::Uidl(None) => {
            let lines: Vec<String> = drop
                .live()
                .map(|(n, m)| format!("{n} {}", drop.unique_id(m)))
                .collect();
            reply::ok_lines("unique-id listing follows", lines)
        }
        Command::Uidl(Some(n)) => match drop.get(n) {
            Ok(m) => reply::ok(&format!("{n} {}", drop.unique_id(m))),
            Err(e) => e,
        },
        Command::Retr(n) => match drop.get(n) {
            Ok(m) => {
                return Action::Retrieve {
                    message: m.clone(),
                    body_lines: None,
                };
            }
            Err(e) => e,
        },
        Command::Top { message, lines } => match drop.get(message) {
            Ok(m) => {
                return Action::Retrieve {
                    message: m.clone(),
                    body_lines: Some(lines),
                };
            }
            Err(e) => e,
        },
        Command::Dele(n) => match drop.get(n) {
            Ok(_) => {
                // `get` succeeded, so n - 1 is a valid index.
                drop.deleted[n as usize - 1] = true;
                reply::ok(&format!("message {n} deleted"))
            }
            Err(e) => e,
        },
        Command::Rset => {
            drop.deleted.fill(false);
            let (count, size) = drop.totals();
            reply::ok(&format!("maildrop has {count} messages ({size} octets)"))
        }
        Command::Noop => reply::ok(""),
        Command::Quit => {
            let uids: Vec<i64> = drop
                .messages
                .iter()
                .zip(&drop.deleted)
                .filter(|(_, deleted)| **deleted)
                .map(|(m, _)| m.uid)
                .collect();
            return Action::Update {
                folder_id: drop.folder_id,
                uids,
            };
        }
        Command::User(_) | Command::Pass(_) | Command::Auth { .. } => {
            reply::err("already logged in")
        }
        Command::Capa => super::session::capabilities(),
    };
    Action::Reply(reply)
}
