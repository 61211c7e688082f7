//! APPEND, COPY / UID COPY (RFC 3501, RFC 4315 UIDPLUS) and MOVE / UID MOVE (RFC 6851).

use std::num::NonZeroU32;

use chrono::Utc;
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;

use super::flags::flag_string;
use super::mailbox::{mailbox_name, wire_uid};
use super::reply::{self, CommandError};
use super::sequence;
use super::session::{Outcome, Session};
use crate::store::{Folder, StoreError};

/// UIDs as a UIDPLUS set, consecutive runs written as ranges (`3:5,9`), order kept.
pub fn uid_set(uids: &[i64]) -> Option<UidSet> {
    let mut elements: Vec<UidElement> = Vec::new();
    for &uid in uids {
        let uid = NonZeroU32::new(wire_uid(uid))?;
        let extends = match elements.last() {
            Some(UidElement::Single(a) | UidElement::Range(_, a)) => {
                a.get().checked_add(1) == Some(uid.get())
            }
            None => false,
        };
        match elements.last_mut() {
            Some(last) if extends => {
                *last = match *last {
                    UidElement::Single(a) | UidElement::Range(a, _) => UidElement::Range(a, uid),
                };
            }
            _ => elements.push(UidElement::Single(uid)),
        }
    }
    Vec1::try_from(elements).ok().map(UidSet)
}

/// The `[COPYUID validity src dst]` code of a copy or move (none when nothing moved).
fn copyuid(folder: &Folder, pairs: &[(i64, i64)]) -> Option<Code<'static>> {
    let (src, dst): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
    Some(Code::CopyUid {
        uid_validity: NonZeroU32::new(wire_uid(folder.uid_validity))?,
        source: uid_set(&src)?,
        destination: uid_set(&dst)?,
    })
}

/// Store failures the client can act on; the rest stay `NO [UNAVAILABLE]`.
fn client_error(err: StoreError) -> CommandError {
    match err {
        StoreError::QuotaExceeded { .. } => {
            CommandError::no(Some("OVERQUOTA"), "The mailbox is over its quota")
        }
        StoreError::NoSuchFolder { .. } => CommandError::no(Some("TRYCREATE"), "No such folder"),
        other => CommandError::Store(other),
    }
}

impl Session {
    /// The target folder of APPEND / COPY / MOVE, in the session's own mailbox only;
    /// a missing one is `NO [TRYCREATE]` (RFC 3501 §6.3.11).
    async fn target_folder(&self, mailbox: &Mailbox<'_>) -> Result<Folder, CommandError> {
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        self.ctx
            .store
            .folder(mailbox_id, &name)
            .await?
            .ok_or_else(|| CommandError::no(Some("TRYCREATE"), "No such folder"))
    }

    /// Whether `folder` is the selected one (its changes are then reported right away).
    fn is_selected(&self, folder: &Folder) -> bool {
        self.selected
            .as_ref()
            .is_some_and(|s| s.folder.id == folder.id)
    }

    pub(super) async fn append(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<&DateTime>,
        message: &LiteralOrLiteral8<'_>,
    ) -> Outcome {
        let folder = self.target_folder(mailbox).await?;
        let raw: &[u8] = match message {
            LiteralOrLiteral8::Literal(literal) => literal.data(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.as_ref(),
        };
        let flags: Vec<String> = flags.iter().filter_map(flag_string).collect();
        let date = date.map(|d| d.as_ref().with_timezone(&Utc));
        let (validity, uid) = self
            .ctx
            .store
            .append(folder.mailbox_id, folder.id, raw, &flags, date)
            .await
            .map_err(client_error)?;
        if self.is_selected(&folder) {
            self.sync().await?;
        }
        let code = NonZeroU32::new(wire_uid(validity))
            .zip(NonZeroU32::new(wire_uid(uid)))
            .map(|(uid_validity, uid)| Code::AppendUid { uid_validity, uid });
        Ok(reply::tagged_ok(tag, code, "APPEND completed"))
    }

    /// COPY (or MOVE when `remove`): `[COPYUID]` in the tagged OK for COPY; for MOVE in an
    /// untagged OK before the EXPUNGEs (RFC 6851 §4.3), highest sequence number first.
    pub(super) async fn copy_or_move(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        remove: bool,
    ) -> Outcome {
        let target = self.target_folder(mailbox).await?;
        let store = self.ctx.store.clone();
        let selected = if remove {
            self.selected_writable()?
        } else {
            self.selected_mut()?
        };
        let uids: Vec<i64> = sequence::select(&selected.uids(), set, uid)?
            .into_iter()
            .map(|i| selected.messages[i].uid)
            .collect();
        let source = selected.folder.id;
        let pairs = if remove {
            store.move_messages(source, target.id, &uids).await
        } else {
            store.copy_messages(source, target.id, &uids).await
        }
        .map_err(client_error)?;
        let code = copyuid(&target, &pairs);
        if !remove {
            if self.is_selected(&target) {
                self.sync().await?;
            }
            return Ok(reply::tagged_ok(tag, code, "COPY completed"));
        }
        if code.is_some() {
            self.push_status(reply::untagged_ok(code, "Moved"));
        }
        let mut expunged = Vec::new();
        if let Some(selected) = self.selected.as_mut() {
            // Pairs are ascending, so walking them backwards reports the highest first and
            // every number is right when the client reads it; the view loses them in one pass.
            for (src, _) in pairs.iter().rev() {
                if let Some(seq) = selected.seq_of(*src)
                    && let Some(seq) = NonZeroU32::new(u32::try_from(seq).unwrap_or(u32::MAX))
                {
                    expunged.push(Data::Expunge(seq));
                }
            }
            selected
                .messages
                .retain(|m| pairs.binary_search_by_key(&m.uid, |(src, _)| *src).is_err());
        }
        for data in expunged {
            self.push(data);
        }
        if self.is_selected(&target) {
            self.sync().await?;
        }
        Ok(reply::tagged_ok(tag, None, "MOVE completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        for (uids, want) in [
            (&[][..], None),
            (&[7][..], Some("7")),
            (&[3, 4, 5, 9][..], Some("3:5,9")),
            (&[1, 3, 4, 10, 11, 12][..], Some("1,3:4,10:12")),
            (&[0][..], None),
        ] {
            let got = uid_set(uids).map(|set| {
                set.0
                    .as_ref()
                    .iter()
                    .map(|e| match e {
                        UidElement::Single(a) => a.to_string(),
                        UidElement::Range(a, b) => format!("{a}:{b}"),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            });
            assert_eq!(got.as_deref(), want, "{uids:?}");
        }
    }
}
