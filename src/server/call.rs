//! A call as its handler receives it ([`ServerCall`]), and the four
//! functions generated services use to run a handler for each RPC pattern.
//!
//! Handlers never touch h2: messages reach them through their call's
//! mailbox, and what they send goes back as commands to the connection
//! thread (`link.rs`).

use std::sync::Arc;
use std::time::Instant;

use crate::rt::sync::Mutex;
use prost::Message;

use crate::metadata::Metadata;
use crate::rt::call_state::CallState;
use crate::rt::mailbox::Consumer;
use crate::rt::StreamKey;
use crate::server::context::ServerContext;
use crate::server::error_policy::{ErrorPolicy, Responses};
use crate::server::interceptor::{CallStart, Hooks, Interceptor};
use crate::server::link::{ConnHandle, Inbound, Wakeup};
use crate::server::peer::PeerInfo;
use crate::server::requests::{RequestReader, Requests};
use crate::server::response::{OutState, Outbound, ResponseSink};
use crate::status::Status;
use crate::wire::codec::Compress;
use crate::wire::compression::Encoding;
use crate::wire::headers::MethodPath;

/// Everything a call carries into its handler. Made by the connection
/// thread, consumed by [`unary`], [`server_streaming`], [`client_streaming`],
/// [`bidi_streaming`] or [`ServerCall::unimplemented`].
pub struct ServerCall {
    pub(crate) key: StreamKey,
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) state: Arc<CallState>,
    pub(crate) inbox: Consumer<Inbound>,
    /// `/service/method`.
    pub(crate) path: MethodPath,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Arc<PeerInfo>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) request_encoding: Encoding,
    pub(crate) response_encoding: Encoding,
    pub(crate) accept_encoding: Vec<Encoding>,
    pub(crate) policy: Arc<ErrorPolicy>,
    pub(crate) max_receive: usize,
    /// The connection gives the request's flow-control credit back as the
    /// bytes arrive ([`Credit::OnArrival`](crate::rt::reader::Credit)),
    /// so the handler does not.
    pub(crate) credited_on_arrival: bool,
    pub(crate) max_send: usize,
    pub(crate) hooks: Hooks,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("service", &self.path.service())
            .field("method", &self.path.method())
            .finish_non_exhaustive()
    }
}

impl ServerCall {
    /// The method's name, exactly as in the proto (`unary_unary`), as
    /// [`Service::call`](crate::server::Service::call) receives it.
    pub fn method(&self) -> &str {
        self.path.method()
    }

    /// Answers `UNIMPLEMENTED`: the service has no such method.
    pub fn unimplemented(self) {
        let msg = format!(
            "unknown method {} for service {}",
            self.path.method(),
            self.path.service()
        );
        self.reject(Status::unimplemented(msg));
    }

    /// Ends the call with `status` before any handler ran.
    pub(crate) fn reject(self, status: Status) {
        let (ctx, _requests, _sink) = self.split::<(), ()>();
        ctx.finish(Err(status));
    }

    /// Runs `interceptors`' before-hooks in order until one rejects the
    /// call (or panics); each one that ran has its after-hook run at the
    /// end.
    pub(crate) fn intercept(
        &mut self,
        interceptors: &[Arc<dyn Interceptor>],
    ) -> Result<(), Status> {
        let policy = self.policy.clone();
        for interceptor in interceptors {
            self.hooks.ran.push(interceptor.clone());
            let mut start = CallStart {
                path: self.path.path(),
                service_name: self.path.service(),
                method_name: self.path.method(),
                metadata: &mut self.metadata,
                peer: &self.peer,
                deadline: self.deadline,
                hooks: &mut self.hooks,
            };
            policy.run(Responses::One, || interceptor.before(&mut start))?;
        }
        Ok(())
    }

    fn split<Req, Resp>(self) -> (ServerContext, Requests<Req>, ResponseSink<Resp>) {
        let Hooks {
            started,
            ran,
            response_headers,
            trailers,
            extensions,
        } = self.hooks;
        let out = Arc::new(Outbound {
            conn: self.conn.clone(),
            key: self.key,
            state: self.state.clone(),
            policy: self.policy,
            accept_encoding: self.accept_encoding,
            max_send: self.max_send,
            inner: Mutex::new(OutState {
                encoding: self.response_encoding,
                interceptor_headers: response_headers,
                interceptor_trailers: trailers,
                ..OutState::default()
            }),
        });
        let requests = Requests::new(
            self.inbox,
            RequestReader::new(self.max_receive, self.request_encoding),
            self.state,
            self.conn,
            self.key,
            self.credited_on_arrival,
        );
        let ctx = ServerContext::new(
            self.path,
            self.metadata,
            self.peer,
            self.deadline,
            out.clone(),
            Hooks {
                started,
                ran,
                response_headers: Metadata::new(),
                trailers: Metadata::new(),
                extensions,
            },
        );
        (ctx, requests, ResponseSink::new(out))
    }
}

/// Runs a unary handler: one request in, one response out.
pub fn unary<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req, &ServerContext) -> Result<Resp, Status>,
{
    let (ctx, mut requests, _sink) = call.split::<Req, Resp>();
    let out = ctx.outbound();
    let result = requests
        .single()
        .and_then(|req| out.policy.run(Responses::One, || f(req, &ctx)))
        // The status that follows wakes the connection thread.
        .and_then(|resp| out.send_message(&resp, Compress::AsCall, Wakeup::Later));
    ctx.finish(result);
}

/// Runs a server-streaming handler: one request in, any number of responses
/// out through the sink.
pub fn server_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req, &ServerContext, &mut ResponseSink<Resp>) -> Result<(), Status>,
{
    let (ctx, mut requests, mut sink) = call.split::<Req, Resp>();
    let out = ctx.outbound();
    let result = requests.single().and_then(|req| {
        out.policy
            .run(Responses::Stream, || f(req, &ctx, &mut sink))
    });
    ctx.finish(result);
}

/// Runs a client-streaming handler: a stream of requests in, one response out.
pub fn client_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Requests<Req>, &ServerContext) -> Result<Resp, Status>,
{
    let (ctx, requests, _sink) = call.split::<Req, Resp>();
    let out = ctx.outbound();
    let result = out
        .policy
        .run(Responses::One, || f(requests, &ctx))
        .and_then(|resp| out.send_message(&resp, Compress::AsCall, Wakeup::Later));
    ctx.finish(result);
}

/// Runs a bidirectional-streaming handler.
pub fn bidi_streaming<Req, Resp, F>(call: ServerCall, f: F)
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Requests<Req>, &ServerContext, &mut ResponseSink<Resp>) -> Result<(), Status>,
{
    let (ctx, requests, mut sink) = call.split::<Req, Resp>();
    let out = ctx.outbound();
    let result = out
        .policy
        .run(Responses::Stream, || f(requests, &ctx, &mut sink));
    ctx.finish(result);
}
