//! Server interceptors: code that runs before every handler of a server (or
//! of one service) and after every call it took, for authentication,
//! logging, metrics and context propagation.
//!
//! An [`Interceptor`]'s [`before`](Interceptor::before) sees a [`CallStart`]
//! on the thread that will run the handler, and may reject the call (the
//! handler never runs), add request metadata the handler sees, set response
//! headers and trailers, and leave values for the handler in the call's
//! [`Extensions`]. Its [`after`](Interceptor::after) sees a [`CallEnd`] once
//! the call is over, whatever ended it. Server-wide interceptors
//! ([`ServerBuilder::intercept`](crate::server::ServerBuilder::intercept))
//! run first, in the order added, then a service's own
//! ([`InterceptedService`](crate::server::InterceptedService)); after-hooks
//! run in the reverse order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::after_call::AfterCall;
use crate::metadata::Metadata;
use crate::rt::call_state::Traffic;
use crate::server::peer::{Peer, PeerInfo};
use crate::status::Status;

/// Values an interceptor leaves for the handler (an authenticated user, a
/// tenant, a trace span), by type: [`CallStart::extensions_mut`] puts them
/// in, [`ServerContext::extensions`](crate::server::ServerContext::extensions)
/// reads them.
pub use http::Extensions;

/// Code that runs around every call of a server or of a service.
///
/// Both hooks are plain sync functions and have defaults that do nothing.
/// A closure `Fn(&mut CallStart) -> Result<(), Status>` is an interceptor
/// with only a before-hook; [`after_call`] makes one with only an
/// after-hook.
///
/// ```
/// use grpc_blocking::server::{CallEnd, CallStart, Interceptor};
/// use grpc_blocking::{Server, Status};
///
/// /// Rejects calls without the right token.
/// struct RequireToken(String);
///
/// impl Interceptor for RequireToken {
///     fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
///         let expected = format!("Bearer {}", self.0);
///         match call.metadata().get("authorization") {
///             Some(value) if value == expected => Ok(()),
///             _ => Err(Status::unauthenticated("a valid bearer token is required")),
///         }
///     }
///
///     fn after(&self, call: &CallEnd<'_>) {
///         if call.status().code() == grpc_blocking::Code::Unauthenticated {
///             eprintln!("refused {} from {}", call.method(), call.peer());
///         }
///     }
/// }
///
/// let builder = Server::builder().intercept(RequireToken("s3cret".into()));
/// # drop(builder);
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Runs before the handler, on the thread that will run it. An `Err`
    /// ends the call with that status (with the trailers set so far) and
    /// the handler never runs; the interceptors after this one do not run
    /// either. A panic here ends the call `UNKNOWN`.
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }

    /// Runs once the call is over, whatever ended it (the handler's result,
    /// its panic, the deadline, the client's cancellation, a rejection by a
    /// before-hook), on the handler's thread, after the status was sent.
    /// It runs for every interceptor whose `before` ran, including one that
    /// rejected the call. A panic here is logged and goes no further.
    fn after(&self, call: &CallEnd<'_>) {
        let _ = call;
    }
}

impl<F> Interceptor for F
where
    F: Fn(&mut CallStart<'_>) -> Result<(), Status> + Send + Sync + 'static,
{
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        self(call)
    }
}

/// An interceptor with only an after-hook, from a closure: for logging and
/// metrics.
///
/// ```
/// use grpc_blocking::server::after_call;
/// use grpc_blocking::Server;
///
/// let builder = Server::builder().intercept(after_call(|end| {
///     eprintln!("{} {:?} in {:?}", end.method(), end.status().code(), end.duration());
/// }));
/// # drop(builder);
/// ```
pub fn after_call<F>(f: F) -> AfterCall<F>
where
    F: Fn(&CallEnd<'_>) + Send + Sync + 'static,
{
    AfterCall(f)
}

impl<F> Interceptor for AfterCall<F>
where
    F: Fn(&CallEnd<'_>) + Send + Sync + 'static,
{
    fn after(&self, call: &CallEnd<'_>) {
        (self.0)(call)
    }
}

/// What an interceptor's before-hook sees of a call, and what it may
/// change.
pub struct CallStart<'a> {
    pub(crate) path: &'a str,
    pub(crate) service_name: &'a str,
    pub(crate) method_name: &'a str,
    pub(crate) metadata: &'a mut Metadata,
    pub(crate) peer: &'a PeerInfo,
    pub(crate) deadline: Option<Instant>,
    pub(crate) hooks: &'a mut Hooks,
}

impl CallStart<'_> {
    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        self.path
    }

    /// The service's full name, e.g. `nameko.example`.
    pub fn service_name(&self) -> &str {
        self.service_name
    }

    /// The method's name, e.g. `unary_unary`.
    pub fn method_name(&self) -> &str {
        self.method_name
    }

    /// The request metadata as the handler will see it.
    pub fn metadata(&self) -> &Metadata {
        self.metadata
    }

    /// The request metadata, to change: what is added here the handler
    /// sees in [`ServerContext::metadata`](crate::server::ServerContext::metadata).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.metadata
    }

    /// Where the call came from.
    pub fn peer(&self) -> &Peer {
        &self.peer.addr
    }

    /// The client's verified certificates, over mutual TLS.
    #[cfg(feature = "tls")]
    pub fn peer_certificates(&self) -> Option<&crate::tls::PeerCertificates> {
        self.peer.certificates.as_ref()
    }

    /// The call's deadline, if the client set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Metadata to send in the response headers, ahead of what the handler
    /// sends there.
    pub fn response_headers_mut(&mut self) -> &mut Metadata {
        &mut self.hooks.response_headers
    }

    /// Metadata to send in the trailers, whatever the call's outcome
    /// (a rejection by this interceptor included), next to the handler's.
    pub fn trailers_mut(&mut self) -> &mut Metadata {
        &mut self.hooks.trailers
    }

    /// Values for the handler, by type (see [`Extensions`]).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.hooks.extensions
    }
}

impl std::fmt::Debug for CallStart<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStart")
            .field("method", &self.method())
            .field("peer", self.peer())
            .finish_non_exhaustive()
    }
}

/// What an interceptor's after-hook sees of a call that is over.
pub struct CallEnd<'a> {
    pub(crate) path: &'a str,
    pub(crate) metadata: &'a Metadata,
    pub(crate) peer: &'a PeerInfo,
    pub(crate) status: &'a Status,
    pub(crate) duration: Duration,
    pub(crate) traffic: Traffic,
    pub(crate) extensions: &'a Extensions,
}

impl CallEnd<'_> {
    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        self.path
    }

    /// The request metadata (with what before-hooks added).
    pub fn metadata(&self) -> &Metadata {
        self.metadata
    }

    /// Where the call came from.
    pub fn peer(&self) -> &Peer {
        &self.peer.addr
    }

    /// The status the call ended with, as the client was told it (for a
    /// call the client cancelled or whose deadline passed, `CANCELLED` or
    /// `DEADLINE_EXCEEDED`, whatever the handler returned afterwards).
    pub fn status(&self) -> &Status {
        self.status
    }

    /// From the request's arrival to the end of its handler.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Request messages the handler read.
    pub fn messages_received(&self) -> u64 {
        self.traffic.messages_received
    }

    /// Their bytes on the wire (5-byte prefixes included, compressed sizes).
    pub fn bytes_received(&self) -> u64 {
        self.traffic.bytes_received
    }

    /// Response messages sent.
    pub fn messages_sent(&self) -> u64 {
        self.traffic.messages_sent
    }

    /// Their bytes on the wire (5-byte prefixes included, compressed sizes).
    pub fn bytes_sent(&self) -> u64 {
        self.traffic.bytes_sent
    }

    /// The values interceptors and the handler left in the call.
    pub fn extensions(&self) -> &Extensions {
        self.extensions
    }
}

impl std::fmt::Debug for CallEnd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEnd")
            .field("method", &self.path)
            .field("code", &self.status.code())
            .field("duration", &self.duration)
            .field("traffic", &self.traffic)
            .finish_non_exhaustive()
    }
}

/// A call's interceptor state, from its arrival to its end.
pub(crate) struct Hooks {
    pub(crate) started: Instant,
    /// The interceptors whose before-hook ran, in order.
    pub(crate) ran: Vec<Arc<dyn Interceptor>>,
    pub(crate) response_headers: Metadata,
    pub(crate) trailers: Metadata,
    pub(crate) extensions: Extensions,
}

impl Hooks {
    pub(crate) fn new(started: Instant) -> Self {
        Hooks {
            started,
            ran: Vec::new(),
            response_headers: Metadata::new(),
            trailers: Metadata::new(),
            extensions: Extensions::new(),
        }
    }

    /// Runs the after-hooks, last interceptor first.
    pub(crate) fn after(&self, end: &CallEnd<'_>) {
        for interceptor in self.ran.iter().rev() {
            if catch_unwind(AssertUnwindSafe(|| interceptor.after(end))).is_err() {
                log::error!(
                    "an interceptor's after-hook panicked for a call to {}",
                    end.path
                );
            }
        }
    }
}
