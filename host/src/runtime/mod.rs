//! The WebAssembly runtime: compiles projection modules and runs their
//! batches inside a sandbox.
//!
//! A module is compiled once, at deploy, into a wasmtime component (a plain
//! core module built for `wasm32-unknown-unknown` is wrapped into a component
//! first). Each batch runs under a deadline (epoch interruption), a memory
//! cap, and a document size cap. The batch's writes are collected in an
//! overlay that reads see; the caller commits them, with the checkpoint, only
//! if the batch succeeds. This module does not store anything and does not
//! subscribe to anything: storage and the event feed are the caller's.

mod bindings;
mod cache;
mod functions;
mod host;
mod limiter;
#[cfg(test)]
mod tests;
mod toolchain;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

use bindings::projector::projection::types as wit;
use bindings::v0_1::projector::projection::types as wit_v0_1;
use host::HostState;
pub use host::{DocumentSource, LogLine};
/// Events and descriptions are the SDK's types: one definition on both sides of the boundary.
pub use projector_guest_sdk::{Description, Event};
pub use toolchain::toolchain;

/// How often the epoch ticks; batch deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sandbox limits for each projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a single batch may run.
    pub batch_deadline: Duration,
    /// Largest linear memory a module may have.
    pub memory_bytes: usize,
    /// Largest document a module may write; by default the SDK's
    /// [`projector_guest_sdk::rules::MAX_DOCUMENT_BYTES`], which its test
    /// harness applies too.
    pub document_bytes: usize,
    /// Most a single batch may write (documents, keys and deletes, each
    /// counted when written): what the host holds for the batch until it
    /// commits, outside the module's memory cap.
    pub batch_write_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            document_bytes: projector_guest_sdk::rules::MAX_DOCUMENT_BYTES,
            batch_write_bytes: 64 << 20,
        }
    }
}

/// Why a module cannot be deployed. Surfaces as HTTP 400/422 at deploy.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The bytes are not WebAssembly.
    #[error("not a WebAssembly module or component")]
    NotWasm,
    /// The module imports something outside the contract.
    #[error("module imports `{0}`, which is outside the projection contract")]
    ForbiddenImport(String),
    /// The module is WebAssembly but does not implement the contract.
    #[error("module does not implement the projection contract: {0}")]
    Invalid(String),
}

/// Why a batch failed. The caller discards the batch's writes and faults the
/// projection with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest reported an error for one of the events.
    // The batch is the host's business: the fault names the event by its
    // stream, revision and position, so the message is the guest's own.
    #[error("{message}")]
    Guest {
        /// Index of the failing event in the batch.
        event_index: usize,
        /// The guest's error, e.g. `invalid event: ...`.
        message: String,
    },
    /// The batch ran past its deadline.
    #[error("the batch ran longer than {0:?}")]
    Timeout(Duration),
    /// The module tried to grow its memory past the limit.
    #[error("the module exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The module trapped (a panic, an out-of-bounds access, a host failure).
    #[error("the module trapped: {0}")]
    Trap(String),
    /// A read of the read model failed under the module (the database
    /// away): not the module's fault; the batch is tried again.
    #[error("{0}")]
    ReadFailed(String),
}

/// A batch's writes: `Some(json)` to store, `None` to delete.
pub type Writes = BTreeMap<(String, String), Option<String>>;

/// The engine shared by every projection.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache: Option<cache::ArtifactCache>,
    functions: Option<Arc<functions::FunctionCache>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A compiled module, ready to instantiate.
#[derive(Clone)]
pub struct Module {
    component: Component,
    contract: Arc<Contract>,
    description: Description,
    precompiled: bool,
}

/// Which version of the contract a module implements, with its imports
/// resolved. Modules built against 0.1.0 keep running: their description
/// has type prefixes only, which is what its `event-type-prefixes` meant.
enum Contract {
    Current(bindings::ProjectionPre<HostState>),
    V0_1(bindings::v0_1::ProjectionPre<HostState>),
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("description", &self.description).finish_non_exhaustive()
    }
}

impl Module {
    /// What the module said about itself at deploy.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Whether it was loaded from the artifact cache rather than compiled.
    pub fn precompiled(&self) -> bool {
        self.precompiled
    }
}

impl Runtime {
    /// An engine with the given default limits, and the thread that ticks its epoch.
    pub fn new(limits: Limits) -> anyhow::Result<Runtime> {
        Runtime::build(limits, None)
    }

    /// Like [`Runtime::new`], keeping every compiled function in the SQLite
    /// file `functions` and reusing it when a later module holds the same
    /// function (a module in a language whose runtime it carries compiles
    /// mostly from there). Without a usable file it compiles everything, as
    /// `new` does.
    pub fn with_function_cache(limits: Limits, functions: &std::path::Path) -> anyhow::Result<Runtime> {
        // What the cached functions were compiled by: an engine with this
        // configuration (a wasmtime upgrade empties the cache).
        let probe = Engine::new(&engine_config()).map_err(wasm_error)?;
        let engine_key: String = cache::engine_key(&probe).iter().map(|b| format!("{b:02x}")).collect();
        match functions::FunctionCache::open(functions, &engine_key) {
            Ok(cache) => Runtime::build(limits, Some(Arc::new(cache))),
            Err(e) => {
                tracing::warn!(path = %functions.display(), "cannot open the compiled-function cache, compiling without it: {e}");
                Runtime::build(limits, None)
            }
        }
    }

    fn build(limits: Limits, functions: Option<Arc<functions::FunctionCache>>) -> anyhow::Result<Runtime> {
        let mut config = engine_config();
        if let Some(functions) = &functions {
            config.enable_incremental_compilation(functions.clone()).map_err(wasm_error)?;
        }
        let engine = Engine::new(&config).map_err(wasm_error)?;
        spawn_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        bindings::Projection::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(wasm_error)?;
        bindings::v0_1::Projection::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(wasm_error)?;
        Ok(Runtime { engine, linker, limits, cache: None, functions })
    }

    /// Keeps precompiled modules in `dir` and loads them from there instead
    /// of compiling the same bytes again.
    pub fn with_artifact_cache(mut self, dir: std::path::PathBuf) -> Runtime {
        self.cache = Some(cache::ArtifactCache::new(dir, &self.engine));
        self
    }

    /// Compiles `bytes` (a core module or a component), checks it against
    /// the contract, and asks it to describe itself. With an artifact cache,
    /// bytes compiled before are loaded instead.
    pub fn compile(&self, bytes: &[u8]) -> Result<Module, DeployError> {
        let cached = self.cache.as_ref().and_then(|cache| cache.load(&self.engine, bytes));
        let fresh = cached.is_none();
        let component = match cached {
            Some(component) => component,
            None => Component::new(&self.engine, &to_component(bytes)?)
                .map_err(|e| DeployError::Invalid(format!("{e:#}")))?,
        };
        for (name, _) in component.component_type().imports(&self.engine) {
            if !name.starts_with("projector:projection/") {
                return Err(DeployError::ForbiddenImport(name.to_owned()));
            }
        }
        let contract = Arc::new(self.contract(&component)?);
        let mut module = Module { component, contract, description: Description::new("", ""), precompiled: !fresh };
        let mut instance =
            self.instantiate(&module).map_err(|fault| DeployError::Invalid(format!("cannot instantiate: {fault}")))?;
        module.description =
            instance.describe().map_err(|fault| DeployError::Invalid(format!("describe failed: {fault}")))?;
        if let Some(cache) = self.cache.as_ref().filter(|_| fresh) {
            cache.store(bytes, &module.component);
        }
        Ok(module)
    }

    /// Which contract `component` implements: the current one, else 0.1.0;
    /// if neither, why not the current one.
    fn contract(&self, component: &Component) -> Result<Contract, DeployError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| DeployError::Invalid(format!("cannot instantiate: {e:#}")))?;
        match bindings::ProjectionPre::new(pre.clone()) {
            Ok(current) => Ok(Contract::Current(current)),
            Err(mismatch) => bindings::v0_1::ProjectionPre::new(pre)
                .map(Contract::V0_1)
                .map_err(|_| DeployError::Invalid(format!("{mismatch:#}"))),
        }
    }

    /// How many functions compiling took from the compiled-function cache
    /// instead of compiling them (0 without one).
    pub fn compiled_function_hits(&self) -> u64 {
        self.functions.as_ref().map_or(0, |f| f.hits())
    }

    /// The default limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A fresh instance of `module` with this runtime's limits.
    pub fn instantiate(&self, module: &Module) -> Result<Instance, Fault> {
        self.instantiate_with(module, self.limits)
    }

    /// A fresh instance of `module` with `limits` (a projection's own).
    pub fn instantiate_with(&self, module: &Module, limits: Limits) -> Result<Instance, Fault> {
        let state = HostState::new(&limits, module.description.name.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(limits.batch_deadline));
        let bindings = match &*module.contract {
            Contract::Current(pre) => pre.instantiate(&mut store).map(Bindings::Current),
            Contract::V0_1(pre) => pre.instantiate(&mut store).map(Bindings::V0_1),
        }
        .map_err(|e| classify(e, &limits, store.data().limiter.refused()))?;
        Ok(Instance { store, bindings, limits })
    }
}

/// A running module. Not `Sync`; one batch at a time.
pub struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    limits: Limits,
}

enum Bindings {
    Current(bindings::Projection),
    V0_1(bindings::v0_1::Projection),
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("limits", &self.limits).finish_non_exhaustive()
    }
}

// The two contracts' records have the same fields but are distinct types,
// so the conversions are written once, for either.

/// A description from either contract's record (0.1.0 has no exact types).
macro_rules! description {
    ($d:expr, $event_types:expr) => {{
        let d = $d;
        Description {
            name: d.name,
            version: d.version,
            event_types: $event_types,
            event_type_prefixes: d.event_type_prefixes,
            stream_prefixes: d.stream_prefixes,
            indexes: d.indexes.into_iter().map(|i| (i.collection, i.field)).collect(),
        }
    }};
}

/// The batch as `$wit`'s event records.
macro_rules! wit_events {
    ($wit:ident, $events:expr) => {
        $events
            .iter()
            .map(std::borrow::Borrow::<Event>::borrow)
            .map(|e| $wit::Event {
                stream_id: e.stream_id.clone(),
                event_type: e.event_type.clone(),
                event_id: e.event_id.clone(),
                stream_revision: e.stream_revision,
                commit_position: e.commit_position,
                created_ms: e.created_ms,
                content_type: e.content_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
            })
            .collect::<Vec<_>>()
    };
}

/// The fault for `$wit`'s batch error.
macro_rules! guest_fault {
    ($wit:ident, $failed:expr) => {{
        let failed = $failed;
        Fault::Guest {
            event_index: failed.event_index as usize,
            message: match failed.error {
                $wit::HandleError::InvalidEvent(m) => format!("invalid event: {m}"),
                $wit::HandleError::ReadModel(m) => format!("read model: {m}"),
                $wit::HandleError::Other(m) => m,
            },
        }
    }};
}

impl Instance {
    fn describe(&mut self) -> Result<Description, Fault> {
        self.begin_call();
        let described = match &self.bindings {
            Bindings::Current(b) => b.call_describe(&mut self.store).map(|mut d| {
                let event_types = std::mem::take(&mut d.event_types);
                description!(d, event_types)
            }),
            Bindings::V0_1(b) => b.call_describe(&mut self.store).map(|d| description!(d, Vec::new())),
        };
        described.map_err(|e| self.classify(e))
    }

    /// Runs one batch over `source` and returns its writes. On any failure
    /// the writes are dropped; after a trap the instance must not be reused.
    pub fn handle_batch<E: std::borrow::Borrow<Event>>(
        &mut self,
        events: &[E],
        source: Arc<dyn DocumentSource>,
    ) -> Result<Writes, Fault> {
        self.store.data_mut().begin_batch(source);
        self.begin_call();
        let outcome = match &self.bindings {
            Bindings::Current(b) => b
                .call_handle_batch(&mut self.store, &wit_events!(wit, events))
                .map(|r| r.map_err(|failed| guest_fault!(wit, failed))),
            Bindings::V0_1(b) => b
                .call_handle_batch(&mut self.store, &wit_events!(wit_v0_1, events))
                .map(|r| r.map_err(|failed| guest_fault!(wit_v0_1, failed))),
        };
        let writes = self.store.data_mut().end_batch();
        let read_failure = self.store.data_mut().take_read_failure();
        match (outcome, read_failure) {
            (Ok(Ok(())), _) => Ok(writes),
            (_, Some(reason)) => Err(Fault::ReadFailed(reason)),
            (Ok(Err(fault)), None) => Err(fault),
            (Err(e), None) => Err(self.classify(e)),
        }
    }

    /// Keeps the module's log lines for [`Instance::take_logs`] instead of
    /// writing them to the host's log (a trial shows them to its caller).
    pub fn capture_logs(&mut self) {
        self.store.data_mut().capture_logs();
    }

    /// The log lines kept since the last call (see [`Instance::capture_logs`]).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().take_captured()
    }

    /// Gives the next call into the module a fresh deadline and forgets
    /// what the memory cap refused before.
    fn begin_call(&mut self) {
        self.store.set_epoch_deadline(deadline_ticks(self.limits.batch_deadline));
        self.store.data_mut().limiter.reset();
    }

    fn classify(&self, error: wasmtime::Error) -> Fault {
        classify(error, &self.limits, self.store.data().limiter.refused())
    }
}

/// The engine's settings: the component model, and deadlines by epoch.
fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// Wraps a core module into a component; passes components through.
fn to_component(bytes: &[u8]) -> Result<Vec<u8>, DeployError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(DeployError::NotWasm);
    }
    // Validate the whole binary first: the component encoder assumes a
    // well-formed module (a truncated one can make it panic).
    let mut features = wasmparser::WasmFeatures::default();
    features.insert(wasmparser::WasmFeatures::COMPONENT_MODEL);
    wasmparser::Validator::new_with_features(features)
        .validate_all(bytes)
        .map_err(|e| DeployError::Invalid(format!("invalid WebAssembly: {e}")))?;
    // Bytes 4..8 are the version; a component's layer field is non-zero.
    if bytes[6..8] != [0, 0] {
        return Ok(bytes.to_vec());
    }
    wit_component::ComponentEncoder::default()
        .module(bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            let message = format!("{e:#}");
            match forbidden_import_in(&message) {
                Some(import) => DeployError::ForbiddenImport(import),
                None => DeployError::Invalid(message),
            }
        })
}

/// Picks the offending import name out of wit-component's error message.
fn forbidden_import_in(message: &str) -> Option<String> {
    let start = message.find("import")?;
    let rest = &message[start..];
    let open = rest.find('`')?;
    let close = rest[open + 1..].find('`')?;
    Some(rest[open + 1..open + 1 + close].to_owned())
}

fn wasm_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}

fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Turns a wasmtime error into the fault a user can act on, by its cause:
/// the epoch deadline's trap, or `memory_refused` (the store's memory cap
/// refused a growth during the call, which then traps); anything else is a
/// trap, described by its message.
fn classify(error: wasmtime::Error, limits: &Limits, memory_refused: bool) -> Fault {
    if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return Fault::Timeout(limits.batch_deadline);
    }
    if memory_refused {
        return Fault::MemoryLimit(limits.memory_bytes);
    }
    Fault::Trap(format!("{error:#}"))
}

/// Ticks the engine's epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    let _ = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
}
