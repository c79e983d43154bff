//! [`Channel`]: one HTTP/2 connection to one server, shared by any number
//! of threads, and the calls of the four kinds made on it.
//!
//! A channel is `Clone + Send + Sync`: share it (or a generated client
//! wrapping it) between threads, and their calls run concurrently as
//! multiplexed streams. If the connection is lost, the next call connects
//! again (after the reconnect backoff). Dropping the last clone closes the
//! connection and ends its thread once no call is using it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;

use crate::client::backoff::Backoff;
use crate::client::call::{CallCore, Streaming, UnaryCall};
use crate::client::config::ChannelConfig;
use crate::client::conn;
use crate::client::connect::connect;
use crate::client::interceptor::Hooks;
use crate::client::link::{ClientCmd, ClientConn, Opened, RequestEnd, StartCall};
use crate::client::options::CallOptions;
use crate::client::retry::{Reopen, RetryPlan};
use crate::client::sink::RequestSink;
use crate::client::target::Target;
use crate::error::TransportError;
use crate::rt::call_state::CallState;
use crate::rt::mailbox::mailbox;
use crate::status::Status;
use crate::wire::codec::{self, Compress};
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
            .field("target", &self.inner.target.describe())
            .finish_non_exhaustive()
    }
}

struct ChannelInner {
    target: Target,
    config: ChannelConfig,
    /// The rustls configuration, when the target speaks TLS.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Mutex<Option<Arc<ClientConn>>>,
    backoff: Mutex<Backoff>,
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
        if let Some(wait) = backoff.wait(Instant::now(), &self.target.describe()) {
            return Err(wait);
        }
        let connected = self.dial();
        match connected {
            Ok(conn) => {
                backoff.succeeded();
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let config = &self.config;
                backoff.failed(
                    Instant::now(),
                    config.backoff_initial,
                    config.backoff_max,
                    &e,
                );
                Err(e)
            }
        }
    }

    /// Connects (with TLS, when the target speaks it) and starts the
    /// connection thread, within the connect timeout.
    fn dial(&self) -> Result<Arc<ClientConn>, TransportError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        let socket = connect(&self.target, self.config.connect_timeout)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let target = self.target.describe();
            let session =
                crate::tls::client_handshake(&socket, tls, &self.target.host, &target, deadline)?;
            let silent_close = session.sent_no_certificate.then(|| TransportError::Tls {
                target,
                reason: crate::tls::NO_CERTIFICATE_SENT.into(),
            });
            return conn::start(
                socket,
                |raw, blocked| crate::transport::Transport::with_tls(raw, blocked, session.conn),
                &self.config.conn,
                silent_close,
            );
        }
        let _ = deadline;
        conn::start(
            socket,
            crate::transport::Transport::plain,
            &self.config.conn,
            None,
        )
    }

    fn encoding(&self, options: &CallOptions) -> Encoding {
        options.encoding.unwrap_or(self.config.default_encoding)
    }

    /// Opens a stream: queues the request headers (and `body`, if any) on
    /// the connection thread.
    fn open(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<Bytes>,
        end: RequestEnd,
    ) -> Result<Opened, Status> {
        let now = Instant::now();
        let timeout = options.time_left(now);
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Status::deadline_exceeded(
                "the call's deadline had passed before it started",
            ));
        }
        let request = headers::request(&RequestHead {
            path,
            authority: &self.target.authority_header,
            scheme: self.target.scheme(self.target.tls),
            metadata: &options.metadata,
            timeout,
            encoding: self.encoding(options),
        })?;
        let conn = self.connection()?;
        let key = conn.next_key();
        let state = Arc::new(CallState::new());
        if let Some(body) = &body {
            state.note_sent(body.len());
        }
        let (tx, rx) = mailbox();
        conn.send(ClientCmd::Start(Box::new(StartCall {
            key,
            request,
            body,
            end,
            events: tx,
            state: state.clone(),
            deadline: timeout.map(|t| now + t),
        })));
        Ok(Opened {
            conn,
            key,
            state,
            events: rx,
        })
    }

    fn core(
        &self,
        opened: Opened,
        retry: Option<RetryPlan>,
        hooks: Option<Box<Hooks>>,
    ) -> CallCore {
        CallCore::new(
            opened,
            self.config.conn.max_receive_message_size,
            self.config.conn.http2.max_header_list_size as usize,
            retry,
            hooks,
        )
    }
}

impl Reopen for ChannelInner {
    fn reopen(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Bytes,
    ) -> Result<Opened, Status> {
        self.open(path, options, Some(body), RequestEnd::Now)
    }
}

impl Channel {
    pub(crate) fn new(target: Target, config: ChannelConfig) -> Result<Channel, TransportError> {
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
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                target,
                config,
                #[cfg(feature = "tls")]
                tls,
                conn: Mutex::new(None),
                backoff: Mutex::new(Backoff::default()),
            }),
        })
    }

    /// Connects now if not connected.
    pub(crate) fn connect_now(&self) -> Result<(), TransportError> {
        self.inner.connection().map(drop)
    }

    fn encode<Req: Message>(&self, request: &Req, options: &CallOptions) -> Result<Bytes, Status> {
        let encoding = Compress::AsCall.encoding(self.inner.encoding(options));
        codec::encode(
            request,
            encoding,
            self.inner.config.conn.max_send_message_size,
        )
    }

    /// Starts a call whose whole request is `request`: retried
    /// transparently if the server never processed it.
    fn start_whole<Req: Message>(
        &self,
        path: &'static str,
        request: &Req,
        mut options: CallOptions,
    ) -> CallCore {
        let (hooks, intercepted) = self.inner.config.interceptors.before(path, &mut options);
        if let Err(status) = intercepted {
            return CallCore::failed(status, hooks);
        }
        let body = match self.encode(request, &options) {
            Ok(body) => body,
            Err(status) => return CallCore::failed(status, hooks),
        };
        // Retries keep the first attempt's deadline.
        let options = options.fixed_deadline(Instant::now());
        match self
            .inner
            .open(path, &options, Some(body.clone()), RequestEnd::Now)
        {
            Ok(opened) => {
                let plan = RetryPlan::new(self.inner.clone(), path, options, body);
                self.inner.core(opened, Some(plan), hooks)
            }
            Err(status) => CallCore::failed(status, hooks),
        }
    }

    /// Starts a call whose requests go through a sink.
    fn start_streaming<Req: Message>(
        &self,
        path: &'static str,
        mut options: CallOptions,
    ) -> (RequestSink<Req>, CallCore) {
        let (hooks, intercepted) = self.inner.config.interceptors.before(path, &mut options);
        let opened =
            intercepted.and_then(|()| self.inner.open(path, &options, None, RequestEnd::Later));
        match opened {
            Ok(opened) => {
                let sink = RequestSink::open(
                    opened.conn.clone(),
                    opened.key,
                    opened.state.clone(),
                    self.inner.encoding(&options),
                    self.inner.config.conn.max_send_message_size,
                );
                (sink, self.inner.core(opened, None, hooks))
            }
            Err(status) => (
                RequestSink::failed(status.clone()),
                CallCore::failed(status, hooks),
            ),
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
        UnaryCall::new(self.start_whole(path, &request, options))
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
        Streaming::new(self.start_whole(path, &request, options))
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
        let (sink, core) = self.start_streaming(path, options);
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
        let (sink, core) = self.start_streaming(path, options);
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
