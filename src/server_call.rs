//! What a handler sees of its call: the [`ServerContext`], the blocking
//! [`Requests`] iterator and the [`ResponseSink`], and the four functions
//! generated services use to run a handler for each RPC pattern.
//!
//! Handlers never touch h2. Messages reach them over a channel from the
//! connection thread; what they send goes back as commands on the
//! connection's channel, followed by a wake-up.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;

use crate::call_state::CallState;
use crate::codec;
use crate::compression::Encoding;
use crate::error_policy::ErrorPolicy;
use crate::framing::FrameDecoder;
use crate::mailbox::Consumer;
use crate::metadata::Metadata;
use crate::server_conn::{ConnHandle, StreamCmd};
use crate::status::{Code, Status};

/// Consumed request bytes are returned to the peer's flow-control window in
/// batches of at least this size (or when the handler is about to block).
const RELEASE_BATCH: usize = 16 * 1024;

/// What the connection thread delivers to a call's request iterator.
pub(crate) enum Inbound {
    /// A chunk of the request body (any number of partial frames).
    Data(Bytes),
    /// The client finished sending.
    End,
    /// The call is over: cancelled, deadline, connection lost.
    Error(Status),
}

/// Everything a call carries into its handler. Made by the connection
/// thread, consumed by [`unary`], [`server_streaming`], [`client_streaming`],
/// [`bidi_streaming`] or [`ServerCall::unimplemented`].
pub struct ServerCall {
    pub(crate) key: u64,
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) state: Arc<CallState>,
    pub(crate) inbound: Consumer<Inbound>,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) request_encoding: Encoding,
    pub(crate) response_encoding: Encoding,
    pub(crate) accept_encoding: Vec<Encoding>,
    pub(crate) policy: Arc<ErrorPolicy>,
    pub(crate) max_receive: usize,
    pub(crate) max_send: usize,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("service", &self.service)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl ServerCall {
    /// Answers `UNIMPLEMENTED`: the service has no such method.
    pub fn unimplemented(self) {
        let msg = format!(
            "unknown method {} for service {}",
            self.method, self.service
        );
        let (ctx, _requests, _sink) = self.split::<(), ()>();
        ctx.out.finish(Err(Status::unimplemented(msg)));
    }

    fn split<Req, Resp>(self) -> (ServerContext, Requests<Req>, ResponseSink<Resp>) {
        let out = Arc::new(Outbound {
            conn: self.conn.clone(),
            key: self.key,
            state: self.state.clone(),
            policy: self.policy,
            accept_encoding: self.accept_encoding,
            max_send: self.max_send,
            inner: Mutex::new(OutState {
                encoding: self.response_encoding,
                ..OutState::default()
            }),
        });
        let requests = Requests {
            rx: self.inbound,
            state: self.state.clone(),
            decoder: FrameDecoder::new(self.max_receive),
            encoding: self.request_encoding,
            max_receive: self.max_receive,
            conn: self.conn,
            key: self.key,
            unreleased: 0,
            ended: false,
            failed: false,
            _message: PhantomData,
        };
        let ctx = ServerContext {
            method: format!("/{}/{}", self.service, self.method),
            metadata: self.metadata,
            peer: self.peer,
            deadline: self.deadline,
            out: out.clone(),
        };
        let sink = ResponseSink {
            out,
            _message: PhantomData,
        };
        (ctx, requests, sink)
    }
}

#[derive(Default)]
struct OutState {
    /// The response compression, fixed once the headers are sent.
    encoding: Encoding,
    headers_sent: bool,
    finished: bool,
    trailing: Metadata,
    code: Option<Code>,
    message: Option<String>,
}

/// The sending half of a call, shared by its context and its sink.
struct Outbound {
    conn: Arc<ConnHandle>,
    key: u64,
    state: Arc<CallState>,
    policy: Arc<ErrorPolicy>,
    /// What the client said it can decompress (`grpc-accept-encoding`).
    accept_encoding: Vec<Encoding>,
    max_send: usize,
    inner: Mutex<OutState>,
}

impl Outbound {
    fn cmd(&self, cmd: StreamCmd) {
        self.conn.send(self.key, cmd);
    }

    /// Sends the response headers if they have not gone yet.
    fn ensure_headers(&self, inner: &mut OutState, metadata: Metadata) {
        if !inner.headers_sent {
            inner.headers_sent = true;
            self.cmd(StreamCmd::Headers(metadata, inner.encoding));
        }
    }

    fn send_frame(&self, frame: Bytes, wake: bool) -> Result<(), Status> {
        {
            let mut inner = self.inner.lock();
            if inner.finished {
                return Err(Status::failed_precondition(
                    "the call has already finished; no more messages can be sent",
                ));
            }
            self.ensure_headers(&mut inner, Metadata::new());
        }
        self.state.reserve(frame.len())?;
        self.cmd(StreamCmd::Data(frame));
        if wake {
            self.conn.wake();
        }
        Ok(())
    }

    /// Ends the call: the handler's result, or the code and message it set
    /// on the context, with the trailing metadata.
    fn finish(&self, result: Result<(), Status>) {
        let mut inner = self.inner.lock();
        if inner.finished {
            return;
        }
        inner.finished = true;
        let mut status = match result {
            Ok(()) => Status::new(
                inner.code.unwrap_or(Code::Ok),
                inner.message.take().unwrap_or_default(),
            ),
            Err(status) => self.policy.map(status),
        };
        let mut trailing = std::mem::take(&mut inner.trailing);
        trailing.extend(std::mem::take(status.metadata_mut()));
        let status = status.with_metadata(trailing);
        drop(inner);
        // The handler is done: its worker is free for the next call even
        // before the status below reaches the client.
        crate::pool::release_current_worker();
        if self.state.is_cancelled() {
            return;
        }
        self.cmd(StreamCmd::Finish(status));
        self.conn.wake();
    }
}

/// The server side of one call: what the client sent besides its messages,
/// and the controls a handler has over the response.
///
/// This is the API grpcio's `ServicerContext` and nameko-grpc's `context`
/// offer: invocation metadata, initial and trailing metadata, the status code
/// and message, the deadline, cancellation and the peer's address.
pub struct ServerContext {
    method: String,
    metadata: Metadata,
    peer: Option<SocketAddr>,
    deadline: Option<Instant>,
    out: Arc<Outbound>,
}

impl ServerContext {
    /// The metadata the client sent with the call (its request headers, less
    /// the ones gRPC itself uses).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// When the call's deadline passes, if the client set one
    /// (`grpc-timeout`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed); `None` when
    /// there is no deadline.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the call is over for the client: it cancelled, its deadline
    /// passed, or the connection was lost. Long-running handlers should check
    /// this and stop.
    pub fn is_cancelled(&self) -> bool {
        self.out.state.is_cancelled()
    }

    /// Sends the response headers now, with `metadata` in them. Fails if the
    /// headers were already sent (by an earlier call or by the first response
    /// message).
    pub fn send_initial_metadata(&self, metadata: Metadata) -> Result<(), Status> {
        let mut inner = self.out.inner.lock();
        if inner.headers_sent {
            return Err(Status::failed_precondition(
                "initial metadata was already sent",
            ));
        }
        self.out.ensure_headers(&mut inner, metadata);
        drop(inner);
        self.out.conn.wake();
        Ok(())
    }

    /// Whether the most recent request message arrived compressed (for a
    /// unary handler: its request).
    pub fn request_compressed(&self) -> bool {
        self.out.state.received_compressed()
    }

    /// Chooses the compression of the response messages (by default the
    /// request's, when the client accepts it, else none). Must be called
    /// before the response headers are sent, and only with an algorithm the
    /// client listed in `grpc-accept-encoding` (or identity).
    pub fn set_compression(&self, encoding: Encoding) -> Result<(), Status> {
        let mut inner = self.out.inner.lock();
        if inner.headers_sent {
            return Err(Status::failed_precondition(
                "the response compression cannot change after the headers were sent",
            ));
        }
        if encoding != Encoding::Identity && !self.out.accept_encoding.contains(&encoding) {
            return Err(Status::invalid_argument(format!(
                "the client does not accept {encoding} compressed responses"
            )));
        }
        inner.encoding = encoding;
        Ok(())
    }

    /// The response compression in effect.
    pub fn compression(&self) -> Encoding {
        self.out.inner.lock().encoding
    }

    /// Sets metadata to send in the trailers when the call ends (replacing
    /// what was set before).
    pub fn set_trailing_metadata(&self, metadata: Metadata) {
        self.out.inner.lock().trailing = metadata;
    }

    /// Sets the status code the call ends with when the handler returns `Ok`.
    pub fn set_code(&self, code: Code) {
        self.out.inner.lock().code = Some(code);
    }

    /// Sets the status message the call ends with when the handler returns
    /// `Ok`.
    pub fn set_message(&self, message: impl Into<String>) {
        self.out.inner.lock().message = Some(message.into());
    }
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("method", &self.method)
            .field("metadata", &self.metadata)
            .field("peer", &self.peer)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The request messages of a call, as a blocking iterator.
///
/// `next()` waits for the client's next message. Flow-control credit goes
/// back to the client only as messages are taken from here, so a handler
/// that stops reading stops its client once the stream's window is full,
/// and memory stays bounded. The iterator ends (`None`) when the client
/// finishes sending; it yields `Err` if the call is cancelled or a message
/// cannot be decoded, and then ends.
pub struct Requests<T> {
    rx: Consumer<Inbound>,
    state: Arc<CallState>,
    decoder: FrameDecoder,
    encoding: Encoding,
    max_receive: usize,
    conn: Arc<ConnHandle>,
    key: u64,
    unreleased: usize,
    ended: bool,
    failed: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> Requests<T> {
    fn release(&mut self, wake: bool) {
        if self.unreleased > 0 {
            self.conn
                .send(self.key, StreamCmd::Release(self.unreleased));
            self.unreleased = 0;
            if wake {
                self.conn.wake();
            }
        }
    }

    fn fail(&mut self, status: Status) -> Option<Result<T, Status>> {
        self.failed = true;
        Some(Err(status))
    }

    /// The next frame's plain bytes.
    fn next_payload(&mut self) -> Option<Result<Bytes, Status>> {
        if self.failed {
            return None;
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.state.set_received_compressed(frame.compressed);
                    return Some(codec::unpack(frame, self.encoding, self.max_receive));
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(codec::frame_error_status(e)));
                }
            }
            if self.ended {
                if let Err(e) = self.decoder.finish() {
                    self.failed = true;
                    return Some(Err(codec::frame_error_status(e)));
                }
                return None;
            }
            let item = match self.rx.try_recv() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    // About to block: give back what was consumed first, or
                    // the client may be waiting for exactly that credit.
                    self.release(true);
                    self.rx
                        .recv()
                        .unwrap_or_else(|| Inbound::Error(Status::cancelled("the call ended")))
                }
                Err(()) => Inbound::Error(Status::cancelled("the call ended")),
            };
            match item {
                Inbound::Data(chunk) => {
                    self.unreleased += chunk.len();
                    self.decoder.push(chunk);
                    if self.unreleased >= RELEASE_BATCH {
                        self.release(true);
                    }
                }
                Inbound::End => self.ended = true,
                Inbound::Error(status) => {
                    self.failed = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

impl<T: Message + Default> Requests<T> {
    /// Exactly one message, as unary and server-streaming calls require.
    fn single(&mut self) -> Result<T, Status> {
        let first = match self.next() {
            Some(r) => r?,
            // A cardinality violation: UNIMPLEMENTED (doc/statuscodes.md).
            None => {
                return Err(Status::unimplemented(
                    "the client sent no request message for a unary request",
                ))
            }
        };
        match self.next() {
            None => {}
            Some(Ok(_)) => {
                return Err(Status::unimplemented(
                    "the client sent more than one request message for a unary request",
                ))
            }
            Some(Err(e)) => return Err(e),
        }
        // The response that follows wakes the connection thread.
        self.release(false);
        Ok(first)
    }
}

impl<T: Message + Default> Iterator for Requests<T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_payload()? {
            Ok(bytes) => match T::decode(bytes) {
                Ok(m) => Some(Ok(m)),
                Err(e) => self.fail(Status::internal(format!(
                    "failed to decode the request message: {e}"
                ))),
            },
            Err(status) => self.fail(status),
        }
    }
}

impl<T> Drop for Requests<T> {
    fn drop(&mut self) {
        self.release(true);
    }
}

impl<T> std::fmt::Debug for Requests<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").finish_non_exhaustive()
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

impl<T: Message> ResponseSink<T> {
    /// Sends one response message, compressed with the call's response
    /// compression (see [`ServerContext::set_compression`]).
    pub fn send(&mut self, message: T) -> Result<(), Status> {
        self.send_inner(&message, true, true)
    }

    /// Sends one response message without compressing it, whatever the
    /// call's response compression (its compressed flag stays clear).
    pub fn send_uncompressed(&mut self, message: T) -> Result<(), Status> {
        self.send_inner(&message, true, false)
    }

    fn send_inner(&mut self, message: &T, wake: bool, compress: bool) -> Result<(), Status> {
        if self.out.state.is_cancelled() {
            return Err(self.out.state.reason());
        }
        let encoding = if compress {
            self.out.inner.lock().encoding
        } else {
            Encoding::Identity
        };
        let frame = codec::encode(message, encoding, self.out.max_send)?;
        self.out.send_frame(frame, wake)
    }
}

impl<T> std::fmt::Debug for ResponseSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSink").finish_non_exhaustive()
    }
}

/// Runs a unary handler: one request in, one response out.
pub fn unary<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req, &ServerContext) -> Result<Resp, Status>,
{
    let (ctx, mut requests, mut sink) = call.split::<Req, Resp>();
    let result = requests
        .single()
        .and_then(|req| ctx.out.policy.run(false, || f(req, &ctx)))
        .and_then(|resp| sink.send_inner(&resp, false, true));
    ctx.out.finish(result);
}

/// Runs a server-streaming handler: one request in, any number of responses
/// out through the sink.
pub fn server_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req, &ServerContext, &mut ResponseSink<Resp>) -> Result<(), Status>,
{
    let (ctx, mut requests, mut sink) = call.split::<Req, Resp>();
    let result = requests
        .single()
        .and_then(|req| ctx.out.policy.run(true, || f(req, &ctx, &mut sink)));
    ctx.out.finish(result);
}

/// Runs a client-streaming handler: a stream of requests in, one response out.
pub fn client_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Requests<Req>, &ServerContext) -> Result<Resp, Status>,
{
    let (ctx, requests, mut sink) = call.split::<Req, Resp>();
    let result = ctx
        .out
        .policy
        .run(false, || f(requests, &ctx))
        .and_then(|resp| sink.send_inner(&resp, false, true));
    ctx.out.finish(result);
}

/// Runs a bidirectional-streaming handler.
pub fn bidi_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Requests<Req>, &ServerContext, &mut ResponseSink<Resp>) -> Result<(), Status>,
{
    let (ctx, requests, mut sink) = call.split::<Req, Resp>();
    let result = ctx.out.policy.run(true, || f(requests, &ctx, &mut sink));
    ctx.out.finish(result);
}
