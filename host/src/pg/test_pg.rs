//! A real PostgreSQL server for the host's unit tests: started once per test
//! binary (from the installed binaries, `pg_config --bindir` or `$PG_BINDIR`),
//! a fresh database per test. Test code only; the integration tests have
//! their own (`tests/src/postgres.rs`).
//!
//! The server runs as the `postgres` user (it refuses root), in a data
//! directory under the temporary directory named after this process, and is
//! killed by the kernel when the thread that started it ends: that thread
//! lives as long as the test binary. Directories that earlier test binaries
//! left behind are removed at the next start.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Postgres;

/// A fresh database, its pool, and the runtime the pool's connections run on.
pub(crate) struct TestDatabase {
    pub(crate) pg: Postgres,
    /// Kept alive for `pg`; dropped last.
    _runtime: tokio::runtime::Runtime,
}

impl TestDatabase {
    /// Creates a new database on the test server and connects to it.
    pub(crate) fn new() -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let port = *SERVER.get_or_init(|| start().expect("start PostgreSQL for the unit tests"));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let url = |db: &str| format!("postgres://postgres@127.0.0.1:{port}/{db}");
        let pg = runtime.block_on(async {
            let (admin, connection) =
                tokio_postgres::connect(&url("postgres"), tokio_postgres::NoTls).await.expect("connect as admin");
            tokio::spawn(connection);
            admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a database");
            Postgres::connect(&url(&name)).await.expect("connect to the new database")
        });
        TestDatabase { pg, _runtime: runtime }
    }

    /// Runs `sql` (statements without results), as a test's own hand in the database.
    pub(crate) fn execute(&self, sql: &str) {
        self.pg.block_on(async { self.pg.client().await.expect("client").batch_execute(sql).await.expect(sql) });
    }

    /// The first column of each row `sql` returns, as text.
    pub(crate) fn query_text(&self, sql: &str) -> Vec<String> {
        self.pg.block_on(async {
            let client = self.pg.client().await.expect("client");
            let rows = client.query(sql, &[]).await.expect(sql);
            rows.iter().map(|row| row.get::<_, String>(0)).collect()
        })
    }
}

/// The port of the server this test binary started.
static SERVER: OnceLock<u16> = OnceLock::new();

/// Starts the server on a thread that then waits for it for good.
fn start() -> anyhow::Result<u16> {
    let (started, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("test-postgres".into()).spawn(move || {
        match spawn_server() {
            Ok((mut server, port)) => {
                let _ = started.send(Ok(port));
                // The server's parent-death signal is tied to this thread.
                let _ = server.wait();
            }
            Err(e) => {
                let _ = started.send(Err(e));
            }
        }
    })?;
    let port = outcome.recv()??;
    Ok(port)
}

fn spawn_server() -> anyhow::Result<(std::process::Child, u16)> {
    let bin = bindir()?;
    let user = PostgresUser::look_up()?;
    let temp = std::env::temp_dir();
    remove_leftovers(&temp);
    let dir = temp.join(format!("projector-unit-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    if user.switch {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
    }
    let status = user
        .command(&bin.join("initdb"))
        .args(["--auth=trust", "-U", "postgres", "--no-locale", "-E", "UTF8", "-D"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "initdb failed: {status}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = user
        .command(&bin.join("postgres"))
        .arg("-D")
        .arg(&dir)
        .arg("-k")
        .arg(&dir)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
        // Speed over durability: the data is thrown away.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(temp.join(format!("projector-unit-pg-{}.log", std::process::id())))?)
        .spawn()?;
    // Ready once it answers: at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()?
            .success();
        if ready {
            return Ok((server, port));
        }
        anyhow::ensure!(Instant::now() < deadline, "PostgreSQL did not accept connections within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory of PostgreSQL's programs.
fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(dir.into());
    }
    let output = Command::new("pg_config").arg("--bindir").output().map_err(|e| {
        anyhow::anyhow!("the PostgreSQL unit tests need PostgreSQL installed (pg_config: {e}), or PG_BINDIR set")
    })?;
    Ok(String::from_utf8(output.stdout)?.trim().into())
}

/// Removes the data directories and logs of test binaries that are gone.
fn remove_leftovers(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("projector-unit-pg-").map(|rest| rest.trim_end_matches(".log")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
        }
    }
}

/// The `postgres` system user, whom the programs run as when the tests run as root.
struct PostgresUser {
    uid: u32,
    gid: u32,
    /// Running as root: switch to the user (PostgreSQL refuses to run as root).
    switch: bool,
}

// getpwnam, geteuid and what runs between fork and exec: test code only.
#[allow(unsafe_code)]
impl PostgresUser {
    fn look_up() -> anyhow::Result<PostgresUser> {
        // SAFETY: no arguments, no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(PostgresUser { uid: 0, gid: 0, switch: false });
        }
        // SAFETY: a NUL-terminated name; the entry is read at once, before
        // anything else could call getpwnam.
        let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        anyhow::ensure!(!entry.is_null(), "the PostgreSQL unit tests need a `postgres` system user");
        // SAFETY: not null, so a valid passwd entry.
        let entry = unsafe { &*entry };
        Ok(PostgresUser { uid: entry.pw_uid, gid: entry.pw_gid, switch: true })
    }

    /// `program`, to be run as this user and killed when the spawning thread ends.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        let (uid, gid, switch) = (self.uid, self.gid, self.switch);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let switched =
                    || libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(gid) == 0 && libc::setuid(uid) == 0;
                if switch && !switched() {
                    return Err(std::io::Error::last_os_error());
                }
                // After setuid, which clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }
}
