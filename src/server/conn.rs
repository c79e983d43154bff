//! One server connection: the thread that owns its socket and its h2 state.
//!
//! The thread is the only one that touches h2. It tells HTTP/2 from other
//! protocols on the first bytes, accepts streams, hands each routed call to
//! its handler (`dispatch.rs` decides where), moves request bytes to the
//! handler's mailbox, and applies the commands handlers send back (headers,
//! messages, trailers, flow-control credit). It sleeps in one wait (mio:
//! `epoll_wait` on Linux) on the socket and a wake-up (`rt/event_loop.rs`),
//! and the sleep's timeout is its timer for call deadlines, the handshake,
//! keepalive, idle and age. A connection with no call for
//! `park_idle_after` (by default at once, and always at once when the
//! server is crowded) moves, whole, into the server's parker and its thread
//! is free; the parker's pool drives it again when it wakes
//! (`rt/parking.rs`). With parking at once, a connection starts in the
//! parker, and the "connection thread" is whichever pool thread drives it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use h2::server::{Connection, Handshake, SendResponse};
use h2::{FlowControl, Reason, RecvStream, SendStream};
use http::{HeaderMap, Request};

use crate::code::Code;
use crate::metadata::Metadata;
use crate::rt::call_state::CallState;
use crate::rt::event_loop::{conn_waker, drive, stream_waker, Drive, Driver, EventLoop, Socket};
use crate::rt::keepalive::{Keepalive, Liveness};
use crate::rt::mailbox::{mailbox, Producer};
use crate::rt::parking::{Parkable, Wakeable};
use crate::rt::reader::{Credit, Unwoken};
use crate::rt::send_queue::SendQueue;
use crate::rt::timers::Timer;
use crate::rt::StreamKey;
use crate::server::call::ServerCall;
use crate::server::config::UnaryHandlers;
use crate::server::dispatch::{route, Route, Run};
use crate::server::handoff::Slot;
use crate::server::intercepted;
use crate::server::interceptor::Hooks;
use crate::server::limits::{PeerKey, Permit, Refused};
use crate::server::link::{ConnCmd, ConnHandle, Inbound, StreamCmd};
use crate::server::peer::{Peer, PeerInfo};
use crate::server::pool::PoolError;
use crate::server::service::Service;
use crate::server::state::{OpenCall, ServerShared};
use crate::status::Status;
use crate::transport::RawSocket;
use crate::wire::goaway;
use crate::wire::headers::{self, Rejection};
use crate::wire::preface::{sniff, Sniffed, MAX_SNIFF, PREFACE};
use crate::wire::reset::status_for_client_reset;

struct Stream {
    waker: Waker,
    state: Arc<CallState>,
    /// The call's deadline on this side and the timeout it came from
    /// (`grpc-timeout`).
    deadline: Option<(Instant, Duration)>,
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    recv: Option<RecvStream>,
    flow: FlowControl,
    inbox: Option<Producer<Inbound>>,
    /// Who returns the request's flow-control credit.
    credit: Credit,
    out: SendQueue,
    trailers: Option<HeaderMap>,
    finished: bool,
    /// A call to run on this thread once its request has arrived.
    inline: Option<Box<(Arc<dyn Service>, ServerCall)>>,
    /// When that call starts on the pool if its request has not ended
    /// (client-streaming calls; its `StartBy` timer).
    start_by: Option<Instant>,
    /// Counts the call in the server's statistics while the stream lives.
    _open: OpenCall,
    /// Request bytes an inline call has buffered while its request is still
    /// arriving. See [`Conn::hand_off_waiting`].
    inline_buffered: usize,
}

enum Phase {
    /// Reading the first bytes to tell HTTP/2 from anything else.
    Sniffing(Socket, Vec<u8>),
    Handshaking(Handshake<Socket, Bytes>),
    Open(Connection<Socket, Bytes>),
    Done,
}

struct Conn {
    ev: EventLoop,
    phase: Phase,
    conn_waker: Waker,
    streams: HashMap<StreamKey, Stream>,
    next_key: u64,
    /// Request bytes delivered to handlers not woken for them.
    unwoken: Unwoken,
    rx: Receiver<ConnCmd>,
    handle: Arc<ConnHandle>,
    peer: Arc<PeerInfo>,
    server: Arc<ServerShared>,
    shutting_down: bool,
    keepalive: Keepalive,
    /// When the last call ended (for the idle timeout).
    idle_since: Instant,
    /// Unary calls whose request has arrived, to run on this thread off
    /// the loop.
    ready_inline: VecDeque<Box<(Arc<dyn Service>, ServerCall)>>,
    /// Where the connection waits while its thread runs a handler
    /// (adaptive inline handlers).
    slot: Option<Arc<Slot<Box<Conn>, Permit>>>,
    /// The peer, for its share of handler threads.
    peer_key: PeerKey,
    /// Told when the connection is over (whichever thread drives it).
    _on_end: OnEnd,
}

/// Runs its closure when dropped: what a connection's end must do, even
/// if it never got to run.
pub(crate) struct OnEnd(pub(crate) Option<Box<dyn FnOnce() + Send>>);

impl Drop for OnEnd {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Sets up a connection: returns the handle other threads use and the
/// function to run on the connection's own thread.
pub(crate) fn prepare(
    socket: RawSocket,
    server: Arc<ServerShared>,
    peer_key: PeerKey,
    on_end: OnEnd,
) -> std::io::Result<(Arc<ConnHandle>, NewConn)> {
    let peer = match (socket.tcp_peer(), &server.unix_name) {
        (Some(addr), _) => Peer::Tcp(addr),
        (None, Some(name)) => Peer::Unix(name.clone()),
        (None, None) => Peer::Unix(String::new()),
    };
    let peer = Arc::new(PeerInfo::new(peer));
    let (ev, socket) = EventLoop::new(socket)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle = Arc::new(ConnHandle::new(tx, ev.wake_handle().clone()));
    let mut conn = Conn {
        conn_waker: conn_waker(ev.wake_handle()),
        ev,
        phase: Phase::Sniffing(socket, Vec::new()),
        streams: HashMap::new(),
        next_key: 0,
        unwoken: Unwoken::new(server.config.conn.http2.connection_window),
        rx,
        handle: handle.clone(),
        peer,
        keepalive: Keepalive::new(server.config.conn.keepalive),
        server,
        shutting_down: false,
        idle_since: Instant::now(),
        ready_inline: VecDeque::new(),
        slot: None,
        peer_key,
        _on_end: on_end,
    };
    if conn.server.config.unary_handlers == UnaryHandlers::Adaptive {
        let budget = conn.server.handlers.clone();
        let slot = Arc::new(Slot::new(
            move || budget.acquire(peer_key).ok(),
            |conn: Box<Conn>| run(conn),
        ));
        conn.server.handoff.register(&slot);
        conn.slot = Some(slot);
    }
    let handshake_deadline = Instant::now() + conn.server.config.handshake_timeout;
    conn.ev.timers.add(handshake_deadline, Timer::Handshake);
    Ok((handle, NewConn(Box::new(conn))))
}

/// A connection set up and not yet driven.
pub(crate) struct NewConn(Box<Conn>);

impl NewConn {
    /// Starts the connection in the parker, where the parker's pool drives
    /// it as soon as its client sends (a storm of new connections costs no
    /// thread each), when idle connections park at once or the server is
    /// crowded; else on a thread of its own. Errors if no thread could be
    /// started.
    pub(crate) fn start(self, name: &str) -> std::io::Result<()> {
        let server = self.0.server.clone();
        // Parked, it is woken like any parked connection (its sleep
        // announced first); a connection with commands already (the server
        // shuts down) starts on a thread.
        let conn = if self.0.parks_at_once() && self.0.ev.prepare_park(|| !self.0.rx.is_empty()) {
            match server.parker.park(self.0) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            }
        } else {
            self.0
        };
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(server.config.conn_thread_stack())
            .spawn(move || run(conn))
            .map(drop)
    }
}

/// A client resets its stream (CANCEL) when its deadline passes, and its
/// clock started before ours (we start at the request's arrival), so its
/// reset usually beats our own timer. A reset that arrives within the last
/// fifth of the call's time (at most 1 s, at least 50 ms before our
/// deadline) is reported as the deadline it almost certainly is.
fn at_deadline(status: Status, deadline: Option<(Instant, Duration)>, now: Instant) -> Status {
    let Some((deadline, timeout)) = deadline else {
        return status;
    };
    if status.code() != Code::Cancelled {
        return status;
    }
    let margin = (timeout / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
    if deadline.saturating_duration_since(now) <= margin {
        return Status::deadline_exceeded("the call's deadline passed (the client gave up at it)");
    }
    status
}

/// Answers a request with a status alone (Trailers-Only), before any
/// handler ran.
fn reject(respond: &mut SendResponse<Bytes>, status: &Status) {
    if let Err(e) = respond.send_response(headers::trailers_only(status, &Metadata::new()), true) {
        log::debug!("sending a trailers-only response failed: {e}");
    }
}

impl Driver for Conn {
    type Cmd = ConnCmd;

    fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.ev
    }

    fn apply(&mut self, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Stream(key, cmd) => self.stream_cmd(key, cmd),
            ConnCmd::Shutdown => {
                self.shutting_down = true;
                match &mut self.phase {
                    Phase::Open(c) => {
                        c.graceful_shutdown();
                        self.conn_waker.wake_by_ref();
                    }
                    _ => self.phase = Phase::Done,
                }
            }
            ConnCmd::Abort => self.abort(),
        }
    }

    /// Moves request data to the handler and checks for a reset; wakes
    /// every handler with bytes it was not woken for once those hold a
    /// quarter of the connection's window (see [`Credit`]).
    fn poll_stream(&mut self, key: StreamKey) {
        self.poll_stream_data(key);
        if self.unwoken.wake_all_due() {
            for s in self.streams.values_mut() {
                if let (true, Some(tx)) = (s.credit.wake_due(), &s.inbox) {
                    tx.notify();
                }
            }
        }
    }

    fn poll_conn(&mut self) {
        let conn_waker = self.conn_waker.clone();
        let mut cx = Context::from_waker(&conn_waker);
        if let Phase::Sniffing(..) = self.phase {
            self.sniff();
        }
        if let Phase::Handshaking(h) = &mut self.phase {
            match std::pin::Pin::new(h).poll(&mut cx) {
                Poll::Ready(Ok(mut c)) => {
                    if self.shutting_down {
                        c.graceful_shutdown();
                    }
                    let pinger = c.ping_pong();
                    self.phase = Phase::Open(c);
                    self.opened(pinger);
                }
                Poll::Ready(Err(e)) => {
                    log::debug!("HTTP/2 handshake with {} failed: {e}", self.peer.addr);
                    self.phase = Phase::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
        self.keepalive
            .poll_pong(&mut cx, Instant::now(), &mut self.ev.timers);
        loop {
            let Phase::Open(c) = &mut self.phase else {
                return;
            };
            match c.poll_accept(&mut cx) {
                Poll::Ready(Some(Ok((req, respond)))) => self.accept(req, respond),
                Poll::Ready(Some(Err(e))) => {
                    if e.is_io() || e.is_go_away() || e.reason().is_some() && !e.is_remote() {
                        log::debug!("connection from {} ended: {e}", self.peer.addr);
                        self.phase = Phase::Done;
                        return;
                    }
                    log::debug!("stream error on connection from {}: {e}", self.peer.addr);
                }
                Poll::Ready(None) => {
                    self.phase = Phase::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        let now = Instant::now();
        match timer {
            Timer::Deadline(key) => self.deadline_exceeded(key),
            Timer::StartBy(key) => self.hand_off(vec![key]),
            Timer::Handshake => {
                // The client's preface is the 24-byte string and then a
                // SETTINGS frame (RFC 9113, 3.4): h2 finishes its handshake
                // on the string alone, so count the frame's 9-byte header.
                let incomplete = self.ev.bytes_read() < PREFACE.len() + 9;
                if matches!(self.phase, Phase::Sniffing(..) | Phase::Handshaking(_))
                    || matches!(self.phase, Phase::Open(_)) && incomplete
                {
                    log::debug!(
                        "closing connection from {}: no HTTP/2 preface in time",
                        self.peer.addr
                    );
                    self.phase = Phase::Done;
                }
            }
            Timer::KeepalivePing | Timer::KeepalivePong => {
                let has_calls = !self.streams.is_empty();
                let timers = &mut self.ev.timers;
                let liveness =
                    self.keepalive
                        .on_timer(timer, now, has_calls, timers, &self.conn_waker);
                if liveness == Liveness::PeerGone {
                    log::debug!(
                        "closing connection from {}: keepalive ping not answered within {:?}",
                        self.peer.addr,
                        self.keepalive.timeout()
                    );
                    self.close_all(Status::unavailable(
                        "the connection was closed: the client stopped answering keepalive pings",
                    ));
                    self.phase = Phase::Done;
                }
            }
            Timer::Idle => {
                let Some(idle) = self.server.config.idle_timeout else {
                    return;
                };
                if !self.streams.is_empty() {
                    // Checked again when the last call ends.
                    return;
                }
                let due = self.idle_since + idle;
                if due <= now {
                    log::debug!("closing idle connection from {}", self.peer.addr);
                    self.go_away();
                } else {
                    self.ev.timers.add(due, Timer::Idle);
                }
            }
            Timer::Age => {
                log::debug!("connection from {} reached its maximum age", self.peer.addr);
                self.go_away();
                let grace = self.server.config.max_connection_age_grace;
                self.ev.timers.add(now + grace, Timer::AgeGrace);
            }
            Timer::AgeGrace => {
                self.close_all(Status::unavailable(
                    "the connection reached its maximum age and its grace period ended",
                ));
                self.abort();
            }
            Timer::Close => {}
        }
    }

    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn wants_yield(&self) -> bool {
        !self.ready_inline.is_empty()
    }

    fn park_after(&self) -> Option<Duration> {
        let after = self.server.config.conn.park_idle_after?;
        let open = self.server.connections.load(Ordering::Relaxed);
        Some(if open > CROWDED {
            Duration::ZERO
        } else {
            after
        })
    }

    fn parkable(&self) -> bool {
        !matches!(self.phase, Phase::Done)
            && (self.streams.is_empty() || self.parks_at_once())
            && self.ready_inline.is_empty()
            && !self.shutting_down
    }
}

impl Parkable for Conn {
    fn wakeable(&mut self) -> &mut dyn Wakeable {
        &mut self.ev
    }

    fn resume(self: Box<Self>) {
        run(self)
    }
}

/// Open connections beyond which a connection gives its thread up as soon
/// as it has no call, whatever `park_idle_after` says: with this many
/// connections each waking for a call now and then, a thread per
/// connection costs more in context switches and cold caches than the
/// parker's shared threads (measured on two cores: at 1,000 connections
/// with a call each, h2load's calls/s 1.5 times as many parked).
const CROWDED: usize = 512;

/// How long a connection thread runs ready inline calls one after the
/// other before it sends the replies it has (see [`run`]).
const REPLY_BATCH: Duration = Duration::from_micros(500);

/// How many ready inline calls run before their replies leave, while no
/// other connection waits for a thread: with one busy connection, smaller
/// batches let the client and the server work at the same time (measured,
/// server on one core and h2load on the other, one connection with 16
/// calls at a time: 69-85k calls/s in batches of 4, 48-55k in whole
/// batches; with more connections, whole batches did as well or better,
/// up to 10% at 16 connections).
const PIPELINE_CALLS: usize = 4;

/// Drives a connection on this thread until it is over, running its
/// inline unary handlers between turns of its loop. Under adaptive
/// handlers, the connection waits in its slot while a handler runs; if it
/// is taken over (the handler blocked), another thread drives it from
/// then on, and this one returns once its handler does.
fn run(mut conn: Box<Conn>) {
    let commands = conn.rx.clone();
    let (server, slot) = (conn.server.clone(), conn.slot.clone());
    loop {
        match drive(&mut *conn, &commands) {
            Ok(Drive::Yield) => {}
            Ok(Drive::Park) => {
                if conn.ev.prepare_park(|| !commands.is_empty()) {
                    match server.parker.park(conn) {
                        // The parker's thread holds it; this one can go.
                        Ok(()) => return,
                        // It could not: this thread keeps it (and tries
                        // again after another idle while).
                        Err(back) => conn = back,
                    }
                }
            }
            Ok(Drive::Done) => break,
            Err(e) => {
                log::error!("connection event loop failed: {e}");
                break;
            }
        }
        // The calls that are ready run one after the other before the loop
        // turns again, so that their replies leave together, in one write,
        // as the requests came. No call starts once REPLY_BATCH has passed,
        // so a reply waits for the handlers after it at most that long and
        // one handler more (under adaptive handlers, at most the inline
        // time limit: a handler that blocks gets the connection handed on).
        // While no other connection waits for a thread, at most
        // PIPELINE_CALLS run before their replies leave, so that the client
        // works on them while the next calls run.
        let most = if server.parker.backlog() {
            usize::MAX
        } else {
            PIPELINE_CALLS
        };
        let batch = Instant::now();
        let mut ran = 0;
        while batch.elapsed() < REPLY_BATCH && ran < most {
            ran += 1;
            let Some(call) = conn.ready_inline.pop_front() else {
                break;
            };
            let (service, call) = *call;
            let interceptors = &server.interceptors;
            match &slot {
                None => intercepted::run(&*service, call, interceptors),
                Some(slot) => {
                    let ticket = server.handoff.park(slot, conn);
                    intercepted::run(&*service, call, interceptors);
                    match server.handoff.unpark(slot, ticket) {
                        Some(back) => conn = back,
                        // Another thread drives the connection now (and runs
                        // the calls still waiting).
                        None => return,
                    }
                }
            }
        }
    }
    conn.close_all(Status::unavailable("the connection was closed"));
}

impl Conn {
    /// Moves stream `key`'s request data to its handler and checks for a
    /// reset.
    fn poll_stream_data(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        let mut reset = None;
        let mut run_inline = None;
        let mut overflowed = false;
        let unwoken_before = s.credit.unwoken();
        if let Some(recv) = &mut s.recv {
            loop {
                match recv.poll_data(&mut cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let n = chunk.len();
                        let Some(tx) = s.inbox.as_ref() else {
                            // Nobody will read it: give the credit back now.
                            let _ = s.flow.release_capacity(n);
                            continue;
                        };
                        let handed = s.credit.hand_over(chunk, |chunk, wake| {
                            let data = Inbound::Data(chunk);
                            if wake { tx.send(data) } else { tx.push(data) }.is_ok()
                        });
                        if handed.release {
                            let _ = s.flow.release_capacity(n);
                        }
                        if s.inline.is_some() {
                            s.inline_buffered += n;
                            overflowed |= !handed.release && !s.credit.is_by_reader();
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        reset = Some(status_for_client_reset(e.reason()));
                        break;
                    }
                    Poll::Ready(None) => match recv.poll_trailers(&mut cx) {
                        Poll::Ready(Ok(_)) => {
                            if let Some(tx) = s.inbox.take() {
                                let _ = tx.send(Inbound::End);
                            }
                            s.credit.woken();
                            s.recv = None;
                            run_inline = s.inline.take();
                            if let Some(at) = s.start_by.take() {
                                self.ev.timers.remove(at, Timer::StartBy(key));
                            }
                            break;
                        }
                        Poll::Ready(Err(e)) => {
                            reset = Some(status_for_client_reset(e.reason()));
                            break;
                        }
                        Poll::Pending => break,
                    },
                    Poll::Pending => break,
                }
            }
        }
        self.unwoken.changed(unwoken_before, s.credit.unwoken());
        if reset.is_none() {
            if let Some(respond) = &mut s.respond {
                if let Poll::Ready(r) = respond.poll_reset(&mut cx) {
                    reset = Some(status_for_client_reset(r.ok()));
                }
            } else if let Some(send) = &mut s.send {
                if let Poll::Ready(r) = send.poll_reset(&mut cx) {
                    reset = Some(status_for_client_reset(r.ok()));
                }
            }
        }
        let waiting_inline = s.inline.is_some() && s.inline_buffered > 0;
        if let Some(status) = reset {
            let status = at_deadline(status, s.deadline, Instant::now());
            self.cancel(key, status);
            return;
        }
        if waiting_inline {
            self.hand_off_waiting(key, overflowed);
        }
        if let Some(call) = run_inline {
            // The whole request is here: the handler runs off the loop,
            // once this turn is over (see `run`).
            self.ready_inline.push_back(call);
        }
        self.flush(key);
    }

    /// Closes the connection now, with a GOAWAY if the socket takes it at
    /// once; in-flight calls end.
    fn abort(&mut self) {
        if let Phase::Open(c) = &mut self.phase {
            c.abrupt_shutdown(Reason::NO_ERROR);
            let mut cx = Context::from_waker(&self.conn_waker);
            let _ = c.poll_closed(&mut cx);
        }
        self.phase = Phase::Done;
    }

    fn stream_cmd(&mut self, key: StreamKey, cmd: StreamCmd) {
        let Some(s) = self.streams.get_mut(&key) else {
            // The stream is gone (reset, deadline): drop the command. Credit
            // of a closed stream goes back to the connection by itself.
            return;
        };
        match cmd {
            StreamCmd::Headers(metadata, encoding) => {
                if let Some(mut respond) = s.respond.take() {
                    match respond.send_response(headers::response(&metadata, encoding), false) {
                        Ok(send) => s.send = Some(send),
                        Err(e) => {
                            log::debug!("sending response headers failed: {e}");
                            self.cancel(key, status_for_client_reset(e.reason()));
                            return;
                        }
                    }
                }
            }
            StreamCmd::Data(bytes) => s.out.push(bytes),
            StreamCmd::Finish(status) => {
                if let Some(mut respond) = s.respond.take() {
                    reject(&mut respond, &status);
                    s.finished = true;
                } else {
                    s.trailers = Some(headers::trailers(&status));
                }
            }
            StreamCmd::Release(n) => {
                let _ = s.flow.release_capacity(n);
                return;
            }
        }
        self.flush(key);
    }

    /// The handshake is done: start the connection's timers.
    fn opened(&mut self, pinger: Option<h2::PingPong>) {
        let cfg = &self.server.config;
        let now = Instant::now();
        self.keepalive.start(pinger, now, &mut self.ev.timers);
        if let Some(idle) = cfg.idle_timeout {
            self.idle_since = now;
            self.ev.timers.add(now + idle, Timer::Idle);
        }
        if let Some(age) = cfg.max_connection_age {
            self.ev.timers.add(now + age, Timer::Age);
        }
    }

    /// Starts a graceful shutdown of this connection (GOAWAY, in-flight
    /// calls finish).
    fn go_away(&mut self) {
        self.shutting_down = true;
        if let Phase::Open(c) = &mut self.phase {
            c.graceful_shutdown();
            self.conn_waker.wake_by_ref();
        }
    }

    /// A stream left the map: when it was the last one, the idle clock
    /// starts.
    fn stream_removed(&mut self) {
        if self.streams.is_empty() {
            self.idle_since = Instant::now();
            if let Some(idle) = self.server.config.idle_timeout {
                self.ev.timers.add(self.idle_since + idle, Timer::Idle);
            }
        }
    }

    /// Reads the connection's first bytes: HTTP/2 goes on to the handshake
    /// (h2 re-reads those bytes), a TLS ClientHello starts TLS (on a TLS
    /// server; then the decrypted bytes are sniffed again), HTTP/1.x gets
    /// an error reply, anything else is closed. A plaintext client on a TLS
    /// port, and a TLS client on a plaintext port, get a GOAWAY that says
    /// which side speaks TLS.
    fn sniff(&mut self) {
        loop {
            let Phase::Sniffing(socket, buf) = &mut self.phase else {
                return;
            };
            let mut chunk = [0u8; 1024];
            let verdict = loop {
                match socket.read_raw(&mut chunk) {
                    Ok(0) => break Sniffed::Garbage,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        match sniff(buf) {
                            Sniffed::NeedMore if buf.len() < MAX_SNIFF => continue,
                            Sniffed::NeedMore => break Sniffed::Garbage,
                            verdict => break verdict,
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        log::debug!(
                            "reading the first bytes from {} failed: {e}",
                            self.peer.addr
                        );
                        break Sniffed::Garbage;
                    }
                }
            };
            let Phase::Sniffing(mut socket, buf) = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                return;
            };
            let in_tls = socket.transport().tls_handshaking() || self.tls_established(&mut socket);
            match verdict {
                Sniffed::Http2 if self.wants_tls() && !in_tls => {
                    log::debug!(
                        "refusing a plaintext client from {} on a TLS port",
                        self.peer.addr
                    );
                    socket.transport().reply_and_close(&goaway::refusal(
                        "this port serves gRPC over TLS: connect with https://",
                    ));
                }
                Sniffed::Http2 => {
                    socket.set_replay(Bytes::from(buf));
                    let mut h2 = self.server.config.h2();
                    if matches!(self.peer.addr, Peer::Unix(_)) {
                        // Clients put the socket's path in :authority,
                        // which h2 refuses: drop it, with HPACK's dynamic
                        // table off so that dropping is always safe.
                        socket.filter_authority();
                        h2.header_table_size(0);
                    }
                    self.phase = Phase::Handshaking(h2.handshake(socket));
                }
                Sniffed::Tls if self.wants_tls() && !in_tls => {
                    if self.start_tls(&mut socket, &buf) {
                        // Sniff the decrypted bytes.
                        self.phase = Phase::Sniffing(socket, Vec::new());
                        continue;
                    }
                }
                Sniffed::Tls => {
                    log::debug!(
                        "refusing a TLS client from {} on a plaintext port",
                        self.peer.addr
                    );
                    socket.transport().reply_and_close(&goaway::refusal(
                        "this port serves gRPC over plaintext HTTP/2 (h2c), not TLS: connect with http://",
                    ));
                }
                Sniffed::Http1(reply) => {
                    log::debug!(
                        "answering an HTTP/1.x request from {} with an error",
                        self.peer.addr
                    );
                    if in_tls {
                        let _ = socket.transport().write(&reply);
                        let _ = socket.transport().shutdown_write();
                    } else {
                        socket.transport().reply_and_close(&reply);
                    }
                }
                Sniffed::NeedMore | Sniffed::Garbage => {
                    log::debug!(
                        "closing a connection from {} that does not speak HTTP/2",
                        self.peer.addr
                    );
                }
            }
            return;
        }
    }

    /// Whether this server speaks TLS.
    fn wants_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.server.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Starts TLS on the socket, `received` being what was read of the
    /// ClientHello; false (and the connection closed) if it cannot start.
    #[cfg(feature = "tls")]
    fn start_tls(&mut self, socket: &mut Socket, received: &[u8]) -> bool {
        let Some(config) = &self.server.tls else {
            return false;
        };
        let started = crate::tls::server_session(config)
            .and_then(|session| socket.transport().start_tls(session, received));
        match started {
            Ok(()) => true,
            Err(e) => {
                log::debug!("TLS with {} failed at once: {e}", self.peer.addr);
                false
            }
        }
    }

    #[cfg(not(feature = "tls"))]
    fn start_tls(&mut self, _socket: &mut Socket, _received: &[u8]) -> bool {
        false
    }

    /// Whether the socket runs TLS with its handshake done; records the
    /// client's certificate then.
    fn tls_established(&mut self, socket: &mut Socket) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = socket.transport().tls() {
            if self.peer.certificates.is_none() {
                let certificates = crate::tls::PeerCertificates::of(tls);
                if certificates.is_some() {
                    Arc::make_mut(&mut self.peer).certificates = certificates;
                }
            }
            return true;
        }
        let _ = socket;
        false
    }

    /// A new request: routes it, and hands it to its handler or refuses it.
    fn accept(&mut self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let (parts, mut body) = req.into_parts();
        let cfg = &self.server.config;
        let Route {
            head,
            service,
            response_encoding,
            run,
            single_request,
        } = match route(&parts, &self.server.registry, cfg.unary_handlers) {
            Ok(route) => route,
            Err(Rejection::Http(status, why)) => {
                log::debug!("refusing a non-gRPC request: {why}");
                let _ = respond.send_response(headers::http_error(status), true);
                return;
            }
            Err(Rejection::Grpc(status)) => return reject(&mut respond, &status),
        };
        let key = StreamKey(self.next_key);
        self.next_key += 1;
        let state = Arc::new(CallState::new());
        let (in_tx, in_rx) = mailbox();
        let deadline = head.timeout.map(|t| (Instant::now() + t, t));
        let call = ServerCall {
            key,
            conn: self.handle.clone(),
            state: state.clone(),
            inbox: in_rx,
            path: head.path,
            metadata: head.metadata,
            peer: self.peer.clone(),
            deadline: deadline.map(|(at, _)| at),
            request_encoding: head.encoding,
            response_encoding,
            accept_encoding: head.accept_encoding,
            policy: self.server.errors.clone(),
            max_receive: cfg.conn.max_receive_message_size,
            max_send: cfg.conn.max_send_message_size,
            // A request of one message is credited as it arrives, whether
            // its handler waits for it inline or on a worker.
            credited_on_arrival: single_request,
            hooks: Hooks::new(Instant::now()),
        };
        let credit = if single_request {
            Credit::on_arrival(call.max_receive)
        } else {
            Credit::by_reader(cfg.conn.http2.stream_window)
        };
        let mut inline = None;
        match run {
            // At its maximum of handlers, an adaptive server refuses new
            // calls, as on workers: an inline handler that blocked could
            // not move on. (Handlers promised never to block always run.)
            Run::Inline if self.slot.is_some() && self.server.handlers.is_full() => {
                let max = self.server.handlers.max();
                return reject(
                    &mut respond,
                    &Status::resource_exhausted(format!(
                        "the server is running its maximum of {max} handlers; try again later"
                    )),
                );
            }
            Run::Inline => inline = Some(Box::new((service, call))),
            Run::Pool => {
                if let Err(status) = self.run_on_pool(service, call) {
                    return reject(&mut respond, &status);
                }
            }
        }
        if let Some((at, _)) = deadline {
            self.ev.timers.add(at, Timer::Deadline(key));
        }
        // A client-streaming call waits inline for the end of its requests
        // only up to the inline time limit: a handler may want to read them
        // as they come (or answer before they end).
        let start_by = match &inline {
            Some(_) if !single_request => Instant::now().checked_add(cfg.inline_time_limit),
            _ => None,
        };
        if let Some(at) = start_by {
            self.ev.timers.add(at, Timer::StartBy(key));
        }
        let flow = body.flow_control().clone();
        self.streams.insert(
            key,
            Stream {
                waker: stream_waker(self.ev.wake_handle(), key),
                state,
                deadline,
                respond: Some(respond),
                send: None,
                recv: Some(body),
                flow,
                inbox: Some(in_tx),
                credit,
                out: SendQueue::default(),
                trailers: None,
                finished: false,
                inline,
                start_by,
                _open: OpenCall::new(&self.server.calls),
                inline_buffered: 0,
            },
        );
        self.poll_stream(key);
    }

    /// Gives queued response data to h2 as far as flow control allows, then
    /// the trailers; removes the stream once it is complete.
    fn flush(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some(send) = &mut s.send {
            let mut cx = Context::from_waker(&s.waker);
            match s.out.flush(send, &mut cx, false) {
                Ok(flushed) => {
                    if flushed.sent > 0 {
                        s.state.sent(flushed.sent);
                    }
                }
                Err(e) => {
                    self.cancel(key, status_for_client_reset(e.reason()));
                    return;
                }
            }
            if s.out.is_empty() {
                if let Some(trailers) = s.trailers.take() {
                    if let Err(e) = send.send_trailers(trailers) {
                        log::debug!("sending trailers failed: {e}");
                    }
                    s.finished = true;
                }
            }
        }
        if s.finished {
            // Dropping the handles closes the stream; if the client is still
            // sending, h2 resets it with NO_ERROR as the spec asks.
            self.take_stream(key);
            self.stream_removed();
        }
    }

    /// Hands `call` to a worker; the status to refuse it with when the pool
    /// takes no more.
    fn run_on_pool(&self, service: Arc<dyn Service>, call: ServerCall) -> Result<(), Status> {
        let permit =
            self.server
                .handlers
                .acquire(self.peer_key)
                .map_err(|refused| match refused {
                    Refused::Server(max) => Status::resource_exhausted(format!(
                        "the server is running its maximum of {max} handlers; try again later"
                    )),
                    Refused::Peer(max) => Status::resource_exhausted(format!(
                        "this client is running its maximum of {max} handlers at once (the \
                     server's max_handlers_per_peer); try again when some have finished"
                    )),
                })?;
        let interceptors = self.server.interceptors.clone();
        let job = Box::new(move || {
            let _permit = permit;
            intercepted::run(&*service, call, &interceptors)
        });
        self.server.pool.execute(job).map_err(|e| match e {
            PoolError::Full => Status::resource_exhausted(format!(
                "the server is running its maximum of {} handlers; try again later",
                self.server.config.max_concurrent_handlers
            )),
            PoolError::Closed => Status::unavailable("the server is shutting down"),
        })
    }

    /// Inline calls whose requests are still arriving buffer their bytes
    /// on this connection until the request ends and the handler runs:
    /// credited as they come for a one-message request (see
    /// [`Credit::OnArrival`]), held until the handler reads them for a
    /// client-streaming one.
    /// That memory is bounded per connection: once all inline calls
    /// together buffer half the connection window, they all move to
    /// workers, each under a handler permit. A call whose request reaches
    /// half the stream window moves too: a handler given a large request
    /// takes long enough, and writes enough, to be handed off anyway, and
    /// on a worker it costs its connection nothing. So does a call whose
    /// request outgrew one largest message (`overflowed`): its credit is
    /// held from there, so its client may wait for credit and never end
    /// the request, and on a worker its handler fails it as the bytes come.
    fn hand_off_waiting(&mut self, key: StreamKey, overflowed: bool) {
        let windows = &self.server.config.conn.http2;
        let (stream_limit, conn_limit) = (
            windows.stream_window as usize / 2,
            windows.connection_window as usize / 2,
        );
        let buffered = |s: &Stream| {
            if s.inline.is_some() {
                s.inline_buffered
            } else {
                0
            }
        };
        let keys: Vec<StreamKey> = if self.streams.values().map(buffered).sum::<usize>()
            >= conn_limit
        {
            self.streams
                .iter()
                .filter(|(_, s)| buffered(s) > 0)
                .map(|(k, _)| *k)
                .collect()
        } else if overflowed || self.streams.get(&key).map(buffered).unwrap_or(0) >= stream_limit {
            vec![key]
        } else {
            return;
        };
        self.hand_off(keys);
    }

    /// Moves the inline calls of streams `keys` that have not started to
    /// workers.
    fn hand_off(&mut self, keys: Vec<StreamKey>) {
        for key in keys {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            let Some(call) = s.inline.take() else {
                continue;
            };
            s.inline_buffered = 0;
            if let Some(at) = s.start_by.take() {
                self.ev.timers.remove(at, Timer::StartBy(key));
            }
            let (service, call) = *call;
            if let Err(status) = self.run_on_pool(service, call) {
                if let Some(mut s) = self.take_stream(key) {
                    tell_handler(&s, status.clone());
                    if let Some(respond) = &mut s.respond {
                        reject(respond, &status);
                    }
                    self.stream_removed();
                }
            }
        }
    }

    /// Takes a stream out of the map, with its deadline timer.
    fn take_stream(&mut self, key: StreamKey) -> Option<Stream> {
        let s = self.streams.remove(&key)?;
        self.unwoken.changed(s.credit.unwoken(), 0);
        if let Some((at, _)) = s.deadline {
            self.ev.timers.remove(at, Timer::Deadline(key));
        }
        if let Some(at) = s.start_by {
            self.ev.timers.remove(at, Timer::StartBy(key));
        }
        Some(s)
    }

    /// Ends a call early: tells the handler and drops the stream (h2 resets
    /// it if it is still open).
    fn cancel(&mut self, key: StreamKey, status: Status) {
        if let Some(s) = self.take_stream(key) {
            tell_handler(&s, status);
            self.stream_removed();
        }
    }

    fn deadline_exceeded(&mut self, key: StreamKey) {
        let Some(mut s) = self.take_stream(key) else {
            return;
        };
        let status = Status::deadline_exceeded("the call's deadline passed on the server");
        tell_handler(&s, status.clone());
        if let Some(mut respond) = s.respond.take() {
            reject(&mut respond, &status);
        } else if let Some(send) = &mut s.send {
            let _ = send.send_trailers(headers::trailers(&status));
        }
        self.stream_removed();
    }

    fn close_all(&mut self, status: Status) {
        for (_, s) in self.streams.drain() {
            tell_handler(&s, status.clone());
        }
    }
}

/// Tells a call's handler that the call is over: its sends fail and its
/// request iterator ends with `status`.
fn tell_handler(s: &Stream, status: Status) {
    s.state.cancel(status.clone());
    if let Some(tx) = &s.inbox {
        let _ = tx.send(Inbound::Error(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_near_the_deadline_is_reported_as_the_deadline() {
        let now = Instant::now();
        let timeout = Duration::from_secs(10);
        let cancelled = || Status::cancelled("the client cancelled the call");
        // 1 s before a 10 s deadline: within the margin (1 s, the cap).
        let near = Some((now + Duration::from_secs(1), timeout));
        assert_eq!(
            at_deadline(cancelled(), near, now).code(),
            Code::DeadlineExceeded
        );
        // 5 s before: a real cancellation.
        let far = Some((now + Duration::from_secs(5), timeout));
        assert_eq!(at_deadline(cancelled(), far, now).code(), Code::Cancelled);
        // No deadline, or not a cancellation: unchanged.
        assert_eq!(at_deadline(cancelled(), None, now).code(), Code::Cancelled);
        let other = Status::internal("x");
        assert_eq!(at_deadline(other, near, now).code(), Code::Internal);
    }
}
