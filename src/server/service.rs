//! The [`Service`] trait the server dispatches to, and the registry of the
//! services a server hosts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::server::call::ServerCall;

/// A gRPC service the server can dispatch to. The code generator implements
/// it for each service's `XxxServer<T>` adapter; implement it by hand only for
/// services without a proto.
pub trait Service: Send + Sync + 'static {
    /// The fully-qualified service name, exactly as in the proto
    /// (`package.Service`).
    fn name(&self) -> &'static str;
    /// The service's method names, exactly as in the proto.
    fn methods(&self) -> &'static [&'static str];
    /// The methods that are unary-unary (one request, one response). The
    /// server may run these on the connection thread (see
    /// [`ServerBuilder::unary_handlers`](crate::server::ServerBuilder::unary_handlers));
    /// streaming ones run on the handler pool (but see
    /// [`Service::server_streaming_methods`]). The server also gives the
    /// flow-control credit of these methods' requests back as the bytes
    /// arrive, up to one message of the largest size it takes, so list only
    /// methods that take one request message. Generated code lists them;
    /// the default is none.
    fn unary_methods(&self) -> &'static [&'static str] {
        &[]
    }
    /// The methods that are server-streaming (one request, a stream of
    /// responses). Under [`UnaryHandlers::Adaptive`](crate::server::UnaryHandlers::Adaptive)
    /// the server runs these on the connection thread too, handing the
    /// connection to another thread if the handler blocks (for a reply the
    /// client is slow to take, say). Their requests are credited as those of
    /// [`Service::unary_methods`] are. Generated code lists them; the
    /// default is none.
    fn server_streaming_methods(&self) -> &'static [&'static str] {
        &[]
    }
    /// The methods that are client-streaming (a stream of requests, one
    /// response). Under [`UnaryHandlers::Adaptive`](crate::server::UnaryHandlers::Adaptive)
    /// the server starts these handlers on the connection thread once the
    /// whole request stream has arrived, if it arrives within the inline
    /// time limit (and stays under half the stream's window and its share
    /// of the connection's); otherwise on the handler pool at that point,
    /// reading the requests as they come. Generated code lists them; the
    /// default is none.
    fn client_streaming_methods(&self) -> &'static [&'static str] {
        &[]
    }
    /// The encoded `google.protobuf.FileDescriptorProto`s of the proto file
    /// that defines the service, then of every file it depends on: what
    /// server reflection tells clients. Generated code lists them; the
    /// default is none (the service is then listed by reflection, but not
    /// described).
    fn file_descriptors(&self) -> &'static [&'static [u8]] {
        &[]
    }
    /// Runs one call of `method` (one of [`Service::methods`]) on the
    /// calling thread (a worker's, or the connection's for inline unary
    /// handlers).
    fn call(&self, method: &str, call: ServerCall);
}

/// The services of a server, by full name.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.services.keys().collect();
        names.sort();
        f.debug_list().entries(names).finish()
    }
}

impl Registry {
    /// Adds `service`, replacing one of the same name.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) {
        self.services.insert(service.name(), service);
    }

    /// The service of that name.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services.get(name)
    }

    /// Every service, by name.
    #[cfg_attr(not(any(feature = "health", feature = "reflection")), allow(dead_code))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Service>> {
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by_key(|(name, _)| *name);
        services.into_iter().map(|(_, s)| s)
    }
}
