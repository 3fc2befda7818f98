//! Compiles the EventStoreDB gRPC contract into server stubs.
//!
//! The `.proto` files are not copied into this repository: they are read from
//! the source of the `eventstore` client crate that cargo already downloaded,
//! so the server and the client can never disagree about the wire format.
//! `protox` parses them in pure Rust, so no system `protoc` is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files that describe the RPCs this server implements, plus their imports.
const PROTOS: &[&str] = &["streams.proto", "persistent.proto", "gossip.proto", "serverfeatures.proto"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let proto_dir = locate_client_protos();
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    let descriptors = protox::compile(&files, [&proto_dir])
        .unwrap_or_else(|e| panic!("cannot parse the eventstore .proto files: {e}"));

    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        // Event payloads are passed through without copying.
        .bytes(["."])
        .extern_path(".event_store.client.Empty", "()")
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("cannot generate gRPC server stubs: {e}"));
}

/// Finds `protos/` inside the downloaded source of the `eventstore` crate.
///
/// `cargo metadata` knows where every dependency's source lives, whatever the
/// source kind (registry, vendored directory, git). The registry layout under
/// `CARGO_HOME` is the fallback when `cargo metadata` cannot run.
fn locate_client_protos() -> PathBuf {
    if let Some(dir) = protos_from_cargo_metadata() {
        return dir;
    }
    if let Some(dir) = protos_from_registry() {
        return dir;
    }
    panic!("cannot find the .proto files of the `eventstore` crate; is it in Cargo.lock?");
}

fn protos_from_cargo_metadata() -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO")?;
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let target = std::env::var("TARGET").ok()?;
    let output = Command::new(cargo)
        .current_dir(manifest_dir)
        .args(["metadata", "--format-version", "1", "--locked", "--filter-platform", &target])
        .output()
        .ok()?;
    if !output.status.success() {
        println!("cargo:warning=cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        return None;
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let packages = metadata.get("packages")?.as_array()?;
    packages
        .iter()
        .filter(|p| p.get("name").and_then(|n| n.as_str()) == Some("eventstore"))
        .filter_map(|p| p.get("manifest_path")?.as_str())
        .map(|manifest| Path::new(manifest).with_file_name("protos"))
        .find(|dir| dir.join("streams.proto").is_file())
}

fn protos_from_registry() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let version = "eventstore-4.0.0";
    std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(version).join("protos"))
        .find(|dir| dir.join("streams.proto").is_file())
}
