//! The parts of a message that FETCH BODY[section] names (RFC 3501 §6.4.5), cut from the raw
//! bytes so what the client gets is byte-for-byte what was delivered.

use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::fetch::Section;
use mail_parser::{Message, MessagePart, PartType};

pub use super::parse::parse;

/// One MIME part, with the message whose raw bytes its offsets point into (a nested message
/// that was transfer-encoded has bytes of its own).
#[derive(Clone, Copy)]
pub struct PartRef<'m, 'x> {
    pub msg: &'m Message<'x>,
    pub id: usize,
}

impl<'m, 'x> PartRef<'m, 'x> {
    pub fn root(msg: &'m Message<'x>) -> Self {
        Self { msg, id: 0 }
    }

    pub fn part(&self) -> Option<&'m MessagePart<'x>> {
        self.msg.parts.get(self.id)
    }

    fn slice(&self, from: u32, to: u32) -> &'m [u8] {
        let raw: &'m [u8] = self.msg.raw_message.as_ref();
        let (from, to) = (from as usize, (to as usize).min(raw.len()));
        raw.get(from..to).unwrap_or_default()
    }

    /// The part's own header block (its MIME header), blank line included.
    pub fn header_bytes(&self) -> &'m [u8] {
        match self.part() {
            Some(p) => self.slice(p.offset_header, p.offset_body),
            None => &[],
        }
    }

    /// The part's body, still transfer-encoded.
    pub fn body_bytes(&self) -> &'m [u8] {
        match self.part() {
            Some(p) => self.slice(p.offset_body, p.offset_end),
            None => &[],
        }
    }

    /// The message a message/rfc822 part carries.
    pub fn nested(&self) -> Option<&'m Message<'x>> {
        match &self.part()?.body {
            PartType::Message(nested) => Some(nested),
            _ => None,
        }
    }

    fn children(&self) -> Option<&'m [u32]> {
        match &self.part()?.body {
            PartType::Multipart(children) => Some(children),
            _ => None,
        }
    }
}

/// The part a section's part number names: `1.2` is the second child of the first child; the
/// body of a single-part message is part 1; the parts of a message/rfc822 part are those of
/// the message inside it.
pub fn find_part<'m, 'x>(msg: &'m Message<'x>, path: &[NonZeroU32]) -> Option<PartRef<'m, 'x>> {
    let mut current = PartRef::root(msg);
    let mut at_message = true;
    for number in path {
        let n = number.get() as usize;
        if !at_message && let Some(nested) = current.nested() {
            current = PartRef::root(nested);
            at_message = true;
        }
        match current.children() {
            Some(children) => {
                let id = *children.get(n - 1)? as usize;
                current = PartRef {
                    msg: current.msg,
                    id,
                };
            }
            // A message that is not multipart has exactly one part: its body.
            None if at_message && n == 1 => {}
            None => return None,
        }
        at_message = false;
    }
    Some(current)
}

/// The message a HEADER / TEXT / HEADER.FIELDS section refers to: the whole message, or the
/// one inside a message/rfc822 part.
fn message_at<'m, 'x>(
    msg: &'m Message<'x>,
    path: Option<&[NonZeroU32]>,
) -> Option<PartRef<'m, 'x>> {
    match path {
        None => Some(PartRef::root(msg)),
        Some(path) => find_part(msg, path)?.nested().map(PartRef::root),
    }
}

/// The fields of a header block whose names are (or, with `keep == false`, are not) in `names`,
/// each with its continuation lines, followed by the blank line. The names go into a set once,
/// so a long list costs its length, not its length times every line of every message.
pub fn filter_header(block: &[u8], names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let listed: HashSet<Vec<u8>> = names
        .iter()
        .map(|n| n.as_ref().to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    let mut including = false;
    for line in block.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            including = listed.contains(&name.trim_ascii().to_ascii_lowercase()) == keep;
        }
        if including {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of `BODY[section]`. `msg` is `raw` parsed (`None` when it would not parse).
pub fn section_bytes(
    raw: &[u8],
    msg: Option<&Message<'_>>,
    section: Option<&Section<'_>>,
) -> Vec<u8> {
    let Some(section) = section else {
        return raw.to_vec();
    };
    let Some(msg) = msg else {
        // Nothing parsed: all of it is text, and it has no header.
        return match section {
            Section::Text(None) => raw.to_vec(),
            Section::Part(part) if part.0.as_ref() == [NonZeroU32::MIN] => raw.to_vec(),
            _ => Vec::new(),
        };
    };
    let path = |part: &Option<imap_codec::imap_types::fetch::Part>| {
        part.as_ref().map(|p| p.0.as_ref().to_vec())
    };
    let bytes = match section {
        Section::Part(part) => find_part(msg, part.0.as_ref()).map(|p| p.body_bytes().to_vec()),
        Section::Header(part) => {
            message_at(msg, path(part).as_deref()).map(|m| m.header_bytes().to_vec())
        }
        // The text of the whole message runs to the end of the bytes, epilogue included.
        Section::Text(None) => PartRef::root(msg).part().map(|p| {
            raw.get(p.offset_body as usize..)
                .unwrap_or_default()
                .to_vec()
        }),
        Section::Text(part) => {
            message_at(msg, path(part).as_deref()).map(|m| m.body_bytes().to_vec())
        }
        Section::HeaderFields(part, names) => message_at(msg, path(part).as_deref())
            .map(|m| filter_header(m.header_bytes(), names.as_ref(), true)),
        Section::HeaderFieldsNot(part, names) => message_at(msg, path(part).as_deref())
            .map(|m| filter_header(m.header_bytes(), names.as_ref(), false)),
        Section::Mime(part) => find_part(msg, part.0.as_ref()).map(|p| p.header_bytes().to_vec()),
    };
    bytes.unwrap_or_default()
}

/// `<origin.length>` of a partial fetch applied to the section's bytes.
pub fn partial(mut bytes: Vec<u8>, range: Option<(u32, NonZeroU32)>) -> Vec<u8> {
    if let Some((origin, length)) = range {
        let start = (origin as usize).min(bytes.len());
        let end = start.saturating_add(length.get() as usize).min(bytes.len());
        // In place, no second copy of a large body.
        bytes.truncate(end);
        bytes.drain(..start);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::core::Vec1;
    use imap_codec::imap_types::fetch::Part;

    pub const SIMPLE: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Hi\r\n\tthere\r\n\r\nLine one\r\nLine two\r\n";

    pub const MULTI: &[u8] = b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.test\r\nSubject: inner\r\n\r\ninner body\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX--\r\n";

    fn part(path: &[u32]) -> Part {
        Part(
            Vec1::try_from(
                path.iter()
                    .map(|&n| NonZeroU32::new(n).unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
    }

    fn names(list: &[&'static str]) -> Vec1<AString<'static>> {
        Vec1::try_from(
            list.iter()
                .map(|n| AString::try_from(*n).unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn get(raw: &[u8], section: Option<Section<'static>>) -> String {
        let msg = parse(raw);
        String::from_utf8(section_bytes(raw, msg.as_deref(), section.as_ref())).unwrap()
    }

    #[test]
    fn sections_of_a_simple_message() {
        let header = "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Hi\r\n\tthere\r\n\r\n";
        for (section, want) in [
            (None, std::str::from_utf8(SIMPLE).unwrap()),
            (Some(Section::Header(None)), header),
            (Some(Section::Text(None)), "Line one\r\nLine two\r\n"),
            (Some(Section::Part(part(&[1]))), "Line one\r\nLine two\r\n"),
            (Some(Section::Part(part(&[2]))), ""),
            (
                Some(Section::HeaderFields(None, names(&["subject", "X-None"]))),
                "Subject: Hi\r\n\tthere\r\n\r\n",
            ),
            (
                Some(Section::HeaderFieldsNot(None, names(&["SUBJECT", "to"]))),
                "From: Alice <alice@example.test>\r\n\r\n",
            ),
        ] {
            assert_eq!(get(SIMPLE, section.clone()), want, "{section:?}");
        }
    }

    #[test]
    fn sections_of_a_multipart_message() {
        for (section, want) in [
            (Section::Part(part(&[1])), "hello"),
            (
                Section::Part(part(&[2])),
                "From: c@example.test\r\nSubject: inner\r\n\r\ninner body",
            ),
            (
                Section::Header(Some(part(&[2]))),
                "From: c@example.test\r\nSubject: inner\r\n\r\n",
            ),
            (Section::Text(Some(part(&[2]))), "inner body"),
            (Section::Part(part(&[2, 1])), "inner body"),
            (Section::Part(part(&[3])), "AAEC"),
            (
                Section::Mime(part(&[1])),
                "Content-Type: text/plain; charset=utf-8\r\n\r\n",
            ),
            (Section::Part(part(&[4])), ""),
            (Section::Part(part(&[1, 1])), ""),
            (Section::Header(Some(part(&[1]))), ""),
        ] {
            assert_eq!(get(MULTI, Some(section.clone())), want, "{section:?}");
        }
        assert!(get(MULTI, Some(Section::Text(None))).starts_with("preamble\r\n--XX\r\n"));
    }

    #[test]
    fn unparseable_and_partial() {
        assert_eq!(get(b"", Some(Section::Header(None))), "");
        assert_eq!(get(b"", None), "");
        let one = NonZeroU32::new(4).unwrap();
        for (range, want) in [
            (None, &b"0123456789"[..]),
            (Some((0, one)), b"0123"),
            (Some((8, one)), b"89"),
            (Some((10, one)), b""),
            (Some((u32::MAX, one)), b""),
        ] {
            assert_eq!(partial(b"0123456789".to_vec(), range), want, "{range:?}");
        }
    }
}
