//! A bound [`Server`], serving on the calling thread or in the background,
//! and the handles that shut it down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::atomic::Ordering;

use crate::server::acceptor::Acceptor;
use crate::server::plugin::Plugins;
use crate::server::state::{ServerShared, Setup};
use crate::transport::{Listener, UnixAddr};

/// Where a server listens.
#[derive(Clone, Debug)]
enum ListenAddr {
    Tcp(SocketAddr),
    Unix(UnixAddr),
}

impl ListenAddr {
    fn of(listener: &Listener) -> io::Result<ListenAddr> {
        match (listener.tcp_addr(), listener.unix_addr()) {
            (Some(addr), _) => Ok(ListenAddr::Tcp(addr)),
            (None, Some(addr)) => Ok(ListenAddr::Unix(addr.clone())),
            (None, None) => Err(io::Error::other("the listener has no address")),
        }
    }

    /// What a client dials.
    fn target(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        match self {
            ListenAddr::Tcp(addr) => format!("{scheme}://{addr}"),
            ListenAddr::Unix(UnixAddr::Path(p)) => format!("unix:{}", p.display()),
            ListenAddr::Unix(UnixAddr::Abstract(name)) => {
                format!("unix-abstract:{}", String::from_utf8_lossy(name))
            }
        }
    }

    fn tcp(&self) -> io::Result<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) => Ok(*addr),
            ListenAddr::Unix(addr) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the server listens on the Unix socket {addr}, not on TCP"),
            )),
        }
    }
}

/// A bound gRPC server, not yet serving: [`serve`](Server::serve) on this
/// thread, or [`spawn`](Server::spawn) a background thread.
pub struct Server {
    listener: Listener,
    addr: ListenAddr,
    tls: bool,
    acceptor: Arc<Acceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub(crate) fn new(listener: Listener, setup: Setup) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let addr = ListenAddr::of(&listener)?;
        let unix_name = listener.unix_addr().map(ToString::to_string);
        #[cfg(feature = "tls")]
        let tls = setup.config.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        let shared = ServerShared::new(setup, unix_name)?;
        Ok(Server {
            listener,
            addr,
            tls,
            acceptor: Arc::new(Acceptor::new(shared)?),
        })
    }

    /// The bound TCP address (an error for a server on a Unix socket).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addr.tcp()
    }

    /// What a client dials to reach this server: `http://IP:PORT`
    /// (`https://` with TLS), `unix:PATH` or `unix-abstract:NAME`.
    pub fn target(&self) -> String {
        self.addr.target(self.tls)
    }

    /// The server's plugins (the standard services find theirs here).
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    pub(crate) fn plugins(&self) -> &Plugins {
        &self.acceptor.shared().plugins
    }

    /// What the server is doing now: see [`ServerStats`].
    pub fn stats(&self) -> ServerStats {
        self.stats_handle().stats()
    }

    /// A handle that reads the server's [`ServerStats`] from any thread
    /// (for a metrics endpoint).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            acceptor: self.acceptor.clone(),
        }
    }

    /// A handle that stops [`Server::serve`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            acceptor: self.acceptor.clone(),
        }
    }

    /// Serves on the calling thread until a [`ShutdownHandle`] stops it.
    /// Returns after a graceful shutdown: in-flight calls finished (or were
    /// cancelled after the grace period) and every server thread ended.
    pub fn serve(self) -> io::Result<()> {
        let Server {
            listener, acceptor, ..
        } = self;
        let result = acceptor.run(&listener);
        // New connections are refused from here on (not left in the
        // backlog while in-flight calls drain); a socket file goes.
        drop(listener);
        acceptor.drain();
        result
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let (addr, tls) = (self.addr.clone(), self.tls);
        let acceptor = self.acceptor.clone();
        let thread = std::thread::Builder::new()
            .name("grpc-acceptor".into())
            .stack_size(128 * 1024)
            .spawn(move || self.serve())?;
        Ok(ServerHandle {
            acceptor,
            addr,
            tls,
            thread: Some(thread),
        })
    }
}

/// Stops a server that is serving on another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    acceptor: Arc<Acceptor>,
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
        self.acceptor.stop();
    }
}

/// A server running in the background. Dropping it shuts the server down.
pub struct ServerHandle {
    acceptor: Arc<Acceptor>,
    addr: ListenAddr,
    tls: bool,
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
    /// The TCP address the server listens on.
    ///
    /// # Panics
    ///
    /// If the server listens on a Unix socket: use
    /// [`target`](ServerHandle::target), which names either.
    pub fn local_addr(&self) -> SocketAddr {
        match self.addr.tcp() {
            Ok(addr) => addr,
            Err(e) => panic!("ServerHandle::local_addr: {e}"),
        }
    }

    /// What a client dials to reach this server: `http://IP:PORT`
    /// (`https://` with TLS), `unix:PATH` or `unix-abstract:NAME`.
    pub fn target(&self) -> String {
        self.addr.target(self.tls)
    }

    /// The server's plugins (the standard services find theirs here).
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    pub(crate) fn plugins(&self) -> &Plugins {
        &self.acceptor.shared().plugins
    }

    /// What the server is doing now: see [`ServerStats`].
    pub fn stats(&self) -> ServerStats {
        self.stats_handle().stats()
    }

    /// A handle that reads the server's [`ServerStats`] from any thread
    /// (for a metrics endpoint).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            acceptor: self.acceptor.clone(),
        }
    }

    /// Stops accepting, turns health checks NOT_SERVING, sends GOAWAY on
    /// every connection, lets in-flight calls finish (cancelling them after
    /// the grace period), and returns once every server thread has ended.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        self.acceptor.stop();
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

/// What a server is doing at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections being served.
    pub connections: usize,
    /// Calls open on them (from their request headers to their status).
    pub calls_in_flight: usize,
    /// Handlers holding a thread of their own: on the pool, and inline
    /// unary handlers that blocked (their connection moved on).
    pub handlers_busy: usize,
    /// Handler threads waiting for one (they exit after
    /// [`ServerBuilder::handler_idle_timeout`](crate::server::ServerBuilder::handler_idle_timeout)).
    pub handlers_idle: usize,
    /// Connections idle long enough to have given their thread up
    /// ([`ServerBuilder::park_idle_connections_after`](crate::server::ServerBuilder::park_idle_connections_after));
    /// counted in `connections` too.
    pub connections_parked: usize,
}

/// Reads a server's [`ServerStats`] from any thread; cheap to clone.
#[derive(Clone)]
pub struct StatsHandle {
    acceptor: Arc<Acceptor>,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle").finish_non_exhaustive()
    }
}

impl StatsHandle {
    /// The server's statistics now.
    pub fn stats(&self) -> ServerStats {
        let shared = self.acceptor.shared();
        let threads = shared.pool.threads();
        let idle = shared.pool.idle().min(threads);
        ServerStats {
            connections: self.acceptor.connections(),
            calls_in_flight: shared.calls.load(Ordering::Relaxed),
            handlers_busy: shared.handlers.in_use(),
            handlers_idle: idle,
            connections_parked: shared.parker.parked(),
        }
    }
}
