//! `projector new`: a projection crate of one's own, outside this
//! repository, that builds and tests with plain cargo commands.
//!
//! The crate is its own workspace with the release profile a module wants
//! (LTO, one codegen unit, no debug info), depends on the guest SDK by path,
//! and holds a small projection with its native tests, so `cargo test` and
//! `cargo build --release --target wasm32-unknown-unknown` work at once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::NewArgs;

/// The SDK of the source tree this binary was built from, if it is still there.
fn bundled_sdk() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk").canonicalize().ok()
}

/// Creates the crate and says what to do next.
pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match args.sdk.or_else(bundled_sdk) {
        Some(sdk) => sdk,
        None => bail!("cannot find the guest SDK: pass --sdk PATH, the guest-sdk directory of a Projector checkout"),
    };
    let sdk = sdk.canonicalize().with_context(|| format!("the SDK at {}", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the guest SDK (it has no Cargo.toml)", sdk.display());
    }
    if dir.exists() && dir.read_dir().map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", &args.name)
            .replace("{{file}}", &args.name.replace('-', "_"))
            .replace("{{type}}", &type_name(&args.name))
            .replace("{{sdk}}", &format!("path = {}", toml_string(&sdk.display().to_string())))
    };
    let files = [
        ("Cargo.toml", include_str!("../templates/rust/Cargo.toml.in")),
        ("src/lib.rs", include_str!("../templates/rust/lib.rs.in")),
        ("README.md", include_str!("../templates/rust/README.md.in")),
        (".gitignore", include_str!("../templates/rust/gitignore.in")),
    ];
    for (file, template) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(template)).with_context(|| format!("writing {}", path.display()))?;
    }
    crate::client::say(format_args!(
        "created {} (a Rust projection; the SDK from {})\nnext:\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-unknown-unknown\n  projector deploy {} target/wasm32-unknown-unknown/release/{}.wasm",
        dir.display(),
        sdk.display(),
        dir.display(),
        args.name,
        args.name.replace('-', "_"),
    ));
    Ok(())
}

/// A projection name that is also a crate name: `[a-z][a-z0-9-]{0,62}`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 63 && !name.ends_with('-') {
        Ok(())
    } else {
        bail!("'{name}' cannot name a projection crate: use a lowercase letter, then lowercase letters, digits and '-' (at most 63)")
    }
}

/// `order-totals` -> `OrderTotals`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A TOML basic string (JSON's string escapes are valid in TOML).
fn toml_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{check_name, type_name};

    #[test]
    fn names_become_crate_and_type_names() {
        assert_eq!(type_name("orders"), "Orders");
        assert_eq!(type_name("order-totals2"), "OrderTotals2");
        for good in ["orders", "order-totals", "o2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2orders", "Orders", "order_totals", "orders-", "a/b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
