//! Generates the `nameko` module (messages, `Example` trait, `ExampleServer`,
//! `ExampleClient`) from `proto/example.proto`.

fn main() {
    if let Err(e) = grpc_blocking_codegen::compile_protos(&["proto/example.proto"], &["proto"]) {
        panic!("{e}");
    }
}
