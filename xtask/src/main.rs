//! Project automation, in Rust rather than shell: the README's two commands.
//!
//! - `cargo xtask run [ARGS...]`: builds the example projections and the
//!   release binary, then runs `projector serve` with the three examples
//!   deployed (or `projector ARGS` when arguments are given).
//! - `cargo xtask test`: installs what the tests need that cargo does not
//!   (the wasm target, the Node.js client, schemathesis in a Python virtual
//!   environment under `target/`, Debian's `postgresql` when PostgreSQL's
//!   programs are missing), builds the example projections to
//!   WebAssembly, then runs every test.
//! - `cargo xtask guests`: builds the example projections to WebAssembly
//!   (into `target-guests/`, a separate target dir so it never waits on the
//!   host build's lock).
//!
//! Both start with `rustup target add wasm32-unknown-unknown`: these machines
//! set `RUSTUP_AUTO_INSTALL=0`, so the target listed in `rust-toolchain.toml`
//! is not installed by itself.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("guests") => add_wasm_target().and_then(|()| build_guests()),
        _ => {
            eprintln!("usage: cargo xtask run [projector args...] | test [cargo test args...] | guests");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn step(what: &str, command: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {what}");
    let status = command.status().with_context(|| format!("cannot start: {command:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn add_wasm_target() -> anyhow::Result<()> {
    step(
        "rustup target add wasm32-unknown-unknown",
        Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
    )
}

fn run(args: &[String]) -> anyhow::Result<()> {
    // `cargo xtask run -- new orders` and `cargo xtask run new orders` alike:
    // this command adds its own `--` before the binary's arguments.
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    add_wasm_target()?;
    let mut command = Command::new(cargo());
    command.current_dir(root()).args(["run", "--release", "--bin", "projector", "--"]);
    if args.is_empty() {
        build_guests()?;
        command.arg("serve");
        let modules = root().join("target-guests/wasm32-unknown-unknown/guest");
        for guest in GUESTS {
            let file = modules.join(format!("{}.wasm", guest.replace('-', "_")));
            command.arg("--deploy").arg(format!("{guest}={}", file.display()));
        }
        eprintln!("xtask: once started, try:");
        eprintln!("  curl http://127.0.0.1:8080/projections");
        eprintln!("  curl http://127.0.0.1:8080/projections/user-directory/collections/users");
        eprintln!("  (append events with any EventStoreDB client to");
        eprintln!("   esdb://admin:$(cat data/eventstore/admin-password)@127.0.0.1:2113?tls=false)");
    } else {
        command.args(args);
    }
    step("cargo run --release --bin projector", &mut command)
}

/// The example projections, built as WebAssembly modules.
const GUESTS: &[&str] = &["user-directory", "signup-stats", "inventory"];

fn build_guests() -> anyhow::Result<()> {
    let mut command = Command::new(cargo());
    command.current_dir(root()).env("CARGO_TARGET_DIR", root().join("target-guests")).args([
        "build",
        "--profile",
        "guest",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    for guest in GUESTS {
        command.args(["--package", guest]);
    }
    step("cargo build --target wasm32-unknown-unknown (example projections)", &mut command)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    add_wasm_target()?;
    build_guests()?;
    let node_dir = root().join("tests/node");
    step(
        "npm ci (the official Node.js client, for the conformance test)",
        Command::new("npm").current_dir(&node_dir).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]),
    )?;
    let schemathesis = install_schemathesis()?;
    install_postgres()?;
    let browser = install_browser()?;
    test_typescript()?;
    test_python()?;
    step(
        "cargo test --workspace",
        Command::new(cargo())
            .current_dir(root())
            .args(["test", "--workspace"])
            .args(args)
            .env("PROJECTOR_NODE_TESTS", "1")
            .env("PROJECTOR_GUEST_LANGUAGES", "1")
            .env("PROJECTOR_SCHEMATHESIS", schemathesis)
            .env("PROJECTOR_BROWSER", browser),
    )
}

/// PostgreSQL's programs, for the servers the tests start (found as
/// `tests/src/postgres.rs` finds them): installs Debian's `postgresql` when
/// `PROJECTOR_PG_BINDIR` is unset and `pg_config --bindir` holds no `initdb`.
fn install_postgres() -> anyhow::Result<()> {
    let bindir = || match std::env::var_os("PROJECTOR_PG_BINDIR") {
        Some(dir) => PathBuf::from(dir),
        None => Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
            .unwrap_or_default(),
    };
    if bindir().join("initdb").is_file() {
        return Ok(());
    }
    eprintln!("xtask: the tests need PostgreSQL's programs (initdb, postgres) and found none; installing them");
    eprintln!("xtask: (or install them yourself and set PROJECTOR_PG_BINDIR to their directory)");
    apt_install("postgresql")?;
    if !bindir().join("initdb").is_file() {
        bail!("PostgreSQL is installed, but its initdb is still not found: set PROJECTOR_PG_BINDIR to its directory");
    }
    Ok(())
}

/// Installs a Debian package (as root, or through sudo).
fn apt_install(package: &str) -> anyhow::Result<()> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    let apt_get = |args: &[&str]| {
        let mut command = Command::new(if root { "env" } else { "sudo" });
        if !root {
            command.arg("env");
        }
        command.args(["DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]).args(args);
        command
    };
    step("apt-get update", &mut apt_get(&["update"]))?;
    step(&format!("apt-get install {package}"), &mut apt_get(&["install", "-y", package]))
}

/// The browser test's Chromium (Debian's, installed when missing; or
/// `PROJECTOR_BROWSER`) and its driver, playwright-core from npm (which
/// downloads no browser); the path of the Chromium executable.
fn install_browser() -> anyhow::Result<PathBuf> {
    let found = || {
        std::env::var_os("PROJECTOR_BROWSER")
            .map(PathBuf::from)
            .into_iter()
            .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from))
            .find(|path| path.is_file())
    };
    if found().is_none() {
        eprintln!("xtask: the console's browser test needs Chromium and found none; installing Debian's chromium");
        apt_install("chromium")?;
    }
    let browser = found().context("chromium is installed, but not found: set PROJECTOR_BROWSER to its path")?;
    step(
        "npm ci (playwright-core, for the console's browser test)",
        Command::new("npm").current_dir(root().join("tests/console")).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]),
    )?;
    Ok(browser)
}

/// The TypeScript SDK and example: installs their pinned packages, runs
/// their own tests and type checks, and builds the example's module and the
/// misbehaving test guests for the host's tests (`languages`).
fn test_typescript() -> anyhow::Result<()> {
    for (dir, what) in
        [("guest-sdk-ts", "the TypeScript SDK"), ("projections/user-directory-ts", "the TypeScript example")]
    {
        let dir = root().join(dir);
        let npm = |args: &[&str]| {
            let mut command = Command::new("npm");
            command.current_dir(&dir).args(args);
            command
        };
        step(&format!("npm ci ({what})"), &mut npm(&["ci", "--no-audit", "--no-fund", "--loglevel=error"]))?;
        step(&format!("npm run typecheck ({what})"), &mut npm(&["run", "--silent", "typecheck"]))?;
        step(&format!("npm test ({what})"), &mut npm(&["test", "--silent"]))?;
    }
    step(
        "npm run test:built (builds the TypeScript example's module and tests it against its source)",
        Command::new("npm").current_dir(root().join("projections/user-directory-ts")).args([
            "run",
            "--silent",
            "test:built",
        ]),
    )?;
    let hostile = root().join("tests/guests-ts");
    step(
        "npm ci (the misbehaving TypeScript test guests)",
        Command::new("npm").current_dir(&hostile).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]),
    )?;
    step(
        "npm run build (the misbehaving TypeScript test guests)",
        Command::new("npm").current_dir(&hostile).args(["run", "--silent", "build"]),
    )
}

/// The Python SDK and example: a virtual environment in
/// `target/python-guests` with the pinned tools and the SDK, their pytest
/// suites, and the example's module for the host's tests (`languages`).
fn test_python() -> anyhow::Result<()> {
    let venv = root().join("target/python-guests");
    let python = venv.join("bin/python");
    if !python.is_file() {
        step("python3 -m venv target/python-guests", Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    // The SDK's extras pin componentize-py and pytest (guest-sdk-py/pyproject.toml).
    let sdk = format!("{}[build,test]", root().join("guest-sdk-py").display());
    step(
        "pip install the Python SDK with its pinned build and test tools",
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", &sdk]),
    )?;
    for (dir, what) in [("guest-sdk-py", "the Python SDK"), ("projections/signup-stats-py", "the Python example")] {
        step(
            &format!("pytest ({what})"),
            Command::new(&python).current_dir(root().join(dir)).args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]),
        )?;
    }
    step(
        "python -m projector_guest.build (the Python example's module)",
        Command::new(&python).current_dir(root().join("projections/signup-stats-py")).args([
            "-m",
            "projector_guest.build",
            "signup_stats:SignupStats",
            "-o",
            "dist/signup_stats_py.wasm",
        ]),
    )
}

/// The schemathesis release the API fuzzing test is run with.
const SCHEMATHESIS: &str = "4.32.5";

/// Installs schemathesis into `target/schemathesis` (a Python virtual
/// environment) unless that release is there already; the path of its `st`.
fn install_schemathesis() -> anyhow::Result<PathBuf> {
    let venv = root().join("target/schemathesis");
    let st = venv.join("bin/st");
    let installed = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains(SCHEMATHESIS));
    if !installed {
        step("python3 -m venv target/schemathesis", Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        step(
            &format!("pip install schemathesis=={SCHEMATHESIS} (for the HTTP API fuzzing test)"),
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("schemathesis=={SCHEMATHESIS}"),
            ]),
        )?;
    }
    Ok(st)
}
