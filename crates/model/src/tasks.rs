//! IOC scan tasks: their content and the per-device state machine.
//!
//! Per device a task goes `pending → delivered → running → completed | failed`, and may
//! end `expired` or `cancelled` before it completes. Final states never change again, so a
//! late or repeated report from an agent cannot rewrite history (delivery is at least once).

use serde::{Deserialize, Serialize};

/// What to do on a device where the IOC is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    QuarantineAndDelete,
    EppCriticalAreasScan,
}

impl TaskAction {
    pub fn parse(s: &str) -> Result<TaskAction, String> {
        match s.trim() {
            "quarantine_and_delete" => Ok(TaskAction::QuarantineAndDelete),
            "epp_critical_areas_scan" => Ok(TaskAction::EppCriticalAreasScan),
            other => Err(format!(
                "unknown action on a hit '{other}'; valid: quarantine_and_delete, epp_critical_areas_scan"
            )),
        }
    }
}

/// Where a device looks for the IOC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanScope {
    /// All local file systems of the device.
    #[default]
    SystemDrives,
    /// Kernel, startup objects and boot sectors only.
    CriticalAreas,
}

/// A device's state for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTaskState {
    Pending,
    Delivered,
    Running,
    Completed,
    Failed,
    Expired,
    Cancelled,
}

/// A refused state change.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("a task cannot go from {from:?} to {to:?} on a device")]
pub struct TransitionError {
    pub from: DeviceTaskState,
    pub to: DeviceTaskState,
}

impl DeviceTaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceTaskState::Pending => "pending",
            DeviceTaskState::Delivered => "delivered",
            DeviceTaskState::Running => "running",
            DeviceTaskState::Completed => "completed",
            DeviceTaskState::Failed => "failed",
            DeviceTaskState::Expired => "expired",
            DeviceTaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceTaskState> {
        use DeviceTaskState::*;
        [
            Pending, Delivered, Running, Completed, Failed, Expired, Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether no further change is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceTaskState::Completed
                | DeviceTaskState::Failed
                | DeviceTaskState::Expired
                | DeviceTaskState::Cancelled
        )
    }

    /// Checks a state change. Repeating the current state is allowed (idempotent reports).
    pub fn advance(self, to: DeviceTaskState) -> Result<DeviceTaskState, TransitionError> {
        use DeviceTaskState::*;
        let ok = self == to
            || matches!(
                (self, to),
                (Pending, Delivered | Running | Completed | Failed)
                    | (Delivered, Running | Completed | Failed)
                    | (Running, Completed | Failed)
                    | (Pending | Delivered | Running, Expired | Cancelled)
            );
        if ok {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

/// What a running device has swept so far, from its last `running` update's
/// `results.progress` (files, bytes where the sweep stats every file, files read); empty
/// for a device not running.
pub fn progress_text(state: DeviceTaskState, results: &serde_json::Value) -> String {
    let p = &results["progress"];
    let read = p["read"].as_u64().unwrap_or(0);
    match (state, p["files"].as_u64(), p["bytes"].as_u64()) {
        (DeviceTaskState::Running, Some(files), Some(bytes)) => format!(
            "{files} files ({:.1} MB) examined, {read} read",
            bytes as f64 / 1e6
        ),
        (DeviceTaskState::Running, Some(files), None) => {
            format!("{files} files examined, {read} read")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceTaskState::*;
    use super::*;

    #[test]
    fn state_machine() {
        assert_eq!(Pending.advance(Delivered), Ok(Delivered));
        assert_eq!(Delivered.advance(Running), Ok(Running));
        assert_eq!(Running.advance(Completed), Ok(Completed));
        assert_eq!(Running.advance(Running), Ok(Running));
        assert!(Completed.advance(Running).is_err());
        assert!(Cancelled.advance(Completed).is_err());
        assert!(Failed.advance(Cancelled).is_err());
        assert!(Running.advance(Pending).is_err());
        assert_eq!(Delivered.advance(Cancelled), Ok(Cancelled));
        for s in [
            Pending, Delivered, Running, Completed, Failed, Expired, Cancelled,
        ] {
            assert_eq!(DeviceTaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            TaskAction::parse("quarantine_and_delete"),
            Ok(TaskAction::QuarantineAndDelete)
        );
        assert!(TaskAction::parse("x").is_err());
    }
}
