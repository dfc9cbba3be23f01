//! Generates the `ferry.v1` types and services from `proto/` at build time.
//! protoc comes from the `protoc-bin-vendored` crate so no system package is
//! needed; the file descriptor set is kept for gRPC server reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Read at run time, not with env!(): a build script compiled in one
    // checkout and reused from a copied target/ must still read this
    // checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["connector.proto", "sync_job.proto", "agent.proto", "fleet.proto"]
        .map(|f| root.join("ferry/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Document sources as `Bytes`: decoding a batch then slices the
        // received buffer instead of copying every document.
        .bytes(".ferry.v1.Document.source")
        .file_descriptor_set_path(out.join("ferry_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
