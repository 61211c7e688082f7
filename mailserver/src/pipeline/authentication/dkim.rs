//! DKIM signature verification (RFC 6376): every signature of the message, each with its
//! result.

use mail_auth::{AuthenticatedMessage, DkimOutput, MessageAuthenticator};

pub async fn verify<'x>(
    auth: &MessageAuthenticator,
    message: &'x AuthenticatedMessage<'x>,
) -> Vec<DkimOutput<'x>> {
    auth.verify_dkim(message).await
}
