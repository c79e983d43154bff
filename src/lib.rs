//! A blocking, thread-per-connection gRPC server and client for Rust
//! programs that want no async runtime.
//!
//! - **Server**: implement the sync trait the code generator emits for a
//!   proto service (plain `fn`s that may block), add it to a [`Server`] and
//!   [`serve`](Server::serve). Requests reach a handler as a blocking
//!   iterator ([`server::Requests`]), responses leave through a blocking
//!   sink ([`server::ResponseSink`]), and a [`server::ServerContext`] gives
//!   the call's metadata, deadline, cancellation and peer.
//! - **Client**: a generated client wraps a [`Channel`] (one HTTP/2
//!   connection, `Clone + Send + Sync`). Unary calls return the reply,
//!   server streams are iterators, client streams take any iterator or a
//!   [`RequestSink`]. Every pattern has a non-blocking start returning a
//!   handle ([`UnaryCall`], [`Streaming`]) with the response's metadata.
//! - **Code generation** from `build.rs` with the `grpc-blocking-codegen`
//!   crate: no `protoc` needed.
//! - **Wire compatibility** with other gRPC implementations: the headers,
//!   framing, status, `grpc-timeout`, compression (gzip, deflate) and
//!   metadata rules of grpc/grpc `doc/PROTOCOL-HTTP2.md`.
//!
//! # Example
//!
//! Generated code does the wiring below for you (see the README and the
//! `examples/` crate); here a service is written by hand, with messages
//! derived by prost, so that the example runs as it is.
//!
//! ```
//! use grpc_blocking::server::{self, Server, ServerCall, Service};
//! use grpc_blocking::{CallOptions, Channel, Code, Metadata, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Hello {
//!     #[prost(string, tag = "1")]
//!     name: String,
//! }
//!
//! struct Greeter;
//!
//! impl Service for Greeter {
//!     fn name(&self) -> &'static str { "demo.Greeter" }
//!     fn methods(&self) -> &'static [&'static str] { &["SayHello", "Count"] }
//!     fn call(&self, method: &str, call: ServerCall) {
//!         match method {
//!             "SayHello" => server::unary(call, |req: Hello, ctx| {
//!                 if req.name.is_empty() {
//!                     return Err(Status::invalid_argument("name is empty"));
//!                 }
//!                 let from = ctx.metadata().get("x-from").unwrap_or("nobody");
//!                 Ok(Hello { name: format!("hello {}, from {from}", req.name) })
//!             }),
//!             "Count" => server::server_streaming(call, |req: Hello, _ctx, out| {
//!                 for i in 1..=3 {
//!                     out.send(Hello { name: format!("{} {i}", req.name) })?;
//!                 }
//!                 Ok(())
//!             }),
//!             _ => call.unimplemented(),
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server on a free port, in the background.
//! let server = Server::builder().add_service(Greeter).bind("127.0.0.1:0")?.spawn()?;
//! let channel = Channel::connect(&format!("http://{}", server.local_addr()))?;
//!
//! // A unary call with metadata.
//! let mut md = Metadata::new();
//! md.insert("x-from", "the docs")?;
//! let reply: Hello = channel
//!     .unary("/demo.Greeter/SayHello", Hello { name: "world".into() }, CallOptions::new().metadata(md))
//!     .wait()?;
//! assert_eq!(reply.name, "hello world, from the docs");
//!
//! // A server stream is an iterator.
//! let names: Vec<String> = channel
//!     .server_streaming::<_, Hello>("/demo.Greeter/Count", Hello { name: "n".into() }, CallOptions::new())
//!     .map(|r| r.map(|h| h.name))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(names, ["n 1", "n 2", "n 3"]);
//!
//! // Errors are statuses.
//! let err = channel
//!     .unary::<_, Hello>("/demo.Greeter/SayHello", Hello::default(), CallOptions::new())
//!     .wait()
//!     .unwrap_err();
//! assert_eq!(err.code(), Code::InvalidArgument);
//! assert_eq!(err.message(), "name is empty");
//!
//! drop(channel);
//! server.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Threads
//!
//! Each connection, server or client side, is one OS thread that owns the
//! socket and the HTTP/2 state and sleeps in `poll(2)`; server handlers run
//! on a pool of workers that grows on demand up to a bound; a client call
//! runs on the caller's thread. Flow-control credit is returned only as
//! messages are consumed, so slow readers slow their senders down and memory
//! stays bounded.
//!
//! # Errors
//!
//! Every call ends in a [`Status`]. A status made on this side from a
//! transport failure keeps its cause ([`Status::transport_error`]), so
//! "the server said UNAVAILABLE" and "the server could not be reached" are
//! told apart. Rich details (`google.rpc.Status` with the standard error
//! detail messages) are in [`error_details`].

#![warn(missing_docs)]

mod call_state;
pub mod client;
mod client_call;
mod client_conn;
mod codec;
pub mod compression;
pub mod deadline;
mod error;
pub mod error_details;
mod error_policy;
pub mod framing;
mod io;
mod mailbox;
pub mod metadata;
mod pool;
mod preface;
mod protocol;
mod send_queue;
pub mod server;
mod server_call;
mod server_conn;
pub mod status;
mod timers;

pub use client::{CallOptions, Channel, ChannelBuilder};
pub use client_call::{RequestSink, Response, Streaming, UnaryCall};
pub use compression::Encoding;
pub use error::TransportError;
pub use metadata::{Metadata, MetadataError, MetadataValue};
pub use server::{Server, ServerBuilder, ServerHandle};
pub use status::{Code, Status};

/// Includes the code generated for a proto package by
/// `grpc_blocking_codegen::compile_protos` (from `OUT_DIR`).
///
/// In a crate whose `build.rs` compiled a proto of package `nameko`:
///
/// ```text
/// pub mod nameko {
///     grpc_blocking::include_proto!("nameko");
/// }
/// ```
///
/// (`examples/src/lib.rs` in this repository does exactly that.)
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

#[cfg(test)]
mod loopback_tests;
