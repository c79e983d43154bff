//! [`ServerContext`]: what a handler knows of its call beyond the messages,
//! and the controls it has over the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call_context::CallContext;
use crate::code::Code;
use crate::metadata::Metadata;
use crate::server::interceptor::{CallEnd, Extensions, Hooks};
use crate::server::link::Wakeup;
use crate::server::peer::{Peer, PeerInfo};
use crate::server::response::Outbound;
use crate::status::Status;
use crate::wire::compression::Encoding;
use crate::wire::headers::MethodPath;

/// The server side of one call: what the client sent besides its messages,
/// and the controls a handler has over the response.
///
/// A handler reads the request metadata, the deadline, whether the call was
/// cancelled and the peer's address here, and sets the response's initial
/// metadata, trailing metadata, status code and message. (It is what
/// grpcio's `ServicerContext` and nameko-grpc's `context` offer, for those
/// who know them.)
///
/// ```
/// use grpc_blocking::server::ServerContext;
/// use grpc_blocking::{Metadata, Status};
///
/// fn handler(ctx: &ServerContext) -> Result<String, Status> {
///     let user = ctx.metadata().get("x-user").unwrap_or("anonymous");
///     if ctx.time_remaining().is_some_and(|left| left.as_millis() < 10) {
///         return Err(Status::deadline_exceeded("not enough time left to answer"));
///     }
///     let mut trailers = Metadata::new();
///     trailers.insert("x-served-by", "example")?;
///     ctx.set_trailing_metadata(trailers);
///     Ok(format!("hello {user}"))
/// }
/// # let _ = handler;
/// ```
pub struct ServerContext {
    method: MethodPath,
    metadata: Metadata,
    peer: Arc<PeerInfo>,
    deadline: Option<Instant>,
    out: Arc<Outbound>,
    hooks: Hooks,
}

impl ServerContext {
    pub(crate) fn new(
        method: MethodPath,
        metadata: Metadata,
        peer: Arc<PeerInfo>,
        deadline: Option<Instant>,
        out: Arc<Outbound>,
        hooks: Hooks,
    ) -> Self {
        ServerContext {
            method,
            metadata,
            peer,
            deadline,
            out,
            hooks,
        }
    }

    pub(crate) fn outbound(&self) -> &Outbound {
        &self.out
    }

    /// Ends the call with the handler's result, then runs the
    /// interceptors' after-hooks.
    pub(crate) fn finish(&self, result: Result<(), Status>) {
        let Some(status) = self.out.finish(result) else {
            return;
        };
        if self.hooks.ran.is_empty() {
            return;
        }
        self.hooks.after(&CallEnd {
            path: self.method.path(),
            metadata: &self.metadata,
            peer: &self.peer,
            status: &status,
            duration: self.hooks.started.elapsed(),
            traffic: self.out.state.traffic(),
            extensions: &self.hooks.extensions,
        });
    }

    /// The values interceptors left for the handler (see
    /// [`CallStart::extensions_mut`](crate::server::CallStart::extensions_mut)).
    pub fn extensions(&self) -> &Extensions {
        &self.hooks.extensions
    }

    /// The metadata the client sent with the call (its request headers, less
    /// the ones gRPC itself uses).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        self.method.path()
    }

    /// Where the call came from: a TCP address, or this server's Unix
    /// socket.
    pub fn peer(&self) -> &Peer {
        &self.peer.addr
    }

    /// The client's TCP address (`None` on a Unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self.peer.addr {
            Peer::Tcp(addr) => Some(addr),
            Peer::Unix(_) => None,
        }
    }

    /// The client's verified certificate chain and its subject alternative
    /// names, when it sent one over TLS (mutual TLS); `None` on plaintext
    /// connections and for TLS clients that sent none.
    #[cfg(feature = "tls")]
    pub fn peer_certificates(&self) -> Option<&crate::tls::PeerCertificates> {
        self.peer.certificates.as_ref()
    }

    /// When the call's deadline passes, if the client set one
    /// (`grpc-timeout`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed); `None` when
    /// there is no deadline.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the call is over for the client: it cancelled, its deadline
    /// passed, or the connection was lost. Long-running handlers should check
    /// this and stop.
    pub fn is_cancelled(&self) -> bool {
        self.out.state.is_cancelled()
    }

    /// Runs `f` once when the call is over for the client (cancelled,
    /// deadline passed, connection lost), or at once if it already is: a
    /// way to wake a handler blocked on something other than the call. `f`
    /// runs on the connection's thread: keep it short and never block in
    /// it.
    pub fn on_cancel(&self, f: impl FnOnce() + Send + 'static) {
        self.out.state.on_cancel(Box::new(f));
    }

    /// Sends the response headers now, with `metadata` in them. Fails if the
    /// headers were already sent (by an earlier call or by the first response
    /// message).
    pub fn send_initial_metadata(&self, metadata: Metadata) -> Result<(), Status> {
        let mut inner = self.out.inner.lock();
        if inner.headers_sent {
            return Err(Status::failed_precondition(
                "initial metadata was already sent",
            ));
        }
        self.out.ensure_headers(&mut inner, metadata, Wakeup::Now);
        Ok(())
    }

    /// Whether the most recent request message arrived compressed (for a
    /// unary handler: its request).
    pub fn request_compressed(&self) -> bool {
        self.out.state.received_compressed()
    }

    /// Chooses the compression of the response messages (by default the
    /// request's, when the client accepts it, else none). Must be called
    /// before the response headers are sent, and only with an algorithm the
    /// client listed in `grpc-accept-encoding` (or identity).
    pub fn set_compression(&self, encoding: Encoding) -> Result<(), Status> {
        let mut inner = self.out.inner.lock();
        if inner.headers_sent {
            return Err(Status::failed_precondition(
                "the response compression cannot change after the headers were sent",
            ));
        }
        if encoding != Encoding::Identity && !self.out.accept_encoding.contains(&encoding) {
            return Err(Status::invalid_argument(format!(
                "the client does not accept {encoding} compressed responses"
            )));
        }
        inner.encoding = encoding;
        Ok(())
    }

    /// The response compression in effect.
    pub fn compression(&self) -> Encoding {
        self.out.inner.lock().encoding
    }

    /// Sets metadata to send in the trailers when the call ends (replacing
    /// what was set before).
    pub fn set_trailing_metadata(&self, metadata: Metadata) {
        self.out.inner.lock().trailing = metadata;
    }

    /// Sets the status code the call ends with when the handler returns `Ok`.
    pub fn set_code(&self, code: Code) {
        self.out.inner.lock().code = Some(code);
    }

    /// Sets the status message the call ends with when the handler returns
    /// `Ok`.
    pub fn set_message(&self, message: impl Into<String>) {
        self.out.inner.lock().message = Some(message.into());
    }
}

impl CallContext for ServerContext {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("method", &self.method)
            .field("metadata", &self.metadata)
            .field("peer", &self.peer.addr)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
