//! The store's resource limiter: what one module may hold, counted over
//! everything it creates, not per object.
//!
//! wasmtime's own `StoreLimits` caps each linear memory and leaves the number
//! of memories, tables and instances at 10,000 each, so a component of many
//! core instances, or one core module declaring many memories, could hold
//! many times the memory cap. Here the cap is the module's total: the sum of
//! all its linear memories; tables are capped the same way (in elements);
//! and the counts of instances, memories and tables are small, well above
//! what real modules (Rust, componentize-js, componentize-py) use. A refused
//! growth traps; whether the memory cap refused is remembered, so a trap is
//! classified by its cause rather than by its message.

use wasmtime::ResourceLimiter;

/// Most core instances one module's component may create.
pub(crate) const MAX_INSTANCES: usize = 100;
/// Most linear memories one module may create.
pub(crate) const MAX_MEMORIES: usize = 16;
/// Most tables one module may create.
pub(crate) const MAX_TABLES: usize = 100;
/// Most table elements one module may hold, over all its tables (a funcref
/// is a pointer or two: this bounds tables to some tens of MiB).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Caps a store's linear memories at `memory_bytes` in total, its tables at
/// [`MAX_TABLE_ELEMENTS`], and remembers when the memory cap refused.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    memory_bytes: usize,
    /// Bytes of linear memory the module holds, all memories together.
    memory_used: usize,
    /// Elements the module's tables hold, all tables together.
    table_elements: usize,
    refused: bool,
}

impl MemoryCap {
    pub(super) fn new(memory_bytes: usize) -> Self {
        MemoryCap { memory_bytes, memory_used: 0, table_elements: 0, refused: false }
    }

    /// Whether the cap refused a memory growth since the last [`reset`](Self::reset).
    pub(super) fn refused(&self) -> bool {
        self.refused
    }

    /// Forgets earlier refusals; called before each call into the module.
    pub(super) fn reset(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Growth past the module's own declared maximum is refused too, but
        // that is the module's limit, not the host's.
        if maximum.is_some_and(|maximum| desired > maximum) {
            wasmtime::bail!("the module grew a memory past its own maximum of {} bytes", maximum.unwrap_or(0));
        }
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_bytes {
            self.refused = true;
            wasmtime::bail!(
                "the module's memories would hold {total} bytes, over its limit of {} bytes",
                self.memory_bytes
            );
        }
        self.memory_used = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("a memory of the module could not grow"))
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            wasmtime::bail!("the module grew a table past its own maximum of {} elements", maximum.unwrap_or(0));
        }
        let total = self.table_elements - current.min(self.table_elements) + desired;
        if total > MAX_TABLE_ELEMENTS {
            wasmtime::bail!("the module's tables would hold {total} elements, over the limit of {MAX_TABLE_ELEMENTS}");
        }
        self.table_elements = total;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("a table of the module could not grow"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
