//! The audit log: who did what, when, from where.

use crate::{now_ms, Result, Store};
use sqlx::Row;

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
    pub async fn audit(&self, actor: &str, source: &str, action: &str, detail: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, source, action, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(source)
        .bind(action)
        .bind(detail)
        .execute(self.pool())
        .await?;
        Ok(())
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
