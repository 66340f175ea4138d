//! Detections reported by devices, the outcomes of their actions, quarantine metadata,
//! alerts, and the record of processed agent events (for idempotent re-delivery).

use crate::{get_json, now_ms, to_json, Result, Store, StoreError};
use sqlx::{AnyConnection, Row};

/// An alert about a device: something it was asked to do failed, or it could not watch
/// or respond as its settings say (raised by the device), or the server saw something
/// wrong with it, such as an earlier certificate of it presented (raised by the server).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRow {
    pub device_id: i64,
    /// What kind of failure, as the agent names it (`quarantine_command_failed`, …).
    pub code: String,
    pub message: String,
    /// When the server stored it (milliseconds since the epoch).
    pub at: i64,
}

/// A stored detection with what happened to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DetectionRow {
    pub id: String,
    pub device_id: i64,
    pub record: serde_json::Value,
    pub created_at: i64,
    /// The autonomous task its group action created or joined.
    pub task_id: Option<i64>,
    /// Why the group action failed, if it did.
    pub group_action_error: Option<String>,
    /// Outcomes of actions: (action, outcome, detail).
    pub outcomes: Vec<ActionOutcome>,
}

/// One action's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionOutcome {
    pub action: String,
    pub outcome: String,
    pub detail: String,
    pub at: i64,
}

/// A quarantined object's metadata as the server keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineRow {
    pub device_id: i64,
    pub entry_id: String,
    pub state: String,
    pub record: serde_json::Value,
    pub updated_at: i64,
}

impl Store {
    /// Whether agent event `event_id` of device `device_id` was processed already.
    pub async fn event_processed(&self, device_id: i64, event_id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS seen FROM processed_events WHERE device_id = $1 AND event_id = $2",
        )
        .bind(device_id)
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Stores a detection (once per id).
    pub async fn insert_detection(
        &self,
        device_id: i64,
        id: &str,
        record: &serde_json::Value,
    ) -> Result<bool> {
        insert_detection(&mut *self.pool().acquire().await?, device_id, id, record).await
    }

    /// Records on a detection the task its group action created (or joined); a failure
    /// its device reported earlier (a try before the one that succeeded) is cleared.
    pub async fn set_detection_task(&self, id: &str, task_id: i64) -> Result<()> {
        sqlx::query("UPDATE detections SET task_id = $1, group_action_error = NULL WHERE id = $2")
            .bind(task_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records an action's outcome for a detection.
    pub async fn add_action_outcome(
        &self,
        device_id: i64,
        detection_id: &str,
        action: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let conn = &mut *self.pool().acquire().await?;
        add_action_outcome(conn, device_id, detection_id, action, outcome, detail).await
    }

    /// Detections, newest first, optionally of one device.
    pub async fn detections(
        &self,
        device_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DetectionRow>> {
        let rows = match device_id {
            Some(d) => sqlx::query(
                "SELECT id, device_id, record, created_at, task_id, group_action_error FROM detections
                 WHERE device_id = $1 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(d)
            .bind(limit),
            None => sqlx::query(
                "SELECT id, device_id, record, created_at, task_id, group_action_error FROM detections
                 ORDER BY created_at DESC LIMIT $1",
            )
            .bind(limit),
        }
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            out.push(DetectionRow {
                outcomes: self.action_outcomes(&id).await?,
                id,
                device_id: r.try_get("device_id")?,
                record: get_json(&r, "record")?,
                created_at: r.try_get("created_at")?,
                task_id: r.try_get("task_id")?,
                group_action_error: r.try_get("group_action_error")?,
            });
        }
        Ok(out)
    }

    /// One detection.
    pub async fn detection(&self, id: &str) -> Result<DetectionRow> {
        let r = sqlx::query(
            "SELECT id, device_id, record, created_at, task_id, group_action_error FROM detections WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no detection with id {id}")))?;
        Ok(DetectionRow {
            outcomes: self.action_outcomes(id).await?,
            id: id.to_string(),
            device_id: r.try_get("device_id")?,
            record: get_json(&r, "record")?,
            created_at: r.try_get("created_at")?,
            task_id: r.try_get("task_id")?,
            group_action_error: r.try_get("group_action_error")?,
        })
    }

    async fn action_outcomes(&self, detection_id: &str) -> Result<Vec<ActionOutcome>> {
        let rows = sqlx::query("SELECT action, outcome, detail, at FROM action_outcomes WHERE detection_id = $1 ORDER BY id")
            .bind(detection_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ActionOutcome {
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Stores or updates a quarantine entry's metadata. A `null` record (a damaged
    /// entry's deletion: the device lost it) keeps the record already held.
    pub async fn upsert_quarantine(
        &self,
        device_id: i64,
        entry_id: &str,
        state: &str,
        record: &serde_json::Value,
    ) -> Result<()> {
        let conn = &mut *self.pool().acquire().await?;
        upsert_quarantine(conn, device_id, entry_id, state, record).await
    }

    /// Records whether content (`sha256`, hex) is allowed on device `device_id`, on the
    /// restored quarantine entries of that content (`record.allowed`, which the device
    /// set when it restored them). Returns how many entries it changed.
    pub async fn set_quarantine_allowance(
        &self,
        device_id: i64,
        sha256: &str,
        allowed: bool,
    ) -> Result<usize> {
        let conn = &mut *self.pool().acquire().await?;
        set_quarantine_allowance(conn, device_id, sha256, allowed).await
    }

    /// Quarantine entries across the fleet or of one device.
    pub async fn quarantine(&self, device_id: Option<i64>) -> Result<Vec<QuarantineRow>> {
        quarantine(&mut *self.pool().acquire().await?, device_id).await
    }

    /// Records an alert raised by a device.
    pub async fn add_alert(&self, device_id: i64, code: &str, message: &str) -> Result<()> {
        add_alert(&mut *self.pool().acquire().await?, device_id, code, message).await
    }

    /// Records an alert unless the device raised one with the same `code` in the last
    /// `window_ms`: for conditions a device may repeat at every reconnection. Says
    /// whether it was recorded. (Two server processes may both record one at the same
    /// instant: a duplicate, never a loss.)
    pub async fn add_alert_unless_recent(
        &self,
        device_id: i64,
        code: &str,
        message: &str,
        window_ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO alerts (device_id, code, message, at)
             SELECT $1, $2, $3, $4
             WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE device_id = $1 AND code = $2 AND at > $5)",
        )
        .bind(device_id)
        .bind(code)
        .bind(message)
        .bind(now)
        .bind(now - window_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest `limit` alerts, of one device or of all, newest first.
    pub async fn alerts(&self, device_id: Option<i64>, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = match device_id {
            Some(d) => sqlx::query(
                "SELECT device_id, code, message, at FROM alerts WHERE device_id = $1
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(d)
            .bind(limit),
            None => sqlx::query(
                "SELECT device_id, code, message, at FROM alerts ORDER BY id DESC LIMIT $1",
            )
            .bind(limit),
        }
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRow {
                    device_id: r.try_get("device_id")?,
                    code: r.try_get("code")?,
                    message: r.try_get("message")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }
}

// The writes behind the methods above, on one connection: `Store`'s methods run them on
// one from the pool, and `AgentEventWrites` in the transaction that marks an agent event
// processed.

pub(crate) async fn insert_detection(
    conn: &mut AnyConnection,
    device_id: i64,
    id: &str,
    record: &serde_json::Value,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO detections (id, device_id, record, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(device_id)
    .bind(to_json(record))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn add_action_outcome(
    conn: &mut AnyConnection,
    device_id: i64,
    detection_id: &str,
    action: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO action_outcomes (detection_id, device_id, action, outcome, detail, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(detection_id)
    .bind(device_id)
    .bind(action)
    .bind(outcome)
    .bind(detail)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records on a detection of `device_id` that its group action failed, as that device
/// reported it, unless a task was created for it (a success is never overwritten).
pub(crate) async fn set_group_action_failure(
    conn: &mut AnyConnection,
    device_id: i64,
    detection_id: &str,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE detections SET group_action_error = $1 WHERE id = $2 AND device_id = $3 AND task_id IS NULL",
    )
    .bind(error)
    .bind(detection_id)
    .bind(device_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn upsert_quarantine(
    conn: &mut AnyConnection,
    device_id: i64,
    entry_id: &str,
    state: &str,
    record: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO quarantine (device_id, entry_id, state, record, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id, entry_id) DO UPDATE SET state = excluded.state,
         record = CASE WHEN excluded.record = 'null' THEN quarantine.record ELSE excluded.record END,
         updated_at = excluded.updated_at",
    )
    .bind(device_id)
    .bind(entry_id)
    .bind(state)
    .bind(to_json(record))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn set_quarantine_allowance(
    conn: &mut AnyConnection,
    device_id: i64,
    sha256: &str,
    allowed: bool,
) -> Result<usize> {
    let mut changed = 0;
    for row in quarantine(conn, Some(device_id)).await? {
        let same_content = row.record["sha256"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(sha256));
        if row.state != "restored" || !same_content || row.record["allowed"] == allowed {
            continue;
        }
        let mut record = row.record;
        record["allowed"] = serde_json::json!(allowed);
        sqlx::query(
            "UPDATE quarantine SET record = $1, updated_at = $2
             WHERE device_id = $3 AND entry_id = $4",
        )
        .bind(to_json(&record))
        .bind(now_ms())
        .bind(device_id)
        .bind(&row.entry_id)
        .execute(&mut *conn)
        .await?;
        changed += 1;
    }
    Ok(changed)
}

async fn quarantine(
    conn: &mut AnyConnection,
    device_id: Option<i64>,
) -> Result<Vec<QuarantineRow>> {
    let rows = match device_id {
        Some(d) => sqlx::query(
            "SELECT device_id, entry_id, state, record, updated_at FROM quarantine WHERE device_id = $1 ORDER BY updated_at DESC",
        )
        .bind(d),
        None => sqlx::query("SELECT device_id, entry_id, state, record, updated_at FROM quarantine ORDER BY updated_at DESC"),
    }
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QuarantineRow {
                device_id: r.try_get("device_id")?,
                entry_id: r.try_get("entry_id")?,
                state: r.try_get("state")?,
                record: get_json(r, "record")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

pub(crate) async fn add_alert(
    conn: &mut AnyConnection,
    device_id: i64,
    code: &str,
    message: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO alerts (device_id, code, message, at) VALUES ($1, $2, $3, $4)")
        .bind(device_id)
        .bind(code)
        .bind(message)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;

    #[tokio::test]
    async fn detections_are_idempotent() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["d"]).await;
            let d = devices[0];
            let rec = serde_json::json!({"path": "/tmp/x", "threat": "EICAR"});
            assert!(store.insert_detection(d, "det1", &rec).await.unwrap());
            assert!(!store.insert_detection(d, "det1", &rec).await.unwrap());
            store
                .add_action_outcome(d, "det1", "quarantine_and_delete", "done", "q1")
                .await
                .unwrap();
            let det = store.detection("det1").await.unwrap();
            assert_eq!(det.record["threat"], "EICAR");
            assert_eq!(det.outcomes.len(), 1);
            assert_eq!(store.detections(Some(d), 10).await.unwrap().len(), 1);
            store
                .upsert_quarantine(d, "q1", "quarantined", &rec)
                .await
                .unwrap();
            store
                .upsert_quarantine(d, "q1", "restored", &rec)
                .await
                .unwrap();
            let q = store.quarantine(None).await.unwrap();
            assert_eq!(q.len(), 1);
            assert_eq!(q[0].state, "restored");
            // A change without a record (a damaged entry's deletion) keeps the one held.
            store
                .upsert_quarantine(d, "q1", "deleted", &serde_json::Value::Null)
                .await
                .unwrap();
            let q = store.quarantine(None).await.unwrap();
            assert_eq!((q[0].state.as_str(), &q[0].record), ("deleted", &rec));
            assert!(store.detection("nope").await.is_err());
        })
        .await;
    }

    #[tokio::test]
    async fn alerts_are_listed_per_device_newest_first() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["a", "b"]).await;
            let (a, b) = (devices[0], devices[1]);
            store.add_alert(a, "watch_failed", "first").await.unwrap();
            store
                .add_alert(b, "response_refused", "other")
                .await
                .unwrap();
            store
                .add_alert(a, "quarantine_command_failed", "second")
                .await
                .unwrap();
            let of_a: Vec<(i64, String, String)> = store
                .alerts(Some(a), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.device_id, r.code, r.message))
                .collect();
            assert_eq!(
                of_a,
                [
                    (a, "quarantine_command_failed".into(), "second".into()),
                    (a, "watch_failed".into(), "first".into())
                ]
            );
            let all = store.alerts(None, 2).await.unwrap();
            assert_eq!(
                all.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
                ["second", "other"]
            );
            assert!(all[0].at > 0);
        })
        .await;
    }
}
