//! The messages between Riposte's agent and server, and the channel's framing.
//!
//! One long-lived mutual-TLS connection per agent carries both directions. Every frame is a
//! 4-byte big-endian length followed by that many bytes of JSON. JSON keeps the protocol
//! debuggable and versionable (unknown fields are ignored); the length prefix bounds memory:
//! a frame over [`MAX_FRAME`] is refused before it is read.
//!
//! Delivery from server to agent is *at least once*: every [`Delivery`] has a per-device
//! sequence number, the agent acknowledges what it applied, and says on reconnect the last
//! number it applied ([`AgentToServer::Hello`]). Tasks carry ids, so applying one twice is
//! harmless.

use riposte_model::{DeviceTaskState, EffectiveSettings, ScanScope, TaskAction};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this protocol; the server refuses agents that speak another.
pub const PROTOCOL_VERSION: u32 = 1;

/// A [`ServerToAgent::Welcome`] feature: the server takes [`EventBody::Allowance`].
pub const FEATURE_ALLOWANCE_EVENTS: &str = "allowance_events";

/// Largest frame either side accepts (IOC documents can be large, but not unbounded).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // short-lived, one at a time per connection
pub enum AgentToServer {
    /// First frame on a connection.
    Hello {
        device_id: i64,
        protocol: u32,
        /// The highest delivery sequence number the agent has applied (0: none).
        last_applied_seq: u64,
        hostname: String,
        /// The agent renews its certificate when asked
        /// ([`ServerToAgent::RenewCertificate`]); agents from before renewal leave it out
        /// and are never asked.
        #[serde(default)]
        renews_certificate: bool,
    },
    /// The agent applied the delivery with this sequence number.
    Ack { seq: u64 },
    /// A task's state on this device changed.
    TaskUpdate(TaskUpdate),
    /// Something happened on the device (detections, action outcomes, alerts).
    Event(AgentEvent),
    /// Keeps NAT and idle timers happy; answered with [`ServerToAgent::Pong`].
    Ping,
    /// Answer to [`ServerToAgent::RenewCertificate`]: a request for a certificate over a
    /// key the agent just made.
    CertificateRequest { csr_pem: String },
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // short-lived, one at a time per connection
pub enum ServerToAgent {
    /// Answer to a good `Hello`.
    Welcome {
        device_id: i64,
        group: String,
        /// What this server takes beyond the first protocol ([`FEATURE_ALLOWANCE_EVENTS`]):
        /// an agent sends newer messages only to a server that names them, so that an
        /// older server is not sent frames it cannot read.
        #[serde(default)]
        features: Vec<String>,
    },
    /// A queued message for this device.
    Deliver {
        seq: u64,
        delivery: Delivery,
    },
    /// The server acknowledges an agent event (by its id) so the agent can drop it from its
    /// own queue.
    EventAck {
        event_id: String,
    },
    Pong,
    /// The server refuses the connection (revoked device, wrong protocol…).
    Refused {
        reason: String,
    },
    /// The device's certificate is due for renewal: the agent answers with
    /// [`AgentToServer::CertificateRequest`].
    RenewCertificate,
    /// The renewed certificate. The agent stores it with its new key and reconnects with
    /// it; until it does, the server still accepts the old one.
    Certificate {
        cert_pem: String,
    },
}

/// What the server queues for a device.
///
/// `Debug` is written by hand: it shows whether the special password is there, never
/// the password, since debug output ends up in logs and stored error messages.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivery {
    /// The device's new effective settings (secrets redacted) and, when group actions
    /// are selected, the special account's password the agent must present.
    Settings {
        settings: EffectiveSettings,
        /// The administration group an autonomous task from this device will cover.
        response_group: i64,
        special_password: Option<String>,
    },
    /// Run an IOC scan task.
    TaskOffer(TaskOffer),
    /// Stop a task if it runs; do not start it.
    TaskCancel { task_id: i64 },
    /// Restore or delete a quarantined object on the device.
    Quarantine(QuarantineCommand),
    /// Content an administrator restored is no longer allowed on the device: the
    /// sandbox integration and the response act on it again. Answered with
    /// [`EventBody::Allowance`].
    WithdrawAllowance { sha256: String },
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Settings {
                settings,
                response_group,
                special_password,
            } => f
                .debug_struct("Settings")
                .field("settings", settings)
                .field("response_group", response_group)
                .field(
                    "special_password",
                    &special_password.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
            Delivery::TaskOffer(offer) => f.debug_tuple("TaskOffer").field(offer).finish(),
            Delivery::TaskCancel { task_id } => f
                .debug_struct("TaskCancel")
                .field("task_id", task_id)
                .finish(),
            Delivery::Quarantine(cmd) => f.debug_tuple("Quarantine").field(cmd).finish(),
            Delivery::WithdrawAllowance { sha256 } => f
                .debug_struct("WithdrawAllowance")
                .field("sha256", sha256)
                .finish(),
        }
    }
}

/// What an administrator asks of a quarantined object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineCommand {
    /// Identifies the request, so the outcome can be matched to it.
    pub request_id: String,
    pub entry_id: String,
    /// `restore` or `delete`.
    pub action: String,
    /// For `restore`: another path than the original (device path, in its
    /// `riposte_model::path_text` form).
    #[serde(default)]
    pub restore_to: Option<String>,
    /// For `restore` onto an existing file: `refuse` (default), `replace` or `rename`.
    #[serde(default)]
    pub on_conflict: Option<String>,
}

/// An IOC document in one of the supported formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IocDocument {
    /// `openioc`, `stix` or `yara`.
    pub format: String,
    pub name: String,
    pub content: String,
}

/// An IOC scan task as offered to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOffer {
    pub task_id: i64,
    pub autonomous: bool,
    pub iocs: Vec<IocDocument>,
    pub scope: ScanScope,
    pub actions: Vec<TaskAction>,
}

/// A device's report on a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub task_id: i64,
    pub state: DeviceTaskState,
    #[serde(default)]
    pub hits: u64,
    #[serde(default)]
    pub reason: Option<String>,
    /// Hits and action outcomes, free-form for display.
    #[serde(default)]
    pub results: serde_json::Value,
}

/// Something that happened on a device. `event_id` is unique per device and makes
/// re-sending after a reconnect harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub event_id: String,
    pub at_ms: i64,
    pub body: EventBody,
}

/// The kinds of agent events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    Detection(DetectionRecord),
    /// The outcome of one action taken for a detection.
    ActionOutcome {
        detection_id: String,
        action: String,
        /// `done`, `failed`, `skipped`, `shown`, `not_shown`, …
        outcome: String,
        detail: String,
    },
    /// An object entered or left quarantine; `record` is the quarantine's metadata.
    Quarantine {
        entry_id: String,
        state: String,
        record: serde_json::Value,
    },
    /// A limit crossed, a refusal, or another condition an administrator should see.
    Alert {
        code: String,
        message: String,
    },
    /// Whether content (by SHA-256) is allowed on the device, as a restore from
    /// quarantine allows it, after it changed other than by a restore: withdrawn by the
    /// administrator or on the device.
    Allowance {
        sha256: String,
        allowed: bool,
    },
}

/// A detection as recorded on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectionRecord {
    pub detection_id: String,
    /// Device path of the object, in its `riposte_model::path_text` form (a byte that is
    /// not UTF-8 as `\xHH`), so that it names the object exactly.
    pub path: String,
    pub size: u64,
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    pub threat: String,
    /// The sandbox (or tool) that gave the verdict.
    pub source: String,
    /// The sandbox's task or report id.
    #[serde(default)]
    pub source_ref: Option<String>,
    pub user_name: String,
    #[serde(default)]
    pub user_uid: Option<u32>,
    pub detected_at_ms: i64,
    /// SHA-256 of files the sample dropped, from the sandbox report.
    #[serde(default)]
    pub dropped_sha256: Vec<String>,
}

/// Errors of the framing.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o error on the channel: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Err(FrameError::Closed)` on a clean end of stream.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_special_password() {
        use riposte_model::{EffectiveValue, Provenance};
        let settings = EffectiveSettings {
            threat_response: EffectiveValue {
                value: riposte_model::ThreatResponse {
                    special_password: Some("hunter2-sealed".into()),
                    ..Default::default()
                },
                provenance: Provenance::Default,
            },
            sandbox_integration: EffectiveValue {
                value: Default::default(),
                provenance: Provenance::Default,
            },
        };
        let d = Delivery::Settings {
            settings,
            response_group: 4,
            special_password: Some("hunter2-very-secret".into()),
        };
        let frame = ServerToAgent::Deliver {
            seq: 9,
            delivery: d.clone(),
        };
        for shown in [format!("{d:?}"), format!("{frame:?}"), format!("{d:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("response_group"), "{shown}");
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msg = AgentToServer::Hello {
            device_id: 7,
            protocol: PROTOCOL_VERSION,
            last_applied_seq: 3,
            hostname: "h".into(),
            renews_certificate: true,
        };
        write_frame(&mut a, &msg).await.unwrap();
        let got: AgentToServer = read_frame(&mut b).await.unwrap();
        assert_eq!(got, msg);
        // An agent from before renewal says nothing of it: it is never asked to renew.
        let old: AgentToServer = serde_json::from_str(
            r#"{"type":"hello","device_id":7,"protocol":1,"last_applied_seq":3,"hostname":"h"}"#,
        )
        .unwrap();
        assert!(matches!(
            old,
            AgentToServer::Hello {
                renews_certificate: false,
                ..
            }
        ));

        // An announced length over the limit is refused before reading the body.
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<_, AgentToServer>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");

        // Malformed JSON is an error, not a panic.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        assert!(matches!(
            read_frame::<_, AgentToServer>(&mut b).await,
            Err(FrameError::Malformed(_))
        ));
        drop(a);
        assert!(matches!(
            read_frame::<_, AgentToServer>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }
}
