//! What every connection of a server shares: its services, its error
//! mappings, its settings and its handler pool.

use std::sync::Arc;

use crate::server::config::ServerConfig;
use crate::server::error_policy::ErrorPolicy;
use crate::server::pool::Pool;
use crate::server::service::Registry;

/// The parts of a server its connection threads use.
pub(crate) struct ServerShared {
    pub(crate) registry: Registry,
    pub(crate) errors: Arc<ErrorPolicy>,
    pub(crate) config: ServerConfig,
    pub(crate) pool: Pool,
    /// The rustls configuration, when the server speaks TLS.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// What handlers see as the peer of a Unix socket connection: the
    /// socket's path.
    pub(crate) unix_name: Option<String>,
}

impl ServerShared {
    pub(crate) fn new(
        registry: Registry,
        config: ServerConfig,
        errors: ErrorPolicy,
        unix_name: Option<String>,
    ) -> std::io::Result<Self> {
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
        Ok(ServerShared {
            registry,
            errors: Arc::new(errors),
            config,
            pool,
            #[cfg(feature = "tls")]
            tls,
            unix_name,
        })
    }
}
