//! The `projector` binary, built inside the test package so the process-level
//! tests can start it (`CARGO_BIN_EXE_projector-host`) and kill it.

fn main() -> std::process::ExitCode {
    projector::main()
}
