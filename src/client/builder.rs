//! [`ChannelBuilder`]: a channel's target and settings, then
//! [`connect`](ChannelBuilder::connect) or
//! [`connect_lazy`](ChannelBuilder::connect_lazy).

use std::time::Duration;

use crate::client::channel::Channel;
use crate::client::config::ChannelConfig;
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
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
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
        }
    }
}

impl ChannelBuilder {
    connection_setters!(config.conn);

    /// How long a TCP connect may take (default 20 s).
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

    /// The `:authority` sent with every call instead of the target's
    /// `host:port` (for virtual hosting, or a test server's expected name).
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.config.authority = Some(authority.into());
        self
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(self) -> Result<Channel, TransportError> {
        let mut target = parse_target(&self.target)?;
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
        Ok(Channel::new(target, config))
    }

    /// A channel connected now; fails if the server cannot be reached.
    pub fn connect(self) -> Result<Channel, TransportError> {
        let channel = self.connect_lazy()?;
        channel.connect_now()?;
        Ok(channel)
    }
}
