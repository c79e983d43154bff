//! Generates the code of every proto under `proto/` in one call: nameko-grpc's
//! example service (`nameko.example`), the shop (`acme.shop.v1`, which
//! imports `acme.common.v1` and a well-known type) and the gRPC interop
//! schema (`grpc.testing`). `src/lib.rs` includes them as a module tree with
//! `grpc_blocking::include_protos!()`.

fn main() {
    let protos = [
        "proto/example.proto",
        "proto/acme/shop/v1/shop.proto",
        "proto/grpc/testing/test.proto",
    ];
    if let Err(e) = grpc_blocking_codegen::compile_protos(&protos, &["proto"]) {
        panic!("{e}");
    }
}
