//! Shared code of the grpc-blocking integration tests: the Rust code
//! generated from the test protos under `proto/` (by `build.rs`), and the
//! machinery the tests in `tests/` use.
//!
//! Generated modules mirror the proto packages from the crate root (package
//! `a.b.c` is module `a::b::c`), because generated code reaches the messages
//! of other packages through `super::` paths.

/// Helpers shared by the tests (timeouts, servers, thread counts).
pub mod support;

/// Backends that answer with their name, in this process or a child one,
/// for the many-servers tests.
pub mod fleet;

/// Network namespaces joined by veth links a test can cut.
pub mod netns;

/// A raw HTTP/2 gRPC client, for requests our own client never sends.
pub mod raw_h2;

/// A raw HTTP/2 peer written frame by frame over a TCP socket, for the
/// hardening tests' malformed, partial and abusive input.
pub mod raw;

/// A gRPC server written frame by frame that records the frames its
/// clients send, for the half-close tests.
pub mod frame_recorder;

/// The process side of the equivalence tests' peers: server and driver
/// processes, waits with timeouts.
pub mod peer_process;

/// The grpcio (Python) peers of the equivalence tests: virtualenv, server,
/// client driver.
pub mod python;

/// The grpc-js (Node.js) peers of the equivalence tests: `npm ci` install,
/// server, client driver.
pub mod node;

/// The equivalence tests' service (`proto/equivalence.proto`) implemented
/// with grpc-blocking, and the driver of the four client/server pairings.
pub mod equivalence;

/// The behaviours the equivalence tests run in every pairing.
pub mod behaviours;

/// nginx as a gRPC proxy (`grpc_pass`) in front of three of our servers,
/// for the proxy tests and the `via Nginx` pairings.
pub mod nginx;

/// Protos without a package (`_.rs`): `proto/codegen/noPackage.proto`.
pub mod no_package {
    grpc_blocking::include_proto!("_");
}

/// Package `a` (only nested packages below it).
pub mod a {
    /// Package `a.b` (only nested packages below it).
    pub mod b {
        /// Package `a.b.c`: `proto/codegen/nested.proto`.
        pub mod c {
            grpc_blocking::include_proto!("a.b.c");
        }
    }
}

/// Packages `codegen.*`: the protos of the code generator's tests
/// (`proto/codegen/`, tested by `tests/codegen.rs`).
pub mod codegen {
    /// Package `codegen.camel`: `camel_case.proto`.
    pub mod camel {
        grpc_blocking::include_proto!("codegen.camel");
    }
    /// Package `codegen.common`: `common.proto`.
    pub mod common {
        grpc_blocking::include_proto!("codegen.common");
    }
    /// Package `codegen.keywords`: `keywords.proto`.
    pub mod keywords {
        grpc_blocking::include_proto!("codegen.keywords");
    }
    /// Package `codegen.multi`: `two_services.proto`.
    pub mod multi {
        grpc_blocking::include_proto!("codegen.multi");
    }
    /// Package `codegen.wkt`: `wkt.proto`.
    pub mod wkt {
        grpc_blocking::include_proto!("codegen.wkt");
    }
}

/// The example service's server side (`nameko.example`) generated with
/// default stubs: a test service implements only the methods it needs and
/// the rest answer `UNIMPLEMENTED`. Messages are the examples crate's.
pub mod stubbed {
    include!(concat!(env!("OUT_DIR"), "/stubbed/nameko.rs"));
}

/// Test certificates made at test time (CA, server, client, expired,
/// wrong-name, untrusted).
pub mod certs;
