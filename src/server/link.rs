//! What a call's handler and its connection thread say to each other: the
//! commands a handler sends (through [`ConnHandle`]) and the request events
//! the connection delivers to the handler's mailbox ([`Inbound`]).

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::metadata::Metadata;
use crate::rt::event_loop::Wake;
use crate::rt::StreamKey;
use crate::status::Status;
use crate::wire::compression::Encoding;

/// What a handler asks of its stream.
pub(crate) enum StreamCmd {
    /// Send the response headers with this initial metadata.
    Headers(Metadata, Encoding),
    /// Send one or more framed messages.
    Data(Bytes),
    /// End the call with this status (trailers, or Trailers-Only).
    Finish(Status),
    /// The handler consumed this many request bytes: return the credit.
    Release(usize),
}

/// What other threads ask of a connection.
pub(crate) enum ConnCmd {
    /// A command for one stream.
    Stream(StreamKey, StreamCmd),
    /// Send GOAWAY, finish in-flight calls, then close.
    Shutdown,
    /// Close now; in-flight calls end CANCELLED / UNAVAILABLE.
    Abort,
}

/// What the connection thread delivers to a call's request iterator.
pub(crate) enum Inbound {
    /// A chunk of the request body (any number of partial frames).
    Data(Bytes),
    /// The client finished sending.
    End,
    /// The call is over: cancelled, deadline, connection lost.
    Error(Status),
}

/// The handle other threads use to reach a connection thread.
pub(crate) struct ConnHandle {
    tx: Sender<ConnCmd>,
    wake: Arc<Wake>,
}

/// Whether a command wakes the connection thread at once, or waits for a
/// later one that will (batching a call's headers, message and status into
/// one wake-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// Wake the thread now.
    Now,
    /// Leave it: another command follows that wakes it.
    Later,
}

impl ConnHandle {
    pub(crate) fn new(tx: Sender<ConnCmd>, wake: Arc<Wake>) -> Self {
        ConnHandle { tx, wake }
    }

    /// Queues a command for stream `key`, waking the thread as `wakeup`
    /// says.
    pub(crate) fn send(&self, key: StreamKey, cmd: StreamCmd, wakeup: Wakeup) {
        let _ = self.tx.send(ConnCmd::Stream(key, cmd));
        if wakeup == Wakeup::Now {
            self.wake.wake();
        }
    }

    /// Queues a connection-level command and wakes the thread.
    pub(crate) fn control(&self, cmd: ConnCmd) {
        let _ = self.tx.send(cmd);
        self.wake.wake();
    }
}
