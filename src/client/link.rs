//! What callers and a client connection thread say to each other: the
//! commands a call sends ([`ClientCmd`], through [`ClientConn`]) and the
//! response events the connection delivers to the call's mailbox
//! ([`CallEvent`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;
use http::{HeaderMap, Request};

use crate::rt::call_state::CallState;
use crate::rt::event_loop::Wake;
use crate::rt::mailbox::{Consumer, Producer};
use crate::rt::StreamKey;
use crate::status::Status;

/// What a caller asks of the connection.
pub(crate) enum ClientCmd {
    /// Open a stream; optionally send a first message and end the request.
    Start(Box<StartCall>),
    /// Send framed message bytes.
    Data(StreamKey, Bytes),
    /// Half-close: the client sends no more.
    End(StreamKey),
    /// Reset the stream with CANCEL.
    Cancel(StreamKey),
    /// The caller consumed this many response bytes: return the credit.
    Release(StreamKey, usize),
    /// The last handle is gone: close the connection.
    Close,
}

/// Whether a request ends with what is sent along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestEnd {
    /// The request is complete (unary and server-streaming calls).
    Now,
    /// More messages may follow through a sink.
    Later,
}

/// A new call: its headers, maybe its first message, and where its events go.
pub(crate) struct StartCall {
    pub(crate) key: StreamKey,
    pub(crate) request: Request<()>,
    pub(crate) body: Option<Bytes>,
    pub(crate) end: RequestEnd,
    pub(crate) events: Producer<CallEvent>,
    pub(crate) state: Arc<CallState>,
    pub(crate) deadline: Option<Instant>,
}

/// What the connection tells a caller about its call.
#[derive(Debug)]
pub(crate) enum CallEvent {
    /// The response headers.
    Headers(http::response::Parts),
    /// A chunk of the response body.
    Data(Bytes),
    /// The response trailers.
    Trailers(HeaderMap),
    /// The response body ended without trailers.
    End,
    /// The call failed.
    Error(Status),
    /// The call failed before the server processed it (never sent, refused,
    /// or above the last stream of a GOAWAY): safe to try again elsewhere.
    Refused(Status),
}

/// A live client connection, shared by the calls on it. Dropping the last
/// reference closes the connection and ends its thread.
pub(crate) struct ClientConn {
    tx: Sender<ClientCmd>,
    wake: Arc<Wake>,
    alive: Arc<AtomicBool>,
    /// Why the connection ended, set by its thread before it lets go of
    /// the commands it did not get to.
    ended: Arc<OnceLock<Status>>,
    next_key: AtomicU64,
}

impl ClientConn {
    pub(crate) fn new(
        tx: Sender<ClientCmd>,
        wake: Arc<Wake>,
        alive: Arc<AtomicBool>,
        ended: Arc<OnceLock<Status>>,
    ) -> Self {
        ClientConn {
            tx,
            wake,
            alive,
            ended,
            next_key: AtomicU64::new(0),
        }
    }

    /// Why the connection ended, once it has: for the calls whose start
    /// it never got to (queued as it ended, or after), which learn of it
    /// only by their mailbox closing.
    pub(crate) fn end_status(&self) -> Option<Status> {
        self.ended.get().cloned()
    }

    /// False once the connection has ended or the server sent GOAWAY: new
    /// calls need a new connection.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A key for a new call.
    pub(crate) fn next_key(&self) -> StreamKey {
        StreamKey(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues a command and wakes the connection thread.
    pub(crate) fn send(&self, cmd: ClientCmd) {
        let _ = self.tx.send(cmd);
        self.wake.wake();
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.send(ClientCmd::Close);
    }
}

/// A stream opened on a connection: where the call's commands go and where
/// its events come from.
pub(crate) struct Opened {
    pub(crate) conn: Arc<ClientConn>,
    pub(crate) key: StreamKey,
    pub(crate) state: Arc<CallState>,
    pub(crate) events: Consumer<CallEvent>,
}
