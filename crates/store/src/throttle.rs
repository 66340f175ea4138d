//! Failed logins, kept in the database so that every server process on one database
//! counts the same failures (a guesser gains nothing by spreading attempts over them),
//! and so that a restart does not reset a lockout.

use crate::{Result, Store};
use sqlx::Row;

/// Failures of one throttle key within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    /// How many.
    pub count: i64,
    /// When the oldest of them happened (ms), when there is one.
    pub oldest_ms: Option<i64>,
}

impl Store {
    /// Records one failed login under each key (`account:NAME`, `source:ADDR`).
    pub async fn record_login_failure(&self, keys: &[String], at_ms: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for k in keys {
            sqlx::query("INSERT INTO login_failures (throttle_key, at_ms) VALUES ($1, $2)")
                .bind(k)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The failures of `key` after `since_ms`.
    pub async fn login_failures(&self, key: &str, since_ms: i64) -> Result<FailureCount> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM login_failures WHERE throttle_key = $1 AND at_ms > $2",
        )
        .bind(key)
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(FailureCount {
            count: row.try_get("n")?,
            oldest_ms: row.try_get("oldest")?,
        })
    }

    /// Counts an attempt under `key` as a failure before it is known to have failed (the
    /// id `attempt` withdraws it, [`Store::withdraw_login_failure`]), and returns the
    /// failures of `key` after `since_ms`, this one included.
    ///
    /// Attempts under one key are taken one at a time (PostgreSQL: an advisory lock;
    /// SQLite has one writer), so that each count includes every attempt before it: no
    /// two parallel attempts both see room for one more.
    pub async fn reserve_login_failure(
        &self,
        key: &str,
        attempt: &str,
        at_ms: i64,
        since_ms: i64,
    ) -> Result<FailureCount> {
        let mut tx = self.pool().begin().await?;
        if self.backend() == crate::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO login_failures (throttle_key, at_ms, attempt) VALUES ($1, $2, $3)",
        )
        .bind(key)
        .bind(at_ms)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM login_failures WHERE throttle_key = $1 AND at_ms > $2",
        )
        .bind(key)
        .bind(since_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(FailureCount {
            count: row.try_get("n")?,
            oldest_ms: row.try_get("oldest")?,
        })
    }

    /// Withdraws a failure counted by [`Store::reserve_login_failure`] (the attempt
    /// succeeded, or was refused without a password check).
    pub async fn withdraw_login_failure(&self, attempt: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE attempt = $1")
            .bind(attempt)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets the failures of `key` (a successful login clears its account's).
    pub async fn clear_login_failures(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes failures at or before `before_ms` (housekeeping: they no longer count).
    pub async fn prune_login_failures(&self, before_ms: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM login_failures WHERE at_ms <= $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Notes that `account` logged in from `source_key` at `at_ms`: a source an account
    /// has used is not locked out by failures that other sources caused.
    pub async fn record_known_source(
        &self,
        account: &str,
        source_key: &str,
        at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO login_known_sources (account, source_key, last_ok_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (account, source_key) DO UPDATE SET last_ok_ms = excluded.last_ok_ms",
        )
        .bind(account)
        .bind(source_key)
        .bind(at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether `account` logged in from `source_key` after `since_ms`.
    pub async fn is_known_source(
        &self,
        account: &str,
        source_key: &str,
        since_ms: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM login_known_sources \
             WHERE account = $1 AND source_key = $2 AND last_ok_ms > $3",
        )
        .bind(account)
        .bind(source_key)
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n > 0)
    }

    /// Forgets the known sources of `account` (its deletion: a new account of that name
    /// starts with none).
    pub async fn forget_known_sources(&self, account: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_known_sources WHERE account = $1")
            .bind(account)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes known sources last used at or before `before_ms` (housekeeping).
    pub async fn prune_known_sources(&self, before_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM login_known_sources WHERE last_ok_ms <= $1")
                .bind(before_ms)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::FailureCount;
    use crate::testing::each_backend;

    #[tokio::test]
    async fn failures_count_per_key_within_the_window_and_are_cleared() {
        each_backend(|store| async move {
            let keys = ["account:alice".to_string(), "source:10.0.0.1".to_string()];
            for t in [1_000, 2_000, 3_000] {
                store.record_login_failure(&keys, t).await.unwrap();
            }
            store
                .record_login_failure(&["source:10.0.0.2".to_string()], 2_500)
                .await
                .unwrap();
            let at = |count, oldest_ms| FailureCount { count, oldest_ms };
            assert_eq!(
                store.login_failures("account:alice", 0).await.unwrap(),
                at(3, Some(1_000))
            );
            assert_eq!(
                store
                    .login_failures("source:10.0.0.1", 1_500)
                    .await
                    .unwrap(),
                at(2, Some(2_000))
            );
            assert_eq!(
                store.login_failures("account:bob", 0).await.unwrap(),
                at(0, None)
            );
            store.clear_login_failures("account:alice").await.unwrap();
            assert_eq!(
                store.login_failures("account:alice", 0).await.unwrap(),
                at(0, None)
            );
            assert_eq!(
                store
                    .login_failures("source:10.0.0.1", 0)
                    .await
                    .unwrap()
                    .count,
                3,
                "the source's failures stay"
            );
            assert_eq!(store.prune_login_failures(2_000).await.unwrap(), 2);
            assert_eq!(
                store.login_failures("source:10.0.0.1", 0).await.unwrap(),
                at(1, Some(3_000))
            );
            // Known sources: recorded, refreshed, told apart per account, forgotten.
            assert!(!store.is_known_source("alice", "10.0.0.1", 0).await.unwrap());
            store
                .record_known_source("alice", "10.0.0.1", 1_000)
                .await
                .unwrap();
            store
                .record_known_source("alice", "10.0.0.1", 5_000)
                .await
                .unwrap();
            store
                .record_known_source("bob", "10.0.0.2", 1_000)
                .await
                .unwrap();
            assert!(store
                .is_known_source("alice", "10.0.0.1", 4_000)
                .await
                .unwrap());
            assert!(!store.is_known_source("alice", "10.0.0.2", 0).await.unwrap());
            assert!(!store
                .is_known_source("bob", "10.0.0.2", 1_000)
                .await
                .unwrap());
            assert_eq!(store.prune_known_sources(1_000).await.unwrap(), 1);
            assert!(!store.is_known_source("bob", "10.0.0.2", 0).await.unwrap());
            store.forget_known_sources("alice").await.unwrap();
            assert!(!store.is_known_source("alice", "10.0.0.1", 0).await.unwrap());
        })
        .await;
    }
}
