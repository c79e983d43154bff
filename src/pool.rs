//! The server's handler pool: worker threads that grow on demand up to a
//! bound, and shrink back after sitting idle.
//!
//! A streaming handler holds its worker for the whole call, so the pool must
//! be able to grow to as many workers as calls may run at once; the bound is
//! `ServerBuilder::max_concurrent_handlers`.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    /// The pool of the worker running on this thread, while it runs a job.
    static CURRENT: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
    /// The running job already counted its worker as free.
    static RELEASED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts the calling worker as free before its job has quite returned.
/// A handler calls this just before sending its call's final status, so that
/// a client that starts its next call the moment it sees that status finds
/// the worker available (instead of a spurious "all handlers busy").
/// Outside a pool worker it does nothing.
pub(crate) fn release_current_worker() {
    if RELEASED.with(std::cell::Cell::get) {
        return;
    }
    CURRENT.with(|c| {
        if let Some(shared) = &*c.borrow() {
            shared.idle.fetch_add(1, Ordering::AcqRel);
            RELEASED.with(|r| r.set(true));
        }
    });
}

struct Shared {
    jobs: Receiver<Job>,
    /// Workers alive.
    threads: AtomicUsize,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    max_threads: usize,
    stack_size: usize,
    idle_timeout: Duration,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// A pool of handler threads.
pub(crate) struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    shared: Arc<Shared>,
}

/// Why a job was not accepted.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// Every worker is busy and the pool is at its bound.
    Full,
    /// The pool is shutting down.
    Closed,
}

impl Pool {
    pub(crate) fn new(max_threads: usize, stack_size: usize, idle_timeout: Duration) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx: Mutex::new(Some(tx)),
            shared: Arc::new(Shared {
                jobs: rx,
                threads: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                max_threads: max_threads.max(1),
                stack_size,
                idle_timeout,
                handles: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `job` on a worker, starting one if none is idle. Fails with
    /// [`PoolError::Full`] when all `max_threads` workers are busy.
    pub(crate) fn execute(&self, job: Job) -> Result<(), PoolError> {
        let tx = self.tx.lock().clone().ok_or(PoolError::Closed)?;
        let shared = &self.shared;
        // Claim an idle worker, or a slot for a new one.
        let claimed_idle = shared
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !claimed_idle {
            let got_slot = shared
                .threads
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < shared.max_threads).then_some(n + 1)
                })
                .is_ok();
            if !got_slot {
                return Err(PoolError::Full);
            }
            if let Err(e) = self.spawn_worker() {
                shared.threads.fetch_sub(1, Ordering::AcqRel);
                log::error!("could not start a handler thread: {e}");
                return Err(PoolError::Full);
            }
        }
        tx.send(job).map_err(|_| PoolError::Closed)
    }

    fn spawn_worker(&self) -> io::Result<()> {
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("grpc-handler".into())
            .stack_size(self.shared.stack_size)
            .spawn(move || worker(shared))?;
        let mut handles = self.shared.handles.lock();
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
        Ok(())
    }

    /// Workers currently alive.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        self.shared.threads.load(Ordering::Acquire)
    }

    /// Stops taking jobs, lets queued and running jobs finish, and joins
    /// every worker.
    pub(crate) fn shutdown(&self) {
        self.tx.lock().take();
        let handles = std::mem::take(&mut *self.shared.handles.lock());
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: Arc<Shared>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(shared.clone()));
    // The job this worker was started (or claimed as idle) for is already
    // queued; after each job, the worker counts itself idle again (unless
    // the job did so already, see `release_current_worker`).
    loop {
        match shared.jobs.recv_timeout(shared.idle_timeout) {
            Ok(job) => {
                RELEASED.with(|r| r.set(false));
                // A panic in a job is caught by the job itself (handlers are
                // wrapped); this guard only keeps the accounting right.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                if !RELEASED.with(|r| r.replace(false)) {
                    shared.idle.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // Leave only if nobody has claimed us meanwhile.
                if shared
                    .idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = shared
                    .idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                break;
            }
        }
    }
    CURRENT.with(|c| c.borrow_mut().take());
    shared.threads.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn grows_to_bound_then_refuses_and_shrinks_when_idle() {
        let pool = Pool::new(3, 64 * 1024, Duration::from_millis(50));
        let barrier = Arc::new(Barrier::new(4));
        for _ in 0..3 {
            let b = barrier.clone();
            pool.execute(Box::new(move || {
                b.wait();
            }))
            .unwrap();
        }
        assert_eq!(pool.threads(), 3);
        assert!(matches!(
            pool.execute(Box::new(|| {})),
            Err(PoolError::Full)
        ));
        barrier.wait();
        // Idle workers leave after the idle timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.threads() > 0 {
            assert!(std::time::Instant::now() < deadline, "workers did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        pool.shutdown();
        assert!(matches!(
            pool.execute(Box::new(|| {})),
            Err(PoolError::Closed)
        ));
    }

    #[test]
    fn reuses_idle_workers() {
        let pool = Pool::new(8, 64 * 1024, Duration::from_secs(10));
        for _ in 0..50 {
            let (tx, rx) = crossbeam_channel::bounded(1);
            pool.execute(Box::new(move || tx.send(()).unwrap()))
                .unwrap();
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
            // Let the worker mark itself idle again.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while pool.shared.idle.load(Ordering::Acquire) == 0 {
                assert!(std::time::Instant::now() < deadline);
                std::thread::yield_now();
            }
        }
        assert_eq!(pool.threads(), 1);
    }
}
