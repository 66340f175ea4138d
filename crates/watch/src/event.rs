//! What the watcher tells the agent: verdicts and alerts.
//!
//! Why events instead of return values: objects appear at any time and verdicts come
//! back minutes later (or after a restart), so the agent receives them on a channel and
//! turns malicious verdicts into detections and alerts into events for the server.

use serde::{Deserialize, Serialize};

/// One message from the watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A verdict for one sighting of an object (one path, one account).
    Verdict(Verdict),
    /// Something the administrator should know; nothing was silently dropped.
    Alert {
        /// Machine-readable kind.
        code: AlertCode,
        /// What happened and what to do.
        message: String,
        /// The object concerned, as a device path (`path_text` form), when there is one.
        device_path: Option<String>,
    },
}

/// A sandbox verdict for an object seen at `device_path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Where the object was seen (device path, not host path), in its
    /// [`riposte_model::path_text`] form: decode it to find the file again.
    pub device_path: String,
    /// Size in bytes of the hashed content.
    pub size: u64,
    /// MD5, lowercase hex.
    pub md5: String,
    /// SHA-1, lowercase hex.
    pub sha1: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Account that wrote or ran the object (from the event's process, else the file
    /// owner), resolved through the device's `/etc/passwd`; `None` if the uid has no entry.
    pub user_name: Option<String>,
    /// That account's uid, when known.
    pub user_uid: Option<u32>,
    /// Threat name when malicious.
    pub threat: Option<String>,
    /// The sandbox found the object malicious.
    pub malicious: bool,
    /// Who judged: `riposte-sandbox` for the built-in sandbox, else the report's source
    /// (`cape`, `webhook:NAME`, ...).
    pub source: String,
    /// The sandbox task id, when the verdict came from a task (not for `already_scanned`).
    pub source_ref: Option<String>,
    /// SHA-256 of the files the object dropped (IOCs for the group sweep).
    pub dropped_sha256: Vec<String>,
    /// The verdict came from the local verdict cache (no submission was made).
    pub from_cache: bool,
    /// The sandbox report (IOCs, evidence, OpenIOC document) when it is at hand:
    /// always for fresh verdicts, for cached ones only when malicious.
    pub report: Option<Box<riposte_sandbox::Report>>,
}

/// Kinds of alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCode {
    /// The submission queue is at its byte cap; the object was not queued.
    QueueFull,
    /// No sandbox server answered for longer than the configured time.
    SandboxUnreachable,
    /// The sandbox answers again after an outage.
    SandboxReachable,
    /// Sandbox servers or the pinned certificate are missing; objects stay queued.
    SandboxNotConfigured,
    /// The object is larger than the size limit; it was not submitted.
    ObjectTooLarge,
    /// The path was gone before it could be hashed.
    PathVanished,
    /// The object could not be read (permissions, I/O error, not a regular file).
    ReadFailed,
    /// The sandbox refused the object or its analysis failed repeatedly; it left the queue.
    SandboxRejected,
    /// A watched folder is missing or cannot be watched.
    WatchFailed,
    /// The watcher's own state (queue, cache) could not be written.
    StateFailed,
}

impl AlertCode {
    /// Stable snake_case name (for events sent to the server).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertCode::QueueFull => "queue_full",
            AlertCode::SandboxUnreachable => "sandbox_unreachable",
            AlertCode::SandboxReachable => "sandbox_reachable",
            AlertCode::SandboxNotConfigured => "sandbox_not_configured",
            AlertCode::ObjectTooLarge => "object_too_large",
            AlertCode::PathVanished => "path_vanished",
            AlertCode::ReadFailed => "read_failed",
            AlertCode::SandboxRejected => "sandbox_rejected",
            AlertCode::WatchFailed => "watch_failed",
            AlertCode::StateFailed => "state_failed",
        }
    }
}

impl std::fmt::Display for AlertCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
