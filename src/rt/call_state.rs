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

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

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
}

impl CallState {
    pub(crate) fn new() -> CallState {
        CallState {
            cancelled: AtomicBool::new(false),
            reason: Mutex::new(None),
            last_received_compressed: AtomicBool::new(false),
            queued: Mutex::new(0),
            room: Condvar::new(),
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
        self.cancelled.store(true, Ordering::Release);
        let _q = self.queued.lock();
        self.room.notify_all();
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
