//! Delivery status notifications (RFC 3464): one `multipart/report; report-type=delivery-status`
//! message per queued message and batch of recipient states, from `MAILER-DAEMON@<hostname>`
//! to the envelope sender, with the original header (or the whole message under RET=FULL).

use chrono::{DateTime, Utc};

use super::Ret;
use crate::dkim::split_message;

/// What happened to a recipient, as a DSN's `Action:` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's part of a report.
#[derive(Clone, Debug)]
pub struct Entry {
    pub recipient: String,
    pub orcpt: Option<String>,
    pub action: Action,
    /// Enhanced status code, `5.1.1`.
    pub status: String,
    /// The remote reply or our reason.
    pub diagnostic: String,
    pub remote_mta: Option<String>,
}

/// Everything a report is made from.
pub struct Report<'a> {
    pub hostname: &'a str,
    /// The envelope sender of the original message: the report's recipient.
    pub to: &'a str,
    pub env_id: Option<&'a str>,
    pub arrival: DateTime<Utc>,
    /// When retries stop (for delay notices).
    pub retry_until: DateTime<Utc>,
    pub ret: Option<Ret>,
    pub entries: &'a [Entry],
    /// The original message as it was queued.
    pub original: &'a [u8],
    /// Makes the boundary and Message-ID unique.
    pub unique: &'a str,
}

/// Whether a recipient's NOTIFY asks for a report of `action` (RFC 3461 §4.1: the default is
/// FAILURE and DELAY).
pub fn wanted(notify: Option<&str>, action: Action) -> bool {
    let Some(notify) = notify else {
        return action != Action::Relayed;
    };
    let keyword = match action {
        Action::Failed => "FAILURE",
        Action::Delayed => "DELAY",
        Action::Relayed => "SUCCESS",
    };
    notify
        .split(',')
        .any(|k| k.trim().eq_ignore_ascii_case(keyword))
}

/// The report as a message (CRLF line ends).
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let boundary = format!("=_dsn_{}", report.unique);
    let failed = report.entries.iter().any(|e| e.action == Action::Failed);
    let subject = match failed {
        true => "Undelivered Mail Returned to Sender",
        false if report.entries.iter().all(|e| e.action == Action::Relayed) => {
            "Successful Mail Delivery Report"
        }
        false => "Delayed Mail (still being retried)",
    };
    let now = Utc::now();
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <dsn.{unique}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n",
        host = report.hostname,
        to = report.to,
        date = now.to_rfc2822(),
        unique = report.unique,
    ));
    out.push_str(&human(report));
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&format!("Reporting-MTA: dns; {}\r\n", report.hostname));
    if let Some(envid) = report.env_id {
        out.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    out.push_str(&format!(
        "Arrival-Date: {}\r\n",
        report.arrival.to_rfc2822()
    ));
    for entry in report.entries {
        out.push_str("\r\n");
        out.push_str(&format!("Final-Recipient: rfc822; {}\r\n", entry.recipient));
        if let Some(orcpt) = &entry.orcpt {
            let orcpt = one_line(orcpt);
            // ORCPT is `addr-type;address`; the field wants `addr-type; address`.
            match orcpt.split_once(';') {
                Some((kind, addr)) => out.push_str(&format!(
                    "Original-Recipient: {}; {}\r\n",
                    kind.trim(),
                    addr.trim()
                )),
                None => out.push_str(&format!("Original-Recipient: rfc822; {orcpt}\r\n")),
            }
        }
        out.push_str(&format!("Action: {}\r\n", entry.action.as_str()));
        out.push_str(&format!("Status: {}\r\n", entry.status));
        if let Some(mta) = &entry.remote_mta {
            out.push_str(&format!("Remote-MTA: dns; {}\r\n", one_line(mta)));
        }
        out.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\n",
            one_line(&entry.diagnostic)
        ));
        out.push_str(&format!("Last-Attempt-Date: {}\r\n", now.to_rfc2822()));
        if entry.action == Action::Delayed {
            out.push_str(&format!(
                "Will-Retry-Until: {}\r\n",
                report.retry_until.to_rfc2822()
            ));
        }
    }
    let mut bytes = out.into_bytes();
    let full = report.ret == Some(Ret::Full) && failed;
    let part = match full {
        true => "message/rfc822",
        false => "text/rfc822-headers",
    };
    bytes.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: {part}\r\n\r\n").as_bytes());
    match full {
        true => bytes.extend_from_slice(report.original),
        false => {
            if let Some((header, _)) = split_message(report.original) {
                bytes.extend_from_slice(header.as_bytes());
            }
        }
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

fn human(report: &Report<'_>) -> String {
    let mut text = format!("This is the mail system at {}.\r\n\r\n", report.hostname);
    let failed: Vec<&Entry> = report
        .entries
        .iter()
        .filter(|e| e.action == Action::Failed)
        .collect();
    let delayed: Vec<&Entry> = report
        .entries
        .iter()
        .filter(|e| e.action == Action::Delayed)
        .collect();
    if !failed.is_empty() {
        text.push_str("Your message could not be delivered to these recipients:\r\n\r\n");
        for e in &failed {
            text.push_str(&format!(
                "  <{}>: {}\r\n",
                e.recipient,
                one_line(&e.diagnostic)
            ));
        }
        text.push_str("\r\n");
    }
    if !delayed.is_empty() {
        text.push_str(&format!(
            "Your message has not been delivered yet to these recipients; delivery will be\r\n\
             retried until {}:\r\n\r\n",
            report.retry_until.to_rfc2822()
        ));
        for e in &delayed {
            text.push_str(&format!(
                "  <{}>: {}\r\n",
                e.recipient,
                one_line(&e.diagnostic)
            ));
        }
        text.push_str("\r\nYou do not need to send it again.\r\n");
    }
    text
}

/// `text` without line breaks or control characters (remote replies go into header fields).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_defaults_and_lists() {
        for (notify, action, want) in [
            (None, Action::Failed, true),
            (None, Action::Delayed, true),
            (None, Action::Relayed, false),
            (Some("NEVER"), Action::Failed, false),
            (Some("SUCCESS,DELAY"), Action::Failed, false),
            (Some("success,delay"), Action::Delayed, true),
            (Some("FAILURE"), Action::Failed, true),
        ] {
            assert_eq!(wanted(notify, action), want, "{notify:?} {action:?}");
        }
    }

    #[test]
    fn report_shape() {
        let entries = [Entry {
            recipient: "bob@remote.test".into(),
            orcpt: Some("rfc822;Bob@Remote.test".into()),
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 no such\r\nuser".into(),
            remote_mta: Some("mx.remote.test".into()),
        }];
        let original = b"From: a@example.test\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let report = Report {
            hostname: "mail.example.test",
            to: "a@example.test",
            env_id: Some("E1"),
            arrival: Utc::now(),
            retry_until: Utc::now(),
            ret: None,
            entries: &entries,
            original,
            unique: "1x",
        };
        let text = String::from_utf8(build(&report)).unwrap();
        for want in [
            "From: Mail Delivery System <MAILER-DAEMON@mail.example.test>\r\n",
            "report-type=delivery-status",
            "Final-Recipient: rfc822; bob@remote.test\r\n",
            "Original-Recipient: rfc822; Bob@Remote.test\r\n",
            "Action: failed\r\nStatus: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
            "Original-Envelope-Id: E1\r\n",
            "text/rfc822-headers\r\n\r\nFrom: a@example.test\r\nSubject: hi\r\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        assert!(
            !text.contains("secret body"),
            "headers only without RET=FULL"
        );
        let full = build(&Report {
            ret: Some(Ret::Full),
            ..report
        });
        assert!(
            String::from_utf8_lossy(&full).contains("message/rfc822\r\n\r\nFrom: a@example.test")
        );
        assert!(String::from_utf8_lossy(&full).contains("secret body"));
    }
}
