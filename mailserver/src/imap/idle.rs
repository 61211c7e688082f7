//! IDLE (RFC 2177). The session never waits itself: the connection driver waits on the
//! session's [`Signal`](crate::store::Signal) beside the socket and calls
//! [`Session::idle_woken`] when the change feed fires; the updates go out while idling.

use std::sync::Arc;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Status;
use tokio::sync::Notify;
use tracing::debug;

use super::reply;
use super::session::{Session, State};

impl Session {
    /// What the driver waits on for this session's wake-ups.
    pub fn waker(&self) -> Arc<Notify> {
        self.signal.notify.clone()
    }

    pub fn is_idling(&self) -> bool {
        self.idling.is_some()
    }

    /// IDLE: `Ok` to accept (the caller sends `+ idling`, then whatever this queued);
    /// `Err` with the refusal otherwise.
    pub async fn idle_start(&mut self, tag: Tag<'static>) -> Result<(), Status<'static>> {
        if !matches!(self.state(), State::Authenticated | State::Selected) {
            return Err(reply::tagged_bad(tag, "Log in first"));
        }
        self.idling = Some(tag);
        self.rewatch();
        // Anything that changed before IDLE began is told at once.
        if self.selected.is_some()
            && let Err(err) = self.sync_view(true).await
        {
            debug!(error = ?err, "imap: updates at IDLE failed");
        }
        Ok(())
    }

    /// DONE: the tagged OK of the IDLE.
    pub fn idle_done(&mut self) -> Option<Status<'static>> {
        let tag = self.idling.take()?;
        Some(reply::tagged_ok(tag, None, "IDLE terminated"))
    }

    /// The change feed fired: while idling, queue the updates (EXPUNGE included, RFC 2177);
    /// otherwise they wait for the client's next command.
    pub async fn idle_woken(&mut self) {
        if self.idling.is_none() || self.selected.is_none() {
            return;
        }
        if let Err(err) = self.sync_view(true).await {
            // Tried again on the next wake-up or command.
            debug!(error = ?err, "imap: updates while idling failed");
            self.signal
                .changed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}
