//! grpc-blocking: a blocking, thread-per-connection gRPC server and client.
//! (Crate docs are written in full once the API settles.)

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
pub mod metadata;
mod pool;
mod preface;
mod protocol;
mod send_queue;
pub mod server;
mod server_call;
mod server_conn;
pub mod status;

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
