//! The audit log: who did what, when, from where.

use crate::{now_ms, Backend, Result, Store};
use sqlx::{AnyConnection, Row};

/// The advisory lock that keeps audit ids committed in order on PostgreSQL ("ripoaudt").
pub(crate) const AUDIT_ORDER_LOCK: i64 = 0x7269_706f_6175_6474;

/// One audit entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub detail: String,
}

impl Store {
    /// Appends an entry. `detail` must never contain a secret.
    ///
    /// On PostgreSQL, entries become visible in the order of their ids: each insert holds
    /// an advisory lock from before its id is drawn until it commits. Without it, two
    /// server processes could commit ids 95 and 96 in the other order, and a reader that
    /// saw 96 and then asks for what is newer would never see 95. (SQLite has one writer.)
    pub async fn audit(&self, actor: &str, source: &str, action: &str, detail: &str) -> Result<()> {
        let conn = &mut *self.pool().acquire().await?;
        audit(conn, self.backend(), actor, source, action, detail).await
    }

    /// The newest entries first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>> {
        self.audit_page(limit, None).await
    }

    /// At most `limit` entries older than the entry with id `before` (all when `None`),
    /// newest first. Paging by id, not by offset, so that entries written meanwhile do
    /// not shift the pages.
    pub async fn audit_page(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, source, action, detail FROM audit WHERE id < $1
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    source: r.try_get("source")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}

/// [`Store::audit`] on one connection: in an agent event's transaction, the
/// advisory lock is held to that transaction's commit.
pub(crate) async fn audit(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &str,
    source: &str,
    action: &str,
    detail: &str,
) -> Result<()> {
    let sql = match backend {
        // One statement, so one round trip: the lock is taken when the insert pulls
        // the CTE's row, before the row's id is drawn, and is held to the commit.
        crate::Backend::Postgres => {
            "WITH ordered AS (SELECT pg_advisory_xact_lock($6))
                 INSERT INTO audit (at, actor, source, action, detail)
                 SELECT $1, $2, $3, $4, $5 FROM ordered"
        }
        crate::Backend::Sqlite => {
            "INSERT INTO audit (at, actor, source, action, detail) VALUES ($1, $2, $3, $4, $5)"
        }
    };
    let query = sqlx::query(sql)
        .bind(now_ms())
        .bind(actor)
        .bind(source)
        .bind(action)
        .bind(detail);
    let query = match backend {
        crate::Backend::Postgres => query.bind(AUDIT_ORDER_LOCK),
        crate::Backend::Sqlite => query,
    };
    query.execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;
    use crate::Backend;
    use std::time::Duration;

    /// The newest entries' actions, newest first.
    async fn actions(store: &crate::Store) -> Vec<String> {
        let rows = store.audit_log(10).await.unwrap();
        rows.into_iter().map(|r| r.action).collect()
    }

    /// On PostgreSQL, an entry whose id is drawn but not yet committed holds back every
    /// later entry: a reader never sees an id above one still to appear.
    #[tokio::test]
    async fn audit_ids_become_visible_in_order_on_postgres() {
        let db = TestDb::new(Backend::Postgres).await;
        let store = db.store.clone();
        store.audit("t", "test", "first", "").await.unwrap();

        // Another server process's insert, paused between drawing its id and committing.
        let mut slow = store.pool().begin().await.unwrap();
        sqlx::query(
            "WITH ordered AS (SELECT pg_advisory_xact_lock($1))
             INSERT INTO audit (at, actor, source, action, detail)
             SELECT 0, 't', 'test', 'slow', '' FROM ordered",
        )
        .bind(AUDIT_ORDER_LOCK)
        .execute(&mut *slow)
        .await
        .unwrap();

        let fast = tokio::spawn({
            let store = store.clone();
            async move { store.audit("t", "test", "fast", "").await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = actions(&store).await;
        assert_eq!(
            seen,
            ["first"],
            "nothing newer shows while 'slow' is pending"
        );
        assert!(
            !fast.is_finished(),
            "the later insert waits for the earlier one"
        );

        slow.commit().await.unwrap();
        fast.await.unwrap().unwrap();
        let seen = actions(&store).await;
        assert_eq!(seen, ["fast", "slow", "first"], "ids in commit order");
        db.cleanup().await;
    }
}
