//! SORT and THREAD=ORDEREDSUBJECT (RFC 5256) from the cached header summaries: a message
//! without one is read once and its summary cached, as SEARCH does, so a folder is read at
//! most once whatever the number of SORTs.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Charset, Tag, Vec1, Vec2};
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::extensions::thread::{Thread, ThreadingAlgorithm};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::MessageParser;

use super::mailbox::wire_uid;
use super::reply::{self, CommandError};
use super::search::summarize;
use super::session::{Outcome, Session};
use crate::store::{HeaderSummary, MessageMeta};

/// Most bytes of a subject or address kept as a sort key.
const MAX_KEY: usize = 1024;

/// What sorting and threading compare of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortFields {
    /// RFC 5256 base subject, upper case (i;ascii-casemap).
    pub subject: String,
    /// The local part of the first address, upper case.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The Date header as Unix time; arrival time when it has none.
    pub sent: i64,
}

fn bounded(s: String) -> String {
    bounded_to(s, MAX_KEY)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn bounded_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A run of `[...]` at the front (subj-blob), with the whitespace after it.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    if rest[..end].contains('[') {
        return None;
    }
    Some(rest[end + 1..].trim_start())
}

/// Whether `s` starts with `prefix`, ASCII case aside.
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// `re:` / `fw:` / `fwd:`, with blobs before the colon (subj-refwd).
fn strip_refwd(s: &str) -> Option<&str> {
    let prefix = ["fwd", "fw", "re"].iter().find(|p| starts_with_ci(s, p))?;
    let mut after = s[prefix.len()..].trim_start();
    if let Some(rest) = strip_blob(after) {
        after = rest;
    }
    after.strip_prefix(':').map(str::trim_start)
}

/// Most bytes of a subject looked at: the work per message stays bounded.
const MAX_SUBJECT: usize = 8 * 1024;

/// The base subject of RFC 5256 §2.1 (after RFC 2047 decoding, done by the caller): without
/// `Re:`/`Fwd:` leaders, `[list]` blobs, `(fwd)` trailers and `[Fwd: ...]` wrappers.
pub fn base_subject(subject: &str) -> String {
    let normalized = bounded_to(
        subject.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_SUBJECT,
    );
    let mut s: &str = &normalized;
    loop {
        // Step 2: trailers.
        loop {
            let trimmed = s.trim_end();
            let cut = trimmed.len().saturating_sub(5);
            if trimmed
                .get(cut..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case("(fwd)"))
            {
                s = &trimmed[..cut];
            } else {
                s = trimmed;
                break;
            }
        }
        // Steps 3-5: leaders, and a blob that does not make the subject empty.
        loop {
            let before = s.len();
            if let Some(rest) = strip_refwd(s) {
                s = rest;
            }
            if let Some(rest) = strip_blob(s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // Step 6: `[fwd: ...]`.
        if starts_with_ci(s, "[fwd:") && s.ends_with(']') {
            s = s["[fwd:".len()..s.len() - 1].trim();
            continue;
        }
        return bounded(s.to_ascii_uppercase());
    }
}

/// The local part of an address, upper case.
fn mailbox_of(address: Option<&str>) -> String {
    let address = address.unwrap_or_default();
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    bounded(local.to_ascii_uppercase())
}

/// The local part of the first address of a list.
fn first_mailbox(list: Option<&mail_parser::Address<'_>>) -> String {
    mailbox_of(list.and_then(|a| a.first()).and_then(|a| a.address()))
}

/// The sort fields of a message from its cached summary (`None`: no summary; arrival only).
pub fn sort_fields(summary: Option<&HeaderSummary>, meta: &MessageMeta) -> SortFields {
    let arrival = meta.internal_date.timestamp();
    let Some(summary) = summary else {
        return SortFields {
            sent: arrival,
            ..SortFields::default()
        };
    };
    // The cached raw values, parsed as a header block: mail-parser decodes RFC 2047 words
    // and reads address lists.
    let mut header = String::new();
    for (name, field) in [
        ("From", "from"),
        ("To", "to"),
        ("Cc", "cc"),
        ("Subject", "subject"),
    ] {
        if let Some(value) = summary.fields.get(field).and_then(|v| v.first()) {
            header.push_str(name);
            header.push(':');
            header.push_str(value.trim_end_matches(['\r', '\n']));
            header.push_str("\r\n");
        }
    }
    header.push_str("\r\n");
    let parsed = MessageParser::default().parse_headers(header.as_bytes());
    SortFields {
        subject: base_subject(parsed.as_ref().and_then(|m| m.subject()).unwrap_or("")),
        from: first_mailbox(parsed.as_ref().and_then(|m| m.from())),
        to: first_mailbox(parsed.as_ref().and_then(|m| m.to())),
        cc: first_mailbox(parsed.as_ref().and_then(|m| m.cc())),
        sent: summary.sent.unwrap_or(arrival),
    }
}

/// Orders two messages by the criteria; the sequence number breaks ties.
fn compare(
    criteria: &[SortCriterion],
    a: (&SortFields, &MessageMeta),
    b: (&SortFields, &MessageMeta),
) -> Ordering {
    for criterion in criteria {
        let order = match criterion.key {
            SortKey::Arrival => a.1.internal_date.cmp(&b.1.internal_date),
            SortKey::Cc => a.0.cc.cmp(&b.0.cc),
            SortKey::Date => a.0.sent.cmp(&b.0.sent),
            SortKey::From | SortKey::DisplayFrom => a.0.from.cmp(&b.0.from),
            SortKey::Size => a.1.size.cmp(&b.1.size),
            SortKey::Subject => a.0.subject.cmp(&b.0.subject),
            SortKey::To | SortKey::DisplayTo => a.0.to.cmp(&b.0.to),
        };
        let order = if criterion.reverse {
            order.reverse()
        } else {
            order
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// ORDEREDSUBJECT: messages grouped by base subject, each group by sent date; the first of a
/// group is the parent of the others; groups ordered by their first message's date.
/// `items` are (number to report, fields), in sequence order.
pub fn ordered_subject(items: &[(NonZeroU32, SortFields)]) -> Vec<Thread> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        (&items[a].1.subject, items[a].1.sent, a).cmp(&(&items[b].1.subject, items[b].1.sent, b))
    });
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(group) if items[group[0]].1.subject == items[i].1.subject => group.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups.sort_by_key(|g| (items[g[0]].1.sent, g[0]));
    groups
        .into_iter()
        .map(|group| {
            let numbers: Vec<NonZeroU32> = group.iter().map(|&i| items[i].0).collect();
            let (first, rest) = numbers.split_first().expect("groups are not empty");
            match rest.len() {
                0 => Thread::Members {
                    prefix: Vec1::from(*first),
                    answers: None,
                },
                1 => Thread::Members {
                    prefix: Vec1::unvalidated(vec![*first, rest[0]]),
                    answers: None,
                },
                _ => Thread::Members {
                    prefix: Vec1::from(*first),
                    answers: Some(Vec2::unvalidated(
                        rest.iter()
                            .map(|n| Thread::Members {
                                prefix: Vec1::from(*n),
                                answers: None,
                            })
                            .collect(),
                    )),
                },
            }
        })
        .collect()
}

impl Session {
    /// The matching messages with their sort fields, in sequence order: (position, fields).
    async fn sort_candidates(
        &mut self,
        charset: &Charset<'_>,
        criteria: &Vec1<SearchKey<'static>>,
    ) -> Result<Vec<(usize, SortFields)>, CommandError> {
        let hits = self.search_indices(Some(charset), criteria).await?;
        let store = self.ctx.store.clone();
        let selected = self.selected_mut()?;
        let mut summaries = store.header_summaries(selected.folder.id).await?;
        for &i in &hits {
            let meta = &selected.messages[i];
            if summaries.contains_key(&meta.id) {
                continue;
            }
            // Read once; the summary is cached for every later SORT, THREAD and SEARCH.
            let raw = store.read_body(meta).await?;
            let summary = tokio::task::spawn_blocking(move || summarize(&raw))
                .await
                .map_err(|_| CommandError::no(Some("SERVERBUG"), "Sort failed"))?;
            if let Some(summary) = summary {
                if let Err(err) = store.save_header_summary(meta.id, &summary).await {
                    tracing::debug!(message = meta.id, %err, "imap: cannot cache header summary");
                }
                summaries.insert(meta.id, summary);
            }
        }
        let messages: Vec<(usize, MessageMeta)> = hits
            .iter()
            .map(|&i| (i, selected.messages[i].clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let summaries: HashMap<i64, HeaderSummary> = summaries;
            messages
                .iter()
                .map(|(i, meta)| (*i, sort_fields(summaries.get(&meta.id), meta)))
                .collect::<Vec<(usize, SortFields)>>()
        })
        .await
        .map_err(|_| CommandError::no(Some("SERVERBUG"), "Sort failed"))
    }

    fn number(&self, i: usize, uid: bool) -> Option<NonZeroU32> {
        let selected = self.selected.as_ref()?;
        let n = if uid {
            wire_uid(selected.messages[i].uid)
        } else {
            u32::try_from(i + 1).unwrap_or(u32::MAX)
        };
        NonZeroU32::new(n)
    }

    pub(super) async fn sort(
        &mut self,
        tag: Tag<'static>,
        criteria: &Vec1<SortCriterion>,
        charset: &Charset<'_>,
        search: &Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> Outcome {
        let mut candidates = self.sort_candidates(charset, search).await?;
        let selected = self.selected_mut()?;
        let messages = &selected.messages;
        candidates.sort_by(|a, b| {
            compare(
                criteria.as_ref(),
                (&a.1, &messages[a.0]),
                (&b.1, &messages[b.0]),
            )
            .then(a.0.cmp(&b.0))
        });
        let numbers = candidates
            .iter()
            .filter_map(|(i, _)| self.number(*i, uid))
            .collect();
        self.push(Data::Sort(numbers, None));
        Ok(reply::tagged_ok(tag, None, "SORT completed"))
    }

    pub(super) async fn thread(
        &mut self,
        tag: Tag<'static>,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        search: &Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> Outcome {
        if !matches!(algorithm, ThreadingAlgorithm::OrderedSubject) {
            return Err(CommandError::bad("Only THREAD=ORDEREDSUBJECT is supported"));
        }
        let candidates = self.sort_candidates(charset, search).await?;
        let items: Vec<(NonZeroU32, SortFields)> = candidates
            .into_iter()
            .filter_map(|(i, fields)| Some((self.number(i, uid)?, fields)))
            .collect();
        self.push(Data::Thread(ordered_subject(&items)));
        Ok(reply::tagged_ok(tag, None, "THREAD completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (subject, base) in [
            ("Hello", "HELLO"),
            ("Re: Hello", "HELLO"),
            ("RE: re: Fwd: Hello", "HELLO"),
            ("Re[2]: Hello", "HELLO"),
            ("[list] Re: Hello", "HELLO"),
            ("Hello (fwd)", "HELLO"),
            ("[Fwd: Re: Hello]", "HELLO"),
            ("  Hello    world  ", "HELLO WORLD"),
            ("[only blob]", "[ONLY BLOB]"),
            ("Re:", ""),
            ("", ""),
            ("Reply needed", "REPLY NEEDED"),
        ] {
            assert_eq!(base_subject(subject), base, "{subject:?}");
        }
        // Long input stays bounded and linear enough.
        let long = "Re: ".repeat(10_000) + &"x".repeat(5_000);
        assert_eq!(base_subject(&long), "");
        let long = "x".repeat(50_000);
        assert_eq!(base_subject(&long).len(), MAX_KEY);
    }

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn fields(subject: &str, sent: i64) -> SortFields {
        SortFields {
            subject: base_subject(subject),
            sent,
            ..SortFields::default()
        }
    }

    #[test]
    fn ordered_subject_threads() {
        let items = vec![
            (n(1), fields("Lunch", 30)),
            (n(2), fields("Re: Lunch", 40)),
            (n(3), fields("Meeting", 10)),
            (n(4), fields("Re: Meeting", 20)),
            (n(5), fields("Fwd: Meeting", 50)),
            (n(6), fields("Alone", 60)),
        ];
        let wire: Vec<String> = ordered_subject(&items)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(wire, ["(3 (4)(5))", "(1 2)", "(6)"]);
        assert!(ordered_subject(&[]).is_empty());
    }
}
