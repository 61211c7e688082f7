//! Untagged updates of the selected folder (EXISTS, EXPUNGE, FETCH FLAGS) from the change
//! feed: what changed is read by MODSEQ ([`Store::changes_since`](crate::store::Store)), never
//! by reloading the folder, and diffed against the session's view so a session's own changes
//! are not reported twice.
//!
//! RFC 3501 §7.4.1: EXPUNGE is never sent after FETCH, STORE or SEARCH (their sequence numbers
//! would shift under the client); those commands get EXISTS and FETCH only, and the expunges
//! wait for the next command that may carry them.

use std::num::NonZeroU32;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::response::Data;
use tracing::debug;

use super::reply::CommandError;
use super::session::Session;

/// Whether untagged EXPUNGE may follow `body` (RFC 3501 §7.4.1; the UID forms may).
pub(super) fn may_expunge(body: &CommandBody<'_>) -> bool {
    !matches!(
        body,
        CommandBody::Fetch { uid: false, .. }
            | CommandBody::Store { uid: false, .. }
            | CommandBody::Search { uid: false, .. }
    )
}

impl Session {
    /// Keeps the feed's watch on the selected folder (and only on it).
    pub(super) fn rewatch(&mut self) {
        let folder = self.selected.as_ref().map(|s| s.folder.id);
        if self.watch.as_ref().map(|(id, _)| *id) == folder {
            return;
        }
        self.watch = folder.map(|id| (id, self.ctx.store.feed().watch(id, &self.signal)));
    }

    /// After a command: the updates the feed announced, if any (cheap when nothing changed).
    pub(super) async fn updates_after_command(&mut self, expunge_ok: bool) {
        self.rewatch();
        if self.selected.is_none() || !self.signal.take_changed() {
            return;
        }
        if let Err(err) = self.sync_view(expunge_ok).await {
            // The updates come with a later command; the command itself went through.
            debug!(error = ?err, "imap: updates after a command failed");
            self.signal
                .changed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Queues what changed in the selected folder since the view was last brought up to date;
    /// without `expunge_ok`, expunged messages stay in the view (and are reported later).
    pub(super) async fn sync_view(&mut self, expunge_ok: bool) -> Result<(), CommandError> {
        self.rewatch();
        self.signal.take_changed();
        let Some(selected) = self.selected.as_ref() else {
            return Ok(());
        };
        let folder_id = selected.folder.id;
        let since = selected.folder.highest_modseq;
        let Some(changes) = self.ctx.store.changes_since(folder_id, since).await? else {
            return Ok(());
        };
        let gone: Vec<i64> = if changes.exact {
            changes.expunged
        } else {
            // The record was pruned past `since`: compare UIDs instead.
            let now = self.ctx.store.uids(folder_id).await?;
            selected
                .messages
                .iter()
                .map(|m| m.uid)
                .filter(|uid| now.binary_search(uid).is_err())
                .collect()
        };
        let vanished_view = self.qresync_enabled();
        let condstore = self.condstore_enabled();
        let Some(selected) = self.selected.as_mut() else {
            return Ok(());
        };
        let mut updates = Vec::new();
        let mut deferred = false;
        let mut vanished = Vec::new();
        // Highest sequence number first: each number is right when the client reads it.
        for uid in gone.iter().rev() {
            let Some(seq) = selected.seq_of(*uid) else {
                continue;
            };
            if !expunge_ok {
                deferred = true;
                continue;
            }
            selected.messages.remove(seq - 1);
            if vanished_view {
                vanished.push(*uid);
            } else if let Some(seq) = NonZeroU32::new(u32::try_from(seq).unwrap_or(u32::MAX)) {
                updates.push(Data::Expunge(seq));
            }
        }
        if !vanished.is_empty() {
            updates.push(super::condstore::vanished(&vanished, false));
        }
        let before = selected.messages.len();
        let last_uid = selected.messages.last().map_or(0, |m| m.uid);
        let mut flag_changes = Vec::new();
        for message in changes.changed {
            if message.uid > last_uid {
                selected.messages.push(message);
            } else if let Some(seq) = selected.seq_of(message.uid) {
                let known = &mut selected.messages[seq - 1];
                let flags_differ = known.flags != message.flags;
                let modseq_differs = known.modseq != message.modseq;
                *known = message;
                if flags_differ || (modseq_differs && condstore) {
                    flag_changes.push(seq);
                }
            }
        }
        if selected.messages.len() > before {
            updates.push(Data::Exists(
                u32::try_from(selected.messages.len()).unwrap_or(u32::MAX),
            ));
        }
        for seq in flag_changes {
            let message = &selected.messages[seq - 1];
            updates.push(super::condstore::flags_update(seq, message, condstore));
        }
        if deferred {
            // Read again from the same MODSEQ at the next point EXPUNGE may be sent.
            self.signal
                .changed
                .store(true, std::sync::atomic::Ordering::Release);
        } else {
            selected.folder.highest_modseq = changes.highest_modseq;
            selected.folder.uid_next = changes.uid_next;
        }
        for data in updates {
            self.push(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::command::Command;

    fn may_expunge_after(line: &str) -> bool {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        let input = format!("a {line}\r\n");
        let (_, command): (_, Command) = CommandCodec::default()
            .decode(input.as_bytes())
            .expect("valid command");
        may_expunge(&command.body)
    }

    #[test]
    fn expunge_is_held_back_after_fetch_store_search() {
        assert!(!may_expunge_after("FETCH 1 FLAGS"));
        assert!(!may_expunge_after("STORE 1 +FLAGS (\\Seen)"));
        assert!(!may_expunge_after("SEARCH ALL"));
        assert!(may_expunge_after("UID FETCH 1 FLAGS"));
        assert!(may_expunge_after("NOOP"));
        assert!(may_expunge_after("CHECK"));
    }
}
