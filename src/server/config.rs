//! A server's settings and their defaults (each has a setter on
//! [`ServerBuilder`](crate::server::ServerBuilder), which documents it).

use std::time::Duration;

use crate::rt::settings::ConnConfig;

/// Where a server runs its unary handlers (see
/// [`ServerBuilder::unary_handlers`](crate::server::ServerBuilder::unary_handlers)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnaryHandlers {
    /// On the connection's own thread, once the request has arrived; if
    /// the handler has not returned within
    /// [`inline_time_limit`](crate::server::ServerBuilder::inline_time_limit)
    /// (it blocks), another thread takes the connection over, so the
    /// connection's other calls go on. Fast handlers cost no thread
    /// hand-off; blocking ones stay safe. Server-streaming handlers (one
    /// request, then replies) run this way too: one that waits for its
    /// client to take replies is a handler that blocks. So do
    /// client-streaming handlers whose whole request stream arrives within
    /// the inline time limit (and under half the stream's window and its
    /// share of the connection's); the others start on the handler pool at
    /// that point. The default.
    #[default]
    Adaptive,
    /// On the connection's own thread, always: the fastest, for handlers
    /// that never block (a handler that blocks stalls every call on its
    /// connection).
    Inline,
    /// On the handler pool's threads: two thread hand-offs per call.
    Workers,
}

/// Server settings.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// What server and client connections share (HTTP/2, keepalive,
    /// message limits, connection thread stacks).
    pub(crate) conn: ConnConfig,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_concurrent_handlers: usize,
    /// `None`: half of `max_concurrent_handlers`.
    pub(crate) max_handlers_per_peer: Option<usize>,
    /// `None`: a quarter of `max_connections`.
    pub(crate) max_connections_per_peer: Option<usize>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_pending_accept_reset_streams: usize,
    pub(crate) max_local_error_reset_streams: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) max_connection_age_grace: Duration,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) handler_stack_size: usize,
    pub(crate) handler_idle_timeout: Duration,
    pub(crate) unary_handlers: UnaryHandlers,
    /// How long an adaptive inline handler runs before its connection is
    /// handed to another thread.
    pub(crate) inline_time_limit: Duration,
    /// TLS settings; `None` serves plaintext (h2c).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            conn: ConnConfig::server(),
            max_concurrent_streams: 1000,
            max_concurrent_handlers: 1024,
            max_handlers_per_peer: None,
            max_connections_per_peer: None,
            handshake_timeout: Duration::from_secs(10),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            idle_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            handler_stack_size: 2 * 1024 * 1024,
            handler_idle_timeout: Duration::from_secs(60),
            unary_handlers: UnaryHandlers::Adaptive,
            inline_time_limit: Duration::from_millis(1),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The handler threads one peer may hold at once: by default half the
    /// server's, but at least 64 (and at most all of them).
    pub(crate) fn handlers_per_peer(&self) -> usize {
        let max = self.max_concurrent_handlers;
        self.max_handlers_per_peer
            .unwrap_or((max / 2).max(64).min(max))
            .max(1)
    }

    /// The connections one peer may hold at once: by default a quarter of
    /// the server's, but at least 256 (and at most all of them).
    pub(crate) fn connections_per_peer(&self) -> usize {
        let max = self.max_connections;
        self.max_connections_per_peer
            .unwrap_or((max / 4).max(256).min(max))
            .max(1)
    }

    /// The stack of a connection thread: a handler's when unary handlers
    /// run on connection threads (a handler may need as much stack as on a
    /// worker; untouched stack costs address space, not memory).
    pub(crate) fn conn_thread_stack(&self) -> usize {
        match self.unary_handlers {
            UnaryHandlers::Workers => self.conn.stack_size,
            UnaryHandlers::Adaptive | UnaryHandlers::Inline => {
                self.conn.stack_size.max(self.handler_stack_size)
            }
        }
    }

    /// An h2 server builder with these settings.
    pub(crate) fn h2(&self) -> h2::server::Builder {
        let mut b = self.conn.http2.server();
        b.max_concurrent_streams(self.max_concurrent_streams)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(self.max_local_error_reset_streams));
        b
    }
}
