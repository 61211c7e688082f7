//! FETCH and UID FETCH.

use std::num::{NonZeroU32, NonZeroU64};

use chrono::FixedOffset;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_codec::imap_types::response::{Data, Status};
use imap_codec::imap_types::sequence::SequenceSet;

use super::binary;
use super::flags::{flags_to_wire, has_flag};
use super::mailbox::wire_uid;
use super::mime::{self, PartRef};
use super::reply::{self, CommandError};
use super::sequence;
use super::session::{Outcome, Session};
use super::structure::{self, literal};
use crate::store::{FlagMode, MessageMeta};

/// Most messages one batch of a FETCH answers before the connection writes it out.
const BATCH_MESSAGES: usize = 64;
/// Body bytes after which a batch ends (a larger message still goes out alone).
const BATCH_BYTES: usize = 1 << 20;

/// A FETCH being answered: the messages left, the items asked, and its final status.
pub(super) struct FetchJob {
    tag: Tag<'static>,
    names: Vec<MessageDataItemName<'static>>,
    positions: std::vec::IntoIter<usize>,
    /// UIDs this FETCH marked `\Seen` (ascending): their FLAGS go out too.
    flags_changed: Vec<i64>,
    load: bool,
    pub(super) status: Status<'static>,
}

impl FetchJob {
    pub(super) fn tag(&self) -> Tag<'static> {
        self.tag.clone()
    }
}

fn seq_number(seq: usize) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(seq).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

fn uid_item(message: &MessageMeta) -> MessageDataItem<'static> {
    MessageDataItem::Uid(NonZeroU32::new(wire_uid(message.uid)).unwrap_or(NonZeroU32::MIN))
}

/// `* n FETCH (FLAGS (...))`, with the UID when the command was a UID command.
pub fn flags_fetch(seq: usize, message: &MessageMeta, with_uid: bool) -> Data<'static> {
    let mut items = vec![MessageDataItem::Flags(flags_to_wire(&message.flags))];
    if with_uid {
        items.push(uid_item(message));
    }
    Data::Fetch {
        seq: seq_number(seq),
        items: Vec1::try_from(items).unwrap_or_else(|_| Vec1::from(uid_item(message))),
    }
}

/// INTERNALDATE in UTC, whole seconds (IMAP carries no fractions).
fn internal_date(message: &MessageMeta) -> Option<DateTime> {
    let utc = FixedOffset::east_opt(0)?;
    let whole = chrono::DateTime::from_timestamp(message.internal_date.timestamp(), 0)?;
    DateTime::try_from(whole.with_timezone(&utc)).ok()
}

/// Whether an item is answered from the metadata alone.
fn needs_body(name: &MessageDataItemName<'_>) -> bool {
    !matches!(
        name,
        MessageDataItemName::Flags
            | MessageDataItemName::Uid
            | MessageDataItemName::Rfc822Size
            | MessageDataItemName::InternalDate
            | MessageDataItemName::ModSeq
    )
}

/// Whether fetching the item marks the message `\Seen` (RFC 3501 §6.4.5).
fn sets_seen(name: &MessageDataItemName<'_>) -> bool {
    matches!(
        name,
        MessageDataItemName::BodyExt { peek: false, .. }
            | MessageDataItemName::Binary { peek: false, .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Text
    )
}

/// The FETCH items of one message, in the order asked.
pub fn items(
    names: &[MessageDataItemName<'static>],
    message: &MessageMeta,
    raw: Option<&[u8]>,
) -> Vec<MessageDataItem<'static>> {
    let raw = raw.unwrap_or_default();
    let parsed = if names.iter().any(needs_body) {
        mime::parse(raw)
    } else {
        None
    };
    let parsed = parsed.as_ref();
    let message_of = parsed.map(|p| &**p);
    let mut out = Vec::new();
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => MessageDataItem::Flags(flags_to_wire(&message.flags)),
            MessageDataItemName::Uid => uid_item(message),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(message.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::InternalDate => match internal_date(message) {
                Some(date) => MessageDataItem::InternalDate(date),
                None => continue,
            },
            MessageDataItemName::ModSeq => {
                match u64::try_from(message.modseq).ok().and_then(NonZeroU64::new) {
                    Some(modseq) => MessageDataItem::ModSeq(modseq),
                    None => continue,
                }
            }
            MessageDataItemName::Envelope => MessageDataItem::Envelope(match parsed {
                Some(msg) => structure::envelope(msg),
                None => structure::empty_envelope(),
            }),
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                let extended = *name == MessageDataItemName::BodyStructure;
                let body = match parsed {
                    Some(msg) if msg.is_opaque() => {
                        structure::opaque_structure(PartRef::root(msg).body_bytes(), extended)
                    }
                    Some(msg) => structure::structure(PartRef::root(msg), extended),
                    None => structure::plain_structure(raw),
                };
                if extended {
                    MessageDataItem::BodyStructure(body)
                } else {
                    MessageDataItem::Body(body)
                }
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let bytes = mime::section_bytes(raw, message_of, section.as_ref());
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|(origin, _)| origin),
                    data: literal(mime::partial(bytes, *partial)),
                }
            }
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(literal(raw.to_vec())),
            MessageDataItemName::Rfc822Header => {
                MessageDataItem::Rfc822Header(literal(mime::section_bytes(
                    raw,
                    message_of,
                    Some(&imap_codec::imap_types::fetch::Section::Header(None)),
                )))
            }
            MessageDataItemName::Rfc822Text => {
                MessageDataItem::Rfc822Text(literal(mime::section_bytes(
                    raw,
                    message_of,
                    Some(&imap_codec::imap_types::fetch::Section::Text(None)),
                )))
            }
            MessageDataItemName::Binary {
                section, partial, ..
            } => match binary::decoded(raw, message_of, section) {
                Some(bytes) => MessageDataItem::Binary {
                    section: section.clone(),
                    value: binary::value(mime::partial(bytes, *partial)),
                },
                None => continue,
            },
            MessageDataItemName::BinarySize { section } => {
                match binary::decoded(raw, message_of, section) {
                    Some(bytes) => MessageDataItem::BinarySize {
                        section: section.clone(),
                        size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                    },
                    None => continue,
                }
            }
        };
        out.push(item);
    }
    out
}

impl Session {
    pub(super) async fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        what: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Outcome {
        let mut names: Vec<MessageDataItemName<'static>> = match what {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().into_iter().map(|n| n.into_static()).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        // UID FETCH always reports the UID (RFC 3501 §6.4.8).
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.push(MessageDataItemName::Uid);
        }
        let store = self.ctx.store.clone();
        let selected = self.selected_mut()?;
        let positions = sequence::select(&selected.uids(), set, uid)?;

        // Mark unseen messages \Seen first, so the FLAGS sent below are the new ones.
        let mut flags_changed = Vec::new();
        if !selected.read_only && names.iter().any(sets_seen) {
            let unseen: Vec<i64> = positions
                .iter()
                .map(|&i| &selected.messages[i])
                .filter(|m| !has_flag(&m.flags, "\\Seen"))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let changed = store
                    .store_flags(
                        selected.folder.id,
                        &unseen,
                        FlagMode::Add,
                        &["\\Seen".to_string()],
                    )
                    .await?;
                for (uid_value, flags) in changed {
                    if let Some(seq) = selected.seq_of(uid_value) {
                        selected.messages[seq - 1].flags = flags;
                        flags_changed.push(uid_value);
                    }
                }
            }
        }

        // The rows come back in UID order: membership below is a binary search.
        flags_changed.sort_unstable();
        self.fetching = Some(FetchJob {
            tag: tag.clone(),
            load: names.iter().any(needs_body),
            names,
            positions: positions.into_iter(),
            flags_changed,
            status: reply::tagged_ok(tag.clone(), None, "FETCH completed"),
        });
        // `command` writes the first batch; the final status goes out after the last one.
        Ok(reply::tagged_ok(tag, None, "FETCH completed"))
    }

    /// Answers the next batch of a FETCH in progress; `Ok(true)` while messages are left.
    pub(super) async fn fetch_batch(&mut self, job: &mut FetchJob) -> Result<bool, CommandError> {
        let store = self.ctx.store.clone();
        let (mut sent, mut bytes) = (0, 0);
        while sent < BATCH_MESSAGES && bytes < BATCH_BYTES {
            let Some(i) = job.positions.next() else {
                return Ok(false);
            };
            let Some(message) = self.selected_mut()?.messages.get(i).cloned() else {
                continue;
            };
            let mut names = job.names.clone();
            if job.flags_changed.binary_search(&message.uid).is_ok()
                && !names.contains(&MessageDataItemName::Flags)
            {
                names.push(MessageDataItemName::Flags);
            }
            let items = if job.load {
                // One body in memory at a time; parsing it runs off the async workers.
                let raw = store.read_body(&message).await?;
                bytes += raw.len();
                tokio::task::spawn_blocking(move || items(&names, &message, Some(&raw)))
                    .await
                    .map_err(|_| CommandError::no(Some("SERVERBUG"), "Fetch failed"))?
            } else {
                items(&names, &message, None)
            };
            if let Ok(items) = Vec1::try_from(items) {
                self.push(Data::Fetch {
                    seq: seq_number(i + 1),
                    items,
                });
            }
            sent += 1;
        }
        Ok(job.positions.len() > 0)
    }
}

#[cfg(test)]
mod tests {
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::response::Response;

    use super::*;
    use crate::auth::Account;
    use crate::imap::mailbox::Selected;
    use crate::imap::session::tests::offline_context;
    use crate::store::Folder;

    fn meta(uid: i64) -> MessageMeta {
        MessageMeta {
            id: uid,
            folder_id: 1,
            uid,
            modseq: 1,
            size: 10,
            internal_date: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            flags: Vec::new(),
            bucket: "b".into(),
            blob_key: "k".into(),
        }
    }

    /// A session with a folder of `count` messages selected; its store is unreachable, so
    /// only metadata items can be fetched.
    fn selected_session(dir: &std::path::Path, count: i64) -> Session {
        let peer = "127.0.0.1:5555".parse().unwrap();
        let mut session = Session::new(offline_context(dir), peer);
        session.account = Some(Account {
            mailbox_id: 1,
            address: "alice@example.test".into(),
        });
        session.selected = Some(Selected {
            folder: Folder {
                id: 1,
                mailbox_id: 1,
                name: "INBOX".into(),
                special_use: Some("inbox".into()),
                uid_validity: 1,
                uid_next: count + 1,
                highest_modseq: 1,
                subscribed: true,
            },
            read_only: false,
            messages: (1..=count).map(meta).collect(),
        });
        session
    }

    fn command(line: &str) -> imap_codec::imap_types::command::Command<'static> {
        let input = format!("{line}\r\n");
        let (_, command) = CommandCodec::default().decode(input.as_bytes()).unwrap();
        command.into_static()
    }

    /// (FETCH responses, tagged statuses) in one output.
    fn count(output: &[Response<'static>]) -> (usize, usize) {
        let fetches = output
            .iter()
            .filter(|r| matches!(r, Response::Data(Data::Fetch { .. })))
            .count();
        (fetches, output.len() - fetches)
    }

    #[tokio::test]
    async fn a_large_fetch_goes_out_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        for (messages, line, want, want_batches) in [
            (1_000, "a FETCH 1:* (UID FLAGS)", 1_000, 16),
            (1_000, "a UID FETCH 990:* FLAGS", 11, 1),
            (130, "a FETCH 1,1,1,2:3 UID", 3, 1),
            (3, "a FETCH 1:* UID", 3, 1),
        ] {
            let mut session = selected_session(dir.path(), messages);
            session.command(command(line)).await;
            let (mut fetched, mut batches) = (0, 0);
            loop {
                let (fetches, statuses) = count(&session.take_output());
                assert!(fetches <= BATCH_MESSAGES, "{line}: batch of {fetches}");
                fetched += fetches;
                batches += 1;
                if !session.has_more() {
                    assert_eq!(statuses, 1, "{line}: the tagged status comes last");
                    break;
                }
                assert_eq!(statuses, 0, "{line}: no status before the last batch");
                session.resume().await;
            }
            assert_eq!(fetched, want, "{line}");
            assert_eq!(batches, want_batches, "{line}");
        }
    }
}
