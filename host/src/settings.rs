//! What a deploy may choose for its projection: the replace mode, the
//! poison-event policy and the sandbox limits.
//!
//! Plain data, parsed from the API's query parameters and kept in the
//! registry; it depends on nothing else of the host. How the limits become
//! the runtime's is the deployments' business, not this module's.

use serde::{Deserialize, Serialize};

/// What a projection does when its module fails on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop at the event; nothing after it is applied until a retry or a fix.
    #[default]
    Fault,
    /// Record the event as a dead letter and go on with the next one.
    Skip,
}

impl std::str::FromStr for OnError {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fault" => Ok(OnError::Fault),
            "skip" => Ok(OnError::Skip),
            other => Err(format!("on_error '{other}' must be 'fault' or 'skip'")),
        }
    }
}

/// Sandbox limits a deploy may set for its projection (the host's defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProjectionLimits {
    /// Largest linear memory, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Longest one batch may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_timeout_ms: Option<u64>,
}

impl ProjectionLimits {
    /// Accepted ranges, so a typo cannot starve the host or make a limit meaningless.
    pub const MEMORY_MB: std::ops::RangeInclusive<u64> = 1..=4096;
    /// See [`ProjectionLimits::MEMORY_MB`].
    pub const BATCH_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=600_000;
}

/// How a deploy replaces the running version of an existing projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// New code at the old checkpoint, on the same read model.
    Continue,
    /// New read model built from the start beside the old one; switch when caught up.
    Rebuild,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "continue" => Ok(Mode::Continue),
            "rebuild" => Ok(Mode::Rebuild),
            other => Err(format!("mode '{other}' must be 'continue' or 'rebuild'")),
        }
    }
}

/// Settings a deploy may give.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// How to replace a running version (`continue` if not given).
    pub mode: Option<Mode>,
    /// Poison-event policy (kept from the running version if not given; `fault` for a new name).
    pub on_error: Option<OnError>,
    /// Sandbox limits (kept from the running version if not given).
    pub limits: Option<ProjectionLimits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_policies_parse_their_names_and_refuse_others_with_the_choices() {
        assert_eq!("continue".parse::<Mode>(), Ok(Mode::Continue));
        assert_eq!("rebuild".parse::<Mode>(), Ok(Mode::Rebuild));
        assert_eq!("Rebuild".parse::<Mode>(), Err("mode 'Rebuild' must be 'continue' or 'rebuild'".into()));
        assert_eq!("skip".parse::<OnError>(), Ok(OnError::Skip));
        assert_eq!("fault".parse::<OnError>(), Ok(OnError::Fault));
        assert_eq!("ignore".parse::<OnError>(), Err("on_error 'ignore' must be 'fault' or 'skip'".into()));
    }

    #[test]
    fn limits_left_unset_are_not_written() {
        let json = serde_json::to_string(&ProjectionLimits { memory_mb: Some(8), batch_timeout_ms: None });
        assert_eq!(json.expect("serialises"), r#"{"memory_mb":8}"#);
    }
}
