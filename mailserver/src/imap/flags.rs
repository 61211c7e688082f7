//! Flags between the store's strings and the wire, and STORE / UID STORE.

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::flag::{Flag, FlagFetch, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

use super::fetch::flags_fetch;
use super::reply;
use super::sequence;
use super::session::{Outcome, Session};
use crate::store::FlagMode;

/// Whether `flags` holds `flag` (system flags compare without regard to case).
pub fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Stored flags as FETCH items; a stored string that is not a valid flag is left out.
pub fn flags_to_wire(flags: &[String]) -> Vec<FlagFetch<'static>> {
    flags
        .iter()
        .filter_map(|f| Flag::try_from(f.as_str()).ok().map(|f| f.into_static()))
        .map(FlagFetch::Flag)
        .collect()
}

/// The string a flag is stored as: system flags in their canonical case, keywords as written.
/// `None` for flags a client may not set (`\Recent`, unknown `\Xyz`).
pub fn flag_string(flag: &Flag<'_>) -> Option<String> {
    match flag {
        Flag::Extension(_) => None,
        other => Some(other.to_string()),
    }
}

impl Session {
    pub(super) async fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        uid: bool,
    ) -> Outcome {
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
        let changed = if uids.is_empty() {
            Vec::new()
        } else {
            store
                .store_flags(selected.folder.id, &uids, mode, &names)
                .await?
        };
        let mut updates = Vec::new();
        for (uid_value, new_flags) in changed {
            let Some(seq) = selected.seq_of(uid_value) else {
                continue;
            };
            selected.messages[seq - 1].flags = new_flags;
            if response == StoreResponse::Answer {
                updates.push(flags_fetch(seq, &selected.messages[seq - 1], uid));
            }
        }
        for data in updates {
            self.push(data);
        }
        Ok(reply::tagged_ok(tag, None, "STORE completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_strings() {
        for (input, want) in [
            ("\\Seen", Some("\\Seen")),
            ("\\seen", Some("\\Seen")),
            ("\\DELETED", Some("\\Deleted")),
            ("$Forwarded", Some("$Forwarded")),
            ("\\Recent", None),
            ("\\Whatever", None),
        ] {
            let flag = Flag::try_from(input).unwrap();
            assert_eq!(flag_string(&flag).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn stored_flags_to_wire() {
        let stored = vec![
            "\\Seen".to_string(),
            "$Junk".to_string(),
            "bad flag".to_string(),
        ];
        assert_eq!(
            flags_to_wire(&stored),
            vec![
                FlagFetch::Flag(Flag::Seen),
                FlagFetch::Flag(Flag::try_from("$Junk").unwrap())
            ]
        );
        assert!(has_flag(&stored, "\\SEEN"));
        assert!(!has_flag(&stored, "\\Deleted"));
    }
}
