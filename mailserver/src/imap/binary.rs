//! FETCH BINARY[section] and BINARY.SIZE[section] (RFC 3516): a part's content with its
//! Content-Transfer-Encoding undone, so a client needs no base64 or quoted-printable decoder.
//! Decoding is linear in the part's size; a NUL in the result travels as a literal8.

use std::borrow::Cow;
use std::num::NonZeroU32;

use base64::Engine;
use imap_codec::imap_types::core::{LiteralMode, NString8};
use imap_codec::imap_types::extensions::binary::Literal8;
use mail_parser::{Message, MimeHeaders, PartType};

use super::mime::find_part;
use super::structure::literal;

/// The decoded content of `section` (the whole message, as stored, when it is empty); `None`
/// when there is no such part, it is a multipart, or its encoding is unknown (RFC 3516's
/// UNKNOWN-CTE: the item is left out).
pub fn decoded(raw: &[u8], msg: Option<&Message<'_>>, section: &[NonZeroU32]) -> Option<Vec<u8>> {
    if section.is_empty() {
        return Some(raw.to_vec());
    }
    let part_ref = find_part(msg?, section)?;
    let part = part_ref.part()?;
    if matches!(part.body, PartType::Multipart(_)) {
        return None;
    }
    let body = part_ref.body_bytes();
    let encoding = part
        .content_transfer_encoding()
        .map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("7bit" | "8bit" | "binary") => Some(body.to_vec()),
        Some("base64") => Some(base64_lenient(body)),
        Some("quoted-printable") => Some(quoted_printable(body)),
        Some(_) => None,
    }
}

/// Base64 as mail carries it: line breaks and stray characters skipped, padding optional.
fn base64_lenient(body: &[u8]) -> Vec<u8> {
    let mut clean: Vec<u8> = body
        .iter()
        .copied()
        .take_while(|&b| b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        .collect();
    // A lone trailing character carries no whole byte.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&clean)
        .unwrap_or_default()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` is a byte, `=` at a line end joins lines; anything
/// malformed is kept as it is.
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'=' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        match (body.get(i + 1), body.get(i + 2)) {
            (Some(b'\r'), Some(b'\n')) => i += 3,
            (Some(b'\n'), _) => i += 2,
            (Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                out.push(hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0));
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

/// Content as BINARY returns it: a plain literal, or a literal8 when it holds a NUL.
pub fn value(bytes: Vec<u8>) -> NString8<'static> {
    if bytes.contains(&0) {
        NString8::Literal8(Literal8 {
            data: Cow::Owned(bytes),
            mode: LiteralMode::Sync,
        })
    } else {
        NString8::NString(literal(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_encodings_undone() {
        assert_eq!(base64_lenient(b"SGVs\r\nbG8=\r\n"), b"Hello");
        assert_eq!(base64_lenient(b"SGVsbG8"), b"Hello");
        assert_eq!(base64_lenient(b"AAEC"), [0, 1, 2]);
        assert_eq!(base64_lenient(b"!!"), b"");
        assert_eq!(quoted_printable(b"a=3Db=\r\nc=\nd"), b"a=bcd");
        assert_eq!(quoted_printable(b"50=25 =ZZ ="), b"50% =ZZ =");
    }

    #[test]
    fn parts_decoded() {
        let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nzz\r\n--b--\r\n";
        let parsed = super::super::parse::parse(raw).expect("parses");
        let parsed: &Message<'_> = &parsed;
        let n = |v: u32| NonZeroU32::new(v).unwrap();
        assert_eq!(
            decoded(raw, Some(parsed), &[n(1)]).unwrap(),
            "café".as_bytes()
        );
        assert_eq!(decoded(raw, Some(parsed), &[n(2)]).unwrap(), [0, 1, 2, 3]);
        assert_eq!(decoded(raw, Some(parsed), &[n(3)]), None);
        assert_eq!(decoded(raw, Some(parsed), &[n(9)]), None);
        assert_eq!(decoded(raw, Some(parsed), &[]).unwrap(), raw);
        assert!(matches!(value(vec![0, 1]), NString8::Literal8(_)));
        assert!(matches!(value(b"x".to_vec()), NString8::NString(_)));
    }
}
