//! The response side of a server call: [`Outbound`], the sending half a
//! call's context and sink share, and [`ResponseSink`], where a handler
//! writes its response messages.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::rt::sync::Mutex;
use bytes::Bytes;
use prost::Message;

use crate::code::Code;
use crate::metadata::Metadata;
use crate::rt::call_state::CallState;
use crate::rt::kept_buffers;
use crate::rt::StreamKey;
use crate::server::error_policy::ErrorPolicy;
use crate::server::link::{ConnHandle, StreamCmd, Wakeup};
use crate::server::pool;
use crate::status::Status;
use crate::wire::codec::Compress;
use crate::wire::compression::Encoding;

/// What the handler has said of its response so far.
#[derive(Default)]
pub(crate) struct OutState {
    /// The response compression, fixed once the headers are sent.
    pub(crate) encoding: Encoding,
    pub(crate) headers_sent: bool,
    pub(crate) finished: bool,
    pub(crate) trailing: Metadata,
    pub(crate) code: Option<Code>,
    pub(crate) message: Option<String>,
    /// What interceptors put in the response headers and the trailers.
    pub(crate) interceptor_headers: Metadata,
    pub(crate) interceptor_trailers: Metadata,
}

/// The sending half of a call, shared by its context and its sink.
pub(crate) struct Outbound {
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) key: StreamKey,
    pub(crate) state: Arc<CallState>,
    pub(crate) policy: Arc<ErrorPolicy>,
    /// What the client said it can decompress (`grpc-accept-encoding`).
    pub(crate) accept_encoding: Vec<Encoding>,
    pub(crate) max_send: usize,
    pub(crate) inner: Mutex<OutState>,
}

impl Outbound {
    fn cmd(&self, cmd: StreamCmd, wakeup: Wakeup) {
        self.conn.send(self.key, cmd, wakeup);
    }

    /// Sends the response headers if they have not gone yet.
    pub(crate) fn ensure_headers(&self, inner: &mut OutState, metadata: Metadata, wakeup: Wakeup) {
        if !inner.headers_sent {
            inner.headers_sent = true;
            let mut headers = std::mem::take(&mut inner.interceptor_headers);
            headers.extend(metadata);
            self.cmd(StreamCmd::Headers(headers, inner.encoding), wakeup);
        }
    }

    /// Encodes and sends one message.
    pub(crate) fn send_message<M: Message>(
        &self,
        message: &M,
        compress: Compress,
        wakeup: Wakeup,
    ) -> Result<(), Status> {
        if self.state.is_cancelled() {
            return Err(self.state.reason());
        }
        let encoding = compress.encoding(self.inner.lock().encoding);
        let frame = kept_buffers::encode(message, encoding, self.max_send)?;
        self.send_frame(frame, wakeup)
    }

    fn send_frame(&self, frame: Bytes, wakeup: Wakeup) -> Result<(), Status> {
        {
            let mut inner = self.inner.lock();
            if inner.finished {
                return Err(Status::failed_precondition(
                    "the call has already finished; no more messages can be sent",
                ));
            }
            self.ensure_headers(&mut inner, Metadata::new(), Wakeup::Later);
        }
        self.state.reserve(frame.len())?;
        self.state.note_sent(frame.len());
        self.cmd(StreamCmd::Data(frame), wakeup);
        Ok(())
    }

    /// Ends the call: the handler's result, or the code and message it set
    /// on the context, with the trailing metadata. Returns the status the
    /// client was told (or why the call was over before that), the first
    /// time only.
    pub(crate) fn finish(&self, result: Result<(), Status>) -> Option<Status> {
        let mut inner = self.inner.lock();
        if inner.finished {
            return None;
        }
        inner.finished = true;
        let mut status = match result {
            Ok(()) => Status::new(
                inner.code.unwrap_or(Code::Ok),
                inner.message.take().unwrap_or_default(),
            ),
            Err(status) => self.policy.map(status),
        };
        let mut trailing = std::mem::take(&mut inner.interceptor_trailers);
        trailing.extend(std::mem::take(&mut inner.trailing));
        trailing.extend(std::mem::take(status.metadata_mut()));
        let status = status.with_metadata(trailing);
        drop(inner);
        // The handler is done: its worker is free for the next call even
        // before the status below reaches the client.
        pool::release_current_worker();
        if self.state.is_cancelled() {
            return Some(self.state.reason());
        }
        self.cmd(StreamCmd::Finish(status.clone()), Wakeup::Now);
        Some(status)
    }
}

/// Where a handler writes its response messages.
///
/// `send` blocks while the client is not reading (the HTTP/2 window is
/// full and the small queue in front of it too), so a slow client slows its
/// handler down instead of filling memory. It fails once the call is over
/// (cancelled, deadline passed, connection lost).
pub struct ResponseSink<T> {
    out: Arc<Outbound>,
    _message: PhantomData<fn(T)>,
}

impl<T> ResponseSink<T> {
    pub(crate) fn new(out: Arc<Outbound>) -> Self {
        ResponseSink {
            out,
            _message: PhantomData,
        }
    }
}

impl<T: Message> ResponseSink<T> {
    /// Sends one response message, compressed with the call's response
    /// compression (see
    /// [`ServerContext::set_compression`](crate::server::ServerContext::set_compression)).
    pub fn send(&mut self, message: T) -> Result<(), Status> {
        self.out
            .send_message(&message, Compress::AsCall, Wakeup::Now)
    }

    /// Sends one response message without compressing it, whatever the
    /// call's response compression (its compressed flag stays clear).
    pub fn send_uncompressed(&mut self, message: T) -> Result<(), Status> {
        self.out
            .send_message(&message, Compress::Never, Wakeup::Now)
    }
}

impl<T> std::fmt::Debug for ResponseSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSink").finish_non_exhaustive()
    }
}
