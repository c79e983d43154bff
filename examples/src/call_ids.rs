//! nameko's call-id stack as an interceptor pair: every call gets an id,
//! and the calls a handler makes carry the ids of the calls that led to
//! them, so that a log line anywhere in a chain of services names the whole
//! chain. (nameko keeps the stack in its worker context and its gRPC
//! dependency provider sends it as metadata; here the two interceptors do
//! that.)
//!
//! - [`TrackCallIds`] (server side) reads the incoming stack from the
//!   `nameko-call-id-stack` metadata, pushes an id for this call, and keeps
//!   the result for the handler's thread while the handler runs
//!   ([`current_stack`]).
//! - [`PropagateCallIds`] (client side) sends the stack of the handler
//!   running on the calling thread with every call it makes.
//!
//! ```
//! use grpc_blocking::server::ServerContext;
//! use grpc_blocking::{Channel, Server, Status};
//! use grpc_blocking_examples::call_ids::{current_stack, PropagateCallIds, TrackCallIds};
//! use grpc_blocking_examples::nameko::{Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer};
//! # use grpc_blocking::server::{Requests, ResponseSink};
//!
//! /// Answers with the call-id stack its handler sees.
//! struct Leaf;
//! impl Example for Leaf {
//!     fn unary_unary(&self, _: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
//!         Ok(ExampleReply { message: current_stack().join(" > "), seqno: 0 })
//!     }
//! #   fn unary_stream(&self, _: ExampleRequest, _: &ServerContext, _: &mut ResponseSink<ExampleReply>) -> Result<(), Status> { Err(Status::unimplemented("not part of this example")) }
//! #   fn stream_unary(&self, _: Requests<ExampleRequest>, _: &ServerContext) -> Result<ExampleReply, Status> { Err(Status::unimplemented("not part of this example")) }
//! #   fn stream_stream(&self, _: Requests<ExampleRequest>, _: &ServerContext, _: &mut ResponseSink<ExampleReply>) -> Result<(), Status> { Err(Status::unimplemented("not part of this example")) }
//! }
//!
//! /// Calls the leaf from its handler, with the stack propagated.
//! struct Middle(ExampleClient);
//! impl Example for Middle {
//!     fn unary_unary(&self, request: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
//!         self.0.unary_unary(request)
//!     }
//! #   fn unary_stream(&self, _: ExampleRequest, _: &ServerContext, _: &mut ResponseSink<ExampleReply>) -> Result<(), Status> { Err(Status::unimplemented("not part of this example")) }
//! #   fn stream_unary(&self, _: Requests<ExampleRequest>, _: &ServerContext) -> Result<ExampleReply, Status> { Err(Status::unimplemented("not part of this example")) }
//! #   fn stream_stream(&self, _: Requests<ExampleRequest>, _: &ServerContext, _: &mut ResponseSink<ExampleReply>) -> Result<(), Status> { Err(Status::unimplemented("not part of this example")) }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let leaf = Server::builder()
//!     .intercept(TrackCallIds::new("leaf"))
//!     .add_service(ExampleServer::new(Leaf))
//!     .bind("127.0.0.1:0")?
//!     .spawn()?;
//! let to_leaf = Channel::builder(leaf.target()).intercept(PropagateCallIds).connect()?;
//! let middle = Server::builder()
//!     .intercept(TrackCallIds::new("middle"))
//!     .add_service(ExampleServer::new(Middle(ExampleClient::new(to_leaf))))
//!     .bind("127.0.0.1:0")?
//!     .spawn()?;
//!
//! let client = ExampleClient::connect(middle.target())?;
//! let stack = client.unary_unary(ExampleRequest::default())?.message;
//! assert_eq!(stack, "middle.unary_unary.1 > leaf.unary_unary.1");
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use grpc_blocking::server::{CallEnd, CallStart, Interceptor};
use grpc_blocking::{client, Status};

/// The metadata key of the stack: the ids, oldest first, comma-separated.
pub const CALL_ID_STACK: &str = "nameko-call-id-stack";

/// How many ids a stack keeps (the most recent), as nameko's
/// `parent_calls_tracked` does by default.
pub const MAX_DEPTH: usize = 10;

thread_local! {
    /// The stack of the handler running on this thread.
    static CURRENT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The call-id stack of the handler running on this thread (empty outside
/// a handler): the ids of the calls that led here, this call's last.
pub fn current_stack() -> Vec<String> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Server side: gives every call an id `NAME.METHOD.N` on top of the stack
/// it came with, for its handler's thread.
#[derive(Debug)]
pub struct TrackCallIds {
    name: String,
    next: AtomicU64,
}

impl TrackCallIds {
    /// Names this server's calls after `name` (nameko's service name).
    pub fn new(name: &str) -> Self {
        TrackCallIds {
            name: name.to_owned(),
            next: AtomicU64::new(1),
        }
    }
}

impl Interceptor for TrackCallIds {
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let mut stack: Vec<String> = call
            .metadata()
            .get(CALL_ID_STACK)
            .map(|s| {
                s.split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        stack.push(format!("{}.{}.{n}", self.name, call.method_name()));
        let excess = stack.len().saturating_sub(MAX_DEPTH);
        stack.drain(..excess);
        // Before-hooks run on the thread that then runs the handler.
        CURRENT.with(|c| *c.borrow_mut() = stack);
        Ok(())
    }

    fn after(&self, _call: &CallEnd<'_>) {
        // After-hooks run on the handler's thread too, once it is done.
        CURRENT.with(|c| c.borrow_mut().clear());
    }
}

/// Client side: sends the stack of the handler running on the calling
/// thread (nothing outside a handler).
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateCallIds;

impl client::Interceptor for PropagateCallIds {
    fn before(&self, call: &mut client::CallStart<'_>) -> Result<(), Status> {
        let stack = CURRENT.with(|c| c.borrow().join(","));
        if !stack.is_empty() {
            call.metadata_mut().insert(CALL_ID_STACK, &stack)?;
        }
        Ok(())
    }
}
