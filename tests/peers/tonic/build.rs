//! Compiles the example proto shared with the main workspace, without `protoc`:
//! protox parses it into a `FileDescriptorSet` and tonic-prost-build turns that
//! into messages plus the tonic server stubs and client (for tonic-bench).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: `env!` would bake in wherever the build script was
    // first compiled, which breaks a copied checkout sharing this target dir.
    let proto_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../../examples/proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("example.proto").display()
    );
    let descriptors = protox::compile(["example.proto"], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
