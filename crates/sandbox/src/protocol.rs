//! Wire types of the sandbox protocol (`/sandbox/v1/...`), shared by server and client.
//!
//! Why a separate module: the agent-side client and the server must agree byte for
//! byte; keeping the JSON shapes in one place (tagged by `status`) makes that explicit.

use serde::{Deserialize, Serialize};

use crate::report::{Report, Verdict};

/// Answer to `POST /sandbox/v1/tasks?name=...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SubmitResponse {
    /// The object (by SHA-256) has a verdict already.
    AlreadyScanned {
        /// Object SHA-256.
        sha256: String,
        /// Verdict.
        verdict: Verdict,
        /// Threat name, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threat_name: Option<String>,
        /// Full report.
        report: Box<Report>,
    },
    /// Queued for analysis; poll `GET /sandbox/v1/tasks/{task_id}`.
    Queued {
        /// Task id.
        task_id: String,
    },
    /// Refused; `error` says why and what to do.
    Error {
        /// Message.
        error: String,
    },
}

/// Answer to `GET /sandbox/v1/tasks/{task_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PollResponse {
    /// Still queued or running.
    Processing {
        /// Task id.
        task_id: String,
    },
    /// Malicious.
    Found {
        /// Task id.
        task_id: String,
        /// Threat name.
        threat_name: String,
        /// Report.
        report: Box<Report>,
    },
    /// Analysed, not malicious (clean or suspicious); the report says which.
    NotFound {
        /// Task id.
        task_id: String,
        /// Report.
        report: Box<Report>,
    },
    /// Unknown task or failed analysis.
    Error {
        /// Message.
        error: String,
    },
}

/// Body of `POST /sandbox/v1/webhook`: a verdict from any sandbox for a device's object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookVerdict {
    /// Device (agent) the object was found on.
    pub device_id: String,
    /// Object SHA-256.
    pub sha256: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Threat name.
    #[serde(default)]
    pub threat_name: Option<String>,
    /// Which sandbox sent it.
    pub source: String,
    /// Optional full report.
    #[serde(default)]
    pub report: Option<Report>,
}

/// Header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-riposte-signature";

/// Compute the webhook signature header value for `body` with `key`.
pub fn sign_webhook(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verify a signature header value in constant time.
pub fn verify_webhook(key: &[u8], body: &[u8], header: &str) -> bool {
    use hmac::Mac;
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}
