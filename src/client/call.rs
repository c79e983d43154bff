//! The caller's side of a client call: [`UnaryCall`] (one response) and
//! [`Streaming`] (a response iterator), both over a `CallCore` that reads
//! the call's events from the connection thread into its
//! [`ResponseReader`], decodes messages on the caller's own thread, gives
//! flow-control credit back as it consumes them, and starts the call again
//! when the server never processed it.

use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;

use crate::client::interceptor::Hooks;
use crate::client::link::{CallEvent, ClientCmd, ClientConn, Opened};
use crate::client::response::{Action, NextResponse, ResponseReader};
use crate::client::retry::RetryPlan;
use crate::error::TransportError;
use crate::metadata::Metadata;
use crate::rt::call_state::CallState;
use crate::rt::mailbox::Consumer;
use crate::rt::StreamKey;
use crate::status::Status;

/// The stream a call reads from.
struct Link {
    conn: Arc<ClientConn>,
    key: StreamKey,
    state: Arc<CallState>,
    events: Consumer<CallEvent>,
    /// The connection returns the response's credit itself.
    credited_on_arrival: bool,
}

impl Link {
    fn new(opened: Opened) -> Link {
        Link {
            conn: opened.conn,
            key: opened.key,
            state: opened.state,
            events: opened.events,
            credited_on_arrival: opened.credited_on_arrival,
        }
    }
}

/// A call's response as it arrives: the reader, the stream it is fed from,
/// and how to start the call again if the server never processed it.
pub(crate) struct CallCore {
    /// `None` for a call that failed before it had a stream.
    link: Option<Link>,
    reader: ResponseReader,
    retry: Option<RetryPlan>,
    /// The interceptors' after-hooks, due once the caller has seen the end.
    hooks: Option<Box<Hooks>>,
    /// The reader's limits, for a new attempt's reader.
    max_receive: usize,
    max_header_list: usize,
    /// The retry plan has seen this attempt's end.
    judged: bool,
}

impl CallCore {
    /// A call started on `opened`.
    pub(crate) fn new(
        opened: Opened,
        max_receive: usize,
        max_header_list: usize,
        retry: Option<RetryPlan>,
        hooks: Option<Box<Hooks>>,
    ) -> CallCore {
        CallCore {
            link: Some(Link::new(opened)),
            reader: ResponseReader::new(max_receive, max_header_list),
            retry,
            hooks,
            max_receive,
            max_header_list,
            judged: false,
        }
    }

    /// A call that failed before it started.
    pub(crate) fn failed(status: Status, hooks: Option<Box<Hooks>>) -> CallCore {
        CallCore {
            link: None,
            reader: ResponseReader::failed(status),
            retry: None,
            hooks,
            max_receive: 0,
            max_header_list: 0,
            judged: true,
        }
    }

    /// Runs the interceptors' after-hooks with the call's final status.
    fn run_after_hooks(&mut self) {
        let Some(hooks) = self.hooks.take() else {
            return;
        };
        let traffic = self
            .link
            .as_ref()
            .map(|l| l.state.traffic())
            .unwrap_or_default();
        let status = match self.reader.status() {
            Some(status) if self.reader.is_over() => status.clone(),
            _ => Status::cancelled("the call was dropped before it ended"),
        };
        hooks.after(&status, traffic);
    }

    fn command(&self, cmd: impl FnOnce(StreamKey) -> ClientCmd) {
        if let Some(link) = &self.link {
            link.conn.send(cmd(link.key));
        }
    }

    /// Gives back the credit the reader says is due.
    fn return_credit(&mut self, about_to_wait: bool) {
        if self.link.as_ref().is_some_and(|l| l.credited_on_arrival) {
            return;
        }
        if let Some(n) = self.reader.credit(about_to_wait) {
            self.command(|key| ClientCmd::Release(key, n));
        }
    }

    /// Resets the stream if the reader found a failure.
    fn reset_if_needed(&mut self) {
        if self.reader.take_reset() {
            self.command(ClientCmd::Cancel);
        }
    }

    /// Waits for and handles the next event.
    fn pump(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        // The connection thread ended without a word for this call: it
        // never saw the call (a start queued as the connection ended), so
        // the server never processed it either. The connection says why it
        // ended.
        let conn = link.conn.clone();
        let lost = move || {
            CallEvent::Refused(conn.end_status().unwrap_or_else(|| {
                Status::from_transport(TransportError::ConnectionLost(
                    "the connection ended before the call reached it".into(),
                ))
            }))
        };
        let event = match link.events.try_recv() {
            Ok(Some(event)) => event,
            Ok(None) => {
                self.return_credit(true);
                let Some(link) = &self.link else {
                    return;
                };
                link.events.recv().unwrap_or_else(lost)
            }
            Err(()) => lost(),
        };
        match self.reader.on_event(event) {
            Action::Continue => {}
            Action::Retry(status) => self.retry_or_end(status),
        }
        self.return_credit(false);
        self.reset_if_needed();
        self.follow_retry_policy();
    }

    /// The server never processed the call: start it again if it has a
    /// retry plan with attempts left.
    fn retry_or_end(&mut self, status: Status) {
        match self.retry.as_mut().and_then(RetryPlan::transparent) {
            Some(Ok(opened)) => self.link = Some(Link::new(opened)),
            // The new attempt's error says more than the refusal did.
            Some(Err(e)) => self.reader.end(e),
            None => self.reader.end(status),
        }
    }

    /// After an event: a committed call lets its retry plan go; an attempt
    /// that ended before it was committed is retried if the policy says
    /// so (after its backoff, on this thread).
    fn follow_retry_policy(&mut self) {
        let Some(plan) = &mut self.retry else {
            return;
        };
        if self.reader.committed() && !plan.is_committed() {
            plan.commit();
        }
        if !self.reader.is_over() || self.judged {
            return;
        }
        self.judged = true;
        let Some(status) = self.reader.status().cloned() else {
            return;
        };
        let Some(delay) = plan.after(&status, self.reader.pushback()) else {
            self.retry = None;
            return;
        };
        std::thread::sleep(delay);
        match plan.next_policy_attempt() {
            Ok(opened) => {
                self.link = Some(Link::new(opened));
                self.reader = ResponseReader::new(self.max_receive, self.max_header_list);
                self.judged = false;
            }
            // The call ends with the status of its last attempt.
            Err(e) => {
                log::debug!("a retry could not start: {e}");
                self.retry = None;
            }
        }
    }

    /// Blocks until the response headers arrive (or the call ends).
    pub(crate) fn headers(&mut self) -> Result<Metadata, Status> {
        while self.reader.headers().is_none() && !self.reader.is_over() {
            self.pump();
        }
        match (self.reader.headers(), self.reader.status()) {
            (Some(h), _) => Ok(h.clone()),
            (None, Some(s)) => Err(s.clone()),
            (None, None) => Err(Status::internal("the call ended without headers")),
        }
    }

    /// The next response message, `None` at a clean end, `Some(Err)` for a
    /// failed call (once; then `None`).
    pub(crate) fn next_message<M: Message + Default>(&mut self) -> Option<Result<M, Status>> {
        loop {
            match self.reader.next() {
                NextResponse::Message(m) => {
                    if let Some(link) = &self.link {
                        link.state.note_received(m.wire_len);
                    }
                    return Some(M::decode(m.payload).map_err(|e| {
                        let status = Status::internal(format!("failed to decode the message: {e}"));
                        self.reader.fail(status.clone());
                        self.reset_if_needed();
                        self.run_after_hooks();
                        status
                    }));
                }
                NextResponse::NeedEvent => self.pump(),
                // The caller decides whether a clean end is the call's end
                // (a unary call without its message is not).
                NextResponse::End => return None,
                NextResponse::Failed(status) => {
                    self.reset_if_needed();
                    self.run_after_hooks();
                    return Some(Err(status));
                }
            }
        }
    }

    /// Exactly one message and an OK status.
    pub(crate) fn unary<M: Message + Default>(&mut self) -> Result<M, Status> {
        let message = match self.next_message::<M>() {
            Some(r) => r?,
            // Cardinality violations are UNIMPLEMENTED (doc/statuscodes.md).
            None => {
                let status = Status::unimplemented(
                    "the server ended a unary call without a response message",
                );
                self.reader.fail(status.clone());
                self.run_after_hooks();
                return Err(status);
            }
        };
        // The end must follow. A second message fails the call as soon as
        // any of it is here: its credit may be held back (see
        // `rt::reader::Credit::OnArrival`), so the server may never send it
        // whole.
        loop {
            match self.reader.next() {
                NextResponse::NeedEvent if !self.reader.is_mid_message() => self.pump(),
                NextResponse::End => {
                    self.run_after_hooks();
                    return Ok(message);
                }
                NextResponse::Failed(status) => {
                    self.reset_if_needed();
                    self.run_after_hooks();
                    return Err(status);
                }
                NextResponse::Message(_) | NextResponse::NeedEvent => {
                    let status = Status::unimplemented(
                        "the server sent more than one response message for a unary call",
                    );
                    self.reader.fail(status.clone());
                    self.reset_if_needed();
                    self.run_after_hooks();
                    return Err(status);
                }
            }
        }
    }

    /// Cancels the call (RST_STREAM CANCEL); it then ends `CANCELLED`.
    pub(crate) fn cancel(&mut self) {
        self.reader
            .abort(Status::cancelled("the call was cancelled by the client"));
        self.reset_if_needed();
        self.run_after_hooks();
    }
}

impl Drop for CallCore {
    fn drop(&mut self) {
        // Dropping a call before it ended cancels it (RST_STREAM CANCEL).
        if !self.reader.is_over() {
            self.command(ClientCmd::Cancel);
        }
        self.run_after_hooks();
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

/// A call in flight whose response is one message: what the non-blocking
/// starts (`unary_start`, `client_streaming_start`, a generated client's
/// `..._start`) return. Start it, do other work, then wait.
///
/// [`UnaryCall::wait`] blocks for the result; [`UnaryCall::wait_response`]
/// also returns the response's initial and trailing metadata. Dropping the
/// handle before the call completes cancels the call.
#[must_use = "dropping a call cancels it; wait() for its result"]
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
            headers: self.core.reader.headers().cloned().unwrap_or_default(),
            message,
            trailers: self.core.reader.trailers().cloned().unwrap_or_default(),
            compressed: self.core.reader.last_compressed(),
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
#[must_use = "dropping a stream cancels its call; iterate it for the responses"]
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
        self.core.reader.trailers()
    }

    /// Whether the message last returned by `next` arrived compressed.
    pub fn last_message_compressed(&self) -> bool {
        self.core.reader.last_compressed()
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
        let next = self.core.next_message();
        if next.is_none() {
            self.core.run_after_hooks();
        }
        next
    }
}

impl<Resp> std::fmt::Debug for Streaming<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming").finish_non_exhaustive()
    }
}
