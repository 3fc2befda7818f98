//! The `projector` binary; everything it does is library code
//! (`projector::main`), so tests run the same thing.

fn main() -> std::process::ExitCode {
    projector::main()
}
