//! What is deployed, kept across restarts: a JSON registry of projections
//! (their modules, read models, policies and states) and the module bytes,
//! stored content-addressed beside it.
//!
//! Layout under the data dir:
//! - `registry.json`: replaced as a whole on every change (written to a
//!   temporary file, synced, renamed over the old one, directory synced), so
//!   a crash leaves either the old registry or the new one;
//! - `modules/{sha256}.wasm`: every module a registry entry refers to;
//! - `readmodels/{name}/{readmodel}.sqlite`: the read models.
//!
//! Names reaching this module are already validated (`[a-z0-9][a-z0-9-]{0,62}`);
//! module files are named by their hash, never by anything a caller sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::projections::FaultInfo;

/// What a projection does when its module fails on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop at the event; nothing after it is applied until a retry or a fix.
    #[default]
    Fault,
    /// Record the event as a dead letter and go on with the next one.
    Skip,
}

impl std::str::FromStr for OnError {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fault" => Ok(OnError::Fault),
            "skip" => Ok(OnError::Skip),
            other => Err(format!("on_error '{other}' must be 'fault' or 'skip'")),
        }
    }
}

/// Sandbox limits a deploy may set for its projection (the host's defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProjectionLimits {
    /// Largest linear memory, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Longest one batch may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_timeout_ms: Option<u64>,
}

impl ProjectionLimits {
    /// Accepted ranges, so a typo cannot starve the host or make a limit meaningless.
    pub const MEMORY_MB: std::ops::RangeInclusive<u64> = 1..=4096;
    /// See [`ProjectionLimits::MEMORY_MB`].
    pub const BATCH_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=600_000;

    /// `defaults` with these overrides applied.
    pub fn apply(&self, defaults: crate::runtime::Limits) -> crate::runtime::Limits {
        crate::runtime::Limits {
            memory_bytes: self.memory_mb.map_or(defaults.memory_bytes, |mb| (mb as usize) << 20),
            batch_deadline: self.batch_timeout_ms.map_or(defaults.batch_deadline, std::time::Duration::from_millis),
            ..defaults
        }
    }
}

/// Whether a read model's runner should be following events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Following events (catching up or live).
    Running,
    /// Stopped by a user; resumes on `start`.
    Stopped,
    /// Stopped by a fault; resumes on `retry` or a new deploy.
    Faulted,
}

/// One read model and the module that builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneRecord {
    /// SHA-256 of the module's bytes (its file under `modules/`).
    pub module: String,
    /// The version the module declares.
    pub version: String,
    /// The read model's file name, without `.sqlite`.
    pub readmodel: String,
    /// Whether it runs.
    pub state: RunState,
    /// Why it stopped, when faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultInfo>,
}

/// One deployed projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Poison-event policy.
    pub on_error: OnError,
    /// Sandbox limits.
    pub limits: ProjectionLimits,
    /// The read model that answers queries.
    pub serving: LaneRecord,
    /// A blue/green rebuild in progress: becomes `serving` once it has caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<LaneRecord>,
    /// What `rollback` returns to. Same read model as `serving` after a
    /// `continue` swap; the replaced read model after a rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<LaneRecord>,
    /// Number for the next read model's file name.
    pub next_readmodel: u64,
}

impl Entry {
    /// The lane record whose read model is `readmodel`, if it is serving or the candidate.
    pub fn lane_mut(&mut self, readmodel: &str) -> Option<&mut LaneRecord> {
        if self.serving.readmodel == readmodel {
            Some(&mut self.serving)
        } else {
            self.candidate.as_mut().filter(|c| c.readmodel == readmodel)
        }
    }

    /// A new read model name for `module`.
    pub fn new_readmodel(&mut self, module: &str) -> String {
        self.next_readmodel += 1;
        readmodel_name(self.next_readmodel, module)
    }
}

/// `0003-0123456789abcdef`: a sequence number and the module that started it.
pub fn readmodel_name(n: u64, module: &str) -> String {
    format!("{n:04}-{}", &module[..16.min(module.len())])
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    projections: BTreeMap<String, Entry>,
}

/// The registry file and the module store.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    modules: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    /// Opens the registry under `data_dir` (empty if there is none yet).
    pub fn open(data_dir: &Path) -> anyhow::Result<Registry> {
        let path = data_dir.join("registry.json");
        let modules = data_dir.join("modules");
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
        Ok(Registry { path, modules, entries: Mutex::new(entries) })
    }

    /// Every entry, by name.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        self.entries.lock().clone()
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.entries.lock().get(name).cloned()
    }

    /// Records `entry` as `name`'s and saves the registry.
    pub fn put(&self, name: &str, entry: Entry) -> anyhow::Result<()> {
        let mut entries = self.entries.lock();
        let old = entries.insert(name.to_owned(), entry);
        self.save(&entries).inspect_err(|_| {
            match old {
                Some(old) => entries.insert(name.to_owned(), old),
                None => entries.remove(name),
            };
        })
    }

    /// Changes `name`'s entry with `change` and saves; a no-op for an unknown name.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut Entry)) -> anyhow::Result<()> {
        let Some(mut entry) = self.get(name) else { return Ok(()) };
        change(&mut entry);
        self.put(name, entry)
    }

    /// Forgets `name`, then deletes module files no entry refers to any more.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let mut entries = self.entries.lock();
        let Some(old) = entries.remove(name) else { return Ok(()) };
        if let Err(e) = self.save(&entries) {
            entries.insert(name.to_owned(), old);
            return Err(e);
        }
        let used: std::collections::HashSet<&str> = entries
            .values()
            .flat_map(|e| [Some(&e.serving), e.candidate.as_ref(), e.previous.as_ref()])
            .flatten()
            .map(|lane| lane.module.as_str())
            .collect();
        for lane in [Some(&old.serving), old.candidate.as_ref(), old.previous.as_ref()].into_iter().flatten() {
            if !used.contains(lane.module.as_str()) {
                let _ = std::fs::remove_file(self.module_path(&lane.module));
            }
        }
        Ok(())
    }

    /// Stores `bytes` under their hash (once) and returns the hash.
    pub fn store_module(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let sha: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let path = self.module_path(&sha);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(sha)
    }

    /// The bytes stored under `sha`.
    pub fn module_bytes(&self, sha: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.module_path(sha);
        std::fs::read(&path).with_context(|| format!("cannot read module {}", path.display()))
    }

    fn module_path(&self, sha: &str) -> PathBuf {
        self.modules.join(format!("{sha}.wasm"))
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            projections: &'a BTreeMap<String, Entry>,
        }
        let bytes = serde_json::to_vec_pretty(&Out { projections: entries })?;
        write_atomically(&self.path, &bytes)
    }
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
