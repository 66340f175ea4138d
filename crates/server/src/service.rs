//! The server's operations, shared by the REST API and the web console.
//!
//! Every operation takes the calling [`Principal`] and asks [`riposte_model::authorize`]
//! first; handlers stay thin and cannot forget a check. Every change is written to the
//! audit log with who, what and from where — never a secret.

use crate::error::{ServiceError, ServiceResult};
use crate::hub::Hub;
use crate::pki::Authority;
use crate::secrets::{self, Sealer};
use crate::throttle::{Target, Throttle};
use riposte_model::accounts::{
    validate_account_name, validate_admin_password, SPECIAL_ACCOUNT_NAME,
};
use riposte_model::settings::PathPolicy;
use riposte_model::{
    authorize, effective_settings, validate_special_password, Action, EffectiveSettings, GroupTree,
    LocalSettings, Operation, PolicyMode, PolicySection, PolicySettings, Principal, Provenance,
    Role, SandboxIntegration, ScanScope, TaskAction, ThreatResponse,
};
use riposte_proto::{Delivery, IocDocument, TaskOffer};
use riposte_store::{
    now_ms, AccountKind, EnrollFailure, IssuedCertificate, NewTask, Store, StoreError,
    KIND_SETTINGS,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Marks a special password queued in the outbox still sealed under the server key.
pub const SEALED_PREFIX: &str = "sealed:";

/// Tunables of the server's behaviour.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Port of the agent channel, told to agents at enrollment.
    pub agent_port: u16,
    /// How long a login session lasts.
    pub session_ms: i64,
    /// Autonomous tasks are deleted this long after their last run.
    pub autonomous_retention_ms: i64,
    /// Detections of one object within this window share one autonomous task per group.
    pub dedup_window_ms: i64,
    /// A task not finished on a device after this long is `expired` there.
    pub task_expiry_ms: i64,
    /// How long an autonomous task request waits for its detection to arrive over the
    /// device's channel (the agent reports it just before calling).
    pub detection_wait_ms: i64,
    /// While a device is connected, its "last seen" time is stored again at most this
    /// often, on the next frame it sends: often enough to be read as "recently", rarely
    /// enough that ten thousand pinging agents do not each write every minute.
    pub seen_refresh_ms: i64,
    /// How long a device certificate is valid. Agents renew theirs over the channel once
    /// a third of its life is left, so a device away for longer must enroll again.
    pub device_cert_lifetime_ms: i64,
    /// How often a connected agent's certificate is checked (renewal due, expired).
    pub certificate_check_ms: i64,
    /// How long a renewed certificate not used yet holds off another
    /// ([`RENEWAL_REISSUE_MS`] by default).
    pub renewal_reissue_ms: i64,
    /// A device's certificate replaced by a renewal less than this long ago may still be
    /// presented by the device itself (its connection with the new one dropped before it
    /// stored it): only later is its use raised as an alert ([`Core::old_certificate_presented`]).
    pub replaced_certificate_grace_ms: i64,
}

/// The administrator account a start created ([`Core::bootstrap`]).
#[derive(Debug, Clone)]
pub struct CreatedAdmin {
    pub name: String,
    /// The password, when it was generated rather than given: shown once.
    pub generated_password: Option<String>,
    /// Whether the database had no account at all; else every administrator had
    /// been deleted.
    pub first_start: bool,
}

/// The default of [`CoreConfig::device_cert_lifetime_ms`]: a year.
pub const DEVICE_CERT_LIFETIME_MS: i64 = 365 * 24 * 3600 * 1000;

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            agent_port: 0,
            session_ms: 8 * 3600 * 1000,
            autonomous_retention_ms: 7 * 24 * 3600 * 1000,
            dedup_window_ms: 10 * 60 * 1000,
            task_expiry_ms: 7 * 24 * 3600 * 1000,
            detection_wait_ms: 15_000,
            seen_refresh_ms: 5 * 60 * 1000,
            device_cert_lifetime_ms: DEVICE_CERT_LIFETIME_MS,
            certificate_check_ms: 5 * 60_000,
            renewal_reissue_ms: RENEWAL_REISSUE_MS,
            replaced_certificate_grace_ms: 10 * 60_000,
        }
    }
}

/// The default of [`CoreConfig::renewal_reissue_ms`]: a renewed certificate's agent is
/// expected to connect with it within seconds; one that lost it (a crash, a full disk
/// before storing it) gets another after this.
pub const RENEWAL_REISSUE_MS: i64 = 3600 * 1000;

/// Whether device `d` holds a renewed certificate issued within `reissue_ms` that it has
/// not used yet.
fn renewal_waits(d: &riposte_store::DeviceRow, reissue_ms: i64) -> bool {
    d.next_cert_fingerprint.is_some()
        && d.next_cert_offered_ms
            .is_some_and(|at| now_ms() - at < reissue_ms)
}

/// What a connection does about its certificate ([`Core::certificate_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    Fine,
    Renew,
    Expired,
    /// The certificate is no longer the device's (renewed since, or the device revoked).
    Replaced,
}

/// How old a signed revocation list may be before a fetch has it signed again.
const REVOCATION_LIST_RESIGN_MS: i64 = 3600 * 1000;

/// A revocation list as signed, with the entries it names.
struct SignedRevocationList {
    entries: Vec<(String, i64)>,
    signed_ms: i64,
    pem: String,
}

/// The server's shared state and operations.
pub struct Core {
    pub store: Store,
    pub sealer: Sealer,
    pub hub: Hub,
    pub authority: Authority,
    pub throttle: Throttle,
    pub config: CoreConfig,
    /// Store operations agent connections may run at once: all but
    /// [`RESERVED_FOR_REQUESTS`] of the pool's connections. Ten thousand agents
    /// acknowledging a task queue here, not in the pool, so an API or console request
    /// waits for at most a few of them (before: 11–27 s for an autonomous task request
    /// at 10,000 devices on PostgreSQL, close to the agent's 30 s timeout; FLEET.md).
    pub agent_store_slots: tokio::sync::Semaphore,
    /// This process's name in `devices.connected_via`: its host, pid and a random part,
    /// so that processes sharing one PostgreSQL database tell their connections apart.
    pub instance: String,
    /// The server processes on the database heard from lately ([`Core::beat`]).
    live_processes: std::sync::RwLock<LiveProcesses>,
    /// The revocation list last signed, for the entries it names: anyone may fetch the
    /// list, and a fetch should not cost a signature while nothing changed.
    signed_revocation_list: std::sync::Mutex<Option<SignedRevocationList>>,
    /// [`CoreConfig::device_cert_lifetime_ms`], as it stands ([`Core::set_device_cert_lifetime`]).
    device_cert_lifetime_ms: std::sync::atomic::AtomicI64,
}

/// What a server process knows of the others on its database ([`Core::beat`]).
#[derive(Debug, Default)]
struct LiveProcesses {
    /// Those heard from within [`PROCESS_LIVE_FOR`].
    instances: std::collections::HashSet<String>,
    /// When a device naming one not among them last made this read again.
    unknown_read_at: Option<std::time::Instant>,
}

/// How often a server process says it is alive ([`Core::beat`]).
pub const PROCESS_BEAT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long after its last beat a process counts as alive: three beats.
pub const PROCESS_LIVE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Pool connections agent connections leave to requests (where the pool has more).
pub const RESERVED_FOR_REQUESTS: u32 = 3;

/// Where a request comes from, for the audit log and throttling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source: String,
    /// The request being served (`POST /api/v1/groups`), where there is one: what a
    /// refusal's audit entry names as attempted.
    pub request: Option<String>,
}

/// Name of the root administration group created on first start.
pub const ROOT_GROUP: &str = "Managed devices";

/// How many times a change of a policy or of a device's settings is applied again when
/// other changes keep landing between its read and its write.
const CHANGE_ATTEMPTS: usize = 16;

/// A policy's name as shown to people.
pub fn policy_name(group: &str) -> String {
    format!("Riposte policy ({group})")
}

/// A Threat Response update: absent fields keep their value (the group's own, or where
/// its policy has no such section yet, the value it inherits). Unknown fields are
/// refused: a misspelt one would otherwise change nothing and say "saved".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatResponsePatch {
    pub mode: Option<PolicyMode>,
    pub enabled: Option<bool>,
    pub actions: Option<Vec<Action>>,
    /// The special account's password in clear; checked against the account, then sealed.
    pub special_password: Option<String>,
}

/// A Sandbox integration update: absent fields keep their value, as for
/// [`ThreatResponsePatch`]; unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxPatch {
    pub mode: Option<PolicyMode>,
    pub sandboxes: Option<Vec<String>>,
    pub sandbox_ca_pem: Option<String>,
    pub watch: Option<Vec<String>>,
    pub request_timeout_secs: Option<u64>,
}

/// A policy as shown by the API: secrets replaced by a flag.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    pub group_id: i64,
    pub group: String,
    pub policy: String,
    pub threat_response: Option<PolicySection<ThreatResponse>>,
    pub special_password_set: bool,
    pub sandbox_integration: Option<PolicySection<SandboxIntegration>>,
    /// The policy above that enforces Threat Response, if one does: this policy's own
    /// section then has no effect (it may have been set before, or moved under it).
    pub threat_response_enforced_above: Option<String>,
    /// The same for Sandbox integration.
    pub sandbox_integration_enforced_above: Option<String>,
    /// Where this policy enforces Threat Response: the policies below that enforce it
    /// too, and so have no effect while this one does (set before this one was).
    pub threat_response_overrides_below: Vec<String>,
    /// The same for Sandbox integration.
    pub sandbox_integration_overrides_below: Vec<String>,
}

/// The refusal of a password given while the special account was being deleted.
fn special_deleted_error() -> ServiceError {
    ServiceError::Conflict(
        "the special account was deleted while this change was being saved: the password \
         was not kept; create the account again and give its new password"
            .into(),
    )
}

/// Group `g`'s policy `p` as the API shows it, `above` being what `g` inherits, and
/// `tree` and `policies` every group and policy (for the policies below it).
fn policy_view(
    g: riposte_model::GroupNode,
    p: PolicySettings,
    above: &EffectiveSettings,
    tree: &GroupTree,
    policies: &HashMap<i64, PolicySettings>,
) -> PolicyView {
    let enforces = |section: Option<PolicyMode>| section == Some(PolicyMode::Enforce);
    // The policies below `g` whose own `section` is Enforce, where `g`'s is too.
    let overridden = |section: fn(&PolicySettings) -> Option<PolicyMode>| -> Vec<String> {
        if !enforces(section(&p)) {
            return Vec::new();
        }
        tree.subtree(g.id)
            .into_iter()
            .filter(|&id| id != g.id)
            .filter(|id| {
                policies
                    .get(id)
                    .is_some_and(|below| enforces(section(below)))
            })
            .filter_map(|id| tree.get(id).map(|node| policy_name(&node.name)))
            .collect()
    };
    let threat_response_overrides_below =
        overridden(|p| p.threat_response.as_ref().map(|s| s.mode));
    let sandbox_integration_overrides_below =
        overridden(|p| p.sandbox_integration.as_ref().map(|s| s.mode));
    let enforcing = |prov: &Provenance| match prov {
        Provenance::Policy {
            policy,
            locked: true,
            ..
        } => Some(policy.clone()),
        _ => None,
    };
    PolicyView {
        threat_response_overrides_below,
        sandbox_integration_overrides_below,
        threat_response_enforced_above: enforcing(&above.threat_response.provenance),
        sandbox_integration_enforced_above: enforcing(&above.sandbox_integration.provenance),
        group_id: g.id,
        policy: policy_name(&g.name),
        group: g.name,
        special_password_set: p
            .threat_response
            .as_ref()
            .is_some_and(|s| s.value.special_password.is_some()),
        threat_response: p.threat_response.map(|s| PolicySection {
            mode: s.mode,
            value: s.value.redacted(),
        }),
        sandbox_integration: p.sandbox_integration,
    }
}

/// What the agent sends to create an autonomous task.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AutonomousRequest {
    pub device_id: i64,
    pub detection: riposte_proto::DetectionRecord,
}

/// The answer to an autonomous task request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutonomousAnswer {
    pub task_id: i64,
    pub group_id: i64,
    /// The group's name, for what the device tells its user (empty from an older
    /// server).
    #[serde(default)]
    pub group: String,
    /// True when an earlier detection of the same object already created the task.
    pub deduplicated: bool,
}

/// What an operator sends to create a task. Unknown fields are refused, as for the
/// patches: a misspelt one (an action, a scope) would otherwise be dropped unseen.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub name: String,
    pub group: String,
    pub iocs: Vec<IocDocument>,
    #[serde(default)]
    pub scope: ScanScope,
    #[serde(default)]
    pub actions: Vec<TaskAction>,
}

/// A name as typed, trimmed: 1 to `max` characters, no control characters and none of the
/// invisible ones (direction overrides, zero-width characters) with which a name could
/// fake a line of a listing or read as another ([`riposte_model::path_text::hidden`]).
fn check_name<'a>(what: &str, name: &'a str, max: usize) -> ServiceResult<&'a str> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > max
        || name.chars().any(riposte_model::path_text::hidden)
    {
        return Err(ServiceError::BadRequest(format!(
            "{what} must be 1 to {max} printable characters"
        )));
    }
    Ok(name)
}

/// A group name: as [`check_name`], and not `.` or `..`, which no URL can carry as a
/// path segment (clients resolve them away).
fn check_group_name(name: &str) -> ServiceResult<&str> {
    let name = check_name("a group name", name, 128)?;
    if name == "." || name == ".." {
        return Err(ServiceError::BadRequest(format!(
            "a group cannot be named '{name}'"
        )));
    }
    Ok(name)
}

/// Refuses IOC documents the devices could not load, before any task exists: a broken
/// document is the administrator's error to fix, not a failure on every device. So is a
/// task left with nothing to evaluate. STIX documents are read together, as the devices
/// read them: an update that only revokes an indicator of another is fine.
/// Checks a task's IOC documents as the devices will read them; returns what would be
/// left out of them (a YARA rule that does not compile, an `include`, a STIX indicator
/// set aside), for whoever creates the task to see.
fn check_ioc_documents(docs: &[IocDocument]) -> ServiceResult<Vec<String>> {
    let mut warnings = Vec::new();
    let bad = |doc: &IocDocument, e: riposte_ioc::Error| {
        ServiceError::BadRequest(format!("IOC document '{}' cannot be used: {e}", doc.name))
    };
    let mut stix = Vec::new();
    for doc in docs {
        match doc.format.as_str() {
            "openioc" => {
                let ioc = riposte_ioc::openioc::parse(&doc.content, &doc.name)
                    .map_err(|e| bad(doc, e))?;
                warnings.extend(unsupported_terms(&doc.name, std::slice::from_ref(&ioc)));
            }
            "stix" => stix.push(doc),
            "yara" => {
                let rules = riposte_ioc::yara::YaraRules::compile_str(&doc.content, &doc.name)
                    .map_err(|e| bad(doc, e))?;
                warnings.extend(
                    rules
                        .warnings()
                        .iter()
                        .map(|w| format!("{}: {w}", doc.name)),
                );
            }
            other => {
                return Err(ServiceError::BadRequest(format!(
                    "unknown IOC format '{other}'; use openioc, stix or yara"
                )))
            }
        }
    }
    if stix.is_empty() {
        return Ok(warnings);
    }
    let sources: Vec<(&str, &str)> = stix
        .iter()
        .map(|d| (d.content.as_str(), d.name.as_str()))
        .collect();
    let read = riposte_ioc::stix::parse_documents_noting(&sources, riposte_store::now_ms() / 1000)
        .map_err(|e| {
            // The error names its document; the message says which one anyway.
            ServiceError::BadRequest(format!("an IOC document cannot be used: {e}"))
        })?;
    let nothing_else = stix.len() == docs.len();
    if nothing_else && read.iter().all(|d| d.iocs.is_empty()) {
        // Devices would refuse the task for want of anything to look for.
        let set_aside: Vec<String> = stix
            .iter()
            .zip(&read)
            .flat_map(|(doc, d)| {
                d.set_aside
                    .iter()
                    .map(move |w| format!("{}: {w}", doc.name))
            })
            .collect();
        return Err(ServiceError::BadRequest(format!(
            "IOC document '{}' cannot be used: it holds no STIX indicator to evaluate{}",
            stix.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join("', '"),
            if set_aside.is_empty() {
                String::new()
            } else {
                format!(" ({})", riposte_ioc::first_of(&set_aside, 5))
            }
        )));
    }
    for (doc, d) in stix.iter().zip(&read) {
        warnings.extend(d.set_aside.iter().map(|w| format!("{}: {w}", doc.name)));
        warnings.extend(unsupported_terms(&doc.name, &d.iocs));
    }
    Ok(warnings)
}

/// One warning per indicator of document `doc` with terms no device can evaluate (an
/// event context, a Windows item, an expression this engine does not run): devices
/// report those indicators undetermined wherever the rest does not decide them, and
/// whoever creates the task should know before it runs.
fn unsupported_terms(doc: &str, iocs: &[riposte_ioc::model::Ioc]) -> Vec<String> {
    iocs.iter()
        .filter(|ioc| !ioc.unsupported.is_empty())
        .map(|ioc| {
            let terms: Vec<String> = ioc
                .unsupported
                .iter()
                .map(|u| format!("{} ({})", u.search, u.reason))
                .collect();
            format!(
                "{doc}: indicator '{}' has {} term{} that devices cannot evaluate, so it is \
                 undetermined where the rest does not decide it: {}",
                ioc.id,
                terms.len(),
                if terms.len() == 1 { "" } else { "s" },
                riposte_ioc::first_of(&terms, 3)
            )
        })
        .collect()
}

/// Result of enrolling a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub device_id: i64,
    pub cert_pem: String,
    pub ca_pem: String,
    pub agent_port: u16,
}

impl Core {
    pub fn new(
        store: Store,
        sealer: Sealer,
        authority: Authority,
        config: CoreConfig,
    ) -> Arc<Core> {
        let agent_slots = store
            .pool_size()
            .saturating_sub(RESERVED_FOR_REQUESTS)
            .max(1);
        let device_cert_lifetime_ms =
            std::sync::atomic::AtomicI64::new(config.device_cert_lifetime_ms);
        Arc::new(Core {
            store,
            sealer,
            hub: Hub::default(),
            authority,
            throttle: Throttle::new(),
            config,
            agent_store_slots: tokio::sync::Semaphore::new(agent_slots as usize),
            instance: format!(
                "{}:{}:{:016x}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim(),
                std::process::id(),
                rand::random::<u64>()
            ),
            live_processes: Default::default(),
            signed_revocation_list: Default::default(),
            device_cert_lifetime_ms,
        })
    }

    /// How long device certificates issued now are valid (at least an hour).
    pub fn device_cert_lifetime(&self) -> time::Duration {
        let ms = self
            .device_cert_lifetime_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        time::Duration::milliseconds(ms.max(3_600_000))
    }

    /// Changes how long device certificates issued from now on are valid; connected
    /// agents whose certificates now outlive it renew them at their next check.
    pub fn set_device_cert_lifetime(&self, ms: i64) {
        self.device_cert_lifetime_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// What a connection does about the certificate it was opened with (`fingerprint`),
    /// now: nothing, ask the agent to renew it, or end (it expired while connected, or
    /// it is no longer the device's: replaced by a renewal through another server
    /// process, whose connection's kick does not reach this one). A renewal is not asked
    /// for while one issued within [`RENEWAL_REISSUE_MS`] waits to be used: the agent
    /// that holds it is expected to connect with it, and whoever connects with the old
    /// key instead gets nothing.
    pub async fn certificate_check(
        &self,
        device_id: i64,
        fingerprint: &str,
        presented: &crate::pki::CertificateFacts,
    ) -> ServiceResult<CertificateCheck> {
        let now = time::OffsetDateTime::now_utc();
        if presented.not_after <= now {
            return Ok(CertificateCheck::Expired);
        }
        let device = self.store.device(device_id).await?;
        if device.revoked || device.cert_fingerprint != fingerprint {
            return Ok(CertificateCheck::Replaced);
        }
        let due = crate::pki::renewal_due(
            presented.not_before,
            presented.not_after,
            now,
            self.device_cert_lifetime(),
        );
        if !due {
            return Ok(CertificateCheck::Fine);
        }
        Ok(if renewal_waits(&device, self.config.renewal_reissue_ms) {
            CertificateCheck::Fine
        } else {
            CertificateCheck::Renew
        })
    }

    /// A connection for device `device_id` presented one of the device's own earlier
    /// certificates (signed by this CA, so issued to it) rather than its current one:
    /// raised as an alert (`device_certificate_reused`, once an hour per device), since
    /// the device itself moved to its renewed certificate, unless its data was restored
    /// from a backup, and whoever else holds the old key may be trying it. Not raised
    /// within [`CoreConfig::replaced_certificate_grace_ms`] of the renewal that replaced
    /// it. Returns whether an alert was recorded.
    pub async fn old_certificate_presented(
        &self,
        device_id: i64,
        presented: &crate::pki::CertificateFacts,
    ) -> ServiceResult<bool> {
        let device = self.store.device(device_id).await?;
        if device.revoked {
            return Ok(false);
        }
        let revocation = self.store.revoked_certificate(&presented.serial).await?;
        let replaced = match &revocation {
            Some(r) if r.device_id == device_id => {
                let since = riposte_store::now_ms() - r.revoked_ms;
                if since < self.config.replaced_certificate_grace_ms {
                    return Ok(false);
                }
                format!("replaced on {}", riposte_model::time::utc(r.revoked_ms))
            }
            _ => "not its current one".to_string(),
        };
        let message = format!(
            "a connection presented this device's earlier certificate (serial {}, {replaced}): \
             the device uses its renewed one, so unless its data was restored from a backup \
             its old key may be held by someone else; if so, revoke the device and enroll it \
             again",
            presented.serial
        );
        let recorded = self
            .store
            .add_alert_unless_recent(
                device_id,
                "device_certificate_reused",
                &message,
                3600 * 1000,
            )
            .await?;
        if recorded {
            tracing::warn!(device = device_id, serial = %presented.serial, "an earlier certificate of the device was presented");
        }
        Ok(recorded)
    }

    /// Signs a renewed certificate for device `device_id`, connected with the certificate
    /// `current` (fingerprint) and `presented`, over the key of `csr_pem`, which must be a
    /// new one. The device goes on using `current` until it connects with the new one,
    /// which then replaces it ([`Core::certificate_used`]): a device that loses the answer
    /// keeps working, and is given another an hour later.
    pub async fn renew_device_certificate(
        &self,
        device_id: i64,
        current: &str,
        presented: &crate::pki::CertificateFacts,
        csr_pem: &str,
    ) -> ServiceResult<String> {
        let key = crate::pki::csr_public_key(csr_pem)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        if key == presented.public_key {
            return Err(ServiceError::BadRequest(
                "a renewed certificate must be over a new key, not the current one".into(),
            ));
        }
        if renewal_waits(
            &self.store.device(device_id).await?,
            self.config.renewal_reissue_ms,
        ) {
            return Err(ServiceError::Conflict(format!(
                "device {device_id} was issued a renewed certificate within the hour that it \
                 has not used yet"
            )));
        }
        let (cert_pem, serial) = self
            .authority
            .sign_device_csr(csr_pem, device_id, self.device_cert_lifetime())
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let fingerprint = crate::pki::pem_fingerprint(&cert_pem)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let issued = IssuedCertificate {
            fingerprint,
            serial: Some(serial.clone()),
            expires_ms: crate::pki::pem_expires_ms(&cert_pem),
        };
        if !self
            .store
            .offer_renewed_certificate(device_id, current, &issued)
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "device {device_id} is revoked, or its certificate changed while it asked"
            )));
        }
        let _ = self
            .store
            .audit(
                &format!("device {device_id}"),
                "agent channel",
                "device_certificate_issued",
                &format!(
                    "device {device_id}: renewed certificate {serial}, to replace {} once used",
                    presented.serial
                ),
            )
            .await;
        Ok(cert_pem)
    }

    /// Device `device_id` connected with the certificate `fingerprint`: if that is its
    /// renewed certificate, it replaces the current one, which is revoked. Returns
    /// whether it did.
    pub async fn certificate_used(&self, device_id: i64, fingerprint: &str) -> ServiceResult<bool> {
        let Some((replaced, new)) = self
            .store
            .promote_renewed_certificate(device_id, fingerprint)
            .await?
        else {
            return Ok(false);
        };
        let _ = self
            .store
            .audit(
                &format!("device {device_id}"),
                "agent channel",
                "device_certificate_renewed",
                &format!(
                    "device {device_id}: certificate {} replaces {}, which is revoked",
                    new.as_deref().unwrap_or("?"),
                    replaced.as_deref().unwrap_or("(serial unknown)")
                ),
            )
            .await;
        tracing::info!(
            device = device_id,
            "the device connected with its renewed certificate"
        );
        Ok(true)
    }

    /// Whether the device is connected to a server process: this one, or another
    /// sharing the database that holds its connection, is alive ([`Core::beat`]) and
    /// refreshed "last seen" within two refreshes. A process that died stops beating:
    /// its devices show disconnected within [`PROCESS_LIVE_FOR`], not when their "last
    /// seen" grows old.
    pub fn is_connected(&self, device: &riposte_store::DeviceRow) -> bool {
        if self.hub.is_connected(device.id) {
            return true;
        }
        let fresh_since = riposte_store::now_ms() - 2 * self.config.seen_refresh_ms.max(0) - 60_000;
        let live = self
            .live_processes
            .read()
            .unwrap_or_else(|p| p.into_inner());
        device.connected_via.as_deref().is_some_and(|via| {
            via != self.instance && live.instances.contains(via) && device.last_seen >= fresh_since
        })
    }

    /// Tells the other server processes on the database that this one is alive, and
    /// learns which of them are ([`Core::is_connected`]). Called every
    /// [`PROCESS_BEAT`].
    pub async fn beat(&self) -> ServiceResult<()> {
        let now = riposte_store::now_ms();
        let live_for = PROCESS_LIVE_FOR.as_millis() as i64;
        let live = self
            .store
            .beat_server_process(&self.instance, now, now - live_for)
            .await?;
        self.set_live_processes(live);
        Ok(())
    }

    fn set_live_processes(&self, live: Vec<String>) {
        self.live_processes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .instances = live.into_iter().collect();
    }

    /// Reads which server processes are alive again before `devices` are shown, where
    /// one of them names a process not known alive (one started since the last beat
    /// shows its devices at once; a dead one is asked about once a second at most).
    async fn refresh_live_processes(&self, devices: &[riposte_store::DeviceRow]) {
        let (unknown, read_at) = {
            let live = self
                .live_processes
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let unknown = devices.iter().any(|d| {
                d.connected_via
                    .as_deref()
                    .is_some_and(|via| via != self.instance && !live.instances.contains(via))
            });
            (unknown, live.unknown_read_at)
        };
        if !unknown || read_at.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
            return;
        }
        self.live_processes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .unknown_read_at = Some(std::time::Instant::now());
        let now = riposte_store::now_ms();
        match self
            .store
            .live_server_processes(now - PROCESS_LIVE_FOR.as_millis() as i64)
            .await
        {
            Ok(live) => self.set_live_processes(live),
            Err(e) => tracing::warn!("cannot read which server processes are alive: {e}"),
        }
    }

    /// [`authorize`], with a refusal written to the audit log: the special account
    /// calling anything but its one operation is a sign its device is compromised, and a
    /// person's attempts beyond their role are worth seeing.
    pub(crate) async fn allow(&self, c: &Caller, op: Operation) -> ServiceResult<()> {
        if let Err(denied) = authorize(&c.principal, op) {
            // What was attempted, with its target where the request names one.
            let detail = match &c.request {
                Some(request) => format!("{request} ({op:?}: {})", op.describe()),
                None => format!("{op:?}: {}", op.describe()),
            };
            self.audit(c, "refused", &detail).await;
            return Err(denied.into());
        }
        Ok(())
    }

    /// Appends to the audit log as `caller`; a failure to write is logged, not returned.
    pub(crate) async fn audit(&self, caller: &Caller, action: &str, detail: &str) {
        if let Err(e) = self
            .store
            .audit(
                caller.principal.display_name(),
                &caller.source,
                action,
                detail,
            )
            .await
        {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    // ----- authentication -------------------------------------------------------------

    /// Checks a name and password; throttled per account and source.
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        source: &str,
    ) -> ServiceResult<Principal> {
        Ok(self.verify_password(user, password, source).await?.0)
    }

    /// [`Core::check_password`], returning also the hash the password was checked
    /// against: what follows (a session, a password change) is bound to it, so that it
    /// cannot outlive a password change made meanwhile.
    async fn verify_password(
        &self,
        user: &str,
        password: &str,
        source: &str,
    ) -> ServiceResult<(Principal, String)> {
        // How failures are counted, and whom they lock out: `throttle`'s module docs.
        // A name no account can have (over 64 characters, or with control or invisible
        // characters) is counted for its source only, and recorded cut and escaped: an
        // anonymous caller must not be able to fill the store or forge audit lines.
        let plausible =
            user.chars().count() <= 64 && !user.chars().any(riposte_model::path_text::hidden);
        let target = if !plausible {
            Target::NoAccount
        } else if user == SPECIAL_ACCOUNT_NAME {
            Target::Special
        } else {
            Target::Account(user)
        };
        let recorded: String = if plausible {
            user.to_string()
        } else {
            use riposte_model::path_text::{shortened, shown};
            shortened(&shown(user), 65).into_owned()
        };
        let _one_at_a_time = self.throttle.serialize(source).await;
        let attempt = self
            .throttle
            .admit(&self.store, target, source)
            .await?
            .map_err(|lockout| ServiceError::TooManyAttempts(lockout.to_string()))?;
        let (hash, principal) = if !plausible {
            // No account has such a name: not even looked up (PostgreSQL refuses a NUL).
            (secrets::dummy_hash().to_string(), None)
        } else if user == SPECIAL_ACCOUNT_NAME {
            match self.store.special_account().await? {
                Some(a) => (a.password_hash, Some(Principal::Special)),
                None => (secrets::dummy_hash().to_string(), None),
            }
        } else {
            match self.store.account_by_name(user).await? {
                Some(a) if a.kind == AccountKind::Admin => (
                    a.password_hash,
                    Some(Principal::Account {
                        name: a.name,
                        role: a.role,
                    }),
                ),
                _ => (secrets::dummy_hash().to_string(), None),
            }
        };
        let password = password.to_string();
        let slot = self.throttle.verify_slot().await;
        let checked = hash.clone();
        let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&password, &checked))
            .await
            .unwrap_or(false);
        drop(slot);
        match (ok, principal) {
            (true, Some(p)) => {
                self.throttle
                    .succeeded(&self.store, target, source, attempt)
                    .await?;
                Ok((p, hash))
            }
            (_, None) if user == SPECIAL_ACCOUNT_NAME => {
                self.throttle
                    .failed(&self.store, target, source, attempt)
                    .await?;
                let _ = self
                    .store
                    .audit(
                        user,
                        source,
                        "login_failed",
                        "the special account does not exist",
                    )
                    .await;
                Err(ServiceError::Unauthorized(
                    "the special account does not exist on this server; an administrator must create it".into(),
                ))
            }
            _ => {
                self.throttle
                    .failed(&self.store, target, source, attempt)
                    .await?;
                let _ = self
                    .store
                    .audit(&recorded, source, "login_failed", "wrong name or password")
                    .await;
                Err(ServiceError::Unauthorized(
                    "wrong user name or password".into(),
                ))
            }
        }
    }

    /// Logs in: returns a session token and its expiry.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: &str,
    ) -> ServiceResult<(String, i64, Principal)> {
        let (principal, checked_hash) = self.verify_password(user, password, source).await?;
        if principal == Principal::Special {
            // Recorded as any other refusal of the special account: whoever tried holds
            // its right password, most likely taken from a device.
            let caller = Caller {
                principal: Principal::Special,
                source: source.to_string(),
                request: None,
            };
            self.audit(&caller, "refused", "login (a session)").await;
            // Its one right is one request with its password (Basic): a session would
            // only be a second credential to steal, and the console has nothing for it.
            return Err(ServiceError::Forbidden(
                "the special account cannot log in: it may only create autonomous IOC scan \
                 tasks, with its password on each request"
                    .into(),
            ));
        }
        let account = self
            .store
            .account_by_name(user)
            .await?
            .ok_or_else(|| ServiceError::Unauthorized("wrong user name or password".into()))?;
        let token = secrets::random_token();
        let expires = now_ms() + self.config.session_ms;
        let opened = self
            .store
            .create_session(
                &secrets::token_hash(&token),
                account.id,
                &checked_hash,
                expires,
            )
            .await?;
        if !opened {
            // The password was changed (or the account deleted) while this one was
            // checked: the password it was checked against no longer opens anything.
            return Err(ServiceError::Unauthorized(
                "wrong user name or password".into(),
            ));
        }
        let caller = Caller {
            principal: principal.clone(),
            source: source.to_string(),
            request: None,
        };
        self.audit(&caller, "login", "").await;
        Ok((token, expires, principal))
    }

    /// The principal of a session token.
    pub async fn session(&self, token: &str) -> ServiceResult<Principal> {
        let s = self
            .store
            .session(&secrets::token_hash(token))
            .await?
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "the session has expired or is not valid; log in again".into(),
                )
            })?;
        Ok(match s.account.kind {
            AccountKind::Special => Principal::Special,
            AccountKind::Admin => Principal::Account {
                name: s.account.name,
                role: s.account.role,
            },
        })
    }

    /// Ends a session.
    pub async fn logout(&self, token: &str) -> ServiceResult<()> {
        Ok(self
            .store
            .delete_session(&secrets::token_hash(token))
            .await?)
    }

    // ----- first start ----------------------------------------------------------------

    /// Creates the root group and, while no account has the Administrator role (an empty
    /// database, or one whose administrators were all deleted), an administrator: named
    /// `admin`, or `admin-2`, `admin-3`… when another account holds that name in any case,
    /// with `admin_password` or a generated one (returned, to be shown once).
    ///
    /// A generated password is written to `password_file` (mode 0600) before the account
    /// exists, so that a start that fails or is killed after creating it does not lose
    /// the only password the administrator could log in with.
    pub async fn bootstrap(
        &self,
        admin_password: Option<String>,
        password_file: Option<&std::path::Path>,
    ) -> ServiceResult<Option<CreatedAdmin>> {
        if self.store.groups().await?.is_empty() {
            // Another process starting on the same database may create it first.
            match self.store.create_group(ROOT_GROUP, None).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.store.count_admins().await? > 0 {
            return Ok(None);
        }
        let first_start = self.store.accounts().await?.is_empty();
        let (password, generated) = match admin_password {
            Some(p) => {
                validate_admin_password(&p)?;
                (p, false)
            }
            None => (secrets::random_token()[..20].to_string(), true),
        };
        let hash = secrets::hash_password(&password);
        let file = password_file.filter(|_| generated);
        if let Some(f) = file {
            crate::files::write_private_file(f, format!("{password}\n").as_bytes()).map_err(
                |e| ServiceError::Internal(format!("cannot write {}: {e}", f.display())),
            )?;
        }
        // Checked again under the accounts' lock: a process starting beside this one
        // may have created the administrator meanwhile.
        let Some(name) = self.store.create_first_administrator(&hash).await? else {
            if let Some(f) = file {
                let _ = std::fs::remove_file(f);
            }
            return Ok(None);
        };
        let why = if first_start {
            "first start"
        } else {
            "no account had the Administrator role"
        };
        self.store
            .audit(
                "server",
                "local",
                "bootstrap",
                &format!("created administrator account {name} ({why})"),
            )
            .await?;
        tracing::warn!(account = %name, "{why}: created an administrator account");
        Ok(Some(CreatedAdmin {
            name,
            generated_password: generated.then_some(password),
            first_start,
        }))
    }

    // ----- groups and devices -----------------------------------------------------------

    pub async fn groups(&self, c: &Caller) -> ServiceResult<Vec<riposte_model::GroupNode>> {
        self.allow(c, Operation::ReadInventory).await?;
        Ok(self.store.groups().await?)
    }

    pub async fn create_group(
        &self,
        c: &Caller,
        name: &str,
        parent: Option<&str>,
    ) -> ServiceResult<i64> {
        self.allow(c, Operation::ChangeGroups).await?;
        let name = check_group_name(name)?;
        let parent = self
            .store
            .group_by_name(parent.unwrap_or(ROOT_GROUP))
            .await?;
        let id = self.store.create_group(name, Some(parent.id)).await?;
        self.audit(c, "group_create", &format!("{name} under {}", parent.name))
            .await;
        Ok(id)
    }

    /// A group other than the root, by name, for a change to the tree: the root group
    /// is where new groups and enrolled devices go by default, found by its name.
    async fn changeable_group(&self, name: &str) -> ServiceResult<riposte_model::GroupNode> {
        let group = self.store.group_by_name(name).await?;
        if group.name == ROOT_GROUP && group.parent.is_none() {
            return Err(ServiceError::Conflict(format!(
                "the root group '{ROOT_GROUP}' cannot be renamed, moved or deleted"
            )));
        }
        Ok(group)
    }

    /// Renames a group. Its devices are sent their settings again: the settings name
    /// the groups whose policies they come from.
    pub async fn rename_group(&self, c: &Caller, group: &str, new_name: &str) -> ServiceResult<()> {
        self.allow(c, Operation::ChangeGroups).await?;
        let new_name = check_group_name(new_name)?;
        let g = self.changeable_group(group).await?;
        self.store.rename_group(g.id, new_name).await?;
        self.audit(c, "group_rename", &format!("{} to {new_name}", g.name))
            .await;
        self.push_settings_for_subtree(g.id).await
    }

    /// Moves a group, with its subgroups and devices, under `parent`: their devices
    /// now inherit `parent`'s policies, and are sent their settings again.
    pub async fn move_group(&self, c: &Caller, group: &str, parent: &str) -> ServiceResult<()> {
        self.allow(c, Operation::ChangeGroups).await?;
        let g = self.changeable_group(group).await?;
        let p = self.store.group_by_name(parent).await?;
        self.store.move_group(g.id, p.id).await?;
        self.audit(c, "group_move", &format!("{} under {}", g.name, p.name))
            .await;
        self.push_settings_for_subtree(g.id).await
    }

    /// Deletes a group no device, subgroup or task refers to, with its policy and
    /// enrollment tokens.
    pub async fn delete_group(&self, c: &Caller, group: &str) -> ServiceResult<()> {
        self.allow(c, Operation::ChangeGroups).await?;
        let g = self.changeable_group(group).await?;
        self.store.delete_group(g.id).await?;
        self.audit(c, "group_delete", &g.name).await;
        Ok(())
    }

    pub async fn group_by_name(
        &self,
        c: &Caller,
        name: &str,
    ) -> ServiceResult<riposte_model::GroupNode> {
        self.allow(c, Operation::ReadInventory).await?;
        Ok(self.store.group_by_name(name).await?)
    }

    pub async fn devices(
        &self,
        c: &Caller,
        group: Option<&str>,
        search: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> ServiceResult<Vec<riposte_store::DeviceRow>> {
        self.allow(c, Operation::ReadInventory).await?;
        let limit = page_limit(limit, 1000)?;
        if offset < 0 {
            return Err(ServiceError::BadRequest(format!(
                "offset must be 0 or more, not {offset}"
            )));
        }
        let groups = match group {
            Some(g) => {
                let g = self.store.group_by_name(g).await?;
                Some(self.store.group_tree().await?.subtree(g.id))
            }
            None => None,
        };
        let devices = self
            .store
            .devices(groups.as_deref(), search, offset, limit)
            .await?;
        self.refresh_live_processes(&devices).await;
        Ok(devices)
    }

    pub async fn device(
        &self,
        c: &Caller,
        reference: &str,
    ) -> ServiceResult<riposte_store::DeviceRow> {
        self.allow(c, Operation::ReadInventory).await?;
        let device = self.store.device_by_ref(reference).await?;
        self.refresh_live_processes(std::slice::from_ref(&device))
            .await;
        Ok(device)
    }

    pub async fn move_device(&self, c: &Caller, reference: &str, group: &str) -> ServiceResult<()> {
        self.allow(c, Operation::MoveDevice).await?;
        let device = self.store.device_by_ref(reference).await?;
        let group = self.store.group_by_name(group).await?;
        self.store.move_device(device.id, group.id).await?;
        self.audit(
            c,
            "device_move",
            &format!("device {} to {}", device.id, group.name),
        )
        .await;
        self.push_settings(&[device.id]).await?;
        Ok(())
    }

    /// The CA's current certificate revocation list (PEM), naming every revoked
    /// device's certificate. Public: it holds serial numbers and dates only.
    ///
    /// A list is signed again when its entries change, or once it is an hour old (well
    /// inside its validity, [`crate::pki::CRL_VALIDITY`]); in between every fetch gets
    /// the same one.
    pub async fn revocation_list(&self) -> ServiceResult<String> {
        // Certificates past their end are refused anyway: the list does not grow with
        // every renewal for ever.
        let revoked: Vec<(String, i64)> = self
            .store
            .revoked_certificates_valid_at(now_ms())
            .await?
            .into_iter()
            .map(|r| (r.serial, r.revoked_ms))
            .collect();
        let now = riposte_store::now_ms();
        let mut signed = self
            .signed_revocation_list
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = signed.as_ref() {
            if s.entries == revoked && now - s.signed_ms < REVOCATION_LIST_RESIGN_MS {
                return Ok(s.pem.clone());
            }
        }
        let pem = self
            .authority
            .revocation_list(&revoked)
            .map_err(|e| ServiceError::Internal(format!("signing the revocation list: {e}")))?;
        *signed = Some(SignedRevocationList {
            entries: revoked,
            signed_ms: now,
            pem: pem.clone(),
        });
        Ok(pem)
    }

    /// Revokes a device. Returns whether its certificate is on the revocation list that
    /// sandboxes check: not yet for a device enrolled before serials were kept and not
    /// connected since (it is listed once it connects).
    pub async fn revoke_device(&self, c: &Caller, reference: &str) -> ServiceResult<bool> {
        self.allow(c, Operation::RevokeDevice).await?;
        let device = self.store.device_by_ref(reference).await?;
        self.store.revoke_device(device.id).await?;
        self.hub.kick(device.id);
        // The connection may be held by another server process sharing the database.
        if let Err(e) = self.store.notify_kick(device.id).await {
            tracing::warn!("cannot tell other server processes of the revocation: {e}");
        }
        self.audit(c, "device_revoke", &format!("device {}", device.id))
            .await;
        Ok(self.store.cert_serial_known(device.id).await?)
    }

    // ----- settings ---------------------------------------------------------------------

    async fn settings_context(&self) -> ServiceResult<(GroupTree, HashMap<i64, PolicySettings>)> {
        let tree = self.store.group_tree().await?;
        let policies = self.store.policies().await?.into_iter().collect();
        Ok((tree, policies))
    }

    fn compute(
        tree: &GroupTree,
        policies: &HashMap<i64, PolicySettings>,
        group_id: i64,
        local: &LocalSettings,
    ) -> ServiceResult<EffectiveSettings> {
        let path = tree
            .path_to(group_id)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let names: Vec<String> = path
            .iter()
            .map(|g| policy_name(tree.get(*g).map(|n| n.name.as_str()).unwrap_or("?")))
            .collect();
        let path: Vec<PathPolicy<'_>> = path
            .iter()
            .zip(&names)
            .map(|(g, n)| PathPolicy {
                group_id: *g,
                policy_name: n,
                settings: policies.get(g),
            })
            .collect();
        Ok(effective_settings(&path, local))
    }

    /// A device's effective settings (with the sealed secret, for internal use).
    pub async fn effective_for(
        &self,
        device: &riposte_store::DeviceRow,
    ) -> ServiceResult<EffectiveSettings> {
        let (tree, policies) = self.settings_context().await?;
        Self::compute(&tree, &policies, device.group_id, &device.local_settings)
    }

    /// A device's effective settings with provenance, secrets redacted.
    pub async fn device_settings(
        &self,
        c: &Caller,
        reference: &str,
    ) -> ServiceResult<(riposte_store::DeviceRow, EffectiveSettings)> {
        self.allow(c, Operation::ReadInventory).await?;
        let device = self.store.device_by_ref(reference).await?;
        let eff = self.effective_for(&device).await?;
        Ok((device, eff.redacted()))
    }

    /// Computes and queues the effective settings of these devices, then wakes them.
    pub async fn push_settings(&self, device_ids: &[i64]) -> ServiceResult<()> {
        let (tree, policies) = self.settings_context().await?;
        for id in device_ids {
            let device = self.store.device(*id).await?;
            if device.revoked {
                continue;
            }
            let eff = Self::compute(&tree, &policies, device.group_id, &device.local_settings)?;
            // Queued sealed: the outbox is a table a backup or a dump carries around, and
            // an offline device's row can wait there for weeks. It is opened only as it
            // is sent (channel::deliver).
            let special_password = if eff.threat_response.value.needs_special_password() {
                eff.threat_response
                    .value
                    .special_password
                    .as_deref()
                    .map(|sealed| format!("{SEALED_PREFIX}{sealed}"))
            } else {
                None
            };
            let delivery = Delivery::Settings {
                response_group: eff.response_group(device.group_id),
                settings: eff.redacted(),
                special_password,
            };
            let payload = serde_json::to_string(&delivery)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            self.store
                .enqueue(*id, KIND_SETTINGS, None, &payload)
                .await?;
        }
        self.wake(device_ids).await;
        Ok(())
    }

    /// Wakes these devices' connections: here through the hub, and in the other server
    /// processes sharing a PostgreSQL database through `NOTIFY`.
    pub async fn wake(&self, device_ids: &[i64]) {
        for d in device_ids {
            self.hub.wake(*d);
        }
        if let Err(e) = self.store.notify_devices(device_ids).await {
            tracing::warn!("cannot notify other server processes: {e}");
        }
    }

    async fn push_settings_for_subtree(&self, group_id: i64) -> ServiceResult<()> {
        let groups = self.store.group_tree().await?.subtree(group_id);
        let mut offset = 0;
        loop {
            let devices = self
                .store
                .devices(Some(&groups), None, offset, 1000)
                .await?;
            if devices.is_empty() {
                break;
            }
            let ids: Vec<i64> = devices.iter().map(|d| d.id).collect();
            self.push_settings(&ids).await?;
            offset += devices.len() as i64;
        }
        Ok(())
    }

    pub async fn policy(&self, c: &Caller, group: &str) -> ServiceResult<PolicyView> {
        self.allow(c, Operation::ReadInventory).await?;
        let g = self.store.group_by_name(group).await?;
        let (tree, policies) = self.settings_context().await?;
        let p = policies.get(&g.id).cloned().unwrap_or_default();
        let above = match g.parent {
            Some(parent) => Self::compute(&tree, &policies, parent, &LocalSettings::default())?,
            None => riposte_model::settings::effective_settings(&[], &LocalSettings::default()),
        };
        Ok(policy_view(g, p, &above, &tree, &policies))
    }

    /// Every group's policy, in the order of [`Core::groups`]; the tree and the policies
    /// are read once, not once per group.
    pub async fn policies(&self, c: &Caller) -> ServiceResult<Vec<PolicyView>> {
        self.allow(c, Operation::ReadInventory).await?;
        let (tree, policies) = self.settings_context().await?;
        let mut out = Vec::new();
        for g in self.store.groups().await? {
            let above = match g.parent {
                Some(parent) => Self::compute(&tree, &policies, parent, &LocalSettings::default())?,
                None => riposte_model::settings::effective_settings(&[], &LocalSettings::default()),
            };
            let p = policies.get(&g.id).cloned().unwrap_or_default();
            out.push(policy_view(g, p, &above, &tree, &policies));
        }
        Ok(out)
    }

    /// Whether `patch` carried the special password of an account that is gone now:
    /// deleted after the password was checked and before the value holding it was
    /// stored, so that the deletion's clean-up may have missed it. Looked at after the
    /// store; the caller then takes the password out again.
    async fn special_deleted_meanwhile(&self, patch: &ThreatResponsePatch) -> ServiceResult<bool> {
        Ok(patch.special_password.is_some() && self.store.special_account().await?.is_none())
    }

    /// The special password a patch gives, checked against the special account and
    /// sealed for storing; `None` where the patch gives none. Checked once per request,
    /// before the stored value is read, so that a change retried after a concurrent one
    /// does not check it again.
    async fn sealed_special_password(
        &self,
        patch: &ThreatResponsePatch,
    ) -> ServiceResult<Option<String>> {
        let Some(pw) = &patch.special_password else {
            return Ok(None);
        };
        let special = self.store.special_account().await?.ok_or_else(|| {
            ServiceError::BadRequest(
                "the special account does not exist yet; create it first (special-account create)"
                    .into(),
            )
        })?;
        let hash = special.password_hash.clone();
        let pw2 = pw.clone();
        let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&pw2, &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(ServiceError::BadRequest(
                "the administration server password does not match the special account's password"
                    .into(),
            ));
        }
        Ok(Some(self.sealer.seal(pw)))
    }

    /// Applies a patch to Threat Response values; `sealed` is the patch's special
    /// password as [`Core::sealed_special_password`] checked it.
    fn apply_threat_response(
        &self,
        current: ThreatResponse,
        patch: &ThreatResponsePatch,
        sealed: Option<&str>,
    ) -> ServiceResult<ThreatResponse> {
        let mut tr = current;
        if let Some(e) = patch.enabled {
            tr.enabled = e;
        }
        if let Some(a) = &patch.actions {
            tr.actions = a.iter().copied().collect();
        }
        if let Some(sealed) = sealed {
            tr.special_password = Some(sealed.to_string());
        }
        if tr.needs_special_password() {
            let valid = tr
                .special_password
                .as_deref()
                .and_then(|s| self.sealer.open(s));
            if valid.is_none() {
                return Err(ServiceError::BadRequest(
                    "group actions need the special account's password (authentication on the administration server)".into(),
                ));
            }
        }
        Ok(tr)
    }

    pub async fn set_policy_threat_response(
        &self,
        c: &Caller,
        group: &str,
        patch: &ThreatResponsePatch,
    ) -> ServiceResult<PolicyView> {
        self.allow(c, Operation::ChangePolicy).await?;
        if patch.mode.is_none()
            && patch.enabled.is_none()
            && patch.actions.is_none()
            && patch.special_password.is_none()
        {
            return Err(ServiceError::BadRequest(
                "nothing to change: give mode, enabled, actions or special_password".into(),
            ));
        }
        let g = self.store.group_by_name(group).await?;
        let inherited = self.inherited(&g).await?;
        self.refuse_if_enforced_above(&g, &inherited.threat_response.provenance, patch.mode)?;
        let sealed = self.sealed_special_password(patch).await?;
        let p = self
            .change_policy(g.id, |mut p| {
                let current = p.threat_response.clone().unwrap_or(PolicySection {
                    mode: PolicyMode::Undefined,
                    value: inherited.threat_response.value.clone(),
                });
                let value = self.apply_threat_response(current.value, patch, sealed.as_deref())?;
                p.threat_response = Some(PolicySection {
                    mode: patch.mode.unwrap_or(current.mode),
                    value,
                });
                Ok(p)
            })
            .await?;
        if self.special_deleted_meanwhile(patch).await? {
            // Only the password this change wrote: another one would be as useless, but
            // taking it is the deletion's business, not this change's.
            self.change_policy(g.id, |mut p| {
                if let Some(section) = p.threat_response.as_mut() {
                    if section.value.special_password == sealed {
                        section.value.special_password = None;
                    }
                }
                Ok(p)
            })
            .await?;
            return Err(special_deleted_error());
        }
        // Said in words: the value's debug form would show the password left out as
        // `None`, as if none were set.
        let detail = match &p.threat_response {
            Some(s) => format!(
                "{} threat_response: mode {:?}, enabled {}, actions [{}], special password {}{}",
                g.name,
                s.mode,
                s.value.enabled,
                s.value
                    .actions
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if s.value.special_password.is_some() {
                    "set"
                } else {
                    "not set"
                },
                if patch.special_password.is_some() {
                    " (given in this change)"
                } else {
                    ""
                }
            ),
            None => format!("{} threat_response", g.name),
        };
        self.audit(c, "policy_set", &detail).await;
        self.push_settings_for_subtree(g.id).await?;
        self.policy(c, group).await
    }

    pub async fn set_policy_sandbox(
        &self,
        c: &Caller,
        group: &str,
        patch: &SandboxPatch,
    ) -> ServiceResult<PolicyView> {
        self.allow(c, Operation::ChangePolicy).await?;
        if patch.mode.is_none()
            && patch.sandboxes.is_none()
            && patch.sandbox_ca_pem.is_none()
            && patch.watch.is_none()
            && patch.request_timeout_secs.is_none()
        {
            return Err(ServiceError::BadRequest(
                "nothing to change: give mode, sandboxes, sandbox_ca_pem, watch or request_timeout_secs".into(),
            ));
        }
        let g = self.store.group_by_name(group).await?;
        let inherited = self.inherited(&g).await?;
        self.refuse_if_enforced_above(&g, &inherited.sandbox_integration.provenance, patch.mode)?;
        self.change_policy(g.id, |mut p| {
            let current = p.sandbox_integration.clone().unwrap_or(PolicySection {
                mode: PolicyMode::Undefined,
                value: inherited.sandbox_integration.value.clone(),
            });
            let value = apply_sandbox_patch(current.value, patch)?;
            p.sandbox_integration = Some(PolicySection {
                mode: patch.mode.unwrap_or(current.mode),
                value,
            });
            Ok(p)
        })
        .await?;
        self.audit(c, "policy_set", &format!("{} sandbox_integration", g.name))
            .await;
        self.push_settings_for_subtree(g.id).await?;
        self.policy(c, group).await
    }

    /// Applies `change` to a group's stored policy (an empty one where it has none) and
    /// stores the result, unless another change landed since it was read: then applies
    /// `change` again to what is stored now. Two administrators (or two server
    /// processes) changing different fields at once both hold; neither is told "saved"
    /// while the other silently undoes it. Returns the policy stored.
    async fn change_policy(
        &self,
        group_id: i64,
        mut change: impl FnMut(PolicySettings) -> ServiceResult<PolicySettings>,
    ) -> ServiceResult<PolicySettings> {
        for _ in 0..CHANGE_ATTEMPTS {
            let (stored, seen) = self.store.policy_for_change(group_id).await?;
            let changed = change(stored)?;
            if self
                .store
                .replace_policy(group_id, seen.as_deref(), &changed)
                .await?
            {
                return Ok(changed);
            }
        }
        Err(ServiceError::Conflict(
            "the policy kept changing while this change was applied; nothing was changed, \
             try again"
                .into(),
        ))
    }

    /// [`Core::change_policy`] for a device's own settings.
    async fn change_local_settings(
        &self,
        device_id: i64,
        mut change: impl FnMut(LocalSettings) -> ServiceResult<LocalSettings>,
    ) -> ServiceResult<LocalSettings> {
        for _ in 0..CHANGE_ATTEMPTS {
            let (stored, seen) = self.store.local_settings_for_change(device_id).await?;
            let changed = change(stored)?;
            if self
                .store
                .replace_local_settings(device_id, &seen, &changed)
                .await?
            {
                return Ok(changed);
            }
        }
        Err(ServiceError::Conflict(
            "the device's settings kept changing while this change was applied; nothing was \
             changed, try again"
                .into(),
        ))
    }

    /// What group `g` inherits from the policies above it (its parent's settings for a
    /// device with no local values; product defaults at the root).
    async fn inherited(
        &self,
        g: &riposte_model::groups::GroupNode,
    ) -> ServiceResult<EffectiveSettings> {
        let Some(parent) = g.parent else {
            return Ok(riposte_model::settings::effective_settings(
                &[],
                &LocalSettings::default(),
            ));
        };
        let (tree, policies) = self.settings_context().await?;
        Self::compute(&tree, &policies, parent, &LocalSettings::default())
    }

    /// Refuses to set a section to Enforce where a policy above already enforces it:
    /// that one wins for every device below, so the change would say "saved" and do
    /// nothing.
    fn refuse_if_enforced_above(
        &self,
        g: &riposte_model::groups::GroupNode,
        inherited: &Provenance,
        mode: Option<PolicyMode>,
    ) -> ServiceResult<()> {
        if let (
            Provenance::Policy {
                policy,
                locked: true,
                ..
            },
            Some(PolicyMode::Enforce),
        ) = (inherited, mode)
        {
            return Err(ServiceError::Conflict(format!(
                "the policy {policy} above group {} enforces this section: its values hold for every device below, so it cannot be enforced here; change it there",
                g.name
            )));
        }
        Ok(())
    }

    /// Changes a device's local Threat Response values; refused when a policy enforces them.
    pub async fn set_device_threat_response(
        &self,
        c: &Caller,
        reference: &str,
        patch: &ThreatResponsePatch,
    ) -> ServiceResult<EffectiveSettings> {
        self.allow(c, Operation::ChangeDeviceSettings).await?;
        if patch.mode.is_some() {
            return Err(ServiceError::BadRequest(
                "mode is a policy's switch (Undefined or Enforce); a device's own value is \
                 given with enabled, actions and special_password, and deleting it returns \
                 the device to what its policies say"
                    .into(),
            ));
        }
        if patch.enabled.is_none() && patch.actions.is_none() && patch.special_password.is_none() {
            return Err(ServiceError::BadRequest(
                "nothing to change: give enabled, actions or special_password".into(),
            ));
        }
        let mut device = self.store.device_by_ref(reference).await?;
        let eff = self.effective_for(&device).await?;
        if let Provenance::Policy {
            policy,
            locked: true,
            ..
        } = &eff.threat_response.provenance
        {
            return Err(ServiceError::Conflict(format!(
                "Threat Response on this device is enforced by {policy}; change the policy instead"
            )));
        }
        let sealed = self.sealed_special_password(patch).await?;
        device.local_settings = self
            .change_local_settings(device.id, |mut local| {
                let current = local
                    .threat_response
                    .clone()
                    .unwrap_or(eff.threat_response.value.clone());
                let value = self.apply_threat_response(current, patch, sealed.as_deref())?;
                local.threat_response = Some(value);
                Ok(local)
            })
            .await?;
        if self.special_deleted_meanwhile(patch).await? {
            self.change_local_settings(device.id, |mut local| {
                if let Some(tr) = local.threat_response.as_mut() {
                    if tr.special_password == sealed {
                        tr.special_password = None;
                    }
                }
                Ok(local)
            })
            .await?;
            return Err(special_deleted_error());
        }
        self.audit(
            c,
            "device_settings_set",
            &format!("device {} threat_response", device.id),
        )
        .await;
        self.push_settings(&[device.id]).await?;
        Ok(self.effective_for(&device).await?.redacted())
    }

    /// Removes a device's own Threat Response value: it follows its policies again.
    /// Says whether there was one.
    pub async fn clear_device_threat_response(
        &self,
        c: &Caller,
        reference: &str,
    ) -> ServiceResult<(bool, EffectiveSettings)> {
        self.allow(c, Operation::ChangeDeviceSettings).await?;
        let mut device = self.store.device_by_ref(reference).await?;
        let mut had = false;
        device.local_settings = self
            .change_local_settings(device.id, |mut local| {
                had = local.threat_response.take().is_some();
                Ok(local)
            })
            .await?;
        if had {
            self.audit(
                c,
                "device_settings_cleared",
                &format!("device {} threat_response", device.id),
            )
            .await;
            self.push_settings(&[device.id]).await?;
        }
        Ok((had, self.effective_for(&device).await?.redacted()))
    }

    // ----- enrollment -------------------------------------------------------------------

    pub async fn create_enroll_token(
        &self,
        c: &Caller,
        group: &str,
        ttl_secs: i64,
        max_uses: i64,
    ) -> ServiceResult<(String, i64)> {
        self.allow(c, Operation::ManageEnrollTokens).await?;
        if !(1..=1_000_000).contains(&max_uses) || !(60..=366 * 86400).contains(&ttl_secs) {
            return Err(ServiceError::BadRequest(
                "an enrollment token allows 1 to 1,000,000 uses and lives 60 seconds to 366 days"
                    .into(),
            ));
        }
        let g = self.store.group_by_name(group).await?;
        let token = secrets::random_token();
        let expires = now_ms() + ttl_secs * 1000;
        self.store
            .create_enroll_token(
                &secrets::token_hash(&token),
                g.id,
                expires,
                max_uses,
                c.principal.display_name(),
            )
            .await?;
        self.audit(
            c,
            "enroll_token_create",
            &format!("group {} uses {max_uses}", g.name),
        )
        .await;
        Ok((token, expires))
    }

    pub async fn enroll_tokens(
        &self,
        c: &Caller,
    ) -> ServiceResult<Vec<riposte_store::EnrollTokenRow>> {
        // The list holds no token, only what each is for and how long it lasts: for
        // every role to read, as the devices they enroll are.
        self.allow(c, Operation::ReadInventory).await?;
        Ok(self.store.enroll_tokens().await?)
    }

    /// Enrolls a device with a token and a certificate request.
    pub async fn enroll(
        &self,
        token: &str,
        csr_pem: &str,
        name: &str,
        hostname: &str,
        source: &str,
    ) -> ServiceResult<Enrolled> {
        // The token first: whoever has none learns nothing of how the rest of the
        // request would be judged, and costs no certificate parsing.
        if let Some(refusal) = self
            .store
            .enroll_token_refusal(&secrets::token_hash(token))
            .await?
        {
            return Err(ServiceError::Unauthorized(refusal.to_string()));
        }
        Authority::check_csr(csr_pem).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let name = if name.trim().is_empty() {
            hostname
        } else {
            name
        };
        if name.chars().count() > 255 || hostname.chars().count() > 255 {
            return Err(ServiceError::BadRequest(
                "device and host names are at most 255 characters".into(),
            ));
        }
        let name = check_name("a device name", name, 255)?;
        if hostname.chars().any(riposte_model::path_text::hidden) {
            return Err(ServiceError::BadRequest(
                "a host name cannot hold control or invisible characters".into(),
            ));
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            // Devices are named by id or name everywhere; a number would read as an id.
            return Err(ServiceError::BadRequest(format!(
                "a device cannot be named '{name}': a name of digits only reads as a device id"
            )));
        }
        // One transaction: a certificate that cannot be signed leaves the token's use
        // unspent and no device behind, so the agent can simply try again.
        let (device, cert_pem) = self
            .store
            .enroll_device_signed(&secrets::token_hash(token), name, hostname, |id| {
                let (cert_pem, serial) = self
                    .authority
                    .sign_device_csr(csr_pem, id, self.device_cert_lifetime())
                    .map_err(|e| e.to_string())?;
                let fingerprint =
                    crate::pki::pem_fingerprint(&cert_pem).map_err(|e| e.to_string())?;
                let issued = IssuedCertificate {
                    fingerprint,
                    serial: Some(serial),
                    expires_ms: crate::pki::pem_expires_ms(&cert_pem),
                };
                Ok((issued, cert_pem))
            })
            .await?
            .map_err(|failure: EnrollFailure<String>| match failure {
                EnrollFailure::Token(refusal) => ServiceError::Unauthorized(refusal.to_string()),
                EnrollFailure::Sign(e) => {
                    ServiceError::Internal(format!("signing the device certificate: {e}"))
                }
            })?;
        let _ = self
            .store
            .audit(
                "enrollment",
                source,
                "device_enroll",
                &format!("device {} ({name})", device.id),
            )
            .await;
        self.push_settings(&[device.id]).await?;
        Ok(Enrolled {
            device_id: device.id,
            cert_pem,
            ca_pem: self.authority.ca_pem.clone(),
            agent_port: self.config.agent_port,
        })
    }

    // ----- accounts ---------------------------------------------------------------------

    pub async fn accounts(&self, c: &Caller) -> ServiceResult<Vec<serde_json::Value>> {
        self.allow(c, Operation::ReadAccounts).await?;
        Ok(self
            .store
            .accounts()
            .await?
            .into_iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id, "name": a.name,
                    "kind": if a.kind == AccountKind::Special { "special" } else { "administrator_account" },
                    "role": if a.kind == AccountKind::Special { "create_autonomous_ioc_scan_task_only" } else { a.role.as_str() },
                    "created_at": a.created_at,
                })
            })
            .collect())
    }

    pub async fn create_account(
        &self,
        c: &Caller,
        name: &str,
        role: Role,
        password: &str,
    ) -> ServiceResult<i64> {
        self.allow(c, Operation::ManageAccounts).await?;
        validate_account_name(name)?;
        validate_admin_password(password)?;
        let hash = secrets::hash_password(password);
        let id = self
            .store
            .create_account(name, AccountKind::Admin, role, &hash)
            .await?;
        self.audit(c, "account_create", &format!("{name} as {}", role.as_str()))
            .await;
        Ok(id)
    }

    pub async fn delete_account(&self, c: &Caller, name: &str) -> ServiceResult<()> {
        self.allow(c, Operation::ManageAccounts).await?;
        if name.eq_ignore_ascii_case(SPECIAL_ACCOUNT_NAME) {
            return Err(ServiceError::BadRequest(format!(
                "'{name}' is the special account: delete it with `special-account delete` \
                 (DELETE /api/v1/special-account)"
            )));
        }
        let a = self
            .store
            .account_by_name(name)
            .await?
            .filter(|a| a.kind == AccountKind::Admin)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no administrator account named '{name}'"))
            })?;
        if c.principal.display_name() == name {
            return Err(ServiceError::Conflict(
                "you cannot delete your own account".into(),
            ));
        }
        match self.store.delete_account(a.id).await {
            Err(StoreError::Conflict(why)) => {
                return Err(ServiceError::Conflict(format!(
                    "account '{name}' is not deleted: {why}"
                )))
            }
            done => done?,
        }
        self.throttle.forget_account(&self.store, name).await?;
        self.audit(c, "account_delete", name).await;
        Ok(())
    }

    /// Changes the caller's own password, given its current one (checked and throttled
    /// as a login is, so this is no second way to guess it). Every session of the
    /// account ends, the caller's included: one opened by whoever learnt the old
    /// password must not survive its change. The special account's password can never
    /// be changed.
    pub async fn change_own_password(
        &self,
        c: &Caller,
        current: &str,
        new: &str,
    ) -> ServiceResult<()> {
        // The special account is refused here, as everywhere, by its one right.
        self.allow(c, Operation::ChangeOwnPassword).await?;
        validate_admin_password(new)?;
        if current == new {
            return Err(riposte_model::AccountError::PasswordUnchanged.into());
        }
        let name = c.principal.display_name().to_string();
        let (_, checked_hash) = match self.verify_password(&name, current, &c.source).await {
            Ok(checked) => checked,
            // Said as what it is (not 401): the caller is logged in, only the password
            // it typed for the change is wrong.
            Err(ServiceError::Unauthorized(_)) => {
                return Err(ServiceError::BadRequest(
                    "the current password is wrong; the password is not changed".into(),
                ))
            }
            Err(e) => return Err(e),
        };
        let account = self
            .store
            .account_by_name(&name)
            .await?
            .filter(|a| a.kind == AccountKind::Admin)
            .ok_or_else(|| ServiceError::NotFound(format!("no account named '{name}'")))?;
        let hash = hash_off_thread(new).await?;
        let ended = self
            .store
            .set_account_password(account.id, Some(&checked_hash), &hash)
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(
                    "the password was changed by someone else meanwhile; it is not changed \
                     again"
                        .into(),
                )
            })?;
        self.audit(
            c,
            "account_password_change",
            &format!("{name}; {ended} session(s) ended"),
        )
        .await;
        Ok(())
    }

    /// Sets another account's password (an administrator's reset, for an operator who
    /// forgot theirs). Every session of that account ends, and its failed logins are
    /// forgotten so that a lockout does not outlast the reset. An administrator changes
    /// their own password with [`Core::change_own_password`], which asks for the current
    /// one: a session taken over must not be enough to lock its owner out.
    pub async fn set_account_password(
        &self,
        c: &Caller,
        name: &str,
        new: &str,
    ) -> ServiceResult<()> {
        self.allow(c, Operation::ManageAccounts).await?;
        if name == SPECIAL_ACCOUNT_NAME {
            return Err(riposte_model::AccountError::SpecialPasswordImmutable.into());
        }
        let account = self
            .store
            .account_by_name(name)
            .await?
            .filter(|a| a.kind == AccountKind::Admin)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no administrator account named '{name}'"))
            })?;
        if c.principal.display_name() == account.name {
            return Err(ServiceError::BadRequest(
                "to change your own password, give the current one: `riposte admin account \
                 password`, or the console's Password page"
                    .into(),
            ));
        }
        validate_admin_password(new)?;
        let hash = hash_off_thread(new).await?;
        let ended = self
            .store
            .set_account_password(account.id, None, &hash)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no administrator account named '{name}'"))
            })?;
        // Done: what follows must not report the reset as failed. The account's failures
        // and known addresses are forgotten (a reset after a compromise must not leave
        // the intruder's addresses spared by its lockout); a failure to forget them is
        // logged, and they expire on their own.
        if let Err(e) = self
            .throttle
            .forget_account(&self.store, &account.name)
            .await
        {
            tracing::warn!(account = %account.name, "cannot forget the account's failed logins and known addresses after its reset: {e}");
        }
        self.audit(
            c,
            "account_password_set",
            &format!("{}; {ended} session(s) ended", account.name),
        )
        .await;
        Ok(())
    }

    pub async fn special_status(&self, c: &Caller) -> ServiceResult<Option<i64>> {
        self.allow(c, Operation::ReadAccounts).await?;
        Ok(self.store.special_account().await?.map(|a| a.created_at))
    }

    pub async fn create_special(&self, c: &Caller, password: &str) -> ServiceResult<()> {
        self.allow(c, Operation::ManageSpecialAccount).await?;
        validate_special_password(password)?;
        if self.store.special_account().await?.is_some() {
            return Err(riposte_model::AccountError::SpecialAccountExists.into());
        }
        let hash = hash_off_thread(password).await?;
        self.store
            .create_account(
                SPECIAL_ACCOUNT_NAME,
                AccountKind::Special,
                Role::Auditor,
                &hash,
            )
            .await?;
        self.audit(c, "special_account_create", "").await;
        Ok(())
    }

    /// Deletes the special account, and its password from every policy and every
    /// device's own settings that hold it: a password kept there would be presented by
    /// the devices after the account is created again with another, and each group
    /// action would fail as a wrong password. Without it, a device says plainly that no
    /// special password is set. Returns how many policies and devices held it.
    pub async fn delete_special(&self, c: &Caller) -> ServiceResult<(usize, usize)> {
        self.allow(c, Operation::ManageSpecialAccount).await?;
        let a = self
            .store
            .special_account()
            .await?
            .ok_or(riposte_model::AccountError::NoSpecialAccount)?;
        self.store.delete_account(a.id).await?;
        let mut cleared = Vec::new();
        for (group_id, p) in self.store.policies().await? {
            let held = |p: &PolicySettings| {
                p.threat_response
                    .as_ref()
                    .is_some_and(|s| s.value.special_password.is_some())
            };
            if held(&p) {
                // Counted where this change took it, not where the first read saw it.
                let mut took = false;
                self.change_policy(group_id, |mut p| {
                    took = p
                        .threat_response
                        .as_mut()
                        .and_then(|section| section.value.special_password.take())
                        .is_some();
                    Ok(p)
                })
                .await?;
                if took {
                    cleared.push(group_id);
                }
            }
        }
        // Devices' own values held it too: a device left with it would fail every group
        // action without a sign in its settings.
        let mut devices_cleared = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.store.devices(None, None, offset, 1000).await?;
            offset += page.len() as i64;
            for d in &page {
                let held = d
                    .local_settings
                    .threat_response
                    .as_ref()
                    .is_some_and(|tr| tr.special_password.is_some());
                if held {
                    let mut took = false;
                    self.change_local_settings(d.id, |mut local| {
                        took = local
                            .threat_response
                            .as_mut()
                            .and_then(|tr| tr.special_password.take())
                            .is_some();
                        Ok(local)
                    })
                    .await?;
                    if took {
                        devices_cleared.push(d.id);
                    }
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        self.audit(
            c,
            "special_account_delete",
            &format!(
                "its password removed from {} policies and {} devices' own settings",
                cleared.len(),
                devices_cleared.len()
            ),
        )
        .await;
        for group_id in &cleared {
            self.push_settings_for_subtree(*group_id).await?;
        }
        if !devices_cleared.is_empty() {
            self.push_settings(&devices_cleared).await?;
        }
        Ok((cleared.len(), devices_cleared.len()))
    }

    /// Every attempt to change the special account's password is refused.
    pub async fn change_special_password(&self, c: &Caller) -> ServiceResult<()> {
        self.allow(c, Operation::ManageSpecialAccount).await?;
        self.audit(c, "special_account_password_change_refused", "")
            .await;
        Err(riposte_model::AccountError::SpecialPasswordImmutable.into())
    }

    pub async fn audit_log(
        &self,
        c: &Caller,
        limit: i64,
        before: Option<i64>,
    ) -> ServiceResult<Vec<riposte_store::AuditRow>> {
        self.allow(c, Operation::ReadAudit).await?;
        if let Some(before) = before.filter(|b| *b < 1) {
            return Err(ServiceError::BadRequest(format!(
                "before must be an entry id (1 or more), not {before}"
            )));
        }
        Ok(self
            .store
            .audit_page(page_limit(limit, 10_000)?, before)
            .await?)
    }

    // ----- tasks ------------------------------------------------------------------------

    /// Creates a task for every live device of the group's subtree and wakes them. With
    /// `dedup_since`, an autonomous task for the same object and group created since then
    /// is returned instead (with `true`).
    async fn fan_out(
        &self,
        new: NewTask,
        offer: TaskOffer,
        dedup_since: Option<i64>,
    ) -> ServiceResult<(i64, bool)> {
        let groups = self.store.group_tree().await?.subtree(new.group_id);
        let mut devices = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .store
                .devices(Some(&groups), None, offset, 1000)
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            devices.extend(page.into_iter().filter(|d| !d.revoked).map(|d| d.id));
        }
        let make_offer = |id| {
            let mut o = offer.clone();
            o.task_id = id;
            serde_json::to_string(&Delivery::TaskOffer(o)).unwrap_or_default()
        };
        let (id, existing) = match dedup_since {
            Some(since) => {
                self.store
                    .create_task_dedup(&new, &devices, since, make_offer)
                    .await?
            }
            None => (
                self.store.create_task(&new, &devices, make_offer).await?,
                false,
            ),
        };
        if !existing {
            self.wake(&devices).await;
        }
        Ok((id, existing))
    }

    pub async fn create_task(&self, c: &Caller, req: &TaskRequest) -> ServiceResult<i64> {
        Ok(self.create_task_noting(c, req).await?.0)
    }

    /// [`Core::create_task`], with what the devices will leave out of its IOC documents.
    pub async fn create_task_noting(
        &self,
        c: &Caller,
        req: &TaskRequest,
    ) -> ServiceResult<(i64, Vec<String>)> {
        self.allow(c, Operation::CreateTask).await?;
        if req.iocs.is_empty() {
            return Err(ServiceError::BadRequest(
                "a task needs at least one IOC document".into(),
            ));
        }
        check_name("a task name", &req.name, 200)?;
        // Shown in the task's listings and the devices' reports, as the task's name is.
        for doc in &req.iocs {
            check_name("an IOC document's name", &doc.name, 255)?;
        }
        // Compiling a large YARA rule set takes a while: off the async workers.
        let docs = req.iocs.clone();
        let warnings = tokio::task::spawn_blocking(move || check_ioc_documents(&docs))
            .await
            .map_err(|e| ServiceError::Internal(format!("checking the IOC documents: {e}")))??;
        let g = self.store.group_by_name(&req.group).await?;
        let new = NewTask {
            name: req.name.clone(),
            autonomous: false,
            group_id: g.id,
            created_by: c.principal.display_name().to_string(),
            iocs: serde_json::to_value(&req.iocs).unwrap_or_default(),
            scope: serde_json::to_value(req.scope)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            actions: serde_json::to_value(&req.actions).unwrap_or_default(),
            dedup_key: None,
            expires_at: now_ms() + self.config.task_expiry_ms,
            detection_id: None,
        };
        let offer = TaskOffer {
            task_id: 0,
            autonomous: false,
            iocs: req.iocs.clone(),
            scope: req.scope,
            actions: req.actions.clone(),
        };
        let (id, _) = self.fan_out(new, offer, None).await?;
        self.audit(
            c,
            "task_create",
            &format!("task {id} '{}' for group {}", req.name, g.name),
        )
        .await;
        Ok((id, warnings))
    }

    /// Creates (or joins) the autonomous IOC scan task for a device's detection.
    ///
    /// The target group is derived here from the device's effective settings, never taken
    /// from the request: the group of the policy that supplied Threat Response, or the
    /// device's own group when the settings are local.
    pub async fn create_autonomous_task(
        &self,
        c: &Caller,
        req: &AutonomousRequest,
    ) -> ServiceResult<AutonomousAnswer> {
        let result = self.autonomous_inner(c, req).await;
        match &result {
            Ok(a) => {
                // The task exists and the device is answered with it either way; only
                // the detection's link to it is missing if this fails.
                if let Err(e) = self
                    .store
                    .set_detection_task(&req.detection.detection_id, a.task_id)
                    .await
                {
                    tracing::warn!(
                        detection = %req.detection.detection_id,
                        task = a.task_id,
                        "the detection could not be linked to its group task: {e}"
                    );
                }
            }
            // Audited only: the detection shows the failure once its device reports it
            // over its own channel (`channel::handle_event`). The special password is on
            // every device of the group, so a refusal here is no proof that the named
            // device asked.
            Err(e) => {
                self.audit(
                    c,
                    "autonomous_task_refused",
                    &format!("device {}: {e}", req.device_id),
                )
                .await;
            }
        }
        result
    }

    /// Audits an autonomous request that could not even authenticate as the special
    /// account. Nothing is written on the detection it names: whoever sends it need not
    /// know the password; the device reports its failure over its own channel.
    pub async fn audit_refused_group_action(
        &self,
        source: &str,
        req: &AutonomousRequest,
        error: &ServiceError,
    ) {
        let _ = self
            .store
            .audit(
                SPECIAL_ACCOUNT_NAME,
                source,
                "autonomous_task_refused",
                &format!("device {}: {error}", req.device_id),
            )
            .await;
    }

    /// The detection an autonomous request names, as the device reported it over its
    /// own (mutually authenticated) channel: the request's device id and hashes are only
    /// claims, and the special password is on every device of the group, so the task is
    /// built from what that device really reported. The agent reports the detection just
    /// before it calls, so a detection not yet stored is waited for a little while.
    async fn reported_detection(
        &self,
        req: &AutonomousRequest,
    ) -> ServiceResult<riposte_proto::DetectionRecord> {
        let id = &req.detection.detection_id;
        let deadline = now_ms() + self.config.detection_wait_ms;
        let row = loop {
            match self.store.detection(id).await {
                Ok(row) => break row,
                Err(StoreError::NotFound(_)) if now_ms() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(StoreError::NotFound(_)) => {
                    return Err(ServiceError::Conflict(format!(
                        "device {} has not reported detection {id} to the server: group \
                         actions start only from a detection the device reported over its \
                         channel",
                        req.device_id
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        };
        if row.device_id != req.device_id {
            return Err(ServiceError::Forbidden(format!(
                "detection {id} was not reported by device {}",
                req.device_id
            )));
        }
        let d: riposte_proto::DetectionRecord = serde_json::from_value(row.record)
            .map_err(|e| ServiceError::Internal(format!("stored detection {id}: {e}")))?;
        if !d.sha256.eq_ignore_ascii_case(&req.detection.sha256) || d.size != req.detection.size {
            return Err(ServiceError::BadRequest(format!(
                "the request's object differs from detection {id} as the device reported it"
            )));
        }
        Ok(d)
    }

    async fn autonomous_inner(
        &self,
        c: &Caller,
        req: &AutonomousRequest,
    ) -> ServiceResult<AutonomousAnswer> {
        self.allow(c, Operation::CreateAutonomousTask).await?;
        // The detection is established before anything about the device is looked at:
        // the special password is on every device of the group, so its holder must not
        // learn from the answers which device ids exist, which are revoked or what their
        // settings are. A device's own state is told only to a request naming a
        // detection that device reported, whose 128-bit id only it and the server know.
        let reported = self.reported_detection(req).await?;
        let d = &reported;
        let device = self.store.device(req.device_id).await?;
        if device.revoked {
            return Err(ServiceError::Forbidden(format!(
                "device {} is revoked",
                device.id
            )));
        }
        let eff = self.effective_for(&device).await?;
        let tr = &eff.threat_response.value;
        if !tr.enabled || !tr.actions.contains(&Action::GroupIocScan) {
            return Err(ServiceError::Forbidden(
                "this device's Threat Response settings do not enable the group IOC scan".into(),
            ));
        }
        if tr
            .special_password
            .as_deref()
            .and_then(|s| self.sealer.open(s))
            .is_none()
        {
            return Err(ServiceError::Forbidden(
                "this device's Threat Response settings carry no special account password".into(),
            ));
        }
        // One detection starts one task: asked again (a retry whose answer was lost, or
        // a replay by whoever holds the password), the task it started answers.
        if let Some(task_id) = self.store.detection(&d.detection_id).await?.task_id {
            if let Ok(task) = self.store.task(task_id).await {
                let group = self.store.group(task.group_id).await.map(|g| g.name);
                return Ok(AutonomousAnswer {
                    task_id,
                    group_id: task.group_id,
                    group: group.unwrap_or_default(),
                    deduplicated: true,
                });
            }
        }
        if !is_hex_len(&d.sha256, 64) || !is_hex_len(&d.md5, 32) || !is_hex_len(&d.sha1, 40) {
            return Err(ServiceError::BadRequest(
                "the detection's hashes are not valid hex MD5/SHA-1/SHA-256".into(),
            ));
        }
        let group_id = eff.response_group(device.group_id);
        let dedup_key = format!("{}:{}", d.sha256.to_ascii_lowercase(), d.size);
        let mut actions = Vec::new();
        if tr.actions.contains(&Action::GroupIocQuarantineAndDelete) {
            actions.push(TaskAction::QuarantineAndDelete);
        }
        if tr.actions.contains(&Action::GroupIocEppCriticalAreasScan) {
            actions.push(TaskAction::EppCriticalAreasScan);
        }
        let iocs = vec![crate::iocgen::detection_ioc(d)];
        let group = self.store.group(group_id).await?;
        let new = NewTask {
            name: format!("Autonomous IOC scan: {} ({})", d.threat, &d.sha256[..12]),
            autonomous: true,
            group_id,
            created_by: c.principal.display_name().to_string(),
            iocs: serde_json::to_value(&iocs).unwrap_or_default(),
            scope: "system_drives".into(),
            actions: serde_json::to_value(&actions).unwrap_or_default(),
            dedup_key: Some(dedup_key),
            expires_at: now_ms() + self.config.task_expiry_ms,
            detection_id: Some(d.detection_id.clone()),
        };
        let offer = TaskOffer {
            task_id: 0,
            autonomous: true,
            iocs,
            scope: ScanScope::SystemDrives,
            actions,
        };
        let since = now_ms() - self.config.dedup_window_ms;
        let (task_id, deduplicated) = self.fan_out(new, offer, Some(since)).await?;
        if deduplicated {
            return Ok(AutonomousAnswer {
                task_id,
                group_id,
                group: group.name,
                deduplicated: true,
            });
        }
        self.audit(
            c,
            "autonomous_task_create",
            &format!(
                "task {task_id} for group {} from device {}",
                group.name, device.id
            ),
        )
        .await;
        Ok(AutonomousAnswer {
            task_id,
            group_id,
            group: group.name,
            deduplicated: false,
        })
    }

    pub async fn tasks(&self, c: &Caller) -> ServiceResult<Vec<riposte_store::TaskRow>> {
        self.allow(c, Operation::ReadInventory).await?;
        Ok(self.store.tasks(500).await?)
    }

    pub async fn task(
        &self,
        c: &Caller,
        id: i64,
    ) -> ServiceResult<(riposte_store::TaskRow, Vec<riposte_store::TaskDeviceRow>)> {
        self.allow(c, Operation::ReadInventory).await?;
        Ok((
            self.store.task(id).await?,
            self.store.task_devices(id).await?,
        ))
    }

    pub async fn cancel_task(&self, c: &Caller, id: i64) -> ServiceResult<()> {
        self.allow(c, Operation::CancelTask).await?;
        let payload =
            serde_json::to_string(&Delivery::TaskCancel { task_id: id }).unwrap_or_default();
        let notified = self.store.cancel_task(id, &payload).await?;
        self.wake(&notified).await;
        self.audit(c, "task_cancel", &format!("task {id}")).await;
        Ok(())
    }

    // ----- detections -------------------------------------------------------------------

    /// The id of the device a listing is narrowed to, if any (by id or unique name).
    async fn device_filter(&self, device: Option<&str>) -> ServiceResult<Option<i64>> {
        Ok(match device {
            Some(d) => Some(self.store.device_by_ref(d).await?.id),
            None => None,
        })
    }

    pub async fn detections(
        &self,
        c: &Caller,
        device: Option<&str>,
    ) -> ServiceResult<Vec<riposte_store::DetectionRow>> {
        self.allow(c, Operation::ReadInventory).await?;
        let device_id = self.device_filter(device).await?;
        Ok(self.store.detections(device_id, 1000).await?)
    }

    pub async fn detection(
        &self,
        c: &Caller,
        id: &str,
    ) -> ServiceResult<riposte_store::DetectionRow> {
        self.allow(c, Operation::ReadInventory).await?;
        Ok(self.store.detection(id).await?)
    }

    pub async fn quarantine(
        &self,
        c: &Caller,
        device: Option<&str>,
    ) -> ServiceResult<Vec<riposte_store::QuarantineRow>> {
        self.allow(c, Operation::ReadInventory).await?;
        let device_id = self.device_filter(device).await?;
        Ok(self.store.quarantine(device_id).await?)
    }

    /// Alerts the devices raised, of one device or of all, newest first: among them the
    /// restores and deletions a device could not carry out (`quarantine_command_failed`).
    pub async fn alerts(
        &self,
        c: &Caller,
        device: Option<&str>,
    ) -> ServiceResult<Vec<riposte_store::AlertRow>> {
        self.allow(c, Operation::ReadInventory).await?;
        let device_id = self.device_filter(device).await?;
        Ok(self.store.alerts(device_id, 1000).await?)
    }

    /// Asks a device to restore or delete a quarantined object, or to withdraw the
    /// allowance a restore gave the object's content (`withdraw_allowance`: the device
    /// acts on that content again when it finds it); the device reports the outcome as
    /// a quarantine or allowance event, or a failure as an alert ([`Core::alerts`]).
    /// Returns the request id.
    pub async fn quarantine_action(
        &self,
        c: &Caller,
        device: &str,
        entry_id: &str,
        action: &str,
        restore_to: Option<String>,
        on_conflict: Option<String>,
    ) -> ServiceResult<String> {
        self.allow(c, Operation::HandleQuarantine).await?;
        if !matches!(action, "restore" | "delete" | "withdraw_allowance") {
            return Err(ServiceError::BadRequest(format!(
                "unknown quarantine action '{action}'; use restore, delete or withdraw_allowance"
            )));
        }
        if let Some(c) = &on_conflict {
            if !matches!(c.as_str(), "refuse" | "replace" | "rename") {
                return Err(ServiceError::BadRequest(format!(
                    "unknown conflict policy '{c}'; use refuse, replace or rename"
                )));
            }
        }
        if let Some(p) = &restore_to {
            let shown = riposte_model::path_text::shown(p);
            if !p.starts_with('/') || p.split('/').any(|x| x == "..") {
                return Err(ServiceError::BadRequest(format!(
                    "restore path '{shown}' must be absolute, without '..'"
                )));
            }
            // No file name on the device can hold a NUL: it would only fail there.
            if p.contains('\0') {
                return Err(ServiceError::BadRequest(format!(
                    "restore path '{shown}' contains a NUL character, which no path can hold"
                )));
            }
        }
        let d = self.store.device_by_ref(device).await?;
        if d.revoked {
            return Err(ServiceError::Conflict(format!(
                "device {} is revoked: it will never receive the command",
                d.id
            )));
        }
        let entries = self.store.quarantine(Some(d.id)).await?;
        let Some(entry) = entries.iter().find(|q| q.entry_id == entry_id) else {
            return Err(ServiceError::NotFound(format!(
                "device {} has no quarantine entry '{entry_id}'",
                d.id
            )));
        };
        if action == "withdraw_allowance" {
            let sha256 = entry.record["sha256"].as_str().unwrap_or_default();
            if entry.state != "restored"
                || entry.record["allowed"] != true
                || !riposte_model::is_sha256_hex(sha256)
            {
                return Err(ServiceError::Conflict(format!(
                    "quarantine entry '{entry_id}' on device {} was not restored with its \
                     content allowed: there is no allowance to withdraw",
                    d.id
                )));
            }
            let delivery = Delivery::WithdrawAllowance {
                sha256: sha256.to_string(),
            };
            let detail = format!(
                "withdraw the allowance of entry {entry_id} ({sha256}) on device {}",
                d.id
            );
            self.send_quarantine_command(c, d.id, &delivery, &detail)
                .await?;
            return Ok(secrets::random_token()[..16].to_string());
        }
        // The device would only fail it: the object is back in place, or gone.
        if entry.state != "quarantined" {
            return Err(ServiceError::Conflict(format!(
                "quarantine entry '{entry_id}' on device {} is {}: only a quarantined entry \
                 can be restored or deleted",
                d.id, entry.state
            )));
        }
        // Anywhere but the object's own path is an administrator's choice: the device
        // writes it as root.
        let original = entry.record["original_path"].as_str();
        let restore_to = restore_to.filter(|p| Some(p.as_str()) != original);
        if action == "restore" && restore_to.is_some() {
            self.allow(c, Operation::RestoreElsewhere).await?;
        }
        let request_id = secrets::random_token()[..16].to_string();
        let cmd = riposte_proto::QuarantineCommand {
            request_id: request_id.clone(),
            entry_id: entry_id.to_string(),
            action: action.to_string(),
            restore_to,
            on_conflict,
        };
        // Where a restore writes, and over what, is the part that matters afterwards.
        let mut detail = format!("{action} entry {entry_id} on device {}", d.id);
        if action == "restore" {
            let to = cmd
                .restore_to
                .as_deref()
                .map(|p| format!("to {}", riposte_model::path_text::shown(p)))
                .unwrap_or_else(|| "to its original path".into());
            detail.push_str(&format!(
                " {to}, on conflict {}",
                cmd.on_conflict.as_deref().unwrap_or("refuse")
            ));
        }
        self.send_quarantine_command(c, d.id, &Delivery::Quarantine(cmd), &detail)
            .await?;
        Ok(request_id)
    }

    /// Queues a quarantine command for device `device_id`, wakes its connection, and
    /// audits it as `detail`.
    async fn send_quarantine_command(
        &self,
        c: &Caller,
        device_id: i64,
        delivery: &Delivery,
        detail: &str,
    ) -> ServiceResult<()> {
        let payload =
            serde_json::to_string(delivery).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.store
            .enqueue(device_id, riposte_store::KIND_QUARANTINE, None, &payload)
            .await?;
        self.wake(&[device_id]).await;
        self.audit(c, "quarantine_action", detail).await;
        Ok(())
    }

    /// Periodic upkeep: expire overdue tasks, delete old autonomous tasks.
    pub async fn housekeeping(&self) -> ServiceResult<()> {
        let now = now_ms();
        self.throttle.prune(&self.store).await?;
        self.store.delete_expired_sessions(now).await?;
        self.store.expire_tasks(now).await?;
        self.store
            .delete_old_autonomous_tasks(now - self.config.autonomous_retention_ms)
            .await?;
        Ok(())
    }
}

/// A list's `limit`: at least one row (0 or a negative number is a mistake, not a
/// request for one row), at most `max` (more is cut to `max`: pages have a size).
fn page_limit(limit: i64, max: i64) -> ServiceResult<i64> {
    if limit < 1 {
        return Err(ServiceError::BadRequest(format!(
            "limit must be 1 or more (at most {max} rows are returned), not {limit}"
        )));
    }
    Ok(limit.min(max))
}

fn is_hex_len(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn apply_sandbox_patch(
    mut v: SandboxIntegration,
    p: &SandboxPatch,
) -> ServiceResult<SandboxIntegration> {
    if let Some(s) = &p.sandboxes {
        for url in s {
            if !url.starts_with("https://") {
                return Err(ServiceError::BadRequest(format!(
                    "sandbox URL '{url}' must start with https://"
                )));
            }
            // One that does not parse would leave every device's submissions queued
            // behind what looks like an outage.
            let parsed = url::Url::parse(url).map_err(|e| {
                ServiceError::BadRequest(format!("sandbox URL '{url}' is not a URL: {e}"))
            })?;
            if parsed.host_str().is_none_or(str::is_empty) || parsed.port() == Some(0) {
                return Err(ServiceError::BadRequest(format!(
                    "sandbox URL '{url}' names no host and port to connect to \
                     (https://HOST[:PORT]/)"
                )));
            }
        }
        v.sandboxes = s.clone();
    }
    if let Some(ca) = &p.sandbox_ca_pem {
        if !ca.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ServiceError::BadRequest(
                "the sandbox certificate must be a PEM certificate".into(),
            ));
        }
        v.sandbox_ca_pem = Some(ca.clone());
    }
    if let Some(w) = &p.watch {
        for path in w {
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(ServiceError::BadRequest(format!(
                    "watched folder '{path}' must be an absolute path without '..'"
                )));
            }
        }
        v.watch = w.clone();
    }
    if let Some(t) = p.request_timeout_secs {
        if !(1..=3600).contains(&t) {
            return Err(ServiceError::BadRequest(
                "the sandbox request timeout must be 1 to 3600 seconds".into(),
            ));
        }
        v.request_timeout_secs = t;
    }
    Ok(v)
}

/// Hashes a password with Argon2id on a blocking thread: it takes tens of milliseconds
/// and about 19 MiB, which the async workers must not wait for.
pub(crate) async fn hash_off_thread(password: &str) -> ServiceResult<String> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))
}
