//! Build-script code generator for [grpc-blocking]: compiles `.proto` files
//! into Rust messages (with [prost-build]) plus, for every service, a
//! blocking service trait, a server adapter and a blocking client. The protos
//! are parsed by [protox], in Rust: no `protoc` is needed anywhere.
//!
//! # Usage
//!
//! In `Cargo.toml`, `grpc-blocking-codegen` is a build dependency and
//! `grpc-blocking` a dependency; nothing else is needed, as the generated
//! code reaches `prost` and the well-known types (`prost-types`) through
//! grpc-blocking's re-exports. The build script is one call, with every
//! proto of the crate:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     if let Err(e) = grpc_blocking_codegen::compile_protos(&["proto/example.proto"], &["proto"]) {
//!         panic!("{e}");
//!     }
//! }
//! ```
//!
//! It writes one file per proto package to `OUT_DIR` (`nameko.rs` for
//! `package nameko;`, `_.rs` for protos without a package), and
//! `_includes.rs`, which includes them all as a tree of modules that follows
//! the packages (`acme.shop.v1` is `acme::shop::v1`, so that packages that
//! import each other find each other). The crate includes that tree:
//!
//! ```text
//! pub mod proto {
//!     grpc_blocking::include_protos!();
//! }
//! use proto::acme::shop::v1::{Shop, ShopClient, ShopServer};
//! ```
//!
//! (Each call writes its own `_includes.rs`: compile every proto of a crate
//! in one call. A single package can also be included on its own, with
//! `grpc_blocking::include_proto!("nameko")` in a module of that name.)
//!
//! [`configure()`] gives a [`Builder`] for the options: output directory,
//! server or client code only, trait methods with default bodies answering
//! `UNIMPLEMENTED`, a file descriptor set, and so on.
//!
//! # Generated code
//!
//! For `service example` in `package nameko`, next to prost's messages:
//!
//! - `trait Example`: one method per rpc, named in snake_case
//!   (`SayHello` -> `say_hello`; Rust keywords become raw identifiers,
//!   `r#type`). The four kinds of rpc take and return:
//!
//!   | rpc                   | server method                                    | returns                  |
//!   |-----------------------|--------------------------------------------------|--------------------------|
//!   | unary                 | `(request, ctx)`                                 | `Result<Reply, Status>`  |
//!   | server streaming      | `(request, ctx, responses: &mut ResponseSink<_>)` | `Result<(), Status>`     |
//!   | client streaming      | `(requests: Requests<_>, ctx)`                   | `Result<Reply, Status>`  |
//!   | bidirectional         | `(requests: Requests<_>, ctx, responses)`        | `Result<(), Status>`     |
//!
//! - `struct ExampleServer<T: Example>`: implements
//!   `grpc_blocking::server::Service` by dispatching on the method name;
//!   pass it to `ServerBuilder::add_service`.
//! - `struct ExampleClient`: a blocking client over a `grpc_blocking::Channel`,
//!   with per rpc a plain call (`unary_unary(request)`); a `_with` variant
//!   taking `CallOptions`, which blocks or streams exactly as the plain call
//!   does; for rpcs that block for one reply (unary, client streaming) a
//!   `_start` variant that returns a handle at once; for client and
//!   bidirectional streaming a `_sender` variant returning a request sink;
//!   and the wire paths as constants (`ExampleClient::UNARY_UNARY_PATH`).
//!
//! Wire paths use the proto names verbatim: `/nameko.example/unary_unary`,
//! or `/example/unary_unary` without a package. Proto comments on services
//! and methods become the doc comments of the generated items.
//!
//! [grpc-blocking]: https://example.invalid/grpc-blocking
//! [prost-build]: https://docs.rs/prost-build
//! [protox]: https://docs.rs/protox

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The examples are build scripts, and a build script is a `fn main`.
#![allow(clippy::needless_doctest_main)]

mod builder;
mod error;
mod generator;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use builder::Builder;
pub use error::{Error, Location, ProtoDiagnostic, ProtoError};

/// Compiles `protos` with the default options and writes the generated Rust
/// code to `OUT_DIR`: the one call a build script makes.
///
/// `protos` are found as given (relative to the package root in a build
/// script) or relative to one of `includes`; imports are resolved in
/// `includes`, and the well-known `google/protobuf/*.proto` files are built
/// in. Prints `cargo:rerun-if-changed` for the protos, their imports and the
/// include directories.
///
/// Same as `configure().compile(protos, includes)`.
///
/// # Errors
///
/// See [`Error`]. Its `Display` names the file and `line:column` of a proto
/// error, so `panic!("{e}")` is all a build script needs.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile(protos, includes)
}

/// A [`Builder`] with the default options, to change some before compiling.
pub fn configure() -> Builder {
    Builder::new()
}
