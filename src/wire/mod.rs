//! The gRPC wire format as plain functions over bytes and values: no
//! threads, no sockets, no HTTP/2 state. Everything here is unit-tested
//! beside its code, and the fuzz targets reach it through
//! [`crate::internal`].
//!
//! | file | what |
//! | --- | --- |
//! | `chunks.rs` | a queue of byte chunks that holds its first one in place |
//! | `framing.rs` | the 5-byte length-prefixed message frames |
//! | `codec.rs` | protobuf messages to and from frames: size limits and compression |
//! | `compression.rs` | gzip, deflate, identity; `grpc-accept-encoding` |
//! | `headers.rs` | request, response, trailer and Trailers-Only headers, the status in them, and checking them |
//! | `grpc_message.rs` | the percent-encoded `grpc-message` |
//! | `timeout.rs` | the `grpc-timeout` header |
//! | `reset.rs` | HTTP/2 stream and connection errors as statuses |
//! | `preface.rs` | telling HTTP/2 from HTTP/1.x and garbage on the first bytes |
//! | `goaway.rs` | the bytes that refuse a connection over the limit |
//! | `unix_authority.rs` | dropping `:authority` from requests read over a Unix socket (clients send the socket's path, which h2 refuses) |

pub(crate) mod chunks;
pub(crate) mod codec;
pub mod compression;
pub mod framing;
pub(crate) mod goaway;
pub mod grpc_message;
pub(crate) mod headers;
pub(crate) mod preface;
pub(crate) mod reset;
pub mod timeout;
pub(crate) mod unix_authority;
