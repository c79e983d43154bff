//! The server's handler pool: worker threads that grow on demand up to a
//! bound, and shrink back after sitting idle.
//!
//! A streaming handler holds its worker for the whole call, so the pool must
//! be able to grow to as many workers as calls may run at once; the bound is
//! `ServerBuilder::max_concurrent_handlers`.
//!
//! Idle workers wait on a stack, each parked on its own slot: a job goes to
//! the most recently idle worker (its stack and caches are warm) with one
//! unpark, and no worker spins or yields while it waits. (A shared channel
//! that every idle worker polls made the connection thread's hand-off cost
//! several `sched_yield`s per call on a busy server.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::rt::sync::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// One worker's mailbox.
struct Slot {
    job: Mutex<Option<Job>>,
    thread: Thread,
}

struct Shared {
    /// Workers waiting for a job, most recently idle last.
    idle: Mutex<Vec<Arc<Slot>>>,
    /// Workers alive (or being started).
    threads: AtomicUsize,
    max_threads: usize,
    stack_size: usize,
    idle_timeout: Duration,
    closed: AtomicBool,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

thread_local! {
    /// The slot and pool of the worker running on this thread.
    static CURRENT: std::cell::RefCell<Option<(Arc<Shared>, Arc<Slot>)>> =
        const { std::cell::RefCell::new(None) };
    /// The running job already put its worker back on the idle stack.
    static RELEASED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts the calling worker back on the idle stack before its job has quite
/// returned. A handler calls this just before sending its call's final
/// status, so that a client that starts its next call the moment it sees
/// that status finds the worker available (instead of a spurious "all
/// handlers busy"). A job given to it meanwhile waits in its slot until the
/// current job returns. Outside a pool worker it does nothing.
pub(crate) fn release_current_worker() {
    if RELEASED.with(std::cell::Cell::get) {
        return;
    }
    CURRENT.with(|c| {
        if let Some((shared, slot)) = &*c.borrow() {
            shared.idle.lock().push(slot.clone());
            RELEASED.with(|r| r.set(true));
        }
    });
}

/// A pool of handler threads.
pub(crate) struct Pool {
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
        Pool {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::new()),
                threads: AtomicUsize::new(0),
                max_threads: max_threads.max(1),
                stack_size,
                idle_timeout,
                closed: AtomicBool::new(false),
                handles: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `job` on an idle worker, or a new one; fails with
    /// [`PoolError::Full`] when all `max_threads` workers are busy.
    pub(crate) fn execute(&self, job: Job) -> Result<(), PoolError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        if let Some(slot) = shared.idle.lock().pop() {
            *slot.job.lock() = Some(job);
            slot.thread.unpark();
            return Ok(());
        }
        let got_slot = shared
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_threads).then_some(n + 1)
            })
            .is_ok();
        if !got_slot {
            return Err(PoolError::Full);
        }
        let worker_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("grpc-handler".into())
            .stack_size(shared.stack_size)
            .spawn(move || worker(worker_shared, job));
        match spawned {
            Ok(handle) => {
                let mut handles = shared.handles.lock();
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
                Ok(())
            }
            Err(e) => {
                shared.threads.fetch_sub(1, Ordering::AcqRel);
                log::error!("could not start a handler thread: {e}");
                Err(PoolError::Full)
            }
        }
    }

    /// Workers currently alive.
    pub(crate) fn threads(&self) -> usize {
        self.shared.threads.load(Ordering::Acquire)
    }

    /// Workers waiting for a job.
    pub(crate) fn idle(&self) -> usize {
        self.shared.idle.lock().len()
    }

    /// Stops taking jobs, lets running jobs finish, and joins every worker.
    pub(crate) fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for slot in self.shared.idle.lock().iter() {
            slot.thread.unpark();
        }
        loop {
            let handles = std::mem::take(&mut *self.shared.handles.lock());
            if handles.is_empty() {
                break;
            }
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: Arc<Shared>, first: Job) {
    let slot = Arc::new(Slot {
        job: Mutex::new(None),
        thread: std::thread::current(),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some((shared.clone(), slot.clone())));
    let mut job = Some(first);
    while let Some(run) = job.take() {
        RELEASED.with(|r| r.set(false));
        // A panic in a job is caught by the job itself (handlers are
        // wrapped); this guard only keeps the pool's accounting right.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        if !RELEASED.with(|r| r.replace(false)) {
            shared.idle.lock().push(slot.clone());
        }
        job = wait_for_job(&shared, &slot);
    }
    CURRENT.with(|c| c.borrow_mut().take());
    shared.threads.fetch_sub(1, Ordering::AcqRel);
}

/// Parks until a job lands in `slot`; `None` when the worker should exit
/// (idle too long, or the pool closed), after taking itself off the stack.
fn wait_for_job(shared: &Shared, slot: &Arc<Slot>) -> Option<Job> {
    let deadline = Instant::now() + shared.idle_timeout;
    loop {
        if let Some(job) = slot.job.lock().take() {
            return Some(job);
        }
        let now = Instant::now();
        if now >= deadline || shared.closed.load(Ordering::Acquire) {
            let mut idle = shared.idle.lock();
            if let Some(pos) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                idle.remove(pos);
                return None;
            }
            // Taken off the stack by `execute`: its job is on the way.
            drop(idle);
            loop {
                if let Some(job) = slot.job.lock().take() {
                    return Some(job);
                }
                std::thread::park();
            }
        }
        std::thread::park_timeout(deadline - now);
    }
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.threads() > 0 {
            assert!(Instant::now() < deadline, "workers did not exit");
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
            // Wait until the previous job's worker is back on the stack.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.threads() > 0 && pool.shared.idle.lock().is_empty() {
                assert!(Instant::now() < deadline);
                std::thread::yield_now();
            }
            pool.execute(Box::new(move || tx.send(()).unwrap()))
                .unwrap();
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn a_worker_released_early_takes_its_next_job_after_the_current_one() {
        let pool = Pool::new(1, 64 * 1024, Duration::from_secs(10));
        let (tx, rx) = crossbeam_channel::unbounded();
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let first = tx.clone();
        pool.execute(Box::new(move || {
            release_current_worker();
            go_rx.recv().unwrap();
            first.send(1).unwrap();
        }))
        .unwrap();
        // The only worker is released, so a second job is accepted...
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.shared.idle.lock().is_empty() {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        pool.execute(Box::new(move || tx.send(2).unwrap())).unwrap();
        // ...and runs once the first has returned.
        go_tx.send(()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
        assert_eq!(pool.threads(), 1);
    }
}
