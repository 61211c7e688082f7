//! Password verification on a small fixed pool of threads, one per core.
//!
//! An argon2id check takes tens of milliseconds of CPU and 19 MiB of memory. Run on tokio's
//! blocking pool, 50 logins at once meant 50 threads each allocating 19 MiB in an arena of its
//! own that glibc kept (9 GB after 2,000 logins) and every core busy hashing. Here at most one
//! check per core runs, on threads that live as long as the server, each hashing into one
//! buffer it keeps: no allocation per check, memory bounded by the pool. Waiting logins
//! queue in order on a semaphore, and the async workers keep serving everyone else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

/// A check, given the thread's argon2 memory to work in.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes asking for more memory than this (in 1 KiB blocks: 256 MiB) never match: a stored
/// hash must not make a login allocate without bound.
const MAX_BLOCKS: usize = 256 * 1024;

/// Hashes asking for more passes over their memory than this never match (CPU bound).
const MAX_PASSES: u32 = 16;

/// A thread that had no check to run for this long frees its argon2 memory.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// The pool; its threads end when the last clone of the owning `Authenticator` is dropped.
pub(super) struct Hasher {
    jobs: mpsc::Sender<Job>,
    permits: Semaphore,
    gauge: Arc<Gauge>,
}

/// Checks running now, the most seen at once, and all run so far.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

impl Hasher {
    /// A pool of as many threads as the machine has cores.
    pub(super) fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for a job, not while running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv_timeout(IDLE_RELEASE),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            // Quiet: give the memory back until the next burst.
                            Err(mpsc::RecvTimeoutError::Timeout) => memory = Vec::new(),
                            Err(mpsc::RecvTimeoutError::Disconnected) => return, // Hasher gone
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start a password thread");
            }
        }
        Self {
            jobs: sender,
            permits: Semaphore::new(threads),
            gauge: Arc::default(),
        }
    }

    /// Runs `check` on the pool once a thread is free; `None` when the pool is gone.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        let (reply, answer) = oneshot::channel();
        let gauge = self.gauge.clone();
        let job: Job = Box::new(move |memory| {
            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.peak.fetch_max(now, Ordering::SeqCst);
            let ok = check(memory);
            gauge.now.fetch_sub(1, Ordering::SeqCst);
            gauge.total.fetch_add(1, Ordering::SeqCst);
            let _ = reply.send(ok);
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }

    /// The most checks that ever ran at the same moment.
    pub(super) fn peak(&self) -> usize {
        self.gauge.peak.load(Ordering::Relaxed)
    }

    /// How many checks have run.
    pub(super) fn total(&self) -> usize {
        self.gauge.total.load(Ordering::Relaxed)
    }
}

/// Whether `password` matches the PHC-format argon2 `hash`, computed in `memory` (grown to the
/// hash's memory cost and kept for the next check). A malformed or oversized hash never
/// matches.
pub fn verify_in(hash: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS || params.t_cost() > MAX_PASSES {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let argon2 = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|computed| computed == expected)
}
