//! MAIL FROM and RCPT TO: the envelope of a transaction.
//!
//! MAIL accepts `SIZE=`, `BODY=7BIT|8BITMIME` and `SMTPUTF8` (the extensions EHLO advertises);
//! any other parameter gets `555`. RCPT accepts no parameters (no DSN yet) and asks the
//! connection where the address delivers; the answer decides the reply.

use std::borrow::Cow;

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
    MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    MailFrom, RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER,
    RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};

use super::reply::{Reject, Reply};
use super::session::{Action, Lookup, Session, Transaction};

/// MAIL parameters given as flags, with the name a refusal shows.
const MAIL_FLAGS_UNSUPPORTED: [(u64, &str); 6] = [
    (MAIL_BODY_BINARYMIME, "BODY=BINARYMIME"),
    (MAIL_RET_FULL | MAIL_RET_HDRS, "RET"),
    (MAIL_REQUIRETLS, "REQUIRETLS"),
    (MAIL_CONPERM, "CONPERM"),
    (MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE, "BY"),
    (!SUPPORTED_MAIL_FLAGS & !KNOWN_MAIL_FLAGS, "unknown"),
];

const SUPPORTED_MAIL_FLAGS: u64 = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
const KNOWN_MAIL_FLAGS: u64 = MAIL_BODY_BINARYMIME
    | MAIL_RET_FULL
    | MAIL_RET_HDRS
    | MAIL_REQUIRETLS
    | MAIL_CONPERM
    | MAIL_BY_NOTIFY
    | MAIL_BY_RETURN
    | MAIL_BY_TRACE;

/// The first MAIL parameter this server does not offer, if any.
fn unsupported_mail_parameter(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    if let Some((_, name)) = MAIL_FLAGS_UNSUPPORTED
        .iter()
        .find(|(bits, _)| from.flags & bits != 0)
    {
        return Some(name);
    }
    [
        (from.env_id.is_some(), "ENVID"),
        (from.trans_id.is_some(), "TRANSID"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
        (from.auth.is_some(), "AUTH"),
        (from.hold_for != 0 || from.hold_until != 0, "FUTURERELEASE"),
        (from.mt_priority != 0, "MT-PRIORITY"),
        (from.by != 0, "BY"),
    ]
    .into_iter()
    .find_map(|(used, name)| used.then_some(name))
}

/// The first RCPT parameter this server does not offer (any: there is no DSN yet).
fn unsupported_rcpt_parameter(to: &RcptTo<Cow<'_, str>>) -> Option<&'static str> {
    [
        (
            to.flags
                & (RCPT_NOTIFY_SUCCESS
                    | RCPT_NOTIFY_FAILURE
                    | RCPT_NOTIFY_DELAY
                    | RCPT_NOTIFY_NEVER)
                != 0,
            "NOTIFY",
        ),
        (to.orcpt.is_some(), "ORCPT"),
        (
            to.rrvs != 0 || to.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0,
            "RRVS",
        ),
        (to.flags & RCPT_CONNEG != 0, "CONNEG"),
        (to.flags != 0, "unknown"),
    ]
    .into_iter()
    .find_map(|(used, name)| used.then_some(name))
}

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<Cow<'_, str>>) {
        let Some(extended) = self.helo.as_ref().map(|helo| helo.extended) else {
            return self.reject(Reject::BadSequence("send EHLO or HELO first"));
        };
        if self.tx.is_some() {
            return self.reject(Reject::BadSequence("nested MAIL command"));
        }
        if let Some(param) = unsupported_mail_parameter(&from) {
            return self.reject(Reject::UnsupportedParameter(param.to_string()));
        }
        // Extensions belong to EHLO sessions only (RFC 5321 section 4.1.1.1).
        let uses_extension = from.flags != 0 || from.size != 0;
        if uses_extension && !extended {
            return self.reject(Reject::UnsupportedParameter(
                "(send EHLO to use extensions)".to_string(),
            ));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return self.reject(Reject::NeedsSmtputf8);
        }
        if from.size > self.limits.max_message_size {
            return self.reject(Reject::MessageTooBig);
        }
        self.tx = Some(Transaction {
            sender: from.address.into_owned(),
            declared_size: from.size,
            smtputf8,
            recipients: Vec::new(),
        });
        self.reply(Reply::new(250, Some([2, 1, 0]), "Ok"));
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>) {
        let Some((smtputf8, accepted)) = self
            .tx
            .as_ref()
            .map(|tx| (tx.smtputf8, tx.recipients.len()))
        else {
            return self.reject(Reject::BadSequence("send MAIL first"));
        };
        if let Some(param) = unsupported_rcpt_parameter(&to) {
            return self.reject(Reject::UnsupportedParameter(param.to_string()));
        }
        if !smtputf8 && !to.address.is_ascii() {
            return self.reject(Reject::NeedsSmtputf8);
        }
        if accepted >= self.limits.max_recipients {
            return self.reject(Reject::TooManyRecipients);
        }
        if to.address.is_empty() {
            // smtp_proto reads `<postmaster>` (no domain) as an empty address. RFC 5321 wants
            // it delivered; that needs a configured postmaster mailbox, which is not there yet.
            return self.reject(Reject::MailboxUnavailable("postmaster".to_string()));
        }
        self.ask(Action::Lookup(to.address.into_owned()));
    }

    /// The reply to RCPT once its lookup is done.
    pub(super) fn rcpt_found(&mut self, address: String, lookup: Lookup) {
        let Some(declared_size) = self.tx.as_ref().map(|tx| tx.declared_size) else {
            return self.reject(Reject::BadSequence("send MAIL first"));
        };
        match lookup {
            // Every message is at least one byte; SIZE= tells more when the client gives it.
            Lookup::Local(recipient) => {
                if let Some(full) = Reject::quota(&recipient, &address, declared_size.max(1) as u64)
                {
                    return self.reject(full);
                }
                if let Some(tx) = &mut self.tx {
                    tx.recipients.push(recipient);
                }
                self.reply(Reply::new(250, Some([2, 1, 5]), "Ok"));
            }
            Lookup::UnknownUser => self.reject(Reject::MailboxUnavailable(address)),
            Lookup::NotHosted => self.reject(Reject::RelayDenied(address)),
            Lookup::Failed => self.reject(Reject::LookupFailed),
            Lookup::DirectoryUnavailable => self.reject(Reject::DirectoryUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::smtp::session::tests::{EHLO, GREETING, run};

    const EHLO_MAIL: &str = "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n";

    #[test]
    fn mail_parameters() {
        let ok = "250 2.1.0 Ok\r\n";
        for (name, input, want) in [
            (
                "supported parameters",
                "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=10000 BODY=8BITMIME SMTPUTF8\r\nRSET\r\n\
                 MAIL FROM:<a@x.test> BODY=7BIT\r\n",
                format!("{GREETING}{EHLO}{ok}250 2.0.0 Ok\r\n{ok}"),
            ),
            (
                "declared size over the limit",
                "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=10001\r\n",
                format!(
                    "{GREETING}{EHLO}552 5.3.4 message exceeds the fixed maximum message size\r\n"
                ),
            ),
            (
                "parameters not offered or malformed",
                "EHLO c.test\r\nMAIL FROM:<a@x.test> RET=FULL\r\nMAIL FROM:<a@x.test> BODY=BINARYMIME\r\n\
                 MAIL FROM:<a@x.test> ENVID=x\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\n\
                 MAIL FROM:<a@x.test> SIZE=big\r\nMAIL FROM:<a@x.test> BODY=9BIT\r\n",
                format!(
                    "{GREETING}{EHLO}555 5.5.4 parameter RET not supported\r\n\
                     555 5.5.4 parameter BODY=BINARYMIME not supported\r\n\
                     555 5.5.4 parameter ENVID not supported\r\n\
                     555 5.5.4 parameter REQUIRETLS not supported\r\n\
                     501 5.5.4 invalid SIZE parameter\r\n501 5.5.4 invalid BODY parameter\r\n"
                ),
            ),
            (
                "extensions need EHLO",
                "HELO c.test\r\nMAIL FROM:<a@x.test> SIZE=10\r\nMAIL FROM:<a@x.test>\r\n",
                format!(
                    "{GREETING}250 mx.test\r\n\
                     555 5.5.4 parameter (send EHLO to use extensions) not supported\r\n{ok}"
                ),
            ),
            (
                "non-ASCII addresses need SMTPUTF8",
                "EHLO c.test\r\nMAIL FROM:<ä@x.test>\r\nMAIL FROM:<a@x.test>\r\n\
                 RCPT TO:<ünï@example.test>\r\nRSET\r\nMAIL FROM:<ä@x.test> SMTPUTF8\r\n\
                 RCPT TO:<ünï@example.test>\r\n",
                format!(
                    "{GREETING}{EHLO}553 5.6.7 non-ASCII address needs the SMTPUTF8 parameter\r\n\
                     {ok}553 5.6.7 non-ASCII address needs the SMTPUTF8 parameter\r\n\
                     250 2.0.0 Ok\r\n{ok}250 2.1.5 Ok\r\n"
                ),
            ),
        ] {
            let outcome = run(input);
            assert_eq!(outcome.transcript, want, "{name}");
        }
    }

    #[test]
    fn rcpt_parameters_and_quota() {
        for (name, rcpt, reply) in [
            (
                "NOTIFY",
                "<alice@example.test> NOTIFY=NEVER",
                "555 5.5.4 parameter NOTIFY not supported",
            ),
            (
                "ORCPT",
                "<alice@example.test> ORCPT=rfc822;a@b.test",
                "555 5.5.4 parameter ORCPT not supported",
            ),
            (
                "bad address",
                "<alice@@example.test>",
                "501 5.1.3 bad recipient address syntax",
            ),
            (
                "no brackets",
                "alice@example.test",
                "501 5.5.4 syntax: RCPT TO:<forward-path> [parameters]",
            ),
            // A mailbox at its quota takes nothing more, even without SIZE=.
            (
                "full mailbox",
                "<full@example.test>",
                "452 4.2.2 <full@example.test>: mailbox full, try again later",
            ),
            (
                "room for small mail",
                "<small@example.test>",
                "250 2.1.5 Ok",
            ),
        ] {
            let outcome = run(&format!("{EHLO_MAIL}RCPT TO:{rcpt}\r\n"));
            assert_eq!(
                outcome.transcript,
                format!("{GREETING}{EHLO}250 2.1.0 Ok\r\n{reply}\r\n"),
                "{name}"
            );
        }
        // SIZE= is checked against each mailbox's room.
        let outcome = run(
            "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=301\r\nRCPT TO:<small@example.test>\r\n\
             RCPT TO:<alice@example.test>\r\n",
        );
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}250 2.1.0 Ok\r\n552 5.2.2 <small@example.test>: message exceeds the mailbox quota\r\n\
                 250 2.1.5 Ok\r\n"
            )
        );
    }

    #[test]
    fn quota_after_data_counts_the_real_size() {
        // small@ has 300 bytes; trace headers (about 150) plus this body do not fit.
        let body = "x".repeat(160);
        let outcome = run(&format!(
            "{EHLO_MAIL}RCPT TO:<alice@example.test>\r\nRCPT TO:<small@example.test>\r\nDATA\r\n\
             {body}\r\n.\r\n"
        ));
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n\
                 552 5.2.2 <small@example.test>: message exceeds the mailbox quota\r\n"
            )
        );
        assert!(outcome.deliveries.is_empty());
        // half@ has 100 bytes left: the same message would fit an empty mailbox, so the
        // refusal is temporary (RFC 3463: 4.2.2), at RCPT with SIZE= and after DATA.
        let outcome = run(&format!(
            "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=150\r\nRCPT TO:<half@example.test>\r\n\
             MAIL FROM:<a@x.test>\r\nRSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<half@example.test>\r\n\
             DATA\r\n{body}\r\n.\r\n"
        ));
        let full = "452 4.2.2 <half@example.test>: mailbox full, try again later\r\n";
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}250 2.1.0 Ok\r\n{full}503 5.5.1 nested MAIL command\r\n\
                 250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n{full}"
            )
        );
        assert!(outcome.deliveries.is_empty());
        // A shorter body fits.
        let outcome = run(&format!(
            "{EHLO_MAIL}RCPT TO:<small@example.test>\r\nDATA\r\nshort\r\n.\r\n"
        ));
        assert_eq!(outcome.deliveries.len(), 1);
    }
}
