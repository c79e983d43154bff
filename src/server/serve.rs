//! A bound [`Server`], serving on the calling thread or in the background,
//! and the handles that shut it down.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::server::acceptor::Acceptor;
use crate::server::config::ServerConfig;
use crate::server::error_policy::ErrorPolicy;
use crate::server::service::Registry;
use crate::server::state::ServerShared;

/// A bound gRPC server, not yet serving: [`serve`](Server::serve) on this
/// thread, or [`spawn`](Server::spawn) a background thread.
pub struct Server {
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    pub(crate) fn new(
        listener: TcpListener,
        registry: Registry,
        config: ServerConfig,
        errors: ErrorPolicy,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let shared = ServerShared::new(registry, config, errors);
        Ok(Server {
            listener,
            acceptor: Arc::new(Acceptor::new(shared)?),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
        let Server { listener, acceptor } = self;
        let result = acceptor.run(&listener);
        // New connections are refused from here on (not left in the
        // backlog while in-flight calls drain).
        drop(listener);
        acceptor.drain();
        result
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let acceptor = self.acceptor.clone();
        let thread = std::thread::Builder::new()
            .name("grpc-acceptor".into())
            .stack_size(128 * 1024)
            .spawn(move || self.serve())?;
        Ok(ServerHandle {
            acceptor,
            addr,
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
