//! A one-consumer queue between a connection thread and the thread running
//! one call (a handler, or a caller).
//!
//! The consumer blocks in `recv` on a condition variable: no spinning and
//! no `sched_yield` before it parks (a general-purpose channel's receive
//! backoff showed up as a large share of a busy server's time, since every
//! message of a stream wakes a consumer that has just gone to sleep). Either
//! side learns when the other is gone: `recv` returns `None` once the
//! producer is dropped and the queue is empty, and `send` fails once the
//! consumer is dropped.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::rt::sync::{Condvar, Mutex};

struct State<T> {
    queue: VecDeque<T>,
    producer: bool,
    consumer: bool,
    /// The consumer is blocked in `recv`.
    waiting: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

/// The producing end.
pub(crate) struct Producer<T> {
    inner: Arc<Inner<T>>,
}

/// The consuming end.
pub(crate) struct Consumer<T> {
    inner: Arc<Inner<T>>,
}

/// A new mailbox.
pub(crate) fn mailbox<T>() -> (Producer<T>, Consumer<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(4),
            producer: true,
            consumer: true,
            waiting: false,
        }),
        ready: Condvar::new(),
    });
    (
        Producer {
            inner: inner.clone(),
        },
        Consumer { inner },
    )
}

impl<T> Producer<T> {
    /// Queues `item`; gives it back if the consumer is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.enqueue(item, true)
    }

    /// Queues `item` without waking the consumer; gives it back if the
    /// consumer is gone. Call [`Producer::notify`] (or drop the producer)
    /// once the items that go together are queued: a consumer that wakes for
    /// the first would otherwise sleep again for each of the others.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        self.enqueue(item, false)
    }

    /// Wakes the consumer if it waits and something is queued.
    pub(crate) fn notify(&self) {
        let state = self.inner.state.lock();
        let wake = state.waiting && !state.queue.is_empty();
        drop(state);
        if wake {
            self.inner.ready.notify_one();
        }
    }

    /// Queues `item`, waking the consumer (if it waits) when `wake`.
    fn enqueue(&self, item: T, wake: bool) -> Result<(), T> {
        let mut state = self.inner.state.lock();
        if !state.consumer {
            return Err(item);
        }
        state.queue.push_back(item);
        let wake = wake && state.waiting;
        drop(state);
        if wake {
            self.inner.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        state.producer = false;
        let wake = state.waiting;
        drop(state);
        if wake {
            self.inner.ready.notify_one();
        }
    }
}

impl<T> Consumer<T> {
    /// The next item without waiting: `Ok(None)` when the queue is empty,
    /// `Err(())` when it is empty and the producer is gone.
    pub(crate) fn try_recv(&self) -> Result<Option<T>, ()> {
        let mut state = self.inner.state.lock();
        match state.queue.pop_front() {
            Some(item) => Ok(Some(item)),
            None if state.producer => Ok(None),
            None => Err(()),
        }
    }

    /// The next item, waiting for it; `None` once the queue is empty and
    /// the producer is gone.
    pub(crate) fn recv(&self) -> Option<T> {
        let mut state = self.inner.state.lock();
        loop {
            if let Some(item) = state.queue.pop_front() {
                return Some(item);
            }
            if !state.producer {
                return None;
            }
            state.waiting = true;
            self.inner.ready.wait(&mut state);
            state.waiting = false;
        }
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        state.consumer = false;
        state.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_arrive_in_order_and_ends_are_seen() {
        let (tx, rx) = mailbox();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(Some(1)));
        assert_eq!(rx.recv(), Some(2));
        assert_eq!(rx.try_recv(), Ok(None));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(()));
        assert_eq!(rx.recv(), None);
        let (tx, rx) = mailbox::<u8>();
        drop(rx);
        assert_eq!(tx.send(7), Err(7));
    }

    #[test]
    fn pushed_items_wait_for_a_notify_or_the_end() {
        let (tx, rx) = mailbox();
        let (got_tx, got) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            while let Some(v) = rx.recv() {
                got_tx.send(v).unwrap();
            }
        });
        // The consumer is blocked: pushes alone do not wake it...
        std::thread::sleep(Duration::from_millis(20));
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert!(got.recv_timeout(Duration::from_millis(50)).is_err());
        // ...a notify does, and it takes both.
        tx.notify();
        assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(1));
        assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(2));
        // So does the producer's end, for what it pushed last.
        std::thread::sleep(Duration::from_millis(20));
        tx.push(3).unwrap();
        drop(tx);
        assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(3));
        t.join().unwrap();
    }

    #[test]
    fn a_blocked_consumer_wakes_for_items_and_for_the_end() {
        let (tx, rx) = mailbox();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(v) = rx.recv() {
                got.push(v);
            }
            got
        });
        for i in 0..1000 {
            tx.send(i).unwrap();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(tx);
        assert_eq!(t.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }
}
