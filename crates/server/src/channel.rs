//! The agent channel: one long-lived mutual-TLS connection per agent, both directions.
//!
//! A connection costs one task for the protocol loop and one for reading frames (reading
//! is not cancel-safe, so it lives in its own task and hands whole frames over). There is
//! no per-agent timer: idle connections wait on their socket and their hub `Notify` only.

use crate::service::{CertificateCheck, Core};
use riposte_proto::{
    read_frame, write_frame, AgentEvent, AgentToServer, Delivery, EventBody, ServerToAgent,
    PROTOCOL_VERSION,
};
use riposte_store::StoreError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How long a silent agent stays connected; agents ping well within it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts agent connections until `shutdown` turns true.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("agent listener: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let core = core.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("agent TLS handshake from {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let presented = Presented {
                fingerprint: cert.map(|c| crate::pki::fingerprint(c)).unwrap_or_default(),
                facts: cert.and_then(|c| crate::pki::certificate_facts(c)),
            };
            if let Err(e) = connection(core, tls, presented, shutdown).await {
                tracing::debug!("agent connection from {peer} ended: {e}");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Frame(#[from] riposte_proto::FrameError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    /// The connection's certificate expired or is no longer the device's (which of the
    /// two, as the check found).
    #[error("the connection's certificate is no longer valid for this device")]
    CertificateGone(CertificateCheck),
}

/// The client certificate a connection presented.
struct Presented {
    /// SHA-256 of its DER, hex: what the device's row names.
    fingerprint: String,
    /// Its serial number and validity.
    facts: Option<crate::pki::CertificateFacts>,
}

async fn connection<S>(
    core: Arc<Core>,
    stream: S,
    presented: Presented,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let hello: AgentToServer = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader))
        .await
        .map_err(|_| ConnError::Refused("no hello".into()))??;
    let AgentToServer::Hello {
        device_id,
        protocol,
        last_applied_seq,
        hostname,
        renews_certificate,
    } = hello
    else {
        return Err(ConnError::Refused("first frame was not a hello".into()));
    };
    let fingerprint = presented.fingerprint.clone();
    let mut known = {
        let _slot = store_slot(&core).await?;
        core.store.device(device_id).await
    };
    // The first connection with a renewed certificate makes it the device's own and
    // revokes the one it replaces.
    if let Ok(d) = &known {
        if !fingerprint.is_empty() && d.next_cert_fingerprint.as_deref() == Some(&fingerprint) {
            let _slot = store_slot(&core).await?;
            match core.certificate_used(device_id, &fingerprint).await {
                Ok(_) => known = core.store.device(device_id).await,
                Err(e) => tracing::error!(device = device_id, "renewing the certificate: {e}"),
            }
        }
    }
    // A device enrolled before serials were kept gets its serial from the certificate it
    // shows, so that a revocation can list it (even one made while it was away).
    if let (Ok(d), Some(facts)) = (&known, presented.facts.as_ref()) {
        let serial = &facts.serial;
        if !d.cert_fingerprint.is_empty() && d.cert_fingerprint == fingerprint {
            if d.cert_expires_ms.is_none() {
                let _slot = store_slot(&core).await?;
                core.store
                    .note_cert_expiry(device_id, &fingerprint, facts.not_after_ms())
                    .await?;
            }
            let _slot = store_slot(&core).await?;
            if core
                .store
                .note_cert_serial(device_id, &fingerprint, serial)
                .await?
            {
                tracing::info!(
                    device = device_id,
                    "recorded the serial of the device's certificate"
                );
            }
        }
    }
    let known = match known {
        Err(e) if !matches!(e, StoreError::NotFound(_)) => return Err(e.into()),
        known => known,
    };
    let refusal = match &known {
        Ok(d) if d.revoked => Some(format!(
            "device {device_id} has been revoked; enroll it again"
        )),
        Ok(d) if d.cert_fingerprint.is_empty() || d.cert_fingerprint != fingerprint => {
            Some("the client certificate does not belong to this device".to_string())
        }
        Ok(_) if protocol != PROTOCOL_VERSION => Some(format!(
            "protocol {protocol} is not supported; this server speaks {PROTOCOL_VERSION}"
        )),
        Ok(_) => None,
        Err(_) => Some(format!("unknown device {device_id}; enroll it again")),
    };
    // The agent says what its host is called; enrollment limits names to 255 characters
    // and so does every later report.
    let hostname: String = hostname.chars().take(255).collect();
    if let (Some(_), Ok(d), Some(facts)) = (&refusal, &known, presented.facts.as_ref()) {
        if !d.revoked
            && !d.cert_fingerprint.is_empty()
            && d.cert_fingerprint != fingerprint
            && d.next_cert_fingerprint.as_deref() != Some(&fingerprint)
        {
            let _slot = store_slot(&core).await?;
            if let Err(e) = core.old_certificate_presented(device_id, facts).await {
                tracing::error!(device = device_id, "noting an earlier certificate: {e}");
            }
        }
    }
    if let Some(reason) = refusal {
        let _ = write_frame(
            &mut writer,
            &ServerToAgent::Refused {
                reason: reason.clone(),
            },
        )
        .await;
        return Err(ConnError::Refused(reason));
    }
    let group = {
        let _slot = store_slot(&core).await?;
        core.store
            .device_connected(device_id, &hostname, &core.instance)
            .await?;
        let device = core.store.device(device_id).await?;
        core.store
            .group(device.group_id)
            .await
            .map(|g| g.name)
            .unwrap_or_default()
    };
    let features = vec![riposte_proto::FEATURE_ALLOWANCE_EVENTS.to_string()];
    write_frame(
        &mut writer,
        &ServerToAgent::Welcome {
            device_id,
            group,
            features,
        },
    )
    .await?;
    let conn = core.hub.register(device_id);

    let (frames_tx, mut frames) =
        tokio::sync::mpsc::channel::<Result<AgentToServer, riposte_proto::FrameError>>(8);
    let reader_task = tokio::spawn(async move {
        loop {
            let f = read_frame(&mut reader).await;
            let end = f.is_err();
            if frames_tx.send(f).await.is_err() || end {
                break;
            }
        }
    });

    let result = async {
        let refuse_revoked = ServerToAgent::Refused {
            reason: "this device has been revoked or reconnected elsewhere".into(),
        };
        if revoked(&core, device_id).await? {
            let _ = write_frame(&mut writer, &refuse_revoked).await;
            return Ok(());
        }
        let mut sent_upto = last_applied_seq as i64;
        acknowledge(&core, device_id, sent_upto).await?;
        sent_upto = deliver(&core, device_id, sent_upto, &mut writer, None).await?;
        // The certificate is checked at the start, then at the agent's frames (it pings
        // twice a minute) once `certificate_check_ms` has passed, and before a delivery
        // that carries the special password (`deliver`): a connection can outlive the
        // point where renewal is due, the certificate itself, or its place as the
        // device's. A renewal is asked again on
        // the same connection once the last one's certificate has waited unused for
        // `renewal_reissue_ms` (the agent could not store it); one answer per ask.
        let mut renewal_asked: Option<tokio::time::Instant> = None;
        let mut renewal_answered = false;
        let mut certificate_checked: Option<tokio::time::Instant> = None;
        let reissue_after = Duration::from_millis(core.config.renewal_reissue_ms.max(0) as u64);
        let check_every = Duration::from_millis(core.config.certificate_check_ms.max(0) as u64);

        let seen_refresh = Duration::from_millis(core.config.seen_refresh_ms.max(0) as u64);
        let mut seen_stored = tokio::time::Instant::now();
        loop {
            if certificate_checked.is_none_or(|at| at.elapsed() >= check_every) {
                certificate_checked = Some(tokio::time::Instant::now());
                match check_certificate(&core, device_id, &fingerprint, &presented).await? {
                    CertificateCheck::Renew
                        if renews_certificate
                            && renewal_asked.is_none_or(|at| at.elapsed() >= reissue_after) =>
                    {
                        renewal_asked = Some(tokio::time::Instant::now());
                        renewal_answered = false;
                        write_frame(&mut writer, &ServerToAgent::RenewCertificate).await?;
                    }
                    gone @ (CertificateCheck::Expired | CertificateCheck::Replaced) => {
                        return end_for_certificate(gone, device_id, &presented, &mut writer).await;
                    }
                    _ => {}
                }
            }
            tokio::select! {
                frame = tokio::time::timeout(IDLE_TIMEOUT, frames.recv()) => {
                    let frame = match frame {
                        Err(_) => return Err(ConnError::Refused("idle timeout".into())),
                        Ok(None) => return Ok(()),
                        Ok(Some(f)) => f?,
                    };
                    match frame {
                        AgentToServer::Ack { seq } => acknowledge(&core, device_id, seq as i64).await?,
                        AgentToServer::TaskUpdate(u) => {
                            let _slot = store_slot(&core).await?;
                            match core.store.update_task_device(u.task_id, device_id, u.state, u.hits as i64, u.reason.as_deref(), &u.results).await {
                                Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound(_)) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                        AgentToServer::Event(e) => {
                            let id = e.event_id.clone();
                            handle_event(&core, device_id, e).await?;
                            write_frame(&mut writer, &ServerToAgent::EventAck { event_id: id }).await?;
                        }
                        AgentToServer::Ping => {
                            write_frame(&mut writer, &ServerToAgent::Pong).await?;
                        }
                        AgentToServer::CertificateRequest { csr_pem } => {
                            // Only an asked-for request is signed, one per ask: a device
                            // cannot mint itself certificates.
                            if renewal_asked.is_none() || renewal_answered {
                                return Err(ConnError::Refused("a certificate request the server did not ask for".into()));
                            }
                            renewal_answered = true;
                            let signed = {
                                let _slot = store_slot(&core).await?;
                                match &presented.facts {
                                    Some(facts) => core.renew_device_certificate(device_id, &fingerprint, facts, &csr_pem).await,
                                    None => Err(crate::error::ServiceError::BadRequest("the connection's certificate could not be read".into())),
                                }
                            };
                            match signed {
                                Ok(cert_pem) => write_frame(&mut writer, &ServerToAgent::Certificate { cert_pem }).await?,
                                // The device goes on with the certificate it has; it is asked
                                // again once the reissue window has passed.
                                Err(e) => tracing::warn!(device = device_id, "renewing the device certificate: {e}"),
                            }
                        }
                        AgentToServer::Hello { .. } => return Err(ConnError::Refused("second hello".into())),
                    }
                    if seen_stored.elapsed() >= seen_refresh {
                        let _slot = store_slot(&core).await?;
                        core.store.touch_device(device_id, &hostname).await?;
                        seen_stored = tokio::time::Instant::now();
                    }
                }
                _ = conn.wake.notified() => {
                    if conn.kicked.load(Ordering::SeqCst) {
                        let _ = write_frame(&mut writer, &refuse_revoked).await;
                        return Ok(());
                    }
                    sent_upto = match deliver(&core, device_id, sent_upto, &mut writer, Some((&fingerprint, &presented))).await {
                        Err(ConnError::CertificateGone(gone)) => {
                            return end_for_certificate(gone, device_id, &presented, &mut writer).await;
                        }
                        other => other?,
                    };
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
    .await;
    reader_task.abort();
    core.hub.unregister(device_id, &conn);
    if let Ok(_slot) = store_slot(&core).await {
        let _ = core
            .store
            .device_disconnected(device_id, &hostname, &core.instance)
            .await;
    }
    result
}

/// [`Core::certificate_check`] for a connection's certificate; a store error counts as
/// nothing to do (logged), one that cannot be read as fine (nothing to check).
async fn check_certificate(
    core: &Core,
    device_id: i64,
    fingerprint: &str,
    presented: &Presented,
) -> Result<CertificateCheck, ConnError> {
    let Some(facts) = &presented.facts else {
        return Ok(CertificateCheck::Fine);
    };
    let _slot = store_slot(core).await?;
    match core.certificate_check(device_id, fingerprint, facts).await {
        Ok(check) => Ok(check),
        Err(e) => {
            tracing::warn!(device = device_id, "checking the device certificate: {e}");
            Ok(CertificateCheck::Fine)
        }
    }
}

/// Ends a connection whose certificate expired or is no longer the device's (`gone`, as
/// the check found), telling the agent why.
async fn end_for_certificate<W: AsyncWrite + Unpin>(
    gone: CertificateCheck,
    device_id: i64,
    presented: &Presented,
    writer: &mut W,
) -> Result<(), ConnError> {
    let expired = presented
        .facts
        .as_ref()
        .map(|f| riposte_model::time::utc(f.not_after_ms()));
    let reason = if gone == CertificateCheck::Replaced {
        "the client certificate is no longer this device's (renewed or revoked)".to_string()
    } else {
        format!(
            "the device certificate expired on {}; enroll the agent again, in a new data directory",
            expired.unwrap_or_default()
        )
    };
    tracing::info!(device = device_id, "connection ended: {reason}");
    let _ = write_frame(
        writer,
        &ServerToAgent::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    Err(ConnError::Refused(reason))
}

/// A slot for the agent-side store operations that follow, held until it is dropped
/// (see `Core::agent_store_slots`): agents queue for these, not for the pool, so that
/// requests find a connection free.
async fn store_slot(core: &Core) -> Result<tokio::sync::SemaphorePermit<'_>, ConnError> {
    core.agent_store_slots
        .acquire()
        .await
        .map_err(|_| ConnError::Refused("the server is shutting down".into()))
}

/// The agent applied everything up to `seq`.
async fn acknowledge(core: &Core, device_id: i64, seq: i64) -> Result<(), ConnError> {
    if seq <= 0 {
        return Ok(());
    }
    let _slot = store_slot(core).await?;
    for task in core.store.ack_outbox(device_id, seq).await? {
        match core
            .store
            .update_task_device(
                task,
                device_id,
                riposte_model::DeviceTaskState::Delivered,
                0,
                None,
                &serde_json::Value::Null,
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends everything queued after `sent_upto`; returns the new high-water mark.
///
/// With `certificate` (the connection's, after its hello), a delivery that carries the
/// special password goes only to the device's current certificate: one renewed through
/// another server process meanwhile ends the connection ([`ConnError::CertificateGone`])
/// before it is sent. Other deliveries are not worth a read each, which ten thousand
/// devices would pay at every task; the connection's periodic check ends such a
/// connection within `certificate_check_ms`.
async fn deliver<W: AsyncWrite + Unpin>(
    core: &Core,
    device_id: i64,
    mut sent_upto: i64,
    writer: &mut W,
    certificate: Option<(&str, &Presented)>,
) -> Result<i64, ConnError> {
    loop {
        let rows = {
            let _slot = store_slot(core).await?;
            core.store.outbox_after(device_id, sent_upto, 100).await?
        };
        let n = rows.len();
        for row in rows {
            match serde_json::from_str::<Delivery>(&row.payload) {
                Ok(delivery) => {
                    let secret = matches!(
                        &delivery,
                        Delivery::Settings {
                            special_password: Some(_),
                            ..
                        }
                    );
                    if let (true, Some((fingerprint, presented))) = (secret, certificate) {
                        if let gone @ (CertificateCheck::Expired | CertificateCheck::Replaced) =
                            check_certificate(core, device_id, fingerprint, presented).await?
                        {
                            return Err(ConnError::CertificateGone(gone));
                        }
                    }
                    let delivery = unseal(core, delivery);
                    write_frame(
                        writer,
                        &ServerToAgent::Deliver {
                            seq: row.seq as u64,
                            delivery,
                        },
                    )
                    .await?;
                }
                Err(e) => tracing::error!(
                    "outbox row {} of device {device_id} is corrupt: {e}",
                    row.seq
                ),
            }
            sent_upto = row.seq;
        }
        if n < 100 {
            return Ok(sent_upto);
        }
    }
}

/// Opens the special password of queued settings, which the outbox keeps sealed.
fn unseal(core: &Core, delivery: Delivery) -> Delivery {
    match delivery {
        Delivery::Settings {
            response_group,
            settings,
            special_password: Some(queued),
        } => {
            let special_password = match queued.strip_prefix(crate::service::SEALED_PREFIX) {
                Some(sealed) => {
                    let opened = core.sealer.open(sealed);
                    if opened.is_none() {
                        tracing::error!(
                            "a queued special password does not open with this server's key \
                             (secret.key replaced?); the device gets its settings without it"
                        );
                    }
                    opened
                }
                // Queued before passwords were kept sealed in the outbox.
                None => Some(queued),
            };
            Delivery::Settings {
                response_group,
                settings,
                special_password,
            }
        }
        other => other,
    }
}

/// Whether the device was revoked since its connection was accepted: checked once the
/// connection is registered, since a revocation in between found nothing to kick. Later
/// revocations kick the registered connection, in this process or through
/// `Store::notify_kick` in another.
async fn revoked(core: &Core, device_id: i64) -> Result<bool, ConnError> {
    let _slot = store_slot(core).await?;
    match core.store.device(device_id).await {
        Ok(d) => Ok(d.revoked),
        Err(StoreError::NotFound(_)) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn handle_event(core: &Core, device_id: i64, e: AgentEvent) -> Result<(), ConnError> {
    let _slot = store_slot(core).await?;
    // The event's writes and its mark as processed, in one transaction: a failure or a
    // stop at any instant stores it whole or not at all. Not acknowledged unless
    // committed, it is sent again by the device, and stored then.
    let Some(mut writes) = core.store.begin_agent_event(device_id, &e.event_id).await? else {
        return Ok(()); // a re-delivery after a reconnect
    };
    // What the log says the event did, said once it is stored: a failure before the
    // commit leaves nothing stored, and the event is logged when it is sent again.
    let mut stored_log: Option<Box<dyn FnOnce() + Send>> = None;
    match e.body {
        EventBody::Detection(mut d) => {
            // Names a device sends end up in listings, tables and this log: escaped as
            // paths are (`\xHH`), so that none fakes a line or sends terminal escapes.
            use riposte_model::path_text::shown;
            for name in [&mut d.threat, &mut d.user_name, &mut d.source] {
                *name = shown(name).into_owned();
            }
            let json = serde_json::to_value(&d).unwrap_or_default();
            writes.insert_detection(&d.detection_id, &json).await?;
            stored_log = Some(Box::new(move || {
                tracing::info!(device_id, threat = %d.threat, "detection reported");
            }));
        }
        EventBody::ActionOutcome {
            detection_id,
            action,
            outcome,
            detail,
        } => {
            writes
                .add_action_outcome(&detection_id, &action, &outcome, &detail)
                .await?;
            // A group action's failure is shown on the detection from the device's own
            // report, over its mutual-TLS channel: the server's refusals of autonomous
            // requests are not written there, since anyone can send one that fails
            // (with a wrong password) naming any detection.
            if action == riposte_model::settings::Action::GroupIocScan.as_str()
                && outcome == "failed"
            {
                writes
                    .set_group_action_failure(&detection_id, &detail)
                    .await?;
            }
        }
        EventBody::Quarantine {
            entry_id,
            state,
            record,
        } => {
            // A damaged entry's deletion comes without the record the device lost:
            // the store keeps the one it holds.
            writes.upsert_quarantine(&entry_id, &state, &record).await?;
            // A restore allows the content, not the entry: every restored entry of that
            // content shows it, and any of them can withdraw it (as after a restart,
            // when the device reports its allowances by content).
            let restored_allowed = state == "restored" && record["allowed"] == true;
            if let Some(sha256) = record["sha256"].as_str().filter(|_| restored_allowed) {
                if riposte_model::is_sha256_hex(sha256) {
                    writes.set_quarantine_allowance(sha256, true).await?;
                }
            }
            // What leaves a quarantine is an administrator's business wherever it was
            // asked for (here, or by root on the device with `ctl`): the audit log says
            // that it was done.
            if matches!(state.as_str(), "restored" | "deleted") {
                // A damaged entry's deletion comes without its path.
                let path = record["original_path"]
                    .as_str()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                let detail =
                    format!("device {device_id}: quarantine entry {entry_id}{path} {state}");
                let detail: String = detail.chars().take(512).collect();
                writes
                    .audit_if_possible(
                        &format!("device {device_id}"),
                        "agent channel",
                        &format!("quarantine_entry_{state}"),
                        &detail,
                    )
                    .await?;
            }
        }
        EventBody::Allowance { sha256, allowed } => {
            if riposte_model::is_sha256_hex(&sha256) {
                writes.set_quarantine_allowance(&sha256, allowed).await?;
            } else {
                tracing::warn!(
                    device_id,
                    "an allowance event without a valid SHA-256 was ignored"
                );
            }
        }
        EventBody::Alert { code, message } => {
            writes.add_alert(&code, &message).await?;
            stored_log = Some(Box::new(move || {
                tracing::warn!(device_id, %code, "{message}");
            }));
        }
    }
    writes.commit().await?;
    if let Some(log) = stored_log {
        log();
    }
    Ok(())
}
