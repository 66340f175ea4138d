//! Test support: fresh databases on both back ends, so every storage test (here and in
//! the server's tests) runs on SQLite and on PostgreSQL.

use crate::{Backend, Store};
use std::future::Future;

/// The PostgreSQL server tests use; `RIPOSTE_TEST_POSTGRES` overrides it.
pub fn postgres_url() -> String {
    std::env::var("RIPOSTE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// An empty test database; dropped with it (the PostgreSQL schema is removed by
/// [`TestDb::cleanup`], or left for inspection if the test panics).
pub struct TestDb {
    pub store: Store,
    /// `--database` URL for a server process using the same database.
    pub url: String,
    /// PostgreSQL schema, if any.
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("riposte.db").display());
                let store = Store::open(&url, None).await.expect("open sqlite");
                TestDb {
                    store,
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let schema = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
                let url = postgres_url();
                let store = Store::open(&url, Some(&schema)).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {url} is needed for these tests: {e}")
                });
                TestDb {
                    store,
                    url,
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    /// Drops the PostgreSQL schema.
    pub async fn cleanup(self) {
        if let Some(schema) = &self.schema {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(self.store.pool())
                .await;
        }
        self.store.close().await;
    }
}

/// Runs one SQL statement on `store`'s database, as a test sets up what no API does
/// (a trigger that makes a write fail).
pub async fn execute(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `test` once on SQLite and once on PostgreSQL, each with an empty database.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        test(db.store.clone()).await;
        db.cleanup().await;
    }
}

/// Creates group `G` with devices enrolled under these names; returns the group and the
/// device ids, in order.
pub async fn group_with_devices(store: &Store, names: &[&str]) -> (i64, Vec<i64>) {
    let g = store.create_group("G", None).await.expect("group");
    store
        .create_enroll_token("t", g, crate::now_ms() + 10_000, names.len() as i64, "test")
        .await
        .expect("token");
    let mut ids = Vec::new();
    for n in names {
        let d = store
            .enroll_device("t", n, "h", "fp")
            .await
            .expect("enroll")
            .expect("token accepted");
        ids.push(d.id);
    }
    (g, ids)
}

/// Makes device `id` look enrolled before certificate serials and expiry dates were kept.
pub async fn forget_cert_serial(store: &Store, id: i64) {
    sqlx::query("UPDATE devices SET cert_serial = NULL, cert_expires_ms = NULL WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .expect("forget the serial");
}

/// Deletes account `name` whatever its role, as a database from before the last
/// administrator was kept could have.
pub async fn delete_account_anyway(store: &Store, name: &str) {
    sqlx::query("DELETE FROM accounts WHERE name = $1")
        .bind(name)
        .execute(store.pool())
        .await
        .expect("delete the account");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// A store is told from a database (or schema) that holds none, and asking creates
    /// nothing there.
    #[tokio::test]
    async fn a_store_is_found_only_where_there_is_one() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let db = TestDb::new(backend).await;
            assert!(
                Store::holds_store(&db.url, db.schema.as_deref())
                    .await
                    .unwrap(),
                "{backend:?}"
            );
            db.cleanup().await;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let url = format!("sqlite://{}", path.display());
        assert!(!Store::holds_store(&url, None).await.unwrap());

        let db = TestDb::new(Backend::Postgres).await;
        let empty = format!("e_{}", hex::encode(rand::random::<[u8; 8]>()));
        assert!(!Store::holds_store(&db.url, Some(&empty)).await.unwrap());
        // Asking created nothing.
        let made: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind(&empty)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        assert_eq!(made, 0);
        assert!(Store::holds_store("mysql://x", None).await.is_err());
        // A store is opened as it is only where its schema is this program's.
        let current = Store::open_current(&db.url, db.schema.as_deref())
            .await
            .unwrap();
        current.close().await;
        sqlx::query("INSERT INTO schema_version (version) VALUES (9999)")
            .execute(db.store.pool())
            .await
            .unwrap();
        match Store::open_current(&db.url, db.schema.as_deref()).await {
            Err(crate::StoreError::Conflict(m)) => assert!(m.contains("version 9999"), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
        assert!(matches!(
            Store::open_current(&db.url, Some(&empty)).await,
            Err(crate::StoreError::NotFound(_))
        ));
        db.cleanup().await;
    }
}
