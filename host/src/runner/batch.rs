//! One batch on the blocking thread: run the module, commit its writes with
//! the checkpoint, and apply the error policy when the module fails.
//!
//! A batch that succeeds commits its documents and its checkpoint in one
//! transaction. When the module fails on a batch, nothing of that run is
//! kept. Under `on_error=fault`, a guest error names its event and faults
//! the projection at once (checkpoint before the batch). A trap names no
//! event, and `skip` must find each failing one, so then the batch runs
//! again one event at a time (each event its own transaction): under `fault`
//! up to the failing event, which faults the projection with the checkpoint
//! just before it; under `skip` the failing events become dead letters and
//! the rest goes on. A batch whose writes the read model can never hold
//! (`Unstorable`: a NUL character on PostgreSQL) goes the same way, event by
//! event, and the event that wrote it is the failing one. This file does not
//! read events or publish status; the runner (`mod.rs`) does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pipeline::Counted;
use super::Runner;
use crate::readmodel::{Checkpoint, DeadLetter, ReadModelDb, Unstorable};
use crate::runtime::{Event, Fault, Instance, Limits, Module, Runtime, Writes};
use crate::settings::OnError;
use crate::status::FaultInfo;

/// Why a batch was not applied.
pub(super) enum Failure {
    /// The module failed on it: the projection faults.
    Fault(FaultInfo),
    /// Its documents could not be committed (a full disk, an I/O error):
    /// nothing of it is kept, and it is tried again after a pause.
    Storage(anyhow::Error),
}

impl From<FaultInfo> for Failure {
    fn from(fault: FaultInfo) -> Self {
        Failure::Fault(fault)
    }
}

/// One batch's work on the blocking thread.
pub(super) struct Job {
    pub(super) instance: Instance,
    pub(super) runtime: Arc<Runtime>,
    pub(super) module: Module,
    pub(super) limits: Limits,
    pub(super) db: Arc<ReadModelDb>,
    pub(super) on_error: OnError,
    /// The checkpoint before the batch.
    pub(super) start: Checkpoint,
    /// Its position as stored (`None` before the first batch): the first
    /// commit of the batch requires the read model to be still there.
    pub(super) from: Option<u64>,
    /// Time spent in the module (the rest of the batch is commits).
    pub(super) module_time: Duration,
}

impl Job {
    /// Applies `events` (ending at `position`); returns the new checkpoint and the number of events skipped.
    pub(super) fn run(&mut self, events: &[Arc<Event>], position: u64) -> Result<(Checkpoint, u64), Failure> {
        let end = Checkpoint { position, events: self.start.events + events.len() as u64 };
        match self.handle(events) {
            Ok(writes) => match self.db.commit_after(self.from, &writes, None, end) {
                Ok(()) => Ok((end, 0)),
                // One of the events wrote what the read model cannot hold: find it.
                Err(e) if e.downcast_ref::<Unstorable>().is_some() => self.one_at_a_time(events, end),
                Err(e) => Err(Failure::Storage(e)),
            },
            Err(Fault::ReadFailed(reason)) => {
                self.recover(&Fault::ReadFailed(String::new()))?;
                Err(Failure::Storage(anyhow::anyhow!(reason)))
            }
            Err(fault) => {
                self.recover(&fault)?;
                let names_its_event = matches!(fault, Fault::Guest { .. }) || events.len() == 1;
                if self.on_error == OnError::Fault && names_its_event {
                    return Err(fault_info(fault, events).into());
                }
                // A trap names no event, and `skip` needs each failing one.
                self.one_at_a_time(events, end)
            }
        }
    }

    /// Applies the events one at a time, each in its own transaction. An
    /// event that fails faults the projection (`fault`, the checkpoint ends
    /// just before it) or becomes a dead letter (`skip`). Should each event
    /// succeed alone (a batch that was only too slow as a whole), the batch
    /// is done.
    fn one_at_a_time(&mut self, events: &[Arc<Event>], end: Checkpoint) -> Result<(Checkpoint, u64), Failure> {
        let mut checkpoint = self.start;
        let mut from = self.from;
        let mut skipped = 0;
        for event in events {
            let alone = std::slice::from_ref(event);
            checkpoint = Checkpoint { position: event.commit_position, events: checkpoint.events + 1 };
            let fault = match self.handle(alone) {
                Ok(writes) => match self.db.commit_after(from, &writes, None, checkpoint) {
                    Ok(()) => {
                        from = Some(checkpoint.position);
                        continue;
                    }
                    Err(e) => match e.downcast::<Unstorable>() {
                        Ok(Unstorable(message)) => Fault::Guest { event_index: 0, message },
                        Err(e) => return Err(Failure::Storage(e)),
                    },
                },
                Err(Fault::ReadFailed(reason)) => {
                    self.recover(&Fault::ReadFailed(String::new()))?;
                    return Err(Failure::Storage(anyhow::anyhow!(reason)));
                }
                Err(fault) => fault,
            };
            self.recover(&fault)?;
            match self.on_error {
                OnError::Fault => return Err(fault_info(fault, alone).into()),
                OnError::Skip => {
                    let letter = dead_letter(event, fault);
                    tracing::warn!(stream = %letter.stream, position = letter.position, error = %letter.error, "event skipped");
                    self.db.commit_after(from, &Writes::new(), Some(&letter), checkpoint).map_err(Failure::Storage)?;
                    from = Some(checkpoint.position);
                    skipped += 1;
                }
            }
        }
        if end.position > checkpoint.position {
            self.db.commit_after(from, &Writes::new(), None, end).map_err(Failure::Storage)?;
        }
        Ok((end, skipped))
    }

    fn handle(&mut self, events: &[Arc<Event>]) -> Result<Writes, Fault> {
        if events.is_empty() {
            return Ok(Writes::new());
        }
        let started = Instant::now();
        let result = self.instance.handle_batch(events, self.db.clone());
        self.module_time += started.elapsed();
        result
    }

    /// After a trap the instance must not be used again: start a fresh one.
    fn recover(&mut self, fault: &Fault) -> Result<(), FaultInfo> {
        if !matches!(fault, Fault::Guest { .. }) {
            self.instance = self
                .runtime
                .instantiate_with(&self.module, self.limits)
                .map_err(|f| FaultInfo::plain(format!("cannot start the module again after a fault: {f}")))?;
        }
        Ok(())
    }
}

impl Runner {
    /// Runs and commits one batch on a blocking thread, applying the error
    /// policy when the module fails on it (see the module's notes).
    pub(super) async fn apply_plainly(&mut self, events: Vec<Arc<Event>>, position: u64) -> Result<(), Failure> {
        let Some(instance) = self.instance.take() else {
            return Err(FaultInfo::plain("the module instance was lost after an earlier failure").into());
        };
        let mut job = Job {
            instance,
            runtime: self.runtime.clone(),
            module: self.module.clone(),
            limits: self.limits,
            db: self.db.clone(),
            on_error: self.on_error,
            start: self.checkpoint.unwrap_or_default(),
            from: self.checkpoint.map(|c| c.position),
            module_time: Duration::ZERO,
        };
        let (metrics, name) = (self.metrics.clone(), self.name.clone());
        let work = move || {
            let started = Instant::now();
            let outcome = job.run(&events, position);
            if outcome.is_ok() {
                let module_time = job.module_time;
                Counted::new(metrics, name, &events, module_time).record(started.elapsed() - module_time);
            }
            (job.instance, outcome)
        };
        let ran = tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string());
        let (instance, outcome) = ran.map_err(|e| FaultInfo::plain(format!("the batch thread failed: {e}")))?;
        self.instance = Some(instance);
        let (checkpoint, skipped) = outcome?;
        self.checkpoint = Some(checkpoint);
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint.position);
            s.events_processed = checkpoint.events;
            s.dead_letters += skipped;
        });
        Ok(())
    }
}

fn dead_letter(event: &Event, fault: Fault) -> DeadLetter {
    DeadLetter {
        position: event.commit_position,
        stream: event.stream_id.clone(),
        revision: event.stream_revision,
        event_type: event.event_type.clone(),
        error: match fault {
            Fault::Guest { message, .. } => message,
            other => other.to_string(),
        },
    }
}

/// The fault as the status shows it, naming its event when it is known.
pub(super) fn fault_info(fault: Fault, events: &[Arc<Event>]) -> FaultInfo {
    let event = match &fault {
        Fault::Guest { event_index, .. } => events.get(*event_index),
        // A trap while applying a single event is that event's.
        _ if events.len() == 1 => events.first(),
        _ => None,
    };
    FaultInfo {
        reason: fault.to_string(),
        stream: event.map(|e| e.stream_id.clone()),
        revision: event.map(|e| e.stream_revision),
        position: event.map(|e| e.commit_position),
        event_type: event.map(|e| e.event_type.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Arc<Event> {
        Arc::new(Event {
            stream_id: format!("order-{n}"),
            event_type: "OrderPlaced".into(),
            event_id: format!("id-{n}"),
            stream_revision: n,
            commit_position: 100 * n,
            created_ms: 0,
            content_type: "application/json".into(),
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        })
    }

    #[test]
    fn a_guest_error_names_the_event_it_reports() {
        let events = [event(1), event(2), event(3)];
        let info = fault_info(Fault::Guest { event_index: 1, message: "bad".into() }, &events);
        assert_eq!(info.stream.as_deref(), Some("order-2"));
        assert_eq!(info.position, Some(200));
        assert_eq!(info.reason, "bad", "the batch index is the host's business, not the user's");
    }

    #[test]
    fn a_trap_names_an_event_only_when_it_ran_alone() {
        let trap = Fault::Trap("unreachable".into());
        assert_eq!(fault_info(trap.clone(), &[event(1), event(2)]).position, None);
        let alone = fault_info(trap, &[event(7)]);
        assert_eq!(
            (alone.stream.as_deref(), alone.revision, alone.event_type.as_deref()),
            (Some("order-7"), Some(7), Some("OrderPlaced"))
        );
    }

    #[test]
    fn a_skipped_event_keeps_the_guests_own_message() {
        let letter = dead_letter(&event(4), Fault::Guest { event_index: 0, message: "invalid event: x".into() });
        assert_eq!((letter.position, letter.error.as_str()), (400, "invalid event: x"));
        let trapped = dead_letter(&event(4), Fault::Timeout(Duration::from_millis(10)));
        assert_eq!(trapped.error, "the batch ran longer than 10ms");
    }
}
