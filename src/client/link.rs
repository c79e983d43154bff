//! What callers and a client connection thread say to each other: the
//! commands a call sends ([`ClientCmd`], through [`ClientConn`]) and the
//! response events the connection delivers to the call's mailbox
//! ([`CallEvent`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::rt::sync::Mutex;
use bytes::Bytes;
use crossbeam_channel::Sender;
use http::{HeaderMap, Request};

use crate::rt::call_state::CallState;
use crate::rt::event_loop::Wake;
use crate::rt::mailbox::{mailbox, Consumer, Producer};
use crate::rt::reader::Credit;
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
    /// Who returns the response's flow-control credit.
    pub(crate) credit: Credit,
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

/// Whether a connection takes new calls, and who to tell when it stops.
#[derive(Default)]
pub(crate) struct Alive {
    down: AtomicBool,
    on_down: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Why the connection ended, for calls whose start it never got to.
    end: std::sync::OnceLock<Status>,
}

impl Alive {
    /// Records why the connection ended (the first reason stays).
    pub(crate) fn set_end(&self, status: Status) {
        let _ = self.end.set(status);
    }

    /// False once the connection has ended or will take no new calls.
    pub(crate) fn is_alive(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// The connection takes no new calls from now on: runs the hook, once.
    pub(crate) fn set_down(&self) {
        if !self.down.swap(true, Ordering::AcqRel) {
            let hook = self.on_down.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }

    /// Runs `hook` when the connection goes down (at once if it is).
    pub(crate) fn on_down(&self, hook: Box<dyn FnOnce() + Send>) {
        {
            let mut slot = self.on_down.lock();
            if self.is_alive() {
                *slot = Some(hook);
                return;
            }
        }
        hook();
    }
}

/// A live client connection, shared by the calls on it. Dropping the last
/// reference closes the connection and ends its thread.
pub(crate) struct ClientConn {
    tx: Sender<ClientCmd>,
    wake: Arc<Wake>,
    alive: Arc<Alive>,
    next_key: AtomicU64,
}

impl ClientConn {
    pub(crate) fn new(tx: Sender<ClientCmd>, wake: Arc<Wake>, alive: Arc<Alive>) -> Self {
        ClientConn {
            tx,
            wake,
            alive,
            next_key: AtomicU64::new(0),
        }
    }

    /// False once the connection has ended or the server sent GOAWAY: new
    /// calls need a new connection.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.is_alive()
    }

    /// Why the connection ended, once it has.
    pub(crate) fn end_status(&self) -> Option<Status> {
        self.alive.end.get().cloned()
    }

    /// Runs `hook` once the connection takes no new calls.
    pub(crate) fn on_down(&self, hook: Box<dyn FnOnce() + Send>) {
        self.alive.on_down(hook);
    }

    /// A key for a new call.
    pub(crate) fn next_key(&self) -> StreamKey {
        StreamKey(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts a call: queues its request headers, maybe its whole request
    /// body, and where its events go.
    pub(crate) fn open(
        self: &Arc<Self>,
        request: Request<()>,
        body: Option<Bytes>,
        end: RequestEnd,
        deadline: Option<Instant>,
        credit: Credit,
    ) -> Opened {
        let key = self.next_key();
        let state = Arc::new(CallState::new());
        if let Some(body) = &body {
            state.note_sent(body.len());
        }
        let (tx, rx) = mailbox();
        self.send(ClientCmd::Start(Box::new(StartCall {
            key,
            request,
            body,
            end,
            events: tx,
            state: state.clone(),
            deadline,
            credit,
        })));
        Opened {
            conn: self.clone(),
            key,
            state,
            events: rx,
            credited_on_arrival: !credit.is_by_reader(),
        }
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
    /// The connection returns the response's credit as it arrives (a
    /// response of one message), so the caller does not.
    pub(crate) credited_on_arrival: bool,
}
