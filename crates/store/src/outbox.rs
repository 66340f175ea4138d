//! Per-device outboxes: every message to a device is stored here first, with a per-device
//! sequence number, and only then pushed. After a reconnect the agent names the last number
//! it applied and delivery resumes there, so nothing is lost to a crash or an offline agent.

use crate::{now_ms, Result, Store};
use sqlx::{AnyConnection, Row};

/// A queued message.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub kind: String,
    pub ref_id: Option<i64>,
    pub payload: String,
}

/// The kind of outbox message that replaces earlier unacknowledged ones of the same kind.
pub const KIND_SETTINGS: &str = "settings";
pub const KIND_TASK_OFFER: &str = "task_offer";
pub const KIND_TASK_CANCEL: &str = "task_cancel";
pub const KIND_QUARANTINE: &str = "quarantine";

/// Queues one message on an open connection or transaction; returns its sequence number.
pub(crate) async fn enqueue_in(
    conn: &mut AnyConnection,
    device_id: i64,
    kind: &str,
    ref_id: Option<i64>,
    payload: &str,
) -> Result<i64> {
    if kind == KIND_SETTINGS {
        // Only the newest settings matter; an agent that was offline gets just those.
        sqlx::query("DELETE FROM outbox WHERE device_id = $1 AND kind = $2")
            .bind(device_id)
            .bind(kind)
            .execute(&mut *conn)
            .await?;
    }
    let row =
        sqlx::query("UPDATE devices SET next_seq = next_seq + 1 WHERE id = $1 RETURNING next_seq")
            .bind(device_id)
            .fetch_one(&mut *conn)
            .await?;
    let seq: i64 = row.try_get("next_seq")?;
    sqlx::query(
        "INSERT INTO outbox (device_id, seq, kind, ref_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(device_id)
    .bind(seq)
    .bind(kind)
    .bind(ref_id)
    .bind(payload)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}

impl Store {
    /// Queues one message for a device.
    pub async fn enqueue(
        &self,
        device_id: i64,
        kind: &str,
        ref_id: Option<i64>,
        payload: &str,
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let seq = enqueue_in(&mut tx, device_id, kind, ref_id, payload).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Messages for a device with a sequence number above `after`, oldest first.
    pub async fn outbox_after(
        &self,
        device_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT seq, kind, ref_id, payload FROM outbox WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(device_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    ref_id: r.try_get("ref_id")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }

    /// The agent applied everything up to `seq`: drop it from the outbox. Returns the task
    /// ids whose offers were among what it acknowledged.
    pub async fn ack_outbox(&self, device_id: i64, seq: i64) -> Result<Vec<i64>> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "SELECT ref_id FROM outbox WHERE device_id = $1 AND seq <= $2 AND kind = $3 AND ref_id IS NOT NULL",
        )
        .bind(device_id)
        .bind(seq)
        .bind(KIND_TASK_OFFER)
        .fetch_all(&mut *tx)
        .await?;
        let tasks = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("ref_id"))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM outbox WHERE device_id = $1 AND seq <= $2")
            .bind(device_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE devices SET acked_seq = $1 WHERE id = $2 AND acked_seq < $1")
            .bind(seq)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;

    #[tokio::test]
    async fn outbox_orders_coalesces_and_acks() {
        each_backend(|store| async move {
            let (_, devices) = crate::testing::group_with_devices(&store, &["d", "e"]).await;
            let [d, e] = devices[..] else { unreachable!() };
            let s1 = store.enqueue(d, KIND_SETTINGS, None, "s1").await.unwrap();
            let t1 = store
                .enqueue(d, KIND_TASK_OFFER, Some(42), "t1")
                .await
                .unwrap();
            let s2 = store.enqueue(d, KIND_SETTINGS, None, "s2").await.unwrap();
            assert!(s1 < t1 && t1 < s2);
            store
                .enqueue(e, KIND_SETTINGS, None, "other device")
                .await
                .unwrap();
            let rows = store.outbox_after(d, 0, 100).await.unwrap();
            let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
            assert_eq!(
                payloads,
                vec!["t1", "s2"],
                "older settings replaced by newer"
            );
            assert_eq!(store.outbox_after(d, t1, 100).await.unwrap().len(), 1);
            assert_eq!(store.ack_outbox(d, t1).await.unwrap(), vec![42]);
            let rows = store.outbox_after(d, 0, 100).await.unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].seq, s2);
            assert_eq!(store.outbox_after(e, 0, 100).await.unwrap().len(), 1);
        })
        .await;
    }
}
