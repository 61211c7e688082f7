//! What an adapter knows about its connection: plain data the listener fills in, so protocols
//! depend on the driver only, never on the listener.

use std::net::SocketAddr;

/// Who an SMTP listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Mail from other servers (25): no authentication.
    Mx,
    /// Mail from our users (587, 465): authentication required; on 587 STARTTLS first.
    Submission,
}

/// What a protocol adapter needs to know about its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    pub peer: SocketAddr,
    pub role: Role,
    /// TLS is active now.
    pub tls: bool,
    /// STARTTLS can be offered (not active yet, a certificate is there).
    pub starttls: bool,
    /// Clear-text passwords are accepted without TLS (loopback, or a listener without TLS).
    pub plaintext_login: bool,
}

impl Transport {
    /// A clear-text connection with no TLS on offer (tests, tools).
    pub fn plain(peer: SocketAddr) -> Self {
        Self {
            peer,
            role: Role::Mx,
            tls: false,
            starttls: false,
            plaintext_login: true,
        }
    }

    /// Whether a clear-text password may be sent now.
    pub fn login_allowed(&self) -> bool {
        self.tls || self.plaintext_login
    }
}
