//! A channel's settings and their defaults (each has a setter on
//! [`ChannelBuilder`](crate::ChannelBuilder), which documents it).

use std::time::Duration;

use crate::client::balancer::Policy;
use crate::client::interceptor::Interceptors;
use crate::client::service_config::ServiceConfig;
use crate::rt::settings::ConnConfig;
use crate::wire::compression::Encoding;

/// Channel settings.
#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    /// What server and client connections share (HTTP/2, keepalive,
    /// message limits, connection thread stacks).
    pub(crate) conn: ConnConfig,
    pub(crate) connect_timeout: Duration,
    pub(crate) default_encoding: Encoding,
    pub(crate) authority: Option<String>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) interceptors: Interceptors,
    pub(crate) policy: Policy,
    /// The service name whose health each subchannel watches (client-side
    /// health checking, round_robin only).
    pub(crate) health_check_service: Option<String>,
    pub(crate) min_resolve_interval: Duration,
    /// The service config: per-method timeouts, wait-for-ready, message
    /// limits and retry policies, and retry throttling.
    pub(crate) service_config: Option<ServiceConfig>,
    /// How much of a streaming request a call keeps for retries, and all
    /// the channel's calls together (gRFC A6's buffer limits).
    pub(crate) retry_buffer_per_call: usize,
    pub(crate) retry_buffer_per_channel: usize,
    /// TLS settings; with an `https://` target and none given, the
    /// defaults ([`ClientTlsConfig::new`](crate::tls::ClientTlsConfig::new)).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTlsConfig>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            conn: ConnConfig::client(),
            connect_timeout: Duration::from_secs(20),
            default_encoding: Encoding::Identity,
            authority: None,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            interceptors: Interceptors::default(),
            policy: Policy::PickFirst,
            health_check_service: None,
            min_resolve_interval: Duration::from_secs(30),
            service_config: None,
            retry_buffer_per_call: 256 * 1024,
            retry_buffer_per_channel: 256 * 1024 * 1024,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
