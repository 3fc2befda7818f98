//! Every path under the host's data directory (`--data`), named in one place.
//!
//! ```text
//! DATA/
//!   admin-token                        the generated admin token (mode 0600)
//!   registration-secret                the key of user ids and request digests (mode 0600)
//!   registry.json                      what is deployed (see registry.rs)
//!   modules/{sha256}.wasm              module bytes, content-addressed
//!   artifacts/                         precompiled modules (see runtime/cache.rs)
//!   readmodels/{name}/{readmodel}.sqlite  read models (and their -wal, -shm)
//!   eventstore/                        the embedded event store, when it runs in-process
//! ```
//!
//! This module only names paths; it creates nothing but the directory itself
//! (owner-only, see [`DataDir::create_private`]) and removes nothing but a read
//! model's files. Names reaching it are already validated
//! (`[a-z0-9][a-z0-9-]{0,62}`, or a read model name the registry made).

use std::path::{Path, PathBuf};

/// The host's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (not created here).
    pub(crate) fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory if missing and makes it owner-only (0700): it
    /// holds the admin token, password hashes in the event log and every
    /// read model. A directory other users could read is tightened.
    pub(crate) fn create_private(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let root = &self.root;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let mode =
            std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} owner-only", root.display()))?;
            tracing::warn!(dir = %root.display(), "the data directory was readable by other users; it is now owner-only (0700)");
        }
        Ok(())
    }

    /// The generated admin token's file.
    pub(crate) fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    /// The generated secret registrations key their ids and digests with.
    pub(crate) fn registration_secret(&self) -> PathBuf {
        self.root.join("registration-secret")
    }

    /// The registry file.
    pub(crate) fn registry(&self) -> PathBuf {
        self.root.join("registry.json")
    }

    /// The directory of module bytes.
    pub(crate) fn modules(&self) -> PathBuf {
        self.root.join("modules")
    }

    /// The file of the module whose SHA-256 is `sha`.
    pub(crate) fn module(&self, sha: &str) -> PathBuf {
        self.modules().join(format!("{sha}.wasm"))
    }

    /// The directory of precompiled modules.
    pub(crate) fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// The cache of compiled functions (SQLite), shared by every module.
    pub(crate) fn function_cache(&self) -> PathBuf {
        self.root.join("artifacts-functions.sqlite")
    }

    /// The embedded event store's directory.
    pub(crate) fn eventstore(&self) -> PathBuf {
        self.root.join("eventstore")
    }

    /// The directory of projection `name`'s read models.
    pub(crate) fn readmodels(&self, name: &str) -> PathBuf {
        self.root.join("readmodels").join(name)
    }

    /// The database file of `name`'s read model `readmodel`.
    pub(crate) fn readmodel(&self, name: &str, readmodel: &str) -> PathBuf {
        self.readmodels(name).join(format!("{readmodel}.sqlite"))
    }

    /// Deletes a read model's files (the database, its WAL and shared
    /// memory), logging what cannot be removed.
    pub(crate) fn remove_readmodel(&self, name: &str, readmodel: &str) {
        let path = self.readmodel(name, readmodel);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = ?file, error = %e, "cannot remove a read model file");
                }
            }
        }
    }

    /// Deletes every read model of `name`.
    pub(crate) fn remove_readmodels(&self, name: &str) {
        let dir = self.readmodels(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = ?dir, error = %e, "cannot remove the read models");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_where_the_layout_says() {
        let data = DataDir::new("/srv/projector");
        assert_eq!(data.registry(), Path::new("/srv/projector/registry.json"));
        assert_eq!(data.module("ab12"), Path::new("/srv/projector/modules/ab12.wasm"));
        assert_eq!(
            data.readmodel("orders", "0002-ab12"),
            Path::new("/srv/projector/readmodels/orders/0002-ab12.sqlite")
        );
        assert_eq!(data.admin_token(), Path::new("/srv/projector/admin-token"));
        assert_eq!(data.registration_secret(), Path::new("/srv/projector/registration-secret"));
        assert_eq!(data.artifacts(), Path::new("/srv/projector/artifacts"));
        assert_eq!(data.eventstore(), Path::new("/srv/projector/eventstore"));
    }

    #[test]
    fn removing_a_read_model_takes_its_wal_and_shared_memory_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(dir.path());
        std::fs::create_dir_all(data.readmodels("orders")).expect("create");
        for file in ["0001-a.sqlite", "0001-a.sqlite-wal", "0001-a.sqlite-shm", "0002-b.sqlite"] {
            std::fs::write(data.readmodels("orders").join(file), b"x").expect("write");
        }
        data.remove_readmodel("orders", "0001-a");
        data.remove_readmodel("orders", "0009-missing");
        let left: Vec<_> = std::fs::read_dir(data.readmodels("orders"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(left, ["0002-b.sqlite"]);
    }
}
