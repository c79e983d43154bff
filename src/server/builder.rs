//! [`ServerBuilder`]: the services, settings and error mappings of a
//! server, then [`bind`](ServerBuilder::bind).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::rt::settings::connection_setters;
use crate::server::config::{ServerConfig, UnaryHandlers};
use crate::server::error_policy::ErrorPolicy;
use crate::server::interceptor::Interceptor;
use crate::server::plugin::Plugins;
use crate::server::serve::Server;
use crate::server::service::{Registry, Service};
use crate::server::state::Setup;
use crate::status::Status;
use crate::transport::{Listener, UnixAddr};

/// Builds a [`Server`]: add services, change settings, then
/// [`bind`](ServerBuilder::bind).
///
/// Every setting has a setter here, which gives its default.
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
///
/// The standard services' settings, `health` and `reflection`, live with
/// those services in `src/services/`.
pub struct ServerBuilder {
    registry: Registry,
    config: ServerConfig,
    errors: ErrorPolicy,
    interceptors: Vec<Arc<dyn Interceptor>>,
    pub(crate) plugins: Plugins,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("services", &self.registry)
            .field("config", &self.config)
            .field("errors", &self.errors)
            .field("interceptors", &self.interceptors.len())
            .field("plugins", &self.plugins)
            .finish()
    }
}

impl Server {
    /// Starts building a server, with the standard services' defaults
    /// (health checking on, with the `health` feature; see
    /// `ServerBuilder::health`).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl ServerBuilder {
    /// A builder with nothing in it: no services, no interceptors, no
    /// standard services (they add themselves in `Default`).
    pub(crate) fn bare() -> Self {
        ServerBuilder {
            registry: Registry::default(),
            config: ServerConfig::default(),
            errors: ErrorPolicy::default(),
            interceptors: Vec::new(),
            plugins: Plugins::default(),
        }
    }

    /// Adds a server-wide interceptor: it runs for every call of every
    /// service (the standard ones included), after the interceptors added
    /// before it and before any service's own
    /// ([`InterceptedService`](crate::server::InterceptedService)). See
    /// [`Interceptor`].
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Adds a service. A later service with the same name replaces the
    /// earlier one.
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.registry.add(Arc::new(service));
        self
    }

    /// Maps an error type the handlers do not convert themselves to a
    /// status, server-wide. It applies to statuses made with
    /// [`Status::from_error`] from an `E`, and to handlers that panic with an
    /// `E` payload (`std::panic::panic_any`). Without a mapping such failures
    /// are `UNKNOWN` "Exception calling application: ...". (nameko-grpc's
    /// `register_handler` does the same for exception types.)
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
        F: Fn(&E) -> Status + Send + Sync + 'static,
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

    connection_setters!(config.conn);

    /// Streams (calls) a client may have open at once on one connection,
    /// advertised in HTTP/2 SETTINGS (default 1000).
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.config.max_concurrent_streams = streams;
        self
    }

    /// Handlers that may hold a thread of their own at once, across all
    /// connections (default 1024): streaming handlers, unary ones on the
    /// pool, and inline unary handlers that blocked. A call beyond it gets
    /// `RESOURCE_EXHAUSTED` at once (an inline handler that blocks then
    /// keeps its connection waiting instead of taking a thread).
    pub fn max_concurrent_handlers(mut self, handlers: usize) -> Self {
        self.config.max_concurrent_handlers = handlers.max(1);
        self
    }

    /// Where unary handlers run (default [`UnaryHandlers::Adaptive`]:
    /// on the connection's thread, handing the connection to another
    /// thread if a handler blocks; server-streaming handlers run so too,
    /// and client-streaming ones whose requests are all in within
    /// [`inline_time_limit`](Self::inline_time_limit)). Bidi handlers, and
    /// the other client-streaming ones, run on the handler pool.
    pub fn unary_handlers(mut self, mode: UnaryHandlers) -> Self {
        self.config.unary_handlers = mode;
        self
    }

    /// How long an adaptive inline handler may run before its connection
    /// is handed to another thread (default 1 ms): the longest the other
    /// calls of a connection wait for a handler that blocks, plus the time
    /// the monitor takes to notice (up to the limit again while its looks
    /// find handlers running, up to 16 ms after a quiet while: it looks
    /// less often while handlers return quickly). Also how long a
    /// client-streaming handler waits for the end of its request stream
    /// before it starts on the handler pool instead.
    pub fn inline_time_limit(mut self, limit: Duration) -> Self {
        self.config.inline_time_limit = limit;
        self
    }

    /// Stack size of handler threads (default 2 MiB, Rust's own default),
    /// and so of connection threads when unary handlers run on them.
    pub fn handler_stack_size(mut self, bytes: usize) -> Self {
        self.config.handler_stack_size = bytes;
        self
    }

    /// How long an idle handler thread waits for another call before it
    /// exits (default 60 s).
    pub fn handler_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.handler_idle_timeout = timeout;
        self
    }

    /// Closes a connection (GOAWAY) once it has had no call for this long
    /// (default: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Closes a connection gracefully (GOAWAY) once it is this old (default:
    /// never); clients reconnect, which spreads load over new servers. What
    /// still runs after [`max_connection_age_grace`](Self::max_connection_age_grace)
    /// is cancelled.
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.config.max_connection_age = age;
        self
    }

    /// How long calls may run on after a connection's maximum age (default
    /// 30 s).
    pub fn max_connection_age_grace(mut self, grace: Duration) -> Self {
        self.config.max_connection_age_grace = grace;
        self
    }

    /// Handler threads one peer (a client IP address; each connection of a
    /// Unix socket on its own) may hold at once (default: half of
    /// [`max_concurrent_handlers`](Self::max_concurrent_handlers), 512, but
    /// at least 64 and at most all of them), so that a client holding calls
    /// open cannot starve the others. A call beyond it gets
    /// `RESOURCE_EXHAUSTED` saying so. Behind a proxy (a sidecar, nginx)
    /// every call comes from the proxy's address: raise it there, up to
    /// `usize::MAX` to turn it off.
    pub fn max_handlers_per_peer(mut self, handlers: usize) -> Self {
        self.config.max_handlers_per_peer = Some(handlers);
        self
    }

    /// Connections one peer (a client IP address) may hold at once
    /// (default: a quarter of [`max_connections`](Self::max_connections),
    /// 2,500, but at least 256 and at most all of them). A connection
    /// beyond it gets a GOAWAY saying so. Behind a proxy, raise it.
    pub fn max_connections_per_peer(mut self, connections: usize) -> Self {
        self.config.max_connections_per_peer = Some(connections);
        self
    }

    /// Connections served at once (default 10,000). A connection beyond it
    /// is answered with an HTTP/2 GOAWAY saying so, and closed.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// How long a new connection may take to send its HTTP/2 preface and
    /// SETTINGS (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Streams a client may reset before this server has accepted them,
    /// per connection (default 20); beyond it the connection is closed with
    /// GOAWAY ENHANCE_YOUR_CALM (the HTTP/2 rapid-reset defence).
    pub fn max_pending_accept_reset_streams(mut self, streams: usize) -> Self {
        self.config.max_pending_accept_reset_streams = streams;
        self
    }

    /// Streams this server may reset because of a client's protocol errors,
    /// per connection (default 1024); beyond it the connection is closed.
    pub fn max_local_error_reset_streams(mut self, streams: usize) -> Self {
        self.config.max_local_error_reset_streams = streams;
        self
    }

    /// How long [`ServerHandle::shutdown`](crate::server::ServerHandle::shutdown)
    /// lets in-flight calls finish before cancelling them (default 30 s).
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Serves TLS (the `tls` feature): the server's certificate and key,
    /// and whether it asks clients for theirs (default: plaintext, h2c).
    /// ALPN `h2` is advertised; clients that send no ALPN are served too.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Binds a TCP listening socket (address reuse on, backlog 1024). Use
    /// port 0 for any free port and read it back with
    /// [`Server::local_addr`].
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match bind_listener(addr) {
                Ok(listener) => return self.serve_on(Listener::Tcp(listener)),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }

    /// Binds a Unix domain socket at `path`. A stale socket file there
    /// (nobody listens on it) is replaced; a path where a server listens,
    /// or that holds anything but a socket, is an error. The file is
    /// removed when the server shuts down. Handlers see the path as their
    /// peer. Clients connect with `unix:PATH` (or `unix:///ABSOLUTE`).
    ///
    /// On a Unix socket the server ignores each request's `:authority`:
    /// gRPC's C core (grpcio and its kin) sends the socket's path
    /// percent-encoded there, and grpc-java the path itself, which HTTP/2
    /// would refuse. To drop it safely the server turns HPACK's dynamic
    /// table off for these connections (`SETTINGS_HEADER_TABLE_SIZE` 0):
    /// request headers are not compressed across requests, which costs
    /// nothing that matters on a local socket.
    pub fn bind_unix(self, path: impl AsRef<Path>) -> io::Result<Server> {
        self.bind_unix_addr(UnixAddr::Path(path.as_ref().to_path_buf()))
    }

    /// Binds a Unix domain socket named `name` in Linux's abstract
    /// namespace (no file). Clients connect with `unix-abstract:NAME`. As
    /// with [`bind_unix`](Self::bind_unix), `:authority` is ignored.
    pub fn bind_unix_abstract(self, name: impl AsRef<[u8]>) -> io::Result<Server> {
        self.bind_unix_addr(UnixAddr::Abstract(name.as_ref().to_vec()))
    }

    fn bind_unix_addr(self, addr: UnixAddr) -> io::Result<Server> {
        let listener = addr.bind()?;
        self.serve_on(Listener::Unix(listener, addr))
    }

    fn serve_on(self, listener: Listener) -> io::Result<Server> {
        let mut registry = self.registry;
        self.plugins.install(&mut registry);
        Server::new(
            listener,
            Setup {
                registry,
                config: self.config,
                errors: self.errors,
                interceptors: self.interceptors.into(),
                plugins: self.plugins,
            },
        )
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
