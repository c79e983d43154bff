//! What every connection of a server shares: its services, its error
//! mappings, interceptors and plugins, its settings, its handler pool, and
//! the counts its [`ServerStats`](crate::server::ServerStats) report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::rt::parking::Parker;
use crate::server::config::ServerConfig;
use crate::server::error_policy::ErrorPolicy;
use crate::server::handoff::Handoff;
use crate::server::interceptor::Interceptor;
use crate::server::limits::{ConnectionBudget, HandlerBudget};
use crate::server::plugin::Plugins;
use crate::server::pool::Pool;
use crate::server::service::Registry;

/// What a builder hands a server.
pub(crate) struct Setup {
    pub(crate) registry: Registry,
    pub(crate) config: ServerConfig,
    pub(crate) errors: ErrorPolicy,
    pub(crate) interceptors: Arc<[Arc<dyn Interceptor>]>,
    pub(crate) plugins: Plugins,
}

/// The parts of a server its connection threads use.
pub(crate) struct ServerShared {
    pub(crate) registry: Registry,
    pub(crate) errors: Arc<ErrorPolicy>,
    /// The server-wide interceptors, in order.
    pub(crate) interceptors: Arc<[Arc<dyn Interceptor>]>,
    pub(crate) plugins: Plugins,
    pub(crate) config: ServerConfig,
    pub(crate) pool: Pool,
    /// Calls (streams) open on all connections.
    pub(crate) calls: Arc<AtomicUsize>,
    /// Connections open.
    pub(crate) connections: AtomicUsize,
    /// Hands connections whose inline handler blocks to new threads.
    pub(crate) handoff: Arc<Handoff>,
    /// Holds idle connections without their threads.
    pub(crate) parker: Parker,
    /// Handler threads, in all and per peer.
    pub(crate) handlers: Arc<HandlerBudget>,
    /// Connections per peer.
    pub(crate) peer_connections: Arc<ConnectionBudget>,
    /// The rustls configuration, when the server speaks TLS.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// What handlers see as the peer of a Unix socket connection: the
    /// socket's path.
    pub(crate) unix_name: Option<String>,
}

impl ServerShared {
    pub(crate) fn new(setup: Setup, unix_name: Option<String>) -> std::io::Result<Self> {
        let Setup {
            registry,
            config,
            errors,
            interceptors,
            plugins,
        } = setup;
        let (config_limit, config_stack) = (config.inline_time_limit, config.conn_thread_stack());
        let pool = Pool::new(
            config.max_concurrent_handlers,
            config.handler_stack_size,
            config.handler_idle_timeout,
        );
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(tls) => Some(
                tls.build()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let handlers =
            HandlerBudget::new(config.max_concurrent_handlers, config.handlers_per_peer());
        let peer_connections = ConnectionBudget::new(config.connections_per_peer());
        Ok(ServerShared {
            registry,
            errors: Arc::new(errors),
            interceptors,
            plugins,
            config,
            pool,
            calls: Arc::default(),
            connections: AtomicUsize::new(0),
            handoff: Handoff::new(config_limit, config_stack),
            parker: Parker::new("grpc-parker", "grpc-conn-pool", config_stack)?,
            handlers,
            peer_connections,
            #[cfg(feature = "tls")]
            tls,
            unix_name,
        })
    }
}

/// Counts a call as open while it lives.
pub(crate) struct OpenCall(Arc<AtomicUsize>);

impl OpenCall {
    pub(crate) fn new(calls: &Arc<AtomicUsize>) -> Self {
        calls.fetch_add(1, Ordering::Relaxed);
        OpenCall(calls.clone())
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
