//! With several hosts: bringing this host's lanes in line with a registry
//! entry another host changed.
//!
//! The host that answers a change records it and moves the lanes it runs
//! itself (`changes.rs`); every other host learns of it by reading the
//! registry again (`keeper.rs`) and calls [`Deployments::reconcile`]:
//! lanes whose read model changed (a reset, a promotion, a rollback past a
//! rebuild) are reopened, a runner whose lane should no longer run stops, and
//! a runner whose module or settings changed takes the new code between two
//! batches (a `continue` swap applied by the host that runs the lane).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::changes::install;
use super::lane::{sandbox_limits, Lane};
use super::{Deployment, Deployments};
use crate::registry::{LaneRecord, RunState};

impl Deployments {
    /// Applies `name`'s registry entry, as it is now, to the local lanes.
    pub(super) async fn reconcile(&self, name: &str) -> anyhow::Result<()> {
        let entry = self.registry.get(name);
        let local = self.get(name);
        let Some(entry) = entry else {
            let removed = self.deployed.write().remove(name);
            if let Some(deployment) = removed {
                let (serving, candidate) = deployment.both();
                self.retire(&serving).await;
                if let Some(candidate) = candidate {
                    self.retire(&candidate).await;
                }
                tracing::info!(projection = name, "deleted on another host");
            }
            return Ok(());
        };
        let Some(deployment) = local else {
            let deployment = Deployment::new(name, Lane::open(&self.storage, name, &entry.serving)?);
            if let Some(record) = &entry.candidate {
                deployment.lanes.write().candidate = Some(Lane::open(&self.storage, name, record)?);
            }
            self.deployed.write().insert(name.to_owned(), deployment);
            tracing::info!(projection = name, "deployed on another host");
            return Ok(());
        };
        // Read models replaced elsewhere (a reset, a promotion, a rollback):
        // keep the lanes whose read model stays, open the new ones, retire the rest.
        let (old_serving, old_candidate) = deployment.both();
        let mut old: Vec<Arc<Lane>> = [Some(old_serving.clone()), old_candidate].into_iter().flatten().collect();
        // A read model of the same name may be a new one (the projection
        // deleted and deployed again meanwhile): same name and same row.
        let rows = self.storage.readmodel_ids(name).await?;
        let same = |lane: &Lane, readmodel: &str| {
            lane.readmodel == readmodel
                && rows.as_ref().is_none_or(|ids| ids.get(readmodel) == lane.db.readmodel_id().as_ref())
        };
        let mut take_or_open = |record: &LaneRecord| match old.iter().position(|l| same(l, &record.readmodel)) {
            Some(i) => Ok(old.swap_remove(i)),
            None => Lane::open(&self.storage, name, record),
        };
        let serving = take_or_open(&entry.serving)?;
        let candidate = entry.candidate.as_ref().map(&mut take_or_open).transpose()?;
        let promoted = !Arc::ptr_eq(&serving, &old_serving) && serving.background.load(Ordering::Relaxed);
        {
            let mut lanes = deployment.lanes.write();
            lanes.serving = serving.clone();
            lanes.candidate = candidate;
        }
        for lane in old {
            self.retire(&lane).await;
        }
        if promoted && serving.runs_here() {
            // A rebuild this host ran now serves: on at normal priority.
            serving.hand_over().await;
            serving.background.store(false, Ordering::Relaxed);
            if entry.serving.state == RunState::Running {
                let module = self.stored_module(&entry.serving.module).await?;
                self.start_lane(name, &serving, module, &entry)?;
            }
        }
        let (serving, candidate) = deployment.both();
        let pairs = [Some((serving, &entry.serving)), candidate.zip(entry.candidate.as_ref())];
        for (lane, record) in pairs.into_iter().flatten() {
            if !lane.runs_here() {
                continue;
            }
            if record.state != RunState::Running {
                self.retire(&lane).await;
                continue;
            }
            let settings = (record.module.clone(), entry.on_error, entry.limits);
            if lane.running.lock().as_ref() == Some(&settings) {
                continue;
            }
            let module = self.stored_module(&record.module).await?;
            let sandbox = sandbox_limits(entry.limits, self.runtime.limits());
            let instance = self
                .runtime
                .instantiate_with(&module, sandbox)
                .map_err(|f| anyhow::anyhow!("cannot start the module: {f}"))?;
            if install(&lane, &module, instance, entry.on_error, sandbox).await {
                *lane.running.lock() = Some(settings);
                self.publish_module(&lane, &record.module);
                tracing::info!(projection = name, version = %record.version, "new code from another host swapped in");
            }
        }
        Ok(())
    }

    /// Stops `lane`'s runner here and gives up this host's lease on it.
    pub(super) async fn retire(&self, lane: &Lane) {
        lane.stop().await;
        let (Some(cluster), Some(epoch), Some(id)) =
            (self.storage.cluster(), *lane.lease.lock(), lane.db.readmodel_id())
        else {
            return;
        };
        if let Err(e) = cluster.release(id, epoch).await {
            tracing::warn!(readmodel = %lane.readmodel, error = %format!("{e:#}"), "cannot release a lease; it runs out by itself");
        }
        self.forget_lease(lane);
    }
}
