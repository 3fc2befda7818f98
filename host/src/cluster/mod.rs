//! Several hosts over one PostgreSQL: who is alive, and which host runs
//! which lane (ADR 0012).
//!
//! Every host heartbeats into `projector.hosts`; a lane (one read model and
//! its runner) runs on the host that holds its lease in
//! `projector.readmodels`. Taking a lane bumps its epoch; the epoch is the
//! fencing token every commit of that lane checks in its own transaction
//! (`readmodel/`), so a host that lost its lease while paused can never
//! commit again. Every time here is PostgreSQL's `now()`: the hosts' clocks
//! never decide anything.
//!
//! This module only speaks SQL; the deployments' keeper
//! (`deployments/keeper.rs`) decides when to heartbeat, renew, take and let go.

use std::time::Duration;

use crate::pg::Postgres;

mod config;

pub use config::Storage;

/// How a host takes part in a shared deployment.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The PostgreSQL URL (with its password; never logged).
    pub url: String,
    /// This host's name among the others.
    pub host_id: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
}

/// This host's view of the others, and its leases.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) pg: Postgres,
    /// This host's name among the others.
    pub(crate) host_id: String,
    /// How long a lease or a heartbeat lasts without renewal.
    pub(crate) lease: Duration,
    /// Where this host's API listens, shown to the others.
    pub(crate) url: String,
}

/// The advisory lock key deployment changes hold ("changes!").
const CHANGES_LOCK: i64 = 0x6368_616e_6765_7321;

/// One host's hold on the deployment-change lock; dropping it closes its connection, which releases it.
#[derive(Debug)]
pub struct SharedLock {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Who runs a lane, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The host holding the lease.
    pub host: String,
    /// Whether the lease is still valid (else any host may take it).
    pub valid: bool,
}

impl Cluster {
    /// Connects to the shared database and announces this host.
    pub async fn join(config: &ClusterConfig, url: String) -> anyhow::Result<Cluster> {
        let pg = Postgres::connect_with(&config.url, config.lease).await?;
        let cluster = Cluster { pg, host_id: config.host_id.clone(), lease: config.lease, url };
        cluster.heartbeat().await?;
        Ok(cluster)
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis().try_into().unwrap_or(i64::MAX)
    }

    /// Announces this host alive for one more lease.
    pub(crate) async fn heartbeat(&self) -> anyhow::Result<()> {
        self.pg
            .client()
            .await?
            .execute(
                "INSERT INTO projector.hosts (id, url, alive_until)
                 VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, alive_until = excluded.alive_until",
                &[&self.host_id, &self.url, &self.lease_ms()],
            )
            .await?;
        Ok(())
    }

    /// Waits until no other host is making a deployment change, and keeps
    /// them waiting until the returned lock is dropped (a session-level
    /// advisory lock on a connection of its own: it ends with the connection,
    /// also when this host dies mid-change).
    pub(crate) async fn change_lock(&self) -> anyhow::Result<SharedLock> {
        let (client, connection) = self.pg.dedicated().await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        client.batch_execute("SET lock_timeout = '60s'").await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&CHANGES_LOCK])
            .await
            .map_err(|e| anyhow::anyhow!("another host's deployment change held the lock for over a minute: {e}"))?;
        Ok(SharedLock { _client: client, driver })
    }

    /// The secret every host shares under `name`, created by the first host that asks.
    pub(crate) async fn shared_secret(&self, name: &str, generate: impl FnOnce() -> String) -> anyhow::Result<String> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO projector.secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &generate()],
            )
            .await?;
        let row = client.query_one("SELECT value FROM projector.secrets WHERE name = $1", &[&name]).await?;
        Ok(row.get(0))
    }

    /// Says this host is gone (a clean shutdown), so the others need not wait for its heartbeat to run out.
    pub(crate) async fn leave(&self) -> anyhow::Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "UPDATE projector.readmodels SET owner = NULL, lease_until = NULL WHERE owner = $1",
                &[&self.host_id],
            )
            .await?;
        client.execute("DELETE FROM projector.hosts WHERE id = $1", &[&self.host_id]).await?;
        Ok(())
    }

    /// How many hosts are alive now (this one included).
    pub(crate) async fn live_hosts(&self) -> anyhow::Result<usize> {
        let row = self
            .pg
            .client()
            .await?
            .query_one("SELECT count(*) FROM projector.hosts WHERE alive_until > now()", &[])
            .await?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0).max(1))
    }

    /// Takes `readmodel`'s lease if nobody holds a valid one (or this host
    /// held it before a restart); the new epoch when taken.
    pub(crate) async fn take(&self, readmodel: i64) -> anyhow::Result<Option<i64>> {
        let row = self
            .pg
            .client()
            .await?
            .query_opt(
                "UPDATE projector.readmodels
                 SET owner = $2, epoch = epoch + 1, lease_until = now() + $3::bigint * interval '1 millisecond'
                 WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until < now())
                 RETURNING epoch",
                &[&readmodel, &self.host_id, &self.lease_ms()],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Extends this host's lease on `readmodel` taken at `epoch`, showing
    /// the others the lane's `state` and `problem`; `false` when it is no
    /// longer this host's (taken over meanwhile).
    pub(crate) async fn renew(
        &self,
        readmodel: i64,
        epoch: i64,
        state: &str,
        problem: Option<&str>,
    ) -> anyhow::Result<bool> {
        let renewed = self
            .pg
            .client()
            .await?
            .execute(
                "UPDATE projector.readmodels
                 SET lease_until = now() + $4::bigint * interval '1 millisecond', state = $5, problem = $6
                 WHERE id = $1 AND owner = $2 AND epoch = $3",
                &[&readmodel, &self.host_id, &epoch, &self.lease_ms(), &state, &problem],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives up this host's lease on `readmodel` (taken at `epoch`), so another host may take it at once.
    pub(crate) async fn release(&self, readmodel: i64, epoch: i64) -> anyhow::Result<()> {
        self.pg
            .client()
            .await?
            .execute(
                "UPDATE projector.readmodels SET owner = NULL, lease_until = NULL
                 WHERE id = $1 AND owner = $2 AND epoch = $3",
                &[&readmodel, &self.host_id, &epoch],
            )
            .await?;
        Ok(())
    }

    /// Tells the others which module this host's runner of `readmodel` runs now.
    pub(crate) async fn publish_module(&self, readmodel: i64, epoch: i64, module: &str) -> anyhow::Result<()> {
        self.pg
            .client()
            .await?
            .execute(
                "UPDATE projector.readmodels SET module = $3 WHERE id = $1 AND epoch = $2",
                &[&readmodel, &epoch, &module],
            )
            .await?;
        Ok(())
    }

    /// Waits (up to `limit`) until the host running `readmodel` runs
    /// `module`, or no host holds a valid lease on it (whoever takes it
    /// next starts with that module); `false` when the time ran out.
    pub(crate) async fn applied(&self, readmodel: i64, module: &str, limit: Duration) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        let client = self.pg.client().await?;
        loop {
            let row = client
                .query_opt(
                    "SELECT module = $2 OR owner IS NULL OR coalesce(lease_until < now(), true)
                     FROM projector.readmodels WHERE id = $1",
                    &[&readmodel, &module],
                )
                .await?;
            if row.is_none_or(|row| row.get::<_, Option<bool>>(0).unwrap_or(true)) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            // The owner applies a change within one keeper round of its notification.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every read model as the database has it now, by row id.
    pub(crate) async fn readmodels(&self) -> anyhow::Result<std::collections::HashMap<i64, Shared>> {
        let rows = self
            .pg
            .client()
            .await?
            .query(
                "SELECT id, position, events, owner, coalesce(lease_until > now(), false), state, problem
                 FROM projector.readmodels",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let owner = row.get::<_, Option<String>>(3).map(|host| Owner { host, valid: row.get(4) });
                let shared = Shared {
                    position: row.get::<_, Option<i64>>(1).map(|p| p as u64),
                    events: row.get::<_, i64>(2) as u64,
                    owner,
                    state: row.get(5),
                    problem: row.get(6),
                };
                (row.get(0), shared)
            })
            .collect())
    }
}

/// A read model's row: its checkpoint, and who writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Its checkpoint's position (none before the first batch).
    pub position: Option<u64>,
    /// Events applied.
    pub events: u64,
    /// The lease holder, if any.
    pub owner: Option<Owner>,
    /// The owner's lane state, as it last renewed.
    pub state: Option<String>,
    /// The owner's lane problem, as it last renewed.
    pub problem: Option<String>,
}
