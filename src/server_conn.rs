//! One server connection: the thread that owns its socket and its h2 state.
//!
//! The thread is the only one that touches h2. It accepts streams, checks
//! their headers, hands each call to the handler pool, moves request bytes to
//! the handler's iterator, and applies the commands handlers send back
//! (headers, messages, trailers, flow-control credit). It sleeps in
//! `poll(2)` (via [`EventLoop`]) on the socket and a wake-up, and the sleep's
//! timeout is its timer for call deadlines and the handshake timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use h2::server::{Connection, Handshake, SendResponse};
use h2::{FlowControl, Reason, RecvStream, SendStream};
use http::{HeaderMap, Request};

use crate::call_state::CallState;
use crate::compression::Encoding;
use crate::io::{drive, waker, Driver, EventLoop, Socket, Wake, CONN_KEY};
use crate::mailbox::{mailbox, Producer};
use crate::metadata::Metadata;
use crate::preface::{sniff, Sniffed, MAX_SNIFF, PREFACE};
use crate::protocol::{self, Rejection};
use crate::send_queue::SendQueue;
use crate::server::{ServerConfig, ServerShared, Service};
use crate::server_call::{Inbound, ServerCall};
use crate::status::Status;
use crate::timers::Timers;

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
    Stream(u64, StreamCmd),
    /// Send GOAWAY, finish in-flight calls, then close.
    Shutdown,
    /// Close now; in-flight calls end CANCELLED / UNAVAILABLE.
    Abort,
}

/// A handle other threads use to reach a connection thread.
pub(crate) struct ConnHandle {
    tx: Sender<ConnCmd>,
    wake: Arc<Wake>,
}

impl ConnHandle {
    /// Queues a command for a stream (no wake-up: call [`ConnHandle::wake`]
    /// after the last command of a batch).
    pub(crate) fn send(&self, key: u64, cmd: StreamCmd) {
        let _ = self.tx.send(ConnCmd::Stream(key, cmd));
    }

    /// Queues a connection-level command and wakes the thread.
    pub(crate) fn control(&self, cmd: ConnCmd) {
        let _ = self.tx.send(cmd);
        self.wake.wake();
    }

    /// Wakes the connection thread.
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }
}

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
    inbound: Option<Producer<Inbound>>,
    out: SendQueue,
    trailers: Option<HeaderMap>,
    finished: bool,
    /// A unary call to run on this thread once its request has arrived.
    inline: Option<Box<(Arc<dyn Service>, ServerCall)>>,
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
    streams: HashMap<u64, Stream>,
    next_key: u64,
    rx: Receiver<ConnCmd>,
    handle: Arc<ConnHandle>,
    timers: Timers,
    peer: Option<SocketAddr>,
    server: Arc<ServerShared>,
    shutting_down: bool,
    keepalive: Keepalive,
    /// When the last call ended (for the idle timeout).
    idle_since: Instant,
}

/// Timer keys of the connection itself (stream keys count up from 0).
const HANDSHAKE_TIMER: u64 = CONN_KEY;
const KEEPALIVE_TIMER: u64 = u64::MAX - 1;
const PONG_TIMER: u64 = u64::MAX - 2;
const IDLE_TIMER: u64 = u64::MAX - 3;
const AGE_TIMER: u64 = u64::MAX - 4;
const AGE_GRACE_TIMER: u64 = u64::MAX - 5;

/// Keepalive pings: sent every interval (when calls are open, or always if
/// permitted); a ping not answered in time means the peer is gone.
#[derive(Default)]
pub(crate) struct Keepalive {
    ping_pong: Option<h2::PingPong>,
    awaiting: bool,
    /// When the outstanding ping went out.
    sent_at: Option<Instant>,
}

impl Keepalive {
    /// Sends a ping if none is outstanding; returns whether it did.
    pub(crate) fn ping(&mut self) -> bool {
        if self.awaiting {
            return false;
        }
        let Some(pp) = &mut self.ping_pong else {
            return false;
        };
        self.awaiting = pp.send_ping(h2::Ping::opaque()).is_ok();
        self.sent_at = self.awaiting.then(Instant::now);
        self.awaiting
    }

    /// Polls for the answer to an outstanding ping; returns true when it
    /// arrived.
    pub(crate) fn poll_pong(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.awaiting {
            return false;
        }
        match &mut self.ping_pong {
            Some(pp) => match pp.poll_pong(cx) {
                Poll::Ready(Ok(_)) => {
                    self.awaiting = false;
                    true
                }
                Poll::Ready(Err(_)) | Poll::Pending => false,
            },
            None => false,
        }
    }

    /// Whether a ping is waiting for its answer.
    pub(crate) fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// Whether the outstanding ping has waited `timeout` or longer. (A pong
    /// deadline timer can outlive its ping: only this decides.)
    pub(crate) fn overdue(&self, timeout: Duration) -> bool {
        self.awaiting && self.sent_at.is_some_and(|t| t.elapsed() >= timeout)
    }

    /// Takes the connection's ping handle (once, after the handshake).
    pub(crate) fn set(&mut self, ping_pong: Option<h2::PingPong>) {
        self.ping_pong = ping_pong;
    }
}

/// Sets up a connection: returns the handle other threads use and the
/// function to run on the connection's own thread.
pub(crate) fn prepare(
    stream: TcpStream,
    server: Arc<ServerShared>,
) -> std::io::Result<(Arc<ConnHandle>, impl FnOnce())> {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (ev, socket) = EventLoop::new(stream)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle = Arc::new(ConnHandle {
        tx,
        wake: ev.wake_handle().clone(),
    });
    let conn_waker = waker(ev.wake_handle(), CONN_KEY);
    let mut conn = Conn {
        ev,
        phase: Phase::Sniffing(socket, Vec::new()),
        conn_waker,
        streams: HashMap::new(),
        next_key: 0,
        rx,
        handle: handle.clone(),
        timers: Timers::default(),
        peer,
        server,
        shutting_down: false,
        keepalive: Keepalive::default(),
        idle_since: Instant::now(),
    };
    let handshake_deadline = Instant::now() + conn.server.config.handshake_timeout;
    conn.timers.add(handshake_deadline, CONN_KEY);
    Ok((handle, move || conn.run()))
}

fn handshake(cfg: &ServerConfig, socket: Socket) -> Handshake<Socket, Bytes> {
    h2::server::Builder::new()
        .initial_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_frame_size(cfg.max_frame_size)
        .max_header_list_size(cfg.max_header_list_size)
        .max_send_buffer_size(cfg.max_send_buffer)
        .data_frame_budget(small_frame_budget(cfg.connection_window))
        .max_pending_accept_reset_streams(cfg.max_pending_reset_streams)
        .max_local_error_reset_streams(Some(cfg.max_local_error_resets))
        .handshake(socket)
}

/// h2's budget for buffered small DATA frames: each frame under 256 bytes
/// costs 256 minus its size until it is read out of h2. gRPC peers send a
/// DATA frame per small message, so the default (half the connection window)
/// is exhausted by legitimate bursts of a few thousand small messages read in
/// one go. Four times the connection window allows ~65,000 buffered tiny
/// frames per connection (a few MB of bookkeeping), and still stops a flood.
pub(crate) fn small_frame_budget(connection_window: u32) -> usize {
    (connection_window as usize)
        .saturating_mul(4)
        .max(1024 * 1024)
}

impl Driver for Conn {
    type Cmd = ConnCmd;
    fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.ev
    }
    fn apply(&mut self, cmd: ConnCmd) {
        Conn::apply(self, cmd);
    }
    fn poll_stream(&mut self, key: u64) {
        Conn::poll_stream(self, key);
    }
    fn poll_conn(&mut self) {
        Conn::poll_conn(self);
    }
    fn fire_timers(&mut self) -> Option<Duration> {
        self.fire_due_timers();
        self.timers.next_in(Instant::now())
    }
    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

/// A client resets its stream (CANCEL) when its deadline passes, and its
/// clock started before ours (we start at the request's arrival), so its
/// reset usually beats our own timer. A reset that arrives within the last
/// fifth of the call's time (at most 1 s, at least 50 ms before our
/// deadline) is reported as the deadline it almost certainly is.
fn at_deadline(status: Status, deadline: Option<(Instant, Duration)>) -> Status {
    let Some((deadline, timeout)) = deadline else {
        return status;
    };
    if status.code() != crate::status::Code::Cancelled {
        return status;
    }
    let margin = (timeout / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
    if deadline.saturating_duration_since(Instant::now()) <= margin {
        return Status::deadline_exceeded("the call's deadline passed (the client gave up at it)");
    }
    status
}

fn reset_status(reason: Option<Reason>) -> Status {
    match reason {
        Some(Reason::CANCEL) | Some(Reason::NO_ERROR) | None => {
            Status::cancelled("the client cancelled the call")
        }
        Some(r) => Status::cancelled(format!("the client reset the stream ({r})")),
    }
}

impl Conn {
    fn run(mut self) {
        let commands = self.rx.clone();
        if let Err(e) = drive(&mut self, &commands) {
            log::error!("connection event loop failed: {e}");
        }
        self.close_all(Status::unavailable("the connection was closed"));
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
            ConnCmd::Abort => {
                if let Phase::Open(c) = &mut self.phase {
                    c.abrupt_shutdown(Reason::NO_ERROR);
                    // Flush the GOAWAY if the socket takes it right away.
                    let mut cx = Context::from_waker(&self.conn_waker);
                    let _ = c.poll_closed(&mut cx);
                }
                self.phase = Phase::Done;
            }
        }
    }

    fn stream_cmd(&mut self, key: u64, cmd: StreamCmd) {
        let Some(s) = self.streams.get_mut(&key) else {
            // The stream is gone (reset, deadline): drop the command. Credit
            // of a closed stream goes back to the connection by itself.
            return;
        };
        match cmd {
            StreamCmd::Headers(metadata, encoding) => {
                if let Some(mut respond) = s.respond.take() {
                    match respond.send_response(protocol::response(&metadata, encoding), false) {
                        Ok(send) => s.send = Some(send),
                        Err(e) => {
                            log::debug!("sending response headers failed: {e}");
                            self.cancel(key, reset_status(e.reason()));
                            return;
                        }
                    }
                }
            }
            StreamCmd::Data(bytes) => s.out.push(bytes),
            StreamCmd::Finish(status) => {
                if let Some(mut respond) = s.respond.take() {
                    let res = protocol::trailers_only(&status, &Metadata::new());
                    if let Err(e) = respond.send_response(res, true) {
                        log::debug!("sending trailers-only response failed: {e}");
                    }
                    s.finished = true;
                } else {
                    s.trailers = Some(protocol::trailers(&status));
                }
            }
            StreamCmd::Release(n) => {
                let _ = s.flow.release_capacity(n);
                return;
            }
        }
        self.flush(key);
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
                    self.keepalive.set(c.ping_pong());
                    self.phase = Phase::Open(c);
                    self.opened();
                }
                Poll::Ready(Err(e)) => {
                    log::debug!("HTTP/2 handshake with {:?} failed: {e}", self.peer);
                    self.phase = Phase::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
        if self.keepalive.poll_pong(&mut cx) {
            if let Some(every) = self.server.config.keepalive_interval {
                self.timers.add(Instant::now() + every, KEEPALIVE_TIMER);
            }
        }
        loop {
            let Phase::Open(c) = &mut self.phase else {
                return;
            };
            match c.poll_accept(&mut cx) {
                Poll::Ready(Some(Ok((req, respond)))) => self.accept(req, respond),
                Poll::Ready(Some(Err(e))) => {
                    if e.is_io() || e.is_go_away() || e.reason().is_some() && !e.is_remote() {
                        log::debug!("connection from {:?} ended: {e}", self.peer);
                        self.phase = Phase::Done;
                        return;
                    }
                    log::debug!("stream error on connection from {:?}: {e}", self.peer);
                }
                Poll::Ready(None) => {
                    self.phase = Phase::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    /// The handshake is done: start the connection's timers.
    fn opened(&mut self) {
        let cfg = &self.server.config;
        let now = Instant::now();
        if let Some(every) = cfg.keepalive_interval {
            self.timers.add(now + every, KEEPALIVE_TIMER);
        }
        if let Some(idle) = cfg.idle_timeout {
            self.idle_since = now;
            self.timers.add(now + idle, IDLE_TIMER);
        }
        if let Some(age) = cfg.max_connection_age {
            self.timers.add(now + age, AGE_TIMER);
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

    fn connection_timer(&mut self, key: u64) {
        let cfg = &self.server.config;
        let now = Instant::now();
        match key {
            HANDSHAKE_TIMER => {
                // The client's preface is the 24-byte string and then a
                // SETTINGS frame (RFC 9113, 3.4): h2 finishes its handshake
                // on the string alone, so count the frame's 9-byte header.
                let incomplete = self.ev.bytes_read() < PREFACE.len() + 9;
                if matches!(self.phase, Phase::Sniffing(..) | Phase::Handshaking(_))
                    || matches!(self.phase, Phase::Open(_)) && incomplete
                {
                    log::debug!(
                        "closing connection from {:?}: no HTTP/2 preface in time",
                        self.peer
                    );
                    self.phase = Phase::Done;
                }
            }
            KEEPALIVE_TIMER => {
                let Some(every) = cfg.keepalive_interval else {
                    return;
                };
                let wanted = cfg.keepalive_without_calls || !self.streams.is_empty();
                if wanted && self.keepalive.ping() {
                    self.timers.add(now + cfg.keepalive_timeout, PONG_TIMER);
                    self.conn_waker.wake_by_ref();
                } else if !self.keepalive.awaiting() {
                    self.timers.add(now + every, KEEPALIVE_TIMER);
                }
            }
            PONG_TIMER if self.keepalive.overdue(cfg.keepalive_timeout) => {
                log::debug!(
                    "closing connection from {:?}: keepalive ping not answered within {:?}",
                    self.peer,
                    cfg.keepalive_timeout
                );
                self.close_all(Status::unavailable(
                    "the connection was closed: the client stopped answering keepalive pings",
                ));
                self.phase = Phase::Done;
            }
            IDLE_TIMER => {
                let Some(idle) = cfg.idle_timeout else {
                    return;
                };
                if !self.streams.is_empty() {
                    // Checked again when the last call ends.
                    return;
                }
                let due = self.idle_since + idle;
                if due <= now {
                    log::debug!("closing idle connection from {:?}", self.peer);
                    self.go_away();
                } else {
                    self.timers.add(due, IDLE_TIMER);
                }
            }
            AGE_TIMER => {
                log::debug!("connection from {:?} reached its maximum age", self.peer);
                let grace = cfg.max_connection_age_grace;
                self.go_away();
                self.timers.add(now + grace, AGE_GRACE_TIMER);
            }
            AGE_GRACE_TIMER => {
                self.close_all(Status::unavailable(
                    "the connection reached its maximum age and its grace period ended",
                ));
                self.apply(ConnCmd::Abort);
            }
            _ => {}
        }
    }

    /// A stream left the map: when it was the last one, the idle clock
    /// starts.
    fn stream_removed(&mut self) {
        if self.streams.is_empty() {
            self.idle_since = Instant::now();
            if let Some(idle) = self.server.config.idle_timeout {
                self.timers.add(self.idle_since + idle, IDLE_TIMER);
            }
        }
    }

    /// Reads the connection's first bytes: HTTP/2 goes on to the handshake
    /// (h2 re-reads those bytes), HTTP/1.x gets an error reply, anything
    /// else is closed.
    fn sniff(&mut self) {
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
                Err(_) => break Sniffed::Garbage,
            }
        };
        let Phase::Sniffing(mut socket, buf) = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        match verdict {
            Sniffed::Http2 => {
                socket.set_replay(Bytes::from(buf));
                self.phase = Phase::Handshaking(handshake(&self.server.config, socket));
            }
            Sniffed::Http1(reply) => {
                log::debug!(
                    "answering an HTTP/1.x request from {:?} with an error",
                    self.peer
                );
                socket.reply_and_close(&reply);
            }
            Sniffed::NeedMore | Sniffed::Garbage => {
                log::debug!(
                    "closing a connection from {:?} that does not speak HTTP/2",
                    self.peer
                );
            }
        }
    }

    fn accept(&mut self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let (parts, mut body) = req.into_parts();
        let head = match protocol::parse_request(&parts) {
            Ok(head) => head,
            Err(Rejection::Http(status, why)) => {
                log::debug!("refusing a non-gRPC request: {why}");
                let _ = respond.send_response(protocol::http_error(status), true);
                return;
            }
            Err(Rejection::Grpc(status)) => {
                let _ =
                    respond.send_response(protocol::trailers_only(&status, &Metadata::new()), true);
                return;
            }
        };
        let service = match self.server.services.get(head.service.as_str()) {
            Some(s) if s.methods().contains(&head.method.as_str()) => s.clone(),
            Some(_) => {
                let status = Status::unimplemented(format!(
                    "unknown method {} for service {}",
                    head.method, head.service
                ));
                let _ =
                    respond.send_response(protocol::trailers_only(&status, &Metadata::new()), true);
                return;
            }
            None => {
                let status = Status::unimplemented(format!("unknown service {}", head.service));
                let _ =
                    respond.send_response(protocol::trailers_only(&status, &Metadata::new()), true);
                return;
            }
        };
        // Answer in the request's compression when the client accepts it.
        let response_encoding = if head.encoding != Encoding::Identity
            && (head.accept_encoding.is_empty() || head.accept_encoding.contains(&head.encoding))
        {
            head.encoding
        } else {
            Encoding::Identity
        };
        let key = self.next_key;
        self.next_key += 1;
        let state = Arc::new(CallState::new());
        let (in_tx, in_rx) = mailbox();
        let head_timeout = head.timeout;
        let deadline = head.timeout.map(|t| Instant::now() + t);
        let cfg = &self.server.config;
        let call = ServerCall {
            key,
            conn: self.handle.clone(),
            state: state.clone(),
            inbound: in_rx,
            service: head.service,
            method: head.method,
            metadata: head.metadata,
            peer: self.peer,
            deadline,
            request_encoding: head.encoding,
            response_encoding,
            accept_encoding: head.accept_encoding,
            policy: self.server.errors.clone(),
            max_receive: cfg.max_receive_message_size,
            max_send: cfg.max_send_message_size,
        };
        let inline = cfg.inline_unary && service.unary_methods().contains(&call.method.as_str());
        let mut inline_call = None;
        if inline {
            inline_call = Some(Box::new((service, call)));
        } else if let Err(e) = {
            let method = call.method.clone();
            self.server
                .pool
                .execute(Box::new(move || service.call(&method, call)))
        } {
            let status = match e {
                crate::pool::PoolError::Full => Status::resource_exhausted(format!(
                    "the server is running its maximum of {} handlers; try again later",
                    cfg.max_concurrent_handlers
                )),
                crate::pool::PoolError::Closed => {
                    Status::unavailable("the server is shutting down")
                }
            };
            let _ = respond.send_response(protocol::trailers_only(&status, &Metadata::new()), true);
            return;
        }
        if let Some(d) = deadline {
            self.timers.add(d, key);
        }
        let flow = body.flow_control().clone();
        self.streams.insert(
            key,
            Stream {
                waker: waker(self.ev.wake_handle(), key),
                state,
                deadline: deadline.zip(head_timeout),
                respond: Some(respond),
                send: None,
                recv: Some(body),
                flow,
                inbound: Some(in_tx),
                out: SendQueue::default(),
                trailers: None,
                finished: false,
                inline: inline_call,
            },
        );
        self.poll_stream(key);
    }

    /// Moves request data to the handler and checks for a reset.
    fn poll_stream(&mut self, key: u64) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        let mut reset = None;
        let mut run_inline = None;
        if let Some(recv) = &mut s.recv {
            loop {
                match recv.poll_data(&mut cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let n = chunk.len();
                        let delivered = s
                            .inbound
                            .as_ref()
                            .is_some_and(|tx| tx.send(Inbound::Data(chunk)).is_ok());
                        if !delivered {
                            // Nobody will read it: give the credit back now.
                            let _ = s.flow.release_capacity(n);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        reset = Some(reset_status(e.reason()));
                        break;
                    }
                    Poll::Ready(None) => match recv.poll_trailers(&mut cx) {
                        Poll::Ready(Ok(_)) => {
                            if let Some(tx) = s.inbound.take() {
                                let _ = tx.send(Inbound::End);
                            }
                            s.recv = None;
                            run_inline = s.inline.take();
                            break;
                        }
                        Poll::Ready(Err(e)) => {
                            reset = Some(reset_status(e.reason()));
                            break;
                        }
                        Poll::Pending => break,
                    },
                    Poll::Pending => break,
                }
            }
        }
        if reset.is_none() {
            if let Some(respond) = &mut s.respond {
                if let Poll::Ready(r) = respond.poll_reset(&mut cx) {
                    reset = Some(reset_status(r.ok()));
                }
            } else if let Some(send) = &mut s.send {
                if let Poll::Ready(r) = send.poll_reset(&mut cx) {
                    reset = Some(reset_status(r.ok()));
                }
            }
        }
        if let Some(status) = reset {
            let status = at_deadline(status, s.deadline);
            self.cancel(key, status);
            return;
        }
        if let Some(call) = run_inline {
            // The whole request is here, so the handler does not wait for
            // this thread; its response commands are applied on the next
            // turn of the loop.
            let (service, call) = *call;
            let method = call.method.clone();
            service.call(&method, call);
        }
        self.flush(key);
    }

    /// Gives queued response data to h2 as far as flow control allows, then
    /// the trailers; removes the stream once it is complete.
    fn flush(&mut self, key: u64) {
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
                    self.cancel(key, reset_status(e.reason()));
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

    /// Takes a stream out of the map, with its deadline timer.
    fn take_stream(&mut self, key: u64) -> Option<Stream> {
        let s = self.streams.remove(&key)?;
        if let Some((at, _)) = s.deadline {
            self.timers.remove(at, key);
        }
        Some(s)
    }

    /// Ends a call early: tells the handler and drops the stream (h2 resets
    /// it if it is still open).
    fn cancel(&mut self, key: u64, status: Status) {
        if let Some(s) = self.take_stream(key) {
            s.state.cancel(status.clone());
            if let Some(tx) = &s.inbound {
                let _ = tx.send(Inbound::Error(status));
            }
            self.stream_removed();
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.timers.pop_due(now) {
            if key >= AGE_GRACE_TIMER {
                self.connection_timer(key);
                continue;
            }
            self.deadline_exceeded(key);
        }
    }

    fn deadline_exceeded(&mut self, key: u64) {
        let Some(mut s) = self.take_stream(key) else {
            return;
        };
        let status = Status::deadline_exceeded("the call's deadline passed on the server");
        s.state.cancel(status.clone());
        if let Some(tx) = &s.inbound {
            let _ = tx.send(Inbound::Error(status.clone()));
        }
        if let Some(mut respond) = s.respond.take() {
            let _ = respond.send_response(protocol::trailers_only(&status, &Metadata::new()), true);
        } else if let Some(send) = &mut s.send {
            let _ = send.send_trailers(protocol::trailers(&status));
        }
        self.stream_removed();
    }

    fn close_all(&mut self, status: Status) {
        for (_, s) in self.streams.drain() {
            s.state.cancel(status.clone());
            if let Some(tx) = &s.inbound {
                let _ = tx.send(Inbound::Error(status.clone()));
            }
        }
    }
}
