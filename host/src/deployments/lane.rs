//! A lane: one read model and the runner that feeds it.
//!
//! A deployment has a serving lane and, during a blue/green rebuild, a
//! candidate lane. The lane holds its runner's handle and the watch on which
//! the runner publishes progress; it decides nothing about the deployment
//! (that is `changes.rs`' and `rebuild.rs`' job) and writes no registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::Storage;
use crate::readmodel::ReadModelDb;
use crate::registry::{LaneRecord, RunState};
use crate::runner::{Control, RunnerHandle};
use crate::runtime::Limits;
use crate::settings::{OnError, ProjectionLimits};
use crate::status::{LaneStatus, State};

/// A read model and the runner that feeds it.
pub struct Lane {
    /// Its name in the registry (file name without `.sqlite`).
    pub readmodel: String,
    /// The read model.
    pub db: Arc<ReadModelDb>,
    pub(super) status: watch::Sender<LaneStatus>,
    pub(super) runner: Mutex<Option<RunnerHandle>>,
    /// When its runner started, and how many events it had applied then.
    pub(super) started: Mutex<(Instant, u64)>,
    /// Set while it is a rebuild beside a serving lane: its runner runs at low CPU priority.
    pub(super) background: AtomicBool,
    /// Set while a runner is being started or handed over to another host,
    /// so that two starts, or a start and a hand-over, never race.
    claimed: AtomicBool,
    /// With several hosts: the epoch of this host's lease on it, while this host holds one.
    pub(super) lease: Mutex<Option<i64>>,
    /// What its runner on this host runs: the module (hash), policy and limits.
    pub(super) running: Mutex<Option<(String, OnError, ProjectionLimits)>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("readmodel", &self.readmodel).field("status", &*self.status.borrow()).finish()
    }
}

impl Lane {
    /// Opens the read model of `record`; its runner is not started. The
    /// module's declared indexes are created by the runner once it has
    /// caught up (an index persists in the file, so a read model that has
    /// caught up before has them already).
    pub(super) fn open(storage: &Storage, name: &str, record: &LaneRecord) -> anyhow::Result<Arc<Lane>> {
        let db = Arc::new(storage.open(name, &record.readmodel)?);
        let checkpoint = db.checkpoint()?;
        let state = match record.state {
            RunState::Running => State::CatchingUp,
            RunState::Stopped => State::Stopped,
            RunState::Faulted => State::Faulted,
        };
        let (status, _) = watch::channel(LaneStatus {
            version: record.version.clone(),
            state,
            checkpoint: checkpoint.map(|c| c.position),
            events_processed: checkpoint.map_or(0, |c| c.events),
            dead_letters: db.dead_letter_count()?,
            fault: record.fault.clone(),
            problem: None,
            host: None,
        });
        Ok(Arc::new(Lane {
            readmodel: record.readmodel.clone(),
            db,
            status,
            runner: Mutex::new(None),
            started: Mutex::new((Instant::now(), 0)),
            background: AtomicBool::new(false),
            claimed: AtomicBool::new(false),
            lease: Mutex::new(None),
            running: Mutex::new(None),
        }))
    }

    /// Its current status.
    pub fn status(&self) -> LaneStatus {
        self.status.borrow().clone()
    }

    /// A receiver of its status changes.
    pub fn subscribe(&self) -> watch::Receiver<LaneStatus> {
        self.status.subscribe()
    }

    /// Stops its runner after the batch in flight (a no-op when none runs).
    pub(super) async fn stop(&self) {
        self.end_runner(|reply| Control::Stop { reply }).await;
    }

    /// Stops its runner after the batch in flight, leaving the state as it is
    /// for the runner that takes over.
    pub(super) async fn hand_over(&self) {
        self.end_runner(|reply| Control::Handover { reply }).await;
    }

    /// The runner stays in its slot until it has ended (its batch in flight
    /// committed or refused): a start meanwhile finds it running and does
    /// nothing, so two runners never write one read model at once (a lane
    /// stepping down here and taken back at once, say).
    async fn end_runner(&self, message: impl FnOnce(oneshot::Sender<()>) -> Control) {
        let Some(control) = self.runner.lock().as_ref().map(|h| h.control.clone()) else { return };
        let (reply, stopped) = oneshot::channel();
        if control.send(message(reply)).await.is_ok() {
            let _ = stopped.await;
        }
        // Only the runner asked to end leaves the slot: once it has finished, a start may
        // have put a new runner there already (the lane taken back at once), which stays.
        let handle = {
            let mut slot = self.runner.lock();
            if slot.as_ref().is_some_and(|h| h.control.same_channel(&control)) {
                slot.take()
            } else {
                None
            }
        };
        if let Some(handle) = handle {
            let _ = handle.task.await;
        }
    }

    /// Stops its runner at once (host shutdown); the last batch may or may not commit.
    pub(super) fn abort(&self) {
        if let Some(handle) = self.runner.lock().take() {
            handle.task.abort();
        }
        self.status.send_modify(|s| {
            if s.state != State::Faulted {
                s.state = State::Stopped;
            }
        });
    }

    /// Claims the lane for starting its runner or handing it over, until
    /// the claim is dropped; `None` while another start or hand-over holds it.
    pub(super) fn claim(&self) -> Option<Claim<'_>> {
        self.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok()?;
        Some(Claim(&self.claimed))
    }

    /// Whether a start or a hand-over holds the lane now.
    pub(super) fn claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Whether its runner is running on this host now.
    pub(super) fn runs_here(&self) -> bool {
        self.runner.lock().as_ref().is_some_and(|h| !h.task.is_finished())
    }

    /// Where to send control messages, while its runner runs.
    pub(super) fn control(&self) -> Option<mpsc::Sender<Control>> {
        self.runner.lock().as_ref().filter(|h| !h.task.is_finished()).map(|h| h.control.clone())
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(handle) = self.runner.get_mut().take() {
            handle.task.abort();
        }
    }
}

/// The runtime's `defaults` with a projection's own limits applied.
pub(super) fn sandbox_limits(limits: ProjectionLimits, defaults: Limits) -> Limits {
    Limits {
        memory_bytes: limits.memory_mb.map_or(defaults.memory_bytes, |mb| (mb as usize) << 20),
        batch_deadline: limits.batch_timeout_ms.map_or(defaults.batch_deadline, std::time::Duration::from_millis),
        ..defaults
    }
}

/// A lane claimed by [`Lane::claim`]; dropping it lets the lane go.
pub(super) struct Claim<'a>(&'a AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projections_own_limits_replace_only_the_defaults_it_sets() {
        let defaults = Limits::default();
        assert_eq!(sandbox_limits(ProjectionLimits::default(), defaults), defaults);
        let own = sandbox_limits(ProjectionLimits { memory_mb: Some(8), batch_timeout_ms: None }, defaults);
        assert_eq!(own.memory_bytes, 8 << 20);
        assert_eq!(own.batch_deadline, defaults.batch_deadline);
        let own = sandbox_limits(ProjectionLimits { memory_mb: None, batch_timeout_ms: Some(250) }, defaults);
        assert_eq!(
            (own.memory_bytes, own.batch_deadline),
            (defaults.memory_bytes, std::time::Duration::from_millis(250))
        );
    }
}
