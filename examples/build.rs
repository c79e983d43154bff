//! Generates the `nameko` module (messages, `Example` trait, `ExampleServer`,
//! `ExampleClient`) from `proto/example.proto`, and the `grpc.testing`
//! module (the gRPC interop schema) from `proto/grpc/testing/*.proto`.

fn main() {
    if let Err(e) = grpc_blocking_codegen::compile_protos(&["proto/example.proto"], &["proto"]) {
        panic!("{e}");
    }
    // The interop schema imports its files as `grpc/testing/*.proto`, so the
    // include root is `proto`.
    let interop = [
        "proto/grpc/testing/empty.proto",
        "proto/grpc/testing/messages.proto",
        "proto/grpc/testing/test.proto",
    ];
    if let Err(e) = grpc_blocking_codegen::compile_protos(&interop, &["proto"]) {
        panic!("{e}");
    }
}
