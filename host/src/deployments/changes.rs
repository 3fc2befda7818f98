//! The changes the API asks for: deploy (new, `continue` swap, rebuild),
//! rollback, stop, start, retry, reset and delete.
//!
//! Each takes the change lock, records what it changes in the registry, in
//! place, and then moves the lanes; it answers with the status once both are
//! done. A runner may fault at any moment meanwhile: its fault is recorded in
//! place too, and each change below says what happens to it.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::lane::{sandbox_limits, Lane};
use super::{ChangeError, Deployed, Deployment, Deployments};
use crate::registry::{Entry, LaneRecord, RunState};
use crate::runner::Control;
use crate::runtime::{DeployError, Instance, Limits, Module};
use crate::settings::{DeployOptions, Mode, OnError, ProjectionLimits};
use crate::status::Status;

impl Deployments {
    /// Deploys `bytes` as `name`: a new projection, a `continue` swap or a
    /// blue/green rebuild. The module is validated first; a refused module
    /// changes nothing.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<(Deployed, Status), ChangeError> {
        let bytes = Arc::new(bytes);
        let module = self.compile(bytes.clone()).await?;
        // The deployment name (the URL's) rules; the module's own is a hint.
        let described = &module.description().name;
        if described != name {
            tracing::warn!(
                projection = name,
                module_name = %described,
                "the module describes itself as '{described}' but is deployed as '{name}'; it is served as '{name}'"
            );
        }
        let _change = self.change_lock().await?;
        let current = self.registry.get(name);
        let limits = options.limits.or_else(|| current.as_ref().map(|e| e.limits)).unwrap_or_default();
        if let Err(fault) = self.runtime.instantiate_with(&module, sandbox_limits(limits, self.runtime.limits())) {
            return Err(DeployError::Invalid(format!("the module cannot start under its limits: {fault}")).into());
        }
        let sha = self.registry.store_module(&bytes)?;
        let record = LaneRecord {
            module: sha.clone(),
            version: module.description().version.clone(),
            readmodel: String::new(),
            state: RunState::Running,
            fault: None,
        };
        let Some(current) = current else {
            let deployment = self.create(name, module, record, options)?;
            return Ok((Deployed::Created, self.status(&deployment)));
        };
        let deployment = self.get(name).ok_or_else(|| ChangeError::Unknown(name.to_owned()))?;
        if let Some(candidate) = &current.candidate {
            return Err(ChangeError::Conflict(format!(
                "a rebuild of '{name}' to version {} is in progress; wait for it to switch or roll it back first",
                candidate.version
            )));
        }
        let on_error = options.on_error.unwrap_or(current.on_error);
        let limits = options.limits.unwrap_or(current.limits);
        let settings_changed = on_error != current.on_error || limits != current.limits;
        let deployed = match options.mode.unwrap_or(Mode::Continue) {
            Mode::Continue if sha == current.serving.module && !settings_changed => Deployed::Unchanged,
            Mode::Continue => {
                self.swap_in_place(name, &deployment, module, record, (on_error, limits)).await?;
                Deployed::Swapped
            }
            Mode::Rebuild => {
                let mut numbered = current.clone();
                let record = LaneRecord { readmodel: numbered.new_readmodel(&sha), ..record };
                let lane = Lane::open(&self.storage, name, &record)?;
                let (entry, dropped) = self.change(name, |e| {
                    e.on_error = on_error;
                    e.limits = limits;
                    e.next_readmodel = numbered.next_readmodel;
                    e.candidate = Some(record);
                    let dropped = replace_previous(e, None);
                    (e.clone(), dropped)
                })?;
                self.remove_dropped(name, dropped);
                deployment.lanes.write().candidate = Some(lane.clone());
                self.start_candidate(name, &lane, module, &entry)?;
                tracing::info!(projection = name, "blue/green rebuild started");
                Deployed::Rebuilding
            }
        };
        Ok((deployed, self.status(&deployment)))
    }

    /// A new projection reading `$all` from the start.
    fn create(
        &self,
        name: &str,
        module: Module,
        mut record: LaneRecord,
        options: DeployOptions,
    ) -> Result<Arc<Deployment>, ChangeError> {
        let mut entry = Entry {
            on_error: options.on_error.unwrap_or_default(),
            limits: options.limits.unwrap_or_default(),
            serving: LaneRecord { readmodel: String::new(), ..record.clone() },
            candidate: None,
            previous: None,
            next_readmodel: 0,
        };
        record.readmodel = entry.new_readmodel(&record.module);
        entry.serving = record;
        let lane = Lane::open(&self.storage, name, &entry.serving)?;
        self.registry.insert(name, entry.clone())?;
        let deployment = Deployment::new(name, lane);
        self.deployed.write().insert(name.to_owned(), deployment.clone());
        self.start_lane(name, &deployment.serving(), module, &entry)?;
        tracing::info!(projection = name, version = %entry.serving.version, "projection deployed");
        Ok(deployment)
    }

    /// Runs `module` (recorded as `record`) on the serving read model from
    /// its checkpoint; the batch in flight finishes under the old code, and
    /// the replaced version becomes the one `rollback` returns to, under
    /// `settings` (the policy and limits). A fault of the old code,
    /// recorded while the swap was on its way, is superseded by the new code,
    /// which starts from the checkpoint before the faulting event.
    async fn swap_in_place(
        &self,
        name: &str,
        deployment: &Deployment,
        module: Module,
        record: LaneRecord,
        settings: (OnError, ProjectionLimits),
    ) -> Result<(), ChangeError> {
        let lane = deployment.serving();
        for (collection, field) in &module.description().indexes {
            lane.db.create_index(collection, field)?;
        }
        // Everything that can fail about the new code fails before it is recorded.
        let (on_error, limits) = settings;
        let sandbox = sandbox_limits(limits, self.runtime.limits());
        let instance = self
            .runtime
            .instantiate_with(&module, sandbox)
            .map_err(|f| anyhow::anyhow!("cannot start the module: {f}"))?;
        let (entry, dropped) = self.change(name, |e| {
            e.on_error = on_error;
            e.limits = limits;
            let replaced = e.serving.clone();
            e.serving.module = record.module.clone();
            e.serving.version = record.version.clone();
            clear_fault(&mut e.serving);
            let dropped = replace_previous(e, Some(replaced));
            (e.clone(), dropped)
        })?;
        self.remove_dropped(name, dropped);
        if entry.serving.state != RunState::Running {
            lane.status.send_modify(|s| s.version = record.version.clone());
        } else if install(&lane, &module, instance, on_error, sandbox).await {
            *lane.running.lock() = Some((record.module.clone(), on_error, limits));
            self.publish_module(&lane, &record.module);
        } else {
            // The runner ended before it took the new code (it faulted on
            // the old code, or none ran): the new code starts afresh.
            lane.stop().await;
            let entry = self.change(name, |e| {
                clear_fault(&mut e.serving);
                e.clone()
            })?;
            self.start_lane(name, &lane, module, &entry)?;
        }
        if entry.serving.state == RunState::Running {
            self.wait_applied(&lane, &record.module).await?;
        }
        tracing::info!(projection = name, version = %record.version, "new code swapped in at the checkpoint");
        Ok(())
    }

    /// Returns to the previous version. Cancels a rebuild in progress; after a
    /// `continue` swap, runs the previous code from the checkpoint; after a
    /// rebuild, serves the previous read model again (it catches up from
    /// where it stopped). Rolling back twice returns to the newer version.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        let _change = self.change_lock().await?;
        let (deployment, current) = self.entry(name)?;
        if current.candidate.is_some() {
            let lane = deployment.lanes.write().candidate.take();
            if let Some(lane) = lane {
                lane.stop().await;
            }
            if let Some(cancelled) = self.change(name, |e| e.candidate.take())? {
                self.storage.remove(name, &cancelled.readmodel);
            }
            tracing::info!(projection = name, "rebuild cancelled");
            return Ok(self.status(&deployment));
        }
        let Some(previous) = current.previous.clone() else {
            return Err(ChangeError::Conflict(format!("'{name}' has no previous version to roll back to")));
        };
        let module = self.stored_module(&previous.module).await?;
        if previous.readmodel == current.serving.readmodel {
            self.swap_in_place(name, &deployment, module, previous, (current.on_error, current.limits)).await?;
        } else {
            let lane =
                Lane::open(&self.storage, name, &LaneRecord { state: RunState::Stopped, fault: None, ..previous })?;
            let entry = self.change(name, |e| {
                let running = e.serving.state != RunState::Stopped;
                if let Some(mut restored) = e.previous.take() {
                    restored.state = if running { RunState::Running } else { RunState::Stopped };
                    restored.fault = None;
                    let mut replaced = std::mem::replace(&mut e.serving, restored);
                    replaced.state = RunState::Stopped;
                    e.previous = Some(replaced);
                }
                e.clone()
            })?;
            if entry.serving.state == RunState::Running {
                self.start_lane(name, &lane, module, &entry)?;
            }
            let old = std::mem::replace(&mut deployment.lanes.write().serving, lane);
            old.stop().await;
        }
        tracing::info!(projection = name, "rolled back");
        Ok(self.status(&deployment))
    }

    /// Stops following events (queries keep being answered from the read
    /// model). A lane that faults in its last batch stays faulted.
    pub async fn stop(&self, name: &str) -> Result<Status, ChangeError> {
        let _change = self.change_lock().await?;
        let (deployment, _) = self.entry(name)?;
        self.change(name, |e| {
            for lane in [Some(&mut e.serving), e.candidate.as_mut()].into_iter().flatten() {
                if lane.state == RunState::Running {
                    lane.state = RunState::Stopped;
                }
            }
        })?;
        let (serving, candidate) = deployment.both();
        serving.stop().await;
        if let Some(candidate) = candidate {
            candidate.stop().await;
        }
        Ok(self.status(&deployment))
    }

    /// Starts a stopped projection again from its checkpoint.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        self.resume(name, RunState::Stopped).await
    }

    /// Starts a faulted projection again from its checkpoint, with a fresh
    /// instance: for faults that may not repeat (a timeout under load, a fixed dependency).
    pub async fn retry(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        self.resume(name, RunState::Faulted).await
    }

    async fn resume(self: &Arc<Self>, name: &str, from: RunState) -> Result<Status, ChangeError> {
        let _change = self.change_lock().await?;
        let (deployment, current) = self.entry(name)?;
        let states = [Some(current.serving.state), current.candidate.as_ref().map(|c| c.state)];
        if !states.contains(&Some(from)) {
            if from == RunState::Stopped && current.serving.state == RunState::Running {
                return Ok(self.status(&deployment));
            }
            let (state, hint) = match from {
                RunState::Faulted => ("faulted", ""),
                _ => (
                    "stopped",
                    if current.serving.state == RunState::Faulted { "; it is faulted: use retry" } else { "" },
                ),
            };
            return Err(ChangeError::Conflict(format!("'{name}' is not {state}{hint}")));
        }
        let (entry, serving, candidate) = self.change(name, |e| {
            let serving = e.serving.state == from;
            if serving {
                run_again(&mut e.serving);
            }
            let candidate = e.candidate.as_mut().filter(|c| c.state == from).map(run_again).is_some();
            (e.clone(), serving, candidate)
        })?;
        // A faulted runner may still be finishing (its fault is recorded
        // before it shows it): each lane's old runner is joined first.
        if serving {
            let module = self.stored_module(&entry.serving.module).await?;
            let lane = deployment.serving();
            lane.stop().await;
            self.start_lane(name, &lane, module, &entry)?;
        }
        if let (true, Some(record), Some(lane)) = (candidate, &entry.candidate, deployment.candidate()) {
            let module = self.stored_module(&record.module).await?;
            lane.stop().await;
            self.start_candidate(name, &lane, module, &entry)?;
        }
        Ok(self.status(&deployment))
    }

    /// Rebuilds the read model from scratch under the same version: queries
    /// see the new, empty read model at once, filling as it catches up. A
    /// rebuild in progress is cancelled.
    pub async fn reset(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        let _change = self.change_lock().await?;
        let (deployment, current) = self.entry(name)?;
        let module = self.stored_module(&current.serving.module).await?;
        let mut numbered = current.clone();
        let record = LaneRecord {
            readmodel: numbered.new_readmodel(&current.serving.module),
            state: RunState::Running,
            fault: None,
            ..current.serving.clone()
        };
        let lane = Lane::open(&self.storage, name, &record)?;
        let (entry, old_readmodel, cancelled) = self.change(name, |e| {
            let old = std::mem::replace(&mut e.serving, record.clone());
            e.next_readmodel = numbered.next_readmodel;
            if let Some(previous) = e.previous.as_mut().filter(|p| p.readmodel == old.readmodel) {
                previous.readmodel = record.readmodel.clone();
            }
            let cancelled = e.candidate.take();
            (e.clone(), old.readmodel, cancelled)
        })?;
        self.start_lane(name, &lane, module, &entry)?;
        let (old, candidate) = {
            let mut lanes = deployment.lanes.write();
            (std::mem::replace(&mut lanes.serving, lane), lanes.candidate.take())
        };
        old.stop().await;
        self.storage.remove(name, &old_readmodel);
        if let Some(lane) = candidate {
            lane.stop().await;
        }
        if let Some(record) = cancelled {
            self.storage.remove(name, &record.readmodel);
        }
        tracing::info!(projection = name, "read model reset");
        Ok(self.status(&deployment))
    }

    /// Stops `name` and removes its read models, its registry entry, and
    /// its modules unless another projection uses them.
    pub async fn delete(&self, name: &str) -> Result<(), ChangeError> {
        let _change = self.change_lock().await?;
        let (deployment, _) = self.entry(name)?;
        self.registry.remove(name)?;
        self.deployed.write().remove(name);
        let (serving, candidate) = deployment.both();
        serving.stop().await;
        if let Some(candidate) = candidate {
            candidate.stop().await;
        }
        self.storage.remove_all(name);
        tracing::info!(projection = name, "projection deleted");
        Ok(())
    }

    /// Deletes the read model a change left without an entry pointing to it.
    pub(super) fn remove_dropped(&self, name: &str, dropped: Option<String>) {
        if let Some(readmodel) = dropped {
            self.storage.remove(name, &readmodel);
        }
    }
}

/// Hands `module` (already instantiated) to `lane`'s runner between two
/// batches; `false` when no runner is there to take it.
pub(super) async fn install(
    lane: &Lane,
    module: &Module,
    instance: Instance,
    on_error: OnError,
    limits: Limits,
) -> bool {
    let Some(control) = lane.control() else { return false };
    let (reply, installed) = oneshot::channel();
    let swap =
        Control::Swap { module: Box::new(module.clone()), instance: Box::new(instance), on_error, limits, reply };
    control.send(swap).await.is_ok() && installed.await.is_ok()
}

/// Marks a stopped or faulted lane to run again.
fn run_again(lane: &mut LaneRecord) {
    lane.state = RunState::Running;
    lane.fault = None;
}

/// Marks a faulted lane to run again (new code supersedes its fault); a
/// stopped lane stays stopped.
fn clear_fault(lane: &mut LaneRecord) {
    if lane.state == RunState::Faulted {
        lane.state = RunState::Running;
    }
    lane.fault = None;
}

/// Makes `previous` what `rollback` returns to; returns the read model of
/// the one it replaces when no lane uses it any more (to be deleted once the
/// registry no longer names it).
pub(super) fn replace_previous(entry: &mut Entry, previous: Option<LaneRecord>) -> Option<String> {
    let old = std::mem::replace(&mut entry.previous, previous)?;
    let live = old.readmodel == entry.serving.readmodel
        || entry.candidate.as_ref().is_some_and(|c| c.readmodel == old.readmodel)
        || entry.previous.as_ref().is_some_and(|p| p.readmodel == old.readmodel);
    (!live).then_some(old.readmodel)
}
