//! Builds the example projections and the misbehaving test guests to
//! WebAssembly for the runtime tests, and tells the tests where the modules
//! are (`WASM_USER_DIRECTORY`, `WASM_GUEST_LOOPING`, ...).
//!
//! The build runs cargo again with its own target directory
//! (`target-guests/`), so it never waits on the lock of the build that runs
//! this script. It needs the `wasm32-unknown-unknown` target
//! (`rustup target add wasm32-unknown-unknown`, which the README's commands run).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example projections, test-only guests that misbehave on purpose, and
/// one that does nothing (the benchmark's boundary baseline), and one built
/// against the 0.1.0 contract.
const GUESTS: &[(&str, &str)] = &[
    ("user-directory", "user_directory"),
    ("signup-stats", "signup_stats"),
    ("inventory", "inventory"),
    ("guest-looping", "guest_looping"),
    ("guest-hungry", "guest_hungry"),
    ("guest-scribbler", "guest_scribbler"),
    ("guest-panicking", "guest_panicking"),
    ("guest-noop", "guest_noop"),
    ("guest-tally", "guest_tally"),
    ("guest-tally-v2", "guest_tally_v2"),
    ("guest-legacy", "guest_legacy"),
    ("guest-shipments", "guest_shipments"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    for watched in ["wit", "guest-sdk/src", "events/src", "projections", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target-guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--profile", "guest", "--target", "wasm32-unknown-unknown"]);
    for (package, _) in GUESTS {
        command.args(["--package", package]);
    }
    let status = command.status().expect("cannot run cargo to build the example projections");
    assert!(
        status.success(),
        "building the example projections for wasm32-unknown-unknown failed; \
         is the target installed? (`rustup target add wasm32-unknown-unknown`)"
    );
    for (package, file) in GUESTS {
        let path = wasm_path(&target_dir, file);
        let var = format!("WASM_{}", package.replace('-', "_").to_uppercase());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

fn wasm_path(target_dir: &Path, file: &str) -> PathBuf {
    target_dir.join("wasm32-unknown-unknown/guest").join(format!("{file}.wasm"))
}
