//! [`Channel`]: one HTTP/2 connection to one server, shared by any number
//! of threads, and the calls of the four kinds made on it.
//!
//! A channel is `Clone + Send + Sync`: share it (or a generated client
//! wrapping it) between threads, and their calls run concurrently as
//! multiplexed streams. If the connection is lost, the next call connects
//! again (after the reconnect backoff). Dropping the last clone closes the
//! connection and ends its thread once no call is using it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;

use std::time::Duration;

use crate::client::balancer::{Balancer, BalancerConfig, ConnectivityState, Pick, SubchannelInfo};
use crate::client::call::{CallCore, Streaming, UnaryCall};
use crate::client::config::ChannelConfig;
use crate::client::interceptor::Hooks;
use crate::client::link::{ClientConn, Opened, RequestEnd};
use crate::client::options::CallOptions;
use crate::client::resolver::{Address, DnsResolver, Resolver, StaticResolver};
use crate::client::retry::{PolicyRetry, Reopen, Replay, RetryPlan};
use crate::client::service_config::RetryThrottle;
use crate::client::sink::RequestSink;
use crate::client::subchannel::{Dialer, Shared};
use crate::client::target::{Dial, Target};
use crate::error::{clone_transport_error, TransportError};
use crate::rt::kept_buffers;
use crate::rt::reader::Credit;
use crate::status::Status;
use crate::wire::codec::Compress;
use crate::wire::compression::Encoding;
use crate::wire::headers::{self, RequestHead};

/// A connection to a gRPC server, shared by any number of threads.
///
/// Generated clients wrap a `Channel`; the methods here are what they call,
/// and can be used directly with a method path and prost message types.
/// Each kind of call has a blocking form, and a form that starts the call
/// and returns a handle to it at once.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target().describe())
            .finish_non_exhaustive()
    }
}

struct ChannelInner {
    shared: Arc<Shared>,
    /// The service config's retry throttling, shared by every call.
    throttle: Option<Arc<RetryThrottle>>,
    /// Bytes every call keeps for retries, together.
    retry_buffered: Arc<AtomicUsize>,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // The last clone is gone: connections close once their calls end.
        self.shared.shut_down();
    }
}

impl ChannelInner {
    fn config(&self) -> &ChannelConfig {
        &self.shared.dialer().config
    }

    fn target(&self) -> &Target {
        &self.shared.dialer().target
    }

    /// A connection for a new call: picked by the load-balancing policy,
    /// waiting while the channel connects (and, with `wait_for_ready`,
    /// while it fails) up to `deadline`.
    fn pick(
        &self,
        wait_for_ready: bool,
        deadline: Option<Instant>,
    ) -> Result<Arc<ClientConn>, Status> {
        let mut state = self.shared.lock();
        // Whether this call waited for a connect: if that fails, the call
        // fails with the connect's own error.
        let mut waited = false;
        loop {
            let now = Instant::now();
            state.balancer.on_timer(now);
            let pick = state.balancer.pick(now);
            // Whatever the pick started (a connect, a resolution) runs now.
            self.shared.settle_keep(&mut state);
            let wait_until = match pick {
                Pick::Ready(id) => match state.conns.get(&id) {
                    Some((attempt, conn)) if conn.is_alive() => return Ok(conn.clone()),
                    Some((attempt, _)) => {
                        // Down, and its report not in yet: count it lost.
                        let attempt = *attempt;
                        state.balancer.on_lost(id, attempt, now);
                        self.shared.settle_keep(&mut state);
                        continue;
                    }
                    None => {
                        // Connected this instant, not registered yet.
                        Some(now + Duration::from_millis(1))
                    }
                },
                Pick::Queue => {
                    waited = true;
                    None
                }
                Pick::Fail(status) if !wait_for_ready => {
                    return Err(match state.balancer.last_error() {
                        Some(last) if waited => last.clone(),
                        _ => status,
                    })
                }
                Pick::Fail(_) => state.balancer.retry_at(),
            };
            let until = match (wait_until, deadline) {
                (Some(a), Some(d)) => Some(a.min(d)),
                (a, d) => a.or(d),
            };
            if deadline.is_some_and(|d| now >= d) {
                return Err(Status::deadline_exceeded(
                    "the call's deadline passed while waiting for a connection",
                ));
            }
            self.shared.wait(&mut state, until);
        }
    }

    fn encoding(&self, options: &CallOptions) -> Encoding {
        options.encoding.unwrap_or(self.config().default_encoding)
    }

    /// Opens a stream: queues the request headers (and `body`, if any) on
    /// a connection the policy picks.
    fn open(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<Bytes>,
        end: RequestEnd,
        credit: Credit,
    ) -> Result<Opened, Status> {
        let now = Instant::now();
        let deadline = options.deadline_from(now);
        if deadline.is_some_and(|d| d <= now) {
            return Err(Status::deadline_exceeded(
                "the call's deadline had passed before it started",
            ));
        }
        let conn = self.pick(options.wait_for_ready.unwrap_or(false), deadline)?;
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Status::deadline_exceeded(
                "the call's deadline passed while waiting for a connection",
            ));
        }
        let target = self.target();
        let request = headers::request(&RequestHead {
            path,
            authority: &target.authority_header,
            scheme: target.scheme(target.tls),
            metadata: &options.metadata,
            timeout,
            encoding: self.encoding(options),
            previous_attempts: options.previous_attempts,
        })?;
        Ok(conn.open(request, body, end, deadline, credit))
    }

    fn core(
        &self,
        opened: Opened,
        limits: &Limits,
        retry: Option<RetryPlan>,
        hooks: Option<Box<Hooks>>,
    ) -> CallCore {
        CallCore::new(
            opened,
            limits.max_receive,
            self.config().conn.http2.max_header_list_size as usize,
            retry,
            hooks,
        )
    }

    /// A call's options and limits once its method's service config is
    /// applied, and its retry policy.
    fn method_setup(
        &self,
        path: &str,
        options: CallOptions,
        now: Instant,
    ) -> (CallOptions, Limits, Option<PolicyRetry>) {
        let config = self.config();
        let mut limits = Limits {
            max_send: config.conn.max_send_message_size,
            max_receive: config.conn.max_receive_message_size,
        };
        let Some(method) = config.service_config.as_ref().and_then(|c| c.method(path)) else {
            return (options, limits, None);
        };
        if let Some(n) = method.max_request_message_bytes {
            limits.max_send = limits.max_send.min(n as usize);
        }
        if let Some(n) = method.max_response_message_bytes {
            limits.max_receive = limits.max_receive.min(n as usize);
        }
        let retry = method
            .retry_policy
            .clone()
            .map(|policy| PolicyRetry::new(policy, self.throttle.clone()));
        (options.with_method_config(method, now), limits, retry)
    }
}

/// A call's message size limits.
struct Limits {
    max_send: usize,
    max_receive: usize,
}

/// How many response messages a method has.
#[derive(Debug, Clone, Copy)]
enum Responses {
    /// One (unary and client-streaming methods): the caller takes it
    /// whole, so the connection returns its credit as it arrives.
    One,
    /// Any number (server-streaming and bidi methods): the caller returns
    /// the credit as it takes each message.
    Many,
}

impl Responses {
    /// How the response is credited, on a connection that gives streams
    /// `stream_window` bytes.
    fn credit(self, limits: &Limits, stream_window: u32) -> Credit {
        match self {
            Responses::One => Credit::on_arrival(limits.max_receive),
            Responses::Many => Credit::by_reader(stream_window),
        }
    }
}

impl Reopen for ChannelInner {
    fn reopen(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<Bytes>,
        previous_attempts: u32,
        credit: Credit,
    ) -> Result<Opened, Status> {
        let end = if body.is_some() {
            RequestEnd::Now
        } else {
            RequestEnd::Later
        };
        let mut options = options.clone();
        options.previous_attempts = previous_attempts;
        self.open(path, &options, body, end, credit)
    }
}

impl Channel {
    pub(crate) fn new(
        target: Target,
        config: ChannelConfig,
        resolver: Option<Arc<dyn Resolver>>,
    ) -> Result<Channel, TransportError> {
        #[cfg(feature = "tls")]
        let tls = if target.tls {
            let settings = config.tls.clone().unwrap_or_default();
            Some(settings.build().map_err(|e| TransportError::Tls {
                target: target.describe(),
                reason: e.to_string(),
            })?)
        } else {
            None
        };
        let resolver = resolver.unwrap_or_else(|| match &target.dial {
            Dial::Tcp(authority) => Arc::new(DnsResolver {
                authority: authority.clone(),
            }),
            Dial::Static(list) => Arc::new(StaticResolver(list.clone())),
            Dial::Unix(addr) => Arc::new(StaticResolver(vec![Address::from(addr.clone())])),
        });
        let balancer = Balancer::new(BalancerConfig {
            policy: config.policy,
            health_checking: config.health_check_service.is_some(),
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
            min_resolve_interval: config.min_resolve_interval,
            target: target.describe(),
        });
        let throttle = config
            .service_config
            .as_ref()
            .and_then(|c| c.retry_throttling())
            .map(|t| Arc::new(RetryThrottle::new(*t)));
        let shared = Shared::new(
            balancer,
            Dialer {
                target,
                config,
                resolver,
                #[cfg(feature = "tls")]
                tls,
            },
        );
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                shared,
                throttle,
                retry_buffered: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// Connects now, if not connected: waits until the channel is READY,
    /// or fails with the error that left it in TRANSIENT_FAILURE.
    pub(crate) fn connect_now(&self) -> Result<(), TransportError> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        state.balancer.exit_idle(Instant::now());
        shared.settle_keep(&mut state);
        loop {
            match state.balancer.state() {
                // IDLE again: a connection was made, and the server closed
                // it at once (a GOAWAY); the calls will say why.
                ConnectivityState::Ready | ConnectivityState::Idle => return Ok(()),
                ConnectivityState::TransientFailure | ConnectivityState::Shutdown => {
                    let error = state
                        .balancer
                        .last_error()
                        .and_then(|s| s.transport_error())
                        .map(clone_transport_error)
                        .unwrap_or_else(|| {
                            TransportError::ConnectionLost(format!(
                                "could not connect to {}",
                                self.inner.target().describe()
                            ))
                        });
                    return Err(error);
                }
                _ => {
                    shared.wait(&mut state, None);
                }
            }
        }
    }

    /// The channel's connectivity state. With `try_to_connect`, an IDLE
    /// channel starts connecting (as a call would).
    pub fn state(&self, try_to_connect: bool) -> ConnectivityState {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if try_to_connect {
            state.balancer.exit_idle(Instant::now());
            shared.settle_keep(&mut state);
        }
        state.balancer.state()
    }

    /// Blocks until the channel's state is no longer `last`, or until
    /// `deadline`; returns whether it changed.
    pub fn wait_for_state_change(&self, last: ConnectivityState, deadline: Instant) -> bool {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        while state.balancer.state() == last {
            if !shared.wait(&mut state, Some(deadline)) {
                return state.balancer.state() != last;
            }
        }
        true
    }

    /// The channel's subchannels (one per backend address under
    /// round_robin; the addresses pick_first tries), with their states and
    /// how many calls each was given.
    pub fn subchannels(&self) -> Vec<SubchannelInfo> {
        self.inner.shared.lock().balancer.subchannels()
    }

    fn encode<Req: Message>(
        &self,
        request: &Req,
        options: &CallOptions,
        max_send: usize,
    ) -> Result<Bytes, Status> {
        let encoding = Compress::AsCall.encoding(self.inner.encoding(options));
        kept_buffers::encode(request, encoding, max_send)
    }

    /// Starts a call whose whole request is `request`: retried
    /// transparently if the server never processed it, and as its
    /// method's retry policy says.
    fn start_whole<Req: Message>(
        &self,
        path: &'static str,
        request: &Req,
        mut options: CallOptions,
        responses: Responses,
    ) -> CallCore {
        let (hooks, intercepted) = self.inner.config().interceptors.before(path, &mut options);
        if let Err(status) = intercepted {
            return CallCore::failed(status, hooks);
        }
        let now = Instant::now();
        let (options, limits, policy) = self.inner.method_setup(path, options, now);
        let body = match self.encode(request, &options, limits.max_send) {
            Ok(body) => body,
            Err(status) => return CallCore::failed(status, hooks),
        };
        // Retries keep the first attempt's deadline.
        let options = options.fixed_deadline(now);
        let credit = responses.credit(&limits, self.inner.config().conn.http2.stream_window);
        match self
            .inner
            .open(path, &options, Some(body.clone()), RequestEnd::Now, credit)
        {
            Ok(opened) => {
                let plan =
                    RetryPlan::whole(self.inner.clone(), path, options, body, policy, credit);
                self.inner.core(opened, &limits, Some(plan), hooks)
            }
            Err(status) => CallCore::failed(status, hooks),
        }
    }

    /// Starts a call whose requests go through a sink (which keeps a copy
    /// for retries when the method has a retry policy).
    fn start_streaming<Req: Message>(
        &self,
        path: &'static str,
        mut options: CallOptions,
        responses: Responses,
    ) -> (RequestSink<Req>, CallCore) {
        let (hooks, intercepted) = self.inner.config().interceptors.before(path, &mut options);
        let now = Instant::now();
        let (options, limits, policy) = self.inner.method_setup(path, options, now);
        let options = options.fixed_deadline(now);
        let credit = responses.credit(&limits, self.inner.config().conn.http2.stream_window);
        let opened = intercepted.and_then(|()| {
            self.inner
                .open(path, &options, None, RequestEnd::Later, credit)
        });
        let opened = match opened {
            Ok(opened) => opened,
            Err(status) => {
                return (
                    RequestSink::failed(status.clone()),
                    CallCore::failed(status, hooks),
                )
            }
        };
        let encoding = self.inner.encoding(&options);
        match policy {
            None => {
                let sink = RequestSink::open(
                    opened.conn.clone(),
                    opened.key,
                    opened.state.clone(),
                    encoding,
                    limits.max_send,
                );
                (sink, self.inner.core(opened, &limits, None, hooks))
            }
            Some(policy) => {
                let config = self.inner.config();
                let replay = Arc::new(Replay::new(
                    &opened,
                    config.retry_buffer_per_call,
                    self.inner.retry_buffered.clone(),
                    config.retry_buffer_per_channel,
                ));
                let sink = RequestSink::replayed(replay.clone(), encoding, limits.max_send);
                let plan =
                    RetryPlan::streaming(self.inner.clone(), path, options, replay, policy, credit);
                (sink, self.inner.core(opened, &limits, Some(plan), hooks))
            }
        }
    }

    /// Makes a unary call and waits for its response.
    pub fn unary<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        self.unary_start(path, request, options).wait()
    }

    /// Starts a unary call and returns a handle to it at once.
    pub fn unary_start<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> UnaryCall<Resp>
    where
        Req: Message,
        Resp: Message + Default,
    {
        UnaryCall::new(self.start_whole(path, &request, options, Responses::One))
    }

    /// Starts a server-streaming call; returns the response stream at once
    /// (iterating it waits for each response).
    pub fn server_streaming<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Streaming<Resp>
    where
        Req: Message,
        Resp: Message + Default,
    {
        Streaming::new(self.start_whole(path, &request, options, Responses::Many))
    }

    /// Makes a client-streaming call, sending `requests` from the calling
    /// thread, and waits for the response.
    pub fn client_streaming<Req, Resp, I>(
        &self,
        path: &'static str,
        requests: I,
        options: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
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
    /// from `requests`; returns a handle to the call at once.
    pub fn client_streaming_start<Req, Resp, I>(
        &self,
        path: &'static str,
        requests: I,
        options: CallOptions,
    ) -> UnaryCall<Resp>
    where
        Req: Message + 'static,
        Resp: Message + Default,
        I: IntoIterator<Item = Req> + Send + 'static,
        I::IntoIter: Send,
    {
        let (sink, call) = self.client_streaming_sender::<Req, Resp>(path, options);
        feed(sink, requests);
        call
    }

    /// Starts a client-streaming call and returns a sink for its requests
    /// and the handle for its response.
    pub fn client_streaming_sender<Req, Resp>(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> (RequestSink<Req>, UnaryCall<Resp>)
    where
        Req: Message,
        Resp: Message + Default,
    {
        let (sink, core) = self.start_streaming(path, options, Responses::One);
        (sink, UnaryCall::new(core))
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
        Resp: Message + Default,
        I: IntoIterator<Item = Req> + Send + 'static,
        I::IntoIter: Send,
    {
        let (sink, stream) = self.bidi_streaming_sender::<Req, Resp>(path, options);
        feed(sink, requests);
        stream
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
        Req: Message,
        Resp: Message + Default,
    {
        let (sink, core) = self.start_streaming(path, options, Responses::Many);
        (sink, Streaming::new(core))
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
                if sink.send_message(&request, Compress::AsCall).is_err() {
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
