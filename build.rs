//! Compiles the Jaeger api_v2 model (`proto/jaeger/model.proto`) with prost,
//! plus proto3-JSON serde impls from pbjson (for the `jaeger_json` encoding).
//! protoc comes vendored, so builds need no system protobuf install.

use std::path::PathBuf;

type BuildResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> BuildResult {
    let proto_dir = PathBuf::from("proto");
    let model = proto_dir.join("jaeger/model.proto");
    println!("cargo:rerun-if-changed={}", model.display());

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("jaeger_descriptors.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    prost_build::Config::new()
        .protoc_executable(protoc)
        .file_descriptor_set_path(&descriptors)
        // Timestamp/Duration come from pbjson-types, which carry the
        // RFC 3339 / "1.5s" JSON forms that protobuf-JSON requires.
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&[model], &[proto_dir, well_known])?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        // Tolerate fields added by newer Jaeger versions.
        .ignore_unknown_fields()
        .build(&[".jaeger.api_v2"])?;
    Ok(())
}
