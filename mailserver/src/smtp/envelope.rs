//! MAIL FROM and RCPT TO: the envelope of a transaction.
//!
//! MAIL accepts `SIZE=`, `BODY=7BIT|8BITMIME`, `SMTPUTF8`, DSN's `RET=` and `ENVID=` (RFC 3461)
//! and, over TLS, `REQUIRETLS` (RFC 8689); any other parameter gets `555`. RCPT accepts DSN's
//! `NOTIFY=` and `ORCPT=` and asks the connection where the address delivers; the answer decides
//! the reply. Everything is kept on the transaction for the pipeline and the outbound queue.

use std::borrow::Cow;

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
    MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    MailFrom, RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER,
    RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};

use super::reply::{Reject, Reply};
use super::session::{Action, Lookup, Session, Transaction};
use crate::pipeline::{BodyType, Dsn, MailParams, Notify, Rcpt, Ret, Target};

/// MAIL parameters given as flags, with the name a refusal shows.
const MAIL_FLAGS_UNSUPPORTED: [(u64, &str); 4] = [
    (MAIL_BODY_BINARYMIME, "BODY=BINARYMIME"),
    (MAIL_CONPERM, "CONPERM"),
    (MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE, "BY"),
    (!SUPPORTED_MAIL_FLAGS & !KNOWN_MAIL_FLAGS, "unknown"),
];

const SUPPORTED_MAIL_FLAGS: u64 = MAIL_BODY_7BIT
    | MAIL_BODY_8BITMIME
    | MAIL_SMTPUTF8
    | MAIL_RET_FULL
    | MAIL_RET_HDRS
    | MAIL_REQUIRETLS;
const KNOWN_MAIL_FLAGS: u64 =
    MAIL_BODY_BINARYMIME | MAIL_CONPERM | MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE;

/// The first MAIL parameter this server does not offer (on this connection), if any.
fn unsupported_mail_parameter(from: &MailFrom<Cow<'_, str>>, tls: bool) -> Option<&'static str> {
    if let Some((_, name)) = MAIL_FLAGS_UNSUPPORTED
        .iter()
        .find(|(bits, _)| from.flags & bits != 0)
    {
        return Some(name);
    }
    [
        // RFC 8689 section 4: offered, and so accepted, over TLS only.
        (from.flags & MAIL_REQUIRETLS != 0 && !tls, "REQUIRETLS"),
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

/// The first RCPT parameter this server does not offer, if any (NOTIFY and ORCPT are DSN's).
fn unsupported_rcpt_parameter(to: &RcptTo<Cow<'_, str>>) -> Option<&'static str> {
    const NOTIFY: u64 =
        RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;
    [
        (
            to.rrvs != 0 || to.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0,
            "RRVS",
        ),
        (to.flags & RCPT_CONNEG != 0, "CONNEG"),
        (to.flags & !NOTIFY != 0, "unknown"),
    ]
    .into_iter()
    .find_map(|(used, name)| used.then_some(name))
}

/// MAIL's parameters as the pipeline keeps them.
fn mail_params(from: &MailFrom<Cow<'_, str>>, smtputf8: bool) -> MailParams {
    MailParams {
        size: from.size,
        body: match from.flags & MAIL_BODY_8BITMIME {
            0 => BodyType::SevenBit,
            _ => BodyType::EightBitMime,
        },
        smtputf8,
        ret: match from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) {
            MAIL_RET_FULL => Some(Ret::Full),
            MAIL_RET_HDRS => Some(Ret::Headers),
            _ => None,
        },
        envid: from.env_id.as_ref().map(|id| id.to_string()),
        requiretls: from.flags & MAIL_REQUIRETLS != 0,
    }
}

/// RCPT's DSN parameters (RFC 3461).
fn rcpt_dsn(to: &RcptTo<Cow<'_, str>>) -> Dsn {
    let notify = (to.flags
        & (RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER)
        != 0)
        .then_some(Notify {
            success: to.flags & RCPT_NOTIFY_SUCCESS != 0,
            failure: to.flags & RCPT_NOTIFY_FAILURE != 0,
            delay: to.flags & RCPT_NOTIFY_DELAY != 0,
        });
    Dsn {
        notify,
        orcpt: to
            .orcpt
            .as_ref()
            .map(|address| ("rfc822".to_string(), address.to_string())),
    }
}

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<Cow<'_, str>>) {
        let Some(extended) = self.helo.as_ref().map(|helo| helo.extended) else {
            return self.reject(Reject::BadSequence("send EHLO or HELO first"));
        };
        if self.tx.is_some() {
            return self.reject(Reject::BadSequence("nested MAIL command"));
        }
        if let Some(param) = unsupported_mail_parameter(&from, self.security.tls) {
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
        let params = mail_params(&from, smtputf8);
        self.tx = Some(Transaction {
            sender: from.address.into_owned(),
            declared_size: from.size,
            smtputf8,
            params,
            recipients: Vec::new(),
            rcpts: Vec::new(),
        });
        self.reply(Reply::new(250, Some([2, 1, 0]), "Ok"));
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>) {
        let Some((smtputf8, accepted)) = self.tx.as_ref().map(|tx| (tx.smtputf8, tx.rcpts.len()))
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
        // RFC 3461 section 4.1: NEVER stands alone.
        if to.flags & RCPT_NOTIFY_NEVER != 0
            && to.flags & (RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY) != 0
        {
            return self.reject(Reject::InvalidParameter("NOTIFY"));
        }
        let dsn = rcpt_dsn(&to);
        // smtp_proto reads `<postmaster>` (no domain) as an empty address; RFC 5321 section
        // 4.5.1 wants it accepted, for the primary domain's postmaster or a configured one.
        let address = match to.address.is_empty() {
            true => "postmaster".to_string(),
            false => to.address.into_owned(),
        };
        self.ask(Action::Lookup(address));
        self.pending_dsn = dsn;
    }

    /// The reply to RCPT once its lookup is done.
    pub(super) fn rcpt_found(&mut self, address: String, lookup: Lookup) {
        let Some(declared_size) = self.tx.as_ref().map(|tx| tx.declared_size) else {
            return self.reject(Reject::BadSequence("send MAIL first"));
        };
        let dsn = std::mem::take(&mut self.pending_dsn);
        let target = match lookup {
            // Every message is at least one byte; SIZE= tells more when the client gives it.
            Lookup::Local(recipient) => {
                if let Some(full) = Reject::quota(&recipient, &address, declared_size.max(1) as u64)
                {
                    return self.reject(full);
                }
                if let Some(tx) = &mut self.tx {
                    tx.recipients.push(recipient.clone());
                }
                Target::Local(recipient)
            }
            Lookup::UnknownUser => return self.reject(Reject::MailboxUnavailable(address)),
            // Relaying is for authenticated sessions, and only with a queue to relay through.
            Lookup::NotHosted if self.authenticated.is_some() && self.outbound => Target::Relay,
            Lookup::NotHosted => return self.reject(Reject::RelayDenied(address)),
            Lookup::Remote(targets) if self.outbound => Target::Forward(targets),
            Lookup::Remote(_) => return self.reject(Reject::ForwardUnavailable(address)),
            Lookup::Failed => return self.reject(Reject::LookupFailed),
        };
        if let Some(tx) = &mut self.tx {
            tx.rcpts.push(Rcpt {
                address,
                dsn,
                target,
            });
        }
        self.reply(Reply::new(250, Some([2, 1, 5]), "Ok"));
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
                "DSN parameters taken, others not offered or malformed",
                "EHLO c.test\r\nMAIL FROM:<a@x.test> RET=FULL ENVID=QQ+2B1\r\nRSET\r\n\
                 MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\n\
                 MAIL FROM:<a@x.test> SIZE=big\r\nMAIL FROM:<a@x.test> BODY=9BIT\r\n\
                 MAIL FROM:<a@x.test> RET=SOME\r\n",
                format!(
                    "{GREETING}{EHLO}{ok}250 2.0.0 Ok\r\n\
                     555 5.5.4 parameter BODY=BINARYMIME not supported\r\n\
                     555 5.5.4 parameter REQUIRETLS not supported\r\n\
                     501 5.5.4 invalid SIZE parameter\r\n501 5.5.4 invalid BODY parameter\r\n\
                     501 5.5.4 invalid RET parameter\r\n"
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
                "<alice@example.test> NOTIFY=SUCCESS,DELAY",
                "250 2.1.5 Ok",
            ),
            (
                "NOTIFY=NEVER with another",
                "<alice@example.test> NOTIFY=NEVER,SUCCESS",
                "501 5.5.4 invalid NOTIFY parameter",
            ),
            (
                "ORCPT",
                "<alice@example.test> ORCPT=rfc822;a+2Bb@b.test",
                "250 2.1.5 Ok",
            ),
            (
                "ORCPT of another type",
                "<alice@example.test> ORCPT=x400;a",
                "501 5.5.4 invalid ORCPT parameter",
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
    fn dsn_and_requiretls_reach_the_envelope() {
        use crate::pipeline::{Dsn, MailParams, Notify, Ret, Target};
        let outcome = run(
            "EHLO c.test\r\nMAIL FROM:<a@x.test> RET=HDRS ENVID=QQ+2B1 BODY=8BITMIME\r\n\
             RCPT TO:<alice@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a+2Bb@b.test\r\n\
             RCPT TO:<Bob@Example.test>\r\nDATA\r\nhi\r\n.\r\n",
        );
        let [delivery] = &outcome.deliveries[..] else {
            panic!("{}", outcome.transcript);
        };
        let envelope = &delivery.envelope;
        assert_eq!(
            envelope.params,
            MailParams {
                size: 0,
                body: crate::pipeline::BodyType::EightBitMime,
                smtputf8: false,
                ret: Some(Ret::Headers),
                envid: Some("QQ+1".into()),
                requiretls: false,
            }
        );
        assert_eq!(envelope.sender, "a@x.test");
        assert_eq!(envelope.helo, "c.test");
        let dsns: Vec<&Dsn> = envelope.recipients.iter().map(|r| &r.dsn).collect();
        assert_eq!(
            dsns,
            [
                &Dsn {
                    notify: Some(Notify {
                        success: false,
                        failure: true,
                        delay: true
                    }),
                    orcpt: Some(("rfc822".into(), "a+b@b.test".into())),
                },
                &Dsn::default(),
            ]
        );
        assert!(matches!(&envelope.recipients[1].target, Target::Local(r) if r.mailbox_id == 2));

        // REQUIRETLS is offered and taken over TLS only (RFC 8689 section 4).
        let mut session = crate::smtp::Session::new(
            "mx.test",
            "192.0.2.1".parse().unwrap(),
            crate::smtp::session::tests::limits(),
        )
        .with_security(crate::smtp::Security {
            tls: true,
            ..Default::default()
        });
        session.feed(b"EHLO c.test\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\n");
        let mut wire = String::new();
        while let Some(crate::smtp::Action::Reply(reply)) = session.next_action() {
            wire.push_str(&reply.to_wire());
        }
        assert!(
            wire.contains("250-REQUIRETLS\r\n") || wire.contains("250 REQUIRETLS\r\n"),
            "{wire}"
        );
        assert!(wire.ends_with("250 2.1.0 Ok\r\n"), "{wire}");
        assert!(session.tx.as_ref().is_some_and(|tx| tx.params.requiretls));
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
