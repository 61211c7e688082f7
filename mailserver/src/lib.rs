//! The mail server: SMTP, IMAP and POP3 over one store (PostgreSQL metadata, S3 bodies).
//! Pods hold no state, so any instance serves any user.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod context;
pub mod driver;
pub mod filters;
pub mod fuzzing;
pub mod http;
pub mod imap;
pub mod limits;
pub mod listener;
pub mod metrics;
#[cfg(test)]
mod noise;
pub mod pop3;
pub mod proxy;
pub mod server;
pub mod smtp;
pub mod store;
pub mod tls;

pub use context::Context;
pub use server::{Addresses, RunningServer};
