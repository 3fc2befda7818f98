//! Blue/green rebuilds: the candidate lane runs at low CPU priority beside
//! the serving one, reports its progress, and is promoted to serving in one
//! pointer swap once its runner reports it has caught up.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::changes::replace_previous;
use super::lane::Lane;
use super::Deployments;
use crate::registry::{Entry, RunState};
use crate::runtime::Module;
use crate::status::{Rebuild, State};

impl Deployments {
    /// Starts a rebuild lane's runner, and the task that promotes it once it has caught up.
    pub(super) fn start_candidate(
        self: &Arc<Self>,
        name: &str,
        lane: &Arc<Lane>,
        module: Module,
        settings: &Entry,
    ) -> anyhow::Result<()> {
        lane.background.store(true, Ordering::Relaxed);
        self.start_lane(name, lane, module, settings)?;
        if !lane.runs_here() {
            // Another host runs it (and promotes it); this host's keeper
            // starts it here, and its watcher, should it take it over.
            return Ok(());
        }
        let this = self.clone();
        let (name, lane) = (name.to_owned(), lane.clone());
        tokio::spawn(async move {
            let mut status = lane.subscribe();
            // A rebuild held up by an outage (`retrying`) goes on waiting.
            let settled = status.wait_for(|s| s.state == State::Running || s.state.is_ended()).await.map(|s| s.state);
            if let Ok(State::Running) = settled {
                if let Err(e) = this.promote(&name, &lane).await {
                    tracing::error!(projection = %name, error = %format!("{e:#}"), "cannot switch to the rebuilt read model");
                }
            }
        });
        Ok(())
    }

    /// Makes the caught-up candidate `lane` the serving one; the replaced
    /// lane stops and is kept for rollback.
    async fn promote(&self, name: &str, lane: &Arc<Lane>) -> anyhow::Result<()> {
        let _change = self.change_lock().await?;
        let Some(deployment) = self.get(name) else { return Ok(()) };
        if !deployment.candidate().is_some_and(|c| Arc::ptr_eq(&c, lane)) {
            return Ok(());
        }
        let promoted = self.registry.change(name, |e| {
            let candidate = e.candidate.take()?;
            let replaced = std::mem::replace(&mut e.serving, candidate);
            Some(replace_previous(e, Some(replaced)))
        })?;
        let Some(Some(dropped)) = promoted else { return Ok(()) };
        let old = {
            let mut lanes = deployment.lanes.write();
            let old = std::mem::replace(&mut lanes.serving, lane.clone());
            lanes.candidate = None;
            old
        };
        tracing::info!(projection = %name, version = %lane.status().version, "queries switched to the rebuilt read model");
        old.stop().await;
        self.remove_dropped(name, dropped);
        // From here on it serves: follow live events at normal priority
        // (unless it faulted in the meantime; then it waits for a retry).
        lane.hand_over().await;
        lane.background.store(false, Ordering::Relaxed);
        if let Some(entry) = self.registry.get(name).filter(|e| e.serving.state == RunState::Running) {
            let module = self.stored_module(&entry.serving.module).await?;
            self.start_lane(name, lane, module, &entry)?;
        }
        Ok(())
    }

    /// Where a rebuild stands: events behind, total, rate since its runner started, ETA.
    pub(super) fn rebuild_status(&self, lane: &Lane) -> Rebuild {
        let status = lane.status();
        let total = self.head.lag(None).events;
        let behind = self.head.lag(status.checkpoint).events;
        let (since, events_then) = *lane.started.lock();
        let elapsed = since.elapsed().as_secs_f64();
        let rate =
            if elapsed > 0.0 { status.events_processed.saturating_sub(events_then) as f64 / elapsed } else { 0.0 };
        Rebuild {
            version: status.version,
            state: status.state,
            checkpoint: status.checkpoint,
            position: total.saturating_sub(behind),
            total,
            rate,
            eta_seconds: (rate > 0.0).then(|| behind as f64 / rate),
            fault: status.fault,
            problem: status.problem,
        }
    }
}
