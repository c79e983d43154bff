//! Client interceptors: code that runs before and after every call a
//! [`Channel`](crate::Channel) makes (and so every call of the generated
//! clients over it), for credentials, logging, metrics and context
//! propagation.
//!
//! An [`Interceptor`]'s [`before`](Interceptor::before) sees a
//! [`CallStart`] on the calling thread before anything is sent, and may
//! change the call's metadata and options or fail the call. Its
//! [`after`](Interceptor::after) sees a [`CallEnd`] once the call is over.
//! Interceptors run in the order they were added; after-hooks in reverse.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::after_call::AfterCall;
use crate::client::options::CallOptions;
use crate::metadata::Metadata;
use crate::rt::call_state::Traffic;
use crate::status::Status;
use crate::wire::compression::Encoding;

/// Code that runs around every call of a channel.
///
/// Both hooks are plain sync functions and have defaults that do nothing.
/// A closure `Fn(&mut CallStart) -> Result<(), Status>` is an interceptor
/// with only a before-hook; [`after_call`] makes one with only an
/// after-hook.
///
/// ```
/// use std::sync::{Arc, RwLock};
/// use grpc_blocking::client::CallStart;
/// use grpc_blocking::Channel;
///
/// // A token another thread refreshes; every call sends the current one.
/// let token = Arc::new(RwLock::new(String::from("first")));
/// let current = token.clone();
/// let channel = Channel::builder("http://127.0.0.1:50051")
///     .intercept(move |call: &mut CallStart<'_>| {
///         let value = format!("Bearer {}", current.read().unwrap());
///         call.metadata_mut().insert("authorization", &value)?;
///         Ok(())
///     })
///     .connect_lazy()?;
/// *token.write().unwrap() = "second".into();
/// # drop(channel);
/// # Ok::<(), grpc_blocking::TransportError>(())
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Runs on the calling thread before anything of the call is sent. An
    /// `Err` fails the call with that status without sending it (the
    /// interceptors after this one do not run). A panic propagates to the
    /// caller, as a panic in the caller's own code would.
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }

    /// Runs once the call is over (its status received, or the call failed,
    /// was cancelled or dropped), on the thread that saw it end. It runs
    /// for every interceptor whose `before` ran. A panic here is logged
    /// and goes no further.
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

/// What a client interceptor's before-hook sees of a call, and may change.
pub struct CallStart<'a> {
    method: &'a str,
    options: &'a mut CallOptions,
}

impl CallStart<'_> {
    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The metadata the call will send.
    pub fn metadata(&self) -> &Metadata {
        &self.options.metadata
    }

    /// The metadata the call will send, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.options.metadata
    }

    /// The time the call has from now, from its timeout and deadline.
    pub fn time_left(&self) -> Option<Duration> {
        self.options.time_left(Instant::now())
    }

    /// Sets the call's timeout (the earlier of it and a deadline wins).
    pub fn set_timeout(&mut self, timeout: Duration) {
        let options = std::mem::take(self.options);
        *self.options = options.timeout(timeout);
    }

    /// Sets the call's deadline (the earlier of it and a timeout wins).
    pub fn set_deadline(&mut self, deadline: Instant) {
        let options = std::mem::take(self.options);
        *self.options = options.deadline(deadline);
    }

    /// Compresses the call's requests with `encoding`.
    pub fn set_compression(&mut self, encoding: Encoding) {
        self.options.encoding = Some(encoding);
    }
}

impl std::fmt::Debug for CallStart<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStart")
            .field("method", &self.method)
            .field("options", &self.options)
            .finish()
    }
}

/// What a client interceptor's after-hook sees of a call that is over.
pub struct CallEnd<'a> {
    method: &'a str,
    status: &'a Status,
    duration: Duration,
    traffic: Traffic,
}

impl CallEnd<'_> {
    /// The full method path, e.g. `/nameko.example/unary_unary`.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The status the call ended with (`OK` for a call that succeeded).
    pub fn status(&self) -> &Status {
        self.status
    }

    /// From the start of the call (before the interceptors ran) to its end.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Request messages sent (of the last attempt, for a call started
    /// again).
    pub fn messages_sent(&self) -> u64 {
        self.traffic.messages_sent
    }

    /// Their bytes on the wire (5-byte prefixes included, compressed sizes).
    pub fn bytes_sent(&self) -> u64 {
        self.traffic.bytes_sent
    }

    /// Response messages received.
    pub fn messages_received(&self) -> u64 {
        self.traffic.messages_received
    }

    /// Their bytes on the wire (5-byte prefixes included, compressed sizes).
    pub fn bytes_received(&self) -> u64 {
        self.traffic.bytes_received
    }
}

impl std::fmt::Debug for CallEnd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEnd")
            .field("method", &self.method)
            .field("code", &self.status.code())
            .field("duration", &self.duration)
            .field("traffic", &self.traffic)
            .finish()
    }
}

/// A channel's interceptors, in order.
#[derive(Clone, Default)]
pub(crate) struct Interceptors(Vec<Arc<dyn Interceptor>>);

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptors")
            .field("count", &self.0.len())
            .finish()
    }
}

impl Interceptors {
    pub(crate) fn push(&mut self, interceptor: impl Interceptor) {
        self.0.push(Arc::new(interceptor));
    }

    /// Runs the before-hooks on a call to `method` until one fails it;
    /// returns the hooks whose after-hook is due at the end (`None` without
    /// interceptors), and the failure.
    pub(crate) fn before(
        &self,
        method: &'static str,
        options: &mut CallOptions,
    ) -> (Option<Box<Hooks>>, Result<(), Status>) {
        if self.0.is_empty() {
            return (None, Ok(()));
        }
        let mut hooks = Box::new(Hooks {
            method,
            started: Instant::now(),
            ran: Vec::with_capacity(self.0.len()),
        });
        for interceptor in &self.0 {
            hooks.ran.push(interceptor.clone());
            let mut start = CallStart { method, options };
            if let Err(status) = interceptor.before(&mut start) {
                return (Some(hooks), Err(status));
            }
        }
        (Some(hooks), Ok(()))
    }
}

/// One call's interceptors whose after-hook is due.
pub(crate) struct Hooks {
    method: &'static str,
    started: Instant,
    ran: Vec<Arc<dyn Interceptor>>,
}

impl Hooks {
    /// Runs the after-hooks, last interceptor first.
    pub(crate) fn after(self, status: &Status, traffic: Traffic) {
        let end = CallEnd {
            method: self.method,
            status,
            duration: self.started.elapsed(),
            traffic,
        };
        for interceptor in self.ran.iter().rev() {
            if catch_unwind(AssertUnwindSafe(|| interceptor.after(&end))).is_err() {
                log::error!(
                    "a client interceptor's after-hook panicked for a call to {}",
                    self.method
                );
            }
        }
    }
}
