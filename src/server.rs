//! The blocking gRPC server.
//!
//! [`Server::builder`] takes services (the adapters the code generator
//! emits, such as `ExampleServer::new(MyImpl)`), binds a TCP port, and then
//! either [`Server::serve`]s on the calling thread or [`Server::spawn`]s into
//! the background, returning a [`ServerHandle`] to shut it down.
//!
//! Threading: one acceptor thread; one OS thread per connection, which owns
//! the socket and all HTTP/2 state; handlers run on a pool of worker threads
//! that grows on demand up to [`ServerBuilder::max_concurrent_handlers`].
//! A handler may block (on a database, a file, another gRPC call) without
//! slowing other calls down.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use polling::{Event, Events, Poller};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error_policy::ErrorPolicy;
use crate::pool::Pool;
use crate::server_conn::{self, ConnCmd, ConnHandle};

pub use crate::server_call::{
    bidi_streaming, client_streaming, server_streaming, unary, Requests, ResponseSink, ServerCall,
    ServerContext,
};

/// A gRPC service the server can dispatch to. The code generator implements
/// it for each service's `XxxServer<T>` adapter; implement it by hand only for
/// services without a proto.
pub trait Service: Send + Sync + 'static {
    /// The fully-qualified service name, exactly as in the proto
    /// (`package.Service`).
    fn name(&self) -> &'static str;
    /// The service's method names, exactly as in the proto.
    fn methods(&self) -> &'static [&'static str];
    /// The methods that are unary-unary (one request, one response). The
    /// server may run these on the connection thread when
    /// [`ServerBuilder::run_unary_handlers_inline`] is on. Generated code
    /// lists them; the default is none.
    fn unary_methods(&self) -> &'static [&'static str] {
        &[]
    }
    /// Runs one call of `method` (one of [`Service::methods`]) on the
    /// calling thread (a worker's, or the connection's for inline unary
    /// handlers).
    fn call(&self, method: &str, call: ServerCall);
}

/// Server settings. Every default is listed on the builder method that
/// changes it.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub max_receive_message_size: usize,
    pub max_send_message_size: usize,
    pub max_concurrent_streams: u32,
    pub max_concurrent_handlers: usize,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    pub max_send_buffer: usize,
    pub handshake_timeout: Duration,
    pub max_pending_reset_streams: usize,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub keepalive_without_calls: bool,
    pub idle_timeout: Option<Duration>,
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Duration,
    pub max_connections: usize,
    pub max_local_error_resets: usize,
    pub shutdown_grace: Duration,
    pub handler_stack_size: usize,
    pub connection_stack_size: usize,
    pub handler_idle_timeout: Duration,
    pub inline_unary: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_receive_message_size: 4 * 1024 * 1024,
            max_send_message_size: usize::MAX,
            max_concurrent_streams: 1000,
            max_concurrent_handlers: 1024,
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buffer: 256 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_pending_reset_streams: 20,
            keepalive_interval: Some(Duration::from_secs(2 * 60 * 60)),
            keepalive_timeout: Duration::from_secs(20),
            keepalive_without_calls: true,
            idle_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            max_connections: 10_000,
            max_local_error_resets: 1024,
            shutdown_grace: Duration::from_secs(30),
            handler_stack_size: 2 * 1024 * 1024,
            connection_stack_size: 256 * 1024,
            handler_idle_timeout: Duration::from_secs(60),
            inline_unary: false,
        }
    }
}

/// Builds a [`Server`].
///
/// ```no_run
/// # use grpc_blocking::server::{Server, Service};
/// # fn svc() -> impl Service { unimplemented_service() }
/// # fn unimplemented_service() -> impl Service { struct S; impl Service for S {
/// #   fn name(&self) -> &'static str { "x.S" } fn methods(&self) -> &'static [&'static str] { &[] }
/// #   fn call(&self, _: &str, c: grpc_blocking::server::ServerCall) { c.unimplemented() } } S }
/// let server = Server::builder()
///     .add_service(svc())
///     .max_receive_message_size(16 * 1024 * 1024)
///     .bind("127.0.0.1:50051")?;
/// server.serve()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Default)]
pub struct ServerBuilder {
    services: HashMap<&'static str, Arc<dyn Service>>,
    config: ServerConfig,
    errors: ErrorPolicy,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .field("errors", &self.errors)
            .finish()
    }
}

impl ServerBuilder {
    /// Adds a service. A later service with the same name replaces the
    /// earlier one.
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.services.insert(service.name(), Arc::new(service));
        self
    }

    /// Maps an error type the handlers do not convert themselves to a
    /// status, server-wide (nameko-grpc's `register_handler`). It applies to
    /// statuses made with [`Status::from_error`](crate::Status::from_error)
    /// from an `E`, and to handlers that panic with an `E` payload
    /// (`std::panic::panic_any`). Without a mapping such failures are
    /// `UNKNOWN` "Exception calling application: ...".
    ///
    /// ```
    /// use grpc_blocking::{Server, Status};
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("out of tokens")]
    /// struct NoMoreTokens;
    /// let builder = Server::builder()
    ///     .map_error(|_: &NoMoreTokens| Status::resource_exhausted("Out of tokens!"));
    /// # drop(builder);
    /// ```
    pub fn map_error<E, F>(mut self, map: F) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        F: Fn(&E) -> crate::Status + Send + Sync + 'static,
    {
        self.errors.add(map);
        self
    }

    /// With `true`, unmapped handler failures carry a `google.rpc.DebugInfo`
    /// detail: a panic's backtrace, or an error's chain of causes (default
    /// off: it tells clients about the server's internals).
    pub fn debug(mut self, debug: bool) -> Self {
        self.errors.debug = debug;
        self
    }

    /// Largest request message accepted, after decompression (default
    /// 4 MiB). A larger message ends its call with `RESOURCE_EXHAUSTED`.
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.config.max_receive_message_size = bytes;
        self
    }

    /// Largest response message a handler may send (default: unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.config.max_send_message_size = bytes;
        self
    }

    /// Streams (calls) a client may have open at once on one connection,
    /// advertised in HTTP/2 SETTINGS (default 1000).
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.config.max_concurrent_streams = streams;
        self
    }

    /// Handlers that may run at once across all connections (default 1024).
    /// A call beyond it gets `RESOURCE_EXHAUSTED` at once.
    pub fn max_concurrent_handlers(mut self, handlers: usize) -> Self {
        self.config.max_concurrent_handlers = handlers.max(1);
        self
    }

    /// The HTTP/2 flow-control window of each stream (default 1 MiB): how
    /// many request bytes a client may send ahead of its handler reading
    /// them. The connection window is kept at least 4 times larger.
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes;
        self.config.connection_window = self.config.connection_window.max(bytes.saturating_mul(4));
        self
    }

    /// Largest request header block accepted, in bytes as HTTP/2 counts
    /// them (default 16 KiB); a larger one is refused with HTTP 431.
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.config.max_header_list_size = bytes;
        self
    }

    /// With `true`, unary-unary handlers run on the connection's own thread
    /// once their request has fully arrived, instead of being handed to a
    /// worker (default false). That saves two thread hand-offs per call,
    /// the largest cost of a small call, but a handler that blocks (on I/O,
    /// a lock, a sleep, another call) then stalls every call on its
    /// connection: turn it on only when every unary handler is quick and
    /// never blocks. Streaming handlers always run on workers.
    pub fn run_unary_handlers_inline(mut self, inline: bool) -> Self {
        self.config.inline_unary = inline;
        self
    }

    /// Stack size of handler threads (default 2 MiB, Rust's own default).
    pub fn handler_stack_size(mut self, bytes: usize) -> Self {
        self.config.handler_stack_size = bytes;
        self
    }

    /// Sends an HTTP/2 PING on each connection every `interval`, and closes
    /// the connection (its calls end `UNAVAILABLE`) if the client does not
    /// answer within `timeout` (default: every 2 hours, 20 s to answer, as
    /// gRPC servers do). `None` turns keepalive off.
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.keepalive_interval = interval;
        self.config.keepalive_timeout = timeout;
        self
    }

    /// Whether keepalive pings are sent on connections with no call open
    /// (default true).
    pub fn keepalive_without_calls(mut self, permit: bool) -> Self {
        self.config.keepalive_without_calls = permit;
        self
    }

    /// Closes a connection (GOAWAY) once it has had no call for this long
    /// (default: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Closes a connection gracefully (GOAWAY) once it is this old, then
    /// cancels what is still running after `grace` (default: never; grace
    /// 30 s). Clients reconnect; this spreads load over new servers.
    pub fn max_connection_age(mut self, age: Option<Duration>, grace: Duration) -> Self {
        self.config.max_connection_age = age;
        self.config.max_connection_age_grace = grace;
        self
    }

    /// Connections served at once (default 10,000). A connection beyond it
    /// is answered with an HTTP/2 GOAWAY saying so, and closed.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// How long a new connection may take to send its HTTP/2 preface
    /// (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long [`ServerHandle::shutdown`] lets in-flight calls finish
    /// before cancelling them (default 30 s).
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Binds the listening socket (address reuse on, backlog 1024). Use port
    /// 0 for any free port and read it back with [`Server::local_addr`].
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match bind_listener(addr) {
                Ok(listener) => return Server::new(listener, self),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What connection threads and the acceptor share.
pub(crate) struct ServerShared {
    pub services: HashMap<&'static str, Arc<dyn Service>>,
    pub errors: Arc<ErrorPolicy>,
    pub config: ServerConfig,
    pub pool: Pool,
    conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    conns_done: Condvar,
    next_conn: AtomicU64,
    stop: AtomicBool,
    poller: Poller,
}

/// A bound gRPC server, not yet serving.
pub struct Server {
    listener: TcpListener,
    shared: Arc<ServerShared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    fn new(listener: TcpListener, builder: ServerBuilder) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let config = builder.config;
        let pool = Pool::new(
            config.max_concurrent_handlers,
            config.handler_stack_size,
            config.handler_idle_timeout,
        );
        Ok(Server {
            listener,
            shared: Arc::new(ServerShared {
                services: builder.services,
                errors: Arc::new(builder.errors),
                config,
                pool,
                conns: Mutex::new(HashMap::new()),
                conns_done: Condvar::new(),
                next_conn: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                poller: Poller::new()?,
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops [`Server::serve`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves on the calling thread until a [`ShutdownHandle`] stops it.
    /// Returns after a graceful shutdown: in-flight calls finished (or were
    /// cancelled after the grace period) and every server thread ended.
    pub fn serve(self) -> io::Result<()> {
        let Server { listener, shared } = self;
        let result = accept_loop(&listener, &shared);
        // New connections are refused from here on (not left in the
        // backlog while in-flight calls drain).
        drop(listener);
        drain(&shared);
        result
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("grpc-acceptor".into())
            .stack_size(128 * 1024)
            .spawn(move || self.serve())?;
        Ok(ServerHandle {
            shared,
            addr,
            thread: Some(thread),
        })
    }
}

/// Stops a server that is serving on another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<ServerShared>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Asks the server to stop accepting and shut down gracefully; returns at
    /// once ([`Server::serve`] returns when it is done).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.poller.notify();
    }
}

/// A server running in the background. Dropping it shuts the server down.
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    addr: SocketAddr,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, sends GOAWAY on every connection, lets in-flight
    /// calls finish (cancelling them after the grace period), and returns
    /// once every server thread has ended.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
        .shutdown();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

const LISTENER_KEY: usize = 0;

fn accept_loop(listener: &TcpListener, shared: &Arc<ServerShared>) -> io::Result<()> {
    // SAFETY: `polling` requires a registered source to be deleted before it
    // is closed. The listener outlives this function (it is borrowed), and
    // it is deleted from the poller below before the function returns, on
    // every path after the add succeeds.
    unsafe { shared.poller.add(listener, Event::readable(LISTENER_KEY))? };
    let result = accept_until_stopped(listener, shared);
    let _ = shared.poller.delete(listener);
    result
}

fn accept_until_stopped(listener: &TcpListener, shared: &Arc<ServerShared>) -> io::Result<()> {
    let mut events = Events::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => start_connection(stream, shared),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have, retry shortly.
                    log::error!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
        shared
            .poller
            .modify(listener, Event::readable(LISTENER_KEY))?;
        events.clear();
        match shared.poller.wait(&mut events, None) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The bytes a refused connection gets: the server's SETTINGS (an empty
/// frame), then GOAWAY (last stream 0, REFUSED_STREAM) with a reason.
fn refusal(reason: &str) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let len = 8 + reason.len();
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

fn start_connection(stream: std::net::TcpStream, shared: &Arc<ServerShared>) {
    if shared.conns.lock().len() >= shared.config.max_connections {
        let reason = format!(
            "the server is at its limit of {} connections",
            shared.config.max_connections
        );
        log::warn!("refusing a connection: {reason}");
        // Best effort, never blocking the acceptor: write the GOAWAY, and
        // drain what the client sent so far so that closing does not reset
        // the connection before the client reads it.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write_all(&refusal(&reason));
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        while matches!((&stream).read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    if let Err(e) = stream.set_nonblocking(false) {
        log::debug!("dropping a new connection: {e}");
        return;
    }
    let (handle, run) = match server_conn::prepare(stream, shared.clone()) {
        Ok(x) => x,
        Err(e) => {
            log::error!("could not set up a connection: {e}");
            return;
        }
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.conns.lock().insert(id, handle);
    let done = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("grpc-conn".into())
        .stack_size(shared.config.connection_stack_size)
        .spawn(move || {
            run();
            let mut conns = done.conns.lock();
            conns.remove(&id);
            if conns.is_empty() {
                done.conns_done.notify_all();
            }
        });
    if let Err(e) = spawned {
        log::error!("could not start a connection thread: {e}");
        shared.conns.lock().remove(&id);
    }
}

/// Graceful shutdown: GOAWAY everywhere, wait for calls to finish up to the
/// grace period, then close what is left, and stop the handler pool.
fn drain(shared: &Arc<ServerShared>) {
    for c in shared.conns.lock().values() {
        c.control(ConnCmd::Shutdown);
    }
    let deadline = Instant::now() + shared.config.shutdown_grace;
    let mut conns = shared.conns.lock();
    while !conns.is_empty() {
        if shared
            .conns_done
            .wait_until(&mut conns, deadline)
            .timed_out()
        {
            for c in conns.values() {
                c.control(ConnCmd::Abort);
            }
            // Aborted connections end promptly; wait for their threads.
            while !conns.is_empty() {
                shared.conns_done.wait(&mut conns);
            }
        }
    }
    drop(conns);
    shared.pool.shutdown();
}
