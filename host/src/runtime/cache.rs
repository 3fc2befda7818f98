//! Precompiled modules on disk, so a restart or a redeploy of the same bytes
//! does not pay for Cranelift again.
//!
//! An artifact's file name is a SHA-256 over the module's bytes and the
//! engine's compatibility hash (wasmtime version, configuration and target),
//! so a different engine never even looks at another engine's artifacts. The
//! file holds wasmtime's serialized component followed by a SHA-256 of it; a
//! torn or altered file fails that check and is compiled again. Files are
//! written to a temporary name and renamed into place.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

const CHECKSUM_BYTES: usize = 32;

/// A directory of precompiled components for one engine.
#[derive(Debug)]
pub(super) struct ArtifactCache {
    dir: PathBuf,
    /// The engine's part of every key.
    engine_key: [u8; 32],
}

/// Feeds `Hash` output into SHA-256, so the key is stable across Rust releases.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A key for what `engine` compiles: a SHA-256 of its compatibility hash,
/// which covers the wasmtime version, the compiler and its settings, the
/// target and the enabled features.
pub(super) fn engine_key(engine: &Engine) -> [u8; 32] {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

impl ArtifactCache {
    pub(super) fn new(dir: PathBuf, engine: &Engine) -> ArtifactCache {
        ArtifactCache { dir, engine_key: engine_key(engine) }
    }

    fn path(&self, module: &[u8]) -> PathBuf {
        let mut key = Sha256::new();
        key.update(self.engine_key);
        key.update(Sha256::digest(module));
        let name: String = key.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The precompiled form of `module`, if a sound one is stored.
    pub(super) fn load(&self, engine: &Engine, module: &[u8]) -> Option<Component> {
        let path = self.path(module);
        let bytes = std::fs::read(&path).ok()?;
        let split = bytes.len().checked_sub(CHECKSUM_BYTES)?;
        let (artifact, checksum) = bytes.split_at(split);
        if Sha256::digest(artifact).as_slice() != checksum {
            tracing::warn!(path = %path.display(), "precompiled module fails its checksum; compiling again");
            return None;
        }
        // SAFETY: wasmtime requires that the bytes came from its own
        // `serialize` for a compatible engine. This file was written by
        // `store` below from `Component::serialize`, its name includes the
        // engine's compatibility hash, and the checksum just verified shows
        // it is whole and unaltered since. (Anyone able to forge the file and
        // its checksum can already write to the data directory.)
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot load precompiled module; compiling again");
                None
            }
        }
    }

    /// Keeps `component`, compiled from `module`. Failing to store only costs
    /// a compilation later, so it is logged, not returned.
    pub(super) fn store(&self, module: &[u8], component: &Component) {
        let path = self.path(module);
        if let Err(e) = component.serialize().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|a| write(&path, &a)) {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot keep the precompiled module");
        }
    }
}

fn write(path: &Path, artifact: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow::anyhow!("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(artifact)?;
    file.write_all(&Sha256::digest(artifact))?;
    file.as_file().sync_all()?;
    file.persist(path)?;
    Ok(())
}
