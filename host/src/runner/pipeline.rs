//! The pipeline: a lane's next batch runs in its module while the batch
//! before it commits.
//!
//! A batch whose module run succeeded commits on a blocking thread of its
//! own ([`InFlight`]); the runner meanwhile takes the next batch and runs
//! the module on it, reading through an [`Overlay`]: the writes of the batch
//! being committed over the committed documents. Whether a read sees the
//! read model before or after that commit lands makes no difference, since
//! every document the commit changes is in the overlay. At most one commit
//! is in flight: the next one starts only once it has landed, so each
//! batch still commits its documents with its own checkpoint, in order.
//!
//! What is not pipelined runs the plain way (`batch.rs`), after the commit
//! in flight has landed, on a fresh instance: a batch the module failed on
//! (the error policy needs the read model as it was before the batch), a
//! batch whose writes the read model might refuse
//! ([`ReadModelDb::may_refuse`]), and a batch of no events (a checkpoint
//! over events the lane does not want). Should a commit in flight be
//! refused as [`Unstorable`] all the same, the lane reads again from its
//! checkpoint and runs the plain way up to that batch's end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::Failure;
use super::Runner;
use crate::metrics::Metrics;
use crate::readmodel::{Checkpoint, ReadModelDb, Unstorable};
use crate::runtime::{DocumentSource, Event, Writes};
use crate::status::FaultInfo;

/// A batch being committed.
pub(crate) struct InFlight {
    /// What it wrote, for the next batch's reads.
    pub(super) writes: Arc<Writes>,
    /// The checkpoint it commits.
    pub(super) end: Checkpoint,
    /// The commit: `Ok` once the documents and the checkpoint are stored.
    pub(super) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InFlight {
    /// Commits `writes` with `end` (after `from`, the checkpoint before the
    /// batch) on a blocking thread, and counts the batch in the metrics
    /// once it has landed.
    pub(super) fn start(
        db: Arc<ReadModelDb>,
        from: Option<u64>,
        writes: Writes,
        end: Checkpoint,
        batch: Counted,
    ) -> InFlight {
        let writes = Arc::new(writes);
        let committed = writes.clone();
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            db.commit_after(from, &committed, None, end)?;
            batch.record(started.elapsed());
            Ok(())
        });
        InFlight { writes, end, task }
    }
}

/// A batch's figures for the metrics, recorded once it has landed.
pub(super) struct Counted {
    pub(super) metrics: Arc<Metrics>,
    pub(super) projection: String,
    /// Events per type.
    pub(super) types: HashMap<String, u64>,
    /// Time the module took over it.
    pub(super) module_time: Duration,
}

impl Counted {
    pub(super) fn new(metrics: Arc<Metrics>, projection: String, events: &[Arc<Event>], module_time: Duration) -> Self {
        let mut types: HashMap<String, u64> = HashMap::new();
        for event in events {
            if let Some(count) = types.get_mut(event.event_type.as_str()) {
                *count += 1;
            } else {
                types.insert(event.event_type.clone(), 1);
            }
        }
        Counted { metrics, projection, types, module_time }
    }

    /// Records the batch as committed, the commit having taken `commit_time`.
    pub(super) fn record(&self, commit_time: Duration) {
        self.metrics.batch_committed(&self.projection, &self.types, self.module_time, commit_time);
    }
}

/// The module's view of its read model while a batch is in flight: that
/// batch's writes over what is committed.
pub(super) struct Overlay {
    pub(super) pending: Arc<Writes>,
    pub(super) db: Arc<ReadModelDb>,
}

impl DocumentSource for Overlay {
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        match self.pending.get(&(collection.to_owned(), key.to_owned())) {
            Some(write) => Ok(write.clone()),
            None => self.db.get(collection, key),
        }
    }
}

impl Runner {
    /// Runs `events` in the module while the batch before them commits,
    /// then starts their own commit (see the module's notes). What cannot be
    /// pipelined runs the plain way once the batch before has landed.
    pub(super) async fn apply(&mut self, events: Vec<Arc<Event>>, position: u64) -> Result<(), Failure> {
        // A commit in flight was refused as unstorable: the batches up to it
        // run the plain way, which finds the event that wrote it.
        if self.plain_until.is_some_and(|until| self.checkpoint.is_some_and(|c| c.position >= until)) {
            self.plain_until = None;
        }
        if events.is_empty() || self.plain_until.is_some() {
            self.settle().await.map_err(Failure::Storage)?;
            return self.apply_plainly(events, position).await;
        }
        let Some(mut instance) = self.instance.take() else {
            return Err(FaultInfo::plain("the module instance was lost after an earlier failure").into());
        };
        let source: Arc<dyn DocumentSource> = match &self.in_flight {
            Some(flight) => Arc::new(Overlay { pending: flight.writes.clone(), db: self.db.clone() }),
            None => self.db.clone(),
        };
        let run = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outcome = instance.handle_batch(&events, source);
            (instance, events, outcome, started.elapsed())
        });
        let landed = self.settle().await;
        let ran = run.await.map(|(instance, events, outcome, module_time)| {
            self.instance = Some(instance);
            (events, outcome, module_time)
        });
        // The batch before did not land: this run read what is not stored
        // (and a fenced commit means stepping down, whatever the run did).
        landed.map_err(Failure::Storage)?;
        let (events, outcome, module_time) =
            ran.map_err(|e| FaultInfo::plain(format!("the batch thread failed: {e}")))?;
        match outcome {
            Ok(writes) if !self.db.may_refuse(&writes) => {
                let from = self.checkpoint.map(|c| c.position);
                let end =
                    Checkpoint { position, events: self.checkpoint.unwrap_or_default().events + events.len() as u64 };
                let counted = Counted::new(self.metrics.clone(), self.name.clone(), &events, module_time);
                self.in_flight = Some(InFlight::start(self.db.clone(), from, writes, end, counted));
                Ok(())
            }
            // Run again the plain way (it applies the error policy, or
            // finds the event that wrote what the read model cannot hold),
            // on a fresh instance: this one has seen the batch already.
            _ => {
                let fresh = self
                    .runtime
                    .instantiate_with(&self.module, self.limits)
                    .map_err(|f| FaultInfo::plain(format!("cannot start the module again: {f}")))?;
                self.instance = Some(fresh);
                self.apply_plainly(events, position).await
            }
        }
    }

    /// Waits for the batch in flight, if any, and moves the checkpoint to it.
    pub(super) async fn settle(&mut self) -> anyhow::Result<()> {
        let Some(flight) = self.in_flight.take() else { return Ok(()) };
        let committed = flight.task.await;
        self.landed(flight.end, committed)
    }

    /// The commit of the batch ending at `end` is over: on success the
    /// checkpoint moves to it.
    pub(super) fn landed(
        &mut self,
        end: Checkpoint,
        committed: Result<anyhow::Result<()>, tokio::task::JoinError>,
    ) -> anyhow::Result<()> {
        let committed = committed.map_err(|e| anyhow::anyhow!("the commit thread failed: {e}"))?;
        if let Err(e) = committed {
            if e.downcast_ref::<Unstorable>().is_some() {
                self.plain_until = Some(end.position);
            }
            return Err(e);
        }
        self.checkpoint = Some(end);
        self.status.send_modify(|s| {
            s.checkpoint = Some(end.position);
            s.events_processed = end.events;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_answers_from_the_batch_in_flight_first_deletions_included() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Arc::new(ReadModelDb::open(&dir.path().join("rm.db")).expect("a read model"));
        let mut committed = Writes::new();
        committed.insert(("users".into(), "a".into()), Some(r#"{"v":1}"#.into()));
        committed.insert(("users".into(), "b".into()), Some(r#"{"v":1}"#.into()));
        committed.insert(("users".into(), "c".into()), Some(r#"{"v":1}"#.into()));
        db.commit_after(None, &committed, None, Checkpoint { position: 10, events: 1 }).expect("committed");
        let mut pending = Writes::new();
        pending.insert(("users".into(), "a".into()), Some(r#"{"v":2}"#.into()));
        pending.insert(("users".into(), "b".into()), None);
        pending.insert(("users".into(), "d".into()), Some(r#"{"v":2}"#.into()));
        let overlay = Overlay { pending: Arc::new(pending), db };
        let get = |key: &str| overlay.get("users", key).expect("read");
        assert_eq!(get("a").as_deref(), Some(r#"{"v":2}"#), "rewritten in flight");
        assert_eq!(get("b"), None, "deleted in flight");
        assert_eq!(get("c").as_deref(), Some(r#"{"v":1}"#), "untouched: the committed one");
        assert_eq!(get("d").as_deref(), Some(r#"{"v":2}"#), "new in flight");
        assert_eq!(overlay.get("orders", "a").expect("read"), None, "another collection");
    }
}
