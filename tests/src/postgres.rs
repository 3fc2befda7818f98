//! A real PostgreSQL server for tests, in a temporary directory on a free
//! loopback port.
//!
//! Why a real server: the PostgreSQL read models and the coordination of
//! several hosts through one database depend on what PostgreSQL itself does
//! (transactions, locks, connections dropped by a restart, durability of a
//! commit). A fake would only test our idea of PostgreSQL.
//!
//! How the binaries are found: the directory in `PROJECTOR_PG_BINDIR` if set,
//! else `pg_config --bindir` (on Debian: `/usr/lib/postgresql/15/bin`, which
//! is not on `PATH`). It must hold `initdb`, `postgres`, `pg_isready` and
//! `psql`. Without them the tests panic with how to install them
//! (`apt-get install postgresql`).
//!
//! What it does: `initdb` (trust authentication, user `postgres`, UTF-8, no
//! locale) into a new temporary directory, then runs `postgres` on it,
//! listening on 127.0.0.1 only (and on a Unix socket in that directory, never
//! in the system's), with `max_connections=200` and the default durability
//! settings (`fsync` on). The server's output goes to `server.log` in the
//! directory; panics quote its tail.
//!
//! - [`PostgresServer::start`] gives a server of one's own, which can be
//!   stopped, killed and started again on the same data and port.
//! - [`PostgresServer::shared`] and [`fresh_database`] give one server per test
//!   binary and a new database on it per test: isolation without paying for
//!   `initdb` in every test.
//!
//! PostgreSQL refuses to run as root. As root (CI containers), the server runs
//! as the `postgres` system user: the child process switches to that user
//! itself, before `exec`, so it *is* the postmaster (no `su` or `runuser` in
//! between).
//!
//! No server outlives the test binary. Dropping a [`PostgresServer`] shuts it
//! down and removes its directory; the shared one is shut down and removed
//! when the binary exits (`atexit`). Should the binary die without exiting
//! (a signal, an abort), the postmaster has a parent-death signal (`SIGKILL`)
//! and its backends exit when they see the postmaster gone; the directory left
//! behind is removed by the next start (its owning process is dead).
//! Linux only (`/proc`, `PR_SET_PDEATHSIG`), like the rest of these tests.
//!
//! Every function blocks (a start takes one to two seconds, mostly `initdb`;
//! a new database about a tenth of a second). They are safe to call from
//! `#[tokio::test(flavor = "multi_thread")]` tests: on a multi-threaded
//! runtime they run inside `tokio::task::block_in_place`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a started server may take to accept connections (crash recovery
/// included).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast or immediate shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the processes of a killed server may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The interval of every bounded wait here.
const POLL: Duration = Duration::from_millis(20);
/// Free ports tried when another process takes the one picked first.
const PORT_ATTEMPTS: usize = 5;
/// The server's settings beyond the defaults. `dynamic_shared_memory_type=mmap`
/// keeps those segments in the data directory, so a server that dies with the
/// test binary leaves nothing in `/dev/shm`.
const SETTINGS: &[&str] = &["listen_addresses=127.0.0.1", "max_connections=200", "dynamic_shared_memory_type=mmap"];

/// A PostgreSQL server in its own temporary directory, on a loopback port.
///
/// ```no_run
/// use projector_tests::PostgresServer;
/// let pg = PostgresServer::start();
/// let url = pg.create_database("orders"); // postgres://postgres@127.0.0.1:PORT/orders
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    /// Holds `data/` (the cluster), `socket/` and `server.log`.
    dir: TempDir,
    /// `dir/data`, canonical: the working directory of every server process.
    data: PathBuf,
    bin: PathBuf,
    /// The user the server runs as when we are root.
    owner: Option<Owner>,
    port: u16,
    /// The running postmaster, if any.
    postmaster: Mutex<Option<Child>>,
}

/// The ids of the user the server runs as.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// Why a postmaster did not come up.
enum LaunchError {
    /// Another process took the port.
    PortInUse,
    /// Anything else, explained.
    Failed(String),
}

impl PostgresServer {
    /// Runs `initdb` in a new temporary directory and starts the server on a
    /// free loopback port; returns once it accepts connections. Panics (with
    /// the server log's tail) if it cannot.
    pub fn start() -> PostgresServer {
        blocking(PostgresServer::start_blocking)
    }

    /// The server shared by every test of this test binary, started on first
    /// use. It cannot be stopped (it is only ever borrowed); it is shut down
    /// when the binary exits. Use [`PostgresServer::fresh_database`] (or
    /// [`fresh_database`]) to keep tests apart.
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        extern "C" fn shut_down_shared() {
            if let Some(server) = SHARED.get() {
                server.shut_down_at_exit();
            }
        }
        SHARED.get_or_init(|| {
            let server = PostgresServer::start();
            // SAFETY: registers a plain function with no arguments; it runs
            // once, when the process exits normally.
            #[allow(unsafe_code)]
            let registered = unsafe { libc::atexit(shut_down_shared) };
            assert_eq!(registered, 0, "atexit failed: the shared PostgreSQL server would outlive the tests");
            server
        })
    }

    /// The URL of the `postgres` database, as the `postgres` superuser (no
    /// password): `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of `database` on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The loopback port the server listens on (the same across
    /// [`PostgresServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (the cluster).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Creates the database `name` (letters, digits and `_`) and returns its
    /// URL. Panics if it exists.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names here are letters, digits and '_', not {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.database_url(name)
    }

    /// Creates a database with a name unique in this process and returns its
    /// URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("test_{}_{n}", std::process::id()))
    }

    /// Runs `sql` with `psql` on `database` as `postgres` and returns what it
    /// printed (unaligned, tuples only, trimmed: `SELECT 1` gives `"1"`).
    /// Panics, with psql's errors, if a statement fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        blocking(|| {
            // No ~/.psqlrc, quiet, unaligned, tuples only, stop at the first error.
            let mut command = self.client_command("psql");
            command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql]);
            let output = run(&mut command);
            assert!(
                output.status.success(),
                "psql failed ({}) on {sql:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_tail()
            );
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        })
    }

    /// Whether the server process is running (it may not yet, or no longer,
    /// accept connections).
    pub fn is_running(&self) -> bool {
        let mut postmaster = self.postmaster();
        match postmaster.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *postmaster = None;
                false
            }
            None => false,
        }
    }

    /// Fast shutdown (`SIGINT`: open sessions are ended, a checkpoint is
    /// written), waiting for every server process to exit. The data stays;
    /// [`PostgresServer::start_again`] starts the server on it. Does nothing
    /// if the server is not running.
    pub fn stop(&mut self) {
        blocking(|| {
            if let Err(e) = self.shut_down(libc::SIGINT) {
                panic!("PostgreSQL did not stop: {e}\n{}", self.log_tail());
            }
        })
    }

    /// `kill -9` of every process of the server, postmaster and backends at
    /// once, as a crash; waits until they are gone. The data stays (whatever
    /// was committed survives: `fsync` is on); the next start recovers from
    /// the WAL. Does nothing if the server is not running.
    pub fn kill(&mut self) {
        blocking(|| {
            let child = self.postmaster().take();
            if let Some(mut child) = child {
                self.kill_all();
                if let Err(e) = child.kill().and_then(|()| child.wait()) {
                    panic!("cannot reap the killed postmaster: {e}");
                }
            }
            if let Err(e) = self.wait_until_gone(KILL_TIMEOUT) {
                panic!("{e}");
            }
        })
    }

    /// Starts the stopped (or killed) server again, on the same data and the
    /// same port, so clients configured before reach it; returns once it
    /// accepts connections. Panics if it is running, or if another process
    /// took the port meanwhile.
    pub fn start_again(&mut self) {
        blocking(|| {
            assert!(!self.is_running(), "PostgreSQL is already running");
            match self.launch() {
                Ok(()) => {}
                Err(LaunchError::PortInUse) => panic!(
                    "PostgreSQL cannot start again: another process took port {}\n{}",
                    self.port,
                    self.log_tail()
                ),
                Err(LaunchError::Failed(e)) => panic!("PostgreSQL did not start again: {e}"),
            }
        })
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        const TAIL: u64 = 4000;
        let path = self.log_path();
        let len = fs::metadata(&path).map_or(0, |metadata| metadata.len());
        match read_from(&path, len.saturating_sub(TAIL)) {
            Ok(text) => format!("--- end of {} ---\n{text}", path.display()),
            Err(e) => format!("(no server log: {e})"),
        }
    }

    /// The postmaster slot. A panic while it was held (poisoning) leaves
    /// nothing half-done, and `Drop` must not panic.
    fn postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        self.postmaster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn start_blocking() -> PostgresServer {
        let bin = bindir();
        let owner = server_owner();
        let base = if owner.is_some() {
            // Reachable by the `postgres` user, whatever TMPDIR says.
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        remove_stale_dirs(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .expect("a temporary directory for PostgreSQL");
        if owner.is_some() {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                .expect("make the PostgreSQL directory reachable by the postgres user");
        }
        for sub in ["data", "socket"] {
            let path = dir.path().join(sub);
            fs::create_dir(&path).expect("a PostgreSQL directory");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("PostgreSQL directory permissions");
            if let Some(owner) = owner {
                std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid))
                    .expect("give the PostgreSQL directory to the postgres user");
            }
        }
        let data = fs::canonicalize(dir.path().join("data")).expect("the data directory's path");
        let mut server = PostgresServer { dir, data, bin, owner, port: 0, postmaster: Mutex::new(None) };
        server.initdb();
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(LaunchError::PortInUse) if attempt < PORT_ATTEMPTS => continue,
                Err(LaunchError::PortInUse) => {
                    panic!("PostgreSQL found no free port in {PORT_ATTEMPTS} attempts\n{}", server.log_tail())
                }
                Err(LaunchError::Failed(e)) => panic!("PostgreSQL did not start: {e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn initdb(&self) {
        let mut command = self.server_command("initdb");
        command.arg("-D").arg(&self.data).args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-locale",
            // Only the cluster's creation skips fsync; the server keeps it on.
            "--no-sync",
        ]);
        let output = run(&mut command);
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the postmaster on `self.port` and waits until it accepts
    /// connections.
    fn launch(&self) -> Result<(), LaunchError> {
        let log_path = self.log_path();
        let log = OpenOptions::new().create(true).append(true).open(&log_path).expect("open the PostgreSQL log");
        let log_start = log.metadata().expect("the PostgreSQL log's size").len();
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path().join("socket"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the PostgreSQL log"))
            .stderr(log);
        for setting in SETTINGS {
            command.args(["-c", setting]);
        }
        // On the long-lived spawner thread: the parent-death signal follows
        // the thread that forked, not the process.
        let child = on_spawner_thread(move || command.spawn())
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join("postgres").display()));
        *self.postmaster() = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = {
                let mut postmaster = self.postmaster();
                let child = postmaster.as_mut().expect("the postmaster just started");
                match child.try_wait().expect("the postmaster's status") {
                    Some(status) => {
                        *postmaster = None;
                        Some(status)
                    }
                    None => None,
                }
            };
            if let Some(status) = exited {
                let text = read_from(&log_path, log_start).unwrap_or_default();
                if text.contains("Address already in use") {
                    return Err(LaunchError::PortInUse);
                }
                return Err(LaunchError::Failed(format!("the postmaster exited ({status})\n{}", self.log_tail())));
            }
            let ready = run(self.client_command("pg_isready").args(["-q", "-d", "postgres", "-t", "1"]));
            // 0: accepting; 1: rejecting (starting up, recovering); 2: no answer yet.
            match ready.status.code() {
                Some(0) => return Ok(()),
                Some(1 | 2) => {}
                _ => {
                    return Err(LaunchError::Failed(format!(
                        "pg_isready failed ({}): {}",
                        ready.status,
                        String::from_utf8_lossy(&ready.stderr)
                    )))
                }
            }
            if Instant::now() >= deadline {
                let _ = self.shut_down(libc::SIGQUIT);
                return Err(LaunchError::Failed(format!(
                    "no connection accepted within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` to the postmaster and waits until every server process
    /// is gone (after `STOP_TIMEOUT`, kills them all and reports an error).
    fn shut_down(&self, signal: libc::c_int) -> Result<(), String> {
        let Some(mut child) = self.postmaster().take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a process id fits pid_t");
        // SAFETY: sends a signal to our own child, which we have not reaped.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut outcome = Ok(());
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    outcome = Err(format!("the postmaster ignored signal {signal} for {STOP_TIMEOUT:?}; killed"));
                    self.kill_all();
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Err(e) => {
                    outcome = Err(format!("cannot wait for the postmaster: {e}"));
                    break;
                }
            }
        }
        // The postmaster waits for its children, but make sure.
        if self.wait_until_gone(Duration::ZERO).is_err() {
            self.kill_all();
            self.wait_until_gone(KILL_TIMEOUT)?;
        }
        outcome
    }

    /// Removes what a killed server leaves outside its directory (its System V
    /// shared memory segment), when the server will not start again.
    fn release_leftovers(&self) {
        if !self.is_running() && server_processes(&self.data).is_empty() {
            remove_shared_memory(&self.data);
        }
    }

    /// The shared server's end: shut down at once (its data is thrown away)
    /// and remove its directory. Never panics (it runs inside `exit`).
    fn shut_down_at_exit(&self) {
        if let Err(e) = self.shut_down(libc::SIGQUIT) {
            eprintln!("shared PostgreSQL server: {e}");
        }
        self.release_leftovers();
        let _ = fs::remove_dir_all(self.dir.path());
    }

    /// `SIGKILL` to every process of the server.
    fn kill_all(&self) {
        for pid in server_processes(&self.data) {
            // SAFETY: sends a signal; `pid` runs in our server's data directory.
            #[allow(unsafe_code)]
            let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Waits up to `timeout` until no process runs in the data directory.
    fn wait_until_gone(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = server_processes(&self.data);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("PostgreSQL processes {left:?} still running after {timeout:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// A server program (`initdb`, `postgres`), run as the server's user and
    /// killed if the thread that spawned it ends.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path());
        clean_env(&mut command);
        let owner = self.owner;
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure only makes system calls
        // (no allocation, no locks), which is what `pre_exec` allows.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                if let Some(Owner { uid, gid }) = owner {
                    if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // After the user change, which clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the call above.
                if u32::try_from(libc::getppid()) != Ok(parent) {
                    return Err(io::Error::other("the test process is gone"));
                }
                Ok(())
            })
        };
        command
    }

    /// A client program (`psql`, `pg_isready`) aimed at this server.
    fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        clean_env(&mut command);
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"]);
        command
    }
}

impl Drop for PostgresServer {
    /// Immediate shutdown (`SIGQUIT`: the data is thrown away), waiting for
    /// every server process; then the directory goes. Never panics.
    fn drop(&mut self) {
        if let Err(e) = self.shut_down(libc::SIGQUIT) {
            eprintln!("PostgreSQL server: {e}");
        }
        self.release_leftovers();
    }
}

/// A new database on the [shared server](PostgresServer::shared); its URL.
pub fn fresh_database() -> String {
    PostgresServer::shared().fresh_database()
}

/// The temporary directories' name: `projector-pg-PID-XXXXXX`.
const DIR_PREFIX: &str = "projector-pg-";

/// Removes the directories left in `base` by test processes that died
/// without cleaning up (killed, aborted).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        #[allow(unsafe_code)]
        let gone = unsafe { libc::kill(pid, 0) } != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let data = entry.path().join("data");
        if gone && server_processes(&data).is_empty() {
            remove_shared_memory(&data);
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the System V shared memory segment of the dead server on `data`,
/// if it is still there and nothing uses it. A clean shutdown removes it; a
/// killed postmaster leaves it (56 bytes: PostgreSQL keeps its real shared
/// memory elsewhere) until a server starts on the same data.
fn remove_shared_memory(data: &Path) {
    // Line 7 of postmaster.pid: the segment's key and id.
    let Some(id) = fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|pid_file| pid_file.lines().nth(6)?.split_whitespace().nth(1)?.parse::<libc::c_int>().ok())
    else {
        return;
    };
    // SAFETY: `segment` is plain data, written by IPC_STAT; IPC_RMID reads nothing.
    #[allow(unsafe_code)]
    unsafe {
        let mut segment: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut segment) == 0 && segment.shm_nattch == 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// The processes whose working directory is `data`: a PostgreSQL server's
/// postmaster and backends (the postmaster moves into its data directory,
/// its children inherit it; backends are each in their own process group, so
/// the directory is what they share). Zombies have none, so are not counted.
fn server_processes(data: &Path) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data))
        .collect()
}

/// The directory of the PostgreSQL programs.
fn bindir() -> PathBuf {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR
        .get_or_init(|| {
            let dir = match std::env::var_os("PROJECTOR_PG_BINDIR") {
                Some(dir) => PathBuf::from(dir),
                None => match Command::new("pg_config").arg("--bindir").output() {
                    Ok(output) if output.status.success() => {
                        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
                    }
                    _ => PathBuf::new(),
                },
            };
            if !dir.join("initdb").is_file() || !dir.join("postgres").is_file() {
                panic!(
                    "these tests need PostgreSQL's programs (initdb, postgres, pg_isready, psql) and found none \
                     (looked in {}). Install them with `apt-get install postgresql` (Debian, Ubuntu; \
                     `cargo xtask test` does it), or point PROJECTOR_PG_BINDIR at their directory.",
                    if dir.as_os_str().is_empty() {
                        "`pg_config --bindir`: no pg_config on PATH".to_owned()
                    } else {
                        dir.display().to_string()
                    }
                )
            }
            dir
        })
        .clone()
}

/// Who the server runs as: ourselves, or, as root (which PostgreSQL refuses),
/// the `postgres` system user.
fn server_owner() -> Option<Owner> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return None;
    }
    let name = c"postgres";
    // SAFETY: passwd is plain data; getpwnam_r fills it, pointing into `buf`,
    // which outlives its reads below.
    #[allow(unsafe_code)]
    let ids = unsafe {
        let mut passwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let status = libc::getpwnam_r(name.as_ptr(), &mut passwd, buf.as_mut_ptr(), buf.len(), &mut found);
        (status == 0 && !found.is_null()).then_some(Owner { uid: passwd.pw_uid, gid: passwd.pw_gid })
    };
    Some(ids.expect(
        "running as root, and PostgreSQL refuses to run as root: it runs as the `postgres` user, which does not \
         exist (`apt-get install postgresql` creates it)",
    ))
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("the bound port").port()
}

/// The text of the file at `path` from byte `offset` on (a log: lossy UTF-8).
fn read_from(path: &Path, offset: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs a short command to completion.
fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// No `PG*` variables (`PGHOST`, `PGSSLMODE`...) from the developer's shell,
/// and untranslated messages (the log is searched for "Address already in use").
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|key| key.starts_with("PG")) {
            command.env_remove(key);
        }
    }
    command.env("LC_ALL", "C");
}

/// Runs `job` on a thread that lives as long as the process. A child's
/// parent-death signal fires when the *thread* that forked it ends; test
/// threads end with their test, this one only with the process.
fn on_spawner_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("postgres-spawner".into())
            .spawn(move || jobs.into_iter().for_each(|job| job()))
            .expect("start the PostgreSQL spawner thread");
        sender
    });
    let (result_sender, result) = mpsc::sync_channel(1);
    spawner
        .send(Box::new(move || {
            let _ = result_sender.send(job());
        }))
        .expect("the spawner thread runs as long as the process");
    result.recv().expect("the spawner thread ran the job")
}

/// Runs blocking `f`, telling a multi-threaded tokio runtime it blocks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
