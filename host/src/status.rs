//! What the host reports about a projection: its state, its fault, each
//! read model's progress and the status the API answers with.
//!
//! Plain data that the deployments, the runners, the registry and the
//! metrics all speak; it depends on nothing of the host but `settings`, so none of
//! those modules has to import another to name a state.

use serde::{Deserialize, Serialize};

use crate::settings::{OnError, ProjectionLimits};

/// What a projection (one of its lanes) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Reading history towards the head of `$all`.
    CatchingUp,
    /// At the head, applying live events.
    Running,
    /// Stopped by a fault; see `fault`.
    Faulted,
    /// Not following events (stopped by a user, or the host is shutting down); queries are still answered.
    Stopped,
    /// Held up by something outside the module (the event store unreachable,
    /// a read-model write refused by a full disk); see `problem`. Retried with
    /// backoff; nothing is lost or applied twice meanwhile.
    Retrying,
}

impl State {
    /// Every state, in the order the API documents them.
    pub const ALL: [State; 5] = [State::Running, State::CatchingUp, State::Faulted, State::Stopped, State::Retrying];

    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::CatchingUp => "catching-up",
            State::Running => "running",
            State::Faulted => "faulted",
            State::Stopped => "stopped",
            State::Retrying => "retrying",
        }
    }

    /// Whether a runner in this state has ended and will not move on by itself.
    pub fn is_ended(self) -> bool {
        matches!(self, State::Faulted | State::Stopped)
    }
}

/// Why a projection is faulted, and at which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInfo {
    /// What went wrong.
    pub reason: String,
    /// The stream of the offending event, when one is known.
    pub stream: Option<String>,
    /// Its revision in that stream.
    pub revision: Option<u64>,
    /// Its commit position.
    pub position: Option<u64>,
    /// Its type.
    pub event_type: Option<String>,
}

impl FaultInfo {
    /// A fault that names no event.
    pub fn plain(reason: impl Into<String>) -> FaultInfo {
        FaultInfo { reason: reason.into(), stream: None, revision: None, position: None, event_type: None }
    }
}

/// One read model's progress, as its runner publishes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneStatus {
    /// The version of the module building it.
    pub version: String,
    /// What its runner is doing.
    pub state: State,
    /// Commit position of the last applied event (null before the first batch).
    pub checkpoint: Option<u64>,
    /// Events applied so far.
    pub events_processed: u64,
    /// Events skipped under `on_error=skip` (see `/dead-letters`).
    pub dead_letters: u64,
    /// The fault, when faulted.
    pub fault: Option<FaultInfo>,
    /// What it is retrying after, when `retrying` (the event store
    /// unreachable, a read-model write refused).
    pub problem: Option<String>,
    /// The host running it, when several hosts share PostgreSQL (none: no host runs it now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A projection's status as the API reports it: the serving lane's progress
/// and the deployment's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The deployment name.
    pub name: String,
    /// The serving lane: the version answering queries and its progress.
    #[serde(flatten)]
    pub serving: LaneStatus,
    /// The read model answering queries (its file name under `readmodels/`).
    pub read_model: String,
    /// Events in `$all` after the checkpoint (system events excluded).
    pub lag_events: u64,
    /// How long the first event after the checkpoint has been waiting, in seconds.
    pub lag_seconds: f64,
    /// What happens when the module fails on an event.
    pub on_error: OnError,
    /// The sandbox limits of the deployment: the deploy's own, the host's
    /// defaults for the rest (during a rebuild, those of the version being built).
    pub limits: EffectiveLimits,
    /// The limits the deploy set (empty when every limit is the host's default).
    pub limits_set: ProjectionLimits,
    /// The serving module: its hash, size and the toolchain that built it.
    pub module: Option<ModuleInfo>,
    /// What `rollback` returns to, if anything.
    pub previous: Option<Previous>,
    /// A blue/green rebuild in progress.
    pub rebuild: Option<Rebuild>,
}

/// The sandbox limits a projection runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    /// Largest linear memory, in MiB.
    pub memory_mb: u64,
    /// Longest one batch may run, in milliseconds.
    pub batch_timeout_ms: u64,
    /// Largest document the module may write, in bytes (host-wide).
    pub document_bytes: u64,
    /// Most one batch may write, in bytes (host-wide).
    pub batch_write_bytes: u64,
}

/// A stored module, as the status describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// SHA-256 of its bytes (its file under `modules/`).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The language and tool that built it, from its `producers` sections
    /// (e.g. `JavaScript (ComponentizeJS 0.23.0)`), when they say.
    pub toolchain: Option<String>,
}

/// The version and read model `rollback` returns to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Previous {
    /// The version of its module.
    pub version: String,
    /// Its read model: the serving one after a `continue` swap (a rollback
    /// changes only the code), the replaced one after a rebuild (a rollback
    /// serves it again).
    pub read_model: String,
}

/// Progress of a blue/green rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rebuild {
    /// The version being built.
    pub version: String,
    /// What its runner is doing.
    pub state: State,
    /// Commit position of its last applied event.
    pub checkpoint: Option<u64>,
    /// Events of `$all` behind it (system events excluded).
    pub position: u64,
    /// Events in `$all` now (system events excluded).
    pub total: u64,
    /// Events per second since it started.
    pub rate: f64,
    /// Seconds until it catches up at that rate.
    pub eta_seconds: Option<f64>,
    /// Its fault, when faulted (queries stay on the serving version).
    pub fault: Option<FaultInfo>,
    /// What it is retrying after, when `retrying`.
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_serialises_the_serving_lane_beside_the_deployment_fields() {
        let status = Status {
            name: "orders".into(),
            serving: LaneStatus {
                version: "1.2.0".into(),
                state: State::CatchingUp,
                checkpoint: Some(42),
                events_processed: 7,
                dead_letters: 1,
                fault: None,
                problem: None,
                host: None,
            },
            read_model: "orders-2".into(),
            lag_events: 3,
            lag_seconds: 0.5,
            on_error: OnError::Skip,
            limits: EffectiveLimits { memory_mb: 32, batch_timeout_ms: 5000, document_bytes: 1, batch_write_bytes: 2 },
            limits_set: ProjectionLimits { memory_mb: Some(32), batch_timeout_ms: None },
            module: Some(ModuleInfo { sha256: "ab".into(), bytes: 9, toolchain: Some("Rust (rustc 1.95.0)".into()) }),
            previous: Some(Previous { version: "1.2.0".into(), read_model: "orders-1".into() }),
            rebuild: None,
        };
        let json = serde_json::to_value(&status).expect("serialises");
        let expected = serde_json::json!({
            "name": "orders", "version": "1.2.0", "state": "catching-up", "checkpoint": 42, "read_model": "orders-2",
            "lag_events": 3, "lag_seconds": 0.5, "events_processed": 7, "fault": null, "problem": null,
            "on_error": "skip", "dead_letters": 1,
            "limits": {"memory_mb": 32, "batch_timeout_ms": 5000, "document_bytes": 1, "batch_write_bytes": 2},
            "limits_set": {"memory_mb": 32},
            "module": {"sha256": "ab", "bytes": 9, "toolchain": "Rust (rustc 1.95.0)"},
            "previous": {"version": "1.2.0", "read_model": "orders-1"}, "rebuild": null,
        });
        assert_eq!(json, expected);
    }
}
