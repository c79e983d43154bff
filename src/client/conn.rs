//! One client connection: the thread that owns its socket and h2 state.
//!
//! Callers never touch h2. A call is started by queueing a
//! [`ClientCmd::Start`] (headers, and for unary calls the request message
//! and its end in the same command) and waking this thread; responses flow
//! back to the caller as [`CallEvent`]s on the call's own mailbox. The
//! thread sleeps in one wait (mio: `epoll_wait` on Linux) on the socket
//! and a wake-up; the sleep's timeout is its timer for call deadlines and
//! keepalive. Idle for `park_idle_after`, the connection moves, whole, into
//! the process's parker and its thread is free; the parker's pool drives it
//! again when a call starts or the server sends (`rt/parking.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{FlowControl, RecvStream, SendStream};
use http::Request;

use crate::client::link::{Alive, CallEvent, ClientCmd, ClientConn, RequestEnd, StartCall};
use crate::error::TransportError;
use crate::rt::call_state::CallState;
use crate::rt::event_loop::{conn_waker, drive, stream_waker, Drive, Driver, EventLoop, Socket};
use crate::rt::keepalive::{Keepalive, Liveness};
use crate::rt::mailbox::Producer;
use crate::rt::parking::{Parkable, Parker, Wakeable};
use crate::rt::reader::{Credit, Unwoken};
use crate::rt::send_queue::SendQueue;
use crate::rt::settings::ConnConfig;
use crate::rt::timers::Timer;
use crate::rt::StreamKey;
use crate::status::Status;
use crate::transport::{Blocked, RawSocket, Transport};
use crate::wire::reset::{never_processed, status_for_h2_error};

/// How long a closing connection may take to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sets up a connection on a connected socket: returns the handle calls
/// use, and the connection's loop, to run on the thread that will own it
/// (it returns when the connection has ended).
///
/// `silent_close` is what a connection lost before the server sent a
/// single byte means, when the handshake knows better than "connection
/// lost" (see `tls::ClientSession::sent_no_certificate`).
pub(crate) fn prepare(
    socket: RawSocket,
    transport: impl FnOnce(Arc<RawSocket>, Arc<Blocked>) -> Transport,
    config: &ConnConfig,
    silent_close: Option<TransportError>,
) -> Result<(Arc<ClientConn>, impl FnOnce()), TransportError> {
    let (ev, socket) =
        EventLoop::with_transport(socket, transport).map_err(TransportError::Resource)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let alive = Arc::new(Alive::default());
    let handle = Arc::new(ClientConn::new(tx, ev.wake_handle().clone(), alive.clone()));
    let handshake = config.http2.client().handshake::<_, Bytes>(socket);
    let conn = Conn {
        conn_waker: conn_waker(ev.wake_handle()),
        keepalive: Keepalive::new(config.keepalive),
        ev,
        phase: Phase::Handshaking(Box::pin(handshake)),
        rx,
        alive,
        streams: HashMap::new(),
        unwoken: Unwoken::new(config.http2.connection_window),
        waiting: VecDeque::new(),
        last_opened: None,
        closing: false,
        end_status: None,
        silent_close,
        park_idle_after: config.park_idle_after,
    };
    Ok((handle, move || Box::new(conn).run()))
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

struct Stream {
    waker: Waker,
    state: Arc<CallState>,
    /// The call's deadline (its timer is removed with the stream).
    deadline: Option<Instant>,
    events: Producer<CallEvent>,
    /// Who returns the response's flow-control credit.
    credit: Credit,
    /// Events were queued this pass that the caller must wake for.
    wake: bool,
    /// The request headers, until h2 takes them.
    start: Option<Request<()>>,
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

struct Conn {
    /// How long the connection has nothing to do before it parks.
    park_idle_after: Option<Duration>,
    keepalive: Keepalive,
    ev: EventLoop,
    phase: Phase,
    conn_waker: Waker,
    rx: Receiver<ClientCmd>,
    alive: Arc<Alive>,
    streams: HashMap<StreamKey, Stream>,
    /// Response bytes delivered to callers not woken for them.
    unwoken: Unwoken,
    /// Streams waiting for h2 to accept another request.
    waiting: VecDeque<StreamKey>,
    /// The stream handed to h2 last, until `poll_ready` says it is open.
    /// h2 holds a new stream back while the server's concurrent-stream
    /// limit is reached, and `poll_ready` then parks the connection's
    /// waker in that stream's one wake-up slot, replacing the stream's own
    /// (its flush waiting for send capacity): the stream must be polled
    /// again once it opens, or its request data never leaves.
    last_opened: Option<StreamKey>,
    closing: bool,
    /// Why the connection ended, when h2 said (a GOAWAY's reason, say).
    end_status: Option<Status>,
    /// Why a connection lost before the server sent anything ended, when
    /// the TLS handshake knows (see [`start`]).
    silent_close: Option<TransportError>,
}

impl Driver for Conn {
    type Cmd = ClientCmd;

    fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.ev
    }

    fn apply(&mut self, cmd: ClientCmd) {
        match cmd {
            ClientCmd::Start(start) => self.start_call(*start),
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
            }
            ClientCmd::Release(key, n) => {
                if let Some(flow) = self.streams.get_mut(&key).and_then(|s| s.flow.as_mut()) {
                    let _ = flow.release_capacity(n);
                }
            }
            ClientCmd::Close => {
                self.closing = true;
                self.alive.set_down();
                if let Phase::Open { send_request, .. } = &mut self.phase {
                    // h2 closes the connection once no handle is left.
                    send_request.take();
                    self.ev
                        .timers
                        .add(Instant::now() + CLOSE_TIMEOUT, Timer::Close);
                    self.conn_waker.wake_by_ref();
                } else {
                    self.phase = Phase::Done;
                }
            }
        }
    }

    fn poll_stream(&mut self, key: StreamKey) {
        self.poll_stream_events(key);
        // The events of this pass wake the caller once, if one of them
        // calls for it (a stream that left the map woke it as its producer
        // dropped).
        if let Some(s) = self.streams.get_mut(&key) {
            if std::mem::take(&mut s.wake) {
                self.unwoken.changed(s.credit.unwoken(), 0);
                s.credit.woken();
                s.events.notify();
            }
        }
        // Bytes callers were not woken for hold credit (see `Unwoken`).
        if self.unwoken.wake_all_due() {
            for s in self.streams.values_mut() {
                if s.credit.wake_due() {
                    s.events.notify();
                }
            }
        }
    }

    fn poll_conn(&mut self) {
        let conn_waker = self.conn_waker.clone();
        let mut cx = Context::from_waker(&conn_waker);
        if let Phase::Handshaking(h) = &mut self.phase {
            match h.as_mut().poll(&mut cx) {
                Poll::Ready(Ok((send_request, mut connection))) => {
                    self.keepalive.start(
                        connection.ping_pong(),
                        Instant::now(),
                        &mut self.ev.timers,
                    );
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
        self.keepalive
            .poll_pong(&mut cx, Instant::now(), &mut self.ev.timers);
        if let Phase::Open { connection, .. } = &mut self.phase {
            match Pin::new(connection).poll(&mut cx) {
                Poll::Ready(result) => {
                    // h2 may hold complete responses, or per-stream GOAWAY
                    // errors, that arrived in this same pass: hand those
                    // over before failing what is left.
                    let keys: Vec<StreamKey> = self.streams.keys().copied().collect();
                    for key in keys {
                        self.poll_stream(key);
                    }
                    if let Err(e) = result {
                        log::debug!("client connection ended: {e}");
                        self.end_status = Some(status_for_h2_error(&e));
                    }
                    self.phase = Phase::Done;
                }
                Poll::Pending => self.start_waiting(),
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        let now = Instant::now();
        match timer {
            Timer::Deadline(key) => {
                if let Some(mut s) = self.take_stream(key) {
                    if let Some(send) = &mut s.send {
                        send.send_reset(h2::Reason::CANCEL);
                    }
                    let status = Status::deadline_exceeded("the call's deadline passed");
                    s.state.cancel(status.clone());
                    let _ = s.events.send(CallEvent::Error(status));
                }
            }
            Timer::Close if self.closing => self.phase = Phase::Done,
            Timer::KeepalivePing | Timer::KeepalivePong => {
                let idle = self.streams.is_empty();
                let timers = &mut self.ev.timers;
                let liveness = self
                    .keepalive
                    .on_timer(timer, now, !idle, timers, &self.conn_waker);
                if liveness == Liveness::PeerGone {
                    let timeout = self.keepalive.timeout();
                    log::debug!(
                        "closing the connection: keepalive ping not answered within {timeout:?}"
                    );
                    self.alive.set_down();
                    self.fail_all(Status::from_transport(TransportError::ConnectionLost(
                        format!("the server did not answer a keepalive ping within {timeout:?}"),
                    )));
                    self.phase = Phase::Done;
                }
            }
            _ => {}
        }
    }

    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn park_after(&self) -> Option<Duration> {
        self.park_idle_after
    }

    fn parkable(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
            && (self.streams.is_empty() || self.parks_at_once())
            && self.waiting.is_empty()
            && !self.closing
    }
}

impl Parkable for Conn {
    fn wakeable(&mut self) -> &mut dyn Wakeable {
        &mut self.ev
    }

    fn resume(self: Box<Self>) {
        self.run()
    }
}

/// The process's parker for idle client connections (made at the first
/// park; `None` if it could not be).
fn parker() -> Option<&'static Parker> {
    static PARKER: OnceLock<Option<Parker>> = OnceLock::new();
    PARKER
        .get_or_init(
            || match Parker::new("grpc-cli-parker", "grpc-client-pool", 512 * 1024) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("idle client connections keep their threads: {e}");
                    None
                }
            },
        )
        .as_ref()
}

/// Whether the server may have processed a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Processed {
    /// It may have: the call fails.
    Maybe,
    /// It never did: the caller may try again.
    Never,
}

impl Conn {
    /// Polls one stream: its response, its data and trailers (queued for
    /// the caller, who [`Driver::poll_stream`] wakes once they are all in),
    /// then what it has to send.
    fn poll_stream_events(&mut self, key: StreamKey) {
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
                    let _ = s.events.push(CallEvent::Headers(parts));
                    s.wake = true;
                }
                Poll::Ready(Err(e)) => {
                    s.response = None;
                    if never_processed(&e) {
                        // GOAWAY above this stream (the connection takes no
                        // new calls), or REFUSED_STREAM (it still does).
                        if e.is_go_away() {
                            self.alive.set_down();
                        }
                        self.fail(key, status_for_h2_error(&e), Processed::Never);
                        return;
                    }
                    error = Some(status_for_h2_error(&e));
                }
                Poll::Pending => {}
            }
        }
        let unwoken_before = s.credit.unwoken();
        if let Some(recv) = &mut s.recv {
            loop {
                match recv.poll_data(&mut cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let n = chunk.len();
                        let events = &s.events;
                        let handed = s.credit.hand_over(chunk, |chunk, _| {
                            events.push(CallEvent::Data(chunk)).is_ok()
                        });
                        if handed.release {
                            if let Some(flow) = &mut s.flow {
                                let _ = flow.release_capacity(n);
                            }
                        }
                        s.wake |= handed.wake;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        error = Some(status_for_h2_error(&e));
                        break;
                    }
                    Poll::Ready(None) => {
                        match recv.poll_trailers(&mut cx) {
                            Poll::Ready(Ok(Some(t))) => {
                                let _ = s.events.push(CallEvent::Trailers(t));
                                s.wake = true;
                            }
                            Poll::Ready(Ok(None)) => {
                                let _ = s.events.push(CallEvent::End);
                                s.wake = true;
                            }
                            Poll::Ready(Err(e)) => {
                                error = Some(status_for_h2_error(&e));
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
        self.unwoken.changed(unwoken_before, s.credit.unwoken());
        if let Some(status) = error {
            self.fail(key, status, Processed::Maybe);
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

    /// `status`, or, for a connection lost before the server sent a single
    /// byte, what `silent_close` says that means.
    fn explain(&self, status: Status) -> Status {
        let lost = matches!(
            status.transport_error(),
            Some(TransportError::ConnectionLost(_))
        );
        match &self.silent_close {
            Some(TransportError::Tls { target, reason }) if lost && self.ev.bytes_read() == 0 => {
                Status::from_transport(TransportError::Tls {
                    target: target.clone(),
                    reason: format!("{reason} ({})", status.message()),
                })
            }
            _ => status,
        }
    }

    /// Drives the connection until it ends, or parks (then it goes on
    /// from [`Parkable::resume`]).
    fn run(mut self: Box<Self>) {
        let commands = self.rx.clone();
        loop {
            match drive(&mut *self, &commands) {
                Ok(Drive::Park) => {
                    let Some(parker) = parker() else {
                        self.park_idle_after = None;
                        continue;
                    };
                    if self.ev.prepare_park(|| !commands.is_empty()) {
                        match parker.park(self) {
                            Ok(()) => return,
                            // This thread keeps it (and tries again after
                            // another idle while).
                            Err(back) => self = back,
                        }
                    }
                }
                Ok(Drive::Done | Drive::Yield) => break,
                Err(e) => {
                    log::error!("client connection event loop failed: {e}");
                    break;
                }
            }
        }
        self.alive.set_down();
        let status = self.end_status.take().unwrap_or_else(|| {
            Status::from_transport(TransportError::ConnectionLost(
                "the connection closed while the call was in flight".into(),
            ))
        });
        let status = self.explain(status);
        self.alive.set_end(status.clone());
        self.fail_all(status.clone());
        // Calls started as the connection ended never reached it: they may
        // go elsewhere.
        while let Ok(cmd) = self.rx.try_recv() {
            if let ClientCmd::Start(start) = cmd {
                let _ = start.events.send(CallEvent::Refused(status.clone()));
            }
        }
    }

    fn start_call(&mut self, start: StartCall) {
        let StartCall {
            key,
            request,
            body,
            end,
            events,
            state,
            deadline,
            credit,
        } = start;
        let mut out = SendQueue::default();
        if let Some(b) = body {
            out.push(b);
        }
        self.streams.insert(
            key,
            Stream {
                waker: stream_waker(self.ev.wake_handle(), key),
                state,
                deadline,
                events,
                credit,
                wake: false,
                start: Some(request),
                response: None,
                send: None,
                recv: None,
                flow: None,
                out,
                end: end == RequestEnd::Now,
                send_done: false,
                recv_done: false,
            },
        );
        if let Some(d) = deadline {
            self.ev.timers.add(d, Timer::Deadline(key));
        }
        self.waiting.push_back(key);
        self.start_waiting();
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
                        self.alive.set_down();
                        let status = status_for_h2_error(&e);
                        for key in std::mem::take(&mut self.waiting) {
                            failed.push((key, status.clone()));
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
                let Some(request) = s.start.take() else {
                    continue;
                };
                // Never END_STREAM on the request HEADERS, even when the
                // request is already over: the spec (PROTOCOL-HTTP2.md)
                // ends a request with a DATA frame, an empty one when no
                // data remains, and some servers (grpc-go 1.33) never
                // answer otherwise. `flush` sends it.
                match sr.send_request(request, false) {
                    Ok((response, send)) => {
                        s.response = Some(response);
                        s.send = Some(send);
                        self.last_opened = Some(key);
                        started.push(key);
                    }
                    Err(e) => failed.push((key, status_for_h2_error(&e))),
                }
            }
        }
        for (key, status) in failed {
            self.fail(key, status, Processed::Never);
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

    /// Gives queued request data to h2 as flow control allows, then the
    /// end of the request.
    fn flush(&mut self, key: StreamKey) {
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
            Err(e) => failed = Some(status_for_h2_error(&e)),
        }
        if s.send_done {
            s.send = None;
        } else if failed.is_none() && s.out.is_empty() {
            // Watch for a reset while idle.
            if let Poll::Ready(Ok(reason)) = send.poll_reset(&mut cx) {
                failed = Some(status_for_h2_error(&h2::Error::from(reason)));
            }
        }
        if let Some(status) = failed {
            self.fail(key, status, Processed::Maybe);
        }
    }

    /// Takes a stream out of the map, with its deadline timer and its place
    /// in the queue of streams waiting to start.
    fn take_stream(&mut self, key: StreamKey) -> Option<Stream> {
        let s = self.streams.remove(&key)?;
        self.unwoken.changed(s.credit.unwoken(), 0);
        if let Some(at) = s.deadline {
            self.ev.timers.remove(at, Timer::Deadline(key));
        }
        if s.start.is_some() {
            self.waiting.retain(|k| *k != key);
        }
        Some(s)
    }

    /// Ends a call with `status`.
    fn fail(&mut self, key: StreamKey, status: Status, processed: Processed) {
        let status = self.explain(status);
        if let Some(s) = self.take_stream(key) {
            s.state.cancel(status.clone());
            let event = match processed {
                Processed::Never => CallEvent::Refused(status),
                Processed::Maybe => CallEvent::Error(status),
            };
            let _ = s.events.send(event);
        }
    }

    fn fail_all(&mut self, status: Status) {
        let status = self.explain(status);
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
