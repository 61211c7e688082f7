//! EXPUNGE, UID EXPUNGE (RFC 4315) and CLOSE.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::sequence::SequenceSet;

use super::reply;
use super::sequence;
use super::session::{Outcome, Session};

impl Session {
    /// Removes the `\Deleted` messages (only those in `uid_set` when given) and reports every
    /// removal as an untagged EXPUNGE, highest sequence number first.
    pub(super) async fn expunge(
        &mut self,
        tag: Tag<'static>,
        uid_set: Option<&SequenceSet>,
    ) -> Outcome {
        let store = self.ctx.store.clone();
        let selected = self.selected_writable()?;
        let only: Option<Vec<i64>> = match uid_set {
            Some(set) => Some(
                sequence::select(&selected.uids(), set, true)?
                    .into_iter()
                    .map(|i| selected.messages[i].uid)
                    .collect(),
            ),
            None => None,
        };
        if only.as_ref().is_none_or(|uids| !uids.is_empty()) {
            store.expunge(selected.folder.id, only.as_deref()).await?;
        }
        // The removals (and whatever else changed) reach the client through the usual diff.
        self.sync().await?;
        Ok(reply::tagged_ok(tag, None, "EXPUNGE completed"))
    }

    /// CLOSE: expunges silently unless the folder was opened read-only, then deselects.
    pub(super) async fn close(&mut self, tag: Tag<'static>) -> Outcome {
        let store = self.ctx.store.clone();
        let selected = self.selected_mut()?;
        if !selected.read_only {
            store.expunge(selected.folder.id, None).await?;
        }
        self.selected = None;
        Ok(reply::tagged_ok(tag, None, "CLOSE completed"))
    }
}
