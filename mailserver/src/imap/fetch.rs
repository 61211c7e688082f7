//! FETCH and UID FETCH.

use std::num::{NonZeroU32, NonZeroU64};

use chrono::FixedOffset;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::SequenceSet;

use super::flags::{flags_to_wire, has_flag};
use super::mailbox::wire_uid;
use super::mime::{self, PartRef};
use super::reply;
use super::sequence;
use super::session::{Outcome, Session};
use super::structure::{self, literal};
use crate::store::{FlagMode, MessageMeta};

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
            // BINARY is not advertised; a client that asks anyway gets nothing for it.
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => continue,
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

        let load = names.iter().any(needs_body);
        let mut responses = Vec::with_capacity(positions.len());
        for &i in &positions {
            let message = selected.messages[i].clone();
            let raw = if load {
                Some(store.read_body(&message).await?)
            } else {
                None
            };
            let mut message_names = names.clone();
            if flags_changed.contains(&message.uid)
                && !message_names.contains(&MessageDataItemName::Flags)
            {
                message_names.push(MessageDataItemName::Flags);
            }
            let items = items(&message_names, &message, raw.as_deref());
            if let Ok(items) = Vec1::try_from(items) {
                responses.push(Data::Fetch {
                    seq: seq_number(i + 1),
                    items,
                });
            }
        }
        for data in responses {
            self.push(data);
        }
        Ok(reply::tagged_ok(tag, None, "FETCH completed"))
    }
}
