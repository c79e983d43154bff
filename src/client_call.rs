//! The caller's side of a client call: [`UnaryCall`] (one response),
//! [`Streaming`] (a response iterator) and [`RequestSink`] (sending requests
//! one by one). Each reads its call's events from the connection thread,
//! decodes messages on the caller's own thread, and gives flow-control
//! credit back as it consumes them.

use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;

use crate::call_state::CallState;
use crate::client::RetryPlan;
use crate::client_conn::{CallEvent, ClientCmd, ClientConn};
use crate::codec;
use crate::compression::Encoding;
use crate::framing::FrameDecoder;
use crate::mailbox::Consumer;
use crate::metadata::Metadata;
use crate::protocol::{self, ResponseHead};
use crate::status::{Code, Status};

/// Consumed response bytes are returned to the server's flow-control window
/// in batches of at least this size (or when the caller is about to block).
const RELEASE_BATCH: usize = 16 * 1024;

/// A call's response as it arrives: headers, messages, then the status.
pub(crate) struct CallCore {
    conn: Option<Arc<ClientConn>>,
    key: u64,
    events: Option<Consumer<CallEvent>>,
    decoder: FrameDecoder,
    encoding: Encoding,
    max_receive: usize,
    /// Largest header block (headers or trailers) accepted.
    max_header_list: usize,
    headers: Option<Metadata>,
    trailers: Option<Metadata>,
    /// The final status, once known.
    status: Option<Status>,
    /// A failed status has been handed to the caller.
    reported: bool,
    /// Whether the last message returned arrived compressed.
    last_compressed: bool,
    unreleased: usize,
    /// How to start the call again if the server never processed it.
    retry: Option<RetryPlan>,
}

impl CallCore {
    pub(crate) fn new(
        conn: Arc<ClientConn>,
        key: u64,
        events: Consumer<CallEvent>,
        max_receive: usize,
        max_header_list: usize,
        retry: Option<RetryPlan>,
    ) -> CallCore {
        CallCore {
            retry,
            conn: Some(conn),
            key,
            events: Some(events),
            decoder: FrameDecoder::new(max_receive),
            encoding: Encoding::Identity,
            max_receive,
            max_header_list,
            headers: None,
            trailers: None,
            status: None,
            reported: false,
            last_compressed: false,
            unreleased: 0,
        }
    }

    /// A call that failed before it started.
    pub(crate) fn failed(status: Status) -> CallCore {
        CallCore {
            conn: None,
            key: 0,
            events: None,
            decoder: FrameDecoder::new(0),
            encoding: Encoding::Identity,
            max_receive: 0,
            max_header_list: 0,
            headers: None,
            trailers: None,
            status: Some(status),
            reported: false,
            last_compressed: false,
            unreleased: 0,
            retry: None,
        }
    }

    fn release(&mut self, wake: bool) {
        if self.unreleased > 0 && self.status.is_none() {
            if let Some(conn) = &self.conn {
                conn.send(ClientCmd::Release(self.key, self.unreleased));
                if wake {
                    conn.wake();
                }
            }
        }
        self.unreleased = 0;
    }

    fn end(&mut self, status: Status) {
        if self.headers.is_none() {
            self.headers = Some(Metadata::new());
        }
        self.trailers = Some(status.metadata().clone());
        self.status = Some(status);
        self.events = None;
    }

    /// Waits for and handles the next event. Returns false once the call is
    /// over.
    fn pump(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        let Some(events) = &self.events else {
            return false;
        };
        let event = match events.try_recv() {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.release(true);
                let Some(events) = &self.events else {
                    return false;
                };
                events.recv().unwrap_or_else(|| {
                    CallEvent::Error(Status::unavailable("the connection thread ended"))
                })
            }
            Err(()) => CallEvent::Error(Status::unavailable("the connection thread ended")),
        };
        let too_big = match &event {
            CallEvent::Headers(parts) => protocol::header_list_size(&parts.headers),
            CallEvent::Trailers(trailers) => protocol::header_list_size(trailers),
            _ => 0,
        };
        if too_big > self.max_header_list {
            self.finish_error(Status::resource_exhausted(format!(
                "the server sent a header block of {too_big} bytes, over this client's limit of \
                 {} bytes (ChannelBuilder::max_header_list_size)",
                self.max_header_list
            )));
            return true;
        }
        match event {
            CallEvent::Headers(parts) => match protocol::parse_response(&parts) {
                Ok(ResponseHead::Messages { metadata, encoding }) => {
                    self.headers = Some(metadata);
                    self.encoding = encoding;
                }
                Ok(ResponseHead::TrailersOnly(status)) => self.end(status),
                Err(status) => self.finish_error(status),
            },
            CallEvent::Data(chunk) => {
                self.unreleased += chunk.len();
                self.decoder.push(chunk);
                if self.unreleased >= RELEASE_BATCH {
                    self.release(true);
                }
            }
            CallEvent::Trailers(trailers) => {
                let status = protocol::parse_trailers(&trailers);
                self.end(status);
            }
            CallEvent::End => self.end(Status::internal(
                "the server ended the response without trailers (no grpc-status)",
            )),
            CallEvent::Error(status) => self.end(status),
            CallEvent::Refused(status) => self.retry_or_end(status),
        }
        true
    }

    /// The server never processed the call: start it again on a (new)
    /// connection if it is retryable and has attempts left.
    fn retry_or_end(&mut self, status: Status) {
        let Some(plan) = self.retry.as_mut().filter(|p| p.attempts_left > 0) else {
            return self.end(status);
        };
        if self.headers.is_some() {
            return self.end(status);
        }
        plan.attempts_left -= 1;
        match plan
            .channel
            .open(plan.path, &plan.options, Some(plan.body.clone()), true)
        {
            Ok(opened) => {
                self.conn = Some(opened.conn);
                self.key = opened.key;
                self.events = Some(opened.events);
            }
            // The new attempt's error says more than the refusal did.
            Err(e) => self.end(e),
        }
    }

    /// Ends the call locally with `status` and resets the stream.
    fn finish_error(&mut self, status: Status) {
        self.cancel_stream();
        self.end(status);
    }

    fn cancel_stream(&mut self) {
        if self.status.is_none() {
            if let Some(conn) = &self.conn {
                conn.send(ClientCmd::Cancel(self.key));
                conn.wake();
            }
        }
    }

    /// Blocks until the response headers arrive (or the call ends).
    pub(crate) fn headers(&mut self) -> Result<Metadata, Status> {
        while self.headers.is_none() {
            if !self.pump() {
                break;
            }
        }
        match (&self.headers, &self.status) {
            (Some(h), _) => Ok(h.clone()),
            (None, Some(s)) => Err(s.clone()),
            (None, None) => Err(Status::internal("the call ended without headers")),
        }
    }

    /// The next response message, `None` at a clean end, `Some(Err)` for a
    /// failed call (once; then `None`).
    pub(crate) fn next_message<M: Message + Default>(&mut self) -> Option<Result<M, Status>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.last_compressed = frame.compressed;
                    let result = codec::decode(frame, self.encoding, self.max_receive);
                    if let Err(status) = &result {
                        self.finish_error(status.clone());
                        self.decoder = FrameDecoder::new(0);
                        self.reported = true;
                    }
                    return Some(result);
                }
                Ok(None) => {}
                Err(e) => {
                    let status = codec::frame_error_status(e);
                    self.finish_error(status.clone());
                    self.decoder = FrameDecoder::new(0);
                    self.reported = true;
                    return Some(Err(status));
                }
            }
            if let Some(status) = &self.status {
                if status.code() == Code::Ok {
                    if self.decoder.finish().is_err() {
                        let s = Status::internal("the response ended in the middle of a message");
                        self.decoder = FrameDecoder::new(0);
                        self.status = Some(s.clone());
                        self.reported = true;
                        return Some(Err(s));
                    }
                    return None;
                }
                // Report a failure once, then end.
                if self.reported {
                    return None;
                }
                self.reported = true;
                return Some(Err(status.clone()));
            }
            self.pump();
        }
    }

    /// Exactly one message and an OK status.
    pub(crate) fn unary<M: Message + Default>(&mut self) -> Result<M, Status> {
        let message = match self.next_message::<M>() {
            Some(r) => r?,
            // Cardinality violations are UNIMPLEMENTED (doc/statuscodes.md).
            None => {
                return Err(Status::unimplemented(
                    "the server ended a unary call without a response message",
                ))
            }
        };
        match self.next_message::<M>() {
            None => Ok(message),
            Some(Ok(_)) => {
                let status = Status::unimplemented(
                    "the server sent more than one response message for a unary call",
                );
                self.finish_error(status.clone());
                Err(status)
            }
            Some(Err(e)) => Err(e),
        }
    }

    pub(crate) fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    pub(crate) fn cancel(&mut self) {
        self.finish_error(Status::cancelled("the call was cancelled by the client"));
    }
}

impl Drop for CallCore {
    fn drop(&mut self) {
        // Dropping a call before it ended cancels it (RST_STREAM CANCEL).
        self.cancel_stream();
    }
}

/// A response with its metadata.
#[derive(Debug, Clone)]
pub struct Response<T> {
    /// The response headers (initial metadata).
    pub headers: Metadata,
    /// The response message.
    pub message: T,
    /// The trailing metadata.
    pub trailers: Metadata,
    /// Whether the message arrived compressed (its compressed flag was set).
    pub compressed: bool,
}

impl<T> Response<T> {
    /// The message alone.
    pub fn into_inner(self) -> T {
        self.message
    }
}

/// A call in flight whose response is one message: the handle a
/// non-blocking start returns (nameko-grpc's `.future()`).
///
/// [`UnaryCall::wait`] blocks for the result. Dropping the handle before the
/// call completes cancels the call.
pub struct UnaryCall<Resp> {
    core: CallCore,
    _message: PhantomData<fn() -> Resp>,
}

impl<Resp: Message + Default> UnaryCall<Resp> {
    pub(crate) fn new(core: CallCore) -> Self {
        UnaryCall {
            core,
            _message: PhantomData,
        }
    }

    /// Blocks until the call ends; returns the response message.
    pub fn wait(mut self) -> Result<Resp, Status> {
        self.core.unary()
    }

    /// Blocks until the call ends; returns the message with the response's
    /// initial and trailing metadata.
    pub fn wait_response(mut self) -> Result<Response<Resp>, Status> {
        let message = self.core.unary()?;
        Ok(Response {
            headers: self.core.headers.take().unwrap_or_default(),
            message,
            trailers: self.core.trailers.take().unwrap_or_default(),
            compressed: self.core.last_compressed,
        })
    }

    /// Blocks until the response headers (initial metadata) arrive.
    pub fn headers(&mut self) -> Result<Metadata, Status> {
        self.core.headers()
    }

    /// Cancels the call (RST_STREAM CANCEL); the server's handler sees it.
    /// The call then ends with `CANCELLED` (what waiting on it, or reading
    /// on, returns).
    pub fn cancel(&mut self) {
        self.core.cancel();
    }
}

impl<Resp> std::fmt::Debug for UnaryCall<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryCall").finish_non_exhaustive()
    }
}

/// A stream of response messages: iterate it with `for`.
///
/// Each item is a message, or the error that ended the call (yielded once,
/// after which the iterator ends). A clean end is the end of iteration; the
/// trailing metadata is then available from [`Streaming::trailers`].
/// Dropping the stream before it ends cancels the call.
pub struct Streaming<Resp> {
    core: CallCore,
    _message: PhantomData<fn() -> Resp>,
}

impl<Resp: Message + Default> Streaming<Resp> {
    pub(crate) fn new(core: CallCore) -> Self {
        Streaming {
            core,
            _message: PhantomData,
        }
    }

    /// Blocks until the response headers (initial metadata) arrive.
    pub fn headers(&mut self) -> Result<Metadata, Status> {
        self.core.headers()
    }

    /// The trailing metadata, once the stream has ended.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.core.trailers()
    }

    /// Whether the message last returned by `next` arrived compressed.
    pub fn last_message_compressed(&self) -> bool {
        self.core.last_compressed
    }

    /// Cancels the call (RST_STREAM CANCEL); the server's handler sees it.
    /// The call then ends with `CANCELLED` (what waiting on it, or reading
    /// on, returns).
    pub fn cancel(&mut self) {
        self.core.cancel();
    }
}

impl<Resp: Message + Default> Iterator for Streaming<Resp> {
    type Item = Result<Resp, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.core.next_message()
    }
}

impl<Resp> std::fmt::Debug for Streaming<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming").finish_non_exhaustive()
    }
}

/// Sends a call's request messages one at a time.
///
/// [`RequestSink::send`] blocks while the server is not reading (flow
/// control), and fails once the call is over. [`RequestSink::finish`] (or
/// dropping the sink) tells the server no more requests will come.
pub struct RequestSink<Req> {
    conn: Option<Arc<ClientConn>>,
    key: u64,
    state: Arc<CallState>,
    encoding: Encoding,
    max_send: usize,
    failed: Option<Status>,
    _message: PhantomData<fn(Req)>,
}

impl<Req: Message> RequestSink<Req> {
    pub(crate) fn new(
        conn: Option<Arc<ClientConn>>,
        key: u64,
        state: Arc<CallState>,
        encoding: Encoding,
        max_send: usize,
        failed: Option<Status>,
    ) -> Self {
        RequestSink {
            conn,
            key,
            state,
            encoding,
            max_send,
            failed,
            _message: PhantomData,
        }
    }

    /// Sends one request message, compressed with the call's compression;
    /// blocks while flow control holds it back.
    pub fn send(&mut self, message: Req) -> Result<(), Status> {
        self.send_ref(&message, true)
    }

    /// Sends one request message without compressing it, whatever the
    /// call's compression (its compressed flag stays clear).
    pub fn send_uncompressed(&mut self, message: Req) -> Result<(), Status> {
        self.send_ref(&message, false)
    }

    pub(crate) fn send_ref(&mut self, message: &Req, compress: bool) -> Result<(), Status> {
        if let Some(s) = &self.failed {
            return Err(s.clone());
        }
        let Some(conn) = &self.conn else {
            return Err(Status::failed_precondition(
                "the request stream is already finished",
            ));
        };
        let encoding = if compress {
            self.encoding
        } else {
            Encoding::Identity
        };
        let frame = codec::encode(message, encoding, self.max_send)?;
        self.state.reserve(frame.len())?;
        conn.send(ClientCmd::Data(self.key, frame));
        conn.wake();
        Ok(())
    }

    /// Ends the request stream (half-close).
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.send(ClientCmd::End(self.key));
            conn.wake();
        }
    }
}

impl<Req> Drop for RequestSink<Req> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.send(ClientCmd::End(self.key));
            conn.wake();
        }
    }
}

impl<Req> std::fmt::Debug for RequestSink<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSink").finish_non_exhaustive()
    }
}
