//! Folder commands: LIST, LSUB, SELECT, EXAMINE, STATUS, NAMESPACE, and the view of
//! the selected folder that maps sequence numbers to UIDs.

use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::core::{Atom, IString, QuotedChar};
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::flags::has_flag;
use super::reply::{self, CommandError};
use super::session::{Outcome, Session};
use crate::store::{Folder, MessageMeta};

/// The hierarchy delimiter of folder names.
pub const DELIMITER: char = '/';

/// The selected folder as this session last told the client: message `n` (sequence number) is
/// `messages[n - 1]`. It changes only at points where the client may be told (NOOP, EXPUNGE),
/// so sequence numbers stay stable between them.
pub struct Selected {
    pub folder: Folder,
    pub read_only: bool,
    pub messages: Vec<MessageMeta>,
}

/// A UID as IMAP carries it (the schema keeps them in 1..=2^32-1).
pub fn wire_uid(uid: i64) -> u32 {
    u32::try_from(uid).unwrap_or(u32::MAX)
}

impl Selected {
    pub fn uids(&self) -> Vec<u32> {
        self.messages.iter().map(|m| wire_uid(m.uid)).collect()
    }

    /// Sequence number of a UID still in the view.
    pub fn seq_of(&self, uid: i64) -> Option<usize> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| i + 1)
    }
}

/// The folder name a client wrote (`INBOX` in any case is the inbox).
pub fn mailbox_name(mailbox: &Mailbox<'_>) -> Result<String, CommandError> {
    match mailbox {
        Mailbox::Inbox => Ok("INBOX".to_string()),
        Mailbox::Other(other) => String::from_utf8(other.inner().as_ref().to_vec())
            .map_err(|_| CommandError::bad("Folder names must be UTF-8 or modified UTF-7")),
    }
}

fn wire_mailbox(folder: &Folder) -> Mailbox<'static> {
    if folder.special_use.as_deref() == Some("inbox") {
        Mailbox::Inbox
    } else {
        Mailbox::try_from(folder.name.clone()).unwrap_or(Mailbox::Inbox)
    }
}

/// RFC 6154 attribute of a special-use folder.
fn special_use_attribute(special_use: &str) -> Option<FlagNameAttribute<'static>> {
    let name = match special_use {
        "sent" => "Sent",
        "drafts" => "Drafts",
        "trash" => "Trash",
        "junk" => "Junk",
        "archive" => "Archive",
        _ => return None,
    };
    Atom::try_from(name).ok().map(FlagNameAttribute::from)
}

/// A LIST pattern: `*` matches anything, `%` anything but the delimiter. Compiled once per
/// command (a run of wildcards is one wildcard) and run as an automaton over each name, all
/// positions at once: time is the product of the two lengths whatever the wildcards, where a
/// backtracking matcher is exponential in them.
pub struct Pattern {
    tokens: Vec<char>,
    /// Characters a name must have at least: one per literal token.
    literals: usize,
}

impl Pattern {
    pub fn new(pattern: &[char]) -> Self {
        let mut tokens: Vec<char> = Vec::with_capacity(pattern.len());
        for &c in pattern {
            match (tokens.last_mut(), c) {
                (Some(last @ ('*' | '%')), '*' | '%') => {
                    if c == '*' {
                        *last = '*';
                    }
                }
                _ => tokens.push(c),
            }
        }
        let literals = tokens.iter().filter(|c| !matches!(c, '*' | '%')).count();
        Self { tokens, literals }
    }

    pub fn matches(&self, name: &[char]) -> bool {
        // A pattern longer than the name cannot match: this bounds the work by the name.
        if self.literals > name.len() {
            return false;
        }
        let tokens = &self.tokens;
        // at[i]: the name read so far can end where token i starts.
        let mut at = vec![false; tokens.len() + 1];
        let close = |at: &mut Vec<bool>| {
            for i in 0..tokens.len() {
                if at[i] && matches!(tokens[i], '*' | '%') {
                    at[i + 1] = true;
                }
            }
        };
        at[0] = true;
        close(&mut at);
        for &c in name {
            let mut next = vec![false; tokens.len() + 1];
            for (i, &token) in tokens.iter().enumerate() {
                if !at[i] {
                    continue;
                }
                match token {
                    '*' => next[i] = true,
                    '%' if c != DELIMITER => next[i] = true,
                    '%' => {}
                    literal if literal == c => next[i + 1] = true,
                    _ => {}
                }
            }
            close(&mut next);
            if !next.contains(&true) {
                return false;
            }
            at = next;
        }
        at[tokens.len()]
    }
}

fn list_pattern(wildcard: &ListMailbox<'_>) -> String {
    match wildcard {
        ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    }
}

/// The system flags every folder supports.
pub fn system_flags() -> Vec<Flag<'static>> {
    vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ]
}

impl Session {
    pub(super) async fn select(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Outcome {
        // A failed SELECT leaves no folder selected (RFC 3501 §6.3.1).
        self.selected = None;
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        let Some(folder) = self.ctx.store.folder(mailbox_id, &name).await? else {
            return Err(CommandError::no(Some("NONEXISTENT"), "No such folder"));
        };
        let messages = self.ctx.store.messages(folder.id).await?;

        self.push(Data::Flags(system_flags()));
        let permanent = if read_only {
            Vec::new()
        } else {
            let mut flags: Vec<FlagPerm> = system_flags().into_iter().map(FlagPerm::Flag).collect();
            flags.push(FlagPerm::Asterisk);
            flags
        };
        self.push_status(reply::untagged_ok(
            Some(Code::PermanentFlags(permanent)),
            "Flags permitted",
        ));
        self.push(Data::Exists(
            u32::try_from(messages.len()).unwrap_or(u32::MAX),
        ));
        self.push(Data::Recent(0));
        if let Some(first_unseen) = messages.iter().position(|m| !has_flag(&m.flags, "\\Seen"))
            && let Some(seq) = NonZeroU32::new(u32::try_from(first_unseen + 1).unwrap_or(u32::MAX))
        {
            self.push_status(reply::untagged_ok(
                Some(Code::Unseen(seq)),
                "First unseen message",
            ));
        }
        if let Some(validity) = NonZeroU32::new(wire_uid(folder.uid_validity)) {
            self.push_status(reply::untagged_ok(
                Some(Code::UidValidity(validity)),
                "UIDs valid",
            ));
        }
        if let Some(next) = NonZeroU32::new(wire_uid(folder.uid_next)) {
            self.push_status(reply::untagged_ok(
                Some(Code::UidNext(next)),
                "Predicted next UID",
            ));
        }
        self.selected = Some(Selected {
            folder,
            read_only,
            messages,
        });
        Ok(if read_only {
            reply::tagged_ok(tag, Some(Code::ReadOnly), "EXAMINE completed")
        } else {
            reply::tagged_ok(tag, Some(Code::ReadWrite), "SELECT completed")
        })
    }

    pub(super) async fn list(
        &mut self,
        tag: Tag<'static>,
        reference: &Mailbox<'_>,
        wildcard: &ListMailbox<'_>,
        lsub: bool,
    ) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let reference = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            other => mailbox_name(other)?,
        };
        let pattern = list_pattern(wildcard);
        let delimiter = QuotedChar::try_from(DELIMITER).ok();
        if pattern.is_empty() {
            // `LIST "" ""` asks only for the delimiter and the root (RFC 3501 §6.3.8).
            let root = Mailbox::try_from("").unwrap_or(Mailbox::Inbox);
            self.push(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: root,
            });
            return Ok(reply::tagged_ok(tag, None, "LIST completed"));
        }
        let full: Vec<char> = format!("{reference}{pattern}").chars().collect();
        let exact = Pattern::new(&full);
        // INBOX matches in any case.
        let upper: Vec<char> = full.iter().map(|c| c.to_ascii_uppercase()).collect();
        let inbox = Pattern::new(&upper);
        let folders = self.ctx.store.folders(mailbox_id).await?;
        // Names with a folder right below them, and (for LSUB) with a subscribed one anywhere
        // below: sets built once, so LIST stays linear in the number of folders.
        let parent_of = |name: &str| name.rfind(DELIMITER).map(|at| name[..at].to_string());
        let parents: HashSet<String> = folders.iter().filter_map(|f| parent_of(&f.name)).collect();
        let mut above_subscribed: HashSet<&str> = HashSet::new();
        if lsub && pattern.contains('%') {
            for folder in folders.iter().filter(|f| f.subscribed) {
                for (at, _) in folder.name.match_indices(DELIMITER) {
                    above_subscribed.insert(&folder.name[..at]);
                }
            }
        }
        for folder in &folders {
            // RFC 3501 §6.3.9: `%` stops at an unsubscribed parent of a subscribed folder,
            // which LSUB then lists as \Noselect.
            let stand_in = lsub && !folder.subscribed;
            if stand_in && !above_subscribed.contains(folder.name.as_str()) {
                continue;
            }
            let hit = if folder.special_use.as_deref() == Some("inbox") {
                inbox.matches(&['I', 'N', 'B', 'O', 'X'])
            } else {
                exact.matches(&folder.name.chars().collect::<Vec<char>>())
            };
            if !hit {
                continue;
            }
            let has_children = parents.contains(&folder.name);
            let mut items = Vec::new();
            if stand_in {
                items.push(FlagNameAttribute::Noselect);
            }
            let child_attr = if has_children {
                "HasChildren"
            } else {
                "HasNoChildren"
            };
            if let Ok(atom) = Atom::try_from(child_attr) {
                items.push(FlagNameAttribute::from(atom));
            }
            if let Some(attr) = folder
                .special_use
                .as_deref()
                .and_then(special_use_attribute)
            {
                items.push(attr);
            }
            let mailbox = wire_mailbox(folder);
            self.push(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            });
        }
        Ok(reply::tagged_ok(
            tag,
            None,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
        ))
    }

    pub(super) async fn status(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        names: &[StatusDataItemName],
    ) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        let Some(folder) = self.ctx.store.folder(mailbox_id, &name).await? else {
            return Err(CommandError::no(Some("NONEXISTENT"), "No such folder"));
        };
        let messages = self.ctx.store.messages(folder.id).await?;
        let count = |f: &dyn Fn(&MessageMeta) -> bool| {
            u32::try_from(messages.iter().filter(|m| f(m)).count()).unwrap_or(u32::MAX)
        };
        let mut items = Vec::new();
        for item in names {
            let value = match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(count(&|_| true)),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => match NonZeroU32::new(wire_uid(folder.uid_next)) {
                    Some(n) => StatusDataItem::UidNext(n),
                    None => continue,
                },
                StatusDataItemName::UidValidity => {
                    match NonZeroU32::new(wire_uid(folder.uid_validity)) {
                        Some(n) => StatusDataItem::UidValidity(n),
                        None => continue,
                    }
                }
                StatusDataItemName::Unseen => {
                    StatusDataItem::Unseen(count(&|m| !has_flag(&m.flags, "\\Seen")))
                }
                StatusDataItemName::Deleted => {
                    StatusDataItem::Deleted(count(&|m| has_flag(&m.flags, "\\Deleted")))
                }
                StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(
                    messages
                        .iter()
                        .filter(|m| has_flag(&m.flags, "\\Deleted"))
                        .map(|m| u64::try_from(m.size).unwrap_or(0))
                        .sum(),
                ),
                StatusDataItemName::HighestModSeq => {
                    StatusDataItem::HighestModSeq(u64::try_from(folder.highest_modseq).unwrap_or(0))
                }
                StatusDataItemName::Size => StatusDataItem::Size(
                    messages
                        .iter()
                        .map(|m| u64::try_from(m.size).unwrap_or(0))
                        .sum(),
                ),
            };
            items.push(value);
        }
        self.push(Data::Status {
            mailbox: wire_mailbox(&folder),
            items: items.into(),
        });
        Ok(reply::tagged_ok(tag, None, "STATUS completed"))
    }

    pub(super) fn namespace(&mut self, tag: Tag<'static>) -> Outcome {
        let prefix = IString::try_from("").map_err(|_| CommandError::bad("namespace"))?;
        self.push(Data::Namespace {
            personal: vec![Namespace::new(prefix, QuotedChar::try_from(DELIMITER).ok())],
            other: Vec::new(),
            shared: Vec::new(),
        });
        Ok(reply::tagged_ok(tag, None, "NAMESPACE completed"))
    }

    /// Tells the client what changed in the selected folder since it last looked: expunged
    /// messages (highest sequence number first, so each number is right when it is read), new
    /// messages as EXISTS, and flags changed by other sessions.
    pub(super) async fn sync(&mut self) -> Result<(), CommandError> {
        let Some(selected) = self.selected.as_ref() else {
            return Ok(());
        };
        let fresh = self.ctx.store.messages(selected.folder.id).await?;
        let old = &selected.messages;
        let mut updates = Vec::new();
        for (i, message) in old.iter().enumerate().rev() {
            if fresh.binary_search_by_key(&message.uid, |m| m.uid).is_err()
                && let Some(seq) = NonZeroU32::new(u32::try_from(i + 1).unwrap_or(u32::MAX))
            {
                updates.push(Data::Expunge(seq));
            }
        }
        let kept = old.len() - updates.len();
        if fresh.len() != kept {
            updates.push(Data::Exists(u32::try_from(fresh.len()).unwrap_or(u32::MAX)));
        }
        for (i, message) in fresh.iter().enumerate() {
            let changed = old
                .binary_search_by_key(&message.uid, |m| m.uid)
                .is_ok_and(|j| old[j].flags != message.flags);
            if changed {
                updates.push(super::fetch::flags_fetch(i + 1, message, false));
            }
        }
        for data in updates {
            self.push(data);
        }
        if let Some(selected) = self.selected.as_mut() {
            selected.messages = fresh;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        for (pattern, name, want) in [
            ("*", "INBOX", true),
            ("*", "Archive/2024", true),
            ("%", "Archive/2024", false),
            ("%", "Archive", true),
            ("Archive/%", "Archive/2024", true),
            ("Archive/%", "Archive/2024/Q1", false),
            ("Archive/*", "Archive/2024/Q1", true),
            ("INBOX", "INBOX", true),
            ("Sent", "Sent", true),
            ("Sent", "Sent Items", false),
            ("S%s", "Sent Items", true),
            ("", "INBOX", false),
            ("", "", true),
            ("*%*%", "a/b", true),
            ("%*", "a/b", true),
            ("%%", "a/b", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("%/%/%", "a/b/c", true),
            ("%/%", "a/b/c", false),
            (
                "*z",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            assert_eq!(Pattern::new(&p).matches(&n), want, "{pattern} vs {name}");
        }
        // Backtracking would not finish these.
        let name: Vec<char> = "Archive/2024/Q1/reports/weekly".chars().collect();
        for wildcard in ["*", "%", "*%"] {
            let mut pattern: Vec<char> = wildcard.repeat(10_000).chars().collect();
            pattern.push('z');
            assert!(!Pattern::new(&pattern).matches(&name), "{wildcard}");
            let mut split: Vec<char> = "a%".repeat(5_000).chars().collect();
            split.push('z');
            assert!(!Pattern::new(&split).matches(&name));
        }
    }

    #[test]
    fn special_use() {
        assert_eq!(
            special_use_attribute("sent").map(|a| a.to_string()),
            Some("\\Sent".to_string())
        );
        assert_eq!(special_use_attribute("inbox"), None);
    }
}
