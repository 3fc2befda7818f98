//! What the module imports: its read model (through the batch overlay) and
//! the log.

use std::sync::Arc;

use wasmtime::StoreLimits;

use super::bindings::projector::projection::{log, read_model};
use super::Writes;

/// Where committed documents are read from (the read-model database).
pub trait DocumentSource: Send + Sync {
    /// The committed document, as JSON text. An error traps the guest.
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>>;
}

/// The store's data: limits and the current batch's overlay.
pub(crate) struct HostState {
    pub(super) limits: StoreLimits,
    document_bytes: usize,
    /// The batch's write budget, and what it has used.
    batch_write_bytes: usize,
    written_bytes: usize,
    source: Option<Arc<dyn DocumentSource>>,
    writes: Writes,
    projection: String,
}

/// What one write costs the budget beyond its bytes (the overlay's entry).
const WRITE_OVERHEAD: usize = 64;

impl HostState {
    pub(super) fn new(limits: StoreLimits, sandbox: &super::Limits, projection: String) -> Self {
        HostState {
            limits,
            document_bytes: sandbox.document_bytes,
            batch_write_bytes: sandbox.batch_write_bytes,
            written_bytes: 0,
            source: None,
            writes: Writes::new(),
            projection,
        }
    }

    pub(super) fn begin_batch(&mut self, source: Arc<dyn DocumentSource>) {
        self.source = Some(source);
        self.writes.clear();
        self.written_bytes = 0;
    }

    /// Charges a write of `bytes` to the batch; past the budget the module
    /// traps, so a flood of writes faults the batch instead of growing the
    /// host's memory.
    fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.written_bytes += bytes + WRITE_OVERHEAD;
        if self.written_bytes > self.batch_write_bytes {
            return Err(wasmtime::Error::msg(format!(
                "the batch wrote more than {} MiB to the read model (the per-batch write limit)",
                self.batch_write_bytes >> 20
            )));
        }
        Ok(())
    }

    pub(super) fn end_batch(&mut self) -> Writes {
        self.source = None;
        std::mem::take(&mut self.writes)
    }
}

impl read_model::Host for HostState {
    fn get(&mut self, collection: String, key: String) -> wasmtime::Result<Option<String>> {
        if let Some(write) = self.writes.get(&(collection.clone(), key.clone())) {
            return Ok(write.clone());
        }
        match &self.source {
            Some(source) => source.get(&collection, &key).map_err(|e| wasmtime::Error::msg(format!("{e:#}"))),
            None => Ok(None),
        }
    }

    fn put(
        &mut self,
        collection: String,
        key: String,
        document: String,
    ) -> wasmtime::Result<Result<(), read_model::WriteError>> {
        if collection.is_empty() || key.is_empty() || collection.len() > 256 || key.len() > 1024 {
            return Ok(Err(read_model::WriteError::InvalidName(
                "collection must be 1-256 bytes and key 1-1024 bytes".into(),
            )));
        }
        if document.len() > self.document_bytes {
            return Ok(Err(read_model::WriteError::TooLarge(self.document_bytes as u64)));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&document) {
            return Ok(Err(read_model::WriteError::InvalidJson(e.to_string())));
        }
        self.charge(collection.len() + key.len() + document.len())?;
        self.writes.insert((collection, key), Some(document));
        Ok(Ok(()))
    }

    fn delete(&mut self, collection: String, key: String) -> wasmtime::Result<()> {
        self.charge(collection.len() + key.len())?;
        self.writes.insert((collection, key), None);
        Ok(())
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let projection = self.projection.as_str();
        match level {
            log::Level::Debug => tracing::debug!(target: "projection", projection, "{message}"),
            log::Level::Info => tracing::info!(target: "projection", projection, "{message}"),
            log::Level::Warn => tracing::warn!(target: "projection", projection, "{message}"),
            log::Level::Error => tracing::error!(target: "projection", projection, "{message}"),
        }
        Ok(())
    }
}

impl super::bindings::projector::projection::types::Host for HostState {}
