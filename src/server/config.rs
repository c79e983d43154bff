//! A server's settings and their defaults (each has a setter on
//! [`ServerBuilder`](crate::server::ServerBuilder), which documents it).

use std::time::Duration;

use crate::rt::settings::ConnConfig;

/// Server settings.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// What server and client connections share (HTTP/2, keepalive,
    /// message limits, connection thread stacks).
    pub(crate) conn: ConnConfig,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_concurrent_handlers: usize,
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
    pub(crate) inline_unary: bool,
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
            inline_unary: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerConfig {
    /// An h2 server builder with these settings.
    pub(crate) fn h2(&self) -> h2::server::Builder {
        let mut b = self.conn.http2.server();
        b.max_concurrent_streams(self.max_concurrent_streams)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(self.max_local_error_reset_streams));
        b
    }
}
