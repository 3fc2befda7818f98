//! One deployed projection as queries see it: a name and its lanes, behind
//! one `RwLock`ed pointer that a blue/green switch replaces in one step.
//!
//! Queries take the serving lane's read model from here and never wait on a
//! deployment change; waiting for a position (`at_least`) follows a switch
//! that happens meanwhile.

use std::sync::Arc;

use parking_lot::RwLock;

use super::lane::Lane;
use crate::readmodel::ReadModelDb;
use crate::status::{LaneStatus, State};

/// One deployed projection.
#[derive(Debug)]
pub struct Deployment {
    /// The deployment name.
    pub name: String,
    pub(super) lanes: RwLock<Lanes>,
}

#[derive(Debug)]
pub(super) struct Lanes {
    pub(super) serving: Arc<Lane>,
    pub(super) candidate: Option<Arc<Lane>>,
}

impl Deployment {
    pub(super) fn new(name: &str, serving: Arc<Lane>) -> Arc<Deployment> {
        Arc::new(Deployment { name: name.to_owned(), lanes: RwLock::new(Lanes { serving, candidate: None }) })
    }

    /// The lane answering queries now.
    pub fn serving(&self) -> Arc<Lane> {
        self.lanes.read().serving.clone()
    }

    /// The read model answering queries now.
    pub fn db(&self) -> Arc<ReadModelDb> {
        self.lanes.read().serving.db.clone()
    }

    /// The rebuild in progress, if any.
    pub(super) fn candidate(&self) -> Option<Arc<Lane>> {
        self.lanes.read().candidate.clone()
    }

    /// The serving lane and the candidate, read together.
    pub(super) fn both(&self) -> (Arc<Lane>, Option<Arc<Lane>>) {
        let lanes = self.lanes.read();
        (lanes.serving.clone(), lanes.candidate.clone())
    }

    /// Waits until the serving read model has applied `position`, or its
    /// runner faults or stops (then it never will). Follows a blue/green
    /// switch that happens while waiting.
    pub async fn wait_for(&self, position: u64) -> Result<(), LaneStatus> {
        loop {
            let lane = self.serving();
            let mut status = lane.subscribe();
            let reached = |s: &LaneStatus| s.checkpoint.is_some_and(|c| c >= position);
            let outcome = status.wait_for(|s| reached(s) || s.state.is_ended()).await.map(|s| s.clone());
            match outcome {
                Ok(s) if reached(&s) => return Ok(()),
                Ok(s) if Arc::ptr_eq(&lane, &self.serving()) => return Err(s),
                Ok(_) => continue,
                Err(_) => return Err(lane.status()),
            }
        }
    }

    /// Waits until the serving read model is `running`: caught up with the
    /// store and its declared indexes in place. An error if its runner faults
    /// or stops first.
    pub async fn wait_until_running(&self) -> Result<(), LaneStatus> {
        let lane = self.serving();
        let mut status = lane.subscribe();
        let outcome = status.wait_for(|s| s.state == State::Running || s.state.is_ended()).await.map(|s| s.clone());
        match outcome {
            Ok(s) if s.state == State::Running => Ok(()),
            Ok(s) => Err(s),
            Err(_) => Err(lane.status()),
        }
    }
}
