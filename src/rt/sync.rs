//! The lock and condition variable every thread of the library uses: the
//! standard library's, with the calling convention of `parking_lot` (no
//! poisoning to unwrap, a condition variable that waits on a guard it
//! borrows).
//!
//! Not `parking_lot` itself: its mutex yields the processor
//! (`sched_yield`) while it spins on a contended lock, and on a busy server
//! (connection threads and handler threads passing calls to one another)
//! those yields were a system call per call. The standard mutex spins
//! briefly without yielding, then sleeps on a futex.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A mutual-exclusion lock; a panic while it is held does not poison it.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

/// Holds a [`Mutex`] locked until dropped.
pub(crate) struct MutexGuard<'a, T>(Option<std::sync::MutexGuard<'a, T>>);

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    /// Locks, waiting for the lock if another thread holds it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(Some(self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_deref().expect("a guard holds its lock")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_deref_mut().expect("a guard holds its lock")
    }
}

/// Whether a timed wait ended because its time ran out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitTimeout(bool);

impl WaitTimeout {
    pub(crate) fn timed_out(self) -> bool {
        self.0
    }
}

/// A condition variable for [`Mutex`] guards.
///
/// It counts its waiters, and a notification with nobody waiting costs no
/// system call (the standard one's always makes one: on a busy client,
/// every call's end notified a condition variable nobody waited on).
/// Nothing is lost by it: a waiter counts itself with the lock held, after
/// checking what it waits for, so a notifier that changed that under the
/// same lock either sees the waiter counted or is seen by the waiter's
/// check.
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    inner: std::sync::Condvar,
    waiters: AtomicUsize,
}

impl Condvar {
    pub(crate) const fn new() -> Self {
        Condvar {
            inner: std::sync::Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Releases the lock, waits for a notification, locks again.
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let inner = guard.0.take().expect("a guard holds its lock");
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.wait(inner).unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        guard.0 = Some(inner);
    }

    /// [`wait`](Self::wait), at most for `timeout`.
    pub(crate) fn wait_for<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeout {
        let inner = guard.0.take().expect("a guard holds its lock");
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (inner, result) = self
            .inner
            .wait_timeout(inner, timeout)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        guard.0 = Some(inner);
        WaitTimeout(result.timed_out())
    }

    /// [`wait`](Self::wait), at most until `deadline`.
    pub(crate) fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeout {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return WaitTimeout(true);
        }
        self.wait_for(guard, left)
    }

    /// Wakes one waiter, if any waits.
    pub(crate) fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.notify_one();
        }
    }

    /// Wakes every waiter, if any waits.
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_are_woken_and_time_out() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p = pair.clone();
        let t = std::thread::spawn(move || {
            *p.0.lock() = true;
            p.1.notify_all();
        });
        let mut ready = pair.0.lock();
        while !*ready {
            pair.1.wait(&mut ready);
        }
        drop(ready);
        t.join().unwrap();
        let mut guard = pair.0.lock();
        assert!(pair
            .1
            .wait_for(&mut guard, Duration::from_millis(1))
            .timed_out());
        assert!(pair
            .1
            .wait_until(&mut guard, Instant::now() - Duration::from_millis(1))
            .timed_out());
        // A panic while locked does not poison the lock.
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("while locked");
        })
        .join();
        assert_eq!(*m.lock(), 1);
    }

    #[test]
    fn no_notification_is_lost_when_nobody_is_counted_waiting() {
        // Two threads hand a turn back and forth, each notifying after
        // changing the turn under the lock: a lost notification leaves one
        // waiting its whole time.
        let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
        let turns = 20_000;
        let player = |me: u32, pair: Arc<(Mutex<u32>, Condvar)>| {
            move || {
                let (turn, changed) = &*pair;
                let mut t = turn.lock();
                while *t < turns {
                    if *t % 2 == me {
                        *t += 1;
                        changed.notify_one();
                    } else {
                        let waited = changed.wait_for(&mut t, Duration::from_secs(10));
                        assert!(!waited.timed_out() || *t % 2 == me, "a lost notification");
                    }
                }
            }
        };
        let a = std::thread::spawn(player(0, pair.clone()));
        let b = std::thread::spawn(player(1, pair.clone()));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(pair.1.waiters.load(Ordering::SeqCst), 0);
    }
}
