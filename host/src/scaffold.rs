//! `projector new`: a projection project of one's own, outside this
//! repository, in Rust, TypeScript or Python, that tests and builds with
//! its language's usual commands.
//!
//! Each holds a small working projection (`ItemAdded` events summed per
//! item) with its native tests, depends on this checkout's SDK for its
//! language by path, and pins the build tools: a Rust crate is its own
//! workspace with the release profile a module wants (LTO, one codegen
//! unit, no debug info); a TypeScript package pins esbuild and
//! componentize-js; a Python project pins componentize-py and pytest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::{Lang, NewArgs};

/// The files of a project in `lang`: (path, template).
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml.in")),
            ("src/lib.rs", include_str!("../templates/rust/lib.rs.in")),
            ("README.md", include_str!("../templates/rust/README.md.in")),
            (".gitignore", include_str!("../templates/rust/gitignore.in")),
        ],
        Lang::Ts => &[
            ("package.json", include_str!("../templates/ts/package.json.in")),
            ("tsconfig.json", include_str!("../templates/ts/tsconfig.json.in")),
            ("src/projection.ts", include_str!("../templates/ts/projection.ts.in")),
            ("test/projection.test.ts", include_str!("../templates/ts/projection.test.ts.in")),
            ("test-built/module.test.ts", include_str!("../templates/ts/module.test.ts.in")),
            ("README.md", include_str!("../templates/ts/README.md.in")),
            (".gitignore", include_str!("../templates/ts/gitignore.in")),
        ],
        Lang::Python => &[
            // `projection.py`, not the project's name: a name like `json` or
            // `email` would hide the standard library's module of that name.
            ("projection.py", include_str!("../templates/python/projection.py.in")),
            ("tests/test_projection.py", include_str!("../templates/python/test_projection.py.in")),
            ("requirements.txt", include_str!("../templates/python/requirements.txt.in")),
            ("README.md", include_str!("../templates/python/README.md.in")),
            (".gitignore", include_str!("../templates/python/gitignore.in")),
        ],
    }
}

/// The SDK for `lang` in the source tree this binary was built from, if it is still there.
fn bundled_sdk(lang: Lang) -> Option<PathBuf> {
    let dir = match lang {
        Lang::Rust => "guest-sdk",
        Lang::Ts => "guest-sdk-ts",
        Lang::Python => "guest-sdk-py",
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir).canonicalize().ok()
}

/// The file that marks an SDK directory for `lang`.
fn sdk_manifest(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Cargo.toml",
        Lang::Ts => "package.json",
        Lang::Python => "pyproject.toml",
    }
}

/// What to run next, for the message.
fn next_steps(lang: Lang, name: &str, file: &str, type_name: &str) -> String {
    match lang {
        Lang::Rust => format!(
            "cargo test\n  cargo build --release --target wasm32-unknown-unknown\n  projector deploy {name} target/wasm32-unknown-unknown/release/{file}.wasm"
        ),
        Lang::Ts => format!(
            "npm install\n  npm test\n  npm run test:built    # builds, then tests the built module\n  projector deploy {name} dist/{file}.wasm"
        ),
        Lang::Python => format!(
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\n  .venv/bin/python -m pytest\n  \
             .venv/bin/python -m projector_guest.build projection:{type_name} -o dist/{file}.wasm\n  projector deploy {name} dist/{file}.wasm"
        ),
    }
}

/// Creates the project and says what to do next.
pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let lang = args.lang;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match args.sdk.or_else(|| bundled_sdk(lang)) {
        Some(sdk) => sdk,
        None => bail!("cannot find the {lang} SDK: pass --sdk PATH, its directory in a Projector checkout"),
    };
    let sdk = sdk.canonicalize().with_context(|| format!("the SDK at {}", sdk.display()))?;
    if !sdk.join(sdk_manifest(lang)).is_file() {
        bail!("{} is not the {lang} SDK (it has no {})", sdk.display(), sdk_manifest(lang));
    }
    if dir.exists() && dir.read_dir().map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let file = args.name.replace('-', "_");
    let type_name = type_name(&args.name);
    let sdk_text = sdk.display().to_string();
    let fill = |template: &str| {
        let sdk = match lang {
            Lang::Rust => format!("path = {}", toml_string(&sdk_text)),
            Lang::Ts | Lang::Python => sdk_text.clone(),
        };
        template
            .replace("{{name}}", &args.name)
            .replace("{{file}}", &file)
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &sdk)
    };
    for (path, template) in templates(lang) {
        let path = dir.join(fill(path));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(template)).with_context(|| format!("writing {}", path.display()))?;
    }
    crate::client::say(format_args!(
        "created {} (a {lang} projection; the SDK from {})\nnext:\n  cd {}\n  {}",
        dir.display(),
        sdk.display(),
        dir.display(),
        next_steps(lang, &args.name, &file, &type_name),
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
