//! IOC scan tasks and each device's progress on them.

use crate::outbox::{enqueue_in, KIND_TASK_CANCEL, KIND_TASK_OFFER};
use crate::{get_json, now_ms, to_json, Result, Store, StoreError};
use riposte_model::DeviceTaskState;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What a new task holds.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub name: String,
    pub autonomous: bool,
    pub group_id: i64,
    pub created_by: String,
    pub iocs: serde_json::Value,
    pub scope: String,
    pub actions: serde_json::Value,
    /// Autonomous tasks: the key under which simultaneous detections are merged.
    pub dedup_key: Option<String>,
    pub expires_at: i64,
    pub detection_id: Option<String>,
}

/// A stored task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub name: String,
    pub autonomous: bool,
    pub group_id: i64,
    pub created_by: String,
    pub created_at: i64,
    pub iocs: serde_json::Value,
    pub scope: String,
    pub actions: serde_json::Value,
    pub cancelled: bool,
    pub last_run_at: i64,
    pub expires_at: i64,
    pub detection_id: Option<String>,
}

/// One device's progress on a task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskDeviceRow {
    pub task_id: i64,
    pub device_id: i64,
    pub device_name: String,
    pub state: DeviceTaskState,
    pub hits: i64,
    pub reason: Option<String>,
    pub results: serde_json::Value,
    pub updated_at: i64,
}

fn task(r: &AnyRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        autonomous: r.try_get::<i64, _>("autonomous")? != 0,
        group_id: r.try_get("group_id")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        iocs: get_json(r, "iocs")?,
        scope: r.try_get("scope")?,
        actions: get_json(r, "actions")?,
        cancelled: r.try_get::<i64, _>("cancelled")? != 0,
        last_run_at: r.try_get("last_run_at")?,
        expires_at: r.try_get("expires_at")?,
        detection_id: r.try_get("detection_id")?,
    })
}

fn state(s: &str) -> Result<DeviceTaskState> {
    DeviceTaskState::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown task state '{s}'")))
}

const TASK_COLUMNS: &str = "id, name, autonomous, group_id, created_by, created_at, iocs, scope, actions, cancelled, last_run_at, expires_at, detection_id";

impl Store {
    /// Creates a task for `devices` and queues its offer to each of them, atomically.
    /// `offer` builds the message for the new task's id.
    pub async fn create_task(
        &self,
        new: &NewTask,
        devices: &[i64],
        offer: impl Fn(i64) -> String,
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let id = insert_task(&mut tx, new, devices, offer).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Like [`Store::create_task`], unless an autonomous task with the same group and
    /// `dedup_key` was created since `since`: then that task's id and `true`. The check and
    /// the creation are one transaction, serialised across server processes by a
    /// PostgreSQL advisory lock on the key (SQLite has a single writer anyway).
    pub async fn create_task_dedup(
        &self,
        new: &NewTask,
        devices: &[i64],
        since: i64,
        offer: impl Fn(i64) -> String,
    ) -> Result<(i64, bool)> {
        let key = new.dedup_key.clone().unwrap_or_default();
        let mut tx = self.pool().begin().await?;
        if self.backend() == crate::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key(new.group_id, &key))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(id) = find_recent_autonomous(&mut tx, new.group_id, &key, since).await? {
            tx.commit().await?;
            return Ok((id, true));
        }
        let id = insert_task(&mut tx, new, devices, offer).await?;
        tx.commit().await?;
        Ok((id, false))
    }

    /// An autonomous task for `group_id` with `dedup_key` created after `since`, if any.
    pub async fn recent_autonomous_task(
        &self,
        group_id: i64,
        dedup_key: &str,
        since: i64,
    ) -> Result<Option<i64>> {
        let mut conn = self.pool().acquire().await?;
        find_recent_autonomous(&mut conn, group_id, dedup_key, since).await
    }

    /// One task.
    pub async fn task(&self, id: i64) -> Result<TaskRow> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no task with id {id}")))?;
        task(&row)
    }

    /// Tasks, newest first.
    pub async fn tasks(&self, limit: i64) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(task).collect()
    }

    /// Every device's progress on a task.
    pub async fn task_devices(&self, task_id: i64) -> Result<Vec<TaskDeviceRow>> {
        self.task_device_rows("td.task_id = $1", task_id).await
    }

    /// A device's progress on all its tasks.
    pub async fn device_tasks(&self, device_id: i64) -> Result<Vec<TaskDeviceRow>> {
        self.task_device_rows("td.device_id = $1", device_id).await
    }

    async fn task_device_rows(&self, filter: &str, id: i64) -> Result<Vec<TaskDeviceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT td.task_id, td.device_id, d.name AS device_name, td.state, td.hits, td.reason, td.results, td.updated_at
             FROM task_devices td JOIN devices d ON d.id = td.device_id WHERE {filter} ORDER BY td.task_id, td.device_id"
        ))
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskDeviceRow {
                    task_id: r.try_get("task_id")?,
                    device_id: r.try_get("device_id")?,
                    device_name: r.try_get("device_name")?,
                    state: state(&r.try_get::<String, _>("state")?)?,
                    hits: r.try_get("hits")?,
                    reason: r.try_get("reason")?,
                    results: get_json(r, "results")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Moves a device's state on a task, following the state machine; a refused change
    /// (e.g. a late report after completion) changes nothing and is a `Conflict`.
    pub async fn update_task_device(
        &self,
        task_id: i64,
        device_id: i64,
        to: DeviceTaskState,
        hits: i64,
        reason: Option<&str>,
        results: &serde_json::Value,
    ) -> Result<DeviceTaskState> {
        let mut tx = self.pool().begin().await?;
        let row =
            sqlx::query("SELECT state FROM task_devices WHERE task_id = $1 AND device_id = $2")
                .bind(task_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "task {task_id} was not given to device {device_id}"
                    ))
                })?;
        let from = state(&row.try_get::<String, _>("state")?)?;
        let to = from
            .advance(to)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        // A device repeats its last update of every task when it reconnects: a finished
        // task's row, its results and its time stay as they were.
        if from.is_final() {
            tx.commit().await?;
            return Ok(from);
        }
        let now = now_ms();
        let keep_results = results.is_null();
        sqlx::query(
            "UPDATE task_devices SET state = $1, hits = $2, reason = $3,
                    results = CASE WHEN $4 = 1 THEN results ELSE $5 END, updated_at = $6
             WHERE task_id = $7 AND device_id = $8",
        )
        .bind(to.as_str())
        .bind(hits)
        .bind(reason)
        .bind(keep_results as i64)
        .bind(to_json(results))
        .bind(now)
        .bind(task_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        if matches!(to, DeviceTaskState::Running | DeviceTaskState::Completed) {
            // At most once a second per task: thousands of devices finishing together
            // should not queue up on this one row.
            sqlx::query(
                "UPDATE tasks SET last_run_at = $1 WHERE id = $2 AND last_run_at < $1 - 1000",
            )
            .bind(now)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(to)
    }

    /// Cancels a task: devices that have not finished go to `cancelled`; undelivered offers
    /// are withdrawn, delivered ones get a cancel message (`cancel` builds it).
    /// Returns the devices that were sent a cancel message.
    pub async fn cancel_task(&self, task_id: i64, cancel: &str) -> Result<Vec<i64>> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE tasks SET cancelled = 1 WHERE id = $1 AND cancelled = 0")
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!("task {task_id} is already cancelled"))
            } else {
                StoreError::NotFound(format!("no task with id {task_id}"))
            });
        }
        let rows = sqlx::query("SELECT device_id, state FROM task_devices WHERE task_id = $1")
            .bind(task_id)
            .fetch_all(&mut *tx)
            .await?;
        // A task every device has finished has nothing left to cancel: saying it was
        // cancelled would misreport its outcome (the transaction is dropped, unchanged).
        let mut finished = true;
        for r in &rows {
            finished &= state(&r.try_get::<String, _>("state")?)?.is_final();
        }
        if finished && !rows.is_empty() {
            return Err(StoreError::Conflict(format!(
                "task {task_id} has already finished on every device"
            )));
        }
        let mut notified = Vec::new();
        for r in rows {
            let device: i64 = r.try_get("device_id")?;
            let s = state(&r.try_get::<String, _>("state")?)?;
            if s.is_final() {
                continue;
            }
            sqlx::query("UPDATE task_devices SET state = 'cancelled', updated_at = $1 WHERE task_id = $2 AND device_id = $3")
                .bind(now_ms())
                .bind(task_id)
                .bind(device)
                .execute(&mut *tx)
                .await?;
            let withdrawn = sqlx::query(
                "DELETE FROM outbox WHERE device_id = $1 AND kind = $2 AND ref_id = $3",
            )
            .bind(device)
            .bind(KIND_TASK_OFFER)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
            if withdrawn.rows_affected() == 0 {
                enqueue_in(&mut tx, device, KIND_TASK_CANCEL, Some(task_id), cancel).await?;
                notified.push(device);
            }
        }
        tx.commit().await?;
        Ok(notified)
    }

    /// Marks unfinished device states of tasks past their expiry as `expired`.
    pub async fn expire_tasks(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE task_devices SET state = 'expired', updated_at = $1
             WHERE state IN ('pending', 'delivered', 'running')
               AND task_id IN (SELECT id FROM tasks WHERE expires_at < $1)",
        )
        .bind(now)
        .execute(self.pool())
        .await?;
        sqlx::query(
            "DELETE FROM outbox WHERE kind = 'task_offer'
               AND ref_id IN (SELECT id FROM tasks WHERE expires_at < $1)",
        )
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes autonomous tasks whose last run is before `before`.
    pub async fn delete_old_autonomous_tasks(&self, before: i64) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let cond = "SELECT id FROM tasks WHERE autonomous = 1 AND last_run_at < $1";
        sqlx::query(&format!(
            "DELETE FROM task_devices WHERE task_id IN ({cond})"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM outbox WHERE kind = 'task_offer' AND ref_id IN ({cond})"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM tasks WHERE autonomous = 1 AND last_run_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// The autonomous task for `group_id` and `dedup_key` created since `since` and not yet
/// finished on every device, if any.
async fn find_recent_autonomous(
    conn: &mut sqlx::AnyConnection,
    group_id: i64,
    dedup_key: &str,
    since: i64,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        // Only a task still under way: once every device has finished it, a new copy of
        // the object may have appeared since its sweep, and a new detection sweeps again.
        "SELECT id FROM tasks WHERE autonomous = 1 AND group_id = $1 AND dedup_key = $2 AND created_at >= $3
         AND cancelled = 0 AND EXISTS (SELECT 1 FROM task_devices d WHERE d.task_id = tasks.id
         AND d.state IN ('pending', 'delivered', 'running'))
         ORDER BY id LIMIT 1",
    )
    .bind(group_id)
    .bind(dedup_key)
    .bind(since)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

/// A 64-bit advisory-lock key for (group, dedup key), or for any id and name: FNV-1a,
/// stable across processes.
pub(crate) fn lock_key(group_id: i64, key: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in group_id.to_le_bytes().iter().chain(key.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

/// Inserts a task, its per-device rows and its offers, inside the caller's transaction.
async fn insert_task(
    tx: &mut sqlx::AnyConnection,
    new: &NewTask,
    devices: &[i64],
    offer: impl Fn(i64) -> String,
) -> Result<i64> {
    let now = now_ms();
    let row = sqlx::query(

            "INSERT INTO tasks (name, autonomous, group_id, created_by, created_at, iocs, scope, actions,
                                dedup_key, last_run_at, expires_at, detection_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(&new.name)
        .bind(new.autonomous as i64)
        .bind(new.group_id)
        .bind(&new.created_by)
        .bind(now)
        .bind(to_json(&new.iocs))
        .bind(&new.scope)
        .bind(to_json(&new.actions))
        .bind(new.dedup_key.as_deref())
        .bind(now)
        .bind(new.expires_at)
        .bind(new.detection_id.as_deref())
        .fetch_one(&mut *tx)
        .await?;
    let id: i64 = row.try_get("id")?;
    let payload = offer(id);
    // A few statements per chunk of devices, not three per device: fan-out to 10,000
    // devices must not cost 30,000 round trips. Ids and times are integers from the
    // store itself, so they are written inline; the payload is bound once per chunk.
    for chunk in devices.chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|d| format!("({id}, {d}, 'pending', {now})"))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO task_devices (task_id, device_id, state, updated_at) VALUES {}",
            rows.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
        let list: Vec<String> = chunk.iter().map(|d| d.to_string()).collect();
        let seqs = sqlx::query(&format!(
            "UPDATE devices SET next_seq = next_seq + 1 WHERE id IN ({}) RETURNING id, next_seq",
            list.join(",")
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut rows = Vec::with_capacity(seqs.len());
        for r in &seqs {
            let device: i64 = r.try_get("id")?;
            let seq: i64 = r.try_get("next_seq")?;
            rows.push(format!(
                "({device}, {seq}, '{KIND_TASK_OFFER}', {id}, $1, {now})"
            ));
        }
        if !rows.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO outbox (device_id, seq, kind, ref_id, payload, created_at) VALUES {}",
                rows.join(", ")
            ))
            .bind(&payload)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;
    use riposte_model::DeviceTaskState::*;

    #[tokio::test]
    async fn task_life_cycle() {
        each_backend(|store| async move {
            let (g, devices) =
                crate::testing::group_with_devices(&store, &["d1", "d2", "d3"]).await;
            let [d1, d2, d3] = devices[..] else {
                unreachable!()
            };
            let new = NewTask {
                name: "sweep".into(),
                autonomous: true,
                group_id: g,
                created_by: "riposte-autonomous".into(),
                iocs: serde_json::json!([{"format": "openioc"}]),
                scope: "system_drives".into(),
                actions: serde_json::json!(["quarantine_and_delete"]),
                dedup_key: Some("k".into()),
                expires_at: now_ms() + 60_000,
                detection_id: Some("det".into()),
            };
            let id = store
                .create_task(&new, &[d1, d2, d3], |id| format!("offer {id}"))
                .await
                .unwrap();
            assert_eq!(
                store
                    .recent_autonomous_task(g, "k", now_ms() - 1000)
                    .await
                    .unwrap(),
                Some(id)
            );
            assert_eq!(
                store.recent_autonomous_task(g, "other", 0).await.unwrap(),
                None
            );
            assert_eq!(
                store.outbox_after(d1, 0, 10).await.unwrap()[0].payload,
                format!("offer {id}")
            );

            // d1 acknowledges the offer and completes; d2 is delivered then cancelled; d3 never came.
            let acked = store.ack_outbox(d1, 1).await.unwrap();
            assert_eq!(acked, vec![id]);
            store
                .update_task_device(id, d1, Delivered, 0, None, &serde_json::Value::Null)
                .await
                .unwrap();
            store
                .update_task_device(id, d1, Running, 0, None, &serde_json::Value::Null)
                .await
                .unwrap();
            store
                .update_task_device(
                    id,
                    d1,
                    Completed,
                    2,
                    None,
                    &serde_json::json!({"hits": ["/x"]}),
                )
                .await
                .unwrap();
            // The device's repeat of its final update on a reconnect changes nothing,
            // not even the row's time.
            let finished = store.task_devices(id).await.unwrap()[0].clone();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            store
                .update_task_device(id, d1, Completed, 7, None, &serde_json::json!({"hits": []}))
                .await
                .unwrap();
            let again = store.task_devices(id).await.unwrap()[0].clone();
            assert_eq!(
                (again.hits, again.updated_at, &again.results),
                (finished.hits, finished.updated_at, &finished.results)
            );
            // A late, repeated "running" after completion changes nothing.
            assert!(matches!(
                store
                    .update_task_device(id, d1, Running, 0, None, &serde_json::Value::Null)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            store.ack_outbox(d2, 1).await.unwrap();
            store
                .update_task_device(id, d2, Delivered, 0, None, &serde_json::Value::Null)
                .await
                .unwrap();
            let notified = store.cancel_task(id, "cancel").await.unwrap();
            assert_eq!(
                notified,
                vec![d2],
                "only the delivered device is told; d3's offer is withdrawn"
            );
            assert!(store.outbox_after(d3, 0, 10).await.unwrap().is_empty());
            let rows = store.task_devices(id).await.unwrap();
            let states: Vec<_> = rows
                .iter()
                .map(|r| (r.device_id, r.state, r.hits))
                .collect();
            assert_eq!(
                states,
                vec![(d1, Completed, 2), (d2, Cancelled, 0), (d3, Cancelled, 0)]
            );
            assert_eq!(rows[0].results["hits"][0], "/x");
            assert!(store.task(id).await.unwrap().cancelled);
            assert!(matches!(
                store.task(999).await,
                Err(StoreError::NotFound(_))
            ));
            // Cancelled twice: the second says so and changes nothing.
            assert!(matches!(
                store.cancel_task(id, "cancel").await,
                Err(StoreError::Conflict(m)) if m.contains("already cancelled")
            ));
            assert!(matches!(
                store.cancel_task(999, "cancel").await,
                Err(StoreError::NotFound(_))
            ));
            // A task every device has finished is not cancelled after the fact.
            let mut one = new.clone();
            one.dedup_key = None;
            let t1 = store
                .create_task(&one, &[d1], |id| format!("offer {id}"))
                .await
                .unwrap();
            store
                .update_task_device(t1, d1, Completed, 0, None, &serde_json::json!({"hits": []}))
                .await
                .unwrap();
            assert!(matches!(
                store.cancel_task(t1, "cancel").await,
                Err(StoreError::Conflict(m)) if m.contains("already finished")
            ));
            assert!(!store.task(t1).await.unwrap().cancelled);

            // Expiry and retention.
            let mut short = new.clone();
            short.expires_at = now_ms() - 1;
            short.dedup_key = None;
            let t2 = store
                .create_task(&short, &[d1], |id| format!("offer {id}"))
                .await
                .unwrap();
            assert_eq!(store.expire_tasks(now_ms()).await.unwrap(), 1);
            assert_eq!(store.task_devices(t2).await.unwrap()[0].state, Expired);
            assert_eq!(
                store
                    .delete_old_autonomous_tasks(now_ms() + 1)
                    .await
                    .unwrap(),
                3
            );
            assert!(store.tasks(10).await.unwrap().is_empty());
        })
        .await;
    }
}
