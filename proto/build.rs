//! Generates the Rust types, clients and servers of both protocol packages,
//! and one file descriptor set per package for gRPC reflection.
//!
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::path::PathBuf;

/// One protobuf package: its files, and the descriptor set written for it.
struct Package {
    files: &'static [&'static str],
    descriptor_set: &'static str,
}

const PACKAGES: [Package; 2] = [
    Package {
        files: &[
            "proto/apache/rocketmq/v2/definition.proto",
            "proto/apache/rocketmq/v2/service.proto",
            "proto/apache/rocketmq/v2/admin.proto",
        ],
        descriptor_set: "apache.rocketmq.v2.bin",
    },
    Package {
        files: &[
            "proto/raftmq/v1/status.proto",
            "proto/raftmq/v1/raft.proto",
            "proto/raftmq/v1/queue.proto",
            "proto/raftmq/v1/admin.proto",
            "proto/raftmq/v1/peer.proto",
        ],
        descriptor_set: "raftmq.v1.bin",
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), well_known_types];

    // A directory is watched recursively; listing it alone keeps edits to
    // src/ from rerunning protoc.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    for package in &PACKAGES {
        let files: Vec<PathBuf> = package.files.iter().map(PathBuf::from).collect();
        let mut config = prost_build::Config::new();
        config.protoc_executable(&protoc);
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            // Message bodies and Raft payloads decode as `Bytes` slices of the
            // received buffer instead of fresh copies.
            .bytes(".")
            .file_descriptor_set_path(out_dir.join(package.descriptor_set))
            .compile_with_config(config, &files, &includes)?;
    }
    Ok(())
}
