//! Storage for the Riposte server: one API over SQLite and PostgreSQL.
//!
//! Both back ends run the same migrations and the same queries through sqlx's `Any`
//! driver. To stay portable, the schema uses only `BIGINT` and `TEXT` columns (times are
//! Unix milliseconds, flags are 0/1, structured values are JSON text), and queries use
//! `$N` placeholders, which both back ends accept. The only dialect difference, the
//! auto-incrementing key, is substituted when a migration runs.
//!
//! SQLite is the embedded default (a file in the data directory, WAL); PostgreSQL serves a
//! fleet that outgrows one server.

mod accounts;
mod audit;
mod detections;
mod devices;
mod events;
mod groups;
mod outbox;
mod tasks;
mod throttle;

pub use accounts::{AccountKind, AccountRow, SessionRow};
pub use audit::AuditRow;
pub use detections::{ActionOutcome, AlertRow, DetectionRow, QuarantineRow};
pub use devices::{
    DeviceRow, EnrollFailure, EnrollTokenRow, IssuedCertificate, RevokedCertificate, TokenRefusal,
};
pub use events::AgentEventWrites;
pub use outbox::OutboxRow;
pub use outbox::{KIND_QUARANTINE, KIND_SETTINGS, KIND_TASK_CANCEL, KIND_TASK_OFFER};
pub use tasks::{NewTask, TaskDeviceRow, TaskRow};
pub use throttle::FailureCount;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    BadUrl(String),
}

/// PostgreSQL's SQLSTATE for text it cannot store, such as a NUL character.
const POSTGRES_CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

impl StoreError {
    /// Whether the database refused a write because a row it refers to does not exist
    /// (deleted meanwhile): nothing of that write was stored.
    pub fn refers_to_missing_row(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
    }

    /// Whether the database refused text it cannot store: PostgreSQL stores no NUL
    /// character, and says so only as an error (SQLite stores it, and a name holding
    /// one is then simply not found).
    pub fn is_unstorable_text(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some(POSTGRES_CHARACTER_NOT_IN_REPERTOIRE)
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A PostgreSQL schema name, which is written into SQL text: letters, digits and `_`.
fn checked_schema(schema: Option<&str>) -> Result<Option<&str>> {
    match schema {
        Some(s) if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Err(StoreError::BadUrl(format!("bad schema name {s}")))
        }
        other => Ok(other),
    }
}

impl Backend {
    /// The back end a database URL names.
    fn of_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// Connections in the pool. SQLite: one. SQLite serialises writers anyway, and a
    /// deferred transaction that reads and then writes fails at once ("database is
    /// locked") when another connection wrote in between, which busy_timeout does not
    /// cover.
    fn pool_size(self) -> u32 {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres => 10,
        }
    }
}

/// The server's storage.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for the wake-up listener.
    url: Option<String>,
}

/// The `NOTIFY` channel on which server processes sharing a database wake each other's
/// agent connections.
pub const WAKE_CHANNEL: &str = "riposte_wake";

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One migration: its SQL, with `{ID}` standing for the auto-incrementing primary key.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_login_failures.sql"),
    include_str!("../migrations/0003_console_drafts.sql"),
    include_str!("../migrations/0004_device_connection.sql"),
    include_str!("../migrations/0005_login_known_sources.sql"),
    include_str!("../migrations/0006_certificate_revocation.sql"),
    include_str!("../migrations/0007_login_attempts.sql"),
    include_str!("../migrations/0008_server_processes.sql"),
    include_str!("../migrations/0009_certificate_renewal.sql"),
    include_str!("../migrations/0010_alert_lookup.sql"),
    include_str!("../migrations/0011_server_keys.sql"),
];

impl Store {
    /// Whether the database at `url` (in `schema`, for PostgreSQL) holds a Riposte
    /// store, without creating or changing anything: for tools that must work on an
    /// existing server's data and not make a new one where a URL was mistyped.
    pub async fn holds_store(url: &str, schema: Option<&str>) -> Result<bool> {
        sqlx::any::install_default_drivers();
        let (sql, table) = match (Backend::of_url(url)?, checked_schema(schema)?) {
            (Backend::Sqlite, _) => (
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
                "schema_version".to_string(),
            ),
            (Backend::Postgres, schema) => (
                "SELECT COUNT(*) AS n FROM (SELECT to_regclass($1) AS t) r WHERE r.t IS NOT NULL",
                schema.map_or("schema_version".to_string(), |s| {
                    format!("{s}.schema_version")
                }),
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let found: i64 = sqlx::query(sql)
            .bind(table)
            .fetch_one(&pool)
            .await?
            .try_get("n")?;
        pool.close().await;
        Ok(found > 0)
    }

    /// Opens (creating if needed) the database at `url` and runs pending migrations.
    ///
    /// `schema`, for PostgreSQL only, puts every table in that schema (created if missing);
    /// tests use it to run in parallel on one database.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Store> {
        let store = Store::connect(url, schema).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the store at `url` as it is, for a tool working beside the server that uses
    /// it (the offline password reset): nothing is created or migrated, and a store whose
    /// schema is not the one this program knows is refused, as the server that uses it
    /// would not expect the changes a newer program makes, nor this one an older schema.
    pub async fn open_current(url: &str, schema: Option<&str>) -> Result<Store> {
        if !Store::holds_store(url, schema).await? {
            return Err(StoreError::NotFound(
                "the database holds no Riposte store".into(),
            ));
        }
        let store = Store::connect(url, schema).await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&store.pool)
            .await?
            .try_get("v")?;
        let current = current.unwrap_or(0);
        if current != MIGRATIONS.len() as i64 {
            store.close().await;
            return Err(StoreError::Conflict(format!(
                "the database's schema is version {current} and this riposte's is {}: use the \
                 riposte the server runs",
                MIGRATIONS.len()
            )));
        }
        Ok(store)
    }

    async fn connect(url: &str, schema: Option<&str>) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let schema = checked_schema(schema)?;
        if let (Backend::Postgres, Some(schema)) = (backend, schema) {
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await?;
            pool.close().await;
        }
        let schema = schema.map(str::to_string);
        let mut options = AnyPoolOptions::new().max_connections(backend.pool_size());
        options = options.after_connect(move |conn, _meta| {
            let schema = schema.clone();
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                    }
                    Backend::Postgres => {
                        if let Some(s) = schema {
                            conn.execute(format!("SET search_path TO {s}").as_str())
                                .await?;
                        }
                    }
                }
                Ok(())
            })
        });
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let pool = options.connect(&url).await?;
        Ok(Store {
            pool,
            backend,
            url: (backend == Backend::Postgres).then(|| url.clone()),
        })
    }

    /// Opens the SQLite database file in `dir`.
    pub async fn open_sqlite_in(dir: &std::path::Path) -> Result<Store> {
        let path = dir.join("riposte.db");
        Store::open(&format!("sqlite://{}", path.display()), None).await
    }

    /// Which back end this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Holds the lock `key` for the rest of `tx`, so that a check and the write it
    /// guards are one step, across server processes too. PostgreSQL: a
    /// transaction-scoped advisory lock. SQLite: its one write lock, taken at once by a
    /// write that changes nothing (any table would do: the lock is the database's); a
    /// transaction that read first could not take it later without failing as busy.
    pub(crate) async fn serialise(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: i64,
    ) -> Result<()> {
        match self.backend {
            Backend::Postgres => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut **tx)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::query("UPDATE groups SET id = id WHERE 1 = 0")
                    .execute(&mut **tx)
                    .await?
            }
        };
        Ok(())
    }

    /// How many connections the store's pool holds.
    pub fn pool_size(&self) -> u32 {
        self.backend.pool_size()
    }

    async fn migrate(&self) -> Result<()> {
        let id = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        self.pool
            .execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let mut tx = self.pool.begin().await?;
        // Serialise concurrent server processes starting on one PostgreSQL database.
        if self.backend == Backend::Postgres {
            tx.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                .await?;
        }
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        let current = current.unwrap_or(0) as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let sql = sql.replace("{ID}", id);
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                tx.execute(stmt).await?;
            }
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Tells other server processes on this PostgreSQL database that these devices have
    /// new outbox messages (a no-op on SQLite, which one process owns).
    pub async fn notify_devices(&self, device_ids: &[i64]) -> Result<()> {
        if self.backend != Backend::Postgres || device_ids.is_empty() {
            return Ok(());
        }
        // NOTIFY payloads are limited to 8000 bytes.
        let mut chunk = String::new();
        for id in device_ids {
            if chunk.len() > 7000 {
                self.notify_chunk(&chunk).await?;
                chunk.clear();
            }
            if !chunk.is_empty() {
                chunk.push(',');
            }
            chunk.push_str(&id.to_string());
        }
        self.notify_chunk(&chunk).await
    }

    async fn notify_chunk(&self, payload: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tells every server process on this database (PostgreSQL only) that a device was
    /// revoked, so that whichever holds its connection closes it.
    pub async fn notify_kick(&self, device_id: i64) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        self.notify_chunk(&format!("{KICK_PREFIX}{device_id}"))
            .await
    }

    /// Listens for wake-ups and kicks from other server processes (PostgreSQL only) and
    /// passes each on, until the returned task is aborted. Reconnects after errors.
    pub fn spawn_wake_listener(
        &self,
        on: impl Fn(Signal) + Send + Sync + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.url.clone()?;
        Some(tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                    l.listen(WAKE_CHANNEL).await?;
                    loop {
                        let n = l.recv().await?;
                        if let Some(id) = n.payload().strip_prefix(KICK_PREFIX) {
                            if let Ok(id) = id.parse::<i64>() {
                                on(Signal::Kick(id));
                            }
                            continue;
                        }
                        for id in n.payload().split(',').filter_map(|x| x.parse::<i64>().ok()) {
                            on(Signal::Wake(id));
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listener.await {
                    tracing::warn!("wake-up listener: {e}; reconnecting");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }))
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// What another server process asks of this one about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Something was queued for it: deliver.
    Wake(i64),
    /// It was revoked: close its connection.
    Kick(i64),
}

const KICK_PREFIX: &str = "kick:";

/// Maps a unique-constraint violation to a `Conflict` with `message`.
/// The first of `names` that `name` equals or differs from only in case: names that
/// people type and read (groups, accounts) must not be told apart by case alone.
pub(crate) fn named_alike(name: &str, names: &[String]) -> Option<String> {
    let folded = name.to_lowercase();
    names.iter().find(|n| n.to_lowercase() == folded).cloned()
}

pub(crate) fn conflict(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(message());
        }
    }
    StoreError::Database(e)
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub mod testing;
