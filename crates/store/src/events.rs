//! The writes of one agent event, made in one transaction with the record that the event
//! was processed: a failure or a stop at any instant stores the event whole or not at
//! all, and the device, which sends it again until it is acknowledged, never has it
//! stored twice.

use crate::{detections, now_ms, Backend, Result, Store};
use sqlx::{Any, Transaction};

/// An agent event being stored ([`Store::begin_agent_event`]); nothing of it is kept
/// unless [`AgentEventWrites::commit`] is called.
pub struct AgentEventWrites {
    tx: Transaction<'static, Any>,
    backend: Backend,
    device_id: i64,
}

impl Store {
    /// Begins storing agent event `event_id` of device `device_id`, marked processed in
    /// the same transaction. `None` if it was stored already: a re-delivery, to
    /// acknowledge and otherwise ignore.
    ///
    /// A device's events are stored one at a time, across server processes too: on
    /// PostgreSQL the transaction holds the device's advisory lock from here to its end,
    /// so a second one (the same event from another process, or another event of the
    /// device on a second connection) waits here. Without it, two events locking the
    /// device's quarantine rows in different orders could deadlock, and PostgreSQL would
    /// abort one of them. SQLite has one writer anyway.
    pub async fn begin_agent_event(
        &self,
        device_id: i64,
        event_id: &str,
    ) -> Result<Option<AgentEventWrites>> {
        let mut tx = self.pool().begin().await?;
        self.serialise(&mut tx, device_events_lock(device_id))
            .await?;
        let marked = sqlx::query(
            "INSERT INTO processed_events (device_id, event_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(device_id)
        .bind(event_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(AgentEventWrites {
            tx,
            backend: self.backend(),
            device_id,
        }))
    }
}

/// The advisory-lock key of device `device_id`'s events: hashed with a name of its own
/// as the keys of task deduplication are, so that no device id gives the key of another
/// lock the store takes (`AUDIT_ORDER_LOCK`, `ACCOUNTS_LOCK`…) but by a 1-in-2^64 chance.
/// (A plain mix of the id into a constant would give those keys for some ids, and such a
/// device would hold the audit log's lock with each event.)
fn device_events_lock(device_id: i64) -> i64 {
    crate::tasks::lock_key(device_id, "riposte agent events")
}

impl AgentEventWrites {
    /// Stores a detection the device reported (once per id: says whether it is new).
    pub async fn insert_detection(&mut self, id: &str, record: &serde_json::Value) -> Result<bool> {
        detections::insert_detection(&mut self.tx, self.device_id, id, record).await
    }

    /// Records an action's outcome for a detection.
    pub async fn add_action_outcome(
        &mut self,
        detection_id: &str,
        action: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let device_id = self.device_id;
        detections::add_action_outcome(
            &mut self.tx,
            device_id,
            detection_id,
            action,
            outcome,
            detail,
        )
        .await
    }

    /// Records on one of the device's detections that its group action failed, in the
    /// device's words (ignored once a task exists for it, or for another device's
    /// detection).
    pub async fn set_group_action_failure(
        &mut self,
        detection_id: &str,
        error: &str,
    ) -> Result<()> {
        detections::set_group_action_failure(&mut self.tx, self.device_id, detection_id, error)
            .await
    }

    /// [`Store::upsert_quarantine`], for the device.
    pub async fn upsert_quarantine(
        &mut self,
        entry_id: &str,
        state: &str,
        record: &serde_json::Value,
    ) -> Result<()> {
        detections::upsert_quarantine(&mut self.tx, self.device_id, entry_id, state, record).await
    }

    /// [`Store::set_quarantine_allowance`], for the device.
    pub async fn set_quarantine_allowance(&mut self, sha256: &str, allowed: bool) -> Result<usize> {
        detections::set_quarantine_allowance(&mut self.tx, self.device_id, sha256, allowed).await
    }

    /// Records an alert the device raised.
    pub async fn add_alert(&mut self, code: &str, message: &str) -> Result<()> {
        detections::add_alert(&mut self.tx, self.device_id, code, message).await
    }

    /// Appends an audit entry if it can be stored ([`Store::audit`]). The entry says what
    /// the event did, so it is written with it; but one that cannot be stored does not
    /// hold the event back, which the device would otherwise send again for ever. It is
    /// written in a savepoint: on PostgreSQL a failed statement would abort the whole
    /// transaction.
    pub async fn audit_if_possible(
        &mut self,
        actor: &str,
        source: &str,
        action: &str,
        detail: &str,
    ) -> Result<()> {
        use sqlx::Acquire;
        let mut savepoint = self.tx.begin().await?;
        match crate::audit::audit(&mut savepoint, self.backend, actor, source, action, detail).await
        {
            Ok(()) => savepoint.commit().await?,
            Err(e) => {
                tracing::warn!(
                    "an audit entry of device {} was not stored: {e}",
                    self.device_id
                );
                savepoint.rollback().await?;
            }
        }
        Ok(())
    }

    /// Keeps the event's writes and its mark.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;

    /// The writes of a detection event: the detection and one action's outcome.
    async fn detection_with_outcome(writes: &mut super::AgentEventWrites, rec: &serde_json::Value) {
        assert!(writes.insert_detection("det1", rec).await.unwrap());
        writes
            .add_action_outcome("det1", "quarantine_and_delete", "done", "q1")
            .await
            .unwrap();
    }

    /// An event's writes are kept with its mark or not at all; once kept, the event is a
    /// re-delivery.
    #[tokio::test]
    async fn an_agent_event_is_stored_whole_or_not_at_all() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["d", "o"]).await;
            let (d, other) = (devices[0], devices[1]);
            let rec = serde_json::json!({"path": "/tmp/x", "threat": "EICAR"});
            let outcomes = || async { store.detection("det1").await.map(|r| r.outcomes.len()) };

            // Dropped before its commit (a failure or a stop midway): nothing stays.
            let mut writes = store.begin_agent_event(d, "e1").await.unwrap().unwrap();
            detection_with_outcome(&mut writes, &rec).await;
            drop(writes);
            assert!(store.detection("det1").await.is_err());
            assert!(!store.event_processed(d, "e1").await.unwrap());

            // Sent again: stored once, and a third delivery is ignored.
            let mut writes = store.begin_agent_event(d, "e1").await.unwrap().unwrap();
            detection_with_outcome(&mut writes, &rec).await;
            writes.commit().await.unwrap();
            assert!(store.event_processed(d, "e1").await.unwrap());
            assert_eq!(outcomes().await.unwrap(), 1);
            assert!(store.begin_agent_event(d, "e1").await.unwrap().is_none());
            assert_eq!(outcomes().await.unwrap(), 1);
            // Another device's event of the same id is its own.
            let writes = store.begin_agent_event(other, "e1").await.unwrap();
            writes.unwrap().commit().await.unwrap();
        })
        .await;
    }

    /// A group action's failure is written on a detection only by the device that
    /// reported it, and never over the task a success created; that success clears it.
    #[tokio::test]
    async fn a_group_action_failure_is_its_devices_word_and_gives_way_to_a_task() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["a", "b"]).await;
            let (a, b) = (devices[0], devices[1]);
            let rec = serde_json::json!({"path": "/tmp/x", "threat": "EICAR"});
            for id in ["det-a", "det-done"] {
                assert!(store.insert_detection(a, id, &rec).await.unwrap());
            }
            store.set_detection_task("det-done", 7).await.unwrap();
            let error = |id: &'static str| {
                let store = store.clone();
                async move { store.detection(id).await.unwrap().group_action_error }
            };

            let mut writes = store.begin_agent_event(b, "e1").await.unwrap().unwrap();
            writes
                .set_group_action_failure("det-a", "said by b")
                .await
                .unwrap();
            writes.commit().await.unwrap();
            assert_eq!(error("det-a").await, None, "another device's word");

            let mut writes = store.begin_agent_event(a, "e2").await.unwrap().unwrap();
            for id in ["det-a", "det-done"] {
                writes
                    .set_group_action_failure(id, "refused")
                    .await
                    .unwrap();
            }
            writes.commit().await.unwrap();
            assert_eq!(error("det-a").await.as_deref(), Some("refused"));
            assert_eq!(error("det-done").await, None, "over a created task");

            store.set_detection_task("det-a", 8).await.unwrap();
            let det = store.detection("det-a").await.unwrap();
            assert_eq!((det.task_id, det.group_action_error), (Some(8), None));
        })
        .await;
    }

    /// On PostgreSQL a device's events are stored one at a time, while another device's
    /// go on: two of them taking the device's quarantine rows in different orders would
    /// otherwise deadlock. (SQLite has one writer for every device.)
    #[tokio::test]
    async fn a_devices_events_are_stored_one_at_a_time() {
        use std::time::Duration;
        each_backend(|store| async move {
            if store.backend() != crate::Backend::Postgres {
                return;
            }
            let (_, devices) = crate::testing::group_with_devices(&store, &["d", "o"]).await;
            let (d, other) = (devices[0], devices[1]);
            let first = store.begin_agent_event(d, "e1").await.unwrap().unwrap();
            let second = {
                let store = store.clone();
                tokio::spawn(async move { store.begin_agent_event(d, "e2").await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !second.is_finished(),
                "the device's second event did not wait"
            );
            let others = tokio::time::timeout(
                Duration::from_secs(10),
                store.begin_agent_event(other, "e1"),
            )
            .await
            .expect("another device's event waited");
            others.unwrap().unwrap().commit().await.unwrap();
            first.commit().await.unwrap();
            let second = tokio::time::timeout(Duration::from_secs(10), second)
                .await
                .expect("the second event still waits after the first committed");
            second.unwrap().unwrap().unwrap().commit().await.unwrap();
            assert!(store.event_processed(d, "e2").await.unwrap());
        })
        .await;
    }

    /// An audit entry that cannot be stored (PostgreSQL stores no NUL) is left out, and
    /// the rest of the event is kept: on PostgreSQL the failed insert would otherwise
    /// abort the whole transaction, and the device would send the event for ever.
    #[tokio::test]
    async fn an_audit_entry_that_cannot_be_stored_does_not_hold_the_event_back() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["d"]).await;
            let d = devices[0];
            let mut writes = store.begin_agent_event(d, "e2").await.unwrap().unwrap();
            writes
                .audit_if_possible("device", "agent channel", "x", "a\0b")
                .await
                .unwrap();
            writes.add_alert("after_audit", "kept").await.unwrap();
            writes.commit().await.unwrap();
            let alerts = store.alerts(Some(d), 10).await.unwrap();
            assert_eq!(alerts.len(), 1, "{alerts:?}");
            assert_eq!(alerts[0].code, "after_audit");
            let audit = store.audit_log(10).await.unwrap();
            let stored = audit.iter().any(|a| a.action == "x");
            match store.backend() {
                crate::Backend::Sqlite => assert!(stored, "SQLite stores a NUL"),
                crate::Backend::Postgres => assert!(!stored),
            }
        })
        .await;
    }
}
