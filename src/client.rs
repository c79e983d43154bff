//! The blocking gRPC client: [`Channel`] and [`CallOptions`].
//!
//! A [`Channel`] is one HTTP/2 connection to one server (made at once by
//! [`Channel::connect`], or on the first call by [`Channel::lazy`]), served
//! by its own thread. It is `Clone + Send + Sync`: share it (or a generated
//! client wrapping it) between threads, and their calls run concurrently as
//! multiplexed streams. If the connection is lost, the next call connects
//! again. Dropping the last clone closes the connection and ends its thread
//! once no call is using it.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;

use crate::call_state::CallState;
use crate::client_call::{CallCore, RequestSink, Streaming, UnaryCall};
use crate::client_conn::{ClientCmd, ClientConn, ConnSettings, StartCall};
use crate::codec;
use crate::compression::Encoding;
use crate::error::TransportError;
use crate::metadata::{Metadata, MetadataValue};
use crate::protocol::{self, RequestHead};
use crate::server::ServerContext;
use crate::status::Status;

/// Options for one call: metadata, timeout, compression.
///
/// ```
/// use std::time::Duration;
/// use grpc_blocking::{CallOptions, Metadata};
/// let mut md = Metadata::new();
/// md.insert("x-request-id", "42").unwrap();
/// let options = CallOptions::new().metadata(md).timeout(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    metadata: Metadata,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    encoding: Option<Encoding>,
}

impl CallOptions {
    /// Default options: no metadata, no timeout, the channel's compression.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Metadata to send with the request.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The call's timeout: sent to the server as `grpc-timeout` and enforced
    /// here; when it passes the call ends with `DEADLINE_EXCEEDED`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// An absolute deadline for the call (combined with
    /// [`CallOptions::timeout`], the earlier one wins).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Makes a call from inside a handler inherit the incoming call's
    /// deadline, so the whole chain of calls gives up together.
    pub fn inherit_deadline(mut self, ctx: &ServerContext) -> Self {
        if let Some(d) = ctx.deadline() {
            self.deadline = Some(self.deadline.map_or(d, |mine| mine.min(d)));
        }
        self
    }

    /// Copies the incoming call's metadata entries named in `names` into
    /// this call's metadata: context propagation (a call-id stack, a trace
    /// id) from a handler to the calls it makes.
    pub fn propagate_metadata(mut self, ctx: &ServerContext, names: &[&str]) -> Self {
        for (name, value) in ctx.metadata().iter() {
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                // Received metadata was validated on the way in.
                let _ = match value {
                    MetadataValue::Ascii(v) => self.metadata.insert(name, v),
                    MetadataValue::Binary(b) => self.metadata.insert_bin(name, b),
                };
            }
        }
        self
    }

    /// The time left for the call, from its timeout and deadline.
    fn effective_timeout(&self, now: Instant) -> Option<Duration> {
        let from_deadline = self.deadline.map(|d| d.saturating_duration_since(now));
        match (self.timeout, from_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Compresses this call's requests with `encoding` (overrides the
    /// channel's default).
    pub fn compression(mut self, encoding: Encoding) -> Self {
        self.encoding = Some(encoding);
        self
    }
}

#[derive(Debug, Clone)]
struct ChannelConfig {
    connect_timeout: Duration,
    max_receive_message_size: usize,
    max_send_message_size: usize,
    default_encoding: Encoding,
    authority: Option<String>,
    backoff_initial: Duration,
    backoff_max: Duration,
    settings: ConnSettings,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: Duration::from_secs(20),
            max_receive_message_size: 4 * 1024 * 1024,
            max_send_message_size: usize::MAX,
            default_encoding: Encoding::Identity,
            authority: None,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            settings: ConnSettings {
                stream_window: 1024 * 1024,
                connection_window: 4 * 1024 * 1024,
                max_send_buffer: 256 * 1024,
                max_header_list_size: 16 * 1024,
                stack_size: 256 * 1024,
                keepalive_interval: None,
                keepalive_timeout: Duration::from_secs(20),
                keepalive_without_calls: false,
            },
        }
    }
}

/// Where a channel connects.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` as given: where to connect.
    authority: String,
    /// What to send as `:authority` (the same, unless overridden).
    authority_header: String,
    scheme: &'static str,
}

fn parse_target(target: &str) -> Result<Target, TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUri {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = if let Some(rest) = target.strip_prefix("http://") {
        rest
    } else if target.starts_with("https://") {
        return Err(invalid("TLS (https) is not supported yet; use http://"));
    } else if target.contains("://") {
        return Err(invalid("the scheme must be http://"));
    } else {
        target
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected http://host:port"));
    }
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid("expected http://host:port with a numeric port"));
    }
    if http::uri::Authority::try_from(authority).is_err() {
        return Err(invalid("the host:port is not a valid authority"));
    }
    Ok(Target {
        authority: authority.to_owned(),
        authority_header: authority.to_owned(),
        scheme: "http",
    })
}

/// Builds a [`Channel`] with non-default settings.
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
}

impl ChannelBuilder {
    /// How long a TCP connect may take (default 20 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Largest response message accepted, after decompression (default
    /// 4 MiB). A larger one ends the call with `RESOURCE_EXHAUSTED`.
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.config.max_receive_message_size = bytes;
        self
    }

    /// Largest request message this client sends (default: unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.config.max_send_message_size = bytes;
        self
    }

    /// Largest response header block accepted, in bytes as HTTP/2 counts
    /// them (default 16 KiB); a response with larger headers or trailers
    /// fails its call.
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.config.settings.max_header_list_size = bytes;
        self
    }

    /// Compression for requests when a call does not choose (default
    /// identity, i.e. none).
    pub fn default_compression(mut self, encoding: Encoding) -> Self {
        self.config.default_encoding = encoding;
        self
    }

    /// The HTTP/2 flow-control window of each stream (default 1 MiB): how
    /// many response bytes the server may send ahead of the caller reading
    /// them. The connection window is kept at least 4 times larger.
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.config.settings.stream_window = bytes;
        self.config.settings.connection_window = self
            .config
            .settings
            .connection_window
            .max(bytes.saturating_mul(4));
        self
    }

    /// After a failed connect, calls fail at once (`UNAVAILABLE`, with the
    /// connect error) until the next attempt is due; the wait starts at
    /// `initial` and grows 1.6 times per failure up to `max` (defaults 1 s
    /// and 120 s, as gRPC's connection backoff).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max.max(initial);
        self
    }

    /// Sends an HTTP/2 PING every `interval` and treats the connection as
    /// dead (its calls end `UNAVAILABLE`) when one is not answered within
    /// `timeout` (default: off; 20 s when on). By default pings are only
    /// sent while calls are open; see
    /// [`ChannelBuilder::keepalive_without_calls`].
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.settings.keepalive_interval = interval;
        self.config.settings.keepalive_timeout = timeout;
        self
    }

    /// Whether keepalive pings go out on a connection with no call open
    /// (default false).
    pub fn keepalive_without_calls(mut self, permit: bool) -> Self {
        self.config.settings.keepalive_without_calls = permit;
        self
    }

    /// The `:authority` sent with every call instead of the target's
    /// `host:port` (for virtual hosting, or a test server's expected name).
    pub fn authority(mut self, authority: &str) -> Self {
        self.config.authority = Some(authority.to_owned());
        self
    }

    /// A channel that connects on its first call.
    pub fn lazy(self) -> Result<Channel, TransportError> {
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
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                target,
                config: self.config,
                conn: Mutex::new(None),
                backoff: Mutex::new(Backoff::default()),
            }),
        })
    }

    /// A channel connected now; fails if the server cannot be reached.
    pub fn connect(self) -> Result<Channel, TransportError> {
        let channel = self.lazy()?;
        channel.inner.connection()?;
        Ok(channel)
    }
}

struct ChannelInner {
    target: Target,
    config: ChannelConfig,
    conn: Mutex<Option<Arc<ClientConn>>>,
    backoff: Mutex<Backoff>,
}

/// Reconnection backoff (grpc/grpc `doc/connection-backoff.md`): after a
/// failed connect, calls fail fast with that error until the next attempt
/// is due; the delay grows by 1.6 up to the maximum, with 20% jitter.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl Backoff {
    fn failed(&mut self, config: &ChannelConfig, error: &TransportError) {
        self.failures = self.failures.saturating_add(1);
        let base = config.backoff_initial.as_secs_f64()
            * 1.6f64.powi(self.failures.saturating_sub(1).min(64) as i32);
        let capped = base.min(config.backoff_max.as_secs_f64());
        let jittered = capped * (0.8 + 0.4 * random_unit());
        self.next_attempt = Some(Instant::now() + Duration::from_secs_f64(jittered));
        self.last_error = Some(error.to_string());
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// A number in [0, 1) that differs between calls (for jitter only).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl ChannelInner {
    /// The live connection, connecting (again) if there is none.
    fn connection(&self) -> Result<Arc<ClientConn>, TransportError> {
        let mut slot = self.conn.lock();
        if let Some(c) = &*slot {
            if c.is_alive() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let mut backoff = self.backoff.lock();
        if let Some(at) = backoff.next_attempt {
            let now = Instant::now();
            if now < at {
                return Err(TransportError::Backoff {
                    target: self.target.authority.clone(),
                    retry_in: at - now,
                    last_error: backoff.last_error.clone().unwrap_or_default(),
                });
            }
        }
        let connected = connect_tcp(&self.target.authority, self.config.connect_timeout)
            .and_then(|stream| ClientConn::start(stream, &self.config.settings));
        match connected {
            Ok(conn) => {
                backoff.succeeded();
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                backoff.failed(&self.config, &e);
                Err(e)
            }
        }
    }
}

fn connect_tcp(authority: &str, timeout: Duration) -> Result<TcpStream, TransportError> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|source| TransportError::Resolve {
            target: authority.to_owned(),
            source,
        })?
        .collect();
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::ConnectTimeout {
                target: authority.to_owned(),
                timeout,
            });
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Some(TransportError::ConnectTimeout {
                    target: authority.to_owned(),
                    timeout,
                })
            }
            Err(source) => {
                last = Some(TransportError::Connect {
                    target: authority.to_owned(),
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| TransportError::Resolve {
        target: authority.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    }))
}

/// A connection to a gRPC server, shared by any number of threads.
///
/// Generated clients wrap a `Channel`; the methods here are what they call,
/// and can be used directly with a method path and prost message types.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target.authority)
            .finish_non_exhaustive()
    }
}

/// A stream opened on a connection thread.
pub(crate) struct Opened {
    pub conn: Arc<ClientConn>,
    pub key: u64,
    pub state: Arc<CallState>,
    pub events: crate::mailbox::Consumer<crate::client_conn::CallEvent>,
    pub encoding: Encoding,
}

/// A started call: its connection, key and shared state.
struct Started {
    conn: Arc<ClientConn>,
    key: u64,
    state: Arc<CallState>,
    core: CallCore,
    encoding: Encoding,
}

/// How a call whose whole request is known is started again when the
/// server never processed it (GOAWAY, REFUSED_STREAM, a connection that
/// died before the request left): gRPC's transparent retry.
pub(crate) struct RetryPlan {
    pub channel: Channel,
    pub path: &'static str,
    pub options: CallOptions,
    pub body: bytes::Bytes,
    pub attempts_left: u8,
}

/// Transparent retries of one call.
const TRANSPARENT_RETRIES: u8 = 2;

impl Channel {
    /// Connects to `target` (`http://host:port` or `host:port`) now.
    pub fn connect(target: &str) -> Result<Channel, TransportError> {
        Channel::builder(target).connect()
    }

    /// A channel to `target` that connects on its first call.
    pub fn lazy(target: &str) -> Result<Channel, TransportError> {
        Channel::builder(target).lazy()
    }

    /// A builder for a channel with non-default settings.
    pub fn builder(target: &str) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_owned(),
            config: ChannelConfig::default(),
        }
    }

    /// Starts a call whose request is `body` alone, retried transparently
    /// if the server never processed it.
    fn start_retryable(
        &self,
        path: &'static str,
        options: CallOptions,
        body: bytes::Bytes,
    ) -> CallCore {
        // Retries keep the first attempt's deadline.
        let mut options = options;
        if let Some(t) = options.effective_timeout(Instant::now()) {
            options.deadline = Some(Instant::now() + t);
            options.timeout = None;
        }
        match self.open(path, &options, Some(body.clone()), true) {
            Ok(opened) => CallCore::new(
                opened.conn,
                opened.key,
                opened.events,
                self.inner.config.max_receive_message_size,
                self.inner.config.settings.max_header_list_size as usize,
                Some(RetryPlan {
                    channel: self.clone(),
                    path,
                    options,
                    body,
                    attempts_left: TRANSPARENT_RETRIES,
                }),
            ),
            Err(status) => CallCore::failed(status),
        }
    }

    /// Opens a stream and wraps it for a caller.
    fn start(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<bytes::Bytes>,
        end: bool,
    ) -> Result<Started, Status> {
        let opened = self.open(path, options, body, end)?;
        let core = CallCore::new(
            opened.conn.clone(),
            opened.key,
            opened.events,
            self.inner.config.max_receive_message_size,
            self.inner.config.settings.max_header_list_size as usize,
            None,
        );
        Ok(Started {
            conn: opened.conn,
            key: opened.key,
            state: opened.state,
            core,
            encoding: opened.encoding,
        })
    }

    /// Opens a stream: queues the request headers (and `body`, if any) on
    /// the connection thread.
    pub(crate) fn open(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<bytes::Bytes>,
        end: bool,
    ) -> Result<Opened, Status> {
        let encoding = options
            .encoding
            .unwrap_or(self.inner.config.default_encoding);
        let now = Instant::now();
        let timeout = options.effective_timeout(now);
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Status::deadline_exceeded(
                "the call's deadline had passed before it started",
            ));
        }
        let request = protocol::request(&RequestHead {
            path,
            authority: &self.inner.target.authority_header,
            scheme: self.inner.target.scheme,
            metadata: &options.metadata,
            timeout,
            encoding,
        })?;
        let deadline = timeout.map(|t| now + t);
        let conn = self.inner.connection()?;
        let key = conn.next_key();
        let state = Arc::new(CallState::new());
        let (tx, rx) = crate::mailbox::mailbox();
        conn.send(ClientCmd::Start(Box::new(StartCall {
            key,
            request,
            body,
            end,
            events: tx,
            state: state.clone(),
            deadline,
        })));
        conn.wake();
        Ok(Opened {
            conn,
            key,
            state,
            events: rx,
            encoding,
        })
    }

    fn encode_for<Req: Message>(
        &self,
        request: &Req,
        options: &CallOptions,
    ) -> Result<bytes::Bytes, Status> {
        let encoding = options
            .encoding
            .unwrap_or(self.inner.config.default_encoding);
        codec::encode(request, encoding, self.inner.config.max_send_message_size)
    }

    /// Starts a unary call; returns at once.
    pub fn unary<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> UnaryCall<Resp>
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
    {
        match self.encode_for(&request, &options) {
            Ok(body) => UnaryCall::new(self.start_retryable(path, options, body)),
            Err(status) => UnaryCall::new(CallCore::failed(status)),
        }
    }

    /// Starts a server-streaming call; returns the response stream at once.
    pub fn server_streaming<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Streaming<Resp>
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
    {
        match self.encode_for(&request, &options) {
            Ok(body) => Streaming::new(self.start_retryable(path, options, body)),
            Err(status) => Streaming::new(CallCore::failed(status)),
        }
    }

    fn sender<Req: Message>(
        &self,
        path: &'static str,
        options: &CallOptions,
    ) -> (RequestSink<Req>, CallCore) {
        match self.start(path, options, None, false) {
            Ok(s) => (
                RequestSink::new(
                    Some(s.conn),
                    s.key,
                    s.state,
                    s.encoding,
                    self.inner.config.max_send_message_size,
                    None,
                ),
                s.core,
            ),
            Err(status) => (
                RequestSink::new(
                    None,
                    0,
                    Arc::new(CallState::new()),
                    Encoding::Identity,
                    0,
                    Some(status.clone()),
                ),
                CallCore::failed(status),
            ),
        }
    }

    /// Starts a client-streaming call and returns a sink for its requests
    /// and the handle for its response.
    pub fn client_streaming_sender<Req, Resp>(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> (RequestSink<Req>, UnaryCall<Resp>)
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
    {
        let (sink, core) = self.sender(path, &options);
        (sink, UnaryCall::new(core))
    }

    /// Runs a client-streaming call, sending `requests` from the calling
    /// thread, and waits for the response.
    pub fn client_streaming_blocking<Req, Resp, I>(
        &self,
        path: &'static str,
        requests: I,
        options: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
        I: IntoIterator<Item = Req>,
    {
        let (mut sink, call) = self.client_streaming_sender::<Req, Resp>(path, options);
        for request in requests {
            if sink.send(request).is_err() {
                // The call is over; its status says why.
                break;
            }
        }
        sink.finish();
        call.wait()
    }

    /// Starts a client-streaming call whose requests a helper thread takes
    /// from `requests`; returns the response handle at once.
    pub fn client_streaming<Req, Resp, I>(
        &self,
        path: &'static str,
        requests: I,
        options: CallOptions,
    ) -> UnaryCall<Resp>
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
        I: IntoIterator<Item = Req> + Send + 'static,
        I::IntoIter: Send,
    {
        let (sink, call) = self.client_streaming_sender::<Req, Resp>(path, options);
        feed(sink, requests);
        call
    }

    /// Starts a bidirectional-streaming call and returns a sink for its
    /// requests and the response stream; one thread may interleave sends
    /// and receives.
    pub fn bidi_streaming_sender<Req, Resp>(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> (RequestSink<Req>, Streaming<Resp>)
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
    {
        let (sink, core) = self.sender(path, &options);
        (sink, Streaming::new(core))
    }

    /// Starts a bidirectional-streaming call whose requests a helper thread
    /// takes from `requests`; returns the response stream at once.
    pub fn bidi_streaming<Req, Resp, I>(
        &self,
        path: &'static str,
        requests: I,
        options: CallOptions,
    ) -> Streaming<Resp>
    where
        Req: Message + 'static,
        Resp: Message + Default + 'static,
        I: IntoIterator<Item = Req> + Send + 'static,
        I::IntoIter: Send,
    {
        let (sink, stream) = self.bidi_streaming_sender::<Req, Resp>(path, options);
        feed(sink, requests);
        stream
    }
}

/// Sends `requests` into `sink` from a helper thread, then half-closes.
fn feed<Req, I>(mut sink: RequestSink<Req>, requests: I)
where
    Req: Message + 'static,
    I: IntoIterator<Item = Req> + Send + 'static,
    I::IntoIter: Send,
{
    let iter = requests.into_iter();
    let spawned = std::thread::Builder::new()
        .name("grpc-request-feeder".into())
        // Encoding (and compressing) happens here: flate2's deflate state is
        // built on the stack, so this thread gets a normal 2 MiB stack.
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            for request in iter {
                if sink.send_ref(&request, true).is_err() {
                    break;
                }
            }
            sink.finish();
        });
    if let Err(e) = spawned {
        // The sink was moved into the closure and dropped with it, which
        // half-closes the request; the server sees an empty stream.
        log::error!("could not start a request feeder thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("http://localhost:50051").unwrap().authority,
            "localhost:50051"
        );
        assert_eq!(
            parse_target("127.0.0.1:1").unwrap().authority,
            "127.0.0.1:1"
        );
        assert_eq!(
            parse_target("http://[::1]:8080/").unwrap().authority,
            "[::1]:8080"
        );
        for bad in [
            "",
            "http://",
            "localhost",
            "http://host:port",
            "ftp://h:1",
            "http://h:1/x",
            "https://h:1",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(
                matches!(err, TransportError::InvalidUri { .. }),
                "{bad}: {err}"
            );
        }
    }
}
