//! Command syntax imap-codec does not read yet, rewritten into a command it does read plus
//! what was cut off. Only `CREATE name (USE (\Attr))` (RFC 6154 CREATE-SPECIAL-USE) so far.
//! A line with a literal is left alone: it is answered `BAD` as before.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{Command, CommandBody};

/// What the codec's command left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extension {
    /// The special use asked for by CREATE, as the store names it (`archive`, ...), or the
    /// attribute that no folder can have (`Err`, for `NO [USEATTR]`).
    CreateUse(Result<&'static str, String>),
}

/// The store's name of an RFC 6154 attribute that a created folder may carry.
fn special_use(attribute: &str) -> Result<&'static str, String> {
    let name = attribute.strip_prefix('\\').unwrap_or(attribute);
    Ok(match name.to_ascii_lowercase().as_str() {
        "archive" => "archive",
        "drafts" => "drafts",
        "junk" => "junk",
        "sent" => "sent",
        "trash" => "trash",
        _ => return Err(attribute.to_string()),
    })
}

/// `tag CREATE mailbox (USE (\Attr))` → `tag CREATE mailbox` and the attribute.
fn create_special_use(line: &str) -> Option<(String, Extension)> {
    let (tag, rest) = line.split_once(' ')?;
    let (verb, rest) = rest.split_once(' ')?;
    if !verb.eq_ignore_ascii_case("CREATE") {
        return None;
    }
    let rest = rest.strip_suffix("))")?;
    let at = rest.to_ascii_uppercase().rfind(" (USE (")?;
    let (mailbox, attributes) = (&rest[..at], &rest[at + " (USE (".len()..]);
    let mut attributes = attributes.split(' ').filter(|a| !a.is_empty());
    let first = attributes.next()?;
    // One folder has one use here: a second attribute cannot be stored.
    let wanted = match attributes.next() {
        None => special_use(first),
        Some(second) => Err(second.to_string()),
    };
    Some((
        format!("{tag} CREATE {mailbox}\r\n"),
        Extension::CreateUse(wanted),
    ))
}

/// The command and extension a line holds, when it is one of the forms above.
pub fn parse(line: &[u8]) -> Option<(Command<'static>, Extension)> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\n')?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains(['\r', '\n']) {
        return None;
    }
    let (rewritten, extension) = create_special_use(line)?;
    let (rest, command) = CommandCodec::default().decode(rewritten.as_bytes()).ok()?;
    if !rest.is_empty() || !matches!(command.body, CommandBody::Create { .. }) {
        return None;
    }
    Some((command.into_static(), extension))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_special_use_lines() {
        let (command, ext) = parse(b"a1 CREATE MyArchive (USE (\\Archive))\r\n").unwrap();
        assert_eq!(command.tag.as_ref(), "a1");
        assert!(matches!(command.body, CommandBody::Create { .. }));
        assert_eq!(ext, Extension::CreateUse(Ok("archive")));
        let (_, ext) = parse(b"a2 create \"My Junk\" (use (\\junk))\n").unwrap();
        assert_eq!(ext, Extension::CreateUse(Ok("junk")));
        let (_, ext) = parse(b"a3 CREATE x (USE (\\All))\r\n").unwrap();
        assert_eq!(ext, Extension::CreateUse(Err("\\All".into())));
        let (_, ext) = parse(b"a4 CREATE x (USE (\\Sent \\Trash))\r\n").unwrap();
        assert_eq!(ext, Extension::CreateUse(Err("\\Trash".into())));
        for bad in [
            &b"a1 CREATE x\r\n"[..],
            b"a1 CREATE (USE (\\Archive))\r\n",
            b"a1 DELETE x (USE (\\Archive))\r\n",
            b"a1 CREATE {3}\r\nabc (USE (\\Archive))\r\n",
            b"a1 CREATE x (USE ())\r\n",
            b"\xff\xfe\r\n",
            b"",
        ] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
