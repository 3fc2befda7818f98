//! With several hosts over one PostgreSQL: the loop that keeps this host's
//! part of the work (ADR 0012).
//!
//! Every third of a lease it heartbeats; renews the leases of the lanes it
//! runs (publishing their state to the others) and lets go of those whose
//! runner has ended; reads the registry again and brings the local lanes in
//! line with what other hosts changed (a deploy, a swap, a stop, a
//! promotion, a delete); takes lanes nobody runs, up to its fair share
//! (`ceil(running lanes / live hosts)`), and hands back those beyond it so
//! the others can take them; and mirrors, for the lanes it does not run,
//! what their owners publish (checkpoint, state, host) into their status.
//! A notification on `projector_registry` starts a round at once; one on
//! `projector_checkpoint` moves a mirrored lane's checkpoint at once, so
//! `at_least=` waits end promptly on every host.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;

use super::lane::Lane;
use super::{Deployment, Deployments};
use crate::cluster::{Cluster, Shared};
use crate::registry::{LaneRecord, RunState};
use crate::status::State;

impl Deployments {
    /// Starts the keeper (and its listener) when this host shares PostgreSQL with others.
    pub(crate) fn spawn_keeper(self: &Arc<Self>) {
        let Some(cluster) = self.storage.cluster().cloned() else { return };
        let wake = Arc::new(Notify::new());
        tokio::spawn(listen(Arc::downgrade(self), cluster.clone(), wake.clone()));
        let every = cluster.lease / 3;
        // Heartbeat and renewals on a task of their own, which waits on
        // nothing but the database: a slow round of the keeper (a compile, a
        // batch in flight) never lets this host's leases run out.
        let this = Arc::downgrade(self);
        let renewing = cluster.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(deployments) = this.upgrade() else { return };
                if deployments.stopping.load(Ordering::Relaxed) {
                    return;
                }
                let renewed = async {
                    renewing.heartbeat().await?;
                    deployments.renew_or_let_go(&renewing).await
                };
                if let Err(e) = renewed.await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot renew this host's leases; retrying");
                }
            }
        });
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = wake.notified() => {}
                }
                let Some(deployments) = this.upgrade() else { return };
                if deployments.stopping.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(e) = deployments.keep(&cluster).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot reach the shared database; retrying");
                }
            }
        });
    }

    /// One round of the keeper.
    async fn keep(self: &Arc<Self>, cluster: &Cluster) -> anyhow::Result<()> {
        let changed = self.registry.refresh()?;
        self.pending.lock().extend(changed);
        self.reconcile_pending().await;
        let rows = cluster.readmodels().await?;
        self.balance(cluster, &rows).await?;
        self.mirror(cluster, &rows);
        Ok(())
    }

    /// Applies the registry changes not applied here yet; one that fails is
    /// tried again next round (the others go on).
    pub(super) async fn reconcile_pending(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.pending.lock()).into_iter().collect();
        if names.is_empty() {
            return;
        }
        let _change = self.changes.lock().await;
        for name in names {
            if let Err(e) = self.reconcile(&name).await {
                tracing::warn!(projection = %name, error = %format!("{e:#}"), "cannot apply a change made on another host; trying again");
                self.pending.lock().insert(name);
            }
        }
    }

    /// Every lane of every local deployment, with its record in the registry.
    fn lanes_with_records(&self) -> Vec<(String, Arc<Lane>, LaneRecord, bool)> {
        let deployed: Vec<Arc<Deployment>> = self.deployed.read().values().cloned().collect();
        let mut lanes = Vec::new();
        for deployment in deployed {
            let Some(entry) = self.registry.get(&deployment.name) else { continue };
            let (serving, candidate) = deployment.both();
            if serving.readmodel == entry.serving.readmodel {
                lanes.push((deployment.name.clone(), serving, entry.serving.clone(), false));
            }
            if let (Some(lane), Some(record)) = (candidate, entry.candidate.as_ref()) {
                if lane.readmodel == record.readmodel {
                    lanes.push((deployment.name.clone(), lane, record.clone(), true));
                }
            }
        }
        lanes
    }

    /// Renews the leases of lanes running here; lets go of lanes whose runner ended.
    async fn renew_or_let_go(&self, cluster: &Cluster) -> anyhow::Result<()> {
        for (_, lane, _, _) in self.lanes_with_records() {
            let Some(epoch) = *lane.lease.lock() else { continue };
            let Some(id) = lane.db.readmodel_id() else { continue };
            if lane.claimed() {
                continue;
            }
            let status = lane.status();
            if lane.runs_here() {
                let kept = cluster.renew(id, epoch, status.state.as_str(), status.problem.as_deref()).await?;
                if !kept {
                    tracing::warn!(readmodel = %lane.readmodel, epoch, "lease taken over by another host; stepping down");
                    // No commit of it lands from now on; its runner ends after the batch in flight.
                    self.forget_lease(&lane);
                    tokio::spawn(async move { lane.hand_over().await });
                }
            } else {
                cluster.release(id, epoch).await?;
                self.forget_lease(&lane);
            }
        }
        Ok(())
    }

    pub(super) fn forget_lease(&self, lane: &Lane) {
        *lane.lease.lock() = None;
        lane.db.set_fence(None);
        lane.status.send_modify(|s| s.host = None);
    }

    /// Takes lanes nobody runs, up to this host's fair share; hands back lanes beyond it.
    async fn balance(self: &Arc<Self>, cluster: &Cluster, rows: &HashMap<i64, Shared>) -> anyhow::Result<()> {
        let live = cluster.live_hosts().await?;
        let wanted: Vec<_> = self
            .lanes_with_records()
            .into_iter()
            .filter(|(_, _, record, _)| record.state == RunState::Running)
            .collect();
        let share = wanted.len().div_ceil(live);
        let mut mine = wanted.iter().filter(|(_, lane, _, _)| lane.lease.lock().is_some()).count();
        for (name, lane, _, _) in &wanted {
            if mine <= share {
                break;
            }
            // The hand-over holds the lane's start flag: a deploy or a start
            // bringing its runner up now is let finish (a later round hands
            // the lane over if still beyond share), and none begins meanwhile.
            let Some(_claim) = lane.claim() else { continue };
            if self.hand_back(cluster, name, lane).await? {
                mine -= 1;
            }
        }
        for (name, lane, _, candidate) in &wanted {
            if mine >= share {
                break;
            }
            if lane.lease.lock().is_some() || lane.runs_here() {
                continue;
            }
            let taken = lane.db.readmodel_id().and_then(|id| rows.get(&id)).and_then(|row| row.owner.as_ref());
            if taken.is_some_and(|owner| owner.valid && owner.host != cluster.host_id) {
                continue;
            }
            let Some(entry) = self.registry.get(name) else { continue };
            let module = match self.stored_module(&lane_module(&entry, *candidate)).await {
                Ok(module) => module,
                Err(e) => {
                    tracing::warn!(projection = %name, error = %format!("{e:#}"), "cannot load the module of a lane to take");
                    continue;
                }
            };
            if *candidate {
                self.start_candidate(name, lane, module, &entry)?;
            } else {
                // A promoted rebuild taken over here serves: normal priority.
                lane.background.store(false, Ordering::Relaxed);
                self.start_lane(name, lane, module, &entry)?;
            }
            if lane.lease.lock().is_some() {
                tracing::info!(projection = %name, readmodel = %lane.readmodel, "took over a lane");
                mine += 1;
            }
        }
        Ok(())
    }

    /// Ends this host's runner of `lane` and gives up its lease; `false` when it held none.
    async fn hand_back(&self, cluster: &Cluster, name: &str, lane: &Lane) -> anyhow::Result<bool> {
        let (Some(epoch), Some(id)) = (*lane.lease.lock(), lane.db.readmodel_id()) else { return Ok(false) };
        tracing::info!(projection = %name, readmodel = %lane.readmodel, "handing a lane over to a less busy host");
        lane.hand_over().await;
        cluster.release(id, epoch).await?;
        self.forget_lease(lane);
        lane.status.send_modify(|s| s.state = State::CatchingUp);
        Ok(true)
    }

    /// Shows, for each lane this host does not run, what its owner published.
    fn mirror(&self, cluster: &Cluster, rows: &HashMap<i64, Shared>) {
        for (_, lane, record, _) in self.lanes_with_records() {
            // A lane whose lease this host holds is its own to show, even
            // while its runner is still starting (`rows` may predate the lease).
            if lane.runs_here() || lane.lease.lock().is_some() {
                continue;
            }
            let Some(row) = lane.db.readmodel_id().and_then(|id| rows.get(&id)) else { continue };
            let owner = row.owner.as_ref().filter(|o| o.valid && o.host != cluster.host_id).map(|o| o.host.clone());
            let state = match (record.state, row.state.as_deref(), &owner) {
                (RunState::Stopped, _, _) => State::Stopped,
                (RunState::Faulted, _, _) => State::Faulted,
                (RunState::Running, Some(state), Some(_)) => {
                    State::ALL.into_iter().find(|s| s.as_str() == state).unwrap_or(State::CatchingUp)
                }
                (RunState::Running, _, _) => State::CatchingUp,
            };
            lane.status.send_if_modified(|s| {
                let before = s.clone();
                s.checkpoint = row.position.max(s.checkpoint);
                s.events_processed = row.events.max(s.events_processed);
                s.host = owner.clone();
                s.state = state;
                s.problem = if owner.is_some() { row.problem.clone() } else { None };
                s.fault = record.fault.clone();
                s.version = record.version.clone();
                *s != before
            });
        }
    }

    /// Moves a mirrored lane's checkpoint forward on its owner's notification.
    fn checkpoint_moved(&self, id: i64, position: u64) {
        for (_, lane, _, _) in self.lanes_with_records() {
            if lane.db.readmodel_id() == Some(id) && !lane.runs_here() {
                lane.status.send_if_modified(|s| {
                    let moved = s.checkpoint.is_none_or(|c| c < position);
                    if moved {
                        s.checkpoint = Some(position);
                    }
                    moved
                });
            }
        }
    }
}

/// The module of the serving lane or of the candidate.
fn lane_module(entry: &crate::registry::Entry, candidate: bool) -> String {
    match (&entry.candidate, candidate) {
        (Some(record), true) => record.module.clone(),
        _ => entry.serving.module.clone(),
    }
}

/// Listens for the other hosts' notifications on a connection of its own,
/// reconnecting after a pause when it breaks.
async fn listen(deployments: std::sync::Weak<Deployments>, cluster: Cluster, wake: Arc<Notify>) {
    loop {
        if let Err(e) = listen_once(&deployments, &cluster, &wake).await {
            tracing::debug!(error = %format!("{e:#}"), "notification listener ended; reconnecting");
        }
        if deployments.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(cluster.lease / 3).await;
    }
}

async fn listen_once(
    deployments: &std::sync::Weak<Deployments>,
    cluster: &Cluster,
    wake: &Notify,
) -> anyhow::Result<()> {
    let (client, mut connection) = cluster.pg.dedicated().await?;
    let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if sender.send((n.channel().to_owned(), n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client.batch_execute("LISTEN projector_registry; LISTEN projector_checkpoint").await?;
    // Whatever changed while no one listened.
    wake.notify_one();
    while let Some((channel, payload)) = messages.recv().await {
        let Some(deployments) = deployments.upgrade() else { break };
        if channel == "projector_registry" {
            wake.notify_one();
        } else if let Some((id, position)) = payload.split_once(':') {
            if let (Ok(id), Ok(position)) = (id.parse(), position.parse()) {
                deployments.checkpoint_moved(id, position);
            }
        }
    }
    driver.abort();
    Ok(())
}
