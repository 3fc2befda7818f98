//! The store's resource limiter: wasmtime's own [`StoreLimits`] policy
//! (a memory cap, a trap when growth is refused), plus a record of whether
//! the memory cap refused a growth, so that a trap is classified by its
//! cause rather than by its message.
//!
//! It deliberately changes no limit: tables, instances and memories count
//! exactly as `StoreLimits` counts them.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Caps a store's linear memory at `memory_bytes` and remembers refusing.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    policy: StoreLimits,
    memory_bytes: usize,
    refused: bool,
}

impl MemoryCap {
    pub(super) fn new(memory_bytes: usize) -> Self {
        let policy = StoreLimitsBuilder::new().memory_size(memory_bytes).trap_on_grow_failure(true).build();
        MemoryCap { policy, memory_bytes, refused: false }
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
        let outcome = self.policy.memory_growing(current, desired, maximum);
        // Only the cap counts: growth past the module's own declared maximum
        // is refused too, but that is the module's limit, not the host's.
        if desired > self.memory_bytes {
            self.refused = true;
        }
        outcome
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.policy.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.policy.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.policy.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.policy.instances()
    }

    fn tables(&self) -> usize {
        self.policy.tables()
    }

    fn memories(&self) -> usize {
        self.policy.memories()
    }
}
