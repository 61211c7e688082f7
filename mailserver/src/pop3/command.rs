//! One POP3 command line (RFC 1939, RFC 2449 `CAPA`, RFC 5034 `AUTH`) parsed into a
//! [`Command`]. Pure: no state, no I/O.

/// A command as the client sent it; whether it is allowed now is the session's business.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The whole rest of the line: RFC 1939 lets a password contain spaces.
    Pass(String),
    /// `AUTH` alone lists the mechanisms; `AUTH PLAIN [initial-response]` starts one.
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top {
        message: u32,
        lines: u64,
    },
    Dele(u32),
    Rset,
    Noop,
    Quit,
    Capa,
}

// Hand-written so a password never reaches a log line or a failed assertion's output.
impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::User(user) => f.debug_tuple("User").field(user).finish(),
            Command::Pass(_) => f.write_str("Pass(<redacted>)"),
            Command::Auth { mechanism, initial } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field("initial", &initial.as_ref().map(|_| "<redacted>"))
                .finish(),
            Command::Stat => f.write_str("Stat"),
            Command::List(n) => f.debug_tuple("List").field(n).finish(),
            Command::Uidl(n) => f.debug_tuple("Uidl").field(n).finish(),
            Command::Retr(n) => f.debug_tuple("Retr").field(n).finish(),
            Command::Top { message, lines } => f
                .debug_struct("Top")
                .field("message", message)
                .field("lines", lines)
                .finish(),
            Command::Dele(n) => f.debug_tuple("Dele").field(n).finish(),
            Command::Rset => f.write_str("Rset"),
            Command::Noop => f.write_str("Noop"),
            Command::Quit => f.write_str("Quit"),
            Command::Capa => f.write_str("Capa"),
        }
    }
}

/// Why a line is not a command; the text is what the client is told after `-ERR`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty command")]
    Empty,
    #[error("command is not UTF-8")]
    NotUtf8,
    #[error("unknown command")]
    Unknown,
    #[error("{0}")]
    Syntax(&'static str),
}

/// RFC 1939: each argument may be up to 40 characters long.
const MAX_ARGUMENT: usize = 40;

/// Parses one line without its line ending (a trailing CR or LF is tolerated and dropped).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (keyword, rest) = match line.split_once(' ') {
        Some((keyword, rest)) => (keyword, Some(rest)),
        None => (line, None),
    };
    let keyword = keyword.to_ascii_uppercase();
    // PASS keeps its argument verbatim; every other command splits on spaces.
    if keyword == "PASS" {
        return match rest {
            Some(password) if !password.is_empty() => Ok(Command::Pass(password.to_string())),
            _ => Err(ParseError::Syntax("PASS needs a password")),
        };
    }
    let args: Vec<&str> = rest
        .map(|rest| rest.split(' ').filter(|a| !a.is_empty()).collect())
        .unwrap_or_default();
    match keyword.as_str() {
        "USER" => match args.as_slice() {
            [name] if name.len() <= 255 => Ok(Command::User((*name).to_string())),
            [_] => Err(ParseError::Syntax("user name too long")),
            _ => Err(ParseError::Syntax("USER needs exactly one name")),
        },
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [mechanism] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: None,
            }),
            [mechanism, initial] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: Some((*initial).to_string()),
            }),
            _ => Err(ParseError::Syntax(
                "AUTH takes a mechanism and an initial response",
            )),
        },
        "STAT" => none(&args, Command::Stat),
        "RSET" => none(&args, Command::Rset),
        "NOOP" => none(&args, Command::Noop),
        "QUIT" => none(&args, Command::Quit),
        "CAPA" => none(&args, Command::Capa),
        "LIST" => optional_message(&args).map(Command::List),
        "UIDL" => optional_message(&args).map(Command::Uidl),
        "RETR" => one_message(&args).map(Command::Retr),
        "DELE" => one_message(&args).map(Command::Dele),
        "TOP" => match args.as_slice() {
            [message, lines] => Ok(Command::Top {
                message: message_number(message)?,
                lines: number(lines).ok_or(ParseError::Syntax("invalid line count"))?,
            }),
            _ => Err(ParseError::Syntax(
                "TOP needs a message number and a line count",
            )),
        },
        _ => Err(ParseError::Unknown),
    }
}

fn none(args: &[&str], command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax("this command takes no arguments"))
    }
}

fn optional_message(args: &[&str]) -> Result<Option<u32>, ParseError> {
    match args {
        [] => Ok(None),
        [n] => message_number(n).map(Some),
        _ => Err(ParseError::Syntax("at most one message number")),
    }
}

fn one_message(args: &[&str]) -> Result<u32, ParseError> {
    match args {
        [n] => message_number(n),
        _ => Err(ParseError::Syntax("exactly one message number")),
    }
}

/// A message number: decimal digits only, 1 or more; whether it exists is checked later.
fn message_number(arg: &str) -> Result<u32, ParseError> {
    number(arg)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or(ParseError::Syntax("invalid message number"))
}

/// Plain decimal digits (no sign, no blanks), at most [`MAX_ARGUMENT`] of them.
fn number(arg: &str) -> Option<u64> {
    if arg.is_empty() || arg.len() > MAX_ARGUMENT || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64 still means "a huge count", which TOP may clamp.
    Some(arg.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        use Command::*;
        let auth = |m: Option<&str>, i: Option<&str>| Auth {
            mechanism: m.map(str::to_string),
            initial: i.map(str::to_string),
        };
        let cases: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            (
                b"USER alice@example.test",
                Ok(User("alice@example.test".into())),
            ),
            (b"user Alice\r\n", Ok(User("Alice".into()))),
            (b"PASS s3cret", Ok(Pass("s3cret".into()))),
            (
                b"PASS with spaces  inside ",
                Ok(Pass("with spaces  inside ".into())),
            ),
            (b"pass x\r", Ok(Pass("x".into()))),
            (b"STAT", Ok(Stat)),
            (b"stat", Ok(Stat)),
            (b"LIST", Ok(List(None))),
            (b"LIST 2", Ok(List(Some(2)))),
            (b"UIDL", Ok(Uidl(None))),
            (b"UIDL 17", Ok(Uidl(Some(17)))),
            (b"RETR 1", Ok(Retr(1))),
            (
                b"TOP 1 0",
                Ok(Top {
                    message: 1,
                    lines: 0,
                }),
            ),
            (
                b"TOP 3 10",
                Ok(Top {
                    message: 3,
                    lines: 10,
                }),
            ),
            (
                b"TOP 3 99999999999999999999999",
                Ok(Top {
                    message: 3,
                    lines: u64::MAX,
                }),
            ),
            (b"DELE 4", Ok(Dele(4))),
            (b"RSET", Ok(Rset)),
            (b"NOOP", Ok(Noop)),
            (b"QUIT", Ok(Quit)),
            (b"CAPA", Ok(Capa)),
            (b"AUTH", Ok(auth(None, None))),
            (b"AUTH plain", Ok(auth(Some("PLAIN"), None))),
            (
                b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                Ok(auth(Some("PLAIN"), Some("AGFsaWNlAHNlY3JldA=="))),
            ),
            (b"AUTH PLAIN =", Ok(auth(Some("PLAIN"), Some("=")))),
            // Bad input: every one is an error, none a panic.
            (b"", Err(ParseError::Empty)),
            (b"   ", Err(ParseError::Empty)),
            (b"\r\n", Err(ParseError::Empty)),
            (b"\xff\xfe", Err(ParseError::NotUtf8)),
            (b"APOP alice 0123", Err(ParseError::Unknown)),
            (b"HELO", Err(ParseError::Unknown)),
            (
                b"USER",
                Err(ParseError::Syntax("USER needs exactly one name")),
            ),
            (
                b"USER a b",
                Err(ParseError::Syntax("USER needs exactly one name")),
            ),
            (b"PASS", Err(ParseError::Syntax("PASS needs a password"))),
            (b"PASS ", Err(ParseError::Syntax("PASS needs a password"))),
            (
                b"STAT 1",
                Err(ParseError::Syntax("this command takes no arguments")),
            ),
            (
                b"QUIT now",
                Err(ParseError::Syntax("this command takes no arguments")),
            ),
            (
                b"RETR",
                Err(ParseError::Syntax("exactly one message number")),
            ),
            (b"RETR 0", Err(ParseError::Syntax("invalid message number"))),
            (
                b"RETR -1",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"RETR +1",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"RETR 1x",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"RETR 4294967296",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"RETR 1 2",
                Err(ParseError::Syntax("exactly one message number")),
            ),
            (
                b"DELE",
                Err(ParseError::Syntax("exactly one message number")),
            ),
            (
                b"LIST 1 2",
                Err(ParseError::Syntax("at most one message number")),
            ),
            (
                b"LIST abc",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"TOP 1",
                Err(ParseError::Syntax(
                    "TOP needs a message number and a line count",
                )),
            ),
            (b"TOP 1 -5", Err(ParseError::Syntax("invalid line count"))),
            (
                b"TOP 0 5",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"AUTH PLAIN a b",
                Err(ParseError::Syntax(
                    "AUTH takes a mechanism and an initial response",
                )),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn password_is_not_printed() {
        let shown = format!("{:?}", parse(b"PASS hunter2").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", parse(b"AUTH PLAIN AGFsaWNlAGh1bnRlcjI=").unwrap());
        assert!(!shown.contains("AGFsaWNl"), "{shown}");
    }

    #[test]
    fn every_prefix_of_a_command_is_safe() {
        // Truncated input of any length parses to something or an error, never a panic.
        let line = "TOP 12 345\r\n".as_bytes();
        for end in 0..=line.len() {
            let _ = parse(&line[..end]);
        }
        let multibyte = "USER \u{e9}l\u{e8}ve".as_bytes();
        for end in 0..=multibyte.len() {
            let _ = parse(&multibyte[..end]);
        }
    }
}
