//! [`ChannelBuilder`]: a channel's target and settings, then
//! [`connect`](ChannelBuilder::connect) or
//! [`connect_lazy`](ChannelBuilder::connect_lazy).

use std::time::Duration;

use crate::client::channel::Channel;
use std::sync::Arc;

use crate::client::balancer::Policy;
use crate::client::config::ChannelConfig;
use crate::client::interceptor::Interceptor;
use crate::client::resolver::Resolver;
use crate::client::service_config::{LoadBalancingPolicy, ServiceConfig};
use crate::client::target::{parse_target, IntoTarget};
use crate::error::TransportError;
use crate::rt::settings::connection_setters;
use crate::wire::compression::Encoding;

/// Builds a [`Channel`] with non-default settings.
///
/// Every setting has a setter here, which gives its default.
///
/// ```no_run
/// use std::time::Duration;
/// use grpc_blocking::{Channel, Encoding};
/// let channel = Channel::builder("http://127.0.0.1:50051")
///     .connect_timeout(Duration::from_secs(3))
///     .default_compression(Encoding::Gzip)
///     .keepalive_interval(Some(Duration::from_secs(30)))
///     .connect()?;
/// # Ok::<(), grpc_blocking::TransportError>(())
/// ```
#[derive(Clone)]
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
    resolver: Option<Arc<dyn Resolver>>,
}

impl std::fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("config", &self.config)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl Channel {
    /// Connects to `target` (`"http://host:port"`, `"host:port"`, or a
    /// `SocketAddr`) now; fails if the server cannot be reached.
    pub fn connect(target: impl IntoTarget) -> Result<Channel, TransportError> {
        Channel::builder(target).connect()
    }

    /// A channel to `target` that connects on its first call, so that a
    /// server that is not up yet is no error here.
    pub fn connect_lazy(target: impl IntoTarget) -> Result<Channel, TransportError> {
        Channel::builder(target).connect_lazy()
    }

    /// A builder for a channel to `target` with non-default settings.
    pub fn builder(target: impl IntoTarget) -> ChannelBuilder {
        ChannelBuilder {
            target: target.into_target(),
            config: ChannelConfig::default(),
            resolver: None,
        }
    }
}

impl ChannelBuilder {
    connection_setters!(config.conn);

    /// Adds an interceptor: it runs around every call of the channel (and
    /// of the generated clients over it), after the ones added before. See
    /// [`Interceptor`](crate::client::Interceptor).
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.config.interceptors.push(interceptor);
        self
    }

    /// How long connecting may take: the TCP (or Unix socket) connect and,
    /// over TLS, the handshake (default 20 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Compression for requests when a call does not choose (default
    /// identity, i.e. none).
    pub fn default_compression(mut self, encoding: Encoding) -> Self {
        self.config.default_encoding = encoding;
        self
    }

    /// After a failed connect, calls fail at once (`UNAVAILABLE`, with the
    /// connect error) until the next attempt is due. The first wait is this
    /// long (default 1 s) and grows 1.6 times per failure, with 20% jitter,
    /// up to [`reconnect_backoff_max`](Self::reconnect_backoff_max), as
    /// gRPC's connection backoff does.
    pub fn reconnect_backoff_initial(mut self, initial: Duration) -> Self {
        self.config.backoff_initial = initial;
        self
    }

    /// The longest wait between connect attempts (default 120 s; never less
    /// than the initial wait).
    pub fn reconnect_backoff_max(mut self, max: Duration) -> Self {
        self.config.backoff_max = max;
        self
    }

    /// Spreads calls over every backend address, one connection each, in
    /// turn (gRPC's `round_robin`), instead of using one connection to the
    /// first address that answers (`pick_first`, the default).
    pub fn round_robin(mut self) -> Self {
        self.config.policy = Policy::RoundRobin;
        self
    }

    /// Uses one connection, to the first address that answers, and the
    /// next on failure (gRPC's `pick_first`: the default).
    pub fn pick_first(mut self) -> Self {
        self.config.policy = Policy::PickFirst;
        self
    }

    /// Client-side health checking (with [`round_robin`](Self::round_robin)):
    /// every backend's connection watches `grpc.health.v1.Health` for
    /// `service` (`""` for the server as a whole), and only backends that
    /// say SERVING get calls. A backend without a health service counts as
    /// serving.
    pub fn health_check(mut self, service: impl Into<String>) -> Self {
        self.config.health_check_service = Some(service.into());
        self
    }

    /// Takes the backends' addresses from `resolver` instead of resolving
    /// the target (which still gives the `:authority` and the TLS server
    /// name). See [`Resolver`] and
    /// [`ManualResolver`](crate::client::ManualResolver).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// The service config (see [`ServiceConfig`]): the load-balancing
    /// policy, client-side health checking, and per method a timeout,
    /// wait-for-ready, message size limits and a retry policy, with retry
    /// throttling. Its load-balancing policy and health checking win over
    /// [`round_robin`](Self::round_robin) and
    /// [`health_check`](Self::health_check).
    ///
    /// ```
    /// use grpc_blocking::client::ServiceConfig;
    /// use grpc_blocking::Channel;
    ///
    /// let config = ServiceConfig::from_json(r#"{
    ///     "loadBalancingConfig": [{"round_robin": {}}],
    ///     "methodConfig": [{
    ///         "name": [{"service": "nameko.example"}],
    ///         "timeout": "5s",
    ///         "retryPolicy": {
    ///             "maxAttempts": 3,
    ///             "initialBackoff": "0.1s",
    ///             "maxBackoff": "1s",
    ///             "backoffMultiplier": 2,
    ///             "retryableStatusCodes": ["UNAVAILABLE"]
    ///         }
    ///     }],
    ///     "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
    /// }"#)?;
    /// let channel = Channel::builder("dns:///localhost:50051")
    ///     .service_config(config)
    ///     .connect_lazy()?;
    /// # drop(channel);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn service_config(mut self, config: ServiceConfig) -> Self {
        self.config.service_config = Some(config);
        self
    }

    /// How many bytes of a streaming request (client or bidi streaming) a
    /// call with a retry policy keeps to replay on a retry (default 256
    /// KiB), and all the channel's calls together (default 256 MiB).
    /// Beyond either, the call is no longer retried.
    pub fn retry_buffer_size(mut self, per_call: usize, per_channel: usize) -> Self {
        self.config.retry_buffer_per_call = per_call;
        self.config.retry_buffer_per_channel = per_channel;
        self
    }

    /// The shortest time between two resolutions asked for by lost
    /// connections or failed connects (default 30 s). A resolver's own
    /// [`ResolveNow`](crate::client::ResolveNow) is not limited.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.config.min_resolve_interval = interval;
        self
    }

    /// The `:authority` sent with every call instead of the target's
    /// `host:port` (for virtual hosting, or a test server's expected name).
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.config.authority = Some(authority.into());
        self
    }

    /// TLS settings (the `tls` feature): the roots to trust, the server
    /// name to expect, a client identity for mutual TLS. Needs an
    /// `https://` target (or a Unix socket); an `https://` target without
    /// them trusts Mozilla's roots and expects the target's host.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(self) -> Result<Channel, TransportError> {
        let mut target = parse_target(&self.target)?;
        let invalid = |reason: &str| TransportError::InvalidUri {
            target: self.target.clone(),
            reason: reason.to_owned(),
        };
        #[cfg(feature = "tls")]
        {
            if self.config.tls.is_some() && !target.tls {
                if target.scheme_given {
                    return Err(invalid(
                        "TLS settings were given for a plaintext target: use https://",
                    ));
                }
                target.tls = true;
            }
            if let Some(name) = self
                .config
                .tls
                .as_ref()
                .and_then(|t| t.server_name_override())
            {
                target.host = name.to_owned();
                target.authority_header = name.to_owned();
            }
        }
        #[cfg(not(feature = "tls"))]
        if target.tls {
            return Err(invalid(
                "https:// needs grpc-blocking's `tls` feature (features = [\"tls\"])",
            ));
        }
        if let Some(authority) = &self.config.authority {
            if http::uri::Authority::try_from(authority.as_str()).is_err() {
                return Err(TransportError::InvalidUri {
                    target: authority.clone(),
                    reason: "not a valid :authority".into(),
                });
            }
            target.authority_header = authority.clone();
        }
        let mut config = self.config;
        config.backoff_max = config.backoff_max.max(config.backoff_initial);
        if let Some(service_config) = &config.service_config {
            match service_config.load_balancing() {
                Some(LoadBalancingPolicy::RoundRobin) => config.policy = Policy::RoundRobin,
                Some(LoadBalancingPolicy::PickFirst) => config.policy = Policy::PickFirst,
                None => {}
            }
            if let Some(service) = service_config.health_check_service() {
                config.health_check_service = Some(service.to_owned());
            }
        }
        Channel::new(target, config, self.resolver)
    }

    /// A channel connected now; fails if the server cannot be reached.
    pub fn connect(self) -> Result<Channel, TransportError> {
        let channel = self.connect_lazy()?;
        channel.connect_now()?;
        Ok(channel)
    }
}
