//! [`HostProcess`]: the real `projector` binary as a separate process, for
//! what only a process can show (`kill -9`, resource use, a file size limit,
//! the command-line client).
//!
//! The event store is the test's (so it survives the host); the host
//! follows it through `--eventstore`. The host's log tells the test where
//! its API listens; nothing here waits by sleeping.

use std::path::Path;
use std::process::Command;

use projector_tests::LoggedProcess;

use super::Api;

/// The test build of the `projector` binary.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_projector-host");
/// The admin token every host process is started with.
pub(crate) const TOKEN: &str = "process-test-admin-token";

/// A host process and where its API is.
pub(crate) struct HostProcess {
    process: LoggedProcess,
    api: Api,
}

impl HostProcess {
    /// Starts `projector serve` on `data` and waits for its "listening" log line.
    pub(crate) fn start(data: &Path, eventstore: &str) -> HostProcess {
        HostProcess::start_with(data, eventstore, |_| {})
    }

    /// `start`, with more flags or variables set by `adjust` (`--listen`
    /// wins over the loopback default, which is set by the environment).
    pub(crate) fn start_with(data: &Path, eventstore: &str, adjust: impl FnOnce(&mut Command)) -> HostProcess {
        let mut command = HostProcess::command(data, eventstore);
        adjust(&mut command);
        let process = LoggedProcess::start(command, "projector API listening");
        let addr = process.addr.replace("0.0.0.0", "127.0.0.1");
        let api = Api::new(reqwest::Client::new(), &addr, TOKEN);
        HostProcess { process, api }
    }

    /// `start` with more environment variables (`PROJECTOR_*` settings).
    pub(crate) fn start_with_env(data: &Path, eventstore: &str, env: &[(&str, &str)]) -> HostProcess {
        HostProcess::start_with(data, eventstore, |command| {
            command.envs(env.iter().copied());
        })
    }

    /// The command `start` runs.
    pub(crate) fn command(data: &Path, eventstore: &str) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--eventstore", eventstore])
            .arg("--data")
            .arg(data)
            .env("PROJECTOR_LISTEN", "127.0.0.1:0")
            .env("PROJECTOR_ADMIN_TOKEN", TOKEN)
            .env("PROJECTOR_LOG", "info")
            .env_remove("RUST_LOG");
        command
    }

    /// `start` off the async threads (it blocks until the host logs its address).
    pub(crate) async fn spawn(data: &Path, eventstore: &str) -> HostProcess {
        let (data, eventstore) = (data.to_path_buf(), eventstore.to_owned());
        tokio::task::spawn_blocking(move || HostProcess::start(&data, &eventstore)).await.expect("host")
    }

    /// `start_with` off the async threads.
    pub(crate) async fn spawn_with(
        data: &Path,
        eventstore: &str,
        adjust: impl FnOnce(&mut Command) + Send + 'static,
    ) -> HostProcess {
        let (data, eventstore) = (data.to_path_buf(), eventstore.to_owned());
        tokio::task::spawn_blocking(move || HostProcess::start_with(&data, &eventstore, adjust)).await.expect("host")
    }

    /// Its API.
    pub(crate) fn api(&self) -> &Api {
        &self.api
    }

    /// The lines logged so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.process.log()
    }

    /// The process behind it.
    pub(crate) fn process(&self) -> &LoggedProcess {
        &self.process
    }

    /// `kill -9`.
    pub(crate) fn kill(mut self) {
        self.process.kill_in_place();
    }
}

impl Drop for HostProcess {
    /// A failed test shows what the host logged last.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = self.process.log();
        eprintln!("--- last lines of the log of the host at {} ---", self.process.addr);
        for line in &log[log.len().saturating_sub(25)..] {
            eprintln!("{line}");
        }
    }
}
