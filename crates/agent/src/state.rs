//! The agent's persisted state: what it last applied from the server, its effective
//! settings (so it keeps working offline), its tasks, and the events the server has not yet
//! acknowledged. Written atomically (temporary file, fsync, rename) after every change, so
//! a crash leaves either the old or the new state, never a torn one.

use riposte_model::{DeviceTaskState, EffectiveSettings};
use riposte_proto::{AgentEvent, TaskOffer, TaskUpdate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Everything the agent must remember across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub last_applied: u64,
    pub settings: Option<EffectiveSettings>,
    pub response_group: Option<i64>,
    /// The special account's password, when group actions are selected (file is 0600).
    pub special_password: Option<String>,
    pub tasks: BTreeMap<i64, TaskRecord>,
    /// Events not yet acknowledged by the server, oldest first.
    pub outbox: Vec<AgentEvent>,
    pub connected: bool,
    pub last_link_note: String,
}

/// A task as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub offer: TaskOffer,
    pub state: DeviceTaskState,
    pub last_update: Option<TaskUpdate>,
}

/// The state file.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("state.json"),
        }
    }

    /// Loads the state; a missing file is a fresh state.
    pub fn load(&self) -> std::io::Result<AgentState> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is corrupt ({e}); move it away to start afresh",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves the state atomically.
    pub fn save(&self, state: &AgentState) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}
