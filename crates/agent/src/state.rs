//! The agent's persisted state: what it last applied from the server, its effective
//! settings (so it keeps working offline), its tasks, and the events the server has not yet
//! acknowledged — in a SQLite database in the agent's data directory.

use riposte_model::{DeviceTaskState, EffectiveSettings};
use riposte_proto::{AgentEvent, TaskOffer, TaskUpdate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything the agent must remember across restarts. `Debug` hides the special
/// password (it says only whether there is one).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub last_applied: u64,
    pub settings: Option<EffectiveSettings>,
    pub response_group: Option<i64>,
    /// The special account's password, when group actions are selected (file is 0600).
    pub special_password: Option<String>,
    pub tasks: BTreeMap<i64, TaskRecord>,
    /// Events not yet acknowledged by the server, oldest first.
    pub outbox: Vec<AgentEvent>,
    /// Group actions waiting for the server to acknowledge their detection's event: the
    /// server starts a group action only from a detection it has stored.
    pub pending_group_actions: Vec<PendingGroupAction>,
    /// Responses begun and not finished: replayed when the agent starts again, so that a
    /// stop at any instant loses no action (see [`PendingResponse`]).
    pub pending_responses: Vec<PendingResponse>,
    /// Restores under way (quarantine entry ids) whose content was allowed already: a
    /// restore a stop interrupts and the quarantine rolls back takes back only an
    /// allowance it gave.
    pub restores_of_allowed_content: std::collections::BTreeSet<String>,
    /// Restores and deletions of quarantine entries under way, by entry id: recorded
    /// before they begin and removed in the save that queues the event telling the
    /// server their outcome, so that one a stop interrupts is settled, and reported,
    /// when the agent starts again (`Agent::settle_interrupted_quarantine_changes`).
    pub quarantine_changes: BTreeMap<String, QuarantineChange>,
    pub connected: bool,
    pub last_link_note: String,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("last_applied", &self.last_applied)
            .field("settings", &self.settings)
            .field("response_group", &self.response_group)
            .field(
                "special_password",
                &self.special_password.as_ref().map(|_| "<redacted>"),
            )
            .field("tasks", &self.tasks)
            .field("outbox", &self.outbox)
            .field("pending_group_actions", &self.pending_group_actions)
            .field("pending_responses", &self.pending_responses)
            .field(
                "restores_of_allowed_content",
                &self.restores_of_allowed_content,
            )
            .field("quarantine_changes", &self.quarantine_changes)
            .field("connected", &self.connected)
            .field("last_link_note", &self.last_link_note)
            .finish()
    }
}

/// A group action (the autonomous IOC scan task) to request once the server has
/// acknowledged the event that reported its detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingGroupAction {
    pub event_id: String,
    pub detection: riposte_proto::DetectionRecord,
    /// Requests the server could not take for a passing reason (unreachable, busy,
    /// too many failed logins from this address): it is asked again from `retry_at_ms`.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub retry_at_ms: i64,
}

/// A response to a detection, recorded before its first action and removed after its
/// last: the actions whose outcomes were reported are in `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingResponse {
    /// The event that reported the detection.
    pub event_id: String,
    pub detection: riposte_proto::DetectionRecord,
    /// Actions (`Action::as_str`) whose outcomes have been reported: the action's name
    /// where it was carried out, the name and `:failed` where it failed (a stop before
    /// the response ended runs neither again, and a notification then says the object
    /// was quarantined only where it was).
    pub done: Vec<String>,
}

/// A restore or deletion of a quarantine entry under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineChange {
    /// `restore` or `delete`.
    pub action: String,
    /// The entry's record as the server knows it (what the outcome's event carries).
    pub record: serde_json::Value,
}

/// A task as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub offer: TaskOffer,
    pub state: DeviceTaskState,
    pub last_update: Option<TaskUpdate>,
}

/// The agent's local database (`DIR/agent.db`, SQLite).
///
/// Settings and counters are rows of a key/value table; tasks and unacknowledged events
/// have tables of their own. Every save is one transaction with `synchronous=FULL`, so a
/// crash leaves either the old or the new state.
pub struct StateFile {
    path: PathBuf,
}

fn db_err(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(format!("agent database: {e}"))
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("agent.db"),
        }
    }

    fn open(&self) -> std::io::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&self.path).map_err(db_err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tasks (task_id INTEGER PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS events (pos INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, event TEXT NOT NULL);",
        )
        .map_err(db_err)?;
        Ok(conn)
    }

    /// Loads the state; an empty database is a fresh state.
    pub fn load(&self) -> std::io::Result<AgentState> {
        let conn = self.open()?;
        let corrupt = |what: &str, e: serde_json::Error| {
            std::io::Error::other(format!(
                "{} holds a corrupt {what} ({e}); move it away to start afresh",
                self.path.display()
            ))
        };
        let mut state = AgentState::default();
        let mut stmt = conn
            .prepare("SELECT key, value FROM meta")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err)?;
        for row in rows {
            let (k, v) = row.map_err(db_err)?;
            match k.as_str() {
                "last_applied" => state.last_applied = v.parse().unwrap_or(0),
                "settings" => {
                    state.settings = serde_json::from_str(&v).map_err(|e| corrupt("settings", e))?
                }
                "response_group" => {
                    state.response_group =
                        serde_json::from_str(&v).map_err(|e| corrupt("group", e))?
                }
                "special_password" => {
                    state.special_password =
                        serde_json::from_str(&v).map_err(|e| corrupt("secret", e))?
                }
                "pending_group_actions" => {
                    state.pending_group_actions =
                        serde_json::from_str(&v).map_err(|e| corrupt("group action", e))?
                }
                "pending_responses" => {
                    state.pending_responses =
                        serde_json::from_str(&v).map_err(|e| corrupt("response", e))?
                }
                "restores_of_allowed_content" => {
                    state.restores_of_allowed_content =
                        serde_json::from_str(&v).map_err(|e| corrupt("restore", e))?
                }
                "quarantine_changes" => {
                    state.quarantine_changes =
                        serde_json::from_str(&v).map_err(|e| corrupt("quarantine change", e))?
                }
                "connected" => state.connected = v == "true",
                "last_link_note" => state.last_link_note = v,
                _ => {}
            }
        }
        let mut stmt = conn
            .prepare("SELECT record FROM tasks ORDER BY task_id")
            .map_err(db_err)?;
        for rec in stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err)?
        {
            let t: TaskRecord =
                serde_json::from_str(&rec.map_err(db_err)?).map_err(|e| corrupt("task", e))?;
            state.tasks.insert(t.offer.task_id, t);
        }
        let mut stmt = conn
            .prepare("SELECT event FROM events ORDER BY pos")
            .map_err(db_err)?;
        for ev in stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err)?
        {
            state
                .outbox
                .push(serde_json::from_str(&ev.map_err(db_err)?).map_err(|e| corrupt("event", e))?);
        }
        Ok(state)
    }

    /// Saves the state in one transaction.
    pub fn save(&self, state: &AgentState) -> std::io::Result<()> {
        let mut conn = self.open()?;
        let tx = conn.transaction().map_err(db_err)?;
        let meta: [(&str, String); 10] = [
            ("last_applied", state.last_applied.to_string()),
            ("settings", json(&state.settings)),
            ("response_group", json(&state.response_group)),
            ("special_password", json(&state.special_password)),
            ("pending_group_actions", json(&state.pending_group_actions)),
            ("pending_responses", json(&state.pending_responses)),
            (
                "restores_of_allowed_content",
                json(&state.restores_of_allowed_content),
            ),
            ("quarantine_changes", json(&state.quarantine_changes)),
            ("connected", state.connected.to_string()),
            ("last_link_note", state.last_link_note.clone()),
        ];
        for (k, v) in meta {
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (k, v))
                .map_err(db_err)?;
        }
        tx.execute("DELETE FROM tasks", []).map_err(db_err)?;
        for t in state.tasks.values() {
            tx.execute(
                "INSERT INTO tasks (task_id, record) VALUES (?1, ?2)",
                (t.offer.task_id, json(t)),
            )
            .map_err(db_err)?;
        }
        tx.execute("DELETE FROM events", []).map_err(db_err)?;
        for e in &state.outbox {
            tx.execute(
                "INSERT INTO events (event_id, event) VALUES (?1, ?2)",
                (&e.event_id, json(e)),
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }
}

/// JSON text for the database's text columns.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use riposte_model::DeviceTaskState;

    #[test]
    fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap().last_applied, 0);
        let mut s = AgentState {
            last_applied: 7,
            special_password: Some("pw".into()),
            ..Default::default()
        };
        s.tasks.insert(
            3,
            TaskRecord {
                offer: TaskOffer {
                    task_id: 3,
                    autonomous: true,
                    iocs: vec![],
                    scope: Default::default(),
                    actions: vec![],
                },
                state: DeviceTaskState::Running,
                last_update: None,
            },
        );
        s.outbox.push(AgentEvent {
            event_id: "e1".into(),
            at_ms: 1,
            body: riposte_proto::EventBody::Alert {
                code: "c".into(),
                message: "m".into(),
            },
        });
        f.save(&s).unwrap();
        let back = StateFile::new(dir.path()).load().unwrap();
        assert_eq!(back.last_applied, 7);
        assert_eq!(back.special_password.as_deref(), Some("pw"));
        let shown = format!("{back:?}");
        assert!(!shown.contains("\"pw\""), "{shown}");
        assert!(
            shown.contains("special_password: Some(\"<redacted>\")"),
            "{shown}"
        );
        assert_eq!(back.tasks[&3].state, DeviceTaskState::Running);
        assert_eq!(back.outbox.len(), 1);
        s.outbox.clear();
        f.save(&s).unwrap();
        assert!(f.load().unwrap().outbox.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
