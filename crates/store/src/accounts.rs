//! Accounts (administrators and the special account) and login sessions.

use crate::{conflict, named_alike, now_ms, Result, Store, StoreError};
use riposte_model::Role;
use sqlx::any::AnyRow;
use sqlx::Row;

/// The lock key of account creations and deletions ("ripoacct" in ASCII).
const ACCOUNTS_LOCK: i64 = 0x7269_706f_6163_6374;

/// Administrator account or the special account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Admin,
    Special,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            AccountKind::Admin => "admin",
            AccountKind::Special => "special",
        }
    }
}

/// A stored account. `password_hash` is an Argon2id PHC string.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub kind: AccountKind,
    /// Meaningless for the special account.
    pub role: Role,
    pub password_hash: String,
    pub created_at: i64,
}

/// A login session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub account: AccountRow,
    pub expires_at: i64,
}

fn account(r: &AnyRow) -> Result<AccountRow> {
    let kind: String = r.try_get("kind")?;
    let role: String = r.try_get("role")?;
    Ok(AccountRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: if kind == "special" {
            AccountKind::Special
        } else {
            AccountKind::Admin
        },
        role: Role::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, name, kind, role, password_hash, created_at";

/// Every account's name, as `tx` sees them.
async fn account_names(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<Vec<String>> {
    sqlx::query("SELECT name FROM accounts")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok(r.try_get("name")?))
        .collect()
}

async fn insert_account(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    kind: AccountKind,
    role: Role,
    password_hash: &str,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO accounts (name, kind, role, password_hash, created_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(name)
    .bind(kind.as_str())
    .bind(role.as_str())
    .bind(password_hash)
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| {
        conflict(e, || match kind {
            AccountKind::Special => riposte_model::AccountError::SpecialAccountExists.to_string(),
            AccountKind::Admin => format!("an account named '{name}' already exists"),
        })
    })?;
    Ok(row.try_get("id")?)
}

impl Store {
    /// Creates an account. Refused as a [`StoreError::Conflict`]: a second special
    /// account, and a name that an account has, or one that differs from it only in
    /// case (`Admin` beside `admin` would read as one person in the audit log and in
    /// lists). The check and the write are one step, so racing requests cannot create
    /// both.
    pub async fn create_account(
        &self,
        name: &str,
        kind: AccountKind,
        role: Role,
        password_hash: &str,
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        self.serialise(&mut tx, ACCOUNTS_LOCK).await?;
        if kind == AccountKind::Admin {
            let names = account_names(&mut tx).await?;
            if let Some(other) = named_alike(name, &names) {
                return Err(StoreError::Conflict(if other == name {
                    format!("an account named '{name}' already exists")
                } else {
                    format!("an account named '{other}' exists: names may not differ only in case")
                }));
            }
        }
        let id = insert_account(&mut tx, name, kind, role, password_hash).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates an administrator while no account has the Administrator role (an empty
    /// database, or one whose administrators were all deleted); returns its name, or
    /// `None` where there is one. It is named `admin`, or `admin-2`, `admin-3`… where
    /// another account holds that name in any case. Taken one at a time, so that server
    /// processes starting together on one database create one administrator between them.
    pub async fn create_first_administrator(&self, password_hash: &str) -> Result<Option<String>> {
        let mut tx = self.pool().begin().await?;
        self.serialise(&mut tx, ACCOUNTS_LOCK).await?;
        let administrators: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE kind = 'admin' AND role = $1")
                .bind(Role::Administrator.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if administrators > 0 {
            return Ok(None);
        }
        let names = account_names(&mut tx).await?;
        let name = (1..)
            .map(|n| match n {
                1 => "admin".to_string(),
                n => format!("admin-{n}"),
            })
            .find(|candidate| named_alike(candidate, &names).is_none())
            .expect("an unbounded sequence has a name no account holds");
        insert_account(
            &mut tx,
            &name,
            AccountKind::Admin,
            Role::Administrator,
            password_hash,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(name))
    }

    /// Looks an account up by name.
    pub async fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// The special account, if it exists.
    pub async fn special_account(&self) -> Result<Option<AccountRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM accounts WHERE kind = 'special'"
        ))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(account).transpose()
    }

    /// All accounts.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(account).collect()
    }

    /// How many accounts have the Administrator role (operators and auditors, who
    /// cannot manage accounts, do not count).
    pub async fn count_admins(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE kind = 'admin' AND role = $1")
                .bind(Role::Administrator.as_str())
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Deletes an account and its sessions, unless it is the last account with the
    /// Administrator role ([`StoreError::Conflict`]): without one, nobody could manage
    /// accounts again. Deletions are taken one at a time (see `Store::serialise`), so two
    /// administrators deleting each other at once leave one of them.
    pub async fn delete_account(&self, id: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        self.serialise(&mut tx, ACCOUNTS_LOCK).await?;
        sqlx::query("DELETE FROM sessions WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let administrators =
            sqlx::query("SELECT id FROM accounts WHERE kind = 'admin' AND role = $1")
                .bind(Role::Administrator.as_str())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>("id"))
                .collect::<std::result::Result<Vec<_>, _>>()?;
        if administrators == [id] {
            return Err(StoreError::Conflict(
                "it is the last account with the Administrator role: create another \
                 administrator first"
                    .into(),
            ));
        }
        let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no account with id {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records `fingerprint` as the one of the server key `name` on this database, unless
    /// another process recorded one first; returns the one recorded (so a process whose
    /// key differs can refuse to start).
    pub async fn claim_server_key(&self, name: &str, fingerprint: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO server_keys (name, fingerprint) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fingerprint)
        .execute(self.pool())
        .await?;
        let row = sqlx::query("SELECT fingerprint FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("fingerprint")?)
    }

    /// The fingerprint recorded for the server key `name` on this database, if any.
    pub async fn server_key(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT fingerprint FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("fingerprint")).transpose()?)
    }

    /// Records a session by the hash of its token.
    ///
    /// Opened only while the account's password hash is still `password_hash`, the one
    /// the login checked; returns whether it was. A password changed between the check
    /// and this write (which ends every session) must not let the old one open a new
    /// session after it.
    pub async fn create_session(
        &self,
        token_hash: &str,
        account_id: i64,
        password_hash: &str,
        expires_at: i64,
    ) -> Result<bool> {
        // On PostgreSQL the account row is locked (`FOR SHARE`): a change in flight holds
        // it from its update to its commit, so this waits for the change, then sees the
        // new hash and opens nothing; a session opened first is committed before the
        // change's update can start, and its deletion of the sessions then sees it.
        // Without the lock, READ COMMITTED let this insert read the old hash while the
        // change, not yet committed, deleted the sessions without seeing it. (SQLite takes
        // one writer at a time.)
        let sql = match self.backend() {
            crate::Backend::Postgres => {
                "INSERT INTO sessions (token_hash, account_id, created_at, expires_at)
                 SELECT $1, id, $3, $4 FROM accounts WHERE id = $2 AND password_hash = $5
                 FOR SHARE"
            }
            crate::Backend::Sqlite => {
                "INSERT INTO sessions (token_hash, account_id, created_at, expires_at)
                 SELECT $1, id, $3, $4 FROM accounts WHERE id = $2 AND password_hash = $5"
            }
        };
        let done = sqlx::query(sql)
            .bind(token_hash)
            .bind(account_id)
            .bind(now_ms())
            .bind(expires_at)
            .bind(password_hash)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces an administrator account's password hash and ends all its sessions, in
    /// one transaction; returns how many sessions ended, or `None` where the account is
    /// gone, or (with `expected_hash`) its hash is no longer that one: a change made
    /// knowing the current password must not undo another change made meanwhile.
    pub async fn set_account_password(
        &self,
        id: i64,
        expected_hash: Option<&str>,
        new_hash: &str,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool().begin().await?;
        let changed = match expected_hash {
            Some(expected) => {
                sqlx::query(
                    "UPDATE accounts SET password_hash = $1
                     WHERE id = $2 AND kind = 'admin' AND password_hash = $3",
                )
                .bind(new_hash)
                .bind(id)
                .bind(expected)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE accounts SET password_hash = $1 WHERE id = $2 AND kind = 'admin'",
                )
                .bind(new_hash)
                .bind(id)
                .execute(&mut *tx)
                .await?
            }
        };
        if changed.rows_affected() == 0 {
            return Ok(None);
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Some(ended))
    }

    /// The live session with this token hash.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT a.id, a.name, a.kind, a.role, a.password_hash, a.created_at, s.expires_at
             FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(SessionRow {
                account: account(&r)?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Deletes sessions that expired before `now`, and with them (cascade) their staged
    /// console edits, which may hold a sealed password. Returns how many.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Ends a session.
    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

impl Store {
    /// A console session's staged policy edit for a group (sealed by the caller: it may
    /// hold a password), kept in the database so that any server process can save it.
    pub async fn console_draft(&self, session_hash: &str, group_id: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT sealed FROM console_drafts WHERE session_hash = $1 AND group_id = $2",
        )
        .bind(session_hash)
        .bind(group_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("sealed")?),
            None => None,
        })
    }

    /// Stages (or replaces) a session's edit for a group.
    pub async fn put_console_draft(
        &self,
        session_hash: &str,
        group_id: i64,
        sealed: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO console_drafts (session_hash, group_id, sealed, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_hash, group_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(session_hash)
        .bind(group_id)
        .bind(sealed)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a session's edit for a group.
    pub async fn delete_console_draft(&self, session_hash: &str, group_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM console_drafts WHERE session_hash = $1 AND group_id = $2")
            .bind(session_hash)
            .bind(group_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::AccountKind;
    use crate::testing::each_backend;
    use crate::{now_ms, StoreError};
    use riposte_model::Role;

    #[tokio::test]
    async fn expired_sessions_go_with_their_drafts() {
        each_backend(|store| async move {
            let a = store
                .create_account("admin", AccountKind::Admin, Role::Administrator, "h")
                .await
                .unwrap();
            let g = store.create_group("G", None).await.unwrap();
            let now = now_ms();
            assert!(store.create_session("old", a, "h", now - 1).await.unwrap());
            assert!(store
                .create_session("live", a, "h", now + 60_000)
                .await
                .unwrap());
            store
                .put_console_draft("old", g, "sealed-old")
                .await
                .unwrap();
            store
                .put_console_draft("live", g, "sealed-live")
                .await
                .unwrap();
            assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 1);
            assert!(store.console_draft("old", g).await.unwrap().is_none());
            assert_eq!(
                store.console_draft("live", g).await.unwrap().as_deref(),
                Some("sealed-live")
            );
            assert!(store.session("live").await.unwrap().is_some());
        })
        .await;
    }

    /// Two administrators deleting each other at once: one deletion is refused, on both
    /// back ends, and an operator or auditor does not count as an administrator.
    #[tokio::test]
    async fn the_last_administrator_is_never_deleted() {
        each_backend(|store| async move {
            let op = store
                .create_account("op", AccountKind::Admin, Role::Operator, "h")
                .await
                .unwrap();
            for round in 0..5 {
                let admin = |name: String| {
                    let store = &store;
                    async move {
                        store
                            .create_account(&name, AccountKind::Admin, Role::Administrator, "h")
                            .await
                            .unwrap()
                    }
                };
                let a = admin(format!("a{round}")).await;
                let b = admin(format!("b{round}")).await;
                let (x, y) = tokio::join!(store.delete_account(a), store.delete_account(b));
                let last = |r: &crate::Result<()>| {
                    matches!(r, Err(StoreError::Conflict(m))
                        if m.contains("last account with the Administrator role"))
                };
                let refused = [&x, &y].into_iter().filter(|r| last(r)).count();
                assert_eq!(refused, 1, "round {round}: {x:?} {y:?}");
                assert!(x.is_ok() || y.is_ok(), "{x:?} {y:?}");
                assert_eq!(store.count_admins().await.unwrap(), 1);
                let survivor = if x.is_ok() { b } else { a };
                assert!(matches!(
                    store.delete_account(survivor).await,
                    Err(StoreError::Conflict(_))
                ));
                // Gone behind the store's back, so that the next round starts with two.
                sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(survivor)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            store.delete_account(op).await.unwrap();
        })
        .await;
    }

    /// Names differing only in case, asked for at once, and two starts at once with no
    /// administrator: one of each, on both back ends.
    #[tokio::test]
    async fn racing_creations_make_one_account() {
        each_backend(|store| async move {
            let op = store
                .create_account("Admin", AccountKind::Admin, Role::Operator, "h")
                .await
                .unwrap();
            for round in 0..5 {
                let create = |name: String| {
                    let store = &store;
                    async move {
                        store
                            .create_account(&name, AccountKind::Admin, Role::Auditor, "h")
                            .await
                    }
                };
                let (x, y) = tokio::join!(create(format!("bob{round}")), create(format!("BOB{round}")));
                assert_eq!(
                    [&x, &y].iter().filter(|r| r.is_ok()).count(),
                    1,
                    "round {round}: {x:?} {y:?}"
                );
                let refused = if x.is_ok() { &y } else { &x };
                assert!(
                    matches!(refused, Err(StoreError::Conflict(m)) if m.contains("differ only in case")),
                    "{refused:?}"
                );
            }
            // `Admin` is an operator's: the first administrator is `admin-2`, made once
            // however many starts ask at once.
            let (x, y) = tokio::join!(
                store.create_first_administrator("h"),
                store.create_first_administrator("h")
            );
            let made: Vec<String> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
            assert_eq!(made, ["admin-2"]);
            assert_eq!(store.count_admins().await.unwrap(), 1);
            assert_eq!(store.create_first_administrator("h").await.unwrap(), None);
            store.delete_account(op).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn accounts_and_sessions() {
        each_backend(|store| async move {
            let admin = store
                .create_account("admin", AccountKind::Admin, Role::Administrator, "h1")
                .await
                .unwrap();
            let special = store
                .create_account(
                    "riposte-autonomous",
                    AccountKind::Special,
                    Role::Auditor,
                    "h2",
                )
                .await
                .unwrap();
            // There can be only one special account, whatever its name.
            let second = store
                .create_account("other", AccountKind::Special, Role::Auditor, "h3")
                .await;
            match second {
                Err(StoreError::Conflict(m)) => assert!(m.contains("only one"), "{m}"),
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert_eq!(store.count_admins().await.unwrap(), 1);
            assert_eq!(store.special_account().await.unwrap().unwrap().id, special);

            assert!(store
                .create_session("t1", admin, "h1", now_ms() + 60_000)
                .await
                .unwrap());
            assert!(store
                .create_session("t2", admin, "h1", now_ms() - 1)
                .await
                .unwrap());
            assert_eq!(
                store.session("t1").await.unwrap().unwrap().account.name,
                "admin"
            );
            assert!(
                store.session("t2").await.unwrap().is_none(),
                "expired session"
            );
            // Console drafts: per session and group, replaced in place, gone with the session.
            let g = store.create_group("D", None).await.unwrap();
            store.put_console_draft("t1", g, "sealed-1").await.unwrap();
            store.put_console_draft("t1", g, "sealed-2").await.unwrap();
            assert_eq!(
                store.console_draft("t1", g).await.unwrap().as_deref(),
                Some("sealed-2")
            );
            assert_eq!(store.console_draft("t2", g).await.unwrap(), None);
            store.delete_console_draft("t1", g).await.unwrap();
            assert_eq!(store.console_draft("t1", g).await.unwrap(), None);
            store.put_console_draft("t1", g, "sealed-3").await.unwrap();
            store.delete_session("t1").await.unwrap();
            assert_eq!(store.console_draft("t1", g).await.unwrap(), None);
            assert!(store
                .create_session("t1", admin, "h1", now_ms() + 60_000)
                .await
                .unwrap());

            store.delete_account(special).await.unwrap();
            assert!(store.special_account().await.unwrap().is_none());
            assert!(matches!(
                store.delete_account(special).await,
                Err(StoreError::NotFound(_))
            ));
            // Another administrator first: the last one is never deleted.
            store
                .create_account("admin2", AccountKind::Admin, Role::Administrator, "h4")
                .await
                .unwrap();
            store.delete_account(admin).await.unwrap();
            assert!(store.session("t1").await.unwrap().is_none());
        })
        .await;
    }

    /// A password change ends the account's sessions (and their drafts), and no login
    /// checked against the old password opens one after it; a change made knowing the
    /// old hash does not undo one made meanwhile; the special account's is never set.
    #[tokio::test]
    async fn a_password_change_ends_sessions_and_is_not_undone() {
        each_backend(|store| async move {
            let a = store
                .create_account("ops", AccountKind::Admin, Role::Operator, "old")
                .await
                .unwrap();
            let other = store
                .create_account("aud", AccountKind::Admin, Role::Auditor, "keep")
                .await
                .unwrap();
            let special = store
                .create_account(
                    "riposte-autonomous",
                    AccountKind::Special,
                    Role::Auditor,
                    "sp",
                )
                .await
                .unwrap();
            let g = store.create_group("G", None).await.unwrap();
            let later = now_ms() + 60_000;
            assert!(store.create_session("s1", a, "old", later).await.unwrap());
            assert!(store.create_session("s2", a, "old", later).await.unwrap());
            assert!(store
                .create_session("o1", other, "keep", later)
                .await
                .unwrap());
            store.put_console_draft("s1", g, "sealed").await.unwrap();

            assert_eq!(
                store
                    .set_account_password(a, Some("old"), "new")
                    .await
                    .unwrap(),
                Some(2)
            );
            assert!(store.session("s1").await.unwrap().is_none());
            assert!(store.session("s2").await.unwrap().is_none());
            assert_eq!(store.console_draft("s1", g).await.unwrap(), None);
            assert!(
                store.session("o1").await.unwrap().is_some(),
                "another account's"
            );
            // A login that checked the old password, landing after the change.
            assert!(!store.create_session("late", a, "old", later).await.unwrap());
            assert!(store.session("late").await.unwrap().is_none());
            assert!(store.create_session("s3", a, "new", later).await.unwrap());
            // Knowing "old" is not enough to undo the change.
            assert_eq!(
                store
                    .set_account_password(a, Some("old"), "again")
                    .await
                    .unwrap(),
                None
            );
            assert!(store.session("s3").await.unwrap().is_some());
            // A reset needs no old hash.
            assert_eq!(
                store.set_account_password(a, None, "reset").await.unwrap(),
                Some(1)
            );
            let row = store.account_by_name("ops").await.unwrap().unwrap();
            assert_eq!(row.password_hash, "reset");
            // Not the special account's, and not an account that is gone.
            assert_eq!(
                store
                    .set_account_password(special, None, "x")
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                store
                    .special_account()
                    .await
                    .unwrap()
                    .unwrap()
                    .password_hash,
                "sp"
            );
            assert_eq!(
                store.set_account_password(9999, None, "x").await.unwrap(),
                None
            );
        })
        .await;
    }

    /// Logins racing a password change, on every connection of the pool: a session
    /// opened with the old password either is ended by the change or is not opened at
    /// all. None survives it.
    #[tokio::test]
    async fn no_session_opened_with_the_old_password_survives_its_change() {
        each_backend(|store| async move {
            let a = store
                .create_account("racer", AccountKind::Admin, Role::Operator, "old")
                .await
                .unwrap();
            let later = now_ms() + 60_000;
            for round in 0..30 {
                let login = |worker: u32| {
                    let store = &store;
                    async move {
                        let mut opened = Vec::new();
                        for n in 0.. {
                            let token = format!("r{round}-w{worker}-{n}");
                            if !store.create_session(&token, a, "old", later).await.unwrap() {
                                break;
                            }
                            opened.push(token);
                        }
                        opened
                    }
                };
                let change = async {
                    tokio::task::yield_now().await;
                    store.set_account_password(a, None, "new").await.unwrap()
                };
                let (l0, l1, l2, l3, l4, l5, ended) = tokio::join!(
                    login(0),
                    login(1),
                    login(2),
                    login(3),
                    login(4),
                    login(5),
                    change
                );
                assert!(ended.is_some());
                for token in [l0, l1, l2, l3, l4, l5].iter().flatten() {
                    assert!(
                        store.session(token).await.unwrap().is_none(),
                        "round {round}: session {token} outlived the change"
                    );
                }
                store.set_account_password(a, None, "old").await.unwrap();
            }
        })
        .await;
    }
}
