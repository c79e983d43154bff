//! The blocking gRPC server.
//!
//! [`Server::builder`] takes services (the adapters the code generator
//! emits, such as `ExampleServer::new(MyImpl)`), binds a TCP port, and then
//! either [`Server::serve`]s on the calling thread or [`Server::spawn`]s into
//! the background, returning a [`ServerHandle`] to shut it down.
//!
//! Threading: one acceptor thread; one OS thread at a time per connection,
//! which owns the socket and all HTTP/2 state while it drives it. An idle
//! connection parks (by default at once: [`ServerBuilder::park_idle_connections_after`]),
//! and the thread of a small pool that sees it wake drives it. Unary and
//! server-streaming handlers run on the connection's thread by default
//! ([`UnaryHandlers`]); one that has not returned within
//! [`ServerBuilder::inline_time_limit`] gets its connection handed to a new
//! thread. Client-streaming and bidi handlers run on a pool of worker
//! threads that grows on demand up to
//! [`ServerBuilder::max_concurrent_handlers`] (and
//! [`ServerBuilder::max_handlers_per_peer`] for one client address). A
//! handler may block (on a database, a file, another gRPC call) without
//! slowing other calls down.
//!
//! | file | what |
//! | --- | --- |
//! | `builder.rs`, `config.rs` | the settings and their defaults |
//! | `serve.rs` | a bound server: serve, spawn, shut down |
//! | `acceptor.rs` | new connections, the connection limit, draining at shutdown |
//! | `conn.rs` | one connection's thread |
//! | `dispatch.rs` | routing a request: service, method, compression, where the handler runs |
//! | `link.rs` | what handlers and connection threads say to each other |
//! | `call.rs` | a call as its handler receives it; running the four kinds of handler |
//! | `requests.rs`, `response.rs`, `context.rs` | the request iterator, the response sink, the call's context |
//! | `pool.rs` | the handler threads |
//! | `limits.rs` | what one peer may take: handler threads, connections |
//! | `handoff.rs` | adaptive inline handlers: a connection moves to another thread when its handler blocks |
//! | `error_policy.rs` | handler errors and panics as statuses |
//! | `interceptor.rs`, `intercepted.rs` | code that runs before and after handlers; a service with interceptors of its own |
//! | `service.rs`, `state.rs` | the services, and what every connection shares |
//! | `plugin.rs` | where the standard services (`src/services/`) plug in |
//! | `peer.rs` | where a call came from, and the client's TLS certificate |

mod acceptor;
mod builder;
mod call;
mod config;
mod conn;
mod context;
mod dispatch;
mod error_policy;
mod handoff;
mod intercepted;
mod interceptor;
mod limits;
mod link;
mod peer;
// Used only by the standard services, which features may leave out.
#[cfg_attr(not(any(feature = "health", feature = "reflection")), allow(dead_code))]
pub(crate) mod plugin;
mod pool;
mod requests;
mod response;
mod serve;
pub(crate) mod service;
mod state;

pub use builder::ServerBuilder;
pub use call::{bidi_streaming, client_streaming, server_streaming, unary, ServerCall};
pub use config::UnaryHandlers;
pub use context::ServerContext;
pub use intercepted::InterceptedService;
pub use interceptor::{after_call, AfterCall, CallEnd, CallStart, Extensions, Interceptor};
pub use peer::Peer;
pub use requests::Requests;
pub use response::ResponseSink;
pub use serve::{Server, ServerHandle, ServerStats, ShutdownHandle, StatsHandle};
pub use service::Service;
