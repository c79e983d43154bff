//! Generates the Rust code of the test protos (one file per proto package in
//! `OUT_DIR`, included by `src/lib.rs`).

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
}
