//! The state a call's two sides share: whether it is over (and why), and
//! how many bytes of outgoing messages wait on the connection thread.
//!
//! The thread that produces messages (a handler's [`ResponseSink`] or a
//! client's request sink) counts bytes in with [`CallState::reserve`], which
//! blocks while too much is queued; the connection thread counts them out
//! with [`CallState::sent`] as HTTP/2 flow control lets them go. That keeps
//! the memory of a call with a slow reader bounded.
//!
//! [`ResponseSink`]: crate::server::ResponseSink

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::rt::sync::{Condvar, Mutex};

use crate::status::Status;

/// Bytes of a call's outgoing messages that may wait on the connection
/// thread (not yet given to HTTP/2) before a sender blocks.
const SEND_QUEUE_LIMIT: usize = 64 * 1024;

/// State shared by a call's handler side and its connection thread.
pub(crate) struct CallState {
    cancelled: AtomicBool,
    reason: Mutex<Option<Status>>,
    /// Whether the last message received on this call was compressed.
    last_received_compressed: AtomicBool,
    /// Response bytes queued for the connection thread, not yet sent.
    queued: Mutex<usize>,
    room: Condvar,
    traffic: [Counter; 2],
    /// Run once when the call is cancelled.
    on_cancel: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

/// Messages and their bytes one way.
#[derive(Default)]
struct Counter {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// A call's messages so far, each way: counts, and bytes as they were on
/// the wire (the 5-byte prefix and the payload, compressed or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub(crate) messages_received: u64,
    pub(crate) bytes_received: u64,
    pub(crate) messages_sent: u64,
    pub(crate) bytes_sent: u64,
}

const RECEIVED: usize = 0;
const SENT: usize = 1;

impl CallState {
    pub(crate) fn new() -> CallState {
        CallState {
            cancelled: AtomicBool::new(false),
            reason: Mutex::new(None),
            last_received_compressed: AtomicBool::new(false),
            queued: Mutex::new(0),
            room: Condvar::new(),
            traffic: Default::default(),
            on_cancel: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` once the call is cancelled (at once if it already is), on
    /// the cancelling thread.
    pub(crate) fn on_cancel(&self, f: Box<dyn FnOnce() + Send>) {
        {
            let mut callbacks = self.on_cancel.lock();
            if !self.is_cancelled() {
                callbacks.push(f);
                return;
            }
        }
        f();
    }

    /// Counts a message of `wire_len` bytes received.
    pub(crate) fn note_received(&self, wire_len: usize) {
        self.count(RECEIVED, wire_len);
    }

    /// Counts a message of `wire_len` bytes sent (queued to be sent).
    pub(crate) fn note_sent(&self, wire_len: usize) {
        self.count(SENT, wire_len);
    }

    fn count(&self, way: usize, wire_len: usize) {
        let c = &self.traffic[way];
        c.messages.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(wire_len as u64, Ordering::Relaxed);
    }

    /// The messages counted so far.
    pub(crate) fn traffic(&self) -> Traffic {
        let get = |way: usize| {
            let c = &self.traffic[way];
            (
                c.messages.load(Ordering::Relaxed),
                c.bytes.load(Ordering::Relaxed),
            )
        };
        let (messages_received, bytes_received) = get(RECEIVED);
        let (messages_sent, bytes_sent) = get(SENT);
        Traffic {
            messages_received,
            bytes_received,
            messages_sent,
            bytes_sent,
        }
    }

    /// Marks the call over; wakes a handler blocked on sending.
    pub(crate) fn cancel(&self, reason: Status) {
        {
            let mut r = self.reason.lock();
            if r.is_none() {
                *r = Some(reason);
            }
        }
        let callbacks = {
            let mut callbacks = self.on_cancel.lock();
            self.cancelled.store(true, Ordering::Release);
            std::mem::take(&mut *callbacks)
        };
        {
            let _q = self.queued.lock();
            self.room.notify_all();
        }
        for f in callbacks {
            f();
        }
    }

    /// Records whether the message just received was compressed.
    pub(crate) fn set_received_compressed(&self, compressed: bool) {
        self.last_received_compressed
            .store(compressed, Ordering::Relaxed);
    }

    /// Whether the last message received was compressed.
    pub(crate) fn received_compressed(&self) -> bool {
        self.last_received_compressed.load(Ordering::Relaxed)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> Status {
        self.reason
            .lock()
            .clone()
            .unwrap_or_else(|| Status::cancelled("the call was cancelled"))
    }

    /// The connection thread gave `n` queued bytes to HTTP/2.
    pub(crate) fn sent(&self, n: usize) {
        let mut q = self.queued.lock();
        let was_full = *q >= SEND_QUEUE_LIMIT;
        *q = q.saturating_sub(n);
        if was_full && *q < SEND_QUEUE_LIMIT {
            self.room.notify_all();
        }
    }

    /// Blocks until the queue has room for more, then counts `n` bytes in.
    pub(crate) fn reserve(&self, n: usize) -> Result<(), Status> {
        let mut q = self.queued.lock();
        loop {
            if self.is_cancelled() {
                return Err(self.reason());
            }
            if *q < SEND_QUEUE_LIMIT {
                *q += n;
                return Ok(());
            }
            self.room.wait(&mut q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn cancel_callbacks_run_once_at_cancel_or_at_once_after() {
        let state = CallState::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        state.on_cancel(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        state.cancel(Status::cancelled("gone"));
        state.cancel(Status::cancelled("again"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let r = runs.clone();
        state.on_cancel(Box::new(move || {
            r.fetch_add(10, Ordering::SeqCst);
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 11);
        assert_eq!(state.reason().message(), "gone");
    }

    #[test]
    fn traffic_is_counted_each_way() {
        let state = CallState::new();
        state.note_received(10);
        state.note_received(7);
        state.note_sent(100);
        assert_eq!(
            state.traffic(),
            Traffic {
                messages_received: 2,
                bytes_received: 17,
                messages_sent: 1,
                bytes_sent: 100,
            }
        );
    }
}
