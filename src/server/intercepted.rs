//! [`InterceptedService`]: a service with interceptors of its own, and
//! running a call through a chain of interceptors to its service.

use std::sync::Arc;

use crate::server::call::ServerCall;
use crate::server::interceptor::Interceptor;
use crate::server::service::Service;

/// Runs `interceptors`' before-hooks on `call`, in order, until one
/// rejects it; then the call either goes on to `service` or ends with the
/// rejection.
pub(crate) fn run(
    service: &dyn Service,
    mut call: ServerCall,
    interceptors: &[Arc<dyn Interceptor>],
) {
    match call.intercept(interceptors) {
        Ok(()) => {
            let path = call.path.clone();
            service.call(path.method(), call);
        }
        Err(status) => call.reject(status),
    }
}

/// A service with interceptors of its own, which run after the server-wide
/// ones and only for its calls. Pass it to
/// [`ServerBuilder::add_service`](crate::server::ServerBuilder::add_service).
///
/// ```
/// # use grpc_blocking::server::{Server, Service, ServerCall};
/// # struct Svc; impl Service for Svc {
/// #   fn name(&self) -> &'static str { "x.S" } fn methods(&self) -> &'static [&'static str] { &[] }
/// #   fn call(&self, _: &str, c: ServerCall) { c.unimplemented() } }
/// use grpc_blocking::server::InterceptedService;
/// use grpc_blocking::Status;
///
/// let service = InterceptedService::new(Svc).intercept(|call: &mut grpc_blocking::server::CallStart<'_>| {
///     if call.metadata().get("x-api-key").is_none() {
///         return Err(Status::unauthenticated("an x-api-key is required"));
///     }
///     Ok(())
/// });
/// let builder = Server::builder().add_service(service);
/// # drop(builder);
/// ```
pub struct InterceptedService<S> {
    inner: S,
    interceptors: Vec<Arc<dyn Interceptor>>,
}

impl<S: Service> InterceptedService<S> {
    /// `service`, with no interceptors yet.
    pub fn new(service: S) -> Self {
        InterceptedService {
            inner: service,
            interceptors: Vec::new(),
        }
    }

    /// Adds an interceptor, after those added before.
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }
}

impl<S> std::fmt::Debug for InterceptedService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptedService")
            .field("interceptors", &self.interceptors.len())
            .finish_non_exhaustive()
    }
}

impl<S: Service> Service for InterceptedService<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn methods(&self) -> &'static [&'static str] {
        self.inner.methods()
    }
    fn unary_methods(&self) -> &'static [&'static str] {
        self.inner.unary_methods()
    }
    fn file_descriptors(&self) -> &'static [&'static [u8]] {
        self.inner.file_descriptors()
    }
    fn call(&self, method: &str, call: ServerCall) {
        let _ = method;
        run(&self.inner, call, &self.interceptors);
    }
}
