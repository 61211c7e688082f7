//! Password verification on a small fixed pool of threads, one per core.
//!
//! An argon2id check takes tens of milliseconds of CPU and 19 MiB of memory. Run on tokio's
//! blocking pool, 50 logins at once meant 50 threads each allocating 19 MiB in an arena of its
//! own that glibc kept (9 GB after 2,000 logins) and every core busy hashing. Here at most one
//! check per core runs, on threads that live as long as the server, so memory is bounded by
//! the pool's few arenas and the async workers keep serving everyone else. Waiting logins
//! queue in order on a semaphore.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// The pool; its threads end when the last clone of the owning `Authenticator` is dropped.
pub(super) struct Hasher {
    jobs: mpsc::Sender<Job>,
    permits: Semaphore,
    gauge: Arc<Gauge>,
}

/// Checks running now, and the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
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
                    loop {
                        // The lock is held only while waiting for a job, not while running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the Hasher is gone
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
    pub(super) async fn run(&self, check: impl FnOnce() -> bool + Send + 'static) -> Option<bool> {
        let _permit = self.permits.acquire().await.ok()?;
        let (reply, answer) = oneshot::channel();
        let gauge = self.gauge.clone();
        let job: Job = Box::new(move || {
            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.peak.fetch_max(now, Ordering::SeqCst);
            let ok = check();
            gauge.now.fetch_sub(1, Ordering::SeqCst);
            let _ = reply.send(ok);
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }

    /// The most checks that ever ran at the same moment.
    pub(super) fn peak(&self) -> usize {
        self.gauge.peak.load(Ordering::Relaxed)
    }
}
