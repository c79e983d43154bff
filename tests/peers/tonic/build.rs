//! Compiles the example proto shared with the main workspace, without `protoc`:
//! protox parses it into a `FileDescriptorSet` and tonic-prost-build turns that
//! into messages plus the tonic server stubs.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../examples/proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("example.proto").display()
    );
    let descriptors = protox::compile(["example.proto"], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}
