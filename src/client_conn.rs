//! One client connection: the thread that owns its socket and h2 state.
//!
//! Callers never touch h2. A call is started by queueing a [`ClientCmd`]
//! (headers, and for unary calls the request message and end-of-stream in
//! the same command) and waking this thread; responses flow back to the
//! caller as [`CallEvent`]s on the call's own channel. The thread sleeps in
//! `poll(2)` on the socket and a wake-up; the sleep's timeout is its timer
//! for call deadlines.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{FlowControl, RecvStream, SendStream};
use http::{HeaderMap, Request};

use crate::call_state::CallState;
use crate::error::TransportError;
use crate::io::{drive, waker, Driver, EventLoop, Socket, Wake, CONN_KEY};
use crate::mailbox::Producer;
use crate::protocol;
use crate::send_queue::SendQueue;
use crate::server_conn::{small_frame_budget, Keepalive};
use crate::status::Status;
use crate::timers::Timers;

/// How long a closing connection may take to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 settings of a client connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_send_buffer: usize,
    pub max_header_list_size: u32,
    pub stack_size: usize,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub keepalive_without_calls: bool,
}

/// Timer keys of the connection itself (stream keys count up from 0).
const CLOSE_TIMER: u64 = CONN_KEY;
const KEEPALIVE_TIMER: u64 = u64::MAX - 1;
const PONG_TIMER: u64 = u64::MAX - 2;

/// What a caller asks of the connection.
pub(crate) enum ClientCmd {
    /// Open a stream; optionally send a first message and end the request.
    Start(Box<StartCall>),
    /// Send framed message bytes.
    Data(u64, Bytes),
    /// Half-close: the client sends no more.
    End(u64),
    /// Reset the stream with CANCEL.
    Cancel(u64),
    /// The caller consumed this many response bytes: return the credit.
    Release(u64, usize),
    /// The last handle is gone: close the connection.
    Close,
}

/// A new call: its headers, maybe its first message, and where its events go.
pub(crate) struct StartCall {
    pub key: u64,
    pub request: Request<()>,
    pub body: Option<Bytes>,
    pub end: bool,
    pub events: Producer<CallEvent>,
    pub state: Arc<CallState>,
    pub deadline: Option<Instant>,
}

/// What the connection tells a caller about its call.
#[derive(Debug)]
pub(crate) enum CallEvent {
    Headers(http::response::Parts),
    Data(Bytes),
    Trailers(HeaderMap),
    /// The response body ended without trailers.
    End,
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
    next_key: AtomicU64,
}

impl ClientConn {
    /// Starts the connection thread on a connected socket.
    pub(crate) fn start(
        stream: TcpStream,
        settings: &ConnSettings,
    ) -> Result<Arc<ClientConn>, TransportError> {
        let _ = stream.set_nodelay(true);
        let (ev, socket) = EventLoop::new(stream).map_err(TransportError::Resource)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let alive = Arc::new(AtomicBool::new(true));
        let conn = Arc::new(ClientConn {
            tx,
            wake: ev.wake_handle().clone(),
            alive: alive.clone(),
            next_key: AtomicU64::new(0),
        });
        let handshake = h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_send_buffer_size(settings.max_send_buffer)
            // h2 drops trailer fields past its limit without a word; give it
            // a generous bound and apply ours to whole blocks (CallCore),
            // so that an oversize response fails clearly instead.
            .max_header_list_size(settings.max_header_list_size.saturating_mul(4).max(1 << 20))
            .data_frame_budget(small_frame_budget(settings.connection_window))
            .enable_push(false)
            .handshake::<_, Bytes>(socket);
        let conn_waker = waker(ev.wake_handle(), CONN_KEY);
        let worker = Worker {
            settings: settings.clone(),
            keepalive: Keepalive::default(),
            ev,
            phase: Phase::Handshaking(Box::pin(handshake)),
            conn_waker,
            rx,
            alive,
            streams: HashMap::new(),
            waiting: VecDeque::new(),
            last_opened: None,
            timers: Timers::default(),
            closing: false,
            end_status: None,
        };
        std::thread::Builder::new()
            .name("grpc-client-conn".into())
            .stack_size(settings.stack_size)
            .spawn(move || worker.run())
            .map_err(TransportError::Resource)?;
        Ok(conn)
    }

    /// False once the connection has ended or the server sent GOAWAY: new
    /// calls need a new connection.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A key for a new call.
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a command (call [`ClientConn::wake`] after the last of a batch).
    pub(crate) fn send(&self, cmd: ClientCmd) {
        let _ = self.tx.send(cmd);
    }

    /// Wakes the connection thread.
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let _ = self.tx.send(ClientCmd::Close);
        self.wake.wake();
    }
}

type HandshakeFuture = Pin<
    Box<
        dyn Future<Output = Result<(SendRequest<Bytes>, Connection<Socket, Bytes>), h2::Error>>
            + Send,
    >,
>;

// One per connection, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Handshaking(HandshakeFuture),
    Open {
        send_request: Option<SendRequest<Bytes>>,
        connection: Connection<Socket, Bytes>,
    },
    Done,
}

struct PendingStart {
    request: Request<()>,
}

struct Stream {
    waker: Waker,
    state: Arc<CallState>,
    /// The call's deadline (its timer is removed with the stream).
    deadline: Option<Instant>,
    events: Producer<CallEvent>,
    start: Option<PendingStart>,
    response: Option<ResponseFuture>,
    send: Option<SendStream<Bytes>>,
    recv: Option<RecvStream>,
    flow: Option<FlowControl>,
    out: SendQueue,
    /// End the request once `out` is drained.
    end: bool,
    /// The request side is closed (or was never going to send more).
    send_done: bool,
    /// The response is complete (trailers or an error delivered).
    recv_done: bool,
}

struct Worker {
    settings: ConnSettings,
    keepalive: Keepalive,
    ev: EventLoop,
    phase: Phase,
    conn_waker: Waker,
    rx: Receiver<ClientCmd>,
    alive: Arc<AtomicBool>,
    streams: HashMap<u64, Stream>,
    /// Streams waiting for h2 to accept another request.
    waiting: VecDeque<u64>,
    /// The stream handed to h2 last, until `poll_ready` says it is open.
    /// h2 holds a new stream back while the server's concurrent-stream
    /// limit is reached, and `poll_ready` then parks the connection's
    /// waker in that stream's one wake-up slot, replacing the stream's own
    /// (its flush waiting for send capacity): the stream must be polled
    /// again once it opens, or its request data never leaves.
    last_opened: Option<u64>,
    timers: Timers,
    closing: bool,
    /// Why the connection ended, when h2 said (a GOAWAY's reason, say).
    end_status: Option<Status>,
}

impl Driver for Worker {
    type Cmd = ClientCmd;
    fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.ev
    }
    fn apply(&mut self, cmd: ClientCmd) {
        Worker::apply(self, cmd);
    }
    fn poll_stream(&mut self, key: u64) {
        Worker::poll_stream(self, key);
    }
    fn poll_conn(&mut self) {
        Worker::poll_conn(self);
    }
    fn fire_timers(&mut self) -> Option<Duration> {
        self.fire_due_timers();
        self.timers.next_in(Instant::now())
    }
    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

impl Worker {
    fn run(mut self) {
        let commands = self.rx.clone();
        if let Err(e) = drive(&mut self, &commands) {
            log::error!("client connection event loop failed: {e}");
        }
        self.alive.store(false, Ordering::Release);
        let status = self.end_status.take().unwrap_or_else(|| {
            Status::from_transport(TransportError::ConnectionLost(
                "the connection closed while the call was in flight".into(),
            ))
        });
        self.fail_all(status);
    }

    fn apply(&mut self, cmd: ClientCmd) {
        match cmd {
            ClientCmd::Start(start) => {
                let StartCall {
                    key,
                    request,
                    body,
                    end,
                    events,
                    state,
                    deadline,
                } = *start;
                let mut out = SendQueue::default();
                if let Some(b) = body {
                    out.push(b);
                }
                self.streams.insert(
                    key,
                    Stream {
                        waker: waker(self.ev.wake_handle(), key),
                        state,
                        deadline,
                        events,
                        start: Some(PendingStart { request }),
                        response: None,
                        send: None,
                        recv: None,
                        flow: None,
                        out,
                        end,
                        send_done: false,
                        recv_done: false,
                    },
                );
                if let Some(d) = deadline {
                    self.timers.add(d, key);
                }
                self.waiting.push_back(key);
                self.start_waiting();
            }
            ClientCmd::Data(key, bytes) => {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.out.push(bytes);
                    self.flush(key);
                }
            }
            ClientCmd::End(key) => {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.end = true;
                    self.flush(key);
                }
            }
            ClientCmd::Cancel(key) => {
                if let Some(mut s) = self.take_stream(key) {
                    if let Some(send) = &mut s.send {
                        send.send_reset(h2::Reason::CANCEL);
                    }
                    s.state
                        .cancel(Status::cancelled("the call was cancelled by the client"));
                }
                self.waiting.retain(|k| *k != key);
            }
            ClientCmd::Release(key, n) => {
                if let Some(flow) = self.streams.get_mut(&key).and_then(|s| s.flow.as_mut()) {
                    let _ = flow.release_capacity(n);
                }
            }
            ClientCmd::Close => {
                self.closing = true;
                self.alive.store(false, Ordering::Release);
                if let Phase::Open { send_request, .. } = &mut self.phase {
                    // h2 closes the connection once no handle is left.
                    send_request.take();
                    self.timers.add(Instant::now() + CLOSE_TIMEOUT, CLOSE_TIMER);
                    self.conn_waker.wake_by_ref();
                } else {
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// Opens the streams that wait, as far as h2 lets us.
    fn start_waiting(&mut self) {
        let mut started = Vec::new();
        let mut reopened = Vec::new();
        let mut failed = Vec::new();
        if let Phase::Open {
            send_request: Some(sr),
            ..
        } = &mut self.phase
        {
            let mut cx = Context::from_waker(&self.conn_waker);
            while !self.waiting.is_empty() || self.last_opened.is_some() {
                match sr.poll_ready(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => {
                        // GOAWAY or a dead connection: waiting calls fail.
                        self.alive.store(false, Ordering::Release);
                        let status = protocol::status_for_h2_error(&e);
                        for key in std::mem::take(&mut self.waiting) {
                            failed.push((key, status.clone(), true));
                        }
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                }
                // The stream opened last is open on the wire now.
                if let Some(key) = self.last_opened.take() {
                    reopened.push(key);
                }
                let Some(key) = self.waiting.pop_front() else {
                    break;
                };
                let Some(s) = self.streams.get_mut(&key) else {
                    continue;
                };
                let Some(start) = s.start.take() else {
                    continue;
                };
                // Never END_STREAM on the request HEADERS, even when the
                // request is already over: the spec (PROTOCOL-HTTP2.md)
                // ends a request with a DATA frame, an empty one when no
                // data remains, and some servers (grpc-go 1.33) never
                // answer otherwise. `flush` sends it.
                match sr.send_request(start.request, false) {
                    Ok((response, send)) => {
                        s.response = Some(response);
                        s.send = Some(send);
                        self.last_opened = Some(key);
                        started.push(key);
                    }
                    Err(e) => failed.push((key, protocol::status_for_h2_error(&e), true)),
                }
            }
        }
        for (key, status, refused) in failed {
            self.fail_with(key, status, refused);
        }
        for key in started {
            self.poll_stream(key);
        }
        // h2 may have held these back for the server's stream limit: their
        // wake-ups went to the connection (see `last_opened`).
        for key in reopened {
            self.poll_stream(key);
        }
    }

    fn poll_conn(&mut self) {
        let conn_waker = self.conn_waker.clone();
        let mut cx = Context::from_waker(&conn_waker);
        if let Phase::Handshaking(h) = &mut self.phase {
            match h.as_mut().poll(&mut cx) {
                Poll::Ready(Ok((send_request, mut connection))) => {
                    self.keepalive.set(connection.ping_pong());
                    if let Some(every) = self.settings.keepalive_interval {
                        self.timers.add(Instant::now() + every, KEEPALIVE_TIMER);
                    }
                    self.phase = Phase::Open {
                        send_request: (!self.closing).then_some(send_request),
                        connection,
                    };
                    self.start_waiting();
                }
                Poll::Ready(Err(e)) => {
                    log::debug!("HTTP/2 handshake failed: {e}");
                    self.phase = Phase::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
        if self.keepalive.poll_pong(&mut cx) {
            if let Some(every) = self.settings.keepalive_interval {
                self.timers.add(Instant::now() + every, KEEPALIVE_TIMER);
            }
        }
        if let Phase::Open { connection, .. } = &mut self.phase {
            match Pin::new(connection).poll(&mut cx) {
                Poll::Ready(result) => {
                    // h2 may hold complete responses, or per-stream GOAWAY
                    // errors, that arrived in this same pass: hand those
                    // over before failing what is left.
                    let keys: Vec<u64> = self.streams.keys().copied().collect();
                    for key in keys {
                        self.poll_stream(key);
                    }
                    if let Err(e) = result {
                        log::debug!("client connection ended: {e}");
                        self.end_status = Some(protocol::status_for_h2_error(&e));
                    }
                    self.phase = Phase::Done;
                }
                Poll::Pending => self.start_waiting(),
            }
        }
    }

    fn poll_stream(&mut self, key: u64) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        let mut error = None;
        if let Some(fut) = &mut s.response {
            match Pin::new(fut).poll(&mut cx) {
                Poll::Ready(Ok(response)) => {
                    s.response = None;
                    let (parts, mut body) = response.into_parts();
                    s.flow = Some(body.flow_control().clone());
                    s.recv = Some(body);
                    let _ = s.events.send(CallEvent::Headers(parts));
                }
                Poll::Ready(Err(e)) => {
                    s.response = None;
                    if protocol::never_processed(&e) {
                        // GOAWAY above this stream (the connection takes no
                        // new calls), or REFUSED_STREAM (it still does).
                        if e.is_go_away() {
                            self.alive.store(false, Ordering::Release);
                        }
                        let status = protocol::status_for_h2_error(&e);
                        self.fail_with(key, status, true);
                        return;
                    }
                    error = Some(protocol::status_for_h2_error(&e));
                }
                Poll::Pending => {}
            }
        }
        if let Some(recv) = &mut s.recv {
            loop {
                match recv.poll_data(&mut cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let n = chunk.len();
                        if s.events.send(CallEvent::Data(chunk)).is_err() {
                            if let Some(flow) = &mut s.flow {
                                let _ = flow.release_capacity(n);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        error = Some(protocol::status_for_h2_error(&e));
                        break;
                    }
                    Poll::Ready(None) => {
                        match recv.poll_trailers(&mut cx) {
                            Poll::Ready(Ok(Some(t))) => {
                                let _ = s.events.send(CallEvent::Trailers(t));
                            }
                            Poll::Ready(Ok(None)) => {
                                let _ = s.events.send(CallEvent::End);
                            }
                            Poll::Ready(Err(e)) => {
                                error = Some(protocol::status_for_h2_error(&e));
                                break;
                            }
                            Poll::Pending => break,
                        }
                        s.recv = None;
                        s.recv_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if let Some(status) = error {
            self.fail(key, status);
            return;
        }
        if s.recv_done {
            // The server has answered in full: anything still to send is
            // moot, and blocked senders must learn the call is over.
            s.state.cancel(Status::failed_precondition(
                "the server already ended the call; no more requests can be sent",
            ));
            self.take_stream(key);
            return;
        }
        self.flush(key);
    }

    /// Gives queued request data to h2 as flow control allows, then the
    /// end of the request.
    fn flush(&mut self, key: u64) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let Some(send) = &mut s.send else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        let mut failed = None;
        match s.out.flush(send, &mut cx, s.end) {
            Ok(flushed) => {
                if flushed.sent > 0 {
                    s.state.sent(flushed.sent);
                }
                s.send_done = flushed.ended;
            }
            Err(e) => failed = Some(protocol::status_for_h2_error(&e)),
        }
        if s.send_done {
            s.send = None;
        } else if failed.is_none() && s.out.is_empty() {
            // Watch for a reset while idle.
            if let Poll::Ready(Ok(reason)) = send.poll_reset(&mut cx) {
                failed = Some(protocol::status_for_h2_error(&h2::Error::from(reason)));
            }
        }
        if let Some(status) = failed {
            self.fail(key, status);
        }
    }

    /// Takes a stream out of the map, with its deadline timer.
    fn take_stream(&mut self, key: u64) -> Option<Stream> {
        let s = self.streams.remove(&key)?;
        if let Some(at) = s.deadline {
            self.timers.remove(at, key);
        }
        Some(s)
    }

    fn fail(&mut self, key: u64, status: Status) {
        self.fail_with(key, status, false);
    }

    /// Ends a call with `status`; `refused` says the server never
    /// processed it.
    fn fail_with(&mut self, key: u64, status: Status, refused: bool) {
        if let Some(s) = self.take_stream(key) {
            s.state.cancel(status.clone());
            let event = if refused {
                CallEvent::Refused(status)
            } else {
                CallEvent::Error(status)
            };
            let _ = s.events.send(event);
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.timers.pop_due(now) {
            if key >= PONG_TIMER {
                self.connection_timer(key);
                continue;
            }
            if let Some(mut s) = self.take_stream(key) {
                if let Some(send) = &mut s.send {
                    send.send_reset(h2::Reason::CANCEL);
                }
                let status = Status::deadline_exceeded("the call's deadline passed");
                s.state.cancel(status.clone());
                let _ = s.events.send(CallEvent::Error(status));
                self.waiting.retain(|k| *k != key);
            }
        }
    }

    fn connection_timer(&mut self, key: u64) {
        match key {
            CLOSE_TIMER if self.closing => self.phase = Phase::Done,
            KEEPALIVE_TIMER => {
                let Some(every) = self.settings.keepalive_interval else {
                    return;
                };
                let wanted = self.settings.keepalive_without_calls || !self.streams.is_empty();
                if wanted && self.keepalive.ping() {
                    self.timers
                        .add(Instant::now() + self.settings.keepalive_timeout, PONG_TIMER);
                    self.conn_waker.wake_by_ref();
                } else if !self.keepalive.awaiting() {
                    self.timers.add(Instant::now() + every, KEEPALIVE_TIMER);
                }
            }
            PONG_TIMER if self.keepalive.overdue(self.settings.keepalive_timeout) => {
                log::debug!(
                    "closing the connection: keepalive ping not answered within {:?}",
                    self.settings.keepalive_timeout
                );
                self.alive.store(false, Ordering::Release);
                self.fail_all(Status::from_transport(TransportError::ConnectionLost(
                    format!(
                        "the server did not answer a keepalive ping within {:?}",
                        self.settings.keepalive_timeout
                    ),
                )));
                self.phase = Phase::Done;
            }
            _ => {}
        }
    }

    fn fail_all(&mut self, status: Status) {
        for (_, s) in self.streams.drain() {
            s.state.cancel(status.clone());
            // A call whose headers never left was never processed.
            let event = if s.start.is_some() {
                CallEvent::Refused(status.clone())
            } else {
                CallEvent::Error(status.clone())
            };
            let _ = s.events.send(event);
        }
    }
}
