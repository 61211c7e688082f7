//! Parsing a stored message within limits (issue 10).
//!
//! mail-parser walks un-encoded nesting with a loop of its own, but the tree it returns is as
//! deep as the message, and whatever walks or drops that tree recursively overflows the stack
//! on a message of 100,000 nested parts. Inside a transfer-encoded message/rfc822 part it even
//! recurses itself. So a linear pre-scan of the bytes bounds the number of parts before
//! mail-parser runs, the tree is then measured with an explicit stack, and a message past the
//! limits is served as one opaque part: its top-level header parsed, its body bytes as they are.

use std::borrow::Cow;
use std::ops::Deref;

use mail_parser::{Message, MessageParser, PartType};

/// Deepest nesting of multiparts and message/rfc822 parts that is parsed.
pub const MAX_DEPTH: usize = 32;
/// Most MIME parts a parsed message may have.
pub const MAX_PARTS: usize = 5_000;
/// The pre-scan's bound on parts is an over-estimate (any run of dashes counts, as
/// mail-parser finds boundaries mid-line), so it is looser than [`MAX_PARTS`]: a long patch
/// or a text full of `--` is still parsed. mail-parser builds even this many nested parts
/// with a loop, and the tree is measured exactly afterwards.
const PRESCAN_PARTS: usize = 50_000;
/// Bytes mail-parser may scan looking for boundaries. Each multipart seeks its boundary and,
/// when it is missing, scans to the end and starts over: multiparts times length is its time
/// (2,000 of them before 4 MB took 7.5 s). This is about two seconds.
const MAX_BOUNDARY_SCAN: usize = 1 << 31;
/// mail-parser parses transfer-encoded message/rfc822 parts this many levels deep (its
/// `MAX_NESTED_ENCODED`); deeper ones stay bytes.
const ENCODED_LEVELS: usize = 3;
/// Transfer-encoded messages the pre-scan decodes in one message: each costs a pass.
const MAX_ENCODED_MESSAGES: usize = 8;
/// Parts allowed inside a transfer-encoded message: mail-parser copies that tree recursively.
const MAX_ENCODED_PARTS: usize = 256;

/// A parsed message. Dropped without recursion; `opaque` when it was past the limits, and then
/// it holds only the top-level header, with one body part of all the bytes after it.
pub struct Parsed<'x> {
    msg: Message<'x>,
    opaque: bool,
}

impl<'x> Deref for Parsed<'x> {
    type Target = Message<'x>;

    fn deref(&self) -> &Message<'x> {
        &self.msg
    }
}

impl Parsed<'_> {
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }
}

impl Drop for Parsed<'_> {
    fn drop(&mut self) {
        // Take nested messages out of their parts so no drop recurses.
        let mut stack = vec![std::mem::take(&mut self.msg)];
        while let Some(mut msg) = stack.pop() {
            for part in &mut msg.parts {
                if matches!(part.body, PartType::Message(_))
                    && let PartType::Message(inner) = std::mem::take(&mut part.body)
                {
                    stack.push(inner);
                }
            }
        }
    }
}

/// Parses a stored message; `None` when it has no header at all.
pub fn parse(raw: &[u8]) -> Option<Parsed<'_>> {
    let mut encoded_budget = MAX_ENCODED_MESSAGES;
    if prescan(raw, 0, &mut encoded_budget) {
        match guarded(|| MessageParser::default().parse(raw)) {
            Some(Some(msg)) => {
                let parsed = Parsed { msg, opaque: false };
                if tree_within_limits(&parsed) {
                    return Some(parsed);
                }
            }
            Some(None) => return None,
            None => {}
        }
    }
    opaque(raw)
}

/// Runs mail-parser, `None` if it panics: it asserts on some malformed structures in debug
/// builds (`Invalid part ID, could not find multipart.`), and no message may take a session
/// down with it.
fn guarded<'x>(parse: impl FnOnce() -> Option<Message<'x>>) -> Option<Option<Message<'x>>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).ok()
}

/// The top-level header parsed, everything after it one body part.
fn opaque(raw: &[u8]) -> Option<Parsed<'_>> {
    let mut msg = guarded(|| MessageParser::default().parse_headers(raw)).flatten()?;
    let root = msg.parts.first_mut()?;
    root.offset_header = 0;
    root.offset_body = u32::try_from(header_end(raw)).unwrap_or(u32::MAX);
    root.offset_end = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    root.body = PartType::Binary(Cow::Borrowed(&[]));
    Some(Parsed { msg, opaque: true })
}

/// Where the top-level header ends: after its blank line, or at the end of the bytes.
pub fn header_end(raw: &[u8]) -> usize {
    let mut offset = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        offset += line.len();
        if line == b"\r\n" || line == b"\n" {
            return offset;
        }
    }
    raw.len()
}

/// Whether the parsed tree is within [`MAX_DEPTH`] and [`MAX_PARTS`], walked with a stack.
fn tree_within_limits(msg: &Message<'_>) -> bool {
    let mut stack = vec![(msg, 0usize, 0usize)];
    let mut parts = 0;
    while let Some((msg, id, depth)) = stack.pop() {
        parts += 1;
        if parts > MAX_PARTS || depth > MAX_DEPTH {
            return false;
        }
        match msg.parts.get(id).map(|p| &p.body) {
            Some(PartType::Multipart(children)) => {
                stack.extend(children.iter().map(|&c| (msg, c as usize, depth + 1)));
            }
            Some(PartType::Message(inner)) => stack.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    true
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Runs of two or more dashes: every MIME boundary delimiter is one.
fn dash_runs(bytes: &[u8]) -> usize {
    bytes
        .windows(2)
        .enumerate()
        .filter(|&(i, w)| w == b"--" && (i == 0 || bytes[i - 1] != b'-'))
        .count()
}

/// Whether mail-parser's tree of `bytes` is certainly small: a part starts at the top, after a
/// boundary delimiter (a run of dashes) or after a Content-Type header (a message/rfc822 part
/// or a part with no type inside a digest follows a delimiter), so their count bounds the parts
/// and the depth. Header blocks that look like transfer-encoded messages are decoded (to the
/// end of the bytes: an over-estimate is safe) and scanned the same way, as mail-parser will
/// parse them. One pass per level, a few decoded passes per message.
fn prescan(bytes: &[u8], level: usize, encoded_budget: &mut usize) -> bool {
    let limit = if level == 0 {
        PRESCAN_PARTS
    } else {
        MAX_ENCODED_PARTS
    };
    let mut count = 1 + dash_runs(bytes);
    let mut digest = false;
    let mut multiparts = 0usize;
    // The current run of non-blank lines, as a header block.
    let (mut typed, mut message, mut encoding) = (false, false, None);
    let (mut in_type, mut in_encoding) = (false, false);
    let mut offset = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        offset += line.len();
        let content = line.trim_ascii_end();
        if content.is_empty() {
            let untyped_in_digest = digest && !typed;
            if let Some(base64) = encoding
                && (message || untyped_in_digest)
                && level < ENCODED_LEVELS
            {
                if *encoded_budget == 0 {
                    return false;
                }
                *encoded_budget -= 1;
                let rest = &bytes[offset..];
                let decoded = if base64 {
                    decode_base64(rest)
                } else {
                    decode_quoted_printable(rest)
                };
                if !prescan(&decoded, level + 1, encoded_budget) {
                    return false;
                }
            }
            (typed, message, encoding) = (false, false, None);
            (in_type, in_encoding) = (false, false);
            continue;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            in_type = starts_with_ignore_case(content, b"content-type");
            in_encoding = starts_with_ignore_case(content, b"content-transfer-encoding");
            if in_type {
                typed = true;
                count += 1;
                if count > limit {
                    return false;
                }
            }
        }
        if in_type {
            message |= contains_ignore_case(content, b"message/");
            if starts_with_ignore_case(content, b"content-type")
                && contains_ignore_case(content, b"multipart/")
            {
                multiparts += 1;
                if multiparts.saturating_mul(bytes.len()) > MAX_BOUNDARY_SCAN {
                    return false;
                }
            }
            digest |= contains_ignore_case(content, b"digest");
        }
        if in_encoding {
            if contains_ignore_case(content, b"base64") {
                encoding = Some(true);
            } else if contains_ignore_case(content, b"quoted-printable") {
                encoding = Some(false);
            }
        }
    }
    count <= limit
}

/// Base64 that skips whatever is not in the alphabet (as lenient as any decoder can be).
fn decode_base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in text {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable: `=XX` is a byte, `=` at a line end joins lines, the rest is literal.
fn decode_quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match (text[i], text.get(i + 1), text.get(i + 2)) {
            (b'=', Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                out.push(hex(a).unwrap_or(0) << 4 | hex(b).unwrap_or(0));
                i += 3;
            }
            (b'=', Some(b'\r'), Some(b'\n')) => i += 3,
            (b'=', Some(b'\n'), _) => i += 2,
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Vec<u8> {
        let mut raw = b"Subject: deep\r\n".to_vec();
        raw.extend(b"Content-Type: message/rfc822\r\n\r\n".repeat(levels));
        raw.extend_from_slice(b"the end\r\n");
        raw
    }

    fn multipart(parts: usize) -> Vec<u8> {
        let mut raw =
            b"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for _ in 0..parts {
            raw.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        raw.extend_from_slice(b"--b--\r\n");
        raw
    }

    /// Multiparts whose boundaries never come, then `pad` bytes: mail-parser scans the padding
    /// once for each of them.
    fn missing_boundaries(parts: usize, pad: usize) -> Vec<u8> {
        let mut raw = b"Subject: q\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n".to_vec();
        for i in 0..parts {
            raw.extend(
                format!("--top\r\nContent-Type: multipart/mixed; boundary=gone{i}\r\n\r\nx\r\n")
                    .as_bytes(),
            );
        }
        raw.extend(vec![b'y'; pad]);
        raw.extend_from_slice(b"\r\n--top--\r\n");
        raw
    }

    fn text_with_dashes(lines: usize) -> Vec<u8> {
        let mut raw = b"Subject: patch\r\n\r\n".to_vec();
        raw.extend(b"-\ti--;\r\n".repeat(lines));
        raw
    }

    fn base64_of(bytes: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(76) {
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// A message/rfc822 part in base64 holding `inner`.
    fn encoded(inner: &[u8]) -> Vec<u8> {
        let mut raw = b"Subject: wrapped\r\nContent-Type: message/rfc822\r\n\
                        Content-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
        raw.extend(base64_of(inner));
        raw
    }

    #[test]
    fn limits() {
        for (name, raw, opaque) in [
            ("plain", b"Subject: hi\r\n\r\nhello\r\n".to_vec(), false),
            ("nested to the limit", nested(MAX_DEPTH + 1), false),
            ("nested too deep", nested(MAX_DEPTH + 2), true),
            ("the issue's poison", nested(100_000), true),
            ("many parts", multipart(100), false),
            ("too many parts", multipart(MAX_PARTS + 1), true),
            ("past the pre-scan", multipart(PRESCAN_PARTS), true),
            ("nested, parsed, too deep", nested(PRESCAN_PARTS - 10), true),
            ("dashes in text", text_with_dashes(PRESCAN_PARTS / 2), false),
            (
                "boundaries missing",
                missing_boundaries(2_000, 4 << 20),
                true,
            ),
            (
                "boundaries missing, small",
                missing_boundaries(20, 1 << 10),
                false,
            ),
            ("encoded, small", encoded(&nested(3)), false),
            ("encoded, deep inside", encoded(&nested(50_000)), true),
            ("encoded twice", encoded(&encoded(&nested(50_000))), true),
            ("encoded, wide inside", encoded(&multipart(1_000)), true),
        ] {
            let parsed = parse(&raw).unwrap_or_else(|| panic!("{name}: parsed"));
            assert_eq!(parsed.is_opaque(), opaque, "{name}");
            assert!(parsed.subject().is_some(), "{name}: the header is kept");
        }
        assert!(parse(b"").is_none());
    }

    #[test]
    fn opaque_parts_cut_at_the_header() {
        let raw = nested(100_000);
        let parsed = parse(&raw).unwrap();
        let root = &parsed.parts[0];
        let body = &raw[root.offset_body as usize..root.offset_end as usize];
        assert!(body.starts_with(b"Content-Type: message/rfc822\r\n\r\nContent-Type"));
        assert!(body.ends_with(b"the end\r\n"));
        assert_eq!(
            &raw[..root.offset_body as usize],
            b"Subject: deep\r\nContent-Type: message/rfc822\r\n\r\n"
        );
    }

    #[test]
    fn header_ends() {
        for (raw, want) in [
            (&b"A: b\r\n\r\nbody"[..], 8),
            (b"A: b\n\nbody", 6),
            (b"A: b\r\n", 6),
            (b"\r\nbody", 2),
            (b"", 0),
        ] {
            assert_eq!(header_end(raw), want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn decoders() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(decode_quoted_printable(b"a=3Db=\r\nc=ZZ"), b"a=bc=ZZ");
    }

    const FRAGMENTS: &[&[u8]] = &[
        b"Subject: x\r\n",
        b"From: \"A\" <a@example.test>, (comment (nested)) b@example.test\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: multipart/digest; boundary=\"c\"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: message/global\r\n",
        b"Content-Type:\r\n message/rfc822\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"\r\n",
        b"\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--c\r\n",
        b"--c--",
        b"Q29udGVudC1UeXBlOiBtZXNzYWdlL3JmYzgyMg0KDQo=\r\n",
        b"Content-Type: message/rfc822=0D=0A=0D=0A",
        b"body text\r\n",
    ];

    /// Random MIME-shaped messages: parsing and every walk over the result finish without a
    /// panic, and an opaque result still cuts header from body.
    #[test]
    fn noise() {
        use imap_codec::imap_types::fetch::Section;
        use rand::SeedableRng;

        use crate::imap::mime::{PartRef, section_bytes};
        use crate::imap::structure::{envelope, opaque_structure, structure};

        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        for _ in 0..2_000 {
            let raw = crate::noise::random_input(&mut rng, FRAGMENTS, 60, 40);
            let Some(parsed) = parse(&raw) else {
                continue;
            };
            let root = PartRef::root(&parsed);
            let _ = envelope(&parsed);
            let _ = if parsed.is_opaque() {
                opaque_structure(root.body_bytes(), true)
            } else {
                structure(root, true)
            };
            for section in [None, Some(Section::Header(None)), Some(Section::Text(None))] {
                let _ = section_bytes(&raw, Some(&parsed), section.as_ref());
            }
        }
    }
}
