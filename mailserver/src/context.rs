//! What every connection handler is given: the store, the authenticator and the settings.

use crate::auth::Authenticator;
use crate::pipeline::PipelineSettings;
use crate::store::Store;

/// Settings of the protocol handlers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The name this server calls itself in greetings and `Received` headers.
    pub hostname: String,
    /// Largest message accepted, in bytes (SMTP `SIZE`, IMAP `APPEND`).
    pub max_message_size: usize,
    /// Most recipients of one SMTP transaction.
    pub max_recipients: usize,
    /// The checks and routing of received mail.
    pub pipeline: PipelineSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_string(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            pipeline: PipelineSettings::default(),
        }
    }
}

/// Shared by all connections of one server.
pub struct Context {
    pub store: Store,
    pub auth: Authenticator,
    pub settings: Settings,
}
