//! The registry kept in PostgreSQL (`--readmodels postgres://…`): reading
//! every entry again, the cache and its change counters, and a change made
//! on the row as the database holds it. No lock is held while the database
//! is waited on.

use std::collections::BTreeMap;

use anyhow::Context;
use parking_lot::Mutex;

use super::{Backing, Entry, Registry};
use crate::pg::Postgres;

impl Registry {
    /// Opens the registry kept in PostgreSQL.
    pub(crate) fn open_postgres(pg: &Postgres) -> anyhow::Result<Registry> {
        let registry = Registry {
            backing: Backing::Postgres(pg.clone()),
            entries: Mutex::new(BTreeMap::new()),
            versions: Mutex::new(BTreeMap::new()),
            writes: std::sync::atomic::AtomicU64::new(0),
        };
        registry.refresh()?;
        Ok(registry)
    }

    /// Reads every entry again from the shared database (other hosts change
    /// it); the names that changed, appeared or went. A no-op on files.
    pub(crate) fn refresh(&self) -> anyhow::Result<Vec<String>> {
        use std::sync::atomic::Ordering;
        let Backing::Postgres(pg) = &self.backing else { return Ok(Vec::new()) };
        let writes_before = self.writes.load(Ordering::Acquire);
        let rows = pg.block_on(async {
            let client = pg.client().await?;
            let rows = client.query("SELECT name, entry::text, changed FROM projector.projections", &[]).await?;
            anyhow::Ok(rows)
        })?;
        let mut fresh = BTreeMap::new();
        let mut fresh_versions = BTreeMap::new();
        for row in rows {
            let (name, text, version): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let entry: Entry =
                serde_json::from_str(&text).with_context(|| format!("the registry entry of '{name}' is not valid"))?;
            fresh.insert(name.clone(), entry);
            fresh_versions.insert(name, version);
        }
        let mut entries = self.entries.lock();
        let mut versions = self.versions.lock();
        if self.writes.load(Ordering::Acquire) != writes_before {
            // This host wrote meanwhile: what was read may be older than the cache. Next round.
            return Ok(Vec::new());
        }
        let changed = entries
            .keys()
            .chain(fresh.keys())
            .filter(|name| entries.get(*name) != fresh.get(*name))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>();
        *entries = fresh;
        *versions = fresh_versions;
        Ok(changed.into_iter().collect())
    }

    /// Caches `entry` as `name`'s (`None`: gone), at change counter `version`, unless a newer one is cached.
    pub(super) fn remember(&self, name: &str, entry: Option<Entry>, version: i64) {
        let mut entries = self.entries.lock();
        let mut versions = self.versions.lock();
        // Older than what is cached, or past a change this host has not
        // seen yet (another host's): the next refresh brings it, and reports
        // the name so that the change is applied here.
        let skip = |cached: i64| cached > version || version > cached + 1;
        if entry.is_some() && versions.get(name).is_some_and(|&cached| skip(cached)) {
            return;
        }
        match entry {
            Some(entry) => {
                entries.insert(name.to_owned(), entry);
                versions.insert(name.to_owned(), version);
            }
            None => {
                entries.remove(name);
                versions.remove(name);
            }
        }
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// Changes `name`'s row as it is in the database now, locked against every
/// other host's change until the transaction ends; the new entry and what
/// `change` returned, `None` for an unknown name.
pub(super) async fn change_row<R>(
    pg: &Postgres,
    name: &str,
    change: impl FnOnce(&mut Entry) -> R,
) -> anyhow::Result<Option<(Entry, i64, R)>> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt("SELECT entry::text, changed FROM projector.projections WHERE name = $1 FOR UPDATE", &[&name])
        .await?
    else {
        return Ok(None);
    };
    let mut version: i64 = row.get(1);
    let mut entry: Entry = serde_json::from_str(&row.get::<_, String>(0))
        .with_context(|| format!("the registry entry of '{name}' is not valid"))?;
    let before = entry.clone();
    let outcome = change(&mut entry);
    if entry != before {
        let text = serde_json::to_string(&entry)?;
        tx.execute(
            "UPDATE projector.projections SET entry = $2::text::jsonb, changed = changed + 1 WHERE name = $1",
            &[&name, &text],
        )
        .await?;
        version += 1;
        tx.execute("SELECT pg_notify('projector_registry', $1)", &[&name]).await?;
    }
    tx.commit().await?;
    Ok(Some((entry, version, outcome)))
}
