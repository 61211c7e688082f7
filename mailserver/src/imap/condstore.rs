//! CONDSTORE and QRESYNC (RFC 7162): what the session has enabled, and the responses that
//! carry MODSEQs and VANISHED.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::flags_fetch;
use super::mailbox::wire_uid;
use super::session::Session;
use crate::store::MessageMeta;

/// Extensions a client switched on (ENABLE, or SELECT with CONDSTORE/QRESYNC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enabled {
    pub condstore: bool,
    pub qresync: bool,
}

impl Session {
    pub(super) fn condstore_enabled(&self) -> bool {
        self.enabled.condstore || self.enabled.qresync
    }

    pub(super) fn qresync_enabled(&self) -> bool {
        self.enabled.qresync
    }
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
