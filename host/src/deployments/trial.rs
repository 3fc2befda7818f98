//! Trying a module before deploying it: one run of the module over some
//! events in the sandbox, against an empty read model or a copy-on-write
//! view of a deployed one, that commits nothing.
//!
//! The events are the last events of `$all` (system events aside; the
//! module is handed those it subscribes to) or events given by the caller.
//! The module runs as one batch with the sandbox's usual limits; its writes
//! stay in the batch overlay, which is what the trial returns, with the
//! lines the module logged and the error it failed with, if any. Nothing is
//! written to any read model, registry or event store.

use std::sync::Arc;

use eventstore::{ReadAllOptions, StreamPosition};

use super::lane::sandbox_limits;
use super::{ChangeError, Deployments};
use crate::runtime::{DocumentSource, Event, LogLine, Module};
use crate::settings::ProjectionLimits;

/// Most events one trial runs over.
pub const MAX_TRIAL_EVENTS: usize = 10_000;

/// What to try.
#[derive(Debug)]
pub struct Trial {
    /// A deployed projection: its serving module when `module` is `None`,
    /// and its read model for [`View::Current`].
    pub projection: Option<String>,
    /// A module's bytes, tried instead of the projection's own.
    pub module: Option<Vec<u8>>,
    /// The events it runs over.
    pub events: TrialEvents,
    /// What its reads see.
    pub view: View,
}

/// The events a trial runs over.
#[derive(Debug)]
pub enum TrialEvents {
    /// The last this many events of `$all`, system events aside.
    Last(usize),
    /// These events, in this order.
    Given(Vec<Event>),
}

/// What the module's reads see during a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// An empty read model.
    Empty,
    /// The projection's read model as it is now (its writes go to the overlay only).
    Current,
}

/// What a trial found.
#[derive(Debug, serde::Serialize)]
pub struct TrialOutcome {
    /// Events handed to the module.
    pub events: usize,
    /// What it would write, in key order (`document: null` deletes).
    pub writes: Vec<TrialWrite>,
    /// What it logged.
    pub logs: Vec<LogLine>,
    /// Why it failed, if it did (then `writes` is empty: a failed batch writes nothing).
    pub error: Option<String>,
}

/// One document a trial would write.
#[derive(Debug, serde::Serialize)]
pub struct TrialWrite {
    pub collection: String,
    pub key: String,
    /// The document (JSON), or `null` for a deletion.
    pub document: Option<Box<serde_json::value::RawValue>>,
}

/// Reads of an empty read model.
struct Nothing;

impl DocumentSource for Nothing {
    fn get(&self, _collection: &str, _key: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
}

impl Deployments {
    /// Runs `trial` (see the module's notes). A request that cannot be run
    /// (an unknown projection, a module that is not one, too many events)
    /// is an error; a module that fails on the events is an outcome.
    pub async fn try_module(&self, trial: Trial) -> Result<TrialOutcome, ChangeError> {
        let deployed = match &trial.projection {
            Some(name) => Some(self.get(name).ok_or_else(|| ChangeError::Unknown(name.clone()))?),
            None => None,
        };
        let limits = match &trial.projection {
            Some(name) => self.registry.get(name).map(|entry| entry.limits).unwrap_or_default(),
            None => ProjectionLimits::default(),
        };
        let module = match (trial.module, &trial.projection) {
            (Some(bytes), _) => self.compile(Arc::new(bytes)).await?,
            (None, Some(name)) => self.serving_module(name).await?,
            (None, None) => return Err(ChangeError::Invalid("a trial needs a module or a deployed projection".into())),
        };
        let source: Arc<dyn DocumentSource> = match (trial.view, &deployed) {
            (View::Empty, _) => Arc::new(Nothing),
            (View::Current, Some(deployment)) => deployment.db(),
            (View::Current, None) => {
                return Err(ChangeError::Invalid(
                    "a trial over the current read model needs a deployed projection".into(),
                ))
            }
        };
        let events = match trial.events {
            TrialEvents::Given(events) if events.len() > MAX_TRIAL_EVENTS => {
                return Err(ChangeError::Invalid(format!("a trial runs over at most {MAX_TRIAL_EVENTS} events")))
            }
            TrialEvents::Given(events) => events,
            TrialEvents::Last(n) if n > MAX_TRIAL_EVENTS => {
                return Err(ChangeError::Invalid(format!("a trial runs over at most {MAX_TRIAL_EVENTS} events")))
            }
            TrialEvents::Last(n) => self.last_events(n).await?,
        };
        let description = module.description();
        let events: Vec<Event> =
            events.into_iter().filter(|e| description.wants(&e.stream_id, &e.event_type)).collect();
        let runtime = self.runtime.clone();
        let limits = sandbox_limits(limits, runtime.limits());
        let run = tokio::task::spawn_blocking(move || {
            let mut instance = match runtime.instantiate_with(&module, limits) {
                Ok(instance) => instance,
                Err(fault) => return (Err(format!("the module cannot start: {fault}")), Vec::new()),
            };
            instance.capture_logs();
            let outcome = if events.is_empty() {
                Ok(Default::default())
            } else {
                instance.handle_batch(&events, source).map_err(|fault| fault.to_string())
            };
            (outcome.map(|writes| (events.len(), writes)), instance.take_logs())
        });
        let (outcome, logs) = run.await.map_err(|e| anyhow::anyhow!("the trial thread failed: {e}"))?;
        Ok(match outcome {
            Ok((count, writes)) => TrialOutcome {
                events: count,
                writes: writes
                    .into_iter()
                    .map(|((collection, key), document)| TrialWrite {
                        collection,
                        key,
                        // The host checked it is JSON when the module wrote it.
                        document: document.and_then(|d| serde_json::value::RawValue::from_string(d).ok()),
                    })
                    .collect(),
                logs,
                error: None,
            },
            Err(error) => TrialOutcome { events: 0, writes: Vec::new(), logs, error: Some(error) },
        })
    }

    /// The module `name` serves queries with now.
    async fn serving_module(&self, name: &str) -> Result<Module, ChangeError> {
        let entry = self.registry.get(name).ok_or_else(|| ChangeError::Unknown(name.to_owned()))?;
        let bytes = self.registry.module_bytes(&entry.serving.module)?;
        self.compile(Arc::new(bytes)).await
    }

    /// The last `n` events of `$all`, system events aside, oldest first.
    async fn last_events(&self, n: usize) -> Result<Vec<Event>, ChangeError> {
        let mut events = Vec::with_capacity(n);
        if n == 0 {
            return Ok(events);
        }
        let options = ReadAllOptions::default().position(StreamPosition::End).backwards();
        let cannot = |e: eventstore::Error| anyhow::anyhow!("cannot read the last events of $all: {e}");
        let mut read = self.client.read_all(&options).await.map_err(cannot)?;
        while events.len() < n {
            let Some(resolved) = read.next().await.map_err(cannot)? else { break };
            let recorded = resolved.get_original_event();
            if !recorded.event_type.starts_with('$') {
                events.push(crate::feed::reader::to_event(recorded));
            }
        }
        events.reverse();
        Ok(events)
    }
}
