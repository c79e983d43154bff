//! A blocking, thread-per-connection gRPC server and client for Rust
//! programs that want no async runtime (a connection has a thread while it
//! has work; an idle one parks, holding none).
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
//!   [`RequestSink`]. Calls that block for one reply also have a `_start`
//!   form that returns a handle ([`UnaryCall`]) at once, with the
//!   response's metadata when it ends.
//! - **Code generation** from `build.rs` with the `grpc-blocking-codegen`
//!   crate: no `protoc` needed. The generated code uses this crate's
//!   re-exports of [`prost`] and [`prost_types`], so one dependency line is
//!   enough.
//! - **Wire compatibility** with other gRPC implementations: the headers,
//!   framing, status, `grpc-timeout`, compression (gzip, deflate) and
//!   metadata rules of grpc/grpc `doc/PROTOCOL-HTTP2.md`.
//!
//! - **Transports**: TCP, Unix domain sockets (`unix:` targets,
//!   [`ServerBuilder::bind_unix`]), and TLS or mutual TLS over either with
//!   rustls (the `tls` feature: the `tls` module, `ServerBuilder::tls`,
//!   `ChannelBuilder::tls`, `https://` targets).
//! - **Many servers**: a channel resolves its target (DNS, address lists,
//!   a [`client::Resolver`] of the application's) and balances over the
//!   backends (pick_first, round_robin) with connectivity states,
//!   wait-for-ready, client-side health checking and a
//!   [`client::ServiceConfig`] (per-method timeouts, limits, retries).
//! - **Standard services**: health checking (on by default; the `health`
//!   module) and server reflection v1 and v1alpha
//!   (`ServerBuilder::reflection`; the `reflection` module), the cargo
//!   features `health` and `reflection`.
//! - **Interceptors** on both sides ([`server::Interceptor`],
//!   [`client::Interceptor`]), with per-call metrics, and server statistics
//!   ([`server::ServerStats`]).
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
//! let channel = Channel::connect(server.local_addr())?;
//!
//! // A unary call with metadata.
//! let mut md = Metadata::new();
//! md.insert("x-from", "the docs")?;
//! let options = CallOptions::new().metadata(md);
//! let reply: Hello = channel.unary("/demo.Greeter/SayHello", Hello { name: "world".into() }, options)?;
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
//! # Errors
//!
//! Every call ends in a [`Status`]. A status made on this side from a
//! transport failure keeps its cause ([`Status::transport_error`]), so
//! "the server said UNAVAILABLE" and "the server could not be reached" are
//! told apart. Rich details (`google.rpc.Status` with the standard error
//! detail messages) are in [`error_details`].
//!
//! # Architecture
//!
//! **Threads.** Each connection, server or client side, is one OS thread
//! that owns the socket and all HTTP/2 state (h2, driven without an async
//! runtime) and sleeps in one wait (mio: `epoll_wait` on Linux) on the
//! socket and a wake-up; its sleep's timeout is its timer for deadlines,
//! keepalive and the rest. By default a unary or server-streaming handler
//! runs on the connection thread, and one that has not returned within a
//! millisecond gets the connection handed to a new thread, so it may block;
//! so does a client-streaming handler whose requests all arrive within that
//! millisecond. Bidi handlers, the other client-streaming ones (and every
//! handler under `UnaryHandlers::Workers`) run on a pool of workers
//! that grows on demand up to a bound, per server and per client address.
//! A client call runs on the caller's own thread. Only the connection
//! thread touches h2: everyone else talks to it through queues and a
//! wake-up. A connection without a call for a second (on a server, at
//! once when more than 512 are open) gives its thread up: one thread waits
//! on all such connections, and a small pool drives those that wake
//! (`rt/parking.rs`).
//!
//! **Flow control.** Credit goes back to the peer only as the reading side
//! consumes messages, so a slow reader slows its sender down and memory
//! stays bounded; a sender blocks while its call's queue is full. A stream
//! of one message (a unary or server-streaming request, a unary or
//! client-streaming response) is the exception: its reader takes it whole,
//! so the connection thread credits its bytes as they arrive, up to one
//! message of the largest size allowed, and wakes the reader only for the
//! message's header, for bytes beyond it, and for the end. The reader of a
//! stream of many messages is woken for each whole message, or for each
//! quarter of its window that arrives, not for every chunk
//! (`rt/reader.rs`'s `Credit`).
//!
//! **Wings.** `src/` is laid out by concern; each folder's `mod.rs` lists
//! its files:
//!
//! | folder | what | may import |
//! | --- | --- | --- |
//! | `wire/` | the gRPC wire format as plain functions over bytes: framing, headers, `grpc-timeout`, `grpc-message`, compression, preface sniffing | the shared vocabulary |
//! | `rt/` | the connection-thread machinery both sides share: event loop, timers, keepalive, HTTP/2 settings, mailboxes, reading messages and returning credit, send queues | `wire/`, `transport/`, the vocabulary |
//! | `server/` | builder, acceptor, connection thread, routing, handler pool, the handler's view of a call, interceptors, statistics | `rt/`, `wire/`, `transport/`, the vocabulary |
//! | `client/` | channel, targets and connecting, connection thread, the response state machine, call handles, retries, interceptors | `rt/`, `wire/`, `transport/`, the vocabulary |
//! | `services/` | the standard services (health, reflection): protos, pre-generated code, and the services, plugged in through `server/plugin.rs` | `server/`'s and `client/`'s public API, `rt/sync.rs`, the vocabulary |
//! | `transport/` | the byte streams connections run on: TCP or a Unix socket, with TLS over either; TLS settings | the vocabulary |
//! | top level | the shared vocabulary: [`Status`], [`Code`], [`Metadata`], [`TransportError`], [`error_details`], [`CallContext`], `AfterCall` | each other |
//!
//! `server/` and `client/` never import each other; what both need lives in
//! `rt/` or `wire/`.
//!
//! **A unary call's path**, client to server and back:
//!
//! 1. The caller's thread encodes the request (`wire/codec.rs`), builds the
//!    headers (`wire/headers.rs`) and queues a start command for its
//!    connection thread (`client/link.rs`), then waits on its own mailbox.
//! 2. The client connection thread (`client/conn.rs`) hands headers and
//!    message to h2, which writes them to the socket.
//! 3. The server connection thread (`server/conn.rs`) reads them through
//!    h2, routes the request (`server/dispatch.rs`: service, method,
//!    compression, pool or inline). A unary handler runs right there, on
//!    the connection thread, once the request is in (if it blocks, the
//!    connection moves to a new thread: `server/handoff.rs`); a streaming
//!    one, or a unary one whose request reaches half its stream's
//!    flow-control window, is handed to a worker (`server/pool.rs`), and
//!    the request bytes go to the call's mailbox. A request of one message
//!    gets its credit back from the connection thread as it arrives, up to
//!    one largest message (`rt/reader.rs`'s `Credit`).
//! 4. The handler reads its request from the blocking iterator
//!    (`server/requests.rs`, which returns the flow-control credit of
//!    streaming requests), runs,
//!    and sends its reply and status as commands back to the connection
//!    thread (`server/response.rs`, `server/link.rs`).
//! 5. The server connection thread writes headers, message and trailers;
//!    the client connection thread delivers them to the call's mailbox as
//!    events, and the caller's thread turns them into the reply or a status
//!    (`client/response.rs`).

#![warn(missing_docs)]

// The standard services' pre-generated code names this crate as its users
// see it, `::grpc_blocking`.
extern crate self as grpc_blocking;

mod after_call;
mod call_context;
pub mod client;
mod code;
mod error;
pub mod error_details;
pub mod metadata;
mod rt;
pub mod server;
mod services;
mod status;
mod transport;
mod wire;

pub use call_context::CallContext;
pub use client::{
    CallOptions, Channel, ChannelBuilder, IntoTarget, RequestSink, Response, Streaming, UnaryCall,
};
pub use code::Code;
pub use error::TransportError;
pub use metadata::{Metadata, MetadataError, MetadataValue};
pub use server::{Server, ServerBuilder, ServerHandle};
pub use status::Status;
pub use wire::compression::Encoding;

#[cfg(feature = "health")]
pub use services::health;
#[cfg(feature = "reflection")]
pub use services::reflection;

/// TLS and mutual TLS (the `tls` feature): certificates, keys and roots for
/// [`ServerBuilder::tls`] and [`ChannelBuilder::tls`], and what a handler
/// learns of a client's certificate.
#[cfg(feature = "tls")]
pub use transport::tls;

/// The protobuf runtime the generated code uses, so that a crate needs no
/// `prost` dependency of its own to compile it.
pub use prost;
/// The well-known protobuf types (`Timestamp`, `Duration`, `Any`, ...) the
/// generated code uses for `google/protobuf/*.proto` imports.
pub use prost_types;

/// Internals for the fuzz targets: not part of the API, no semver promise.
#[doc(hidden)]
pub mod internal {
    pub use crate::wire::compression;
    pub use crate::wire::framing;
    pub use crate::wire::grpc_message;
    pub use crate::wire::timeout;
}

/// Includes the code generated for one proto package by
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
/// For packages with dots whose files import each other
/// (`acme.shop.v1` importing `acme.common.v1`), include the whole module
/// tree with [`include_protos!`] instead.
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Includes the code generated for every proto package compiled by
/// `grpc_blocking_codegen::compile_protos`, as a tree of modules that
/// follows the packages (`acme.shop.v1` becomes `acme::shop::v1`), so that
/// packages importing each other find each other.
///
/// ```text
/// mod proto {
///     grpc_blocking::include_protos!();
/// }
/// use proto::acme::shop::v1::ShopClient;
/// ```
#[macro_export]
macro_rules! include_protos {
    () => {
        include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
    };
}

#[cfg(test)]
mod loopback_tests;
