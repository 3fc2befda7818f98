//! What the module imports: its read model (through the batch overlay) and
//! the log (each line bounded, control characters escaped, a bounded number
//! of lines per batch).
//!
//! Which writes are acceptable (name lengths, JSON, the default document
//! size) is not decided here: it is the SDK's [`rules`], which the SDK's test
//! harness applies too. This file adds only what is the host's own: the
//! configured document limit and the batch's write budget.

use std::sync::Arc;

use projector_guest_sdk::{rules, WriteError};

use super::bindings::projector::projection::{log, read_model};
use super::limiter::MemoryCap;
use super::Writes;

/// Where committed documents are read from (the read-model database).
pub trait DocumentSource: Send + Sync {
    /// The committed document, as JSON text. An error traps the guest.
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>>;
}

/// The store's data: limits and the current batch's overlay.
pub(crate) struct HostState {
    /// The store's resource limiter; it records a refused memory growth.
    pub(super) limiter: MemoryCap,
    document_bytes: usize,
    /// The batch's write budget, and what it has used.
    batch_write_bytes: usize,
    written_bytes: usize,
    source: Option<Arc<dyn DocumentSource>>,
    writes: Writes,
    projection: String,
    /// Lines logged in the current batch, and lines dropped past the limit.
    log_lines: u32,
    log_dropped: u32,
    /// Why a read of the read model failed during the batch (the database
    /// away, say): the batch is then retried, not blamed on the module.
    read_failure: Option<String>,
    /// Log lines kept for the caller instead of the host's log (a trial).
    captured: Option<Vec<LogLine>>,
}

/// A line a module logged, as a trial returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The line, escaped and cut as the host's log would show it.
    pub message: String,
}

/// Longest log line kept, in bytes; the rest is cut (and said so).
pub(crate) const MAX_LOG_LINE_BYTES: usize = 4096;

/// Most log lines one batch may write; more are counted and dropped.
pub(crate) const MAX_LOG_LINES_PER_BATCH: u32 = 1000;

/// What one write costs the budget beyond its bytes (the overlay's entry).
const WRITE_OVERHEAD: usize = 64;

impl HostState {
    pub(super) fn new(sandbox: &super::Limits, projection: String) -> Self {
        HostState {
            limiter: MemoryCap::new(sandbox.memory_bytes),
            document_bytes: sandbox.document_bytes,
            batch_write_bytes: sandbox.batch_write_bytes,
            written_bytes: 0,
            source: None,
            writes: Writes::new(),
            projection,
            log_lines: 0,
            log_dropped: 0,
            read_failure: None,
            captured: None,
        }
    }

    /// Keeps the module's log lines for [`HostState::take_captured`] from now on.
    pub(super) fn capture_logs(&mut self) {
        self.captured.get_or_insert_with(Vec::new);
    }

    /// The log lines kept since the last call.
    pub(super) fn take_captured(&mut self) -> Vec<LogLine> {
        self.captured.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub(super) fn begin_batch(&mut self, source: Arc<dyn DocumentSource>) {
        self.source = Some(source);
        self.writes.clear();
        self.written_bytes = 0;
        self.read_failure = None;
    }

    /// Why a read of the read model failed during the batch, if one did.
    pub(super) fn take_read_failure(&mut self) -> Option<String> {
        self.read_failure.take()
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
        if self.log_dropped > 0 {
            let (projection, dropped) = (self.projection.as_str(), self.log_dropped);
            tracing::warn!(target: "projection", projection, dropped, "the batch logged more than {MAX_LOG_LINES_PER_BATCH} lines; the rest were dropped");
        }
        (self.log_lines, self.log_dropped) = (0, 0);
        std::mem::take(&mut self.writes)
    }
}

impl read_model::Host for HostState {
    fn get(&mut self, collection: String, key: String) -> wasmtime::Result<Option<String>> {
        if let Some(write) = self.writes.get(&(collection.clone(), key.clone())) {
            return Ok(write.clone());
        }
        match &self.source {
            Some(source) => source.get(&collection, &key).map_err(|e| {
                let reason = format!("cannot read the read model: {e:#}");
                self.read_failure = Some(reason.clone());
                wasmtime::Error::msg(reason)
            }),
            None => Ok(None),
        }
    }

    fn put(
        &mut self,
        collection: String,
        key: String,
        document: String,
    ) -> wasmtime::Result<Result<(), read_model::WriteError>> {
        if let Err(refusal) = rules::check_put(&collection, &key, &document, self.document_bytes) {
            return Ok(Err(to_wit(refusal)));
        }
        self.charge(collection.len() + key.len() + document.len())?;
        self.writes.insert((collection, key), Some(document));
        Ok(Ok(()))
    }

    /// A name `put` would refuse holds nothing, so deleting it writes
    /// nothing (and costs nothing); the SDK's harness does the same.
    fn delete(&mut self, collection: String, key: String) -> wasmtime::Result<()> {
        if rules::check_name(&collection, &key).is_err() {
            return Ok(());
        }
        self.charge(collection.len() + key.len())?;
        self.writes.insert((collection, key), None);
        Ok(())
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if self.log_lines >= MAX_LOG_LINES_PER_BATCH {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return Ok(());
        }
        self.log_lines += 1;
        let projection = self.projection.as_str();
        let message = log_line(&message);
        if let Some(captured) = &mut self.captured {
            let level = match level {
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            };
            captured.push(LogLine { level, message });
            return Ok(());
        }
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

/// A module's message as one log line: control characters escaped (a line
/// break cannot forge a line of the host's log), at most
/// [`MAX_LOG_LINE_BYTES`] bytes of it kept.
pub(crate) fn log_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LOG_LINE_BYTES) + 32);
    for (at, c) in message.char_indices() {
        if line.len() >= MAX_LOG_LINE_BYTES {
            line.push_str(&format!("... [{} more bytes cut]", message.len() - at));
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// The SDK's refusal as the WIT's.
fn to_wit(refusal: WriteError) -> read_model::WriteError {
    match refusal {
        WriteError::TooLarge(limit) => read_model::WriteError::TooLarge(limit),
        WriteError::InvalidJson(message) => read_model::WriteError::InvalidJson(message),
        WriteError::InvalidName(message) => read_model::WriteError::InvalidName(message),
    }
}

// Modules built against the 0.1.0 contract import the same interfaces under
// that version; they get the same behaviour.
mod v0_1 {
    use super::super::bindings::v0_1::projector::projection::{log, read_model, types};
    use super::HostState;
    use super::{log as current_log, read_model as current_read_model};

    impl read_model::Host for HostState {
        fn get(&mut self, collection: String, key: String) -> wasmtime::Result<Option<String>> {
            current_read_model::Host::get(self, collection, key)
        }

        fn put(
            &mut self,
            collection: String,
            key: String,
            document: String,
        ) -> wasmtime::Result<Result<(), read_model::WriteError>> {
            let refused = current_read_model::Host::put(self, collection, key, document)?;
            Ok(refused.map_err(|refusal| match refusal {
                current_read_model::WriteError::TooLarge(limit) => read_model::WriteError::TooLarge(limit),
                current_read_model::WriteError::InvalidJson(m) => read_model::WriteError::InvalidJson(m),
                current_read_model::WriteError::InvalidName(m) => read_model::WriteError::InvalidName(m),
            }))
        }

        fn delete(&mut self, collection: String, key: String) -> wasmtime::Result<()> {
            current_read_model::Host::delete(self, collection, key)
        }
    }

    impl log::Host for HostState {
        fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
            let level = match level {
                log::Level::Debug => current_log::Level::Debug,
                log::Level::Info => current_log::Level::Info,
                log::Level::Warn => current_log::Level::Warn,
                log::Level::Error => current_log::Level::Error,
            };
            current_log::Host::write(self, level, message)
        }
    }

    impl types::Host for HostState {}
}
