//! The shared test harness: a real PostgreSQL and a real Garage (S3) per test process, on free
//! loopback ports, started on first use and stopped when the process exits (even when it is
//! killed: both run under [`mail_localpg::guard`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&mail_testkit::fresh_database()).await?;
//! let store = mail_blobstore::S3BlobStore::new(&mail_testkit::garage().s3_config());
//! # Ok(()) }
//! ```
//! Failing to start either is a panic with the reason and where the logs are: a test cannot
//! run without them.
#![forbid(unsafe_code)]

mod clamd;
mod garage;
mod named;
mod rspamd;

pub use clamd::{Clamd, EICAR, clamd};
pub use garage::{Garage, garage};
pub use named::Named;
pub use rspamd::{RSPAMD_PASSWORD, Rspamd, rspamd};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_localpg::{LocalPostgres, Options};
use rand::Rng;

static POSTGRES: OnceLock<LocalPostgres> = OnceLock::new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL cluster shared by this test process (fsync off, temp data dir).
pub fn postgres() -> &'static LocalPostgres {
    POSTGRES.get_or_init(|| {
        LocalPostgres::start(Options::default())
            .unwrap_or_else(|e| panic!("test PostgreSQL failed to start: {e}"))
    })
}

/// URL of a new, empty database (`t_<n>`) in the shared cluster. Every call gives a distinct
/// database, so tests can run in parallel.
pub fn fresh_database() -> String {
    let pg = postgres();
    let name = format!("t_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
    pg.create_database(&name).unwrap_or_else(|e| {
        panic!(
            "creating test database {name} failed: {e} (log {})",
            pg.log_path().display()
        )
    });
    pg.url(&name)
}

/// A random lower-case `[a-z0-9]{10}`, unique per call in practice: a prefix for bucket names.
pub fn unique_prefix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefixes_are_lower_case_and_distinct() {
        let prefixes: std::collections::HashSet<String> =
            (0..200).map(|_| unique_prefix()).collect();
        assert_eq!(prefixes.len(), 200);
        for p in &prefixes {
            assert_eq!(p.len(), 10);
            assert!(
                p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{p}"
            );
        }
    }
}
