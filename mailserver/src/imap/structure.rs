//! ENVELOPE and BODY / BODYSTRUCTURE (RFC 3501 §7.4.2) built from a parsed message.

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{IString, Literal, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use mail_parser::{Addr, HeaderValue, Message, MimeHeaders, PartType};

use super::mime::PartRef;

/// A string for the wire: quoted when it can be, a literal otherwise (NUL bytes, which no
/// valid header holds, become spaces).
pub fn istring(value: &[u8]) -> IString<'static> {
    IString::try_from(value.to_vec()).unwrap_or_else(|_| {
        let cleaned: Vec<u8> = value
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        IString::Literal(
            Literal::try_from(cleaned)
                .unwrap_or_else(|_| Literal::try_from(&b""[..]).expect("empty literal is valid")),
        )
    })
}

pub fn nstring(value: Option<&[u8]>) -> NString<'static> {
    NString(value.map(istring))
}

/// Bytes as an NString that is always a literal (message content: sizes, not quoting, matter).
/// A NUL byte cannot travel in an IMAP literal; the rare message holding one gets spaces.
pub fn literal(mut value: Vec<u8>) -> NString<'static> {
    // Cleaned in place: a body is not copied on its way out.
    for b in value.iter_mut().filter(|b| **b == 0) {
        *b = b' ';
    }
    let literal = Literal::try_from(value)
        .unwrap_or_else(|_| Literal::try_from(&b""[..]).expect("empty literal is valid"));
    NString(Some(IString::Literal(literal)))
}

/// Unfolded, trimmed raw value of the first header field called `name` in a part.
fn raw_header<'m>(part: PartRef<'m, '_>, name: &str) -> Option<Vec<u8>> {
    let header = part
        .part()?
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let raw: &[u8] = part.msg.raw_message.as_ref();
    let value = raw.get(header.offset_start as usize..header.offset_end as usize)?;
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    Some(unfolded.trim_ascii().to_vec())
}

/// RFC 2047 Q-encoding for a display name that is not plain ASCII.
fn encode_word(name: &str) -> Vec<u8> {
    if name.is_ascii() {
        return name.as_bytes().to_vec();
    }
    let mut out = b"=?utf-8?q?".to_vec();
    for &b in name.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(b)
            }
            b' ' => out.push(b'_'),
            _ => out.extend_from_slice(format!("={b:02X}").as_bytes()),
        }
    }
    out.extend_from_slice(b"?=");
    out
}

fn address(addr: &Addr<'_>) -> Address<'static> {
    let (mailbox, host) = match addr.address.as_deref() {
        Some(a) => match a.rsplit_once('@') {
            Some((local, domain)) => (Some(local), Some(domain)),
            None => (Some(a), None),
        },
        None => (None, None),
    };
    Address {
        name: nstring(addr.name.as_deref().map(encode_word).as_deref()),
        adl: NString(None),
        mailbox: nstring(mailbox.map(str::as_bytes)),
        host: nstring(host.map(str::as_bytes)),
    }
}

fn addresses(part: PartRef<'_, '_>, name: &str) -> Vec<Address<'static>> {
    let Some(header) = part.part().and_then(|p| {
        p.headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
    }) else {
        return Vec::new();
    };
    match &header.value {
        HeaderValue::Address(mail_parser::Address::List(list)) => {
            list.iter().map(address).collect()
        }
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            let mut out = Vec::new();
            for group in groups {
                match &group.name {
                    // RFC 3501 group syntax: a start marker (NIL host) and an end marker.
                    Some(group_name) => {
                        out.push(Address {
                            name: NString(None),
                            adl: NString(None),
                            mailbox: nstring(Some(group_name.as_bytes())),
                            host: NString(None),
                        });
                        out.extend(group.addresses.iter().map(address));
                        out.push(Address {
                            name: NString(None),
                            adl: NString(None),
                            mailbox: NString(None),
                            host: NString(None),
                        });
                    }
                    None => out.extend(group.addresses.iter().map(address)),
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The ENVELOPE of a message (the root part of `msg`).
pub fn envelope(msg: &Message<'_>) -> Envelope<'static> {
    let root = PartRef::root(msg);
    let from = addresses(root, "From");
    let or_from = |list: Vec<Address<'static>>| if list.is_empty() { from.clone() } else { list };
    Envelope {
        date: nstring(raw_header(root, "Date").as_deref()),
        subject: nstring(raw_header(root, "Subject").as_deref()),
        sender: or_from(addresses(root, "Sender")),
        reply_to: or_from(addresses(root, "Reply-To")),
        from: from.clone(),
        to: addresses(root, "To"),
        cc: addresses(root, "Cc"),
        bcc: addresses(root, "Bcc"),
        in_reply_to: nstring(raw_header(root, "In-Reply-To").as_deref()),
        message_id: nstring(raw_header(root, "Message-ID").as_deref()),
    }
}

/// The envelope of a message that did not parse: all NIL.
pub fn empty_envelope() -> Envelope<'static> {
    Envelope {
        date: NString(None),
        subject: NString(None),
        from: Vec::new(),
        sender: Vec::new(),
        reply_to: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        in_reply_to: NString(None),
        message_id: NString(None),
    }
}

fn lines(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX)
}

fn size(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

fn params(
    attributes: Option<&[mail_parser::Attribute<'_>]>,
) -> Vec<(IString<'static>, IString<'static>)> {
    attributes
        .unwrap_or_default()
        .iter()
        .map(|a| (istring(a.name.as_bytes()), istring(a.value.as_bytes())))
        .collect()
}

fn disposition_tail(part: PartRef<'_, '_>) -> Option<Disposition<'static>> {
    let p = part.part()?;
    let disposition = p
        .content_disposition()
        .map(|d| (istring(d.ctype().as_bytes()), params(d.attributes())));
    let language = match p.content_language() {
        HeaderValue::Text(t) => vec![istring(t.as_bytes())],
        HeaderValue::TextList(list) => list.iter().map(|t| istring(t.as_bytes())).collect(),
        _ => Vec::new(),
    };
    Some(Disposition {
        disposition,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location: nstring(p.content_location().map(str::as_bytes)),
                extensions: Vec::new(),
            }),
        }),
    })
}

/// BODYSTRUCTURE (`extended`) or BODY of one part and everything below it.
pub fn structure(part: PartRef<'_, '_>, extended: bool) -> BodyStructure<'static> {
    let p = part.part();
    let content_type = p.and_then(|p| p.content_type());
    let (ctype, subtype) = match content_type {
        Some(ct) => (
            ct.ctype().to_string(),
            ct.subtype().unwrap_or("plain").to_string(),
        ),
        None => ("text".to_string(), "plain".to_string()),
    };
    if let Some(PartType::Multipart(children)) = p.map(|p| &p.body) {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .map(|&id| {
                structure(
                    PartRef {
                        msg: part.msg,
                        id: id as usize,
                    },
                    extended,
                )
            })
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istring(subtype.as_bytes()),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(content_type.and_then(|ct| ct.attributes())),
                    tail: disposition_tail(part),
                }),
            };
        }
    }
    let body = part.body_bytes();
    let mut parameter_list = params(content_type.and_then(|ct| ct.attributes()));
    if content_type.is_none() {
        parameter_list.push((istring(b"charset"), istring(b"us-ascii")));
    }
    let basic = BasicFields {
        parameter_list,
        id: nstring(p.and_then(|p| p.content_id()).map(str::as_bytes)),
        description: nstring(p.and_then(|p| p.content_description()).map(str::as_bytes)),
        content_transfer_encoding: istring(
            p.and_then(|p| p.content_transfer_encoding())
                .unwrap_or("7bit")
                .as_bytes(),
        ),
        size: size(body),
    };
    let specific = match (ctype.to_ascii_lowercase().as_str(), part.nested()) {
        ("text", _) => SpecificFields::Text {
            subtype: istring(subtype.as_bytes()),
            number_of_lines: lines(body),
        },
        ("message", Some(nested)) if subtype.eq_ignore_ascii_case("rfc822") => {
            SpecificFields::Message {
                envelope: Box::new(envelope(nested)),
                body_structure: Box::new(structure(PartRef::root(nested), extended)),
                number_of_lines: lines(body),
            }
        }
        _ => SpecificFields::Basic {
            r#type: istring(ctype.as_bytes()),
            subtype: istring(subtype.as_bytes()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: disposition_tail(part),
        }),
    }
}

/// The structure of a message past the parsing limits: its body as one opaque part, so no
/// client tries to show megabytes of nested parts as text.
pub fn opaque_structure(body: &[u8], extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: Vec::new(),
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7BIT"),
                size: size(body),
            },
            specific: SpecificFields::Basic {
                r#type: istring(b"APPLICATION"),
                subtype: istring(b"OCTET-STREAM"),
            },
        },
        extension_data: extended.then_some(SinglePartExtensionData {
            md5: NString(None),
            tail: None,
        }),
    }
}

/// The structure of a message that did not parse: one text/plain part of its bytes.
pub fn plain_structure(raw: &[u8]) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring(b"charset"), istring(b"us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7bit"),
                size: size(raw),
            },
            specific: SpecificFields::Text {
                subtype: istring(b"plain"),
                number_of_lines: lines(raw),
            },
        },
        extension_data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::mime::parse;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::fetch::MessageDataItem;
    use imap_codec::imap_types::response::{Data, Response};

    const SIMPLE: &[u8] = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>\r\nSubject: afternoon meeting\r\nTo: mooch@owatagu.example, \"J\xc3\xb6rg\" <j@x.example>\r\nMessage-Id: <B27397-0100000@Blurdybloop.example>\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

    const MULTI: &[u8] = b"From: a@example.test\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.test\r\nSubject: inner\r\n\r\ninner body\r\n--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX--\r\n";

    fn wire(item: MessageDataItem<'static>) -> String {
        let data = Data::Fetch {
            seq: std::num::NonZeroU32::MIN,
            items: Vec1::from(item),
        };
        let bytes = ResponseCodec::default()
            .encode(&Response::Data(data))
            .dump();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn literals_keep_their_length() {
        for (input, want) in [
            (&b"a\r\nb"[..], &b"a\r\nb"[..]),
            (b"a\0b", b"a b"),
            (b"", b""),
        ] {
            let NString(Some(IString::Literal(lit))) = literal(input.to_vec()) else {
                panic!("not a literal");
            };
            assert_eq!(lit.data(), want);
        }
    }

    #[test]
    fn envelopes() {
        let msg = parse(SIMPLE).unwrap();
        assert_eq!(
            wire(MessageDataItem::Envelope(envelope(&msg))),
            "* 1 FETCH (ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"afternoon meeting\" \
             ((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
             ((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
             ((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
             ((NIL NIL \"mooch\" \"owatagu.example\")(\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x.example\")) \
             NIL NIL NIL \"<B27397-0100000@Blurdybloop.example>\"))\r\n"
        );
    }

    #[test]
    fn body_structures() {
        let msg = parse(SIMPLE).unwrap();
        assert_eq!(
            wire(MessageDataItem::Body(structure(PartRef::root(&msg), false))),
            "* 1 FETCH (BODY (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 55 1))\r\n"
        );
        let msg = parse(MULTI).unwrap();
        let got = wire(MessageDataItem::BodyStructure(structure(
            PartRef::root(&msg),
            true,
        )));
        for want in [
            "((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)",
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 50 (NIL \"inner\" ((NIL NIL \"c\" \"example.test\"))",
            "(\"application\" \"pdf\" (\"name\" \"a.pdf\") NIL NIL \"base64\" 4 NIL (\"attachment\" (\"filename\" \"a.pdf\")) NIL NIL)",
            " \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL))\r\n",
            // The message inside: its own envelope, its body, its line count.
            "NIL NIL NIL NIL NIL) (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)",
        ] {
            assert!(got.contains(want), "{want}\n not in\n{got}");
        }
        assert_eq!(
            wire(MessageDataItem::Body(plain_structure(b"x\r\n"))),
            "* 1 FETCH (BODY (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1))\r\n"
        );
    }
}
