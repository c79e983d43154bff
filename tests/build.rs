//! Generates the Rust code of the test protos (one file per proto package in
//! `OUT_DIR`, included by `src/lib.rs`), and a second server side of the
//! example service, with default stubs, for test services that implement
//! only some of its methods.

use std::path::PathBuf;

/// Every test proto, named from the package root; add new ones here.
const PROTOS: &[&str] = &[
    // Codegen coverage (tests/codegen.rs).
    "proto/codegen/noPackage.proto",
    "proto/codegen/common.proto",
    "proto/codegen/nested.proto",
    "proto/codegen/wkt.proto",
    "proto/codegen/two_services.proto",
    "proto/codegen/camel_case.proto",
    "proto/codegen/keywords.proto",
    // Equivalence with grpcio (tests/equivalence.rs, src/equivalence.rs).
    "proto/equivalence.proto",
];

/// Where imports are looked up: `import "codegen/common.proto";`.
const INCLUDES: &[&str] = &["proto"];

fn main() {
    if let Err(e) = grpc_blocking_codegen::compile_protos(PROTOS, INCLUDES) {
        panic!("{e}");
    }
    // `nameko.example` again, server side only, with trait methods that
    // answer UNIMPLEMENTED unless overridden; its messages are the examples
    // crate's (extern_path), so clients of either side interoperate.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("stubbed");
    let stubbed = grpc_blocking_codegen::configure()
        .build_client(false)
        .generate_default_stubs(true)
        .extern_path(".nameko", "::grpc_blocking_examples::nameko")
        .out_dir(out)
        .compile(&["../examples/proto/example.proto"], &["../examples/proto"]);
    if let Err(e) = stubbed {
        panic!("{e}");
    }
}
