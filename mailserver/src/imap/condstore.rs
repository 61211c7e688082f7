//! CONDSTORE and QRESYNC (RFC 7162): what the session has enabled, and the responses that
//! carry MODSEQs and VANISHED.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{FetchModifier, SelectParameter, StoreModifier};
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::flags_fetch;
use super::flags::flag_string;
use super::mailbox::wire_uid;
use super::reply::{self, CommandError};
use super::sequence::{self, Ranges};
use super::session::{Outcome, Session};
use crate::store::{FlagMode, MessageMeta};

impl Session {
    pub(super) fn condstore_enabled(&self) -> bool {
        self.enabled.has("CONDSTORE") || self.enabled.has("QRESYNC")
    }

    pub(super) fn qresync_enabled(&self) -> bool {
        self.enabled.has("QRESYNC")
    }

    /// SELECT / EXAMINE with RFC 7162 parameters: `HIGHESTMODSEQ` always, and for
    /// `(QRESYNC (validity modseq [known-uids]))` the UIDs expunged since (`VANISHED
    /// (EARLIER)`) and the messages changed since, as FETCH.
    pub(super) async fn select_with(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        parameters: Vec<SelectParameter>,
    ) -> Outcome {
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => {
                    self.enabled.insert("CONDSTORE".to_string());
                }
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.qresync_enabled() {
                        self.selected = None;
                        return Err(CommandError::bad("ENABLE QRESYNC first"));
                    }
                    resync = Some((uid_validity, mod_sequence_value, known_uids));
                }
            }
        }
        let status = self.select(tag, mailbox, read_only).await?;
        let Some(selected) = self.selected.as_mut() else {
            return Ok(status);
        };
        // Every row the view holds is at or below this (writers of a folder commit in MODSEQ
        // order under its row lock), so the view is complete up to it.
        let highest = selected
            .messages
            .iter()
            .map(|m| m.modseq)
            .max()
            .unwrap_or(0)
            .max(selected.folder.highest_modseq);
        selected.folder.highest_modseq = highest;
        let validity = selected.folder.uid_validity;
        self.push_status(reply::untagged_ok(
            Some(Code::HighestModSeq(wire_modseq(highest))),
            "Highest",
        ));
        if let Some((uid_validity, since, known)) = resync
            && i64::from(uid_validity.get()) == validity
        {
            let since = i64::try_from(since.get()).unwrap_or(i64::MAX);
            self.resync(since, known.as_ref()).await?;
        }
        Ok(status)
    }

    /// The QRESYNC answer for a client that last saw `since`.
    async fn resync(
        &mut self,
        since: i64,
        known: Option<&SequenceSet>,
    ) -> Result<(), CommandError> {
        let Some(selected) = self.selected.as_ref() else {
            return Ok(());
        };
        let folder_id = selected.folder.id;
        let Some(changes) = self.ctx.store.changes_since(folder_id, since).await? else {
            return Ok(());
        };
        let known = known.map(|set| Ranges::new(set, u32::MAX)).transpose()?;
        let in_known = |uid: i64| known.as_ref().is_none_or(|k| k.contains(wire_uid(uid)));
        let vanished_uids: Vec<i64> = if changes.exact {
            changes
                .expunged
                .into_iter()
                .filter(|&u| in_known(u))
                .collect()
        } else {
            // The record was pruned past `since`: every UID below UIDNEXT not here now (the
            // RFC allows UIDs the client never knew; a full answer, never a wrong one).
            let present: Vec<i64> = selected.messages.iter().map(|m| m.uid).collect();
            gaps(&present, selected.folder.uid_next.min(changes.uid_next))
                .into_iter()
                .filter(|&u| in_known(u))
                .collect()
        };
        if !vanished_uids.is_empty() {
            self.push(vanished(&vanished_uids, true));
        }
        let Some(selected) = self.selected.as_ref() else {
            return Ok(());
        };
        let updates: Vec<Data<'static>> = selected
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.modseq > since)
            .map(|(i, m)| flags_update(i + 1, m, true))
            .collect();
        for data in updates {
            self.push(data);
        }
        Ok(())
    }

    /// FETCH with `CHANGEDSINCE` (and, for UID FETCH under QRESYNC, `VANISHED`).
    pub(super) async fn fetch_with(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        what: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: Vec<FetchModifier>,
    ) -> Outcome {
        let mut names: Vec<MessageDataItemName<'static>> = match what {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().into_iter().map(|n| n.into_static()).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        if names.contains(&MessageDataItemName::ModSeq) {
            // FETCH MODSEQ switches CONDSTORE on (RFC 7162 §3.1).
            self.enabled.insert("CONDSTORE".to_string());
        }
        let mut changed_since = None;
        let mut with_vanished = false;
        for modifier in &modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => {
                    changed_since = Some(i64::try_from(n.get()).unwrap_or(i64::MAX));
                }
                FetchModifier::Vanished => with_vanished = true,
            }
        }
        let Some(since) = changed_since else {
            if with_vanished {
                return Err(CommandError::bad("VANISHED needs CHANGEDSINCE"));
            }
            return self
                .fetch(
                    tag,
                    set,
                    MacroOrMessageDataItemNames::MessageDataItemNames(names),
                    uid,
                )
                .await;
        };
        if with_vanished && !(uid && self.qresync_enabled()) {
            return Err(CommandError::bad(
                "VANISHED needs UID FETCH and ENABLE QRESYNC",
            ));
        }
        self.enabled.insert("CONDSTORE".to_string());
        if !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        let selected = self.selected_mut()?;
        let folder_id = selected.folder.id;
        let positions = sequence::select(&selected.uids(), set, uid)?;
        let keep: Vec<i64> = positions
            .iter()
            .filter(|&&i| selected.messages[i].modseq > since)
            .map(|&i| {
                if uid {
                    selected.messages[i].uid
                } else {
                    i as i64 + 1
                }
            })
            .collect();
        if with_vanished {
            let wanted = Ranges::new(set, u32::MAX)?;
            if let Some(changes) = self.ctx.store.changes_since(folder_id, since).await? {
                let gone: Vec<i64> = changes
                    .expunged
                    .into_iter()
                    .filter(|&u| wanted.contains(wire_uid(u)))
                    .collect();
                if !gone.is_empty() {
                    self.push(vanished(&gone, true));
                }
            }
        }
        match uid_sequence_set(&keep) {
            Some(subset) => {
                self.fetch(
                    tag,
                    &subset,
                    MacroOrMessageDataItemNames::MessageDataItemNames(names),
                    uid,
                )
                .await
            }
            None => Ok(reply::tagged_ok(tag, None, "FETCH completed")),
        }
    }
}

impl Session {
    /// STORE once CONDSTORE is on (or with `UNCHANGEDSINCE`): the FETCH answers carry the new
    /// MODSEQ, and messages changed after `UNCHANGEDSINCE` are left alone and named in
    /// `[MODIFIED …]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store_with(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        uid: bool,
        modifiers: Vec<StoreModifier>,
    ) -> Outcome {
        let unchanged_since = modifiers
            .iter()
            .map(|StoreModifier::UnchangedSince(n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .next();
        if unchanged_since.is_none() && !self.condstore_enabled() {
            return self.store(tag, set, kind, response, flags, uid).await;
        }
        self.enabled.insert("CONDSTORE".to_string());
        let store = self.ctx.store.clone();
        let selected = self.selected_writable()?;
        let positions = sequence::select(&selected.uids(), set, uid)?;
        let uids: Vec<i64> = positions
            .iter()
            .map(|&i| selected.messages[i].uid)
            .collect();
        let names: Vec<String> = flags.iter().filter_map(flag_string).collect();
        let mode = match kind {
            StoreType::Replace => FlagMode::Replace,
            StoreType::Add => FlagMode::Add,
            StoreType::Remove => FlagMode::Remove,
        };
        let (changed, modified) = if uids.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            store
                .store_flags_since(selected.folder.id, &uids, mode, &names, unchanged_since)
                .await?
        };
        let mut updates = Vec::new();
        for (uid_value, new_flags, modseq) in changed {
            let Some(seq) = selected.seq_of(uid_value) else {
                continue;
            };
            let message = &mut selected.messages[seq - 1];
            message.flags = new_flags;
            message.modseq = modseq;
            // .SILENT still reports the MODSEQ (RFC 7162 §3.1.3).
            if response == StoreResponse::Answer {
                updates.push(flags_update(seq, message, true));
            } else {
                let mut items = vec![MessageDataItem::ModSeq(wire_modseq(modseq))];
                if uid {
                    items.insert(
                        0,
                        MessageDataItem::Uid(
                            NonZeroU32::new(wire_uid(uid_value)).unwrap_or(NonZeroU32::MIN),
                        ),
                    );
                }
                if let (Ok(items), Some(seq)) = (
                    Vec1::try_from(items),
                    NonZeroU32::new(u32::try_from(seq).unwrap_or(u32::MAX)),
                ) {
                    updates.push(Data::Fetch { seq, items });
                }
            }
        }
        // `[MODIFIED]` names UIDs for UID STORE and sequence numbers otherwise.
        let refused: Vec<i64> = if uid {
            modified
        } else {
            modified
                .iter()
                .filter_map(|&u| selected.seq_of(u).map(|s| s as i64))
                .collect()
        };
        for data in updates {
            self.push(data);
        }
        let code = uid_sequence_set(&refused).map(Code::Modified);
        let text = if code.is_some() {
            "Conditional STORE failed"
        } else {
            "STORE completed"
        };
        Ok(reply::tagged_ok(tag, code, text))
    }
}

/// UIDs in `1..uid_next` missing from ascending `present`.
fn gaps(present: &[i64], uid_next: i64) -> Vec<i64> {
    // Bounded by the folder's UID space the client can name; a folder that saw billions of
    // UIDs answers with ranges that `uid_sequence_set` compacts.
    let mut out = Vec::new();
    let mut next = 1;
    for &uid in present.iter().chain(std::iter::once(&uid_next)) {
        while next < uid && out.len() < 1_000_000 {
            out.push(next);
            next += 1;
        }
        next = uid + 1;
    }
    out
}

/// A MODSEQ as IMAP carries it (never 0).
pub fn wire_modseq(modseq: i64) -> NonZeroU64 {
    NonZeroU64::new(u64::try_from(modseq).unwrap_or(1)).unwrap_or(NonZeroU64::MIN)
}

/// Ascending UIDs as a compact set (`1:3,7`); `None` when empty.
pub fn uid_sequence_set(uids: &[i64]) -> Option<SequenceSet> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &uid in uids {
        let uid = wire_uid(uid);
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => ranges.push((uid, uid)),
        }
    }
    let value = |n: u32| NonZeroU32::new(n).map(SeqOrUid::Value);
    let sequences: Vec<Sequence> = ranges
        .into_iter()
        .filter_map(|(a, b)| {
            if a == b {
                Some(Sequence::Single(value(a)?))
            } else {
                Some(Sequence::Range(value(a)?, value(b)?))
            }
        })
        .collect();
    Vec1::try_from(sequences).ok().map(SequenceSet)
}

/// `* VANISHED [(EARLIER)] uids` for ascending `uids`.
pub fn vanished(uids: &[i64], earlier: bool) -> Data<'static> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let known_uids = uid_sequence_set(&sorted).unwrap_or_else(|| {
        SequenceSet(Vec1::from(Sequence::Single(SeqOrUid::Value(
            NonZeroU32::MIN,
        ))))
    });
    Data::Vanished {
        earlier,
        known_uids,
    }
}

/// An unsolicited `FETCH (FLAGS …)`; with CONDSTORE enabled it carries UID and MODSEQ too
/// (RFC 7162 §3.2.4, and QRESYNC needs the UID).
pub fn flags_update(seq: usize, message: &MessageMeta, condstore: bool) -> Data<'static> {
    let mut data = flags_fetch(seq, message, condstore);
    if condstore && let Data::Fetch { items, .. } = &mut data {
        let mut list: Vec<MessageDataItem<'static>> = items.clone().into_inner();
        list.push(MessageDataItem::ModSeq(wire_modseq(message.modseq)));
        if let Ok(all) = Vec1::try_from(list) {
            *items = all;
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::response::Response;

    fn wire(data: Data<'static>) -> String {
        let bytes = ResponseCodec::default()
            .encode(&Response::Data(data))
            .dump();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn vanished_lists_compact_ranges() {
        assert_eq!(
            wire(vanished(&[7, 1, 2, 3, 9, 10], true)),
            "* VANISHED (EARLIER) 1:3,7,9:10\r\n"
        );
        assert_eq!(wire(vanished(&[5], false)), "* VANISHED 5\r\n");
    }
}
