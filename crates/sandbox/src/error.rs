//! One error type for the crate, so callers (the agent, the CLI, the lead's `riposte up`)
//! can match on what went wrong and every message says what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong in the sandbox service, client, importers or jail.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The uploaded object exceeds the configured size limit.
    #[error("object is {size} bytes, over the {limit}-byte limit: submit a smaller object or raise the server's --max-object-size")]
    TooLarge {
        /// Announced or received size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// The upload ended before the announced Content-Length.
    #[error("upload truncated: {detail}; resend the complete object")]
    Truncated {
        /// What was announced and what arrived.
        detail: String,
    },
    /// The bounded analysis queue has no room.
    #[error("analysis queue is full ({capacity} tasks waiting): retry later or add workers")]
    QueueFull {
        /// Queue capacity.
        capacity: usize,
    },
    /// The sandbox admits only enrolled agents and the request came without a device
    /// certificate.
    #[error("this sandbox accepts objects only from agents enrolled with its administration server, and the request carried no device certificate: submit through an enrolled agent (or start the sandbox with --allow-anonymous-clients)")]
    NotAdmitted,
    /// The sandbox admits only enrolled agents that have not been revoked, and it cannot
    /// tell (the reason) whether this one was.
    #[error("this sandbox cannot tell whether this device is still enrolled: {0}; retry later")]
    RevocationUnknown(String),
    /// The sandbox refused the device's certificate in the TLS handshake: it admits the
    /// devices of another administration server, or this device was revoked.
    #[error("the sandbox refused this device's certificate in the TLS handshake ({0}): it admits the devices of another administration server (check its --client-ca), or this device was revoked")]
    CertificateRefused(String),
    /// The administration server revoked this device.
    #[error("this device's certificate has been revoked by the administration server: enroll the device again")]
    Revoked,
    /// The request is malformed (missing name, bad JSON, ...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No task with this id exists on the server.
    #[error("unknown task {0}: it was never queued here (poll the server that queued it)")]
    UnknownTask(String),
    /// Filesystem failure in the data directory or jail scratch space.
    #[error("cannot {action} {}: {source}; check the path exists and is writable", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external sandbox report could not be understood.
    #[error("malformed {format} report: {reason}; pass the report JSON the sandbox wrote (e.g. reports/report.json)")]
    MalformedReport {
        /// Which importer.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A hash list line could not be parsed.
    #[error("hash list {source_name} line {line}: {reason}")]
    HashList {
        /// File or label of the list.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A rule file could not be compiled.
    #[error("rules: {0}; fix or remove the rule file")]
    Rules(String),
    /// TLS material could not be created, loaded or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// No sandbox server could be reached (all failed over).
    #[error(
        "no sandbox server reachable: {0}; check the URLs, the pinned certificate and the network"
    )]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("sandbox server refused the request: {0}")]
    Server(String),
    /// The CAPE server failed or answered unexpectedly.
    #[error("CAPE: {0}")]
    Cape(String),
    /// The dynamic-analysis jail could not run.
    #[error("jail unavailable: {0}")]
    Jail(String),
    /// Another sandbox process serves this data directory.
    #[error("another sandbox is running on {} (it holds sandbox.lock): stop it first, or give this one another --data", .0.display())]
    DataDirInUse(PathBuf),
    /// A webhook signature did not verify.
    #[error("webhook signature missing or wrong: sign the raw body with HMAC-SHA256 using the key in DATA_DIR/webhook.key")]
    BadSignature,
}

impl SandboxError {
    /// Shorthand for [`SandboxError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SandboxError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
