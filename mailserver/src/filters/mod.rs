//! Content filters the delivery pipeline will call: Rspamd (spam) and clamd (viruses), with a
//! shared circuit breaker and failure policy, and the background task that teaches Rspamd from
//! moves into and out of Junk.
//!
//! Each client stands alone (no SMTP types): the pipeline turns a [`clamav::ScanOutcome`] or an
//! [`rspamd::CheckResult`] into its own verdict through [`policy::FailurePolicy`].

pub mod breaker;
pub mod clamav;
pub mod learn;
pub mod policy;
pub mod rspamd;
