//! ARC chain verification (RFC 8617): recorded in `Authentication-Results`; a forwarder's
//! seal does not override DMARC here.

use mail_auth::{ArcOutput, AuthenticatedMessage, MessageAuthenticator};

pub async fn verify<'x>(
    auth: &MessageAuthenticator,
    message: &'x AuthenticatedMessage<'x>,
) -> ArcOutput<'x> {
    auth.verify_arc(message).await
}
