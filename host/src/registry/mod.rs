//! What is deployed, kept across restarts: a JSON registry of projections
//! (their modules, read models, policies and states) and the module bytes,
//! stored content-addressed beside it.
//!
//! `registry.json` is replaced as a whole on every change (written to a
//! temporary file, synced, renamed over the old one, directory synced), so a
//! crash leaves either the old registry or the new one; `modules/` holds
//! every module an entry refers to (paths: `data_dir.rs`).
//!
//! Entries are changed in place, under the registry's own lock, by a closure
//! that sees the entry as it is at that moment ([`Registry::change`]): no
//! caller saves back a copy it read earlier, so two changes never overwrite
//! each other. Only the deployments (`deployments/`) call it; runners report
//! to them instead of writing here.
//!
//! Names reaching this module are already validated (`[a-z0-9][a-z0-9-]{0,62}`);
//! module files are named by their hash, never by anything a caller sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data_dir::DataDir;
use crate::pg::Postgres;

mod shared;

use crate::settings::{OnError, ProjectionLimits};
use crate::status::FaultInfo;
use shared::change_row;

/// A module's name in the store: the SHA-256 of its bytes, in hex.
pub(crate) fn module_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a read model's runner should be following events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RunState {
    /// Following events (catching up or live).
    Running,
    /// Stopped by a user; resumes on `start`.
    Stopped,
    /// Stopped by a fault; resumes on `retry` or a new deploy.
    Faulted,
}

/// One read model and the module that builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LaneRecord {
    /// SHA-256 of the module's bytes (its file under `modules/`).
    pub(crate) module: String,
    /// The version the module declares.
    pub(crate) version: String,
    /// The read model's file name, without `.sqlite`.
    pub(crate) readmodel: String,
    /// Whether it runs.
    pub(crate) state: RunState,
    /// Why it stopped, when faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<FaultInfo>,
}

/// One deployed projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Poison-event policy.
    pub(crate) on_error: OnError,
    /// Sandbox limits.
    pub(crate) limits: ProjectionLimits,
    /// The read model that answers queries.
    pub(crate) serving: LaneRecord,
    /// A blue/green rebuild in progress: becomes `serving` once it has caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) candidate: Option<LaneRecord>,
    /// What `rollback` returns to. Same read model as `serving` after a
    /// `continue` swap; the replaced read model after a rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) previous: Option<LaneRecord>,
    /// Number for the next read model's file name.
    pub(crate) next_readmodel: u64,
}

impl Entry {
    /// The lane record whose read model is `readmodel`, if it is serving or the candidate.
    pub(crate) fn lane_mut(&mut self, readmodel: &str) -> Option<&mut LaneRecord> {
        if self.serving.readmodel == readmodel {
            Some(&mut self.serving)
        } else {
            self.candidate.as_mut().filter(|c| c.readmodel == readmodel)
        }
    }

    /// Every lane record it holds: serving, candidate, previous.
    pub(crate) fn lanes(&self) -> impl Iterator<Item = &LaneRecord> {
        [Some(&self.serving), self.candidate.as_ref(), self.previous.as_ref()].into_iter().flatten()
    }

    /// A new read model name for `module`.
    pub(crate) fn new_readmodel(&mut self, module: &str) -> String {
        self.next_readmodel += 1;
        readmodel_name(self.next_readmodel, module)
    }
}

/// `0003-0123456789abcdef`: a sequence number and the module that started it.
pub(crate) fn readmodel_name(n: u64, module: &str) -> String {
    format!("{n:04}-{}", &module[..16.min(module.len())])
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    projections: BTreeMap<String, Entry>,
}

/// The registry and the module store, with a copy of every entry in memory.
#[derive(Debug)]
pub(crate) struct Registry {
    backing: Backing,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// With PostgreSQL: each cached entry's change counter, so that an older
    /// read never replaces a newer entry; and how many times this host
    /// wrote the cache, so that a refresh read before a write is dropped.
    /// No lock is held while the database is waited on (a worker thread
    /// blocked on the cache's lock could hold up the very connection task
    /// the wait needs).
    versions: Mutex<BTreeMap<String, i64>>,
    writes: std::sync::atomic::AtomicU64,
}

/// Where the registry is kept.
#[derive(Debug)]
enum Backing {
    /// `registry.json` and `modules/` under the data dir.
    Files(DataDir),
    /// The `projector.projections` and `projector.modules` tables, shared by
    /// every host: a change is made in one transaction on the row as it is in
    /// the database (locked `FOR UPDATE`), so changes from several hosts
    /// never overwrite each other either.
    Postgres(Postgres),
}

impl Registry {
    /// Opens the registry under `data` (empty if there is none yet).
    pub(crate) fn open(data: &DataDir) -> anyhow::Result<Registry> {
        let path = data.registry();
        let modules = data.modules();
        std::fs::create_dir_all(&modules).with_context(|| format!("cannot create {}", modules.display()))?;
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .with_context(|| format!("{} is not a valid registry", path.display()))?
                    .projections
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Registry {
            backing: Backing::Files(data.clone()),
            entries: Mutex::new(entries),
            versions: Mutex::new(BTreeMap::new()),
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Every entry, by name.
    pub(crate) fn entries(&self) -> BTreeMap<String, Entry> {
        self.entries.lock().clone()
    }

    /// The entry for `name`, as it is now.
    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        self.entries.lock().get(name).cloned()
    }

    /// Records a new projection and saves the registry; an error if `name` exists.
    pub(crate) fn insert(&self, name: &str, entry: Entry) -> anyhow::Result<()> {
        if let Backing::Postgres(pg) = &self.backing {
            let text = serde_json::to_string(&entry)?;
            let inserted = pg.block_on(async {
                let client = pg.client().await?;
                let n = client
                    .execute(
                        "INSERT INTO projector.projections (name, entry) VALUES ($1, $2::text::jsonb)
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &text],
                    )
                    .await?;
                client.execute("SELECT pg_notify('projector_registry', $1)", &[&name]).await?;
                anyhow::Ok(n)
            })?;
            anyhow::ensure!(inserted == 1, "the registry already holds '{name}'");
            self.remember(name, Some(entry), 1);
            return Ok(());
        }
        let mut entries = self.entries.lock();
        anyhow::ensure!(!entries.contains_key(name), "the registry already holds '{name}'");
        entries.insert(name.to_owned(), entry);
        self.save(&entries).inspect_err(|_| {
            entries.remove(name);
        })
    }

    /// Changes `name`'s entry in place with `change` and saves the registry,
    /// all under the registry's lock; `None` for an unknown name. Should the
    /// save fail, the entry is put back as it was and the error returned.
    pub(crate) fn change<R>(&self, name: &str, change: impl FnOnce(&mut Entry) -> R) -> anyhow::Result<Option<R>> {
        if let Backing::Postgres(pg) = &self.backing {
            let changed = pg.block_on(change_row(pg, name, change))?;
            return Ok(changed.map(|(entry, version, outcome)| {
                self.remember(name, Some(entry), version);
                outcome
            }));
        }
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(name) else { return Ok(None) };
        let before = entry.clone();
        let outcome = change(entry);
        if *entry == before {
            return Ok(Some(outcome));
        }
        match self.save(&entries) {
            Ok(()) => Ok(Some(outcome)),
            Err(e) => {
                entries.insert(name.to_owned(), before);
                Err(e)
            }
        }
    }

    /// Forgets `name`, then deletes module files no entry refers to any more.
    pub(crate) fn remove(&self, name: &str) -> anyhow::Result<()> {
        if let Backing::Postgres(pg) = &self.backing {
            pg.block_on(async {
                let mut client = pg.client().await?;
                let tx = client.transaction().await?;
                tx.execute("DELETE FROM projector.projections WHERE name = $1", &[&name]).await?;
                // Modules no entry refers to any more.
                tx.execute(
                    "DELETE FROM projector.modules m WHERE NOT EXISTS (
                         SELECT 1 FROM projector.projections p
                         WHERE m.sha256 IN (p.entry->'serving'->>'module', p.entry->'candidate'->>'module',
                                            p.entry->'previous'->>'module'))",
                    &[],
                )
                .await?;
                tx.execute("SELECT pg_notify('projector_registry', $1)", &[&name]).await?;
                tx.commit().await?;
                anyhow::Ok(())
            })?;
            self.remember(name, None, i64::MAX);
            return Ok(());
        }
        let mut entries = self.entries.lock();
        let Some(old) = entries.remove(name) else { return Ok(()) };
        if let Err(e) = self.save(&entries) {
            entries.insert(name.to_owned(), old);
            return Err(e);
        }
        let Backing::Files(data) = &self.backing else { return Ok(()) };
        let used: std::collections::HashSet<&str> =
            entries.values().flat_map(Entry::lanes).map(|lane| lane.module.as_str()).collect();
        for lane in old.lanes() {
            if !used.contains(lane.module.as_str()) {
                let _ = std::fs::remove_file(data.module(&lane.module));
            }
        }
        Ok(())
    }

    /// Stores `bytes` under their hash (once) and returns the hash.
    pub(crate) fn store_module(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let sha = module_hash(bytes);
        match &self.backing {
            Backing::Files(data) => {
                let path = data.module(&sha);
                if !path.exists() {
                    write_atomically(&path, bytes)?;
                }
            }
            Backing::Postgres(pg) => pg.block_on(async {
                pg.client()
                    .await?
                    .execute(
                        "INSERT INTO projector.modules (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&sha, &bytes],
                    )
                    .await?;
                anyhow::Ok(())
            })?,
        }
        Ok(sha)
    }

    /// The bytes stored under `sha`.
    pub(crate) fn module_bytes(&self, sha: &str) -> anyhow::Result<Vec<u8>> {
        match &self.backing {
            Backing::Files(data) => {
                let path = data.module(sha);
                std::fs::read(&path).with_context(|| format!("cannot read module {}", path.display()))
            }
            Backing::Postgres(pg) => pg.block_on(async {
                let row = pg
                    .client()
                    .await?
                    .query_opt("SELECT bytes FROM projector.modules WHERE sha256 = $1", &[&sha])
                    .await?
                    .with_context(|| format!("module {sha} is not in the database"))?;
                anyhow::Ok(row.get::<_, Vec<u8>>(0))
            }),
        }
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            projections: &'a BTreeMap<String, Entry>,
        }
        let Backing::Files(data) = &self.backing else { anyhow::bail!("the shared registry is not saved as a whole") };
        let bytes = serde_json::to_vec_pretty(&Out { projections: entries })?;
        write_atomically(&data.registry(), &bytes)
    }
}

/// Writes `bytes` to `path` (owner-only) so that a crash leaves the old file or the new one, whole.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // A temporary file is created owner-only (0600) and keeps its mode when renamed.
    write_atomically(path, bytes)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, whole.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a directory")?;
    let mut file =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(module: &str, readmodel: &str) -> LaneRecord {
        LaneRecord {
            module: module.into(),
            version: "1".into(),
            readmodel: readmodel.into(),
            state: RunState::Running,
            fault: None,
        }
    }

    fn entry() -> Entry {
        Entry {
            on_error: OnError::Fault,
            limits: ProjectionLimits::default(),
            serving: record("aaaa", "0001-aaaa"),
            candidate: Some(record("bbbb", "0002-bbbb")),
            previous: None,
            next_readmodel: 2,
        }
    }

    #[test]
    fn read_model_names_carry_a_sequence_number_and_the_module_prefix() {
        let sha = "0123456789abcdef0123456789abcdef";
        assert_eq!(readmodel_name(3, sha), "0003-0123456789abcdef");
        assert_eq!(readmodel_name(12345, "ab"), "12345-ab");
        let mut entry = entry();
        assert_eq!(entry.new_readmodel(sha), "0003-0123456789abcdef");
        assert_eq!(entry.new_readmodel(sha), "0004-0123456789abcdef");
    }

    #[test]
    fn lanes_are_found_by_read_model_among_serving_and_candidate_only() {
        let mut entry = entry();
        entry.previous = Some(record("cccc", "0000-cccc"));
        assert_eq!(entry.lane_mut("0001-aaaa").map(|l| l.module.clone()), Some("aaaa".into()));
        assert_eq!(entry.lane_mut("0002-bbbb").map(|l| l.module.clone()), Some("bbbb".into()));
        assert!(entry.lane_mut("0000-cccc").is_none(), "the kept previous lane runs nothing");
    }

    #[test]
    fn changes_in_place_keep_each_other_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(dir.path());
        let registry = Registry::open(&data).expect("open");
        registry.insert("orders", entry()).expect("insert");
        // Two writers that each change one field, as a runner's fault and a
        // user's change do: neither overwrites the other.
        registry
            .change("orders", |e| {
                e.serving.state = RunState::Faulted;
                e.serving.fault = Some(FaultInfo::plain("trap"));
            })
            .expect("save");
        registry.change("orders", |e| e.on_error = OnError::Skip).expect("save");
        let reopened = Registry::open(&data).expect("reopen").get("orders").expect("entry");
        assert_eq!(reopened.serving.state, RunState::Faulted);
        assert_eq!(reopened.serving.fault, Some(FaultInfo::plain("trap")));
        assert_eq!(reopened.on_error, OnError::Skip);
        assert_eq!(registry.change("missing", |e| e.next_readmodel += 1).expect("no save"), None);
        assert!(registry.insert("orders", entry()).is_err(), "a name is inserted once");
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_undone() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(dir.path().join("data"));
        let registry = Registry::open(&data).expect("open");
        registry.insert("orders", entry()).expect("insert");
        // The registry's directory replaced by a file: the save fails.
        std::fs::remove_dir_all(data.root()).expect("remove");
        std::fs::write(data.root(), b"").expect("block the directory");
        let refused = registry.change("orders", |e| e.on_error = OnError::Skip);
        assert!(refused.is_err(), "the save cannot succeed");
        assert_eq!(registry.get("orders").expect("entry").on_error, OnError::Fault);
    }
}
