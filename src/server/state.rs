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
}

impl ServerShared {
    pub(crate) fn new(registry: Registry, config: ServerConfig, errors: ErrorPolicy) -> Self {
        let pool = Pool::new(
            config.max_concurrent_handlers,
            config.handler_stack_size,
            config.handler_idle_timeout,
        );
        ServerShared {
            registry,
            errors: Arc::new(errors),
            config,
            pool,
        }
    }
}
