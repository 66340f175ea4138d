//! Devices and enrollment tokens.

use crate::{get_json, now_ms, to_json, Result, Store, StoreError};
use riposte_model::LocalSettings;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A managed device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub id: i64,
    pub name: String,
    pub hostname: String,
    pub group_id: i64,
    /// SHA-256 of the device's client certificate (DER), hex.
    pub cert_fingerprint: String,
    pub enrolled_at: i64,
    pub revoked: bool,
    pub last_seen: i64,
    pub local_settings: LocalSettings,
    /// The server process whose channel the device is connected to, as that process
    /// names itself; `None` once it disconnected. A process that died leaves its name
    /// behind: read it together with `last_seen`, which a live connection keeps fresh.
    pub connected_via: Option<String>,
    /// A renewed certificate the server signed for the device (SHA-256 of its DER, hex)
    /// that the device has not connected with yet. It takes the current one's place when
    /// it does ([`Store::promote_renewed_certificate`]).
    #[serde(skip)]
    pub next_cert_fingerprint: Option<String>,
    /// When that renewed certificate was issued (Unix milliseconds).
    #[serde(skip)]
    pub next_cert_offered_ms: Option<i64>,
    /// When the device's certificate stops being valid (Unix milliseconds); `None` for a
    /// device enrolled before this was kept that has not connected since.
    pub cert_expires_ms: Option<i64>,
}

/// An enrollment token (only its hash is stored).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnrollTokenRow {
    pub id: i64,
    pub group_id: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses_left: i64,
    pub created_by: String,
    pub created_at: i64,
}

/// Why enrollment token `token_hash` is refused at `now`, read on `conn`; `None` if it
/// is usable.
async fn token_refusal(
    conn: &mut sqlx::AnyConnection,
    token_hash: &str,
    now: i64,
) -> Result<Option<TokenRefusal>> {
    let row = sqlx::query("SELECT expires_at, uses_left FROM enroll_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        None => Some(TokenRefusal::Unknown),
        Some(r) if r.try_get::<i64, _>("expires_at")? <= now => Some(TokenRefusal::Expired),
        Some(r) if r.try_get::<i64, _>("uses_left")? <= 0 => Some(TokenRefusal::UsedUp),
        Some(_) => None,
    })
}

/// Why an enrollment token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("unknown enrollment token; ask an administrator for a valid one")]
    Unknown,
    #[error("the enrollment token has expired; ask an administrator for a new one")]
    Expired,
    #[error("the enrollment token has been used as many times as it allows; ask an administrator for a new one")]
    UsedUp,
}

/// What the caller's signing step of [`Store::enroll_device_signed`] issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// SHA-256 of the certificate (DER), hex: how the channel recognises the device.
    pub fingerprint: String,
    /// The certificate's serial number, hex: what a revocation list names. `None` for
    /// certificates issued elsewhere (tests).
    pub serial: Option<String>,
    /// When it stops being valid (Unix milliseconds), where known.
    pub expires_ms: Option<i64>,
}

/// A device certificate that was revoked, as a certificate revocation list names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Serial number, hex.
    pub serial: String,
    pub device_id: i64,
    pub revoked_ms: i64,
}

/// Why [`Store::enroll_device_signed`] enrolled nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollFailure<E> {
    /// The token was refused.
    Token(TokenRefusal),
    /// The caller's signing step failed.
    Sign(E),
}

fn device(r: &AnyRow) -> Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hostname: r.try_get("hostname")?,
        group_id: r.try_get("group_id")?,
        cert_fingerprint: r.try_get("cert_fingerprint")?,
        enrolled_at: r.try_get("enrolled_at")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        last_seen: r.try_get("last_seen")?,
        local_settings: get_json(r, "local_settings")?,
        connected_via: r.try_get("connected_via")?,
        next_cert_fingerprint: r.try_get("next_cert_fingerprint")?,
        next_cert_offered_ms: r.try_get("next_cert_offered_ms")?,
        cert_expires_ms: r.try_get("cert_expires_ms")?,
    })
}

/// Puts a certificate of device `device_id` on the revocation list (once: a second
/// revocation keeps the first date).
async fn list_revoked(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    serial: &str,
    device_id: i64,
    expires_ms: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revoked_certificates (serial, device_id, revoked_ms, expires_ms)
         VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO NOTHING",
    )
    .bind(serial)
    .bind(device_id)
    .bind(now_ms())
    .bind(expires_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A row of `revoked_certificates` (serial, device_id, revoked_ms).
fn revoked_row(r: &sqlx::any::AnyRow) -> Result<RevokedCertificate> {
    Ok(RevokedCertificate {
        serial: r.try_get("serial")?,
        device_id: r.try_get("device_id")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

const DEVICE_COLUMNS: &str = "id, name, hostname, group_id, cert_fingerprint, enrolled_at, \
     revoked, last_seen, local_settings, connected_via, next_cert_fingerprint, \
     next_cert_offered_ms, cert_expires_ms";

impl Store {
    /// Records an enrollment token.
    pub async fn create_enroll_token(
        &self,
        token_hash: &str,
        group_id: i64,
        expires_at: i64,
        max_uses: i64,
        created_by: &str,
    ) -> Result<i64> {
        self.group(group_id).await?;
        let row = sqlx::query(
            "INSERT INTO enroll_tokens (token_hash, group_id, expires_at, max_uses, uses_left, created_by, created_at)
             VALUES ($1, $2, $3, $4, $4, $5, $6) RETURNING id",
        )
        .bind(token_hash)
        .bind(group_id)
        .bind(expires_at)
        .bind(max_uses)
        .bind(created_by)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// All enrollment tokens.
    pub async fn enroll_tokens(&self) -> Result<Vec<EnrollTokenRow>> {
        let rows = sqlx::query(
            "SELECT id, group_id, expires_at, max_uses, uses_left, created_by, created_at FROM enroll_tokens ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EnrollTokenRow {
                    id: r.try_get("id")?,
                    group_id: r.try_get("group_id")?,
                    expires_at: r.try_get("expires_at")?,
                    max_uses: r.try_get("max_uses")?,
                    uses_left: r.try_get("uses_left")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Uses a token once and creates the device, atomically: a refused token changes nothing.
    pub async fn enroll_device(
        &self,
        token_hash: &str,
        name: &str,
        hostname: &str,
        cert_fingerprint: &str,
    ) -> Result<std::result::Result<DeviceRow, TokenRefusal>> {
        let enrolled = self
            .enroll_device_signed(token_hash, name, hostname, |_| {
                let issued = IssuedCertificate {
                    fingerprint: cert_fingerprint.to_string(),
                    serial: None,
                    expires_ms: None,
                };
                Ok::<_, std::convert::Infallible>((issued, ()))
            })
            .await?;
        Ok(enrolled.map(|(d, ())| d).map_err(|f| match f {
            EnrollFailure::Token(r) => r,
            EnrollFailure::Sign(never) => match never {},
        }))
    }

    /// Why the enrollment token `token_hash` would be refused now, or `None` if it
    /// would be taken: for refusing an enrollment before anything else of it is read.
    /// Only [`Store::enroll_device_signed`] spends a use, and it checks again.
    pub async fn enroll_token_refusal(&self, token_hash: &str) -> Result<Option<TokenRefusal>> {
        let mut conn = self.pool().acquire().await?;
        token_refusal(&mut conn, token_hash, now_ms()).await
    }

    /// Enrolls a device as one transaction: spends a use of the token, creates the
    /// device, and calls `sign` with its new id for its certificate's fingerprint and
    /// serial (and whatever else the caller needs back, the certificate itself). If `sign` fails
    /// nothing is kept: the token keeps its use and no device exists, so the agent can
    /// simply try again.
    pub async fn enroll_device_signed<T, E>(
        &self,
        token_hash: &str,
        name: &str,
        hostname: &str,
        sign: impl FnOnce(i64) -> std::result::Result<(IssuedCertificate, T), E>,
    ) -> Result<std::result::Result<(DeviceRow, T), EnrollFailure<E>>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let used = sqlx::query(
            "UPDATE enroll_tokens SET uses_left = uses_left - 1
             WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2 RETURNING group_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(used) = used else {
            let refusal = token_refusal(&mut tx, token_hash, now)
                .await?
                .unwrap_or(TokenRefusal::UsedUp);
            return Ok(Err(EnrollFailure::Token(refusal)));
        };
        let group_id: i64 = used.try_get("group_id")?;
        let row = sqlx::query(&format!(
            "INSERT INTO devices (name, hostname, group_id, cert_fingerprint, enrolled_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING {DEVICE_COLUMNS}"
        ))
        .bind(name)
        .bind(hostname)
        .bind(group_id)
        .bind("")
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut dev = device(&row)?;
        let (issued, extra) = match sign(dev.id) {
            Ok(signed) => signed,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(EnrollFailure::Sign(e)));
            }
        };
        sqlx::query(
            "UPDATE devices SET cert_fingerprint = $1, cert_serial = $2, cert_expires_ms = $3
             WHERE id = $4",
        )
        .bind(&issued.fingerprint)
        .bind(&issued.serial)
        .bind(issued.expires_ms)
        .bind(dev.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        dev.cert_fingerprint = issued.fingerprint;
        dev.cert_expires_ms = issued.expires_ms;
        Ok(Ok((dev, extra)))
    }

    /// One device.
    pub async fn device(&self, id: i64) -> Result<DeviceRow> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no device with id {id}")))?;
        device(&row)
    }

    /// One device by id or name.
    pub async fn device_by_ref(&self, reference: &str) -> Result<DeviceRow> {
        if let Ok(id) = reference.parse::<i64>() {
            return self.device(id).await;
        }
        // Agents choose their names, so two may share one: acting on "the first" could
        // revoke or move the wrong device.
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE name = $1 ORDER BY id LIMIT 2"
        ))
        .bind(reference)
        .fetch_all(self.pool())
        .await?;
        match rows.as_slice() {
            [] => Err(StoreError::NotFound(format!(
                "no device named '{reference}'; `riposte admin device list` shows them"
            ))),
            [row] => device(row),
            [..] => Err(StoreError::Conflict(format!(
                "more than one device is named '{reference}'; name it by its id \
                 (`riposte admin device list` shows them)"
            ))),
        }
    }

    /// Devices, optionally only those in the given groups, with a name filter and paging.
    pub async fn devices(
        &self,
        groups: Option<&[i64]>,
        name_contains: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<DeviceRow>> {
        let mut sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE 1 = 1");
        if let Some(groups) = groups {
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            // Group ids are integers from the store itself: safe to inline.
            let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            sql.push_str(&format!(" AND group_id IN ({})", list.join(",")));
        }
        if let Some(n) = name_contains {
            // No name holds a NUL (and PostgreSQL refuses one in text).
            if n.contains('\0') {
                return Ok(Vec::new());
            }
            sql.push_str(
                " AND (LOWER(name) LIKE $1 ESCAPE '\\' OR LOWER(hostname) LIKE $1 ESCAPE '\\')",
            );
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {limit} OFFSET {offset}"));
        let mut q = sqlx::query(&sql);
        if let Some(n) = name_contains {
            // Taken as typed: `%` and `_` match themselves, not any text.
            let escaped = n
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q = q.bind(format!("%{escaped}%"));
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(device).collect()
    }

    /// Moves a device to another group.
    pub async fn move_device(&self, id: i64, group_id: i64) -> Result<()> {
        self.group(group_id).await?;
        let done = sqlx::query("UPDATE devices SET group_id = $1 WHERE id = $2")
            .bind(group_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no device with id {id}")));
        }
        Ok(())
    }

    /// Revokes a device: it can no longer connect, and its certificate joins the
    /// revocation list ([`Store::revoked_certificates`]) that a sandbox checks.
    ///
    /// Also drops what was queued for it: a revoked device never gets it, and queued
    /// settings may carry (sealed) the special account's password.
    pub async fn revoke_device(&self, id: i64) -> Result<()> {
        // Outbox first, then the device row: the order `ack_outbox` takes its locks in,
        // so that a revocation during an acknowledgement cannot deadlock on PostgreSQL.
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM outbox WHERE device_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("UPDATE devices SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no device with id {id}")));
        }
        // Revoking twice keeps the first date: the list says when it happened. A renewed
        // certificate the device has not used yet is revoked with the current one.
        for (column, expires) in [
            ("cert_serial", "cert_expires_ms"),
            ("next_cert_serial", "next_cert_expires_ms"),
        ] {
            sqlx::query(&format!(
                "INSERT INTO revoked_certificates (serial, device_id, revoked_ms, expires_ms)
                 SELECT {column}, id, $1, {expires} FROM devices
                 WHERE id = $2 AND {column} IS NOT NULL
                 ON CONFLICT (serial) DO NOTHING"
            ))
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records `issued`, a renewed certificate signed for device `id` while it was
    /// connected with the certificate `current` (fingerprint). The device keeps using
    /// `current` until it connects with the renewed one. A renewed certificate issued
    /// before and never used is revoked: the device asked again, so it does not hold it.
    /// Returns `false`, recording nothing, when the device is revoked or no longer holds
    /// `current`.
    pub async fn offer_renewed_certificate(
        &self,
        id: i64,
        current: &str,
        issued: &IssuedCertificate,
    ) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT next_cert_serial, next_cert_expires_ms FROM devices
             WHERE id = $1 AND revoked = 0 AND cert_fingerprint = $2",
        )
        .bind(id)
        .bind(current)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let unused: Option<String> = row.try_get("next_cert_serial")?;
        let unused_expires: Option<i64> = row.try_get("next_cert_expires_ms")?;
        // Only if nothing changed since: a revocation or another renewal in between
        // (another server process) would otherwise leave a signed certificate that no
        // list names.
        let done = sqlx::query(
            "UPDATE devices SET next_cert_fingerprint = $1, next_cert_serial = $2,
                    next_cert_offered_ms = $3, next_cert_expires_ms = $7
             WHERE id = $4 AND revoked = 0 AND cert_fingerprint = $5
               AND COALESCE(next_cert_serial, '') = $6",
        )
        .bind(&issued.fingerprint)
        .bind(&issued.serial)
        .bind(now_ms())
        .bind(id)
        .bind(current)
        .bind(unused.clone().unwrap_or_default())
        .bind(issued.expires_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(unused) = unused {
            list_revoked(&mut tx, &unused, id, unused_expires).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Device `id` connected with its renewed certificate (`fingerprint`): that becomes
    /// its certificate, and the one it replaces is revoked, so that its key, wherever it
    /// is, no longer opens the channel or a sandbox. Returns the serials (replaced, new)
    /// when it did; `None`, changing nothing, unless `fingerprint` is the device's
    /// renewed certificate and the device is not revoked.
    pub async fn promote_renewed_certificate(
        &self,
        id: i64,
        fingerprint: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT cert_serial, next_cert_serial, cert_expires_ms FROM devices
             WHERE id = $1 AND revoked = 0 AND next_cert_fingerprint = $2",
        )
        .bind(id)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let replaced: Option<String> = row.try_get("cert_serial")?;
        let next_serial: Option<String> = row.try_get("next_cert_serial")?;
        let replaced_expires: Option<i64> = row.try_get("cert_expires_ms")?;
        let done = sqlx::query(
            "UPDATE devices SET cert_fingerprint = $1, cert_serial = $2,
                    cert_expires_ms = next_cert_expires_ms,
                    next_cert_fingerprint = NULL, next_cert_serial = NULL,
                    next_cert_offered_ms = NULL, next_cert_expires_ms = NULL
             WHERE id = $3 AND revoked = 0 AND next_cert_fingerprint = $1
               AND COALESCE(cert_serial, '') = $4",
        )
        .bind(fingerprint)
        .bind(&next_serial)
        .bind(id)
        .bind(replaced.clone().unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(replaced) = &replaced {
            list_revoked(&mut tx, replaced, id, replaced_expires).await?;
        }
        tx.commit().await?;
        Ok(Some((replaced, next_serial)))
    }

    /// Records the serial of device `id`'s certificate, as the device presents it, where
    /// enrollment did not (devices enrolled before serials were kept): only for the
    /// certificate the device's row names (`fingerprint`), and only once. A device that
    /// is already revoked joins the revocation list then. Returns whether it recorded.
    pub async fn note_cert_serial(&self, id: i64, fingerprint: &str, serial: &str) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE devices SET cert_serial = $1
             WHERE id = $2 AND cert_serial IS NULL AND cert_fingerprint = $3",
        )
        .bind(serial)
        .bind(id)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO revoked_certificates (serial, device_id, revoked_ms, expires_ms)
             SELECT cert_serial, id, $1, cert_expires_ms FROM devices
             WHERE id = $2 AND revoked = 1
             ON CONFLICT (serial) DO NOTHING",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records when device `id`'s certificate stops being valid, as the device presents
    /// it, where that is not known (devices enrolled before it was kept): only for the
    /// certificate the device's row names (`fingerprint`).
    pub async fn note_cert_expiry(
        &self,
        id: i64,
        fingerprint: &str,
        expires_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET cert_expires_ms = $1
             WHERE id = $2 AND cert_expires_ms IS NULL AND cert_fingerprint = $3",
        )
        .bind(expires_ms)
        .bind(id)
        .bind(fingerprint)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether device `id`'s certificate serial is known (and so can be listed when the
    /// device is revoked).
    pub async fn cert_serial_known(&self, id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT cert_serial FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("cert_serial")?.is_some(),
            None => false,
        })
    }

    /// Notes that server process `instance` is alive at `at_ms`, and returns the
    /// processes heard from after `live_since_ms` (this one included). Processes not
    /// heard from for a day are forgotten.
    pub async fn beat_server_process(
        &self,
        instance: &str,
        at_ms: i64,
        live_since_ms: i64,
    ) -> Result<Vec<String>> {
        sqlx::query(
            "INSERT INTO server_processes (instance, beat_ms) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET beat_ms = excluded.beat_ms",
        )
        .bind(instance)
        .bind(at_ms)
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM server_processes WHERE beat_ms < $1")
            .bind(at_ms - 24 * 3600 * 1000)
            .execute(self.pool())
            .await?;
        self.live_server_processes(live_since_ms).await
    }

    /// The server processes heard from after `live_since_ms`.
    pub async fn live_server_processes(&self, live_since_ms: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT instance FROM server_processes WHERE beat_ms > $1")
            .bind(live_since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("instance")?)).collect()
    }

    /// Every revoked device certificate, oldest revocation first.
    pub async fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>> {
        self.revoked_certificates_valid_at(i64::MIN).await
    }

    /// The revoked device certificates still valid at `at_ms` (or whose end is not
    /// known), oldest revocation first: what a revocation list must name, since an
    /// expired certificate is refused anyway.
    pub async fn revoked_certificates_valid_at(
        &self,
        at_ms: i64,
    ) -> Result<Vec<RevokedCertificate>> {
        let rows = sqlx::query(
            "SELECT serial, device_id, revoked_ms FROM revoked_certificates
             WHERE expires_ms IS NULL OR expires_ms > $1
             ORDER BY revoked_ms, serial",
        )
        .bind(at_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(revoked_row).collect()
    }

    /// The revocation of the certificate with `serial` (hex), if it is revoked.
    pub async fn revoked_certificate(&self, serial: &str) -> Result<Option<RevokedCertificate>> {
        let row = sqlx::query(
            "SELECT serial, device_id, revoked_ms FROM revoked_certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(revoked_row).transpose()
    }

    /// A device's local settings with the text they are stored as, for
    /// [`Store::replace_local_settings`].
    pub async fn local_settings_for_change(&self, id: i64) -> Result<(LocalSettings, String)> {
        let row = sqlx::query("SELECT local_settings FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no device with id {id}")))?;
        Ok((
            get_json(&row, "local_settings")?,
            row.try_get("local_settings")?,
        ))
    }

    /// Stores a device's local settings in place of those read as `seen` (their stored
    /// text); returns `false`, storing nothing, where another change landed since.
    pub async fn replace_local_settings(
        &self,
        id: i64,
        seen: &str,
        settings: &LocalSettings,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE devices SET local_settings = $1 WHERE id = $2 AND local_settings = $3",
        )
        .bind(to_json(settings))
        .bind(id)
        .bind(seen)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a device's local settings.
    pub async fn set_local_settings(&self, id: i64, settings: &LocalSettings) -> Result<()> {
        let done = sqlx::query("UPDATE devices SET local_settings = $1 WHERE id = $2")
            .bind(to_json(settings))
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no device with id {id}")));
        }
        Ok(())
    }

    /// The device connected to server process `via`: seen now, under `hostname`.
    pub async fn device_connected(&self, id: i64, hostname: &str, via: &str) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET last_seen = $1, hostname = $2, connected_via = $3 WHERE id = $4",
        )
        .bind(now_ms())
        .bind(hostname)
        .bind(via)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The device's connection to server process `via` ended: seen now. A connection it
    /// has since made to another process stays recorded.
    pub async fn device_disconnected(&self, id: i64, hostname: &str, via: &str) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET last_seen = $1, hostname = $2, \
             connected_via = CASE WHEN connected_via = $3 THEN NULL ELSE connected_via END \
             WHERE id = $4",
        )
        .bind(now_ms())
        .bind(hostname)
        .bind(via)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that a device was seen now, with its host name.
    pub async fn touch_device(&self, id: i64, hostname: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen = $1, hostname = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(hostname)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{EnrollFailure, IssuedCertificate, TokenRefusal};
    use crate::now_ms;
    use crate::testing::each_backend;

    #[tokio::test]
    async fn tokens_and_devices() {
        each_backend(|store| async move {
            let g = store.create_group("G", None).await.unwrap();
            let h = store.create_group("H", None).await.unwrap();
            store
                .create_enroll_token("good", g, now_ms() + 60_000, 2, "admin")
                .await
                .unwrap();
            store
                .create_enroll_token("old", g, now_ms() - 1, 5, "admin")
                .await
                .unwrap();
            let d1 = store
                .enroll_device("good", "d1", "host1", "fp1")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d1.group_id, g);
            store
                .enroll_device("good", "d2", "host2", "fp2")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                store
                    .enroll_device("good", "d3", "h", "fp")
                    .await
                    .unwrap()
                    .unwrap_err(),
                TokenRefusal::UsedUp
            );
            assert_eq!(
                store
                    .enroll_device("old", "d3", "h", "fp")
                    .await
                    .unwrap()
                    .unwrap_err(),
                TokenRefusal::Expired
            );
            assert_eq!(
                store
                    .enroll_device("nope", "d3", "h", "fp")
                    .await
                    .unwrap()
                    .unwrap_err(),
                TokenRefusal::Unknown
            );
            // Refused tokens created nothing.
            assert_eq!(store.devices(None, None, 0, 100).await.unwrap().len(), 2);
            assert_eq!(store.enroll_tokens().await.unwrap()[0].uses_left, 0);

            // A signing step that fails keeps nothing: the token keeps its use, and no
            // device was created; the next try succeeds with the same token.
            let k = store.create_group("K", None).await.unwrap();
            store
                .create_enroll_token("once", k, now_ms() + 60_000, 1, "admin")
                .await
                .unwrap();
            let failed = store
                .enroll_device_signed("once", "d4", "h4", |_| {
                    Err::<(IssuedCertificate, ()), _>("no key")
                })
                .await
                .unwrap();
            assert_eq!(failed.unwrap_err(), EnrollFailure::Sign("no key"));
            assert_eq!(store.devices(None, None, 0, 100).await.unwrap().len(), 2);
            // The one-use token is the only one of max_uses 1.
            let uses = |tokens: Vec<crate::EnrollTokenRow>| {
                tokens.iter().find(|t| t.max_uses == 1).map(|t| t.uses_left)
            };
            assert_eq!(uses(store.enroll_tokens().await.unwrap()), Some(1));
            let (d4, cert) = store
                .enroll_device_signed("once", "d4", "h4", |id| {
                    let issued = IssuedCertificate {
                        fingerprint: format!("fp-{id}"),
                        serial: None,
                        expires_ms: None,
                    };
                    Ok::<_, ()>((issued, format!("cert of {id}")))
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d4.cert_fingerprint, format!("fp-{}", d4.id));
            assert_eq!(cert, format!("cert of {}", d4.id));
            assert_eq!(
                store.device(d4.id).await.unwrap().cert_fingerprint,
                d4.cert_fingerprint
            );
            assert_eq!(uses(store.enroll_tokens().await.unwrap()), Some(0));
            store.revoke_device(d4.id).await.unwrap();

            store.move_device(d1.id, h).await.unwrap();
            assert_eq!(store.device(d1.id).await.unwrap().group_id, h);
            assert!(store.move_device(d1.id, 999).await.is_err());
            assert_eq!(
                store.device(d1.id).await.unwrap().group_id,
                h,
                "failed move changes nothing"
            );
            assert_eq!(
                store.devices(Some(&[g]), None, 0, 10).await.unwrap().len(),
                1
            );
            assert_eq!(
                store.devices(None, Some("HOST1"), 0, 10).await.unwrap()[0].id,
                d1.id
            );
            // A search is taken as typed: `%` and `_` are no wildcards, a NUL no error.
            for typed in ["%", "d_", "_", "\\", "d\0"] {
                assert!(
                    store
                        .devices(None, Some(typed), 0, 10)
                        .await
                        .unwrap()
                        .is_empty(),
                    "{typed:?}"
                );
            }
            assert_eq!(store.device_by_ref("d1").await.unwrap().id, d1.id);
            store.revoke_device(d1.id).await.unwrap();
            assert!(store.device(d1.id).await.unwrap().revoked);
        })
        .await;
    }

    /// A revoked device's certificate serial is listed once, with the date of its first
    /// revocation; a device whose serial is unknown, or that is not revoked, is not.
    #[tokio::test]
    async fn revoking_lists_the_certificate_serial_once() {
        each_backend(|store| async move {
            let g = store.create_group("G", None).await.unwrap();
            store
                .create_enroll_token("t", g, now_ms() + 60_000, 5, "admin")
                .await
                .unwrap();
            let enroll = |name: &'static str, serial: Option<&'static str>| {
                let store = store.clone();
                async move {
                    let issued = IssuedCertificate {
                        fingerprint: format!("fp-{name}"),
                        serial: serial.map(str::to_string),
                        expires_ms: None,
                    };
                    store
                        .enroll_device_signed("t", name, "h", |_| {
                            Ok::<_, std::convert::Infallible>((issued, ()))
                        })
                        .await
                        .unwrap()
                        .unwrap()
                        .0
                }
            };
            let a = enroll("a", Some("0a0b")).await;
            let b = enroll("b", Some("0c0d")).await;
            let legacy = enroll("legacy", None).await;
            assert!(store.revoked_certificates().await.unwrap().is_empty());

            store.revoke_device(a.id).await.unwrap();
            store.revoke_device(legacy.id).await.unwrap();
            let listed = store.revoked_certificates().await.unwrap();
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(
                (listed[0].serial.as_str(), listed[0].device_id),
                ("0a0b", a.id)
            );

            store.revoke_device(a.id).await.unwrap();
            assert_eq!(store.revoked_certificates().await.unwrap(), listed);
            assert!(!store.device(b.id).await.unwrap().revoked);
        })
        .await;
    }

    /// A revocation list needs to name only certificates not yet expired: those past
    /// their end are refused anyway, and the list would otherwise grow with every
    /// renewal for ever. One whose end is unknown stays.
    #[tokio::test]
    async fn expired_revoked_certificates_leave_the_list() {
        each_backend(|store| async move {
            let g = store.create_group("G", None).await.unwrap();
            store
                .create_enroll_token("t", g, now_ms() + 60_000, 5, "admin")
                .await
                .unwrap();
            let now = now_ms();
            let mut ids = Vec::new();
            for (name, expires_ms) in [
                ("past", Some(now - 1)),
                ("future", Some(now + 60_000)),
                ("unknown", None),
            ] {
                let issued = IssuedCertificate {
                    fingerprint: format!("fp-{name}"),
                    serial: Some(format!("5e{}", name.len())),
                    expires_ms,
                };
                let (d, ()) = store
                    .enroll_device_signed("t", name, "h", |_| {
                        Ok::<_, std::convert::Infallible>((issued, ()))
                    })
                    .await
                    .unwrap()
                    .unwrap();
                store.revoke_device(d.id).await.unwrap();
                ids.push(d.id);
            }
            assert_eq!(store.revoked_certificates().await.unwrap().len(), 3);
            let listed: Vec<i64> = store
                .revoked_certificates_valid_at(now)
                .await
                .unwrap()
                .iter()
                .map(|r| r.device_id)
                .collect();
            assert_eq!(listed, [ids[1], ids[2]]);
        })
        .await;
    }

    /// A renewed certificate replaces the current one only when the device connects
    /// with it; the replaced one, and a renewed one never used, join the revocation list.
    #[tokio::test]
    async fn a_renewed_certificate_takes_over_when_used_and_revokes_what_it_replaces() {
        each_backend(|store| async move {
            let g = store.create_group("G", None).await.unwrap();
            store
                .create_enroll_token("t", g, now_ms() + 60_000, 5, "admin")
                .await
                .unwrap();
            let issued = |n: &str| IssuedCertificate {
                fingerprint: format!("fp-{n}"),
                serial: Some(format!("5e{n}")),
                expires_ms: None,
            };
            let (d, ()) = store
                .enroll_device_signed("t", "d", "h", |_| {
                    Ok::<_, std::convert::Infallible>((issued("1"), ()))
                })
                .await
                .unwrap()
                .unwrap();
            let serials = || async {
                let mut s: Vec<String> = store
                    .revoked_certificates()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.serial)
                    .collect();
                s.sort();
                s
            };
            // Offered only to the holder of the current certificate.
            assert!(!store
                .offer_renewed_certificate(d.id, "fp-other", &issued("2"))
                .await
                .unwrap());
            assert!(store
                .offer_renewed_certificate(d.id, "fp-1", &issued("2"))
                .await
                .unwrap());
            let row = store.device(d.id).await.unwrap();
            assert_eq!(
                (
                    row.cert_fingerprint.as_str(),
                    row.next_cert_fingerprint.as_deref()
                ),
                ("fp-1", Some("fp-2"))
            );
            // Asked again (the device lost the answer): the unused one is revoked.
            assert!(store
                .offer_renewed_certificate(d.id, "fp-1", &issued("3"))
                .await
                .unwrap());
            assert_eq!(serials().await, ["5e2"]);
            // Only the renewed certificate promotes; then the old one is revoked.
            assert!(store
                .promote_renewed_certificate(d.id, "fp-2")
                .await
                .unwrap()
                .is_none());
            assert!(store
                .promote_renewed_certificate(d.id, "fp-1")
                .await
                .unwrap()
                .is_none());
            assert_eq!(
                store
                    .promote_renewed_certificate(d.id, "fp-3")
                    .await
                    .unwrap(),
                Some((Some("5e1".into()), Some("5e3".into())))
            );
            let row = store.device(d.id).await.unwrap();
            assert_eq!(
                (
                    row.cert_fingerprint.as_str(),
                    row.next_cert_fingerprint.as_deref()
                ),
                ("fp-3", None)
            );
            assert_eq!(serials().await, ["5e1", "5e2"]);
            assert!(store
                .promote_renewed_certificate(d.id, "fp-3")
                .await
                .unwrap()
                .is_none());

            // A revocation lists the current certificate and a pending renewed one.
            assert!(store
                .offer_renewed_certificate(d.id, "fp-3", &issued("4"))
                .await
                .unwrap());
            store.revoke_device(d.id).await.unwrap();
            assert_eq!(serials().await, ["5e1", "5e2", "5e3", "5e4"]);
            // A revoked device is offered nothing and promotes nothing.
            assert!(!store
                .offer_renewed_certificate(d.id, "fp-3", &issued("5"))
                .await
                .unwrap());
            assert!(store
                .promote_renewed_certificate(d.id, "fp-4")
                .await
                .unwrap()
                .is_none());
            assert_eq!(store.device(d.id).await.unwrap().cert_fingerprint, "fp-3");
        })
        .await;
    }

    #[tokio::test]
    async fn a_name_two_devices_share_is_refused_as_a_reference() {
        each_backend(|store| async move {
            let (_, ids) =
                crate::testing::group_with_devices(&store, &["twin", "twin", "solo"]).await;
            match store.device_by_ref("twin").await {
                Err(crate::StoreError::Conflict(m)) => assert!(m.contains("by its id"), "{m}"),
                other => panic!("{:?}", other.map(|d| d.id)),
            }
            assert_eq!(store.device_by_ref("solo").await.unwrap().id, ids[2]);
            assert_eq!(
                store.device_by_ref(&ids[1].to_string()).await.unwrap().id,
                ids[1]
            );
            assert!(matches!(
                store.device_by_ref("nobody").await,
                Err(crate::StoreError::NotFound(_))
            ));
        })
        .await;
    }
}
