//! PostgreSQL, when the host keeps its state there (`--readmodels
//! postgres://…`): one connection pool per host, the schema every host
//! shares, and a bridge for the blocking code that reads and writes it.
//!
//! Everything lives in the `projector` schema of the database the URL names:
//! - `projections`: each deployed projection's registry entry (JSON) and a
//!   change counter; `modules`: the module bytes, by SHA-256;
//! - `secrets`: what every host must share (the registration secret);
//! - `hosts`: each live host's heartbeat (its lease on being counted);
//! - `readmodels`: one row per read model: its checkpoint, and the lease of
//!   the lane that writes it (owner, epoch, expiry) with the owner's view of
//!   it (state, problem). The epoch is the fencing token: every commit checks
//!   it in the same transaction (ADR 0012);
//! - `dead_letters`: events skipped under `on_error=skip`, per read model;
//! - `documents_<id>`: one table per read model, `(collection, key, doc jsonb)`.
//!
//! Lease times are PostgreSQL's `now()`, never a host's clock.
//!
//! The read-model code runs on blocking threads (a batch commits where the
//! module ran; a module's reads are synchronous calls out of the sandbox), so
//! [`Postgres::block_on`] runs the driver's futures there.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Changes the schema to what this version expects. Run by every host at its
/// start, one host at a time (a transaction-scoped advisory lock), so hosts
/// started together do not race to create the same tables.
const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS projector;
CREATE TABLE IF NOT EXISTS projector.projections (
    name TEXT PRIMARY KEY,
    entry JSONB NOT NULL,
    changed BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS projector.modules (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS projector.secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projector.hosts (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    alive_until TIMESTAMPTZ NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS projector.readmodels (
    id BIGSERIAL PRIMARY KEY,
    projection TEXT NOT NULL,
    name TEXT NOT NULL,
    position BIGINT,
    events BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    state TEXT,
    problem TEXT,
    module TEXT,
    UNIQUE (projection, name)
);
CREATE TABLE IF NOT EXISTS projector.dead_letters (
    readmodel BIGINT NOT NULL REFERENCES projector.readmodels (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    revision BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (readmodel, position)
);
";

/// The advisory lock key the schema change holds (an arbitrary constant: "projectr").
const SCHEMA_LOCK: i64 = 0x7072_6f6a_6563_7472;

/// The session limits of [`Postgres::connect`] (see [`Postgres::connect_with`]).
const DEFAULT_SESSION_LIMIT: Duration = Duration::from_secs(10);

/// Most connections one host opens.
const POOL_SIZE: usize = 24;

/// PostgreSQL cannot be reached (down, restarting, out of connections):
/// queries answer 503 and runners retry until it is back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A connection pool to the shared database, and the runtime its connections run on.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    runtime: tokio::runtime::Handle,
    /// The URL without its password, for messages.
    shown: String,
    /// What the pool connects with, for dedicated connections (deadpool keeps its copy private).
    config: std::sync::Arc<tokio_postgres::Config>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects to `url` and brings the schema up to date. Needs a tokio runtime.
    pub async fn connect(url: &str) -> anyhow::Result<Postgres> {
        Postgres::connect_with(url, DEFAULT_SESSION_LIMIT).await
    }

    /// [`Postgres::connect`], with `limit` as the longest a session of this
    /// host may sit inside a transaction without sending anything, and the
    /// longest a statement waits for a lock. A host frozen in the middle of
    /// a commit (SIGSTOP, a paused VM) holds its read model's row locked;
    /// PostgreSQL ends that session after `limit`, so the host taking the
    /// lane over waits at most that long, and the frozen host, once it
    /// wakes, finds its transaction gone (and then its lease too).
    pub async fn connect_with(url: &str, limit: Duration) -> anyhow::Result<Postgres> {
        let shown = redact(url);
        let mut config: tokio_postgres::Config =
            url.parse().with_context(|| format!("'{shown}' is not a PostgreSQL connection URL"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("projector");
        let ms = limit.as_millis().max(1);
        let given = config.get_options().unwrap_or_default().to_owned();
        // Notices ("already exists, skipping" at every start) are noise in the host's log.
        config.options(format!(
            "{given} -c idle_in_transaction_session_timeout={ms} -c lock_timeout={ms} -c client_min_messages=warning"
        ));
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .context("cannot build the PostgreSQL connection pool")?;
        let pg =
            Postgres { pool, config: std::sync::Arc::new(config), runtime: tokio::runtime::Handle::current(), shown };
        pg.migrate().await.with_context(|| format!("cannot prepare the schema in {}", pg.shown))?;
        Ok(pg)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A pooled connection; [`Unavailable`] when none can be had.
    pub async fn client(&self) -> anyhow::Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable(format!("cannot connect to PostgreSQL at {}: {e}", self.shown)).into())
    }

    /// A new connection of its own, outside the pool, with the task that
    /// drives it: for `LISTEN`, whose notifications arrive on that task.
    pub async fn dedicated(
        &self,
    ) -> anyhow::Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    )> {
        self.config.connect(NoTls).await.with_context(|| format!("cannot connect to PostgreSQL at {}", self.shown))
    }

    /// Runs `future` to completion from blocking code (a batch thread, a
    /// query's thread), or from async code on a multi-threaded runtime by
    /// moving the other tasks off this thread while it waits.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(future))
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // The key=value form: hide the value of `password=`.
        return url
            .split(' ')
            .map(|part| if part.starts_with("password=") { "password=***" } else { part })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod test_pg;

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT 1` through `block_on`.
    fn one(pg: &Postgres) -> i32 {
        pg.block_on(async { pg.client().await?.query_one("SELECT 1", &[]).await.map_err(anyhow::Error::from) })
            .expect("SELECT 1")
            .get(0)
    }

    #[test]
    fn block_on_runs_on_plain_threads_blocking_threads_and_runtime_workers() {
        let database = test_pg::TestDatabase::new();
        let pg = database.pg.clone();
        // block_in_place outside any runtime just runs its closure.
        assert_eq!(one(&pg), 1, "on the test's own thread");
        let runtime = pg.runtime.clone();
        let on_blocking = runtime.block_on({
            let pg = pg.clone();
            async move { tokio::task::spawn_blocking(move || one(&pg)).await }
        });
        assert_eq!(on_blocking.expect("blocking task"), 1, "on a blocking thread");
        let on_worker = runtime.block_on({
            let pg = pg.clone();
            async move { tokio::spawn(async move { one(&pg) }).await }
        });
        assert_eq!(on_worker.expect("task"), 1, "on a worker of the multi-threaded runtime");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://app:s3cr@t@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact("host=db user=app"), "host=db user=app");
        assert_eq!(redact("host=db password=x user=app"), "host=db password=*** user=app");
    }
}
