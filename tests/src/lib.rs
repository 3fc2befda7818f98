//! Helpers shared by the integration tests: a server in a temporary
//! directory on a loopback port, clients for it, and event builders.
//!
//! Nothing here sleeps to wait for readiness: `EmbeddedServer::start` returns
//! once the store is open and the listener is bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventstore::{EventData, ReadStream, ResolvedEvent};
use eventstore_embedded::{Config, EmbeddedServer};
use tempfile::TempDir;
use tokio::net::TcpListener;

mod postgres;
pub use postgres::{fresh_database, PostgresServer};

/// An embedded event store in its own temporary directory.
#[derive(Debug)]
pub struct TestEnv {
    dir: TempDir,
    config: Config,
    server: Option<EmbeddedServer>,
}

impl TestEnv {
    /// A server with default settings.
    pub async fn start() -> TestEnv {
        TestEnv::start_with(|_| {}).await
    }

    /// A server with settings adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::new(dir.path().join("eventstore"));
        adjust(&mut config);
        let server = start_server(config.clone()).await;
        TestEnv { dir, config, server: Some(server) }
    }

    /// The running server.
    pub fn server(&self) -> &EmbeddedServer {
        self.server.as_ref().expect("server is running")
    }

    /// A new official Rust client for the running server.
    pub fn client(&self) -> eventstore::Client {
        self.server().client().expect("client")
    }

    /// The event log file.
    pub fn log_path(&self) -> PathBuf {
        self.config.data_dir.join("events.log")
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server cleanly, leaving its data in place.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops the server and starts it again on the same data and the same
    /// address, so clients connected before reconnect to it.
    pub async fn restart_in_place(&mut self) {
        let addr = self.server().local_addr();
        self.stop().await;
        self.start_at(addr).await;
    }

    /// Starts the (stopped) server again on the same data at `addr`, its
    /// address before it stopped, so clients connected before reconnect to it.
    pub async fn start_at(&mut self, addr: std::net::SocketAddr) {
        assert!(self.server.is_none(), "the server is running");
        let listener = TcpListener::bind(addr).await.expect("bind the same address again");
        self.server = Some(EmbeddedServer::start(listener, self.config.clone()).await.expect("server starts"));
    }

    /// Starts the server again on the same data (on a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.server = Some(start_server(self.config.clone()).await);
    }
}

async fn start_server(config: Config) -> EmbeddedServer {
    let listener = bind_below_ephemeral_range().await;
    EmbeddedServer::start(listener, config).await.expect("server starts")
}

/// A loopback listener on a free port below Linux's ephemeral range
/// (32768-60999). A server restarted in place binds its old port again; a
/// port from the ephemeral range may meanwhile have become the local end of
/// some other test's outgoing connection, and the bind would fail.
async fn bind_below_ephemeral_range() -> TcpListener {
    for _ in 0..200 {
        let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().expect("two bytes"));
        let port = 20_000 + random % 12_000;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// Paths of the WebAssembly modules `build.rs` builds, for the tests and the benchmarks.
pub mod modules {
    /// The `user-directory` example.
    pub const USER_DIRECTORY: &str = env!("WASM_USER_DIRECTORY");
    /// The `signup-stats` example.
    pub const SIGNUP_STATS: &str = env!("WASM_SIGNUP_STATS");
    /// The `inventory` example.
    pub const INVENTORY: &str = env!("WASM_INVENTORY");
    /// A guest that takes every event and does nothing.
    pub const NOOP: &str = env!("WASM_GUEST_NOOP");
    /// A guest that never returns from an event.
    pub const LOOPING: &str = env!("WASM_GUEST_LOOPING");
    /// A guest that allocates without bound on every event.
    pub const HUNGRY: &str = env!("WASM_GUEST_HUNGRY");
}

/// A JSON event of `event_type` with `payload`.
pub fn json_event(event_type: &str, payload: serde_json::Value) -> EventData {
    EventData::json(event_type, &payload).expect("serialisable payload")
}

/// Reads every remaining event of a read.
pub async fn collect(mut read: ReadStream) -> eventstore::Result<Vec<ResolvedEvent>> {
    let mut events = Vec::new();
    while let Some(event) = read.next().await? {
        events.push(event);
    }
    Ok(events)
}

/// How long a test waits for an outcome before it fails: a guard against
/// hangs, not a timing assertion, so generous enough for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A number from the environment variable `name`, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A seeded pseudo-random sequence. Tests print their seed so that a run
/// (its kill points, damage offsets) can be replayed by setting it again.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    /// The sequence seeded from the environment variable `name`, or from the process id.
    pub fn from_env(name: &str) -> Seeded {
        Seeded(env_number(name, u64::from(std::process::id())))
    }

    /// The sequence from `seed`.
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed)
    }

    /// The seed, for the test's log.
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// The next number in `0..below`.
    pub fn below(&mut self, below: u64) -> u64 {
        // Knuth's MMIX linear congruential generator; its high bits are the good ones.
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

/// A child process whose log (stderr) is collected line by line.
#[derive(Debug)]
pub struct LoggedProcess {
    child: std::process::Child,
    /// The address from the `addr=` field of its ready line.
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LoggedProcess {
    /// Spawns `command` and waits for the log line containing `ready`, which
    /// must carry an `addr=` field. Panics with the log if it exits first or
    /// logs an error.
    pub fn start(mut command: std::process::Command, ready: &str) -> LoggedProcess {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the process");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines.next().expect("the process exited before it was ready").expect("log line");
            assert!(!line.contains("ERROR"), "the process failed to start: {line}");
            log.lock().expect("log").push(line.clone());
            if line.contains(ready) {
                let addr = line.split("addr=").nth(1).expect("addr in the ready line");
                break addr.split_whitespace().next().expect("address").to_owned();
            }
        };
        // Keep draining the log so the process never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| kept.lock().expect("log").push(line)));
        LoggedProcess { child, addr, log }
    }

    /// The lines logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and reaps the process.
    pub fn kill(mut self) {
        self.kill_in_place();
    }

    /// `kill -9` and reap, keeping the log to read.
    pub fn kill_in_place(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sets the largest size the process may make a file (`RLIMIT_FSIZE`,
    /// soft limit; `None` lifts it). A write past it fails with `EFBIG`
    /// (the projector binary ignores `SIGXFSZ`): a full disk, for one process,
    /// without privileges.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let limit = libc::rlimit { rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY), rlim_max: libc::RLIM_INFINITY };
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: `limit` is a valid rlimit for the call to read; the old value is not asked for.
        #[allow(unsafe_code)]
        let result = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(result, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
