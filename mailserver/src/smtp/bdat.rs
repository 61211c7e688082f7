//! BDAT (RFC 3030 CHUNKING): the message in counted chunks, no dot-stuffing. The chunk bytes
//! go into the same receiver as DATA's (trace headers first, spooled past the threshold, the
//! size limit), so a BDAT message is stored, checked and delivered like any other.
//!
//! Every chunk is read whole even when the command is refused (no transaction, no recipients,
//! too big), so the dialogue stays in step; the refusal comes once its bytes are consumed.
//! smtp-proto's `BdatReceiver` collects into one growing buffer, which does not fit the spool,
//! so the counting is done here.

use super::reply::{Reject, Reply};
use super::session::{Action, Mode, Session};

impl Session {
    pub(super) fn bdat_start(&mut self, size: usize, last: bool) {
        let ready = self.tx.as_ref().is_some_and(|tx| !tx.rcpts.is_empty());
        if ready && self.bdat.is_none() {
            self.bdat = Some(Box::new(self.receiver()));
        }
        self.mode = Mode::Bdat {
            remaining: size,
            size,
            last,
        };
    }

    /// Takes chunk bytes from the input; `false` when it needs more.
    pub(super) fn bdat_step(&mut self) -> bool {
        let Mode::Bdat {
            remaining,
            size,
            last,
        } = self.mode
        else {
            return false;
        };
        let input = &self.input[self.start..];
        let n = input.len().min(remaining);
        if let Some(receiver) = &mut self.bdat {
            receiver.push_raw(&input[..n]);
        }
        self.start += n;
        let remaining = remaining - n;
        if let Some(chunk) = self.bdat.as_mut().and_then(|r| r.take_chunk(false)) {
            self.push_action(Action::Spool(chunk));
        }
        if remaining > 0 {
            self.mode = Mode::Bdat {
                remaining,
                size,
                last,
            };
            return n > 0;
        }
        self.mode = Mode::Command;
        let Some(mut receiver) = self.bdat.take() else {
            // The chunk of a refused BDAT has been read; now the refusal.
            let reject = match &self.tx {
                None => Reject::BadSequence("send MAIL first"),
                Some(_) => Reject::NoValidRecipients,
            };
            self.reject(reject);
            return true;
        };
        if !last {
            self.bdat = Some(receiver);
            self.reply(Reply::new(
                250,
                Some([2, 0, 0]),
                format!("{size} octets received"),
            ));
            return true;
        }
        if let Some(chunk) = receiver.take_chunk(true) {
            self.push_action(Action::Spool(chunk));
        }
        let (id, body) = receiver.finish();
        self.data_end(id, body);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::smtp::session::tests::{EHLO, GREETING, limits, run, run_with};

    const HEAD: &str = "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\n";

    #[test]
    fn chunks_make_one_message() {
        let outcome = run(&format!(
            "{HEAD}BDAT 12\r\nSubject: x\r\nBDAT 0\r\nBDAT 9 LAST\r\n\r\n.body\r\nNOOP\r\n"
        ));
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 12 octets received\r\n\
                 250 2.0.0 0 octets received\r\n250 2.0.0 Ok: queued as ID\r\n250 2.0.0 Ok\r\n"
            )
        );
        let [delivery] = &outcome.deliveries[..] else {
            panic!("one delivery");
        };
        let text = String::from_utf8_lossy(delivery.message.bytes());
        // No dot-unstuffing in BDAT: the leading dot stays.
        assert!(text.ends_with("\r\nSubject: x\r\n\r\n.body\r\n"), "{text}");
        assert!(
            text.starts_with("Return-Path: <a@x.test>\r\nReceived: "),
            "{text}"
        );
    }

    #[test]
    fn refused_chunks_are_read_whole() {
        let outcome = run(
            "EHLO c.test\r\nBDAT 6\r\nNOOP\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n\
             MAIL FROM:<a@x.test>\r\nRCPT TO:<nobody@example.test>\r\nBDAT 6 LAST\r\nRSET\r\nNOOP\r\n",
        );
        assert_eq!(
            outcome.transcript,
            format!(
                "{GREETING}{EHLO}503 5.5.1 send MAIL first\r\n503 5.5.1 send MAIL first\r\n\
                 250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 <nobody@example.test>: mailbox unavailable\r\n\
                 554 5.5.1 no valid recipients\r\n250 2.0.0 Ok\r\n"
            )
        );
        assert!(outcome.deliveries.is_empty());
    }

    #[test]
    fn too_big_is_refused_after_the_last_chunk() {
        let mut limits = limits();
        limits.max_message_size = 10;
        let outcome = run_with(
            &format!("{HEAD}BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678DATA\r\n"),
            limits,
            true,
        );
        assert!(
            outcome
                .transcript
                .ends_with("250 2.0.0 8 octets received\r\n552 5.3.4 message exceeds the fixed maximum message size\r\n503 5.5.1 send MAIL first\r\n"),
            "{}",
            outcome.transcript
        );
        assert!(outcome.deliveries.is_empty());
    }

    #[test]
    fn data_after_bdat_is_out_of_sequence() {
        let outcome = run(&format!("{HEAD}BDAT 2\r\nabDATA\r\nBDAT 0 LAST\r\n"));
        assert!(
            outcome.transcript.ends_with(
                "250 2.0.0 2 octets received\r\n503 5.5.1 DATA after BDAT\r\n250 2.0.0 Ok: queued as ID\r\n"
            ),
            "{}",
            outcome.transcript
        );
        assert_eq!(outcome.deliveries.len(), 1);
    }
}
