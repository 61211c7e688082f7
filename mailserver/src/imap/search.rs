//! SEARCH and UID SEARCH. Flag, size, date, sequence and UID keys come from the metadata; the
//! header and text keys read the message and match raw bytes without regard to ASCII case
//! (no MIME decoding yet). No key walks the MIME structure: header keys read the top-level
//! header block, BODY what follows it, so a hostile structure costs no more than its bytes.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::NaiveDate;
use imap_codec::imap_types::core::{AString, Charset, Tag, Vec1};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use mail_parser::MessageParser;

use super::flags::has_flag;
use super::mailbox::wire_uid;
use super::parse;
use super::reply::{self, CommandError};
use super::sequence::Ranges;
use super::session::{Outcome, Session};
use crate::store::{HeaderSummary, MessageMeta, SUMMARY_KIND};

/// Most keys one SEARCH may combine (imap-codec already bounds how deeply they nest).
const MAX_KEYS: usize = 1_000;

/// The sequence sets of a search key, each normalised once for the whole command and found
/// again by its address in the key (which stays put while the command runs).
pub struct Sets(HashMap<usize, Ranges>);

fn address(set: &SequenceSet) -> usize {
    std::ptr::from_ref(set) as usize
}

impl Sets {
    /// `count` stands for `*` in sequence numbers, `max_uid` in UIDs.
    pub fn new(key: &SearchKey<'_>, count: u32, max_uid: u32) -> Result<Self, CommandError> {
        let mut sets = HashMap::new();
        let mut stack = vec![key];
        let mut keys = 0;
        while let Some(key) = stack.pop() {
            // Every key is tried against every message: their number multiplies the work.
            keys += 1;
            if keys > MAX_KEYS {
                return Err(CommandError::bad(format!(
                    "Search too complex: at most {MAX_KEYS} keys"
                )));
            }
            match key {
                SearchKey::And(keys) => stack.extend(keys.as_ref()),
                SearchKey::Not(key) => stack.push(key),
                SearchKey::Or(a, b) => stack.extend([&**a, &**b]),
                SearchKey::SequenceSet(set) => {
                    sets.insert(address(set), Ranges::new(set, count)?);
                }
                SearchKey::Uid(set) => {
                    sets.insert(address(set), Ranges::new(set, max_uid)?);
                }
                _ => {}
            }
        }
        Ok(Self(sets))
    }

    fn contains(&self, set: &SequenceSet, value: u32) -> bool {
        self.0.get(&address(set)).is_some_and(|r| r.contains(value))
    }
}

/// One message as a search sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub sets: &'a Sets,
    pub meta: &'a MessageMeta,
    /// The message bytes, loaded only when a key needs them.
    pub raw: Option<&'a [u8]>,
    /// The Date header, parsed at most once however many keys ask.
    pub sent: OnceCell<Option<NaiveDate>>,
    /// The cached header fields, when the message has them: then no body is needed.
    pub summary: Option<&'a HeaderSummary>,
    /// Where the top-level header ends, found once.
    header_len: OnceCell<usize>,
}

impl<'a> Candidate<'a> {
    pub fn new(seq: u32, sets: &'a Sets, meta: &'a MessageMeta, raw: Option<&'a [u8]>) -> Self {
        Self {
            seq,
            sets,
            meta,
            raw,
            sent: OnceCell::new(),
            summary: None,
            header_len: OnceCell::new(),
        }
    }

    fn header(&self) -> &'a [u8] {
        let raw = self.raw.unwrap_or_default();
        &raw[..*self.header_len.get_or_init(|| parse::header_end(raw))]
    }

    fn body(&self) -> &'a [u8] {
        let raw = self.raw.unwrap_or_default();
        &raw[*self.header_len.get_or_init(|| parse::header_end(raw))..]
    }
}

fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Not(key) => needs_body(key),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    }
}

/// Header fields cached in a [`HeaderSummary`].
const SUMMARY_FIELDS: [&str; 5] = ["from", "to", "cc", "bcc", "subject"];

/// Whether every key that reads the message can be answered from its [`HeaderSummary`].
fn cached_keys_only(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(cached_keys_only),
        SearchKey::Not(key) => cached_keys_only(key),
        SearchKey::Or(a, b) => cached_keys_only(a) && cached_keys_only(b),
        SearchKey::Body(_) | SearchKey::Header(..) | SearchKey::Text(_) => false,
        _ => true,
    }
}

/// The fields of a header block, each with its continuation lines, as (name, value).
fn fields(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(header.len());
    (0..starts.len() - 1).filter_map(move |i| {
        let field = &header[starts[i]..starts[i + 1]];
        let (name, value) = field.split_once_colon()?;
        Some((name.trim_ascii(), value))
    })
}

/// The summary SEARCH caches for a message: `None` when its fields are not UTF-8 (or hold a
/// NUL, which PostgreSQL's JSON cannot), so such a message is always read.
pub fn summarize(raw: &[u8]) -> Option<HeaderSummary> {
    let header = &raw[..parse::header_end(raw)];
    let mut summary = HeaderSummary {
        kind: SUMMARY_KIND.to_string(),
        ..HeaderSummary::default()
    };
    for (name, value) in fields(header) {
        let Some(name) = SUMMARY_FIELDS
            .iter()
            .find(|n| n.as_bytes().eq_ignore_ascii_case(name))
        else {
            continue;
        };
        let value = String::from_utf8(value.to_vec())
            .ok()
            .filter(|v| !v.contains('\0'))?;
        summary
            .fields
            .entry(name.to_string())
            .or_default()
            .push(value);
    }
    summary.sent = parsed_date(header).map(|d| d.timestamp());
    Some(summary)
}

/// The Date header of a header block, as mail-parser reads it.
fn parsed_date(header: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let date = MessageParser::default()
        .parse_headers(header)?
        .date()?
        .to_timestamp();
    chrono::DateTime::from_timestamp(date, 0)
}

/// Whether `needle` occurs in `haystack`, ASCII case aside. Knuth-Morris-Pratt: linear in
/// both lengths, where comparing at every offset costs their product (a 64 KiB needle against
/// a 50 MB body).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let needle: Vec<u8> = needle.to_ascii_lowercase();
    if needle.is_empty() {
        return true;
    }
    // fail[i]: length of the longest proper border of needle[..=i].
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut k = 0;
    for &b in haystack {
        let b = b.to_ascii_lowercase();
        while k > 0 && b != needle[k] {
            k = fail[k - 1];
        }
        if b == needle[k] {
            k += 1;
            if k == needle.len() {
                return true;
            }
        }
    }
    false
}

/// Whether a header field called `name` (in the message's own header) contains `needle`.
fn header_contains(c: &Candidate<'_>, name: &[u8], needle: &[u8]) -> bool {
    if let Some(summary) = c.summary
        && let Some(cached) = SUMMARY_FIELDS
            .iter()
            .find(|n| n.as_bytes().eq_ignore_ascii_case(name))
    {
        return summary
            .fields
            .get(*cached)
            .is_some_and(|values| values.iter().any(|v| contains(v.as_bytes(), needle)));
    }
    fields(c.header()).any(|(n, v)| n.eq_ignore_ascii_case(name) && contains(v, needle))
}

trait SplitColon {
    fn split_once_colon(&self) -> Option<(&[u8], &[u8])>;
}

impl SplitColon for [u8] {
    fn split_once_colon(&self) -> Option<(&[u8], &[u8])> {
        let at = self.iter().position(|&b| b == b':')?;
        Some((&self[..at], &self[at + 1..]))
    }
}

/// The date of the Date header, or of arrival when there is none.
fn sent_date(c: &Candidate<'_>) -> NaiveDate {
    let parsed = c.sent.get_or_init(|| {
        let sent = match c.summary {
            Some(summary) => chrono::DateTime::from_timestamp(summary.sent?, 0),
            None => parsed_date(c.header()),
        };
        sent.map(|d| d.date_naive())
    });
    parsed.unwrap_or_else(|| c.meta.internal_date.date_naive())
}

fn text(value: &AString<'_>) -> Vec<u8> {
    value.as_ref().to_vec()
}

/// Whether the message satisfies the key.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> bool {
    let flag = |f: &str| has_flag(&c.meta.flags, f);
    let arrived = c.meta.internal_date.date_naive();
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::All | SearchKey::Old => true,
        // \Recent is never set: no session claims new mail for itself.
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::SequenceSet(set) => c.sets.contains(set, c.seq),
        SearchKey::Uid(set) => c.sets.contains(set, wire_uid(c.meta.uid)),
        SearchKey::Answered => flag("\\Answered"),
        SearchKey::Unanswered => !flag("\\Answered"),
        SearchKey::Deleted => flag("\\Deleted"),
        SearchKey::Undeleted => !flag("\\Deleted"),
        SearchKey::Draft => flag("\\Draft"),
        SearchKey::Undraft => !flag("\\Draft"),
        SearchKey::Flagged => flag("\\Flagged"),
        SearchKey::Unflagged => !flag("\\Flagged"),
        SearchKey::Seen => flag("\\Seen"),
        SearchKey::Unseen => !flag("\\Seen"),
        SearchKey::Keyword(k) => flag(k.inner()),
        SearchKey::Unkeyword(k) => !flag(k.inner()),
        SearchKey::Larger(n) => c.meta.size > i64::from(*n),
        SearchKey::Smaller(n) => c.meta.size < i64::from(*n),
        SearchKey::Before(d) => arrived < *d.as_ref(),
        SearchKey::On(d) => arrived == *d.as_ref(),
        SearchKey::Since(d) => arrived >= *d.as_ref(),
        SearchKey::SentBefore(d) => sent_date(c) < *d.as_ref(),
        SearchKey::SentOn(d) => sent_date(c) == *d.as_ref(),
        SearchKey::SentSince(d) => sent_date(c) >= *d.as_ref(),
        SearchKey::From(v) => header_contains(c, b"from", &text(v)),
        SearchKey::To(v) => header_contains(c, b"to", &text(v)),
        SearchKey::Cc(v) => header_contains(c, b"cc", &text(v)),
        SearchKey::Bcc(v) => header_contains(c, b"bcc", &text(v)),
        SearchKey::Subject(v) => header_contains(c, b"subject", &text(v)),
        SearchKey::Header(name, v) => header_contains(c, name.as_ref(), &text(v)),
        SearchKey::Body(v) => contains(c.body(), &text(v)),
        SearchKey::Text(v) => contains(c.raw.unwrap_or_default(), &text(v)),
        SearchKey::ModSequence { modseq, .. } => {
            u64::try_from(c.meta.modseq).unwrap_or(0) >= *modseq
        }
    }
}

impl Session {
    pub(super) async fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<&Charset<'_>>,
        criteria: &Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> Outcome {
        let hits = self.search_indices(charset, criteria).await?;
        let selected = self.selected_mut()?;
        let found = hits
            .into_iter()
            .filter_map(|i| {
                let meta = &selected.messages[i];
                let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
                NonZeroU32::new(if uid { wire_uid(meta.uid) } else { seq })
            })
            .collect();
        self.push(Data::Search(found, None));
        Ok(reply::tagged_ok(tag, None, "SEARCH completed"))
    }

    /// The positions in the selected view of the messages that match `criteria`, ascending
    /// (SEARCH, SORT and THREAD share it).
    pub(super) async fn search_indices(
        &mut self,
        charset: Option<&Charset<'_>>,
        criteria: &Vec1<SearchKey<'static>>,
    ) -> Result<Vec<usize>, CommandError> {
        if let Some(charset) = charset {
            let name = charset.as_ref();
            if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
                return Err(CommandError::no(
                    Some("BADCHARSET"),
                    "Use UTF-8 or US-ASCII",
                ));
            }
        }
        let store = self.ctx.store.clone();
        let selected = self.selected_mut()?;
        let key = Arc::new(SearchKey::And(criteria.clone()));
        let load = needs_body(&key);
        let count = u32::try_from(selected.messages.len()).unwrap_or(u32::MAX);
        let max_uid = selected
            .messages
            .last()
            .map(|m| wire_uid(m.uid))
            .unwrap_or(0);
        // The sets point into the key's heap allocation, which the Arc keeps in place.
        let sets = Arc::new(Sets::new(&key, count, max_uid)?);
        // Header keys alone are answered from the cached summaries; a message without one is
        // read once, and its summary cached for the next SEARCH.
        let cacheable = load && cached_keys_only(&key);
        let summaries = if cacheable {
            store.header_summaries(selected.folder.id).await?
        } else {
            HashMap::new()
        };
        let mut found = Vec::new();
        for (i, meta) in selected.messages.iter().enumerate() {
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let hit = if let Some(summary) = summaries.get(&meta.id) {
                let mut candidate = Candidate::new(seq, &sets, meta, None);
                candidate.summary = Some(summary);
                matches(&key, &candidate)
            } else if load {
                // One body at a time, matched off the async workers.
                let raw = store.read_body(meta).await?;
                let (key, sets, owned) = (key.clone(), sets.clone(), meta.clone());
                let (hit, summary) = tokio::task::spawn_blocking(move || {
                    let hit = matches(&key, &Candidate::new(seq, &sets, &owned, Some(&raw)));
                    (hit, cacheable.then(|| summarize(&raw)).flatten())
                })
                .await
                .map_err(|_| CommandError::no(Some("SERVERBUG"), "Search failed"))?;
                if let Some(summary) = summary
                    && let Err(err) = store.save_header_summary(meta.id, &summary).await
                {
                    // Only a cache: the answer stands.
                    tracing::debug!(message = meta.id, %err, "imap: cannot cache header summary");
                }
                hit
            } else {
                matches(&key, &Candidate::new(seq, &sets, meta, None))
            };
            if hit {
                found.push(i);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    fn meta(uid: i64, flags: &[&str], size: i64) -> MessageMeta {
        MessageMeta {
            id: uid,
            folder_id: 1,
            uid,
            modseq: 1,
            size,
            internal_date: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            bucket: "b".into(),
            blob_key: "k".into(),
        }
    }

    fn criteria(line: &str) -> SearchKey<'static> {
        let input = format!("a SEARCH {line}\r\n");
        let (_, command) = CommandCodec::default()
            .decode(input.as_bytes())
            .unwrap_or_else(|e| panic!("{line}: {e:?}"));
        match command.body {
            CommandBody::Search { criteria, .. } => {
                imap_codec::imap_types::ToStatic::to_static(&SearchKey::And(criteria))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn substrings() {
        for (haystack, needle, want) in [
            ("", "", true),
            ("abc", "", true),
            ("", "a", false),
            ("Hello World", "o w", true),
            ("aaab", "AAB", true),
            ("abababc", "ababc", true),
            ("abababd", "ababc", false),
            ("ab", "abc", false),
        ] {
            assert_eq!(
                contains(haystack.as_bytes(), needle.as_bytes()),
                want,
                "{haystack:?} {needle:?}"
            );
        }
        // The product of these lengths is 2.5e11 comparisons for a naive search.
        let haystack = vec![b'a'; 5_000_000];
        let mut needle = vec![b'a'; 50_000];
        needle.push(b'b');
        assert!(!contains(&haystack, &needle));
    }

    #[test]
    fn summaries() {
        let raw = b"From: a@example.test\r\nSubject: one\r\n two\r\nsubject: again\r\nX-Other: x\r\n\r\nFrom: body@example.test\r\n";
        let summary = summarize(raw).unwrap();
        let fields: Vec<(&str, Vec<&str>)> = summary
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            fields,
            [
                ("from", vec![" a@example.test\r\n"]),
                ("subject", vec![" one\r\n two\r\n", " again\r\n"])
            ]
        );
        assert_eq!(summary.sent, None);
        assert_eq!(summary.kind, SUMMARY_KIND);
        assert!(
            summarize(b"Subject: caf\xe9\r\n\r\n").is_none(),
            "not UTF-8"
        );
        assert!(summarize(b"Subject: a\0b\r\n\r\n").is_none(), "NUL");
        assert!(summarize(b"").unwrap().fields.is_empty());
    }

    #[test]
    fn too_many_keys() {
        let many = criteria(&vec!["ALL"; MAX_KEYS].join(" "));
        assert!(
            Sets::new(&many, 1, 1).is_err(),
            "the And around them is a key too"
        );
        assert!(Sets::new(&criteria(&vec!["ALL"; MAX_KEYS - 1].join(" ")), 1, 1).is_ok());
    }

    #[test]
    fn keys() {
        let raw = b"From: Alice <alice@example.test>\r\nSubject: Quarterly\r\n report\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\n\r\nThe numbers are in.\r\n";
        let messages = [
            meta(3, &["\\Seen"], 100),
            meta(7, &["\\Deleted", "$Work"], 2000),
            meta(9, &["\\Flagged", "\\Seen"], 50),
        ];
        let summary = summarize(raw).unwrap();
        let run = |line: &str| -> Vec<u32> {
            let key = criteria(line);
            let sets = Sets::new(&key, 3, 9).unwrap();
            let hits = |cached: bool| -> Vec<u32> {
                messages
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| {
                        let mut c = Candidate::new(*i as u32 + 1, &sets, m, Some(&raw[..]));
                        if cached {
                            (c.raw, c.summary) = (None, Some(&summary));
                        }
                        matches(&key, &c)
                    })
                    .map(|(_, m)| m.uid as u32)
                    .collect()
            };
            let read = hits(false);
            if cached_keys_only(&key) {
                assert_eq!(
                    hits(true),
                    read,
                    "{line}: the summary answers as the body does"
                );
            }
            read
        };
        for (line, want) in [
            ("ALL", vec![3, 7, 9]),
            ("SEEN", vec![3, 9]),
            ("UNSEEN", vec![7]),
            ("DELETED", vec![7]),
            ("UNDELETED", vec![3, 9]),
            ("FLAGGED", vec![9]),
            ("SEEN UNFLAGGED", vec![3]),
            ("OR FLAGGED DELETED", vec![7, 9]),
            ("NOT SEEN", vec![7]),
            ("KEYWORD $Work", vec![7]),
            ("UID 7:*", vec![7, 9]),
            ("UID 10:*", vec![9]),
            ("2:3", vec![7, 9]),
            ("OR 1 UID 9", vec![3, 9]),
            ("NOT 3:*", vec![3, 7]),
            ("*", vec![9]),
            ("LARGER 99", vec![3, 7]),
            ("SMALLER 100", vec![9]),
            ("NEW", vec![]),
            ("SUBJECT report", vec![3, 7, 9]),
            ("FROM ALICE@example", vec![3, 7, 9]),
            ("TO alice", vec![]),
            ("HEADER Subject quarterly", vec![3, 7, 9]),
            ("BODY numbers", vec![3, 7, 9]),
            ("BODY Quarterly", vec![]),
            ("TEXT quarterly", vec![3, 7, 9]),
            ("SENTON 14-Nov-2023", vec![3, 7, 9]),
            ("SENTBEFORE 14-Nov-2023", vec![]),
            ("SENTSINCE 15-Nov-2023", vec![]),
            ("OR SUBJECT nothing FROM alice", vec![3, 7, 9]),
            ("NOT TO alice", vec![3, 7, 9]),
            ("HEADER subject \"report\"", vec![3, 7, 9]),
            ("SINCE 14-Nov-2023", vec![3, 7, 9]),
            ("BEFORE 14-Nov-2023", vec![]),
        ] {
            assert_eq!(run(line), want, "{line}");
        }
    }
}
