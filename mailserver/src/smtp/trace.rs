//! The trace headers put in front of every accepted message (RFC 5321 section 4.4) and the
//! message id that names the transaction in the `250` reply and in the logs.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// What the trace headers record about one transaction.
pub struct Trace<'a> {
    /// The envelope sender, `""` for the null sender.
    pub sender: &'a str,
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    pub peer: IpAddr,
    /// This server's name.
    pub hostname: &'a str,
    /// `SMTP`, `ESMTP` or `UTF8SMTP` (RFC 3848, RFC 6531).
    pub protocol: &'a str,
    pub id: &'a str,
    pub date: DateTime<Utc>,
}

impl Trace<'_> {
    /// `Return-Path:` and `Received:` header lines, each ending in CRLF. No reverse DNS lookup
    /// is made, so the client is named by its HELO and its address literal.
    pub fn headers(&self) -> Vec<u8> {
        let ip = match self.peer.to_canonical() {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        format!(
            "Return-Path: <{sender}>\r\n\
             Received: from {helo} ({ip})\r\n\
             \tby {host} with {protocol} id {id};\r\n\
             \t{date}\r\n",
            sender = clean(self.sender),
            helo = clean(self.helo),
            host = clean(self.hostname),
            protocol = self.protocol,
            id = self.id,
            date = self.date.to_rfc2822(),
        )
        .into_bytes()
    }
}

/// Keeps client-given text from breaking the header: no controls, blanks or comment delimiters.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>' | ';') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A new transaction id: 16 hex digits, random per process plus a counter, so ids from many
/// pods do not collide in practice and never repeat within one.
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = RandomState::new().hash_one(std::process::id());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016X}", seed.rotate_left(20) ^ n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn headers() {
        let date = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        for (sender, helo, peer, protocol, want) in [
            (
                "a@b.test",
                "client.test",
                "192.0.2.1",
                "ESMTP",
                "Return-Path: <a@b.test>\r\nReceived: from client.test ([192.0.2.1])\r\n\
                 \tby mx.test with ESMTP id ID1;\r\n\tTue, 2 Jan 2024 03:04:05 +0000\r\n",
            ),
            (
                "",
                "[::1]",
                "::1",
                "SMTP",
                "Return-Path: <>\r\nReceived: from [::1] ([IPv6:::1])\r\n\
                 \tby mx.test with SMTP id ID1;\r\n\tTue, 2 Jan 2024 03:04:05 +0000\r\n",
            ),
            (
                // An IPv4 client on a dual-stack socket; a HELO that tries to forge a comment.
                "a@b.test",
                "x\t(evil)",
                "::ffff:192.0.2.7",
                "UTF8SMTP",
                "Return-Path: <a@b.test>\r\nReceived: from x__evil_ ([192.0.2.7])\r\n\
                 \tby mx.test with UTF8SMTP id ID1;\r\n\tTue, 2 Jan 2024 03:04:05 +0000\r\n",
            ),
        ] {
            let trace = Trace {
                sender,
                helo,
                peer: peer.parse().unwrap(),
                hostname: "mx.test",
                protocol,
                id: "ID1",
                date,
            };
            assert_eq!(String::from_utf8(trace.headers()).unwrap(), want);
        }
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16));
    }
}
